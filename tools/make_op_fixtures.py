"""Write pyinfra-testing operation fixtures (one changing and one noop case per custom operation).

The commands are produced by the operation itself and then reviewed by hand before committing; the tests then
hold the operations to them. Run: python tools/make_op_fixtures.py
"""

import hashlib
import json
import sys
from pathlib import Path
from unittest.mock import patch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyinfra.context import ctx_host, ctx_state  # noqa: E402
from pyinfra_testing.operations import parse_commands  # noqa: E402
from pyinfra_testing.util import FakeState, create_host  # noqa: E402

BASE = ROOT / "tests/fixtures/pyinfra/ops"
PROBE = "/opt/llmhost/bin/llmhost-probe"
HELD = ["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"]
VENV_ARGS = {"root": "/opt/llmhost/open-webui", "python": "3.11", "requirements": ["open-webui==0.12.4"],
             "uv": "/opt/llmhost/tools/bin/uv", "owner": "root", "env": {"UV_CACHE_DIR": "/var/cache/llmhost/uv"}}
SECRET = "/etc/llmhost/hf-token"
MARKER = "/var/lib/llmhost/models/.complete-org--m-0123"
CASES = {
    "nvidia_driver.held": [
        ("hold_missing", {"packages": HELD}, {"facts.AptHolds": [HELD[1]]}),
        ("all_held", {"packages": HELD}, {"facts.AptHolds": sorted(HELD)}),
    ],
    "python_venv.venv": [
        ("new_pin", VENV_ARGS, {"facts.LinkTarget": {"path=/opt/llmhost/open-webui/current": "/opt/llmhost/open-webui/venvs/000000000000"},
                                "files.File": {"path=/opt/llmhost/open-webui/venvs/e6243fe9508b/.llmhost-complete": None}}),
        ("current", VENV_ARGS, {"facts.LinkTarget": {"path=/opt/llmhost/open-webui/current": "/opt/llmhost/open-webui/venvs/e6243fe9508b"},
                                "files.File": {"path=/opt/llmhost/open-webui/venvs/e6243fe9508b/.llmhost-complete": {"mode": 644}}}),
        ("rollback_switches_link_only", VENV_ARGS, {
            "facts.LinkTarget": {"path=/opt/llmhost/open-webui/current": "/opt/llmhost/open-webui/venvs/000000000000"},
            "files.File": {"path=/opt/llmhost/open-webui/venvs/e6243fe9508b/.llmhost-complete": {"mode": 644}}}),
    ],
    "model_weights.secret_file": [
        ("missing", {"path": SECRET, "content": "hf_test\n"}, {"files.File": {f"path={SECRET}": None},
                                                               "files.Sha256File": {f"path={SECRET}": None}}),
        ("current", {"path": SECRET, "content": "hf_test\n"}, {
            "files.File": {f"path={SECRET}": {"mode": 600}},
            "files.Sha256File": {f"path={SECRET}": hashlib.sha256(b"hf_test\n").hexdigest()}}),
    ],
    "model_weights.snapshot": [
        ("missing", {"marker": MARKER, "fetch": "/opt/llmhost/bin/llmhost-fetch-model", "owner": "llmhost-vllm",
                     "cache_dir": "/var/lib/llmhost/models/hub"}, {"files.File": {f"path={MARKER}": None}}),
        ("complete", {"marker": MARKER, "fetch": "/opt/llmhost/bin/llmhost-fetch-model", "owner": "llmhost-vllm",
                      "cache_dir": "/var/lib/llmhost/models/hub"}, {"files.File": {f"path={MARKER}": {"mode": 644}}}),
    ],
    "vllm_service.secrets": [
        ("missing", {"config_root": "/etc/llmhost"}, {"files.File": {"path=/etc/llmhost/vllm.secret.env": None,
                                                                      "path=/etc/llmhost/open-webui.secret.env": None}}),
        ("present", {"config_root": "/etc/llmhost"}, {"files.File": {"path=/etc/llmhost/vllm.secret.env": {"mode": 600},
                                                                      "path=/etc/llmhost/open-webui.secret.env": {"mode": 600}}}),
    ],
    "verify.healthy": [
        ("unhealthy_waits", {"probe": PROBE, "timeout": 600}, {"verify.Probe": {f"probe={PROBE}": {"ok": False}}}),
        ("changed_rechecks", {"probe": PROBE, "timeout": 600, "recheck": True},
         {"verify.Probe": {f"probe={PROBE}": {"ok": True, "models": ["m"], "completion": "hi", "webui_health": 200}}}),
        ("healthy", {"probe": PROBE, "timeout": 600},
         {"verify.Probe": {f"probe={PROBE}": {"ok": True, "models": ["m"], "completion": "hi", "webui_health": 200}}}),
    ],
    "cuda_toolkit.runfile_toolkit": [
        ("install", {"version": "12.1", "prefix": "/usr/local/cuda-12.1",
                     "url": "https://developer.download.nvidia.com/compute/cuda/12.1.1/local_installers/cuda_12.1.1_530.30.02_linux.run"},
         {"files.File": {"path=/usr/local/cuda-12.1/.llmhost-runfile": None}}),
        ("installed", {"version": "12.1", "prefix": "/usr/local/cuda-12.1",
                       "url": "https://developer.download.nvidia.com/compute/cuda/12.1.1/local_installers/cuda_12.1.1_530.30.02_linux.run"},
         {"files.File": {"path=/usr/local/cuda-12.1/.llmhost-runfile": {"mode": 644}}}),
    ],
    "preflight.skipped": [("noop", {"reason": "gpu_host=False: no GPU, no driver step"}, {})],
}

if __name__ == "__main__":
    import importlib

    for op_path, cases in CASES.items():
        module, name = op_path.rsplit(".", 1)
        op = getattr(importlib.import_module(f"operations.{module}"), name)
        for label, kwargs, facts in cases:
            state = FakeState()
            host = create_host(state, facts=facts)
            with ctx_state.use(state), ctx_host.use(host):
                commands = parse_commands(list(op._inner(**kwargs)))
            case = {"kwargs": kwargs, "facts": facts, "commands": commands}
            if host.noop_description:
                case["noop_description"] = host.noop_description
            out = BASE / op_path
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{label}.json").write_text(json.dumps(case, indent=2) + "\n")
            print(op_path, label, json.dumps(commands)[:400], host.noop_description)
