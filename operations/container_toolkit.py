"""nvidia-container-toolkit: signed-by repo, the four packages pinned together and held, and Docker's runtime
configured by ``nvidia-ctk`` (it merges daemon.json) with a Docker restart only when that file changed."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, FindInFile
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, server

from pyinfra.operations.util import any_changed

from operations.nvidia_driver import held
from operations.preflight import Context, gpu_step_applies, skipped

KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
BASE = "https://nvidia.github.io/libnvidia-container"
PACKAGES = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1"]


@deploy("NVIDIA container toolkit")
def ensure(ctx: Context):
    s = ctx.s
    if not gpu_step_applies(ctx, "Container toolkit"):
        return
    proxy = f"https_proxy={s.http_proxy} " if s.http_proxy else ""
    key = server.shell(name="nvidia-container-toolkit signing key",
                       commands=[f"{proxy}curl -fsSL {BASE}/gpgkey | gpg --dearmor -o {KEYRING}"],
                       _if=lambda: not host.get_fact(File, path=KEYRING))
    repo = apt.repo(name="nvidia-container-toolkit repo",
                    src=f"deb [signed-by={KEYRING}] {BASE}/stable/deb/$(ARCH) /",
                    filename="nvidia-container-toolkit")
    apt.update(name="Refresh apt after adding the toolkit repo", _if=any_changed(repo, key))
    pins = [f"{p}={s.container_toolkit_version}" for p in PACKAGES] if s.container_toolkit_version else PACKAGES
    apt.packages(name="Install the container toolkit (four packages together)", packages=pins,
                 no_recommends=True)
    held(name="Hold the container toolkit packages", packages=PACKAGES)
    if host.get_fact(Which, command="dockerd"):
        configure = server.shell(name="Docker: nvidia runtime (nvidia-ctk merges daemon.json)",
                                 commands=["nvidia-ctk runtime configure --runtime=docker"],
                                 _if=lambda: not host.get_fact(FindInFile, path="/etc/docker/daemon.json",
                                                               pattern='"nvidia"'))
        server.shell(name="Restart Docker (daemon.json changed)", commands=["systemctl restart docker"],
                     _if=configure.did_change)
    else:
        skipped(name="Docker runtime (skipped: no Docker)", reason="dockerd not installed: nothing to configure")
    files.directory(name="Toolkit config directory", path="/etc/nvidia-container-toolkit", present=True)
