"""The shared context: what every component knows about one host, decided once by preflight, and the error that
stops a deploy before any change. Components import this, never the checker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.exceptions import DeployError

from operations.settings import Settings
from operations.tuning import Plan


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
    roles: frozenset = frozenset({"vllm", "webui"})  # from the inventory groups (operations/fleet.py)
    backends: list = field(default_factory=list)  # fleet.Backend: the vLLM hosts this UI host sends to
    clients: list = field(default_factory=list)  # other hosts' addresses this GPU host's vLLM admits

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
        org, name = self.s.model_repo.split("/")
        return f"{self.models_dir}/hub/models--{org}--{name}/snapshots/{self.model_commit}"

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
        return f"{self.models_dir}/.complete-{self.s.model_repo.replace('/', '--')}-{self.model_commit}"
