"""Preflight: everything is checked and planned before any operation can change the host.

``check()`` runs while pyinfra prepares the deploy (facts are only read); any problem raises ``LlmhostError``,
which stops pyinfra before it executes a single operation on any host.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.facts.hardware import Ipv4Addrs, Ipv6Addrs
from pyinfra.facts.server import Arch, LinuxDistribution

from operations import versions
from operations.facts import (DiskFreeMib, DpkgVersion, KernelImages, MemTotalMib, NvidiaKernelModule,
                              NvidiaModuleForKernel, NvidiaSmi, PciNvidiaGpus, PortOwners, SecureBoot)
from operations.settings import Settings, SettingsError
from operations.tuning import GpuSpec, ModelSpec, Plan, PlanError, plan

# Turing (sm_75) and newer can use the open kernel modules; PCI device ids below 0x1e00 are Pascal/Volta or older.
FIRST_TURING_DEVICE_ID = 0x1E00


class LlmhostError(DeployError):
    """A refusal before any change: the message names the setting and the fix."""


@dataclass
class Context:
    """What every component needs to know about one host, decided once."""

    s: Settings
    os_id: str
    os_version: str
    working_driver: str | None  # version of a loaded driver new enough for the pinned vLLM, else None
    module: dict[str, Any]
    plan: Plan
    model_commit: str
    flavour: str
    warnings: list[str] = field(default_factory=list)
    modules_package: str = ""  # the NVIDIA modules metapackage for the running kernel's flavour
    running_kernel: str = ""
    kernel_missing_module: str = ""  # the ABI modules package to install when the running kernel has no nvidia.ko

    @property
    def ubuntu(self) -> bool:
        return self.os_id == "ubuntu"

    @property
    def models_dir(self) -> str:
        return f"{self.s.data_root}/models"

    @property
    def snapshot_path(self) -> str:
        org, name = self.s.model_repo.split("/")
        return f"{self.models_dir}/hub/models--{org}--{name}/snapshots/{self.model_commit}"

    @property
    def tools(self) -> str:
        return f"{self.s.install_root}/tools"

    @property
    def uv(self) -> str:
        return f"{self.tools}/bin/uv"

    @property
    def probe(self) -> str:
        return f"{self.s.install_root}/bin/llmhost-probe"

    @property
    def download_env(self) -> dict[str, str]:
        """Environment for commands that download (proxy, CA bundle, uv's shared Python and cache dirs)."""
        env = {"UV_PYTHON_INSTALL_DIR": f"{self.s.install_root}/python", "UV_CACHE_DIR": "/var/cache/llmhost/uv",
               "UV_LINK_MODE": "copy"}
        if self.s.http_proxy:
            from urllib.parse import urlsplit

            direct = ",".join(["127.0.0.1", "localhost", urlsplit(self.s.hf_endpoint).hostname or ""])
            env.update(http_proxy=self.s.http_proxy, https_proxy=self.s.http_proxy,
                       HTTP_PROXY=self.s.http_proxy, HTTPS_PROXY=self.s.http_proxy, no_proxy=direct, NO_PROXY=direct)
        if self.s.ca_bundle:
            env.update(SSL_CERT_FILE=self.s.ca_bundle, REQUESTS_CA_BUNDLE=self.s.ca_bundle, PIP_CERT=self.s.ca_bundle)
        return env

    @staticmethod
    def connect(address: str) -> str:
        """Where a local client reaches a service bound to address."""
        return "127.0.0.1" if address in ("0.0.0.0", "::") else address

    @property
    def snapshot_marker(self) -> str:
        return f"{self.models_dir}/.complete-{self.s.model_repo.replace('/', '--')}-{self.model_commit}"


def _fail(msg: str) -> None:
    raise LlmhostError(f"{host.name}: {msg}")


def _model_config(s: Settings) -> tuple[dict, dict | None, str, int]:
    """Resolve repo + revision on the controller and read config.json (+ quantize_config.json)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST
    from huggingface_hub.utils import EntryNotFoundError

    token = os.environ.get(s.hf_token_env) or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    # A pinned commit never changes: when its config.json is already in the controller's cache (every re-run after
    # the first), the Hub is not asked again; air-gapped controllers rely on that cache alone.
    cached = isinstance(try_to_load_from_cache(s.model_repo, "config.json", revision=s.model_revision), str)
    if offline or cached:
        sha, size = s.model_revision, 0
    else:
        sha, size = _resolve(s, token)

    def read(filename: str) -> dict | None:
        # A pinned commit never changes: a file already in the controller's cache needs no request.
        cached = try_to_load_from_cache(s.model_repo, filename, revision=sha)
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text())
        if cached is _CACHED_NO_EXIST or offline:
            return None
        try:
            return json.loads(Path(hf_hub_download(s.model_repo, filename, revision=sha, endpoint=s.hf_endpoint,
                                                   token=token)).read_text())
        except EntryNotFoundError:
            return None

    cfg = read("config.json")
    if cfg is None and offline:
        raise LlmhostError(f"{host.name}: HF_HUB_OFFLINE is set and {s.model_repo}@{s.model_revision} "
                           "config.json is not in the controller's cache: unset HF_HUB_OFFLINE or pre-fetch "
                           "it with `llmhost-plan --model REPO@REV`")
    if cfg is None:
        raise LlmhostError(f"{host.name}: {s.model_repo}@{s.model_revision} has no config.json: "
                           "model_repo must be a transformers model repo")
    return cfg, read("quantize_config.json"), sha, size


def _network_error(exc: BaseException) -> bool:
    """A transport failure of any HTTP stack huggingface_hub has used (requests in 0.x, httpx / httpx2 later)."""
    return isinstance(exc, OSError) or any(
        c.__module__.split(".")[0] in ("requests", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2")
        and c.__name__ in ("TransportError", "RequestError", "ConnectionError", "Timeout", "TimeoutException")
        for c in type(exc).__mro__)


def _resolve(s: Settings, token: str | None) -> tuple[str, int]:
    """Check repo + revision on the hub: (commit sha, total size in bytes, 0 when the hub does not say)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    api = HfApi(endpoint=s.hf_endpoint, token=token)
    try:
        info = api.model_info(s.model_repo, revision=s.model_revision, files_metadata=True)
    except GatedRepoError:
        raise LlmhostError(f"{host.name}: model_repo={s.model_repo} is gated: accept its licence on the hub and "
                           f"export {s.hf_token_env}=<token> on the controller") from None
    except RevisionNotFoundError:
        raise LlmhostError(f"{host.name}: model_revision={s.model_revision} does not exist in {s.model_repo}: "
                           "pin a commit from the repo's history") from None
    except RepositoryNotFoundError:
        hint = "" if token else f" (if it is private or gated, export {s.hf_token_env})"
        raise LlmhostError(f"{host.name}: model_repo={s.model_repo} was not found on {s.hf_endpoint}{hint}: "
                           "fix model_repo") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            raise LlmhostError(f"{host.name}: model_repo={s.model_repo} at model_revision={s.model_revision} was "
                               f"not found on {s.hf_endpoint}: fix model_repo / model_revision") from None
        raise LlmhostError(f"{host.name}: {s.hf_endpoint} refused the model check ({status}): check hf_endpoint "
                           f"and {s.hf_token_env}") from None
    except Exception as exc:  # noqa: BLE001 - network errors differ by huggingface_hub version (requests, httpx2)
        if not _network_error(exc):
            raise
        raise LlmhostError(f"{host.name}: cannot reach {s.hf_endpoint} to check model_repo "
                           f"({type(exc).__name__}: {exc}); check hf_endpoint and the controller's network") from None
    return info.sha, sum((sib.size or 0) for sib in (info.siblings or []))


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


@deploy("Preflight", data_defaults=Settings.defaults())
def check() -> Context:
    try:
        return _check()
    except EOFError:  # pyinfra's sudo prompt (getpass) with no terminal to type into
        raise LlmhostError(f"{host.name}: sudo asks for a password and there is no terminal to type it: export "
                           "LLMHOST_SUDO_PASSWORD=<password> for this run (or run on a terminal with "
                           "--use-sudo-password, or allow the SSH user passwordless sudo)") from None


def _check() -> Context:
    data = host.data.dict()  # inventory / group / --data values over the defaults above
    try:
        s = Settings.from_host_data(data, host.name)
    except SettingsError as exc:
        raise LlmhostError(str(exc)) from None

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
    if s.gpu_host:
        if not pci and smi["status"] != "ok":
            _fail("no NVIDIA GPU on the PCI bus: plug the card in, or set gpu_host=False for a GPU-less host")
        if smi["version_mismatch"]:
            _fail("nvidia-smi: 'Driver/library version mismatch': the loaded kernel module is older than the "
                  "user-space driver (an upgrade without reboot). Reboot the host, then re-run")
    flavour = s.nvidia_driver_flavour
    if flavour == "auto":
        old = [d for d in pci if int(d["device_id"], 16) < FIRST_TURING_DEVICE_ID]
        flavour = "proprietary" if old else "open"
    elif flavour == "open" and any(int(d["device_id"], 16) < FIRST_TURING_DEVICE_ID for d in pci):
        _fail("nvidia_driver_flavour=open, but this card predates Turing and cannot use the open kernel modules: "
              "set nvidia_driver_flavour=proprietary (or auto)")
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
    owners = host.get_fact(PortOwners, ports=[s.vllm_port, s.openwebui_port])
    for port, unit, setting in ((s.vllm_port, "vllm.service", "vllm_port"),
                                (s.openwebui_port, "open-webui.service", "openwebui_port")):
        o = owners.get(str(port))
        if o and not o["unit"].endswith("/" + unit):
            where = o["unit"].rsplit("/", 1)[-1] or "no unit"
            _fail(f"port {port} is already in use by {o['process']} (pid {o['pid']}, {where}): stop it or set "
                  f"{setting}")

    cfg, qcfg, commit, size = _model_config(s)
    gpu = _gpu(s, smi)
    try:
        versions.check_compute_capability(s.vllm_version, gpu.compute_capability)
    except ValueError as exc:
        _fail(str(exc))
    try:
        p = plan(ModelSpec.from_config(cfg, qcfg), gpu, s.vllm_version, max_model_len=s.vllm_max_model_len,
                 gpu_memory_utilization=s.vllm_gpu_memory_utilization, max_num_seqs=s.vllm_max_num_seqs,
                 reserved_mib=s.vllm_reserved_mib, min_concurrency=s.vllm_min_concurrency)
    except PlanError as exc:
        _fail(f"model_repo={s.model_repo}: {exc}")

    free = host.get_fact(DiskFreeMib, path=s.data_root)
    size = size or int(p.weights_gib * 2**30)  # a hub that does not report sizes: the planner's estimate
    need = size / 2**20 + s.min_free_disk_gib * 1024
    ctx = Context(s, os_id, os_version, working_driver, module, p, commit, flavour, s.warnings() + p.warnings)
    if (s.gpu_host and os_id == "ubuntu") or s.driver_standin_archive:
        _kernel_modules(ctx, smi)
    if not host.get_fact(File, path=ctx.snapshot_marker) and free < need:
        _fail(f"{free} MiB free under {s.data_root}, the weights need {size / 2**20:.0f} MiB plus "
              f"min_free_disk_gib={s.min_free_disk_gib}: free disk space or move data_root")

    if host.get_fact(File, path="/var/run/reboot-required"):
        ctx.warnings.append("the host has a pending reboot (/var/run/reboot-required): llmhost reboots only for a "
                            "driver change; reboot when convenient")
    logger.info(f"{host.print_prefix}{p.table()}")
    for w in ctx.warnings:
        logger.warning(f"{host.print_prefix}warning: {w}")
    return ctx


def _kernel_modules(ctx: Context, smi: dict[str, Any]) -> None:
    """Which NVIDIA modules package fits the running kernel, whether that kernel still has a module, and whether
    the installed driver answers (every run: a driver from the debs must be the one loaded)."""
    s = ctx.s
    kernels = host.get_fact(KernelImages)
    ctx.running_kernel = kernels["running"]
    installed = host.get_fact(DpkgVersion, package=f"nvidia-utils-{s.nvidia_driver_branch}-server").split("-")[0]
    from_deb = bool(installed)
    if ctx.working_driver and not from_deb:
        return  # a working driver from elsewhere is left alone (see nvidia_driver)
    try:
        ctx.modules_package = versions.modules_package(s.nvidia_driver_branch, ctx.flavour, kernels["running"],
                                                       kernels["meta"], sorted(host.get_fact(DebPackages)))
    except ValueError as exc:
        _fail(str(exc))
    if from_deb and not host.get_fact(NvidiaModuleForKernel):
        ctx.kernel_missing_module = versions.abi_modules_package(s.nvidia_driver_branch, ctx.flavour,
                                                                 kernels["running"])
        ctx.warnings.append(f"the running kernel {kernels['running']} has no nvidia module (a kernel update without "
                            f"it): this run installs {ctx.kernel_missing_module} and loads it")
    elif from_deb and s.gpu_host and not s.driver_standin_archive:
        loaded = ctx.module.get("version")
        if smi["status"] != "ok":
            _fail(f"the {s.nvidia_driver_branch} driver {installed} is installed but nvidia-smi does not answer "
                  f"({(smi.get('error') or smi['status']).splitlines()[0]}): reboot the host to load it (after a "
                  "reboot: check Secure Boot and 'dmesg | grep -i nvidia'), then re-run")
        if loaded and loaded != installed:
            _fail(f"the loaded NVIDIA module is {loaded} but {installed} is installed: reboot the host to load the "
                  "installed one, then re-run")


@operation()
def skipped(reason: str):
    """A step that does not apply to this host: reported as a noop with its reason, never as done."""
    host.noop(reason)
    yield from ()


def gpu_step_applies(ctx: Context, step: str) -> bool:
    """GPU steps run only on Ubuntu GPU hosts; elsewhere they are reported as skipped (never as done)."""
    if step == "NVIDIA driver" and ctx.s.driver_standin_archive:
        return True  # TEST ONLY: the stand-in archive on the GPU-less Debian test host (named in its op names)
    if not ctx.s.gpu_host:
        skipped(name=f"{step} (skipped: gpu_host=False)", reason=f"gpu_host=False: no GPU, no {step} step")
        return False
    if not ctx.ubuntu:
        skipped(name=f"{step} (skipped: not Ubuntu)",
                reason=f"{ctx.os_id} {ctx.os_version}: llmhost installs {step} on Ubuntu only")
        return False
    return True
