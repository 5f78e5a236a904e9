#!/usr/bin/env python3
"""Renders envoy/*.yaml.tmpl into a runnable Envoy config.

Used by `make run`, the e2e tests and the benchmark, so all three run the same configuration.

  envoy_config.py --out FILE [--wasm PATH] [--provider mock:PORT | openai | anthropic | URL]
                  [--listen-port N] [--admin-port N] [--access-log PATH] [--filter-config JSON]
                  [--h2] [--no-filter]
"""
import argparse
import json
import os
import string
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "envoy", "token-counter.yaml.tmpl")
DEFAULT_WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "tollgate_token_counter.wasm")
DEFAULT_FILTER_CONFIG = {"consumer_header": "x-tollgate-consumer"}
ALL_IN_ONE = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "tollgate.wasm")
# `make run`: token counting, and quota in shadow mode (every response carries x-ratelimit-*
# headers; nothing is refused). The consumer is the client's API key, kept as a salted hash.
RUN_CONFIG = {
    "token_counter": {"consumer_header": "x-tollgate-consumer"},
    "quota": {
        "mode": "shadow",
        "consumer": {"header": ["authorization", "x-api-key"], "salt": "tollgate-run"},
        "limits": [
            {"name": "tokens_per_minute", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 100000},
            {"name": "requests_per_minute", "meter": "requests", "per": "consumer", "window": "minute", "limit": 600},
        ],
    },
}

# `make run` with the mock: the same, plus provider-rewrite with an OpenAI and an Anthropic
# backend (both the mock), so any client can reach either provider by model name.
RUN_CONFIG_MOCK = {
    **RUN_CONFIG,
    "provider_rewrite": {
        "backends": {
            "openai": {"kind": "openai", "cluster": "openai", "api_key": {"value": "mock-openai-key"}},
            "anthropic": {"kind": "anthropic", "cluster": "anthropic", "api_key": {"value": "mock-anthropic-key"},
                          "default_max_tokens": 1024},
            "azure": {"kind": "azure", "cluster": "azure", "api_version": "2024-10-21",
                      "api_key": {"value": "mock-azure-key"}},
            "local": {"kind": "openai_compatible", "cluster": "openai", "api_key": {"value": "mock-local-key"}},
            "gemini": {"kind": "gemini", "cluster": "gemini", "api_key": {"value": "mock-gemini-key"}},
            "vertex": {"kind": "vertex", "cluster": "vertex", "project": "demo", "location": "us-central1",
                       "api_key": {"value": "mock-vertex-token"}},
            # The mock verifies SigV4 in full for this key id (tests/mock_provider.py).
            "bedrock": {"kind": "bedrock", "cluster": "bedrock", "host": "bedrock-runtime.us-east-1.amazonaws.com",
                        "region": "us-east-1", "aws_access_key_id": {"value": "AKIDTOLLGATEMOCK"},
                        "aws_secret_access_key": {"value": "tollgate-mock-secret-key"}},
        },
        "models": [
            {"name": "gpt-4o-mini", "backend": "openai"},
            {"name": "gpt-4.1", "backend": "openai"},
            {"name": "text-embedding-3-small", "backend": "openai"},
            {"name": "claude-sonnet-4", "backend": "anthropic", "model": "claude-sonnet-4-20250514"},
            {"name": "claude", "alias_of": "claude-sonnet-4"},
            {"name": "gpt-4o", "backend": "azure", "model": "gpt-4o-prod"},
            {"name": "llama-3.1-8b", "backend": "local", "model": "meta-llama/Llama-3.1-8B-Instruct"},
            {"name": "gemini-2.5-flash", "backend": "gemini"},
            {"name": "vertex/gemini-2.0-flash", "backend": "vertex", "model": "gemini-2.0-flash"},
            {"name": "gemini-*", "backend": "gemini"},
            {"name": "bedrock/claude-3-5-haiku", "backend": "bedrock", "model": "anthropic.claude-3-5-haiku-20241022-v1:0"},
            # One of equivalent backends per request: the fastest measured, or the cheapest for
            # the request (prices in USD per million tokens), leaving out those that fail.
            {"name": "fastest", "choose": {"policy": "latency", "backends": [
                {"backend": "anthropic", "model": "claude-sonnet-4-20250514"}, {"backend": "openai", "model": "gpt-4o-mini"}]}},
            {"name": "resilient-cloud", "fallback": {"cluster": "fallback-cloud", "backends": [
                {"backend": "gemini", "model": "gemini-2.0-flash"},
                {"backend": "bedrock", "model": "anthropic.claude-3-5-haiku-20241022-v1:0"}]}},
            {"name": "cheapest", "choose": {"policy": "cost", "backends": [
                {"backend": "gemini", "model": "gemini-2.5-flash", "input_price": 0.1, "output_price": 0.4},
                {"backend": "local", "model": "meta-llama/Llama-3.1-8B-Instruct", "input_price": 0.5, "output_price": 1.5}]}},
            # Claude first, GPT when Claude fails (5xx, 429, reset): Envoy retries, Tollgate
            # translates each attempt.
            {"name": "resilient", "fallback": {"cluster": "fallback-resilient", "backends": [
                {"backend": "anthropic", "model": "claude-sonnet-4-20250514"}, {"backend": "openai", "model": "gpt-4o-mini"}]}},
            {"name": "gpt-*", "backend": "openai"},
            {"name": "o*", "backend": "openai"},
            {"name": "claude-*", "backend": "anthropic"},
        ],
    },
}

KNOWN = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}

TLS = """transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {host}"""
H2 = """typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }"""
H1_TRAILERS = """typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http_protocol_options: { enable_trailers: true } }"""


def global_quota_parts(filter_config, rls_port):
    """Template values for a global quota (tools/quota_global.py): empty without one."""
    import quota_global

    parts = {"LOCAL_REPLY": "", "ROUTE_EXTRA": "", "EXTRA_FILTERS": "", "EXTRA_CLUSTERS": ""}
    quota = filter_config.get("quota") if isinstance(filter_config, dict) else None
    kind = quota_global.backend(quota) if quota else None
    if kind == "envoy_ratelimit":
        per_route = {"envoy.filters.http.ratelimit": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
            "rate_limits": quota_global.rate_limits(quota)}}
        parts["LOCAL_REPLY"] = "local_reply_config: " + json.dumps(quota_global.local_reply_config())
        parts["ROUTE_EXTRA"] = "typed_per_filter_config: " + json.dumps(per_route)
        parts["EXTRA_FILTERS"] = "- " + json.dumps(quota_global.ratelimit_filter("rls"))
        parts["EXTRA_CLUSTERS"] = "- " + json.dumps(quota_global.rls_cluster("rls", rls_port))
    elif kind == "check_report":
        parts["EXTRA_CLUSTERS"] = "- " + json.dumps(quota_global.rls_cluster(quota["global"]["cluster"], rls_port))
    return parts


def provider_parts(filter_config, provider, wasm=DEFAULT_WASM):
    """Template values for provider-rewrite: the cluster_header route, the early removal of the
    routing header, and one cluster per backend (the mock for `mock:PORT`, else the backend's
    `host` over TLS). Empty without a provider_rewrite section."""
    parts = {"PROVIDER_ROUTES": "", "EARLY_HEADER_MUTATION": "", "BACKEND_CLUSTERS": "", "PRE_FILTERS": "",
             "VM_ENV": ""}
    section = filter_config.get("provider_rewrite") if isinstance(filter_config, dict) else None
    # The provider-rewrite module alone takes the bare section.
    alone = section is None and isinstance(filter_config, dict) and "backends" in filter_config
    section = filter_config if alone else section
    if not section:
        return parts
    header = section.get("cluster_header", "x-tollgate-cluster")
    # Keys named by `env` come from Envoy's own environment: the VM sees only the listed ones.
    env_keys = sorted({secret["env"] for backend in section["backends"].values() for secret in backend.values()
                       if isinstance(secret, dict) and "env" in secret})
    if env_keys:
        parts["VM_ENV"] = "environment_variables: " + json.dumps({"host_env_keys": env_keys})
    parts["PROVIDER_ROUTES"] = "- " + json.dumps({
        "name": "tollgate-backend",
        "match": {"prefix": "/", "headers": [{"name": header, "present_match": True}]},
        "route": {"cluster_header": header, "timeout": "300s"}})
    # Headers only Envoy may set: the routing header, and the identity an auth filter forwards.
    stripped = [header]
    access = section.get("access") or {}
    identity = (access.get("consumer") or {}).get("identity_header")
    if identity:
        stripped.append(identity)
    parts["EARLY_HEADER_MUTATION"] = "early_header_mutation_extensions: " + json.dumps([{
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
            "mutations": [{"remove": h} for h in stripped]}}])
    # API keys checked by Envoy's own filter (`api_keys` in the section is this tool's, not the
    # filter's: it is removed from the plugin configuration by `render`).
    if section.get("jwt") is not None:
        # JWTs checked by Envoy's jwt_authn (HS256, a local JWKS); the claims go to dynamic
        # metadata (`envoy.filters.http.jwt_authn` / `payload`), where `access` reads them.
        import base64

        jwt = section["jwt"]
        k = base64.urlsafe_b64encode(jwt["secret"].encode()).decode().rstrip("=")
        parts["PRE_FILTERS"] = "- " + json.dumps({"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"local": {
                "issuer": jwt["issuer"],
                "local_jwks": {"inline_string": json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": k}]})},
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                "payload_in_metadata": "payload", "forward": False}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "local"}}]}})
    if section.get("api_keys") is not None:
        parts["PRE_FILTERS"] = "- " + json.dumps({"name": "envoy.filters.http.api_key_auth", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": k, "client": c} for k, c in section["api_keys"].items()],
            "key_sources": [{"header": "authorization"}, {"header": "x-api-key"}],
            "forwarding": {"header": identity or "x-tollgate-client", "hide_credentials": True}}})
    clusters = []
    for name in sorted({b["cluster"] for b in section["backends"].values()}):
        backend = next(b for b in section["backends"].values() if b["cluster"] == name)
        if provider.startswith("mock:"):
            host, port, tls, discovery = "127.0.0.1", int(provider.split(":", 1)[1]), None, "STATIC"
        else:
            host, port, discovery = backend["host"], 443, "LOGICAL_DNS"
            tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "sni": host}}
        cluster = {"name": name, "type": discovery, "connect_timeout": "5s", "dns_lookup_family": "V4_ONLY",
                   "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                       "socket_address": {"address": host, "port_value": port}}}}]}]}}
        if tls:
            cluster["transport_socket"] = tls
        clusters.append("- " + json.dumps(cluster))
    routes = []
    upstream = {k: v for k, v in section.items() if k not in ("api_keys", "jwt", "access")} | {"role": "upstream"}
    upstream_config = upstream if alone else {"provider_rewrite": upstream}
    for model in section["models"]:
        fallback = model.get("fallback")
        if not fallback:
            continue
        priorities, matches = [], []
        for priority, target in enumerate(fallback["backends"]):
            backend = section["backends"][target["backend"]]
            if provider.startswith("mock:"):
                address = {"address": "127.0.0.1", "port_value": int(provider.split(":", 1)[1])}
            else:
                address = {"address": backend["host"], "port_value": 443}
                matches.append({"name": target["backend"], "match": {"tollgate": target["backend"]},
                                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                                    "sni": backend["host"]}}})
            priorities.append({"priority": priority, "lb_endpoints": [{
                "endpoint": {"address": {"socket_address": address}},
                # The upstream filter reads this to know which backend an attempt goes to.
                "metadata": {"filter_metadata": {"tollgate": {"backend": target["backend"]},
                                                 "envoy.transport_socket_match": {"tollgate": target["backend"]}}}}]})
        cluster = {
            "name": fallback["cluster"], "type": "STATIC" if provider.startswith("mock:") else "STRICT_DNS",
            "connect_timeout": "5s", "dns_lookup_family": "V4_ONLY",
            "load_assignment": {"cluster_name": fallback["cluster"], "endpoints": priorities},
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                # Tollgate again, as an upstream filter: once per attempt, for that attempt's backend.
                "http_filters": [
                    {"name": "envoy.filters.http.wasm", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {"name": "provider-rewrite-upstream", "root_id": "tollgate", "failure_policy": "FAIL_RELOAD",
                                   "allow_on_headers_stop_iteration": True,
                                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                     "value": json.dumps(upstream_config)},
                                   "vm_config": {"vm_id": "tollgate", "runtime": "envoy.wasm.runtime.v8",
                                                 "environment_variables": {"host_env_keys": env_keys},
                                                 "code": {"local": {"filename": wasm}}}}}},
                    {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]}}}
        if matches:
            cluster["transport_socket_matches"] = matches
        clusters.append("- " + json.dumps(cluster))
        routes.append("- " + json.dumps({
            "name": f"tollgate-fallback-{fallback['cluster']}",
            "match": {"prefix": "/", "headers": [{"name": header, "string_match": {"exact": fallback["cluster"]}}]},
            "route": {"cluster_header": header, "timeout": "300s", "retry_policy": {
                "retry_on": "5xx,reset,connect-failure,retriable-status-codes", "retriable_status_codes": [429],
                "num_retries": len(fallback["backends"]) - 1,
                "retry_priority": {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                    "update_frequency": 1}}}}}))
    if routes:
        parts["PROVIDER_ROUTES"] = "\n              ".join(routes + [parts["PROVIDER_ROUTES"]])
    parts["BACKEND_CLUSTERS"] = "\n  ".join(clusters)
    return parts


def without_api_keys(filter_config):
    """The plugin configuration without this tool's `api_keys` and `jwt` (they configure Envoy's
    own auth filters)."""
    if not isinstance(filter_config, dict):
        return filter_config
    tool_keys = ("api_keys", "jwt")
    section = filter_config.get("provider_rewrite")
    if isinstance(section, dict) and any(k in section for k in tool_keys):
        return {**filter_config, "provider_rewrite": {k: v for k, v in section.items() if k not in tool_keys}}
    if any(k in filter_config for k in tool_keys):
        return {k: v for k, v in filter_config.items() if k not in tool_keys}
    return filter_config


def render(*, wasm=DEFAULT_WASM, provider="mock:8081", listen_port=10000, admin_port=9901, access_log="/dev/stdout",
           filter_config=None, h2=False, with_filter=True, buffer_limit=1 << 20, rls_port=8091):
    with open(TEMPLATE) as f:
        text = f.read()
    if provider.startswith("mock:"):
        host, port, tls, rewrite, discovery = "127.0.0.1", int(provider.split(":", 1)[1]), "", "", "STATIC"
    else:
        url = urlsplit(KNOWN.get(provider, provider))
        host = url.hostname
        port = url.port or (443 if url.scheme == "https" else 80)
        tls = TLS.format(host=host) if url.scheme == "https" else ""
        rewrite = f"host_rewrite_literal: {host}"
        discovery = "LOGICAL_DNS"
    config = filter_config if isinstance(filter_config, str) else json.dumps(
        without_api_keys(filter_config) if filter_config is not None else DEFAULT_FILTER_CONFIG)
    values = {
        "ADMIN_PORT": admin_port, "LISTEN_PORT": listen_port, "ACCESS_LOG": access_log, "WASM": wasm,
        "FILTER_CONFIG": config.replace("'", "''"), "PROVIDER_HOST": host, "PROVIDER_PORT": port,
        "PROVIDER_TLS": tls, "HOST_REWRITE": rewrite, "PROVIDER_DISCOVERY": discovery,
        "PROVIDER_PROTOCOL": H2 if h2 else H1_TRAILERS, "BUFFER_LIMIT": buffer_limit,
        "BODY_BUFFER_LIMIT": 2 * buffer_limit,
        **global_quota_parts(filter_config, rls_port),
        **provider_parts(filter_config, provider, wasm),
    }
    text = string.Template(text).substitute(values)
    if not with_filter:
        # Bare Envoy for the benchmark baseline: the same config without the wasm filter.
        start = text.index("          - name: envoy.filters.http.wasm")
        end = text.index("          - name: envoy.filters.http.router")
        text = text[:start] + text[end:]
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--out", required=True)
    p.add_argument("--wasm", default=DEFAULT_WASM)
    p.add_argument("--provider", default="mock:8081", help="mock:PORT, openai, anthropic or a base URL")
    p.add_argument("--listen-port", type=int, default=10000)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--access-log", default="/dev/stdout")
    p.add_argument("--filter-config", help="token-counter configuration (JSON)")
    p.add_argument("--h2", action="store_true", help="HTTP/2 to the provider")
    p.add_argument("--no-filter", action="store_true", help="bare Envoy (benchmark baseline)")
    p.add_argument("--rls-port", type=int, default=8091, help="rate-limit service port (global quota)")
    a = p.parse_args()
    text = render(wasm=a.wasm, provider=a.provider, listen_port=a.listen_port, admin_port=a.admin_port,
                  access_log=a.access_log, filter_config=json.loads(a.filter_config) if a.filter_config else None,
                  h2=a.h2, with_filter=not a.no_filter, rls_port=a.rls_port)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
