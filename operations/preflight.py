"""Preflight: everything is checked and planned before any operation can change the host.

``check()`` runs while pyinfra prepares the deploy (facts are only read); any problem raises ``LlmhostError``,
which stops pyinfra before it executes a single operation on any host.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.hardware import Ipv4Addrs, Ipv6Addrs
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Arch, LinuxDistribution, RebootRequired

from operations import model_lock
from operations.core import boundary, catalogue, driver_set, fleet, versions
from operations.context import Context, LlmhostError, snapshots_to_prune
from operations.hub import check_embedding, model_config
from operations.facts import (AptVersions, DiskFreeMib, GpuMemoryHeld, ModelSnapshots, DpkgVersion, KernelImages, MemTotalMib, NvidiaKernelModule,
                              NvidiaModuleForKernel, NvidiaSmi, PciNvidiaGpus, PortOwners, SecureBoot)
from operations.core.settings import Settings, SettingsError
from operations.core.tuning import GpuSpec, ModelSpec, PlanError, plan



def _fail(msg: str) -> None:
    raise LlmhostError(f"{host.name}: {msg}")


def _gpu(s: Settings, smi: dict[str, Any]) -> GpuSpec:
    declared: GpuSpec | None = None
    if s.gpu_card:
        try:
            declared = GpuSpec.from_card(s.gpu_card)
        except PlanError as exc:
            _fail(f"gpu_card: {exc}")
    if s.gpu_memory_mib:
        declared = GpuSpec(s.gpu_memory_mib, declared.compute_capability if declared else 8.6, 1,
                           declared.name if declared else f"{s.gpu_memory_mib} MiB")
    if smi["status"] == "ok":
        gpus = smi["gpus"]
        first = gpus[0]
        same = [g for g in gpus if g["name"] == first["name"]]
        cuda_mib = versions.cuda_visible_mib(first["name"], first["memory_mib"])
        detected = GpuSpec(cuda_mib, first["compute_capability"] or 8.6, len(same), first["name"])
        if declared and abs(declared.memory_mib - detected.memory_mib) > 0.05 * detected.memory_mib:
            _fail(f"gpu_memory_mib/gpu_card declare {declared.memory_mib} MiB but nvidia-smi reports "
                  f"{first['name']} with {first['memory_mib']} MiB (~{cuda_mib} MiB CUDA-visible): "
                  "remove the declaration or correct it")
        return detected
    if declared is None:
        _fail("no driver reports the GPU yet: declare it with gpu_card (e.g. 'rtx-3060-12gb') or gpu_memory_mib "
              "so that vLLM's flags can be planned")
    return declared


HELD_HEADROOM_MIB = 256  # what a desktop's processes may grow by between this run and vLLM's start


def _held_by_others(s: Settings, smi: dict[str, Any]) -> tuple[int, str]:
    """GPU memory that processes other than llmhost's vLLM hold (a desktop session, another CUDA program): vLLM
    0.26 refuses to start when free memory is below utilization x total, so the plan keeps that much (plus a
    headroom) free. Returns (vllm_reserved_mib to plan with, a description of who holds it or '')."""
    if smi["status"] != "ok":
        return s.vllm_reserved_mib, ""
    held = host.get_fact(GpuMemoryHeld)
    if not held["others_mib"]:
        return s.vllm_reserved_mib, ""
    who = ", ".join(f"{a['name']} pid {a['pid']} {a['mib']} MiB" for a in held["apps"]) or "graphics processes"
    what = f"{held['others_mib']} MiB ({who})"
    need = held["others_mib"] + HELD_HEADROOM_MIB
    if s.vllm_reserved_mib >= need:
        return s.vllm_reserved_mib, what
    logger.info(f"{host.print_prefix}other processes hold {what} of the GPU: planned with {need} MiB kept free "
                f"(vllm_reserved_mib={s.vllm_reserved_mib} raised to what they hold + {HELD_HEADROOM_MIB} MiB)")
    return need, what


def no_nagle(connector: Any) -> bool:
    """TCP_NODELAY on the host's SSH socket. paramiko sets no socket options: each pyinfra command is a few small
    SSH packets, and Nagle's algorithm holds the second until the server's delayed ACK (40 ms on Linux) - measured
    ~47 ms per fact on the test host, ~5 ms with this. True when set (an SSH connection), False otherwise."""
    client = getattr(connector, "client", None)
    transport = client.get_transport() if client is not None else None
    sock = getattr(transport, "sock", None)
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False  # @local / @fake / a ProxyCommand pipe: nothing to tune
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


@deploy("Preflight", data_defaults=Settings.defaults())
def check() -> Context:
    no_nagle(host.connector)
    try:
        return _check()
    except EOFError:  # pyinfra's sudo prompt (getpass) with no terminal to type into
        raise LlmhostError(f"{host.name}: sudo asks for a password and there is no terminal to type it: export "
                           "LLMHOST_SUDO_PASSWORD=<password> for this run (or run on a terminal with "
                           "--use-sudo-password, or allow the SSH user passwordless sudo)") from None


def _members() -> list[fleet.Member]:
    """Every inventory host (also outside --limit) as the fleet sees it; a host with invalid settings is left out
    here and refused by its own preflight."""
    out = []
    for h in host.inventory:
        try:
            hs = model_lock.pinned(Settings.from_host_data(h.data.dict(), h.name), h.name)[0]
        except (SettingsError, LlmhostError):
            continue
        out.append(fleet.Member(h.name, frozenset(h.groups), hs.fleet_address or h.data.get("ssh_hostname")
                                or h.name, hs))
    return out


def _check() -> Context:
    data = host.data.dict()  # inventory / group / --data values over the defaults above
    try:
        s = Settings.from_host_data(data, host.name)
    except SettingsError as exc:
        raise LlmhostError(str(exc)) from None
    s, locked = model_lock.pinned(s, host.name)  # model: <name> -> the commit in the lock (resolved once)
    if locked:
        logger.info(f"{host.print_prefix}{locked}")
    members = _members()
    try:
        fleet.check(members)
    except fleet.FleetError as exc:
        raise LlmhostError(f"inventory: {exc}") from None
    me = next(m for m in members if m.name == host.name)
    for var in (s.openwebui_admin_password_env, s.vllm_api_key_env, s.hf_token_env):  # secrets cross here intact
        try:
            if var and os.environ.get(var):
                boundary.env_value(os.environ[var], f"${var} on the controller")
        except boundary.BoundaryError as exc:
            _fail(str(exc))
    if s.vllm_api_key_env and not os.environ.get(s.vllm_api_key_env):
        _fail(f"vllm_api_key_env={s.vllm_api_key_env} but ${s.vllm_api_key_env} is empty on the controller: export "
              f"{s.vllm_api_key_env}=$(openssl rand -hex 32) (the same value for every run of this fleet)")

    distro = host.get_fact(LinuxDistribution)
    meta = distro.get("release_meta") or {}
    os_id, os_version = meta.get("ID", "unknown").lower(), meta.get("VERSION_ID", "unknown")
    if f"{os_id} {os_version}" not in s.allow_os:
        _fail(f"{os_id} {os_version} is not supported (allow_os={s.allow_os}): use Ubuntu 22.04 or 24.04")
    arch = host.get_fact(Arch)
    if arch not in ("x86_64", "amd64"):
        _fail(f"architecture {arch} is not supported: the CUDA 12.1 / vLLM wheels are x86_64 only")
    mem_mb = host.get_fact(MemTotalMib)
    if mem_mb and mem_mb < s.min_ram_gib * 1024:
        _fail(f"{mem_mb} MiB RAM is below min_ram_gib={s.min_ram_gib}: add RAM or lower min_ram_gib")

    pci = host.get_fact(PciNvidiaGpus)
    smi = host.get_fact(NvidiaSmi)
    module = host.get_fact(NvidiaKernelModule)
    if s.gpu_host and "vllm" in me.roles:
        if not pci and smi["status"] != "ok":
            _fail("no NVIDIA GPU on the PCI bus: plug the card in, or set gpu_host=False for a GPU-less host")
        if smi["version_mismatch"]:
            _fail("nvidia-smi: 'Driver/library version mismatch': the loaded kernel module is older than the "
                  "user-space driver (an upgrade without reboot). Reboot the host, then re-run")
    try:
        flavour = versions.driver_flavour(s.nvidia_driver_flavour, [int(d["device_id"], 16) for d in pci])
    except ValueError as exc:
        _fail(str(exc))
    secure_boot = host.get_fact(SecureBoot)
    if s.gpu_host and secure_boot == "enabled" and os_id != "ubuntu":
        _fail(f"Secure Boot is on and {os_id} has no prebuilt signed NVIDIA modules (DKMS modules would need a MOK "
              "key): disable Secure Boot or use Ubuntu, whose linux-modules-nvidia packages are signed")

    try:
        cuda = versions.check_vllm_driver(s.vllm_version, s.nvidia_driver_branch)
    except ValueError as exc:
        _fail(str(exc))
    loaded = smi["gpus"][0]["driver_version"] if smi["status"] == "ok" else None
    working_driver = loaded if loaded and versions.driver_satisfies(loaded, cuda) else None
    if loaded and not working_driver:
        logger.info(f"{host.print_prefix}driver {loaded} is too old for vLLM {s.vllm_version} (CUDA {cuda}); "
                    f"the {s.nvidia_driver_branch} branch will be installed")

    wildcard = ("0.0.0.0", "::", "127.0.0.1", "::1")
    binds = [(name, getattr(s, name)) for name in ("vllm_host", "openwebui_host") if getattr(s, name) not in wildcard]
    if binds:
        own = sorted({a for addrs in [*host.get_fact(Ipv4Addrs).values(), *host.get_fact(Ipv6Addrs).values()]
                      for a in addrs})
        for name, address in binds:
            if address not in own:
                _fail(f"{name}={address} is not an address of this host (it has {', '.join(own) or 'none'}): "
                      "use one of them, 0.0.0.0 (all) or 127.0.0.1 (loopback)")
    wanted = ([(s.vllm_port, "vllm.service", "vllm_port")] if "vllm" in me.roles else []) + (
        [(s.openwebui_port, "open-webui.service", "openwebui_port")] if "webui" in me.roles else [])
    owners = host.get_fact(PortOwners, ports=[w[0] for w in wanted])
    for port, unit, setting in wanted:
        o = owners.get(str(port))
        if o and not o["unit"].endswith("/" + unit):
            where = o["unit"].rsplit("/", 1)[-1] or "no unit"
            _fail(f"port {port} is already in use by {o['process']} (pid {o['pid']}, {where}): stop it or set "
                  f"{setting}")

    if "vllm" not in me.roles:  # a UI host of a fleet: no GPU, weights or flag plan here
        check_embedding(s, host.name)
        fam = versions.chosen_family(s.vllm_tool_call_parser, model_config(s, host.name)[0])  # its Open WebUI sends what the backends accept
        ctx = Context(s, os_id, os_version, None, {}, None, s.model_revision, flavour, s.warnings(), roles=me.roles,
                      backends=fleet.backends(me, members), family=fam)
        for w in ctx.warnings:
            logger.warning(f"{host.print_prefix}warning: {w}")
        return ctx
    if not s.gpu_host and s.vllm_exec_start_override is None and s.vllm_requirements_override is None:
        _fail("gpu_host=False on a host that serves vLLM needs vllm_exec_start_override or vllm_requirements_override "
              "(test hosts: a stand-in or vLLM's CPU build; vLLM cannot run without a GPU): set gpu_host=True on a "
              "GPU box, or put this host in ui_hosts only")
    cfg, qcfg, commit, size = model_config(s, host.name)
    if "webui" in me.roles:
        check_embedding(s, host.name)
    gpu = _gpu(s, smi)
    fam = versions.chosen_family(s.vllm_tool_call_parser, cfg)
    try:
        versions.check_compute_capability(s.vllm_version, gpu.compute_capability)
        versions.check_act_order(s.vllm_version, bool((cfg.get("quantization_config") or qcfg or {}).get("desc_act")))
    except ValueError as exc:
        _fail(f"model_repo={s.model_repo}: {exc}" if "desc_act" in str(exc) else str(exc))
    reserved, held = _held_by_others(s, smi)
    try:
        p = plan(ModelSpec.from_config(cfg, qcfg), gpu, s.vllm_version, max_model_len=s.vllm_max_model_len,
                 gpu_memory_utilization=s.vllm_gpu_memory_utilization, max_num_seqs=s.vllm_max_num_seqs,
                 reserved_mib=reserved, min_concurrency=s.vllm_min_concurrency,
                 tensor_parallel_size=s.vllm_tensor_parallel_size, pipeline_parallel_size=s.vllm_nnodes,
                 min_context=versions.needed_context(s.openwebui_version, bool(fam.tool_call_parser)))
    except PlanError as exc:
        own = str(exc).startswith(("max_model_len=", "gpu_memory_utilization=", "max_num_seqs=", "reserved_mib="))
        why = f"vllm_{exc}" if own else f"model_repo={s.model_repo}: {exc}"  # the planner's own bounds are settings
        _fail(why + (f" (other processes hold {held} of the GPU: close them, or lower vllm_gpu_memory_utilization / "
                     "vllm_max_model_len)" if held else ""))

    free = host.get_fact(DiskFreeMib, path=s.data_root)
    hub_size = size
    size = size or int(p.weights_gib * 2**30)  # a hub that does not report sizes: the planner's estimate
    need = size / 2**20 + s.min_free_disk_gib * 1024
    ctx = Context(s, os_id, os_version, working_driver, module, p, commit, flavour, s.warnings() + p.warnings,
                  roles=me.roles, backends=fleet.backends(me, members) if "webui" in me.roles else [],
                  clients=fleet.clients(me, members), family=fam)
    if (s.gpu_host and os_id == "ubuntu") or s.driver_standin_archive:
        _kernel_modules(ctx, smi)
    freed = sum(d["bytes"] for d in snapshots_to_prune(host.get_fact(ModelSnapshots, models_dir=ctx.models_dir),
                                                         s.models_keep, (s.model_repo, commit))) / 2**20
    if not host.get_fact(File, path=ctx.snapshot_marker) and free + freed < need:
        _fail(f"{free} MiB free under {s.data_root}" + (f" (+{freed:.0f} MiB that pruning older snapshots frees, "
              f"models_keep={s.models_keep})" if freed else "") + f", the weights need {size / 2**20:.0f} MiB plus "
              f"min_free_disk_gib={s.min_free_disk_gib}: free disk space, lower models_keep or move data_root")

    if not host.get_fact(File, path=ctx.snapshot_marker):
        logger.info(f"{host.print_prefix}to download: weights {s.model_repo}@{commit[:12]}, "
                    + (f"{hub_size / 2**30:.2f} GiB (the hub's sizes)" if hub_size else
                       f"about {size / 2**30:.1f} GiB (the planner's estimate: the hub gives no sizes)"))
    if host.get_fact(RebootRequired):
        ctx.warnings.append("the host has a pending reboot (/var/run/reboot-required): llmhost reboots only for a "
                            "driver change; reboot when convenient")
    if ctx.serves_webui:
        try:
            room = versions.conversation_room(p.max_model_len, s.openwebui_version, bool(fam.tool_call_parser))
        except ValueError as exc:
            _fail(f"model_repo={s.model_repo}: {exc}")
        logger.info(f"{host.print_prefix}Open WebUI's own prompt takes up to "
                    f"{p.max_model_len - room} tokens of {p.max_model_len}: {room} left for the conversation")
    if not s.gpu_host:  # the test host: no GPU, so the plan is what a box with the named card would get
        logger.info(f"{host.print_prefix}this host has no GPU (gpu_host=False): the plan below is the one for "
                    f"{f'gpu_card={s.gpu_card}' if s.gpu_card else 'the default card'} (LLMHOST_GPU_CARD), shown for "
                    "reference; nothing here runs it")
    logger.info(f"{host.print_prefix}{p.table()}")
    if s.vllm_nnodes == 1:  # what else this card serves (llmhost-plan --fits CARD prints the same)
        rows = catalogue.fits(gpu, s.vllm_version, s.openwebui_version, s.vllm_min_concurrency)
        logger.info(f"{host.print_prefix}{catalogue.fits_table(rows, gpu, s.vllm_version)}")
    for w in ctx.warnings:
        logger.warning(f"{host.print_prefix}warning: {w}")
    return ctx


def _kernel_modules(ctx: Context, smi: dict[str, Any]) -> None:
    """The driver set (operations/core/driver_set.py): the kernel that boots next, its modules metapackage, and the
    one driver version the module and the user space share; whether the running kernel still has a module; and
    whether the installed driver answers (every run: a driver from the debs must be the one loaded)."""
    s = ctx.s
    kernels = host.get_fact(KernelImages, running=s.driver_standin_kernel or "")
    ctx.running_kernel = kernels["running"]
    installed = host.get_fact(DpkgVersion, package=f"nvidia-utils-{s.nvidia_driver_branch}-server").split("-")[0]
    have = {name: next(iter(versions)) for name, versions in host.get_fact(DebPackages).items() if versions}
    present = sorted(have)
    desktop = driver_set.desktop_driver(present)
    if desktop:  # Additional Drivers / ubuntu-drivers: apt would swap it for the -server set without its modules
        _fail(f"this box runs Ubuntu's desktop NVIDIA driver ({', '.join(desktop)}; Additional Drivers or "
              "ubuntu-drivers install), which llmhost does not take over: apt would replace it with the "
              f"{s.nvidia_driver_branch}-server driver and drop its kernel modules. Remove it first (sudo apt purge "
              f"{' '.join(desktop)} && sudo apt autoremove --purge), then re-run: llmhost installs, holds and loads the "
              f"{s.nvidia_driver_branch}-server driver with the kernel's module (one reboot)")
    # a -server driver of any branch is llmhost's to move (a branch switch moves it with the kernel's modules)
    from_deb = bool(installed) or bool(driver_set.server_branches(present))
    ctx.driver_from_deb = from_deb
    if ctx.working_driver and not from_deb:
        return  # a working driver from elsewhere is left alone (see nvidia_driver)
    try:
        driver_set.check_kernel(kernels["next"])
        booting = driver_set.kernel_metapackage(kernels["meta"], kernels["next"], kernels["running"])
    except ValueError as exc:
        _fail(str(exc))
    branch, flavour = s.nvidia_driver_branch, ctx.flavour
    names = [*driver_set.userspace_packages(branch, flavour)] + [
        x for m in sorted(kernels["meta"]) for x in (m, driver_set.modules_package(branch, flavour, m))]
    known = host.get_fact(AptVersions, packages=names)
    ctx.kernel_meta = driver_set.followed_metapackage(booting, kernels["meta"], kernels["running"], branch, flavour,
                                                      known)
    # every other kernel metapackage is held too: linux-generic beside -hwe-24.04 would pull a kernel (from
    # unattended-upgrades) that no module of the set is built for
    ctx.other_kernel_metas = sorted(m for m in kernels["meta"] if m != ctx.kernel_meta)
    ctx.modules_package = driver_set.modules_package(branch, flavour, ctx.kernel_meta)
    abis = {kernels["next"], kernels["running"]} | {driver_set.image_of(v["depends"])
                                                     for v in known.get(ctx.kernel_meta, [])}
    known.update(host.get_fact(AptVersions, packages=sorted(driver_set.abi_modules_package(branch, flavour, a)
                                                            for a in abis if a)))
    ctx.warnings += driver_set.held_beside(ctx.kernel_meta, ctx.other_kernel_metas, have, known)
    ctx.driver_set = driver_set.driver_set(branch, flavour, ctx.kernel_meta, kernels["next"], known,
                                           keep=(kernels["running"],), installed=have)
    if ctx.driver_set and not ctx.driver_set.pins:
        _fail(f"no NVIDIA {branch} driver in the archive fits the kernel {kernels['next']}: "
              + "; ".join(ctx.driver_set.waits) + ". Run apt update, or boot a kernel that has its "
              f"{ctx.modules_package}, then re-run")
    if ctx.driver_set:
        ctx.warnings += ctx.driver_set.waits
        if ctx.driver_set.no_module:
            ctx.warnings.append(f"the kernel {ctx.driver_set.no_module} boots next and has no nvidia {branch} module "
                                f"at driver {ctx.driver_set.driver} in the archive: do not reboot into it; remove it "
                                f"(apt remove linux-image-{ctx.driver_set.no_module}) or wait for its module")
    if from_deb and not host.get_fact(NvidiaModuleForKernel, kernel=kernels["running"]):
        ctx.kernel_missing_module = driver_set.abi_modules_package(branch, flavour, kernels["running"])
        ctx.warnings.append(f"the running kernel {kernels['running']} has no nvidia module (a kernel update without "
                            f"it): this run installs {ctx.kernel_missing_module} and loads it")
    elif installed and s.gpu_host and not s.driver_standin_archive:
        loaded = ctx.module.get("version")
        if smi["status"] != "ok":
            _fail(f"the {s.nvidia_driver_branch} driver {installed} is installed but nvidia-smi does not answer "
                  f"({(smi.get('error') or smi['status']).splitlines()[0]}): reboot the host to load it (after a "
                  "reboot: check Secure Boot and 'dmesg | grep -i nvidia'), then re-run")
        if loaded and loaded != installed:
            _fail(f"the loaded NVIDIA module is {loaded} but {installed} is installed: reboot the host to load the "
                  "installed one, then re-run")
