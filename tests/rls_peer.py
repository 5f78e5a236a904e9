#!/usr/bin/env python3
"""A rate-limit service TEST DOUBLE: gRPC, Redis-backed fixed windows. Never ship it.

Like the mock provider, it stands in for engines that cannot be installed here, so the global
quota mode can be tested end to end. It implements, on one port:

- `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, with the semantics of the
  flavour it is started with:
  - `--flavor envoy` (envoyproxy/ratelimit, Redis backend, default settings): each descriptor's
    hits are its own `hits_addend` (UInt64Value, field 3) when set — zero included: a check
    without increment — else `max(1, request.hits_addend)`; `INCRBY key hits` (the counter is
    incremented even when the answer is OVER_LIMIT); OVER_LIMIT when the new value exceeds the
    limit. `is_negative_hits` (field 4) decrements, floored at 0, and always answers OK.
  - `--flavor limitador` (Kuadrant Limitador): per-descriptor `hits_addend` is ignored; hits =
    `max(1, request.hits_addend)`; check-and-update: if any counter would exceed its limit,
    nothing is counted and the answer is OVER_LIMIT.
- `kuadrant.service.ratelimit.v1.RateLimitService/CheckRateLimit` (check, never count) and
  `/Report` (count unconditionally), taking the same request message (Limitador's semantics).

Limits come from a file in envoyproxy/ratelimit's configuration format (`domain`,
`descriptors` with `key`, optional `value`, `rate_limit: {unit, requests_per_unit, name}`,
nested `descriptors`), so the example configuration shipped in examples/ is what the tests load.
A descriptor's entries walk that tree; a node with a `value` matches only that value and wins
over a node without one (which matches any value, one counter per value).

Responses carry one status per descriptor (code, current_limit with name, limit_remaining,
duration_until_reset), like envoyproxy/ratelimit; with `--draft-headers` (Limitador's
`--rate-limit-headers DRAFT_VERSION_03`) the tightest limit is also returned as
X-RateLimit-{Limit,Remaining,Reset} in `response_headers_to_add`.

`GET`-free introspection for tests: every call is appended as JSON to `--calls-log`.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
import redis
import yaml

UNITS = {"second": (1, 1), "minute": (60, 2), "hour": (3600, 3), "day": (86400, 4), "month": (2592000, 5),
         "year": (31536000, 6)}
OK, OVER_LIMIT = 1, 2


# --- protobuf wire format (just what these messages use) -------------------------------------

def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf):
    """Yields (field number, wire type, value) of a message; LEN values are bytes."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            length, i = read_varint(buf, i)
            value, i = bytes(buf[i:i + length]), i + length
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def varint(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value) if value else b""


def field_bytes(number, value):
    return varint(number << 3 | 2) + varint(len(value)) + value


def decode_request(buf):
    request = {"domain": "", "descriptors": [], "hits_addend": 0}
    for number, _, value in fields(buf):
        if number == 1:
            request["domain"] = value.decode()
        elif number == 2:
            descriptor = {"entries": [], "hits_addend": None, "negative": False}
            for n, _, v in fields(value):
                if n == 1:
                    entry = dict((k, x.decode()) for k, _, x in fields(v))
                    descriptor["entries"].append((entry.get(1, ""), entry.get(2, "")))
                elif n == 3:  # google.protobuf.UInt64Value
                    descriptor["hits_addend"] = dict((k, x) for k, _, x in fields(v)).get(1, 0)
                elif n == 4:
                    descriptor["negative"] = bool(v)
            request["descriptors"].append(descriptor)
        elif number == 3:
            request["hits_addend"] = value
    return request


def encode_response(overall, statuses, headers):
    out = field_varint(1, overall)
    for status in statuses:
        body = field_varint(1, status["code"])
        if status.get("limit"):
            limit = status["limit"]
            body += field_bytes(2, field_varint(1, limit["requests_per_unit"]) + field_varint(2, limit["unit_code"])
                                + field_bytes(3, limit["name"].encode()))
            body += field_varint(3, status["remaining"])
            body += field_bytes(4, field_varint(1, status["reset"]))
        out += field_bytes(2, body)
    for key, value in headers:
        out += field_bytes(3, field_bytes(1, key.encode()) + field_bytes(2, value.encode()))
    return out


# --- limits ---------------------------------------------------------------------------------

class Limits:
    def __init__(self, path):
        with open(path) as f:
            config = yaml.safe_load(f)
        self.domain = config["domain"]
        self.tree = config.get("descriptors", [])

    def find(self, entries):
        """The rate limit of a descriptor's entries, or None (not limited)."""
        nodes, limit = self.tree, None
        for key, value in entries:
            exact = next((n for n in nodes if n["key"] == key and n.get("value") == value), None)
            node = exact or next((n for n in nodes if n["key"] == key and "value" not in n), None)
            if node is None:
                return None
            limit, nodes = node.get("rate_limit"), node.get("descriptors", [])
        if not limit or limit.get("unlimited"):
            return None
        seconds, code = UNITS[limit["unit"].lower()]
        return {"requests_per_unit": int(limit["requests_per_unit"]), "seconds": seconds, "unit_code": code,
                "name": limit.get("name", "")}


# --- the service ----------------------------------------------------------------------------

CHECK_AND_UPDATE = """
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if current + tonumber(ARGV[1]) > tonumber(ARGV[i + 1]) then
    return {0, i}
  end
end
local values = {}
for i, key in ipairs(KEYS) do
  values[i] = redis.call('INCRBY', key, ARGV[1])
  redis.call('EXPIRE', key, ARGV[#KEYS + 1 + i])
end
return {1, values}
"""

DECREMENT = """
local current = redis.call('GET', KEYS[1])
if current == false then return 0 end
local value = math.max(0, tonumber(current) - tonumber(ARGV[1]))
redis.call('SET', KEYS[1], tostring(value), 'EX', ARGV[2])
return value
"""


class Service:
    def __init__(self, limits, store, flavor, draft_headers, calls_log):
        self.limits, self.redis, self.flavor = limits, store, flavor
        self.draft_headers = draft_headers
        self.calls_log = open(calls_log, "a") if calls_log else None
        self.lock = threading.Lock()
        self.check_and_update = self.redis.register_script(CHECK_AND_UPDATE)
        self.decrement = self.redis.register_script(DECREMENT)

    def log(self, method, request, response):
        if self.calls_log:
            with self.lock:
                entry = {"method": method, "time": time.time(), "request": request, "response": response}
                self.calls_log.write(json.dumps(entry) + "\n")
                self.calls_log.flush()

    def key(self, domain, entries, limit, now):
        window = now - now % limit["seconds"]
        return "_".join([domain] + [f"{k}_{v}" for k, v in entries] + [str(window)])

    def status(self, code, limit, value, now):
        if limit is None:
            return {"code": OK}
        remaining = max(0, limit["requests_per_unit"] - value)
        reset = limit["seconds"] - now % limit["seconds"]
        return {"code": code, "limit": limit, "remaining": remaining, "reset": reset}

    def respond(self, method, request, statuses):
        overall = OVER_LIMIT if any(s["code"] == OVER_LIMIT for s in statuses) else OK
        headers = []
        limited = [s for s in statuses if s.get("limit")]
        if self.draft_headers and limited:
            tightest = min(limited, key=lambda s: s["remaining"])
            limit = tightest["limit"]
            name = f';name="{limit["name"]}"' if limit["name"] else ""
            headers = [("X-RateLimit-Limit", f'{limit["requests_per_unit"]}, {limit["requests_per_unit"]};w={limit["seconds"]}{name}'),
                       ("X-RateLimit-Remaining", str(tightest["remaining"])), ("X-RateLimit-Reset", str(tightest["reset"]))]
        self.log(method, request, {"overall": overall, "statuses": [
            {"code": s["code"], "remaining": s.get("remaining"), "name": s.get("limit", {}).get("name")} for s in statuses]})
        return encode_response(overall, statuses if self.flavor == "envoy" else [], headers)

    def should_rate_limit(self, raw, _context):
        request = decode_request(raw)
        if self.flavor == "limitador":
            return self.limitador(request, "ShouldRateLimit", update=True, check=True)
        now = int(time.time())
        statuses = []
        for descriptor in request["descriptors"]:
            limit = self.limits.find(descriptor["entries"]) if request["domain"] == self.limits.domain else None
            if limit is None:
                statuses.append({"code": OK})
                continue
            key = self.key(request["domain"], descriptor["entries"], limit, now)
            hits = descriptor["hits_addend"]
            if hits is None:
                hits = max(1, request["hits_addend"])
            if descriptor["negative"]:
                value = int(self.decrement(keys=[key], args=[hits, limit["seconds"]]))
                statuses.append(self.status(OK, limit, value, now))
                continue
            pipe = self.redis.pipeline()
            pipe.incrby(key, hits)
            pipe.expire(key, limit["seconds"])
            value = pipe.execute()[0]
            statuses.append(self.status(OVER_LIMIT if value > limit["requests_per_unit"] else OK, limit, value, now))
        return self.respond("ShouldRateLimit", request, statuses)

    def limitador(self, request, method, *, update, check):
        now = int(time.time())
        hits = max(1, request["hits_addend"])
        matched = []
        for descriptor in request["descriptors"]:
            limit = self.limits.find(descriptor["entries"]) if request["domain"] == self.limits.domain else None
            if limit is not None:
                matched.append((self.key(request["domain"], descriptor["entries"], limit, now), limit))
        if not matched:
            return self.respond(method, request, [{"code": OK}])
        keys = [k for k, _ in matched]
        if check and update:
            args = [hits] + [l["requests_per_unit"] for _, l in matched] + [l["seconds"] for _, l in matched]
            admitted, detail = self.check_and_update(keys=keys, args=args)
            if admitted:
                values = [int(v) for v in detail]
                return self.respond(method, request, [self.status(OK, l, v, now) for (_, l), v in zip(matched, values)])
            over = int(detail) - 1
            values = [int(self.redis.get(k) or 0) for k in keys]
            return self.respond(method, request, [
                self.status(OVER_LIMIT if i == over else OK, l, v, now) for i, ((_, l), v) in enumerate(zip(matched, values))])
        if update:  # Report: count unconditionally
            pipe = self.redis.pipeline()
            for key, limit in matched:
                pipe.incrby(key, hits)
                pipe.expire(key, limit["seconds"])
            values = pipe.execute()[::2]
            return self.respond(method, request, [self.status(OK, l, int(v), now) for (_, l), v in zip(matched, values)])
        values = [int(self.redis.get(k) or 0) for k in keys]  # CheckRateLimit: never count
        return self.respond(method, request, [
            self.status(OVER_LIMIT if v + hits > l["requests_per_unit"] else OK, l, v + hits, now)
            for (_, l), v in zip(matched, values)])

    def check_rate_limit(self, raw, _context):
        return self.limitador(decode_request(raw), "CheckRateLimit", update=False, check=True)

    def report(self, raw, _context):
        return self.limitador(decode_request(raw), "Report", update=True, check=False)


def handlers(service):
    identity = lambda b: b  # noqa: E731 - messages are (de)serialised by hand
    unary = lambda f: grpc.unary_unary_rpc_method_handler(f, request_deserializer=identity, response_serializer=identity)  # noqa: E731
    return [
        grpc.method_handlers_generic_handler("envoy.service.ratelimit.v3.RateLimitService",
                                             {"ShouldRateLimit": unary(service.should_rate_limit)}),
        grpc.method_handlers_generic_handler("kuadrant.service.ratelimit.v1.RateLimitService",
                                             {"CheckRateLimit": unary(service.check_rate_limit),
                                              "Report": unary(service.report)}),
    ]


def main():
    p = argparse.ArgumentParser(description="rate-limit service test double (RLS v3 + Kuadrant Check/Report)")
    p.add_argument("--config", required=True, help="limits, in envoyproxy/ratelimit's format")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--flavor", choices=["envoy", "limitador"], default="envoy")
    p.add_argument("--draft-headers", action="store_true")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--calls-log")
    a = p.parse_args()
    service = Service(Limits(a.config), redis.Redis.from_url(a.redis), a.flavor, a.draft_headers, a.calls_log)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers(handlers(service))
    port = server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            json.dump({"port": port}, f)
        os.replace(a.port_file + ".tmp", a.port_file)
    print(f"rls peer ({a.flavor}) on 127.0.0.1:{port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()
    sys.exit(0)


if __name__ == "__main__":
    main()
