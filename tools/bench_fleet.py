"""Fleet benchmark (a report, not a test): wall time of a fleet apply and a fleet no-op re-run (two GPU-less "GPU
hosts" with the stand-in + one UI host with the router and Open WebUI, deployed in parallel by pyinfra) against the
same on one host (one box: stand-in + Open WebUI), all measured in one run on fresh test hosts. Run as root:

    python tools/bench_fleet.py
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from testing import hub, testhost  # noqa: E402

KEY = "bench-fleet-key-0123456789abcdef"


def timed_deploy(inventory: str, env_extra: dict) -> float:
    env = {**{k: v for k, v in os.environ.items() if k != "LLMHOST_HOST"}, **env_extra}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pyinfra", "-y", inventory, "deploy.py"], cwd=ROOT, env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    return time.monotonic() - t0


def main() -> None:
    hub.up()
    hosts = testhost.up(4, hub_port=hub.PORT, fleet=True)
    inv = dict((name, data) for name, data in json.loads((ROOT / ".cache/testhost/inventory.json").read_text()))
    state = ROOT / ".cache" / "testhost"
    one = state / "bench-one.json"  # llmhost-t4 alone, as inventories/home.py's one box
    one.write_text(json.dumps([[hosts[3]["address"], inv[hosts[3]["address"]]]]))
    spec = state / "bench-fleet.json"

    def member(h, **extra):
        return [h["address"], {**inv[h["address"]], "fleet_address": h["fleet_address"], **extra}]

    spec.write_text(json.dumps({
        "gpu_hosts": [member(h, vllm_host=h["fleet_address"]) for h in hosts[:2]],
        "ui_hosts": [member(hosts[2], gpu_host=False)]}))
    one_env = {"LLMHOST_INVENTORY_JSON": str(one)}
    fleet_env = {"LLMHOST_FLEET_JSON": str(spec), "LLMHOST_VLLM_API_KEY": KEY}
    report = {"one_host_apply_s": timed_deploy("inventories/home.py", one_env),
              "fleet_3_hosts_apply_s": timed_deploy("inventories/fleet.py", fleet_env)}
    report["one_host_noop_s_median_of_3"] = statistics.median(
        timed_deploy("inventories/home.py", one_env) for _ in range(3))
    report["fleet_3_hosts_noop_s_median_of_3"] = statistics.median(
        timed_deploy("inventories/fleet.py", fleet_env) for _ in range(3))
    report["apply_ratio_fleet_over_one"] = report["fleet_3_hosts_apply_s"] / report["one_host_apply_s"]
    report["noop_ratio_fleet_over_one"] = (report["fleet_3_hosts_noop_s_median_of_3"]
                                           / report["one_host_noop_s_median_of_3"])
    for k, v in report.items():
        print(f"{k}: {v:.2f}")
    testhost.down()
    hub.down()


if __name__ == "__main__":
    main()
