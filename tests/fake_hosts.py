"""Scripted hosts for whole-deploy plans with pyinfra's @fake connector (nothing runs anywhere).

Each scenario maps a command substring to what that host would print. Used as an inventory:
    pyinfra tests/fake_hosts.py deploy.py --dry   (LLMHOST_FAKE=<scenario>)
"""

import ast
import json
import os
from pathlib import Path
import re

SMI_3060 = "0, NVIDIA GeForce RTX 3060, 12288, 8.6, 580.95.05, 00000000:01:00.0"


def os_release(os_id: str, version: str) -> list[str]:
    return ["/etc/os-release", f"ID={os_id}", f'VERSION_ID="{version}"', f"NAME={os_id.title()}", "---"]


_GA_2204 = ("5.15.0-126-generic", {"linux-image-generic": "5.15.0-126-generic"})
_HWE_2404 = ("6.11.0-29-generic", {"linux-image-generic": "6.8.0-48-generic",
                                  "linux-image-generic-hwe-24.04": "6.11.0-29-generic"})


def responses(os_id="ubuntu", version="22.04", smi=None, module="", holds=(), debs=(), files=(), probe=None,
              pci="0000:01:00.0 0x2504 0x030000", ports=(), kernel=_GA_2204, modinfo="580.95.05"):
    smi_out = [smi, "exit=0"] if smi else ["exit=missing"]
    dpkg = ["Desired=Unknown/Install/Remove/Purge/Hold", "||/ Name Version Architecture Description",
            "+++-====-====-====-====="] + [f"ii  {name} {ver} amd64 pkg" for name, ver in debs]
    out = {
        "*-release": os_release(os_id, version),
        "uname -m": ["x86_64"],
        "no_reboot_required": ["no_reboot_required"],
        "uname -s": ["Linux"],
        "/proc/uptime": ["100"],  # server.reboot compares uptimes around the reboot (executed @fake runs)
        "nvidia-smi --query-gpu": smi_out,
        "/sys/bus/pci/devices": [pci] if pci else [],
        "/proc/driver/nvidia/version": [module] if module else [],
        "SecureBoot-": ["SecureBoot 0"],
        "apt-mark showhold": list(holds),
        "echo running=": [f"running={kernel[0]}"] + [f"{m} 1.0 linux-image-{img}" for m, img in kernel[1].items()],
        "modinfo -k": [modinfo] if modinfo else [],
        re.compile(r"dpkg-query -W -f='\$\{Version\}' nvidia-utils"): [v for n, v in debs if n.startswith("nvidia-utils")],
        "dpkg -l": dpkg,
        re.compile(r"df -Pk"): ["200000"],
        "llmhost-probe": [probe or '{"ok": false}'],
        "ss -ltnpH": list(ports),
        "ip -j addr show": ['[{"ifname": "lo", "flags": ["UP"], "mtu": 65536, "operstate": "UNKNOWN", "addr_info": '
                            '[{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]}, {"ifname": "enp1s0", '
                            '"flags": ["UP"], "mtu": 1500, "operstate": "UP", "address": "12:34:56:78:9a:bc", '
                            '"addr_info": [{"family": "inet", "local": "192.168.1.50", "prefixlen": 24}]}]'],
        re.compile(r"command -v (useradd|groupadd|usermod)"): ["/usr/sbin/useradd"],
        re.compile(r"command -v dockerd"): [],
    }
    for path in files:  # files that exist: answer pyinfra's File fact (stat) with a plausible line
        out[re.compile(re.escape(path) + r"\b")] = [f"user=root group=root mode=-rw------- atime=0 mtime=0 ctime=0 size=10 '{path}'"]
    return out


def recorded_gpu_host() -> dict:
    """The real Ubuntu 24.04 H200 host, replayed from the facts recorded there (tests/fixtures/gpu-host)."""
    import json
    from pathlib import Path

    rec = Path(__file__).parent / "fixtures" / "gpu-host"
    out = responses(version="24.04")
    by_fact = {}
    for line in (rec / "facts.jsonl").read_text().splitlines():
        d = json.loads(line)
        by_fact[d["fact"]] = d["output"].splitlines()
    out.update({"nvidia-smi --query-gpu": by_fact["NvidiaSmi"], "/sys/bus/pci/devices": by_fact["PciNvidiaGpus"],
                "/proc/driver/nvidia/version": by_fact["NvidiaKernelModule"], "SecureBoot-": by_fact["SecureBoot"],
                "apt-mark showhold": by_fact["AptHolds"], "/proc/meminfo": by_fact["MemTotalMib"]})
    return out


def driver_set_host(archive: list[tuple[str, str, str]], holds: list[str], pending: bool = False) -> dict:
    """An Ubuntu 22.04 box whose 580 driver came from the debs and is loaded, with what apt knows (AptVersions:
    package, version, Depends; newest first) and dpkg's installed versions; hand-written in Ubuntu's shapes."""
    debs = [("nvidia-headless-no-dkms-580-server-open", "580.95.05-0ubuntu0.22.04.1"),
            ("nvidia-utils-580-server", "580.95.05-0ubuntu0.22.04.1"),
            ("linux-modules-nvidia-580-server-open-generic", "5.15.0-126.136+1"),
            ("linux-modules-nvidia-580-server-open-5.15.0-126-generic", "5.15.0-126.136+1"),
            ("linux-image-generic", "5.15.0.126.125")]
    if pending:  # an older llmhost let unattended-upgrades install kernel 5.15.0-127 with its module; not booted yet
        debs[2:] = [("linux-modules-nvidia-580-server-open-generic", "5.15.0-127.137+1"),
                    ("linux-modules-nvidia-580-server-open-5.15.0-127-generic", "5.15.0-127.137+1"),
                    ("linux-modules-nvidia-580-server-open-5.15.0-126-generic", "5.15.0-126.136+1"),
                    ("linux-image-generic", "5.15.0.127.126")]
    out = responses(version="22.04", smi=SMI_3060, debs=debs, holds=holds,
                    module="NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (x)  2025",
                    files=["/etc/apt/apt.conf.d/51llmhost-nvidia", "/etc/modprobe.d/llmhost-blacklist-nouveau.conf"],
                    probe='{"ok": true, "models": ["m"], "completion": "hi", "webui_health": 200, "gpus": "x"}')
    out["apt-cache show"] = [line for name, ver, dep in archive
                             for line in (f"Package: {name}", f"Version: {ver}", f"Depends: {dep}")]
    if pending:
        out["echo running="] = ["running=5.15.0-126-generic", "next=5.15.0-127-generic",
                                "linux-image-generic 5.15.0.127.126 linux-image-5.15.0-127-generic"]
    for name, ver in debs:
        out[re.compile(rf"dpkg-query -W -f='\$\{{Version\}}' {re.escape(name)} 2>")] = [ver]
    return out


_KCOMMON = "nvidia-kernel-common-580-server (<= {x}-1), nvidia-kernel-common-580-server (>= {x})"
_INSTALLED_SET = [
    ("linux-image-generic", "5.15.0.126.125", "linux-image-5.15.0-126-generic"),
    ("linux-modules-nvidia-580-server-open-generic", "5.15.0-126.136+1",
     "linux-modules-nvidia-580-server-open-5.15.0-126-generic (= 5.15.0-126.136+1)"),
    ("linux-modules-nvidia-580-server-open-5.15.0-126-generic", "5.15.0-126.136+1",
     "linux-image-5.15.0-126-generic | linux-image-unsigned-5.15.0-126-generic, " + _KCOMMON.format(x="580.95.05")),
    ("nvidia-headless-no-dkms-580-server-open", "580.95.05-0ubuntu0.22.04.1", ""),
    ("nvidia-utils-580-server", "580.95.05-0ubuntu0.22.04.1", "")]
_SECURITY_KERNEL = [  # a security kernel 5.15.0-127 built against 580.105.08, with the running kernel's respin
    ("linux-image-generic", "5.15.0.127.126", "linux-image-5.15.0-127-generic"),
    ("linux-modules-nvidia-580-server-open-generic", "5.15.0-127.137+1",
     "linux-modules-nvidia-580-server-open-5.15.0-127-generic (= 5.15.0-127.137+1)"),
    ("linux-modules-nvidia-580-server-open-5.15.0-127-generic", "5.15.0-127.137+1",
     "linux-image-5.15.0-127-generic | linux-image-unsigned-5.15.0-127-generic, " + _KCOMMON.format(x="580.105.08")),
    ("linux-modules-nvidia-580-server-open-5.15.0-126-generic", "5.15.0-126.136+2",
     "linux-image-5.15.0-126-generic | linux-image-unsigned-5.15.0-126-generic, " + _KCOMMON.format(x="580.105.08")),
    ("nvidia-headless-no-dkms-580-server-open", "580.105.08-0ubuntu0.22.04.1", ""),
    ("nvidia-utils-580-server", "580.105.08-0ubuntu0.22.04.1", "")]
_OLD_HOLDS = ["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"]  # what llmhost held before
_ALL_HOLDS = ["linux-image-generic", "linux-modules-nvidia-580-server-open-generic", *_OLD_HOLDS]


SCENARIOS = {
    # Hosts that must be refused before any change (each with its own fault).
    "ubuntu-2004": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(version="20.04")),
    "arm64": dict(data={"gpu_card": "rtx-3060-12gb"}, responses={**responses(), "uname -m": ["aarch64"]}),
    "no-gpu": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(pci="")),
    "pascal": dict(data={"gpu_card": "rtx-3060-12gb", "nvidia_driver_flavour": "open"},
                   responses=responses(pci="0000:01:00.0 0x1b80 0x030000")),
    "secureboot-debian": dict(data={"gpu_card": "rtx-3060-12gb", "allow_os": ["debian 12"]},
                              responses={**responses(os_id="debian", version="12"), "SecureBoot-": ["SecureBoot 1"]}),
    "small-disk": dict(data={"gpu_card": "rtx-3060-12gb"}, responses={**responses(), re.compile(r"df -Pk"): ["900"]}),
    "port-taken": dict(data={"gpu_card": "rtx-3060-12gb"},
                       responses=responses(ports=["8080 812 apache2 0::/system.slice/apache2.service"])),
    "smi-disagrees": dict(data={"gpu_memory_mib": 24000}, responses=responses(smi=SMI_3060)),
    # A bare Ubuntu 22.04 box with an RTX 3060 and no driver yet (the card is declared for the planner).
    "fresh-2204": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(version="22.04")),
    "fresh-docker": dict(data={"gpu_card": "rtx-3060-12gb"}, responses={**responses(version="22.04"),
                                                                        re.compile(r"command -v dockerd"): [
                                                                            "/usr/bin/dockerd"]}),
    "fresh-2404": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(version="24.04")),
    # Ubuntu 24.04 booted into the HWE kernel (desktop point releases): the HWE modules package, and only it.
    "fresh-2404-hwe": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(version="24.04", kernel=_HWE_2404)),
    # A kernel nobody's metapackage installs: refused before any change.
    "odd-kernel": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(
        version="24.04", kernel=("6.12.9-custom", {"linux-image-generic": "6.8.0-48-generic"}))),
    # Driver from debs, then a kernel update rebooted into 6.8.0-50 with no nvidia module for it.
    "lost-module": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(
        version="24.04", smi=None, kernel=("6.8.0-50-generic", {"linux-image-generic": "6.8.0-50-generic"}),
        modinfo="", debs=[("nvidia-utils-580-server", "580.95.05-0ubuntu0.24.04.2"),
                          ("nvidia-headless-no-dkms-580-server-open", "580.95.05-0ubuntu0.24.04.2")],
        holds=["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"])),
    # A working 580 driver loaded from somewhere else than a deb (like the H200 host): left alone.
    "driver-ok": dict(data={}, responses=responses(
        version="24.04", smi=SMI_3060,
        module="NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (x)  2025")),
    # A working driver on a Pascal card (sm_61): the default era (CUDA 13) has no kernels for it.
    "pascal-driver": dict(data={}, responses=responses(
        version="24.04", smi="0, NVIDIA GeForce GTX 1080, 8192, 6.1, 580.95.05, 00000000:01:00.0",
        pci="0000:01:00.0 0x1b80 0x030000",
        module="NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Release Build  (x)  2025")),
    # The 580 driver from Ubuntu's debs, installed, held and loaded: nothing to do, nothing to reboot.
    "driver-installed": dict(data={}, responses=responses(
        version="22.04", smi=SMI_3060,
        module="NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (x)  2025",
        debs=[("nvidia-headless-no-dkms-580-server-open", "580.95.05-0ubuntu0.22.04.1"),
              ("nvidia-utils-580-server", "580.95.05-0ubuntu0.22.04.1"),
              ("linux-modules-nvidia-580-server-open-generic", "5.15.0-126.136+1"),
              ("linux-image-generic", "5.15.0.126.125")],
        holds=["linux-image-generic", "linux-modules-nvidia-580-server-open-generic",
               "nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"],
        files=["/etc/apt/apt.conf.d/51llmhost-nvidia", "/etc/modprobe.d/llmhost-blacklist-nouveau.conf"],
        probe='{"ok": true, "models": ["m"], "completion": "hi", "webui_health": 200, "gpus": "NVIDIA GeForce RTX 3060"}')),
    # The same box as an older llmhost left it (only the user space held), apt knowing just the installed set.
    "driver-older-holds": dict(data={}, responses=driver_set_host(_INSTALLED_SET, _OLD_HOLDS)),
    # The same, with a kernel update an older llmhost let in (module and all), waiting for the user's reboot.
    "driver-older-holds-pending": dict(data={}, responses=driver_set_host(
        [_SECURITY_KERNEL[0]] + [(n, v, d.replace("580.105.08", "580.95.05")) for n, v, d in _SECURITY_KERNEL[1:3]]
        + _INSTALLED_SET[2:], _OLD_HOLDS, pending=True)),
    # Held and converged, then a security kernel built against a point release reaches the archive.
    "security-kernel": dict(data={}, responses=driver_set_host(
        [x for pair in zip(_SECURITY_KERNEL[:1], _INSTALLED_SET[:1]) for x in pair] + _SECURITY_KERNEL[1:] +
        _INSTALLED_SET[1:], _ALL_HOLDS)),
    # Installed from the debs (580.95.05) but the old module (580.82.07) is still loaded: a reboot is pending.
    "pending-reboot": dict(data={}, responses=responses(
        version="22.04", smi=SMI_3060.replace("580.95.05", "580.82.07"),
        module="NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build  (x)  2025",
        debs=[("nvidia-utils-580-server", "580.95.05-0ubuntu0.22.04.1")])),
    # Installed from the debs, nothing loaded and the kernel has its module: the reboot never happened.
    "not-rebooted": dict(data={"gpu_card": "rtx-3060-12gb"}, responses=responses(
        version="22.04", debs=[("nvidia-utils-580-server", "580.95.05-0ubuntu0.22.04.1")])),
    # Issue 26 (1): a desktop whose driver came from Ubuntu's "Additional Drivers" (ubuntu-drivers install), loaded.
    "additional-drivers": dict(data={}, responses=responses(
        version="24.04", smi=SMI_3060, kernel=("6.8.0-50-generic", {"linux-image-generic": "6.8.0-50-generic"}),
        module="NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (x)  2025",
        debs=[("nvidia-driver-580-open", "580.95.05-0ubuntu0.24.04.2"), ("nvidia-utils-580", "580.95.05-0ubuntu0.24.04.2"),
              ("linux-modules-nvidia-580-open-generic", "6.8.0-50.50+1"),
              ("linux-modules-nvidia-580-open-6.8.0-50-generic", "6.8.0-50.50+1")])),
    "additional-drivers-dkms": dict(data={}, responses=responses(
        version="24.04", smi=SMI_3060,
        module="NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Release Build  (x)  2025",
        debs=[("nvidia-driver-580", "580.95.05-0ubuntu0.24.04.2"), ("nvidia-dkms-580", "580.95.05-0ubuntu0.24.04.2"),
              ("nvidia-utils-580", "580.95.05-0ubuntu0.24.04.2")])),
    # Issue 26 (2): the 580 set installed, held and loaded; the settings ask for 595, which the archive has.
    "branch-switch": dict(data={"nvidia_driver_branch": 595}, responses={  # 595 not installed yet (dpkg-query: "")
        re.compile(r"dpkg-query -W -f='\$\{Version\}' nvidia-utils-595-server"): [], **driver_set_host(
        _INSTALLED_SET + [(n.replace("580", "595"), v, d.replace("580", "595").replace("595.95.05", "595.58.03"))
                          for n, v, d in _INSTALLED_SET[1:3]]
        + [("nvidia-headless-no-dkms-595-server-open", "595.58.03-0ubuntu0.22.04.1", ""),
           ("nvidia-utils-595-server", "595.58.03-0ubuntu0.22.04.1", "")], _ALL_HOLDS)}),
    # The user-space driver was upgraded under a loaded module: refuse and say reboot.
    "mismatch": dict(data={}, responses={**responses(version="22.04"), "nvidia-smi --query-gpu": [
        "Failed to initialize NVML: Driver/library version mismatch", "NVML library version: 580.95", "exit=18"]}),
}


if os.environ.get("LLMHOST_FAKE") == "recorded-h200":
    SCENARIOS["recorded-h200"] = dict(data={}, responses=recorded_gpu_host())
if os.environ.get("LLMHOST_FAKE") == "recorded-h200-busy":  # another process held 3682 MiB (recorded there)
    _busy = (Path(__file__).parent / "fixtures/gpu-host/smi-memory/smi-other-process.txt").read_text().splitlines()
    _gpu, _app = _busy[1].split(", "), _busy[3].split(", ")
    SCENARIOS["recorded-h200-busy"] = dict(data={}, responses={**recorded_gpu_host(), "nvidia-smi --format": [
        f"gpu {_gpu[0]}, {_gpu[2]}, {_gpu[3]}", f"app {_app[1]}, {_app[2]}, {_app[3]}"]})

if os.environ.get("LLMHOST_FAKE") == "recorded-h200-graphics":  # an OpenGL client held 775 MiB (recorded there)
    SCENARIOS["recorded-h200-graphics"] = dict(data={}, responses={**recorded_gpu_host(), "nvidia-smi --format": json.loads(
        (Path(__file__).parent / "fixtures/pyinfra/facts/GpuMemoryHeld/h200_graphics_process.json").read_text())["output"]})

scenario = os.environ.get("LLMHOST_FAKE", "fresh-2204")
extra = ast.literal_eval(os.environ.get("LLMHOST_FAKE_DATA", "{}"))  # test-only overrides, a dict literal
def converged() -> dict:
    """An RTX 3060 Ubuntu 24.04 box where the last run finished: every file llmhost writes is on disk as the deploy
    renders it (same hash, mode, owner), venvs complete behind their links, weights complete, services running.
    Used to check what a no-op run would restart (nothing)."""
    import hashlib

    from operations import base, openwebui_service, vllm_service
    from operations.context import Context
    from operations.python_venv import venv_id
    from operations.core import boundary
    from operations.render import render
    from operations.shared_ops import HOSTSIDE
    from operations.core.settings import Settings
    from operations.core.tuning import GpuSpec, ModelSpec, plan
    from operations.core.versions import cuda_visible_mib, model_family, needed_context

    cfg = json.loads((Path(__file__).parent / "fixtures/models/llama-3.1-8b-instruct-awq-int4/config.json").read_text())

    module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (x)  2025"
    out = responses(version="24.04", smi=SMI_3060, module=module, probe='{"ok": true, "models": ["m"], '
                    '"completion": "hi", "webui_health": 200, "gpus": "NVIDIA GeForce RTX 3060"}')
    # converged-upgrade: the host converged on the default pins, this run asks for other ones (an upgrade)
    s = Settings(**(extra if scenario == "converged" else {}))
    gpu = GpuSpec(cuda_visible_mib("NVIDIA GeForce RTX 3060", 12288), 8.6, 1, "NVIDIA GeForce RTX 3060")
    fam = model_family(cfg)  # the default checkpoint's, planned as preflight plans it
    ctx = Context(s, "ubuntu", "24.04", "580.95.05", {}, plan(
        ModelSpec.from_config(cfg), gpu, s.vllm_version,
        min_context=needed_context(s.openwebui_version, bool(fam.tool_call_parser))), s.model_revision, "open",
        family=fam)
    bvars = openwebui_service.backup_vars(ctx)
    backup = f"{s.install_root}/bin/llmhost-webui-backup"
    rendered = {  # path: (content, mode, owner); a program's values first (its path is a prefix of theirs)
        f"{backup}.json": (boundary.json_value(bvars) + "\n", "644"),
        f"{ctx.probe}.json": (boundary.json_value(base.probe_vars(ctx)) + "\n", "644"),
        backup: ((HOSTSIDE / "webui_backup.py").read_text(), "755"),
        "/etc/systemd/system/llmhost-webui-backup.service": (render("llmhost-webui-backup.service.j2", **bvars), "644"),
        "/etc/systemd/system/llmhost-webui-backup.timer": (render("llmhost-webui-backup.timer.j2", **bvars), "644"),
        f"{s.config_root}/vllm.env": (render("vllm.env.j2", **vllm_service.env_vars(ctx)), "644"),
        "/etc/systemd/system/vllm.service": (render("vllm.service.j2", **vllm_service.unit_vars(ctx)), "644"),
        ctx.probe: ((HOSTSIDE / "probe.py").read_text(), "755"),
        f"{s.config_root}/open-webui.env": (render("open-webui.env.j2", **openwebui_service.env_vars(ctx)), "644"),
        "/etc/systemd/system/open-webui.service": (render("open-webui.service.j2",
                                                          **openwebui_service.unit_vars(ctx)), "644"),
    }
    perms = {"644": "-rw-r--r--", "755": "-rwxr-xr-x", "600": "-rw-------"}
    matchers: dict = {f"if [ -x {ctx.probe} ]": out["llmhost-probe"],  # the probe's one look (verify.Probe)
                      "s/^OPENAI_API_KEY=//p": ["match"]}  # EnvValuesMatch: Open WebUI holds vLLM's current key
    for path, (text, mode) in rendered.items():
        sha1 = hashlib.sha1(text.encode()).hexdigest()
        matchers[re.compile(r"sha1sum " + re.escape(path) + r"\b")] = [f"{sha1}  {path}"]
        matchers[re.compile(re.escape(path) + r"\b")] = [
            f"user=root group=root mode={perms[mode]} atime=0 mtime=0 ctime=0 size={len(text)} '{path}'"]
    for d in {os.path.dirname(p) for p in rendered}:  # parent directories exist (else pyinfra plans a mkdir)
        matchers[re.compile(re.escape(d) + r"(?=\s|$)")] = [
            f"user=root group=root mode=drwxr-xr-x atime=0 mtime=0 ctime=0 size=4096 '{d}'"]
    given = os.environ.get(s.openwebui_admin_password_env)  # a password from the controller: compared by sha256
    if given:
        admin = f"{s.config_root}/open-webui.admin.env"
        matchers[re.compile(r"sha256sum " + re.escape(admin) + r"\b")] = [
            f"{hashlib.sha256(boundary.env_file({'WEBUI_ADMIN_PASSWORD': given}, 'test').encode()).hexdigest()}  {admin}"]
    for path in (f"{s.config_root}/vllm.secret.env", f"{s.config_root}/open-webui.secret.env",
                 f"{s.config_root}/open-webui.admin.env"):
        matchers[re.compile(re.escape(path) + r"\b")] = [
            f"user=root group=root mode=-rw------- atime=0 mtime=0 ctime=0 size=10 '{path}'"]
    ow_reqs, ow_extra = openwebui_service.venv_args(s)
    venvs = {f"{s.install_root}/vllm": venv_id(s.vllm_python_version, vllm_service.vllm_requirements(s)
                                                + [" ".join([*vllm_service.uv_cutoffs(s), vllm_service.COMPILE])], s.pip_index_url,
                                                s.pip_find_links),
             f"{s.install_root}/open-webui": venv_id(s.openwebui_python, ow_reqs + [" ".join(ow_extra)],
                                                     s.pip_index_url, s.pip_find_links)}
    for root, vid in venvs.items():
        target = f"{root}/venvs/{vid}"
        matchers[re.compile(re.escape(f"{root}/current") + r"(?=\s|$)")] = [
            f"user=root group=root mode=lrwxrwxrwx atime=0 mtime=0 ctime=0 size=40 '{root}/current' -> '{target}'"]
        matchers[re.compile(re.escape(f"{target}/.llmhost-complete") + r"\b")] = [
            f"user=root group=root mode=-rw-r--r-- atime=0 mtime=0 ctime=0 size=0 '{target}/.llmhost-complete'"]
    matchers[re.compile(r"if \[ -f \S*\.complete-")] = ["complete"]
    matchers["--property SubState"] = ["Id=vllm.service", "SubState=running", "", "Id=open-webui.service",
                                       "SubState=running", "", "Id=llmhost-webui-backup.timer", "SubState=waiting"]
    matchers["--property UnitFileState"] = ["Id=vllm.service", "UnitFileState=enabled", "",
                                            "Id=open-webui.service", "UnitFileState=enabled", "",
                                            "Id=llmhost-webui-backup.timer", "UnitFileState=enabled"]
    db = f"{s.data_root}/open-webui/webui.db"  # Open WebUI has data: an upgrade must back it up first
    matchers[re.compile(re.escape(db) + r"\b")] = [
        f"user=llmhost-webui group=llmhost-webui mode=-rw-r----- atime=0 mtime=0 ctime=0 size=4096 '{db}'"]
    matchers[re.compile(re.escape(bvars["backups"]) + r"(?=\s|$)")] = [
        f"user=llmhost-webui group=llmhost-webui mode=drwx------ atime=0 mtime=0 ctime=0 size=4096 '{bvars['backups']}'"]
    return {**matchers, **out}


if os.environ.get("LLMHOST_FAKE") in ("converged", "converged-upgrade"):
    SCENARIOS[os.environ["LLMHOST_FAKE"]] = dict(data={}, responses=converged())


spec = SCENARIOS[scenario]
hosts = [("@fake/" + scenario, {"fake_responses": spec["responses"], "fake_delay": 0, "fake_delay_jitter": 0,
                                 "nvidia_reboot_delay_s": 1,  # pyinfra's reboot waits this long (10 s by default)
                                 **spec["data"], **extra})]
