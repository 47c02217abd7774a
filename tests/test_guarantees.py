"""Issue 19: the guarantees a user relies on, specified by what the deploy runs and writes (hand-written expected
commands and lines), so that a one-line breakage of any of them fails here, in seconds. Each test names the
breakage it was checked against (broken on purpose, seen failing, restored)."""

from __future__ import annotations

import re

import pytest

from tests.test_units import ctx, lines
from operations import openwebui_service
from operations.render import render


def put_files(out: str, scenario: str) -> list[str]:
    marker = f"[fake] simulating put_file on @fake/{scenario}: "
    return [line.split(marker, 1)[1].strip() for line in out.splitlines() if marker in line]


# A controller secret with the right content but mode 0644 is made root-only again: the pyinfra-testing fixture
# tests/fixtures/pyinfra/ops/shared_ops.secret_file/right_content_mode_644.json (run by test_pyinfra_fixtures.py).
# Breakage checked: secret_file comparing only the content.


def test_the_hf_token_reaches_the_fetcher_only_through_its_root_only_file(fake_apply):
    """Breakage: the token put on the fetcher's command line (HF_TOKEN=... in the command)."""
    token = "hf_controllertoken0123456789"
    rc, cmds, out = fake_apply("fresh-2204", env_extra={"HF_TOKEN": token})
    assert rc == 0, out[-3000:]
    assert token not in out
    fetch = [c for c in cmds if re.search(r"/opt/llmhost/bin/llmhost-fetch-model \S+/\S+ [0-9a-f]{40} ", c)]
    assert fetch and all("HF_TOKEN_PATH=/etc/llmhost/hf-token" in c and "HF_TOKEN=" not in c for c in fetch)
    assert "/etc/llmhost/hf-token" in put_files(out, "fresh-2204")


def test_vllm_reads_its_key_as_vllm_api_key_from_a_file_made_on_the_host(fake_apply):
    """Breakage: VLLM_API_KEY renamed in the generated file (vLLM would start without auth)."""
    rc, cmds, out = fake_apply("fresh-2204")
    assert rc == 0, out[-3000:]
    assert ("umask 077 && { [ -s /etc/llmhost/vllm.secret.env ] || printf 'VLLM_API_KEY=%s\\n' \"$(python3 -c "
            "'import secrets; print(secrets.token_urlsafe(32))')\" > /etc/llmhost/vllm.secret.env; } && chmod 600 "
            "/etc/llmhost/vllm.secret.env") in cmds
    probe = __import__("operations.base", fromlist=["x"]).probe_vars(ctx())
    assert (probe["key_file"], probe["key_var"]) == ("/etc/llmhost/vllm.secret.env", "VLLM_API_KEY")


def test_nouveau_is_blacklisted_on_a_gpu_host(fake_apply):
    """Breakage: the nouveau blacklist removed (nouveau grabs the card before nvidia.ko)."""
    from operations.nvidia_driver import NOUVEAU_BLACKLIST

    assert NOUVEAU_BLACKLIST.splitlines()[1:] == ["blacklist nouveau", "options nouveau modeset=0"]
    rc, cmds, out = fake_apply("fresh-2204")
    assert rc == 0, out[-3000:]
    assert "/etc/modprobe.d/llmhost-blacklist-nouveau.conf" in put_files(out, "fresh-2204")


def test_an_explicit_context_that_fits_the_weights_but_not_one_sequence_is_refused():
    """Breakage: the planner only warns (vLLM would then refuse at start, after up to 900 s)."""
    import json
    from pathlib import Path

    from operations.core.tuning import GpuSpec, ModelSpec, PlanError, plan

    d = Path(__file__).parent / "fixtures/models/llama-3-8b-instruct-gptq"
    m = ModelSpec.from_config(json.loads((d / "config.json").read_text()),
                              json.loads((d / "quantize_config.json").read_text()))
    with pytest.raises(PlanError, match="does not fit"):
        plan(m, GpuSpec.from_card("rtx-3060-12gb"), "0.26.0", max_model_len=8192, gpu_memory_utilization=0.6)


def test_open_webui_env_whole_file():
    """Every line of open-webui.env for the default settings, by hand. Breakages: DEFAULT_USER_ROLE=user (a new
    account could chat without approval), signup or auth opened, the backend or offline settings changed."""
    env = [l for l in lines(render("open-webui.env.j2", **openwebui_service.env_vars(ctx()))) if l and l[0] != "#"]
    assert env == [
        "DATA_DIR=/var/lib/llmhost/open-webui", "STATIC_DIR=/var/lib/llmhost/open-webui/static",
        "OPENAI_API_BASE_URL=http://127.0.0.1:8000/v1", "ENABLE_OPENAI_API=true", "ENABLE_OLLAMA_API=false",
        "ENABLE_PERSISTENT_CONFIG=false", "WEBUI_AUTH=true", "ENABLE_SIGNUP=false", "DEFAULT_USER_ROLE=pending",
        "WEBUI_ADMIN_EMAIL=admin@llmhost.home.arpa", "WEBUI_ADMIN_NAME=Admin",
        "DEFAULT_MODELS=astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit", 'DEFAULT_MODEL_PARAMS={"function_calling":"legacy"}',
        "OFFLINE_MODE=true", "HF_HUB_OFFLINE=1",
        "RAG_EMBEDDING_ENGINE=",
        "RAG_EMBEDDING_MODEL=/var/lib/llmhost/open-webui/embedding/models--sentence-transformers--all-MiniLM-L6-v2/"
        "snapshots/c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE=false", "SENTENCE_TRANSFORMERS_HOME=/var/lib/llmhost/open-webui/embedding",
        "ENABLE_WEB_SEARCH=false", "ANONYMIZED_TELEMETRY=false", "DO_NOT_TRACK=true", "SCARF_NO_ANALYTICS=true",
        "HOME=/var/lib/llmhost/open-webui"]


def test_open_webuis_data_is_backed_up_before_its_venv_changes(fake_apply):
    """Breakage: the backup moved after the venv change (restore would no longer roll back to the old venv)."""
    rc, cmds, out = fake_apply("converged-upgrade", data={"openwebui_version": "0.12.5"})
    assert rc == 0, out[-3000:]
    backup = cmds.index("runuser -u llmhost-webui -- /opt/llmhost/bin/llmhost-webui-backup backup --reason "
                        "before-0.12.5")
    build = next(i for i, c in enumerate(cmds) if "uv venv" in c and "/opt/llmhost/open-webui/venvs/" in c)
    switch = next(i for i, c in enumerate(cmds) if c.startswith("ln -sfn /opt/llmhost/open-webui/venvs/"))
    assert backup < build < switch


def test_docker_gets_the_nvidia_runtime_through_nvidia_ctk_which_merges_daemon_json(fake_apply):
    """Breakage: daemon.json written by the deploy (a user's own Docker settings would be lost)."""
    rc, cmds, out = fake_apply("fresh-docker")
    assert rc == 0, out[-3000:]
    assert "nvidia-ctk runtime configure --runtime=docker" in cmds
    assert "/etc/docker/daemon.json" not in put_files(out, "fresh-docker")
    assert not [c for c in cmds if re.search(r"(>|tee|cp|mv)\s*/etc/docker/daemon\.json", c)]
