"""A local apt archive of named STAND-IN packages for the driver lifecycle (issue 9), built with Debian's own tools.

They carry Ubuntu's package names, versions and dependency structure for the 580-server branch (and a 595 one):
user-space packages, per-kernel-ABI module packages holding a placeholder nvidia.ko under /lib/modules/<abi>/, the
linux-modules-nvidia-* metapackages (GA -generic and HWE -generic-hwe-24.04), kernel image ABI packages and the
linux-image-generic / -generic-hwe-24.04 metapackages. Nothing in them is NVIDIA's or Ubuntu's code: each .deb holds
a text file saying it is a stand-in. dpkg-deb builds them, apt-ftparchive indexes them (Origin: llmhost-standin, so
unattended-upgrades can be pointed at it). Served over HTTP on the test host's gateway so apt goes through the proxy.

Pedigree: names and the metapackage -> per-ABI -> kernel image structure follow Ubuntu's packages as read from
canonical/nvidia-graphics-drivers and linux-restricted-modules (REFERENCE §3, §8, §9); apt, dpkg and Debian's
unattended-upgrades are the real ones. Known gap (issue 18, open): Ubuntu's version locks are not carried yet (the
headless metapackage's `nvidia-kernel-common-580-server (<= X-1), (>= X)` bounds, the `(= version)` libs, the
per-version firmware package, the virtual `nvidia-kernel-common-580-server-X`), so these stand-ins accept
combinations Ubuntu's archive would refuse. The CUDA runfile stand-in (RUNFILE) copies one behaviour of NVIDIA's
12.1.1 runfile: it refuses gcc newer than 12 without --override (REFERENCE §8).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

NOTE = "llmhost stand-in package (tests/aptarchive.py): not NVIDIA's or Ubuntu's code\n"


def deb(pool: Path, name: str, version: str, depends: str = "", conflicts: str = "", files: dict | None = None,
        provides: str = "") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "DEBIAN").mkdir()
        control = [f"Package: {name}", f"Version: {version}", "Architecture: all", "Maintainer: llmhost tests <t@t>",
                   "Section: misc", "Priority: optional", f"Description: stand-in for {name}"]
        if depends:
            control.insert(3, f"Depends: {depends}")
        if conflicts:
            control.insert(3, f"Conflicts: {conflicts}\nReplaces: {conflicts}")
        if provides:
            control.insert(3, f"Provides: {provides}")
        (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        for path, text in {f"usr/share/doc/{name}/STAND-IN": NOTE, **(files or {})}.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(root), str(pool / f"{name}_{version}_all.deb")],
                       check=True, capture_output=True)


def kernel(pool: Path, abi: str, version: str) -> None:
    deb(pool, f"linux-image-{abi}", version, files={f"lib/modules/{abi}/STAND-IN-KERNEL": NOTE})


def driver(pool: Path, branch: int, nv: str, abis: dict[str, str], metas: dict[str, str]) -> None:
    """User space at nv, one module package per kernel ABI (abi -> kernel version) and the metapackages
    (meta flavour suffix -> the ABI it follows)."""
    other = 595 if branch == 580 else 580
    deb(pool, f"nvidia-kernel-common-{branch}-server", nv, conflicts=f"nvidia-kernel-common-{other}-server")
    deb(pool, f"nvidia-headless-no-dkms-{branch}-server-open", nv, depends=f"nvidia-kernel-common-{branch}-server",
        conflicts=f"nvidia-headless-no-dkms-{other}-server-open")
    deb(pool, f"nvidia-utils-{branch}-server", nv, conflicts=f"nvidia-utils-{other}-server",
        files={"usr/share/llmhost-standin/nvidia-utils-version": nv + "\n"})
    short = nv.split("-")[0]
    for abi, kver in abis.items():
        deb(pool, f"linux-modules-nvidia-{branch}-server-open-{abi}", f"{kver}+{short}",
            depends=f"linux-image-{abi}, nvidia-kernel-common-{branch}-server (>= {short})",
            files={f"lib/modules/{abi}/kernel/nvidia-{branch}srv/nvidia.ko": f"stand-in nvidia.ko {short}\n"})
    for suffix, abi in metas.items():
        deb(pool, f"linux-modules-nvidia-{branch}-server-open-{suffix}", f"{abis[abi]}+{short}",
            depends=f"linux-modules-nvidia-{branch}-server-open-{abi} (= {abis[abi]}+{short})")


def index(archive: Path) -> None:
    """Packages + Release with apt-ftparchive (flat repository: `deb [trusted=yes] URL ./`)."""
    packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=archive, check=True, capture_output=True,
                              text=True).stdout
    (archive / "Packages").write_text(packages)
    release = subprocess.run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=llmhost-standin",
                              "-o", "APT::FTPArchive::Release::Label=llmhost-standin",
                              "-o", "APT::FTPArchive::Release::Suite=llmhost-standin", "release", "."],
                             cwd=archive, check=True, capture_output=True, text=True).stdout
    (archive / "Release").write_text(release)


TOOLKIT = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
           "libnvidia-container1"]


def container_toolkit(pool: Path, version: str) -> None:
    """The four packages, each depending on the others at exactly the same version (they move together)."""
    for name in TOOLKIT:
        others = ", ".join(f"{o} (= {version})" for o in TOOLKIT if o != name and o != "nvidia-container-toolkit")
        deb(pool, name, version, depends=others if name == "nvidia-container-toolkit" else "")


RUNFILE = """#!/bin/sh
# llmhost STAND-IN for NVIDIA's CUDA 12.1.1 runfile (tests/aptarchive.py): not NVIDIA's code. Like the real one it
# refuses gcc newer than 12 unless --override is given, and with --toolkit installs into --toolkitpath.
for a in "$@"; do case "$a" in --toolkitpath=*) p=${a#--toolkitpath=};; esac; done
case " $* " in *" --override "*) ;; *) echo "Failed to verify gcc version. See log (stand-in)"; exit 1;; esac
[ -n "$p" ] || exit 2
mkdir -p "$p/bin" && printf '#!/bin/sh\necho "Cuda compilation tools, release 12.1 (stand-in)"\n' > "$p/bin/nvcc"
chmod 755 "$p/bin/nvcc"
"""


def cuda_runfile(root: Path) -> tuple[str, str]:
    """NVIDIA's layout: <root>/cuda/12.1.1/local_installers/<runfile>. Returns the runfile's path under root (the
    URL path) and its sha256 (the stand-in's, for cuda_runfile_sha256)."""
    import hashlib

    name = "cuda_12.1.1_530.30.02_linux.run"
    run = root / "cuda/12.1.1/local_installers" / name
    run.parent.mkdir(parents=True, exist_ok=True)
    run.write_text(RUNFILE)
    return f"cuda/12.1.1/local_installers/{name}", hashlib.sha256(RUNFILE.encode()).hexdigest()
