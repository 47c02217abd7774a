"""Write pyinfra-testing fact fixtures: the outputs recorded on the real H200 host (tests/fixtures/gpu-host) plus
one other case per fact. Run: python tools/make_fact_fixtures.py (expected values reviewed by hand)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from operations import facts  # noqa: E402

BASE = ROOT / "tests/fixtures/pyinfra/facts"
OTHER = {
    "NvidiaSmi": [("no_driver", ["exit=missing"], {"status": "missing", "gpus": [], "error": "", "version_mismatch": False}, None),
                  ("version_mismatch", ["Failed to initialize NVML: Driver/library version mismatch",
                                        "NVML library version: 580.95", "exit=18"],
                   {"status": "error", "gpus": [], "error": "Failed to initialize NVML: Driver/library version mismatch\n"
                    "NVML library version: 580.95", "version_mismatch": True}, None)],
    "PciNvidiaGpus": [("rtx3060_and_pascal", ["0000:01:00.0 0x2504 0x030000", "0000:02:00.0 0x1b80 0x030000"],
                       [{"slot": "0000:01:00.0", "device_id": "0x2504", "class": "0x030000"},
                        {"slot": "0000:02:00.0", "device_id": "0x1b80", "class": "0x030000"}], None)],
    "NvidiaKernelModule": [("proprietary", ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 2024"],
                            {"version": "535.183.01", "flavour": "proprietary"}, None)],
    "SecureBoot": [("enabled", ["SecureBoot 1"], "enabled", None)],
    "AptHolds": [("ours_held", ["nvidia-utils-580-server", "nvidia-headless-no-dkms-580-server-open"],
                  ["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"], None)],
    "PythonVersions": [("jammy", ["python3.10"], ["3.10"], None)],
    "MemTotalMib": [("small", ["3911"], 3911, None)],
    "DiskFreeMib": [("full", ["0"], 0, {"path": "/var/lib/llmhost"})],
    "DpkgVersion": [("installed", ["580.95.05-0ubuntu0.24.04.2"], "580.95.05-0ubuntu0.24.04.2",
                     {"package": "nvidia-utils-580-server"}),
                    ("absent", [], "", {"package": "nvidia-utils-580-server"})],
    "LinkTarget": [("linked", ["/opt/llmhost/vllm/venvs/0123456789ab"], "/opt/llmhost/vllm/venvs/0123456789ab",
                    {"path": "/opt/llmhost/vllm/current"})],
}


def write(name: str, label: str, case: dict) -> None:
    d = BASE / name
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{label}.json").write_text(json.dumps(case, indent=2) + "\n")


for line in (ROOT / "tests/fixtures/gpu-host/facts.jsonl").read_text().splitlines():
    rec = json.loads(line)
    if rec["output"].strip():
        case = {"command": rec["command"], "output": rec["output"].splitlines(), "fact": rec["value"]}
        if rec["args"]:
            case["arg"] = rec["args"]
        write(rec["fact"], "recorded_h200", case)
for name, cases in OTHER.items():
    for label, output, fact, arg in cases:
        case = {"command": getattr(facts, name)().command(**(arg or {})), "output": output, "fact": fact}
        if arg:
            case["arg"] = arg
        write(name, label, case)
