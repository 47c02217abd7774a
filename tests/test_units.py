"""Unit and environment files as the deploy renders them (its own *_vars(ctx) and templates), against lines
written here by hand: loopback vLLM, signup off, auth on, hardening present, secrets never in a unit, env file or
command line, readiness on /health, restart policy."""

import re

import pytest

from operations import openwebui_service, vllm_service
from operations.context import Context
from operations.render import render
from operations.settings import Settings
from operations.tuning import GpuSpec, ModelSpec, plan
from tests.test_eras import GPTQ_CFG, GPTQ_Q

SHA = "ee9e2f9003ae49425a29e73a29b59dffc8870a83"
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
             "RestrictSUIDSGID=yes", "LockPersonality=yes", "CapabilityBoundingSet=", "AmbientCapabilities=",
             "SystemCallArchitectures=native", "UMask=0027"]
RESTART = ["Restart=on-failure", "RestartSec=5", "StartLimitIntervalSec=600", "StartLimitBurst=5"]


def ctx(**settings) -> Context:
    s = Settings(gpu_card="rtx-3060-12gb", **settings)
    p = plan(ModelSpec.from_config(GPTQ_CFG, GPTQ_Q), GpuSpec.from_card("rtx-3060-12gb"), s.vllm_version)
    return Context(s, "ubuntu", "24.04", None, {}, p, SHA, "open")


def lines(text: str) -> list[str]:
    return text.splitlines()


def vllm_unit(c: Context) -> list[str]:
    return lines(render("vllm.service.j2", **vllm_service.unit_vars(c)))


def webui_unit(c: Context) -> list[str]:
    return lines(render("open-webui.service.j2", **openwebui_service.unit_vars(c)))


def test_vllm_listens_on_loopback_by_default_with_the_key_from_a_root_only_file():
    unit = vllm_unit(ctx())
    exec_start = next(l for l in unit if l.startswith("ExecStart="))
    assert " --host 127.0.0.1 --port 8000 " in exec_start
    assert "--api-key" not in exec_start and "VLLM_API_KEY" not in exec_start
    assert "EnvironmentFile=/etc/llmhost/vllm.secret.env" in unit
    assert "User=llmhost-vllm" in unit and "Group=llmhost-vllm" in unit
    assert ("ExecStartPost=/opt/llmhost/bin/llmhost-probe --health http://127.0.0.1:8000/health --wait 900"
            in unit)
    assert exec_start.startswith("ExecStart=/opt/llmhost/vllm/current/bin/python -m vllm.entrypoints.openai.api_server "
                                 "--model /var/lib/llmhost/models/hub/models--astronomer--Llama-3-8B-Instruct-GPTQ-4-Bit"
                                 f"/snapshots/{SHA} ")


@pytest.mark.parametrize("which", ["vllm", "webui"])
def test_units_are_hardened_and_restart_only_on_failure_with_a_start_limit(which):
    unit = vllm_unit(ctx()) if which == "vllm" else webui_unit(ctx())
    for line in HARDENING + RESTART:
        assert line in unit, line
    assert "Restart=always" not in unit
    assert ("PrivateDevices=yes" in unit) == (which == "webui")  # vLLM must see the GPU device nodes


def test_open_webui_auth_on_signup_off_backend_on_loopback_no_trailing_slash():
    env = lines(render("open-webui.env.j2", **openwebui_service.env_vars(ctx())))
    for line in ["WEBUI_AUTH=true", "ENABLE_SIGNUP=false", "ENABLE_OLLAMA_API=false", "ENABLE_PERSISTENT_CONFIG=false",
                 "OPENAI_API_BASE_URL=http://127.0.0.1:8000/v1", "OFFLINE_MODE=true", "ENABLE_WEB_SEARCH=false"]:
        assert line in env, line
    assert not any(l.startswith("ENABLE_RAG_WEB_SEARCH") for l in env)  # gone in 0.12.4
    signup = lines(render("open-webui.env.j2", **openwebui_service.env_vars(ctx(openwebui_enable_signup=True))))
    assert "ENABLE_SIGNUP=true" in signup


def test_no_secret_in_any_env_file_or_unit():
    c = ctx()
    texts = [render("vllm.env.j2", **vllm_service.env_vars(c)), render("open-webui.env.j2",
                                                                       **openwebui_service.env_vars(c)),
             "\n".join(vllm_unit(c)), "\n".join(webui_unit(c))]
    for text in texts:
        for line in text.splitlines():
            if line.startswith("#") or line.startswith("EnvironmentFile="):
                continue
            assert not re.search(r"(API_KEY|SECRET|TOKEN|PASSWORD)\s*=", line), line


def test_open_webui_binds_where_set_and_probes_via_loopback():
    unit = webui_unit(ctx())
    assert "ExecStart=/opt/llmhost/open-webui/current/bin/open-webui serve --host 0.0.0.0 --port 8080" in unit
    assert "ExecStartPost=/opt/llmhost/bin/llmhost-probe --health http://127.0.0.1:8080/health --wait 600" in unit
    assert "EnvironmentFile=/etc/llmhost/open-webui.secret.env" in unit and "User=llmhost-webui" in unit


def test_vllm_on_another_interface_only_when_asked():
    unit = vllm_unit(ctx(vllm_host="10.0.0.5"))
    assert " --host 10.0.0.5 " in next(l for l in unit if l.startswith("ExecStart="))
    env = lines(render("open-webui.env.j2", **openwebui_service.env_vars(ctx(vllm_host="10.0.0.5"))))
    assert "OPENAI_API_BASE_URL=http://10.0.0.5:8000/v1" in env
