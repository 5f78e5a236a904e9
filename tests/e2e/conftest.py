import json
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, WASM_DIR, Envoy, Mock, envoy_config, workdir  # noqa: E402

MANIFEST = json.load(open(os.path.join(ROOT, "tests", "fixtures", "manifest.json")))["cases"]


def pytest_sessionstart(session):
    for name in ("tollgate_token_counter.wasm", "tollgate_quota.wasm", "tollgate.wasm"):
        if not os.path.exists(os.path.join(WASM_DIR, name)):
            raise pytest.UsageError(f"{name} is not built: run `make build` (or `make test`) first")


@pytest.fixture(scope="session")
def work():
    path = workdir()
    yield path
    if os.environ.get("TOLLGATE_KEEP_E2E") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def mock(work):
    m = Mock(work)
    yield m
    m.stop()


@pytest.fixture(scope="session")
def gateway(work, mock):
    """Envoy + token-counter (default config, consumer from x-tollgate-consumer)."""
    e = Envoy(work, mock, name="gateway")
    yield e
    e.stop()


@pytest.fixture
def manifest():
    return MANIFEST


@pytest.fixture(scope="session")
def run_gateway(work, mock):
    """Exactly what `make run` serves: tollgate.wasm with token-counter and quota in shadow mode."""
    e = Envoy(work, mock, name="run", wasm="tollgate.wasm", filter_config=envoy_config.RUN_CONFIG_MOCK)
    yield e
    e.stop()
