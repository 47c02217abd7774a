"""Real tier: two disposable test hosts at once, planned in parallel through the project's inventory."""

import json
import os
import subprocess
import sys

import pytest

from testing import hub, testhost
from tests.conftest import REPO, require_test_host

pytestmark = pytest.mark.realhost


def test_two_test_hosts_boot_and_plan_in_parallel():
    require_test_host()
    hub.up()
    try:
        hosts = testhost.up(2, hub_port=hub.PORT)
        assert len({h["address"] for h in hosts}) == 2
        for h in hosts:
            assert testhost.ssh(h["address"], "systemctl is-system-running --wait", check=False).stdout.strip() in (
                "running", "degraded")
        inv = json.loads((REPO / ".cache/testhost/inventory.json").read_text())
        assert [h[0] for h in inv] == [h["address"] for h in hosts]
        env = {k: v for k, v in os.environ.items() if k != "LLMHOST_HOST"}
        p = subprocess.run([sys.executable, "-m", "pyinfra", "inventories/home.py", "deploy.py", "--dry", "--json"],
                           cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        plan = json.loads(p.stdout)
        weights = [op for op in plan["plan"] if op["name"].startswith("Model weights | Weights")]
        assert weights and sorted(weights[0]["hosts_with_change"]) == sorted(h["address"] for h in hosts)
    finally:
        testhost.down()
        hub.down()
