#!/usr/bin/env python3
"""Generates what a global quota needs besides the plugin: Envoy's side and the RLS's side.

From the quota section of a Tollgate plugin configuration (the one the filter validates):

- `envoy_ratelimit` backend: the route's `RateLimitPerRoute.rate_limits` (per limit: a
  request-time entry charging `tollgate.quota.<limit>.reserve`, a stream-done entry charging
  `.settle`, and with refunds a stream-done entry giving back `.refund` with
  `is_negative_hits`), the `envoy.filters.http.ratelimit` filter that goes right after the wasm
  filter, and the HCM `local_reply_config` that words its 429 in the client's dialect;
- both backends: the limits in envoyproxy/ratelimit's configuration format (the descriptor
  tree `limit → tier → consumer/model`, one `rate_limit` per limit and tier, named after the
  limit so that the `X-RateLimit-Limit` header names it).

The descriptors match what the filter writes (see filters/core/src/stage/quota.rs):
`limit` (generic key), `tier` ("default" unless a tier applies), then `consumer` and/or `model`
depending on the limit's `per`, read from filter state with Envoy's FilterStateInput.

  quota_global.py --plugin-config tollgate.json --rls-config limits.yaml [--envoy-snippet out.yaml]
"""
import argparse
import json

FILTER_STATE_INPUT = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.FilterStateInput"
UNITS = {"minute": "minute", "hour": "hour", "day": "day", "month": "month"}
SCOPE_KEYS = {"consumer": ["consumer"], "consumer_model": ["consumer", "model"], "model": ["model"], "global": []}


def quota_section(plugin_config):
    """The quota section of a plugin configuration (all-in-one or quota module)."""
    return plugin_config.get("quota", plugin_config)


def backend(quota):
    return (quota.get("global") or {}).get("backend")


def _filter_state(name):
    return {"extension": {"name": name, "typed_config": {"@type": FILTER_STATE_INPUT, "key": f"wasm.tollgate.quota.{name}"}}}


def actions(limit):
    return ([{"generic_key": {"descriptor_key": "limit", "descriptor_value": limit["name"]}}, _filter_state("tier")]
            + [_filter_state(key) for key in SCOPE_KEYS[limit["per"]]])


def _hits(limit, what):
    return f"%FILTER_STATE(wasm.tollgate.quota.{limit['name']}.{what}:PLAIN)%"


def rate_limits(quota):
    """`RateLimitPerRoute.rate_limits` for the `envoy_ratelimit` backend."""
    refunds = bool(quota["global"].get("refunds"))
    out = []
    for limit in quota["limits"]:
        out.append({"actions": actions(limit), "hits_addend": {"format": _hits(limit, "reserve")}})
        out.append({"actions": actions(limit), "hits_addend": {"format": _hits(limit, "settle")},
                    "apply_on_stream_done": True})
        if refunds:
            out.append({"actions": actions(limit), "hits_addend": {"format": _hits(limit, "refund"), "is_negative_hits": True},
                        "apply_on_stream_done": True})
    return out


def ratelimit_filter(cluster="rls", domain="tollgate", timeout="0.2s"):
    """The `envoy.filters.http.ratelimit` entry of `http_filters` (right after Tollgate's)."""
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": domain,
            # The service's answer reaches the filter as these headers: they become the
            # x-ratelimit-*-tokens/-requests headers, and they tell that the reservation was counted.
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            # Fail open: an unreachable service admits requests (their usage is still charged
            # at stream end). The filter's own `timeout` is what bounds the call (20 ms if unset).
            "failure_mode_deny": False,
            "timeout": timeout,
            "rate_limit_service": {"transport_api_version": "V3",
                                   "grpc_service": {"envoy_grpc": {"cluster_name": cluster}}},
        },
    }


def local_reply_config():
    """Words the rate-limit filter's empty 429 as an OpenAI or Anthropic error (by path)."""
    message = "Rate limit reached for this consumer; retry after %RESP(X-RATELIMIT-RESET)% s"
    anthropic = {"and_filter": {"filters": [
        {"response_flag_filter": {"flags": ["RL"]}},
        {"header_filter": {"header": {"name": ":path", "string_match": {"prefix": "/v1/messages"}}}},
    ]}}
    return {"mappers": [
        {"filter": anthropic,
         "body_format_override": {"json_format": {"type": "error", "error": {"type": "rate_limit_error", "message": message}}}},
        {"filter": {"response_flag_filter": {"flags": ["RL"]}},
         "body_format_override": {"json_format": {"error": {"message": message, "type": "tokens",
                                                             "code": "rate_limit_exceeded"}}}},
    ]}


def rls_cluster(name, port, host="127.0.0.1"):
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }


def _units(limit, value):
    """`requests_per_unit` in the meter's unit: dollars are counted in micro-dollars."""
    return int(round(value * 1_000_000)) if limit["meter"] == "dollars" else int(round(value))


def rls_config(quota, domain="tollgate"):
    """The limits in envoyproxy/ratelimit's format (also what the test peer loads)."""
    shadow = quota.get("mode") == "shadow"
    tiers = quota.get("tiers", {})
    tree = []
    for limit in quota["limits"]:
        keys = SCOPE_KEYS[limit["per"]]

        def leaf(value):
            rate = {"unit": UNITS[limit["window"]], "requests_per_unit": _units(limit, value), "name": limit["name"]}
            if shadow:
                rate["shadow_mode"] = True
            node = {"rate_limit": rate} if not keys else None
            for key in reversed(keys):
                node = {"key": key, **({"rate_limit": rate} if node is None else {"descriptors": [node]})}
            return node

        def tier_node(tier_value, value):
            inner = leaf(value)
            node = {"key": "tier"}
            if tier_value is not None:
                node["value"] = tier_value
            if "key" in inner:
                node["descriptors"] = [inner]
            else:
                node.update(inner)
            return node

        tier_nodes = [tier_node(t, overrides[limit["name"]]) for t, overrides in sorted(tiers.items())
                      if limit["name"] in overrides]
        tier_nodes.append(tier_node(None, limit["limit"]))
        tree.append({"key": "limit", "value": limit["name"], "descriptors": tier_nodes})
    return {"domain": domain, "descriptors": tree}


def envoy_snippet(quota, domain="tollgate"):
    """The Envoy pieces: the rate-limit filter, the local-reply config, the route's rate_limits."""
    snippet = {"http_filter": ratelimit_filter(domain=domain), "local_reply_config": local_reply_config()}
    if backend(quota) == "envoy_ratelimit":
        snippet["route_typed_per_filter_config"] = {"envoy.filters.http.ratelimit": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
            "rate_limits": rate_limits(quota)}}
    return snippet


def main():
    import yaml

    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--plugin-config", required=True, help="Tollgate plugin configuration (JSON file)")
    p.add_argument("--rls-config", help="write envoyproxy/ratelimit limits here")
    p.add_argument("--envoy-snippet", help="write the Envoy pieces (route rate_limits, filter, local reply) here")
    p.add_argument("--domain", default="tollgate")
    a = p.parse_args()
    with open(a.plugin_config) as f:
        quota = quota_section(json.load(f))
    if a.rls_config:
        with open(a.rls_config, "w") as f:
            yaml.safe_dump(rls_config(quota, a.domain), f, sort_keys=False)
    if a.envoy_snippet:
        with open(a.envoy_snippet, "w") as f:
            yaml.safe_dump(envoy_snippet(quota, a.domain), f, sort_keys=False)


if __name__ == "__main__":
    main()
