"""Real tier, issue 12 part 1: metrics_enabled on the test host. Prometheus (Debian's package) scrapes node-exporter
and the vLLM stand-in's /metrics (vLLM's metric names), every listener on loopback; promtool accepts the rules and its
rule tests show each alert firing when its condition is made true. The host has no GPU: the GPU sampler is a named
skip here (its script is rendered and run in the fast tier)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from testing import testhost
from tests.conftest import REPO, deploy as run_deploy, on_host as sh

pytestmark = pytest.mark.realhost
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def h(one_host):
    yield one_host
    print("metrics figures:", json.dumps(FIGURES))


def deploy(**data):
    return run_deploy(data=data)


def used_mib(h: dict) -> int:
    return int(sh(h, "free -m | awk '/^Mem:/ {print $3}'"))


def disk_mib(h: dict) -> int:
    return int(sh(h, "df -Pm / | awk 'NR==2 {print $3}'"))


def test_metrics_on_loopback_every_target_up(h):
    assert deploy().returncode == 0
    ram0, disk0 = used_mib(h), disk_mib(h)
    t0 = time.monotonic()
    p = deploy(metrics_enabled=True)
    FIGURES["metrics_apply_s"] = round(time.monotonic() - t0, 1)
    assert p.returncode == 0, p.stdout[-3000:]
    FIGURES["extra_disk_mib"] = disk_mib(h) - disk0
    listen = sh(h, "ss -ltnH | awk '{print $4}'").split()
    assert "127.0.0.1:9090" in listen and "127.0.0.1:9100" in listen
    assert not [a for a in listen if a.endswith((":9090", ":9100")) and not a.startswith("127.0.0.1:")]
    deadline = time.monotonic() + 300  # give-up bounds, not timing claims (a busy CI box scrapes late)
    while True:
        targets = json.loads(sh(h, "curl -s http://127.0.0.1:9090/api/v1/targets"))["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if health == {"node": "up", "vllm": "up"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health == {"node": "up", "vllm": "up"}, targets
    FIGURES["extra_ram_mib"] = used_mib(h) - ram0
    rss = sh(h, "ps -C prometheus,prometheus-node-exporter -o rss= | awk '{s+=$1} END {print int(s/1024)}'")
    FIGURES["prometheus_and_node_exporter_rss_mib"] = int(rss)
    # The numbers a user asks for come back (vLLM's names from the stand-in, the host's from node-exporter).
    q = sh(h, "curl -s 'http://127.0.0.1:9090/api/v1/query' --data-urlencode 'query=vllm:num_requests_running'")
    assert json.loads(q)["data"]["result"], q
    args = sh(h, "cat /etc/default/prometheus")
    assert "--storage.tsdb.retention.time=30d" in args and "--web.listen-address=127.0.0.1:9090" in args


def test_rules_pass_promtool_and_each_alert_fires_when_its_condition_holds(h):
    assert "SUCCESS" in sh(h, "promtool check rules /etc/prometheus/llmhost-alerts.yml 2>&1")
    rules = json.loads(sh(h, "curl -s http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"][0]["rules"]
    assert sorted(r["name"] for r in rules) == ["LlmhostBootKernelWithoutModule", "LlmhostDiskLow",
                                                "LlmhostDriverMismatch", "LlmhostGpuHot", "LlmhostGpuMissing",
                                                "LlmhostKvCacheFull", "LlmhostServiceDown"]
    testhost.ssh(h["address"], "mkdir -p /root/prom-tests")
    subprocess.run(["scp", "-q", "-i", str(testhost.STATE / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", str(REPO / "tests/fixtures/prometheus/alerts_test.yml"),
                    f"root@{h['address']}:/root/prom-tests/"], check=True)
    out = sh(h, "cd /root/prom-tests && promtool test rules alerts_test.yml 2>&1")
    assert "SUCCESS" in out, out


def test_a_stopped_service_is_seen_down_and_rerun_changes_nothing(h):
    sh(h, "systemctl stop vllm")
    deadline = time.monotonic() + 300
    while True:
        q = json.loads(sh(h, "curl -s 'http://127.0.0.1:9090/api/v1/query' --data-urlencode 'query=up{job=\"vllm\"}'"))
        if q["data"]["result"] and q["data"]["result"][0]["value"][1] == "0":
            break
        assert time.monotonic() < deadline, q
        time.sleep(2)
    alerts = json.loads(sh(h, "curl -s http://127.0.0.1:9090/api/v1/alerts"))["data"]["alerts"]
    deadline = time.monotonic() + 300
    while not [a for a in alerts if a["labels"]["alertname"] == "LlmhostServiceDown"]:
        assert time.monotonic() < deadline, alerts  # pending first (for: 2m), then firing
        time.sleep(2)
        alerts = json.loads(sh(h, "curl -s http://127.0.0.1:9090/api/v1/alerts"))["data"]["alerts"]
    assert deploy(metrics_enabled=True).returncode == 0  # starts vLLM again
    again = deploy(metrics_enabled=True)
    m = re.search(r"Grand total\s+\d+\s+(\S+)", again.stdout)
    assert m and m.group(1) == "-", again.stdout[-3000:]
