"""The CUDA toolkit (default 12.1), side by side with whatever CUDA the host already has.

Ubuntu 22.04: NVIDIA's repo (cuda-keyring, checked by dpkg-query) and ``cuda-toolkit-12-1`` (never ``cuda-12-1``,
which pulls the newest driver). Ubuntu 24.04 has no 12.1 packages: NVIDIA's 12.1.1 runfile, fetched by pyinfra's
``files.download`` against the pinned ``cuda_runfile_sha256`` (through the proxy), installed with
``--toolkit --silent`` into /usr/local/cuda-12.1; a marker written only on success ends the download/install pair.
PATH / LD_LIBRARY_PATH come from /etc/profile.d/llmhost-cuda.sh.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from operations.context import Context
from operations.core.boundary import shell_all
from operations.shared_ops import gpu_step_applies, skipped

REPO = "https://developer.download.nvidia.com/compute/cuda/repos/{dist}/x86_64"


@deploy("CUDA toolkit")
def ensure(ctx: Context):
    s = ctx.s
    if not gpu_step_applies(ctx, "CUDA toolkit"):
        return
    if s.cuda_version == "none":
        skipped(name="CUDA toolkit (skipped: cuda_version=none)", reason="cuda_version=none")
        return
    dashed = s.cuda_version.replace(".", "-")
    prefix = f"/usr/local/cuda-{s.cuda_version}"
    if ctx.os_version == "22.04":
        dist = "ubuntu2204"
        keyring = apt.deb(name="NVIDIA CUDA repo keyring", src=f"{REPO.format(dist=dist)}/cuda-keyring_1.1-1_all.deb",
                          _if=lambda: "cuda-keyring" not in host.get_fact(DebPackages))
        apt.update(name="Refresh apt after adding the CUDA repo", _if=keyring.did_change)
        apt.packages(name=f"Install cuda-toolkit-{dashed} (no driver)", packages=[f"cuda-toolkit-{dashed}"],
                     no_recommends=True)
    elif host.get_fact(File, path=f"{prefix}/.llmhost-runfile"):
        skipped(name=f"CUDA {s.cuda_version} from NVIDIA's runfile (installed)",
                reason=f"CUDA {s.cuda_version} already installed at {prefix} from the runfile")
    else:
        cache = "/var/cache/llmhost"
        run = f"{cache}/{s.cuda_runfile_url.rsplit('/', 1)[1]}"
        files.directory(name=f"Download cache {cache}", path=cache, user="root", group="root", mode="700")
        files.download(name=f"Install CUDA {s.cuda_version} from NVIDIA's runfile (no {dashed} debs on {ctx.os_id} "
                            f"{ctx.os_version})", src=s.cuda_runfile_url, dest=run, sha256sum=s.cuda_runfile_sha256,
                       proxy=s.http_proxy or None, temp_dir=cache, _env=ctx.download_env)
        # --override: the 12.1 installer refuses gcc > 12 (Ubuntu 24.04 ships 13); a toolkit-only install needs no
        # gcc. The marker is written only when nvcc is there; the 4 GB runfile is removed after.
        server.shell(name=f"Run the CUDA {s.cuda_version} runfile (toolkit only, into {prefix})", commands=[
            shell_all(["sh", run, "--toolkit", "--silent", "--override", "--no-man-page", f"--toolkitpath={prefix}",
                       f"--tmpdir={cache}"], ["test", "-x", f"{prefix}/bin/nvcc"],
                      ["touch", f"{prefix}/.llmhost-runfile"], ["rm", "-f", run])])
    files.put(create_remote_dir=False, name="CUDA on PATH for login shells",
              src=StringIO(f"# llmhost\nexport PATH={prefix}/bin${{PATH:+:$PATH}}\n"
                           f"export LD_LIBRARY_PATH={prefix}/lib64${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n"),
              dest="/etc/profile.d/llmhost-cuda.sh", mode="644")
