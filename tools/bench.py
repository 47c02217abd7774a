"""Benchmark (a report, not a test): test-host boot, first apply, no-op re-run, Open WebUI start, peak RAM, and the
systemd-analyze security exposure of each unit. Run as root: python tools/bench.py [--cold]

--cold removes the cached golden image first, so the boot includes debootstrap.
"""

import json
import os
import subprocess
import sys
import statistics
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from testing import hub, testhost  # noqa: E402


def timed(fn, *a):
    t0 = time.monotonic()
    out = fn(*a)
    return out, time.monotonic() - t0


def deploy(deploy_file: str = "deploy.py", nodelay: bool = False) -> str:
    env = {**os.environ, "LLMHOST_BENCH_NODELAY": "1" if nodelay else "0"}
    p = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "inventories/home.py", deploy_file], cwd=ROOT,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    if p.returncode:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    return p.stdout + p.stderr


def main() -> None:
    report = {}
    if "--cold" in sys.argv:
        for f in testhost.IMAGES.glob("bookworm-*.tar.zst"):
            f.unlink()
    hub.up()
    _, report["testhost_boot_s"] = timed(testhost.up, 1, hub.PORT)
    addr = json.loads((ROOT / ".cache/testhost/state.json").read_text())["hosts"][0]["address"]
    peak = [psutil.virtual_memory().used]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], psutil.virtual_memory().used)
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    _, report["first_apply_s"] = timed(deploy)
    done.set()
    report["peak_ram_used_gib_during_apply"] = round(peak[0] / 2**30, 2)

    noop = statistics.median(timed(deploy)[1] for _ in range(5))
    trivial = statistics.median(timed(deploy, "tools/trivial_deploy.py")[1] for _ in range(5))
    trivial_nd = statistics.median(timed(deploy, "tools/trivial_deploy.py", True)[1] for _ in range(5))
    report["noop_rerun_s_median_of_5"] = noop
    report["trivial_one_op_deploy_s_median_of_5 (stock pyinfra)"] = trivial
    report["trivial_one_op_deploy_s_median_of_5 (with TCP_NODELAY)"] = trivial_nd
    report["noop_over_trivial_ratio (stock)"] = round(noop / trivial, 2)
    report["noop_over_trivial_ratio (same transport)"] = round(noop / trivial_nd, 2)
    for unit, port in (("vllm", 8000), ("open-webui", 8080)):  # kill -9 -> systemd restarts it -> /health 200
        t0 = time.monotonic()
        testhost.ssh(addr, f"kill -9 $(systemctl show -p MainPID --value {unit}) && sleep 1 && until curl -sf "
                           f"http://127.0.0.1:{port}/health >/dev/null; do sleep 0.5; done", timeout=300)
        report[f"kill9_{unit}_to_healthy_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    testhost.ssh(addr, "systemctl restart open-webui")  # returns when ExecStartPost saw /health
    report["openwebui_restart_to_healthy_s"] = round(time.monotonic() - t0, 1)
    report["openwebui_venv_gib"] = testhost.ssh(addr, "du -s --block-size=1M /opt/llmhost/open-webui").stdout.split()[0]
    for unit in ("vllm.service", "open-webui.service"):
        out = testhost.ssh(addr, f"systemd-analyze security --no-pager {unit} | tail -n1", check=False).stdout
        report[f"exposure_{unit}"] = out.strip()
    for k, v in report.items():
        print(f"{k}: {round(v, 1) if isinstance(v, float) else v}")
    testhost.down()
    hub.down()


if __name__ == "__main__":
    main()
