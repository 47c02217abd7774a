"""Whole-deploy plans with pyinfra's @fake connector (nothing runs anywhere): what each kind of host would get."""

import re

import pytest

from tests.conftest import changed, conditional, names


def test_fresh_ubuntu_2204_gpu_host_gets_every_component(fake_plan):
    rc, plan, out = fake_plan("fresh-2204")
    assert rc == 0, out
    ch = changed(plan)
    assert "NVIDIA driver | Install the 580 driver (open modules: linux-modules-nvidia-580-server-open-generic)" in ch
    assert "NVIDIA driver | Hold the kernel and modules metapackages and the user-space driver" in ch
    assert "NVIDIA driver | Keep NVIDIA/CUDA out of unattended-upgrades" in ch
    assert "CUDA toolkit | Install cuda-toolkit-12-1 (no driver)" in ch
    assert "NVIDIA container toolkit | Install the container toolkit (four packages together)" in ch
    assert any(n.startswith("Model weights | Weights hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4@") for n in ch)
    assert "vLLM service | vllm.service" in ch and "Open WebUI service | open-webui.service" in ch
    # Reboot only if the driver install really changed something: conditional, not planned outright.
    assert "NVIDIA driver | Reboot into the new kernel / driver (the set moved)" in conditional(plan)
    assert not any("runfile" in n for n in names(plan))


def test_fresh_ubuntu_2404_uses_the_runfile_for_cuda_121(fake_plan):
    rc, plan, out = fake_plan("fresh-2404")
    assert rc == 0, out
    assert "CUDA toolkit | Install CUDA 12.1 from NVIDIA's runfile (no 12-1 debs on ubuntu 24.04)" in changed(plan)
    assert not any("cuda-toolkit-12-1" in n for n in names(plan))


def test_working_driver_not_from_a_deb_is_left_alone(fake_plan):
    rc, plan, out = fake_plan("driver-ok")
    assert rc == 0, out
    assert "NVIDIA driver | NVIDIA driver (left alone)" in names(plan)
    assert not any(n.startswith("NVIDIA driver | Install") for n in names(plan))


def test_reboot_can_be_turned_off(fake_plan):
    rc, plan, out = fake_plan("fresh-2204", {"nvidia_reboot": False})
    assert rc == 0, out
    assert "NVIDIA driver | Reboot (disabled)" in names(plan)
    assert not any("Reboot into" in n for n in names(plan))


def test_driver_library_mismatch_is_reported_with_the_fix(fake_plan):
    rc, plan, out = fake_plan("mismatch")
    assert rc != 0
    assert "Driver/library version mismatch" in out and "Reboot the host" in out


def test_vllm_pin_upgrade_builds_a_new_venv_beside_the_old_and_switches_only_vllm(fake_apply):
    """A converged host asked for another vLLM pin: its era's venv is built beside the serving one (blue/green),
    the link moves after the install, vLLM restarts; Open WebUI's venv is not touched."""
    rc, cmds, out = fake_apply("converged-upgrade", data={"vllm_version": "0.6.3.post1"})
    assert rc == 0, out[-3000:]
    build = [c for c in cmds if " venv --quiet --python 3.11 /opt/llmhost/vllm/venvs/" in c]
    assert len(build) == 1 and "vllm==0.6.3.post1" not in build[0]  # the requirements file holds the lock
    target = re.search(r"(/opt/llmhost/vllm/venvs/[0-9a-f]{12})", build[0]).group(1)
    switch = f"ln -sfn {target} /opt/llmhost/vllm/current.new && mv -T /opt/llmhost/vllm/current.new /opt/llmhost/vllm/current"
    assert cmds.index(switch) > cmds.index(build[0])
    assert "systemctl restart vllm.service" in cmds
    assert not [c for c in cmds if "/opt/llmhost/open-webui/venvs/" in c and " venv " in c]
    assert "systemctl restart open-webui.service" not in cmds


@pytest.mark.parametrize("backend", ["cpu", "none"])
def test_open_webuis_torch_comes_through_uvs_torch_backend(fake_apply, backend):
    """Issue 30 (5): Open WebUI's venv took PyPI's CUDA torch and its NVIDIA wheels although its unit never sees the
    GPU. By default uv takes torch from PyTorch's CPU index (--torch-backend cpu); 'none' leaves PyPI's default
    (given as `--data openwebui_torch_backend=none` too: the test host's non-root route passes it so)."""
    rc, cmds, out = fake_apply("fresh-2204", data={} if backend == "cpu" else {"openwebui_torch_backend": backend})
    assert rc == 0, out[-3000:]
    install = [c for c in cmds if " pip install " in c and "/opt/llmhost/open-webui/venvs/" in c]
    assert len(install) == 1, install
    assert (" --torch-backend cpu " in install[0]) == (backend == "cpu"), install[0]


def test_recorded_h200_host_replayed(fake_plan):
    """Issue 5: the facts recorded on the real Ubuntu 24.04 H200 host, replayed through the whole deploy."""
    rc, plan, out = fake_plan("recorded-h200")
    assert rc == 0, out
    assert "NVIDIA driver | NVIDIA driver (left alone)" in names(plan)  # 580.159.04, open module, not from a deb
    assert "CUDA toolkit | Install CUDA 12.1 from NVIDIA's runfile (no 12-1 debs on ubuntu 24.04)" in changed(plan)
    # The planner used the detected card (H200, CUDA-visible 143155 MiB), not the 12 GB defaults.
    assert "139.80 GiB x 1  [NVIDIA H200]" in out
    assert "--max-num-seqs=256" in out and "--max-model-len=131072" in out  # Llama 3.1's whole context fits


def test_verify_rechecks_after_a_change_even_when_the_host_looked_healthy(fake_plan):
    """The probe says all is well before the run, but units change: verify must wait for the services again."""
    rc, plan, out = fake_plan("driver-installed")
    assert rc == 0, out
    assert "vLLM service | vllm.service" in changed(plan)
    # decided at execution time: planned as a conditional change, after the services' restarts
    assert "Verify | The same again after this run's changes (a service restarted)" in conditional(plan)


def test_open_webui_on_an_address_the_host_has_is_accepted_and_bound_there(fake_plan):
    rc, plan, out = fake_plan("fresh-2204", {"openwebui_host": "192.168.1.50"}, diff=True)
    assert rc == 0, out[-2000:]
    assert "serve --host 192.168.1.50 --port 8080" in out  # the unit's ExecStart in the diff
    assert "openwebui_host=192.168.1.50: Open WebUI is reachable from the network" in out


def test_a_converged_host_restarts_nothing(fake_plan):
    """Every unit, env file, venv and the weights as the last run left them: no service restart, no verify wait.
    (Breakage check: `restarted=True` for either service, or verify always re-checking, shows up here.)"""
    rc, plan, out = fake_plan("converged")
    assert rc == 0, out[-3000:]
    ch = changed(plan)
    for op in ["vLLM service | vllm.service", "vLLM service | vLLM environment (no secrets)",
               "vLLM service | vLLM 0.26.0 venv", "Open WebUI service | open-webui.service",
               "Open WebUI service | Open WebUI 0.12.4 venv",
               "vLLM service | vLLM restarted (only when its unit, env, key, venv or weights changed)",
               "vLLM service | vLLM running and enabled",
               "Open WebUI service | Open WebUI restarted (only when its unit, env, secret or venv changed)",
               "Open WebUI service | Open WebUI running and enabled",
               "Verify | GPU visible, vLLM /health + /v1/models + a chat completion, Open WebUI /health + a streamed chat as "
               "its admin",
               "Verify | The same again after this run's changes (a service restarted)"]:
        assert op in names(plan), op
        assert op not in ch, op


def test_a_converged_host_executed_restarts_nothing_and_rewrites_no_secret(fake_apply):
    """Executed (not a dry run) against the converged @fake host: every `_if` is evaluated as on a real host, so a
    restart condition that is always true, or a secret operation that always writes, shows up here."""
    rc, cmds, out = fake_apply("converged")
    assert rc == 0, out[-3000:]
    assert not [c for c in cmds if c.startswith(("systemctl restart", "systemctl start", "systemctl reload"))], \
        [c for c in cmds if c.startswith("systemctl")]
    assert not [c for c in cmds if "reboot" in c or c.startswith("umask 077")]


def test_a_fresh_host_gets_its_admin_password_made_on_the_host_root_only(fake_apply):
    """Executed against a fresh @fake host, no password from the controller: the password is made by the host's own
    CSPRNG inside the command, into a 0600 file under umask 077, never on a command line as a value."""
    rc, cmds, out = fake_apply("fresh-2204", env_extra={"LLMHOST_ADMIN_PASSWORD": ""})
    assert rc == 0, out[-3000:]
    path = "/etc/llmhost/open-webui.admin.env"
    assert ("umask 077 && { [ -s /etc/llmhost/open-webui.admin.env ] || printf 'WEBUI_ADMIN_PASSWORD=%s\\n' "
            "\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\" > /etc/llmhost/open-webui.admin.env; "
            "} && chmod 600 /etc/llmhost/open-webui.admin.env") in cmds
    shown = f"sed -n 's/^WEBUI_ADMIN_PASSWORD=//p' {path}"  # read once at the end of the run, to be shown once
    assert cmds.count(shown) == 1
    assert not [c for c in cmds if path in c and "WEBUI_ADMIN_PASSWORD=" in c and c != shown and "umask 077" not in c]


def test_a_password_from_the_controller_is_uploaded_root_only_and_never_printed(fake_apply):
    secret = "controller-given admin password 42"
    rc, cmds, out = fake_apply("fresh-2204", env_extra={"LLMHOST_ADMIN_PASSWORD": secret})
    assert rc == 0, out[-3000:]
    path = "/etc/llmhost/open-webui.admin.env"
    assert f"install -d -m 700 /etc/llmhost && touch {path} && chmod 600 {path}" in cmds
    assert f"chown root:root {path} && chmod 600 {path}" in cmds
    assert secret not in out  # not in a command, a diff or pyinfra's output
    assert not [c for c in cmds if c.startswith("sed -n 's/^WEBUI_ADMIN_PASSWORD=")]  # the user knows it: not shown


def test_a_converged_host_does_not_show_the_admin_password_again(fake_apply):
    """The generated password is shown once, by the run that made it: a re-run neither rewrites nor reads it."""
    rc, cmds, out = fake_apply("converged", env_extra={"LLMHOST_ADMIN_PASSWORD": ""})
    assert rc == 0, out[-3000:]
    assert not [c for c in cmds if "WEBUI_ADMIN_PASSWORD" in c], [c for c in cmds if "admin" in c]
    assert not [c for c in cmds if c.startswith(("systemctl restart", "systemctl start"))]


def test_memory_other_processes_hold_is_kept_free_or_the_run_is_refused(fake_plan):
    """Issue 20 part 2, on the GPU host's own recording (a python3 holding 3682 MiB; memory.used 3691 MiB): the plan
    keeps that much plus 256 MiB free; an explicit utilization that would not leave it free is refused before any
    change, naming the process."""
    rc, plan, out = fake_plan("recorded-h200-busy")
    assert rc == 0, out[-3000:]
    assert ("other processes hold 3691 MiB (python3 pid 435 3682 MiB) of the GPU: planned with 3947 MiB kept free"
            in out)
    rc, plan, out = fake_plan("recorded-h200-busy", {"vllm_gpu_memory_utilization": 0.99})
    assert rc != 0
    assert "vllm_gpu_memory_utilization=0.99 plus vllm_reserved_mib=3947 exceed the card's" in out
    assert "other processes hold 3691 MiB (python3 pid 435 3682 MiB) of the GPU: close them" in out
    rc, plan, out = fake_plan("recorded-h200")  # the same host idle: nothing reserved
    assert rc == 0 and "other processes hold" not in out
    # a graphics process (an OpenGL client of the driver, as a desktop's are; recorded there) is named too
    rc, plan, out = fake_plan("recorded-h200-graphics")
    assert rc == 0, out[-3000:]
    assert "other processes hold 785 MiB (python3 pid 491 775 MiB) of the GPU: planned with 1041 MiB kept free" in out


def test_an_applied_run_ends_with_where_open_webui_answers_and_a_dry_run_does_not(fake_apply, fake_plan):
    rc, _, out = fake_apply("fresh-2404")
    assert rc == 0, out[-3000:]
    assert out.rfind("Open WebUI answers at http://") > out.rfind("--> Results:") > 0, out[-2000:]
    rc, _, out = fake_plan("fresh-2404", diff=True)
    assert rc == 0 and "Open WebUI answers at" not in out, out[-2000:]


def test_vllms_start_up_compilers_come_with_its_venv_and_not_with_the_standin(fake_apply):
    """vLLM compiles at its first start (Triton: C against Python's headers; torch inductor: C++), and a server install
    has neither compiler nor headers (seen with vLLM's CPU build under the deploy's unit on a test host: "No working
    C++ compiler found", then "Python.h: No such file or directory"): the deploy installs them with vLLM's venv, before
    it; a host running the stand-in gets none."""
    rc, cmds, out = fake_apply("fresh-2204")
    assert rc == 0, out[-3000:]
    jit = [i for i, c in enumerate(cmds) if "apt-get" in c and " install " in c and " g++ " in f"{c} "]
    venv = [i for i, c in enumerate(cmds) if " pip install " in c and "/opt/llmhost/vllm/venvs/" in c]
    assert jit and venv and jit[0] < venv[0], cmds
    assert all(p in cmds[jit[0]].split() for p in ("gcc", "g++", "libc6-dev", "python3-dev")), cmds[jit[0]]
    rc, cmds, out = fake_apply("fresh-2204", data={"gpu_host": False, "vllm_exec_start_override": "/bin/true {port}"})
    assert rc == 0, out[-3000:]
    assert not [c for c in cmds if "apt-get" in c and "python3-dev" in c], "the stand-in needs no compiler"
