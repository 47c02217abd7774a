"""A local apt archive of named STAND-IN packages for the driver lifecycle (issues 9, 18), built with Debian's own tools.

Derived from Ubuntu's real control data, so names, versions and Depends / Provides / Conflicts / Replaces / Breaks are
Ubuntu's:
- the driver's packages are generated from debian/control of canonical/nvidia-graphics-drivers, branches
  580-server-noble (commit 24d7353e, 580.126.20-0ubuntu0.24.04.2) and 595-server-noble (c505fea2, 595.58.03), and
  for Ubuntu's desktop driver ("Additional Drivers") 580-noble (2eed1444, 580.142-0ubuntu0.24.04.1), kept in
  tests/fixtures/ubuntu/: the closure of nvidia-headless-no-dkms-<branch>-server[-open] and nvidia-utils (the
  desktop's: of nvidia-driver-<branch>[-open], what `ubuntu-drivers install` asks apt for), with the
  upstream version, ${binary:Version} and ${source:Version} put in for the version published; ${...:Depends} and
  :i386 relations dropped (dpkg fills them from the binaries), and Depends on packages outside the closure
  (adduser, ocl-icd-libopencl1) dropped. So the headless metapackage depends on
  `nvidia-kernel-common-580-server (<= X-1), nvidia-kernel-common-580-server (>= X)` and `(= version)` libraries,
  nvidia-utils on the virtual `nvidia-kernel-common-580-server-X`, kernel-common on `nvidia-firmware-580-server-X`.
- the kernel side in the shapes of linux-restricted-modules as apt shows them (REFERENCE §9): a per-kernel modules
  package `linux-modules-nvidia-580-server[-open]-<abi>` on `linux-image-<abi> | linux-image-unsigned-<abi>` and
  the kernel-common bounds of the driver it was built against (the proprietary one also on
  `linux-objects-nvidia-580-server-<abi>` and `linux-signatures-nvidia-<abi>` (= version)); the flavour metapackage
  (-generic, -generic-hwe-24.04, ...) on the per-kernel one (= version); kernel images with /boot/vmlinuz-<abi>;
  linux-image-* metapackages on one image each (GA, HWE, virtual, a versioned one).

Nothing in them is NVIDIA's or Ubuntu's code: each .deb holds a text file saying it is a stand-in, and the
module package's nvidia.ko is a text file naming the driver version it was "built" against (the proprietary one is
linked from objects + signature on a real box; here it is in the package). dpkg-deb builds them, apt-ftparchive
indexes them (Origin: llmhost-standin; a pocket per directory, so unattended-upgrades can be pointed at
-security only, as Ubuntu's default is). Served over HTTP on the test host's gateway so apt goes through the proxy.
The CUDA runfile stand-in (RUNFILE) copies one behaviour of NVIDIA's 12.1.1 runfile: it refuses gcc newer than 12
without --override (REFERENCE §8).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

NOTE = "llmhost stand-in package (tests/aptarchive.py): not NVIDIA's or Ubuntu's code\n"


def deb(pool: Path, name: str, version: str, depends: str = "", conflicts: str = "", files: dict | None = None,
        provides: str = "", fields: dict | None = None) -> None:
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
        for key, value in (fields or {}).items():
            control.insert(3, f"{key}: {value}")
        (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        for path, text in {f"usr/share/doc/{name}/STAND-IN": NOTE, **(files or {})}.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(root), str(pool / f"{name}_{version}_all.deb")],
                       check=True, capture_output=True)


def kernel(pool: Path, abi: str, version: str) -> None:
    """A kernel image (/boot/vmlinuz-<abi>) and its headers as Ubuntu splits them: linux-headers-<abi> on the
    source's common headers (linux-headers-6.8.0-61 for -generic, linux-lowlatency-headers-6.8.0-61 for lowlatency)."""
    deb(pool, f"linux-image-{abi}", version, files={f"boot/vmlinuz-{abi}": NOTE,
                                                   f"lib/modules/{abi}/STAND-IN-KERNEL": NOTE})
    common, flavour = abi.rsplit("-", 1)
    common = f"linux-{flavour}-headers-{common}" if flavour == "lowlatency" else f"linux-headers-{common}"
    deb(pool, common, version, files={f"usr/src/{common}/STAND-IN": NOTE})
    deb(pool, f"linux-headers-{abi}", version, depends=common, files={f"usr/src/linux-headers-{abi}/STAND-IN": NOTE})


def kernel_meta(pool: Path, flavour: str, version: str, abi: str, fields: dict | None = None) -> None:
    """Ubuntu's linux-meta at ``version`` for ``flavour`` (generic, generic-hwe-24.04): linux-image-<flavour> on one
    kernel image, linux-headers-<flavour> on its headers, and linux-<flavour> (what a default install has) on both
    (= version); ``fields`` for each (Phased-Update-Percentage)."""
    deb(pool, f"linux-image-{flavour}", version, depends=f"linux-image-{abi}", fields=fields)
    deb(pool, f"linux-headers-{flavour}", version, depends=f"linux-headers-{abi}", fields=fields)
    deb(pool, f"linux-{flavour}", version, fields=fields,
        depends=f"linux-image-{flavour} (= {version}), linux-headers-{flavour} (= {version})")


CONTROLS = Path(__file__).parent / "fixtures" / "ubuntu"
RELATIONS = ("Depends", "Provides", "Conflicts", "Replaces", "Breaks")


def stanzas(branch: int, server: bool = True) -> list[dict[str, str]]:
    """debian/control of nvidia-graphics-drivers-<branch>[-server] (noble) as {field: value} per package."""
    text = (CONTROLS / f"nvidia-graphics-drivers-{branch}{'-server' if server else ''}-noble.control").read_text()
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in " \t" and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Package" in fields:
            out.append(fields)
    return out


def driver(pool: Path, branch: int, version: str, flavour: str = "open", server: bool = True) -> None:
    """The user space of ``branch`` at ``version`` (e.g. 580.95.05-0ubuntu0.24.04.1) from Ubuntu's control data;
    ``server=False``: the desktop driver's (nvidia-driver-<branch>[-open] and what it depends on, DKMS included)."""
    nv = version.split("-")[0]
    packages = stanzas(branch, server)
    srv = "-server" if server else ""
    old = next(re.match(rf"nvidia-firmware-{branch}{srv}-(\S+)", p["Package"]).group(1) for p in packages
               if p["Package"].startswith(f"nvidia-firmware-{branch}{srv}-"))

    def subst(value: str) -> str:
        return (value.replace("${binary:Version}", version).replace("${source:Version}", version)
                .replace(old, nv))

    by_name = {subst(p["Package"]): p for p in packages}
    provided = {re.sub(r"\s*\(.*", "", v.strip()) for p in packages for v in subst(p.get("Provides", "")).split(",")}
    open_ = "-open" if flavour == "open" else ""
    want = ([f"nvidia-headless-no-dkms-{branch}-server{open_}", f"nvidia-utils-{branch}-server"] if server
            else [f"nvidia-driver-{branch}{open_}"])
    built: dict[str, dict[str, str]] = {}
    while want:
        name = want.pop()
        if name in built or name not in by_name:
            continue
        rel = {}
        for key in RELATIONS:
            items = []
            for item in subst(by_name[name].get(key, "")).split(","):
                item = item.strip()
                if not item or "${" in item or ":i386" in item:
                    continue
                item = re.sub(r"\s*\[[^]]*\]", "", item)
                target = re.sub(r"\s*\(.*", "", item)
                if key == "Depends" and target not in by_name and target not in provided:
                    continue  # outside the closure (adduser, ocl-icd-libopencl1): not what decides the outcome
                items.append(item)
                if key == "Depends":
                    want.append(target)
            if items:
                rel[key] = ", ".join(items)
        built[name] = rel
    for name, rel in built.items():
        files = {"usr/share/llmhost-standin/nvidia-utils-version": nv + "\n"} if name.startswith("nvidia-utils-") else {}
        deb(pool, name, version, files=files, fields=rel)


def modules(pool: Path, branch: int, version: str, abi: str, kver: str, metas: tuple[str, ...] = (),
            flavour: str = "open", server: bool = True) -> None:
    """One kernel's NVIDIA modules built against driver ``version`` (linux-restricted-modules' shapes), package
    version ``kver`` (a respin for a new driver gets a new one), and the flavour metapackages that follow that kernel;
    ``server=False``: the desktop driver's (linux-modules-nvidia-<branch>[-open]-*, its nvidia.ko under nvidia-<branch>)."""
    nv = version.split("-")[0]
    srv = "-server" if server else ""
    name = f"linux-modules-nvidia-{branch}{srv}{'-open' if flavour == 'open' else ''}"
    bounds = f"nvidia-kernel-common-{branch}{srv} (<= {nv}-1), nvidia-kernel-common-{branch}{srv} (>= {nv})"
    image = f"linux-image-{abi} | linux-image-unsigned-{abi}"
    if flavour == "open":
        deps = f"{image}, {bounds}"
    else:
        deb(pool, f"linux-objects-nvidia-{branch}{srv}-{abi}", kver, depends=image)
        deb(pool, f"linux-signatures-nvidia-{abi}", kver, depends=image)
        deps = (f"{image}, linux-signatures-nvidia-{abi} (= {kver}), linux-objects-nvidia-{branch}{srv}-{abi} "
                f"(= {kver}), {bounds}")
    deb(pool, f"{name}-{abi}", kver, depends=deps,
        files={f"lib/modules/{abi}/kernel/nvidia-{branch}{'srv' if server else ''}/nvidia.ko": f"stand-in nvidia.ko {nv}\n"})
    for suffix in metas:
        deb(pool, f"{name}-{suffix}", kver, depends=f"{name}-{abi} (= {kver})")


def index(archive: Path, suite: str = "llmhost-standin") -> None:
    """Packages + Release with apt-ftparchive (flat repository: `deb [trusted=yes] URL ./`); ``suite`` names the
    pocket (unattended-upgrades matches origin and suite)."""
    archive.mkdir(parents=True, exist_ok=True)
    packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=archive, check=True, capture_output=True,
                              text=True).stdout
    (archive / "Packages").write_text(packages)
    release = subprocess.run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=llmhost-standin",
                              "-o", "APT::FTPArchive::Release::Label=llmhost-standin",
                              "-o", f"APT::FTPArchive::Release::Suite={suite}", "release", "."],
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
