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
        "DEFAULT_MODELS=hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",  # native function calling: no params
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


def fake_steps(out: str, scenario: str) -> list[str]:
    """Commands and uploads of an executed @fake run, in order (an upload as 'put_file DEST')."""
    steps = []
    for line in out.splitlines():
        for kind in ("command", "put_file"):
            marker = f"[fake] simulating {kind} on @fake/{scenario}: "
            if marker in line:
                text = line.split(marker, 1)[1].strip()
                steps.append(f"put_file {text.split()[-1]}" if kind == "put_file" else text)
    return steps


@pytest.mark.parametrize("path,env,data", [
    ("/etc/llmhost/hf-token", {"HF_TOKEN": "hf_x0123456789"}, {}),
    ("/etc/llmhost/open-webui.admin.env", {"LLMHOST_ADMIN_PASSWORD": "given"}, {}),
    ("/etc/llmhost/vllm.secret.env", {"LLMHOST_VLLM_API_KEY": "fleetkey"}, {"vllm_api_key_env": "LLMHOST_VLLM_API_KEY"}),
])
def test_every_controller_secret_is_written_by_the_one_secret_writer_root_only(fake_apply, path, env, data):
    """Issue 27. Breakage: the HF token written with files.put mode 644 (no 0600 file before its content arrives,
    no chown/chmod after): the first step touching the path makes it 0600, the upload follows, root-only after."""
    rc, cmds, out = fake_apply("fresh-2204", data, env_extra=env)
    assert rc == 0, out[-3000:]
    steps = [s for s in fake_steps(out, "fresh-2204") if path in s]
    made = next(i for i, s in enumerate(steps) if "touch" in s or "put_file" in s)
    assert steps[made] == f"install -d -m 700 /etc/llmhost && touch {path} && chmod 600 {path}", steps
    assert steps[made + 1] == f"put_file {path}" and steps[made + 2] == f"chown root:root {path} && chmod 600 {path}"
    assert list(env.values())[0] not in out


@pytest.mark.parametrize("path", ["/etc/llmhost/vllm.secret.env", "/etc/llmhost/open-webui.secret.env",
                                  "/etc/llmhost/open-webui.admin.env"])
def test_every_generated_secret_is_made_under_umask_077_and_0600(fake_apply, path):
    rc, cmds, out = fake_apply("fresh-2204", env_extra={"LLMHOST_ADMIN_PASSWORD": ""})
    assert rc == 0, out[-3000:]
    made = [c for c in cmds if c.startswith("umask 077") and f"> {path}" in c]
    assert len(made) == 1 and made[0].endswith(f"chmod 600 {path}"), made
    assert not [s for s in fake_steps(out, "fresh-2204") if s == f"put_file {path}"]


def test_the_probe_is_well_only_when_open_webui_chats_as_the_deploys_admin(tmp_path):
    """Issue 27. Breakage: the probe no longer chatting through Open WebUI (verify would check /health only), or
    taking a refused sign-in as "skipped". The probe program, as installed, against a loopback stand-in of vLLM's API
    and Open WebUI's sign-in + chat; the admin's password is an awkward one, written by the env-file writer."""
    import json
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from operations import base
    from operations.core import boundary
    from tests.conftest import host_program

    password = ' a "long" pass\\word $HOME %h #42 ;é '
    seen = {"signin": [], "chat": 0, "chat_status": 200}

    class Both(BaseHTTPRequestHandler):
        def reply(self, code, body=b""):
            self.send_response(code)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.reply(200, b'{"data": [{"id": "m"}]}' if self.path == "/v1/models" else b"{}")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/api/v1/auths/signin":
                seen["signin"].append(body["password"])
                self.reply(200, b'{"token": "t"}') if body["password"] == password else self.reply(400)
            elif self.path == "/api/chat/completions":
                seen["chat"] += 1
                self.reply(seen["chat_status"], b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n')
            else:  # vLLM's /v1/chat/completions
                self.reply(200, b'{"choices": [{"message": {"content": "hello"}}]}')

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Both)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        admin, key = tmp_path / "admin.env", tmp_path / "key.env"
        admin.write_text(boundary.env_file({"WEBUI_ADMIN_PASSWORD": password}, "test"))
        key.write_text("VLLM_API_KEY=k\n")
        v = base.probe_vars(ctx())
        v.update(api=f"http://127.0.0.1:{srv.server_port}", gpu_host=False, served_model_name="m", key_file=str(key),
                 admin_file=str(admin), token_file=str(tmp_path / "token"), webui_connect="127.0.0.1",
                 webui_port=srv.server_port)
        probe = host_program(tmp_path, "probe", v, "llmhost-probe")
        look = lambda: json.loads(subprocess.run([str(probe)], capture_output=True, text=True).stdout)  # noqa: E731
        first = look()
        assert first["ok"] and first["webui_chat"] == "hi" and seen["chat"] == 1, first
        assert seen["signin"] == [password]  # byte-exact through the env file
        seen["chat_status"] = 500
        assert not look()["ok"]
        (tmp_path / "token").unlink()
        admin.write_text(boundary.env_file({"WEBUI_ADMIN_PASSWORD": "another"}, "test"))
        refused = look()
        assert not refused["ok"] and "refused the sign-in" in refused["webui_chat"], refused
    finally:
        srv.shutdown()
