# Tollgate: the two commands of the README, and their parts.
#   make run    Envoy + Tollgate on 127.0.0.1:10000 (admin :9901) in front of the mock provider; API keys, tiers and guardrails on :10001
#   make test   everything: lint, unit tests (native and wasm), golden and fake-host tests, e2e in Envoy
.PHONY: run test setup build images lint unit wasm-test e2e guard-eval bench clean

PY := .venv/bin/python
WASM_DIR := target/wasm32-wasip1/release
MODULES := tollgate-token-counter tollgate-guardrails tollgate-quota tollgate-provider-rewrite tollgate tollgate-bench-reference

setup:
	@tools/setup.sh

build: setup
	cargo build --release --target wasm32-wasip1 $(addprefix -p ,$(MODULES))
	cargo build --release -p tollgate-cli
	@for f in $(WASM_DIR)/tollgate_token_counter.wasm $(WASM_DIR)/tollgate_guardrails.wasm $(WASM_DIR)/tollgate_quota.wasm $(WASM_DIR)/tollgate_provider_rewrite.wasm $(WASM_DIR)/tollgate.wasm; do \
	  printf '%-50s %8d bytes\n' $$f $$(stat -c %s $$f); done

# OCI images of every module (Wasm artifact and compat formats), without Docker: target/oci/<image>/
images: build
	$(PY) tools/oci_images.py

# PROVIDER=mock (default, offline) | openai | anthropic | https://host ; see README.
run: build
	$(PY) tools/run_gateway.py --provider $(or $(PROVIDER),mock)

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip1 $(addprefix -p ,$(MODULES)) -- -D warnings

unit: setup
	cargo test --workspace

wasm-test: setup
	cargo test -p tollgate-core --target wasm32-wasip1

e2e: build
	$(PY) -m pytest tests/e2e -q

# Detection quality of the guardrails (PII F1 >= 0.99, decoys <= 1 %; injection reported).
guard-eval: build
	$(PY) tools/guardrails_eval.py

test: lint unit wasm-test e2e guard-eval

bench: build
	$(PY) bench/run.py

clean:
	cargo clean
	rm -rf .venv .work
