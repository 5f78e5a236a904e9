"""The soak (tools/soak.py) at the size the test command affords: mixed traffic through every
stage on two workers, no non-2xx, no panic or VM failure, no VM memory growth after warm-up.
The 1,000,000-request run and its figures are in the README (Reliability)."""
import json
import os
import subprocess
import sys

from harness import ROOT


def test_a_short_soak_is_clean_and_flat(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "soak.py"), "--requests", "20000",
                          "--segment-seconds", "3", "--out", str(out)], capture_output=True, text=True, timeout=600)
    report = json.loads(out.read_text())
    assert run.returncode == 0, run.stdout + run.stderr
    assert report["requests"] >= 20000 and report["non_2xx"] == 0 and report["socket_errors"] == 0
    assert report["panics_or_vm_failures_in_log"] == 0 and report["vm_reloads"] == 0
    assert len(report["vm_memory_growth_bytes_second_half"]) == 2, "one memory gauge per worker's VM"
    assert all(growth == 0 for growth in report["vm_memory_growth_bytes_second_half"].values())
