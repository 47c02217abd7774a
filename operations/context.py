"""The shared context: what every component knows about one host, decided once by preflight, and the error that
stops a deploy before any change. Components import this, never the checker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.exceptions import DeployError

from operations.core.settings import Settings
from operations.core.tuning import Plan
from operations.core.driver_set import DriverSet
from operations.core.versions import FAMILIES, Family


def hf_snapshot(cache: str, repo: str, commit: str) -> str:
    """Where huggingface_hub puts repo@commit in the HF cache ``cache`` (the fetcher's layout)."""
    org, name = repo.split("/")
    return f"{cache}/models--{org}--{name}/snapshots/{commit}"


def completion_marker(directory: str, repo: str, commit: str) -> str:
    """The fetcher's marker for repo@commit: written only once every file is there, with the file list."""
    return f"{directory}/.complete-{repo.replace('/', '--')}-{commit}"


def snapshots_to_prune(snapshots: list[dict], keep: int, serving: tuple[str, str]) -> list[dict]:
    """The snapshots beyond ``keep``: the serving one (repo, commit) always stays and counts as one, then the most
    recently fetched others (markers' mtime)."""
    others = sorted((d for d in snapshots if (d["repo"], d["commit"]) != serving), key=lambda d: -d["mtime"])
    return others[max(keep - 1, 0):]


@dataclass(frozen=True)
class Api:
    """The OpenAI-compatible API that clients on a host use: its base URL (no /v1), the readiness path, and where its
    key is (a root-only env file and the variable in it)."""

    base: str
    health: str
    key_file: str
    key_var: str


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
    modules_package: str = ""  # the NVIDIA modules metapackage that follows kernel_meta
    kernel_meta: str = ""  # the linux-image metapackage of the kernel that boots next
    driver_set: DriverSet | None = None  # kernel, modules and user space at one driver version (None: apt knows none)
    running_kernel: str = ""
    kernel_missing_module: str = ""  # the ABI modules package to install when the running kernel has no nvidia.ko
    driver_from_deb: bool = False  # a -server driver of some branch is installed from Ubuntu's debs (llmhost's)
    other_kernel_metas: list = field(default_factory=list)  # installed kernel metapackages beside kernel_meta
    roles: frozenset = frozenset({"vllm", "webui"})  # from the inventory groups (operations/core/fleet.py)
    backends: list = field(default_factory=list)  # fleet.Backend: the vLLM hosts this UI host sends to
    clients: list = field(default_factory=list)  # other hosts' addresses this GPU host's vLLM admits
    family: Family = FAMILIES["other"]  # the model's family (tool-call parser), from its config.json

    @property
    def serves_vllm(self) -> bool:
        return "vllm" in self.roles

    @property
    def serves_webui(self) -> bool:
        return "webui" in self.roles

    @property
    def routed(self) -> bool:
        """This UI host sends to other hosts' vLLM: a router (LiteLLM) stands between Open WebUI and them."""
        return self.serves_webui and any(not b.local for b in self.backends)

    @property
    def ubuntu(self) -> bool:
        return self.os_id == "ubuntu"

    @property
    def models_dir(self) -> str:
        return f"{self.s.data_root}/models"

    @property
    def snapshot_path(self) -> str:
        return hf_snapshot(f"{self.models_dir}/hub", self.s.model_repo, self.model_commit)

    @property
    def api(self) -> Api:
        """What Open WebUI and the probe talk to here: the router on a routed UI host, else this host's vLLM."""
        s = self.s
        if self.routed:
            return Api(f"http://127.0.0.1:{s.router_port}", "/health/liveliness", f"{s.config_root}/router.secret.env",
                       "LITELLM_MASTER_KEY")
        return Api(f"http://{self.connect(s.vllm_host)}:{s.vllm_port}", "/health", f"{s.config_root}/vllm.secret.env",
                   "VLLM_API_KEY")

    @property
    def tools(self) -> str:
        return f"{self.s.install_root}/tools"

    @property
    def uv(self) -> str:
        return f"{self.tools}/bin/uv"

    @property
    def fetcher(self) -> str:
        return f"{self.s.install_root}/bin/llmhost-fetch-model"

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
        return completion_marker(self.models_dir, self.s.model_repo, self.model_commit)
