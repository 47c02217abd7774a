"""nvidia-container-toolkit: signed-by repo, the four packages pinned together and held, and Docker's runtime
configured by ``nvidia-ctk`` (it merges daemon.json) with a Docker restart only when that file changed."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindInFile
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, server, systemd

from pyinfra.operations.util import any_changed

from operations.context import Context
from operations.shared_ops import gpu_step_applies, held, pinned_and_held, skipped

KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
BASE = "https://nvidia.github.io/libnvidia-container"
PACKAGES = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1"]


@deploy("NVIDIA container toolkit")
def ensure(ctx: Context):
    s = ctx.s
    if not gpu_step_applies(ctx, "Container toolkit"):
        return
    if s.driver_standin_archive:
        skipped(name="nvidia-container-toolkit repo (skipped: TEST ONLY stand-in archive)",
                reason="driver_standin_archive: the packages come from the stand-in archive")
    else:
        # pyinfra's own keyring and deb822 operations (the flat repository: suite "/", no components).
        key = apt.key(name="nvidia-container-toolkit signing key", src=f"{BASE}/gpgkey", dest=KEYRING,
                      _env=ctx.download_env)
        repo = apt.sources_file(name="nvidia-container-toolkit repo", filename="nvidia-container-toolkit",
                                types="deb", uris=f"{BASE}/stable/deb/amd64", suites="/", signed_by=KEYRING)
        apt.update(name="Refresh apt after adding the toolkit repo", _if=any_changed(repo, key))
    if s.container_toolkit_version:
        pinned_and_held(name=f"Container toolkit {s.container_toolkit_version} (four packages together, held)",
                        versions={p: s.container_toolkit_version for p in PACKAGES}, downgrade=True)
    else:
        apt.packages(name="Install the container toolkit (four packages together)", packages=PACKAGES,
                     no_recommends=True)
        held(name="Hold the container toolkit packages", packages=PACKAGES)
    if host.get_fact(Which, command="dockerd"):
        configure = server.shell(name="Docker: nvidia runtime (nvidia-ctk merges daemon.json)",
                                 commands=["nvidia-ctk runtime configure --runtime=docker"],
                                 _if=lambda: not host.get_fact(FindInFile, path="/etc/docker/daemon.json",
                                                               pattern='"nvidia"'))
        systemd.service(name="Restart Docker (daemon.json changed)", service="docker.service", restarted=True,
                        _if=configure.did_change)
    else:
        skipped(name="Docker runtime (skipped: no Docker)", reason="dockerd not installed: nothing to configure")
    files.directory(name="Toolkit config directory", path="/etc/nvidia-container-toolkit", present=True)
