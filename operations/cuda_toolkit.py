"""The CUDA toolkit (default 12.1), side by side with whatever CUDA the host already has.

Ubuntu 22.04: NVIDIA's repo (cuda-keyring, checked by dpkg-query) and ``cuda-toolkit-12-1`` (never ``cuda-12-1``,
which pulls the newest driver). Ubuntu 24.04 has no 12.1 packages: NVIDIA's 12.1.1 runfile, verified against
NVIDIA's published md5sum list (and ``cuda_runfile_sha256`` when set), installed with ``--toolkit --silent`` into
/usr/local/cuda-12.1. PATH / LD_LIBRARY_PATH come from /etc/profile.d/llmhost-cuda.sh.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.operations import apt, files

from operations.context import Context
from operations.shared_ops import gpu_step_applies, skipped

REPO = "https://developer.download.nvidia.com/compute/cuda/repos/{dist}/x86_64"


@operation()
def runfile_toolkit(version: str, url: str, prefix: str, sha256: str | None = None, proxy_env: str = ""):
    """Ensure the toolkit from NVIDIA's runfile is installed at ``prefix`` (marker written only on success)."""
    marker = f"{prefix}/.llmhost-runfile"
    if host.get_fact(File, path=marker):
        host.noop(f"CUDA {version} already installed at {prefix} from the runfile")
        return
    name = url.rsplit("/", 1)[1]
    md5_url = url.split("/local_installers/")[0] + "/docs/sidebar/md5sum.txt"
    run = f"/var/cache/llmhost/{name}"
    # NVIDIA publishes an md5 list beside the installers; the line naming this runfile holds its md5.
    checks = [f"md5=$(curl -fsSL {shlex.quote(md5_url)} | grep -F {name} | grep -oE '[0-9a-f]{{32}}' | head -n1) && "
              f"[ -n \"$md5\" ] && echo \"$md5  {run}\" | md5sum -c -"]
    if sha256:
        checks.append(f"echo '{sha256}  {run}' | sha256sum -c -")
    # proxy_env is "export ...;": every curl of the command (also the one inside $(...)) sees the proxy and CA.
    yield (f"{proxy_env}mkdir -p /var/cache/llmhost && curl -fL --retry 3 -C - -o {run} {shlex.quote(url)} && "
           + " && ".join(f"({c})" for c in checks))
    # --override: the 12.1 installer refuses gcc > 12 (Ubuntu 24.04 ships 13); a toolkit-only install needs no gcc.
    yield (f"sh {run} --toolkit --silent --override --no-man-page --toolkitpath={prefix} --tmpdir=/var/cache/llmhost && "
           f"test -x {prefix}/bin/nvcc && touch {marker} && rm -f {run}")


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
    else:
        proxy = "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(ctx.download_env.items())
                        if k.lower() in ("http_proxy", "https_proxy", "no_proxy") or k == "SSL_CERT_FILE")
        proxy += f"export CURL_CA_BUNDLE={shlex.quote(s.ca_bundle)}; " if s.ca_bundle else ""
        runfile_toolkit(name=f"Install CUDA {s.cuda_version} from NVIDIA's runfile (no {dashed} debs on "
                             f"{ctx.os_id} {ctx.os_version})",
                        version=s.cuda_version, url=s.cuda_runfile_url, prefix=prefix, sha256=s.cuda_runfile_sha256,
                        proxy_env=proxy)
    files.put(create_remote_dir=False, name="CUDA on PATH for login shells",
              src=StringIO(f"# llmhost\nexport PATH={prefix}/bin${{PATH:+:$PATH}}\n"
                           f"export LD_LIBRARY_PATH={prefix}/lib64${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n"),
              dest="/etc/profile.d/llmhost-cuda.sh", mode="644")
