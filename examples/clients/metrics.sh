#!/usr/bin/env bash
# Token usage and request counts Tollgate exported, as Prometheus sees them.
admin=${TOLLGATE_ADMIN:-http://127.0.0.1:9901}
curl -s "$admin/stats/prometheus" | grep -E '^tollgate_(gen_ai_client_token_usage|gen_ai_requests|token_counter_unread|errors)'
