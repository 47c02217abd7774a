"""The NVIDIA driver set on Ubuntu: which kernel boots next, which modules package follows it, and the one driver
version that kernel's module, the user space and the metapackages must share. Pure logic, no pyinfra import.

Ubuntu locks the driver to one upstream version (canonical/nvidia-graphics-drivers, debian/control of 580-server-noble;
REFERENCE §9): every per-kernel modules package depends on ``nvidia-kernel-common-580-server (<= X-1), (>= X)``, and
the headless metapackage on the same bounds plus ``(= version)`` libraries. Canonical builds a new kernel's modules
against the newest driver of the day, so a kernel, its module and the user space can only move together.

The policy (README "Kernel updates"): the kernel and modules metapackages and the user space are held, so
unattended-upgrades moves none of them; the deploy moves them together, to the newest kernel whose module is in the
archive at a driver version whose user space is there too, with one reboot. A kernel whose module is not published
yet waits (it is named), and the host keeps booting the kernel it has a module for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Kernel flavours Ubuntu builds NVIDIA modules for that llmhost installs (linux-restricted-modules); cloud kernels
# have their own metapackages and images.
CLOUD_FLAVOURS = ("aws", "azure", "gcp", "gke", "gkeop", "oracle", "ibm", "kvm", "nvidia", "oem")


def abi_key(abi: str) -> tuple:
    """The order GRUB's menu takes kernels in (grub-mkconfig sorts /boot/vmlinuz-* with ``sort -V``): runs of digits
    by number, the rest as text, so 6.8.0-100 follows 6.8.0-52 and 6.8.0-50-lowlatency follows 6.8.0-50-generic
    (the flavour counts: tests/test_driver_lifecycle.py checks this against GNU sort -V itself)."""
    return tuple((1, int(run), "") if run.isdigit() else (0, 0, run) for run in re.findall(r"\d+|\D+", abi))


def kernel_flavour(abi: str) -> str:
    """6.8.0-48-generic -> generic, 6.8.0-1019-aws -> aws."""
    return re.sub(r"^\d[\d.]*-\d+-", "", abi)


def check_kernel(abi: str) -> None:
    """Refuse a kernel llmhost has no modules path for (cloud kernels), with the fix."""
    flavour = kernel_flavour(abi)
    if flavour.split("-")[0] in CLOUD_FLAVOURS:
        raise ValueError(f"the kernel {abi} is a cloud kernel (-{flavour}): llmhost installs Ubuntu's NVIDIA modules "
                         "for generic / lowlatency kernels only. Install linux-image-generic (or "
                         "linux-image-generic-hwe-24.04), boot it, then re-run")


def kernel_metapackage(metas: dict[str, str], boot: str, running: str = "") -> str:
    """The linux-image metapackage of the kernel that boots next, chosen as ubuntu-drivers does
    (UbuntuDrivers/kerneldetection.py): of the installed metapackages that depend on that kernel's image, the one
    with the greatest name (linux-image-generic-hwe-24.04 over linux-image-generic-6.14, both on one kernel); else
    the running kernel's; else one of the running kernel's flavour. ``metas`` maps each installed linux-image-*
    metapackage to its kernel (KernelImages)."""
    for abi in (boot, running):
        same = sorted(m for m, image in metas.items() if image == abi and abi)
        if same:
            return same[-1]
    # neither kernel is a metapackage's own (the running one is older than its metapackage, and the one that boots
    # next was installed by hand, e.g. a lowlatency kernel): the metapackage of the running kernel's flavour
    same = sorted(m for m, image in metas.items() if image and kernel_flavour(image) == kernel_flavour(running))
    if running and same:
        return same[-1]
    found = ", ".join(f"{m} ({image or '?'})" for m, image in sorted(metas.items())) or "none"
    raise ValueError(f"no NVIDIA modules package matches the kernel {boot or running}: linux-image metapackages "
                     f"found: {found}. Install the metapackage of the kernel you boot (e.g. apt install "
                     "linux-image-generic-hwe-24.04 for an HWE kernel) or boot the kernel one of them installs, then "
                     "re-run")


def followed_metapackage(kernel_meta: str, metas: dict[str, str], running: str, branch: int, flavour: str,
                         archive: dict[str, list]) -> str:
    """The kernel metapackage the driver set follows: ``kernel_meta`` (the booting kernel's), unless the archive has
    no modules metapackage for it yet (the box just moved to HWE, or its series rolled, and the modules come a day
    late) while the running kernel's metapackage has one: then that one, so the installed set stays, the new kernel
    is named and its reboot withheld (was: apt asked for a package the archive does not have, the run failed)."""
    if archive.get(modules_package(branch, flavour, kernel_meta)) or not running:
        return kernel_meta
    served = {m: image for m, image in metas.items() if archive.get(modules_package(branch, flavour, m))}
    try:  # of those with modules: the running kernel's own, else one of its flavour
        return kernel_metapackage(served, running, running) if served else kernel_meta
    except ValueError:
        return kernel_meta


def modules_package(branch: int, flavour: str, kernel_meta: str) -> str:
    """linux-modules-nvidia-<branch>-server[-open]-<meta suffix>; linux-image-virtual's kernels are -generic ones and
    take the -generic modules (ubuntu-drivers, LP #2085962)."""
    suffix = re.sub(r"^virtual", "generic", kernel_meta.removeprefix("linux-image-"))  # -virtual-hwe-24.04 too
    return f"linux-modules-nvidia-{branch}-server{'-open' if flavour == 'open' else ''}-{suffix}"


def abi_modules_package(branch: int, flavour: str, abi: str) -> str:
    """The modules package built for exactly one kernel (what the modules metapackage depends on)."""
    return f"linux-modules-nvidia-{branch}-server{'-open' if flavour == 'open' else ''}-{abi}"


def userspace_packages(branch: int, flavour: str) -> list[str]:
    """The user-space driver: held, moved only by the deploy (a change under a loaded module breaks NVML)."""
    return [f"nvidia-headless-no-dkms-{branch}-server{'-open' if flavour == 'open' else ''}",
            f"nvidia-utils-{branch}-server"]


SERVER_UTILS = re.compile(r"^nvidia-utils-(\d+)-server$")
# Ubuntu's desktop driver ("Additional Drivers", `ubuntu-drivers install`): the non-server branch's metapackages, its
# DKMS sources or its prebuilt modules (linux-restricted-modules names them linux-modules-nvidia-<branch>[-open]-*).
DESKTOP_DRIVER = re.compile(r"^(nvidia-driver-\d+(-open)?|nvidia-utils-\d+|nvidia-dkms-\d+(-open)?|"
                            r"nvidia-headless(-no-dkms)?-\d+(-open)?|linux-modules-nvidia-\d+-(?!server)\S+)$")


# Any package of llmhost's -server driver, with its branch: user space, firmware, per-kernel modules and objects.
SERVER_PACKAGE = re.compile(r"^(?:nvidia|libnvidia|linux-modules-nvidia|linux-objects-nvidia)-.*?(\d{3})-server\b")


def other_branch(installed: list[str], branch: int) -> list[str]:
    """Installed packages of llmhost's -server driver of another branch. A branch change removes them in the apt
    call that installs the new set: left to itself, apt's resolver keeps the old kernel-common (more reverse
    dependencies: a module per installed kernel) and stops at the Conflicts ("generated breaks")."""
    return sorted(p for p in installed if (m := SERVER_PACKAGE.match(p)) and int(m.group(1)) != branch)


def server_branches(installed: list[str]) -> list[int]:
    """The -server driver branches whose user space is installed (llmhost's own, of any branch)."""
    return sorted({int(m.group(1)) for p in installed if (m := SERVER_UTILS.match(p))})


def desktop_driver(installed: list[str]) -> list[str]:
    """Installed packages of Ubuntu's desktop (non-server) NVIDIA driver, as `ubuntu-drivers install` leaves them."""
    return sorted(p for p in installed if DESKTOP_DRIVER.match(p))


def stale_holds(holds: list[str], keep: list[str]) -> list[str]:
    """Held NVIDIA driver packages that are not the wanted set's (another branch or flavour): they would block the
    change with "held broken packages". The container toolkit's holds are its own."""
    return [p for p in holds if re.match(r"(nvidia-|libnvidia-|linux-modules-nvidia-)", p) and "container" not in p
            and p not in keep]


def held_beside(kernel_meta: str, others: list[str], installed: dict[str, str],
                archive: dict[str, list[dict]]) -> list[str]:
    """The kernel metapackages held beside the booting kernel's (linux-generic beside -hwe-24.04): llmhost never
    moves them, so a newer version in the archive (an HWE series roll, a GA security kernel) is named, with the fix."""
    out = []
    for meta in others:
        newest = next((v["version"] for v in archive.get(meta, [])), "")
        if newest and installed.get(meta) and newest != installed[meta]:
            out.append(f"{meta} is held at {installed[meta]} beside {kernel_meta} (the kernel that boots): the "
                       f"archive has {newest}, which llmhost does not install (it moves only the booting kernel's "
                       f"metapackage); apt remove {meta} if that kernel is not used")
    return out


def image_of(depends: str) -> str:
    """The kernel a linux-image metapackage version depends on: 'linux-image-6.8.0-90-generic, linux-firmware' ->
    6.8.0-90-generic ('' when none)."""
    m = re.search(r"linux-image-(\d[^\s,|()]*)", depends)
    return m.group(1) if m else ""


def upstream(version: str) -> str:
    """580.126.20-0ubuntu0.24.04.2 -> 580.126.20."""
    return version.split(":")[-1].split("-")[0]


@dataclass
class DriverSet:
    """What the deploy installs and holds: ``pins`` (package -> exact version), the kernel that boots with them, the
    driver version they share, and what waits (kernels or drivers the archive has no coherent set for yet)."""
    pins: dict[str, str]
    boot: str
    driver: str
    waits: list[str] = field(default_factory=list)
    no_module: str = ""  # a kernel that would boot without an nvidia module (nothing in the archive fixes it)


def driver_set(branch: int, flavour: str, kernel_meta: str, next_boot: str, archive: dict[str, list[dict]],
               keep: tuple[str, ...] = (), installed: dict[str, str] | None = None) -> DriverSet | None:
    """The newest coherent set: a version of ``kernel_meta`` and of its modules metapackage for the same kernel, that
    kernel's module, and the user space at the driver version the module was built against. The kernel that boots
    is the newer of that kernel and ``next_boot`` (the newest installed image): it must have a module at that driver
    too. ``keep``: kernels (the running one) whose module is pinned at that driver too where the archive has it (a
    lost module comes back; the fallback kernel keeps one); where the archive has none, apt removes the old module
    with the move, and that is named in ``waits`` (the kernel stays bootable, without the GPU). ``archive`` maps
    package -> its versions in apt's order (newest first; AptVersions), each with its Depends.
    ``installed``: package -> installed version. Nothing moves backwards (Ubuntu's pockets keep one version per
    package, so an older one is usually gone, and a downgrade would take ``linux-generic`` with it): a kernel
    metapackage version older than the installed one is never a candidate, nor a set that would downgrade any
    package. When the installed kernel metapackage's own kernel has no module yet (a fully updated box inside the
    modules-a-day-late window), the set follows the running kernel, the metapackage stays where it is and the new
    kernel is named (``no_module``: its reboot is withheld).
    None when the archive says nothing of the kernel metapackage (apt lists not read yet)."""
    meta = modules_package(branch, flavour, kernel_meta)
    user = userspace_packages(branch, flavour)
    if not archive.get(kernel_meta) or not archive.get(meta):
        return None

    def module_at(abi: str, driver: str | None, exact: str | None = None) -> dict | None:
        for v in archive.get(abi_modules_package(branch, flavour, abi), []):
            m = re.search(rf"nvidia-kernel-common-{branch}-server \(>= ([^)]+)\)", v["depends"])
            if m and (exact is None or v["version"] == exact) and (driver is None or m.group(1) == driver):
                return {**v, "driver": m.group(1)}
        return None

    def userspace_at(driver: str) -> dict[str, str] | None:
        found = {p: next((v["version"] for v in archive.get(p, []) if upstream(v["version"]) == driver), None)
                 for p in user}
        return found if all(found.values()) else None

    installed = installed or {}

    def older(package: str, version: str) -> bool:
        """``version`` comes after the installed one in apt's order (newest first): installing it downgrades."""
        order = [v["version"] for v in archive.get(package, [])]
        have = installed.get(package)
        return have in order and version in order and order.index(version) > order.index(have)

    have_meta = installed.get(kernel_meta)
    candidates = [(image_of(kv["depends"]), kv["version"]) for kv in archive[kernel_meta]
                  if not older(kernel_meta, kv["version"])]
    if have_meta:  # the metapackage stays; the module set follows a kernel that has one (the running kernel)
        candidates += [(k, have_meta) for k in keep if k and k not in [abi for abi, _ in candidates]]
    waits: list[str] = []
    for abi, meta_version in candidates:
        mv = next((m for m in archive[meta]
                   if re.search(rf"{re.escape(abi_modules_package(branch, flavour, abi))} \(= ", m["depends"])), None)
        exact = re.search(r"\(= ([^)]+)\)", mv["depends"]).group(1) if mv else None
        module = module_at(abi, None, exact) if mv else None
        if not module:
            waits.append(f"kernel {abi} ({kernel_meta} {meta_version}) waits: the archive has no {meta} for it yet")
            continue
        space = userspace_at(module["driver"])
        if not space:
            waits.append(f"kernel {abi} waits: its module was built against driver {module['driver']}, whose user "
                         "space is not in the archive")
            continue
        pins = {kernel_meta: meta_version, meta: mv["version"], abi_modules_package(branch, flavour, abi):
                module["version"], **space}
        boot = max(abi, next_boot, key=abi_key) if next_boot else abi
        no_module = ""
        if boot != abi:  # a newer kernel installed without the metapackage: its module at the same driver, or none
            other = module_at(boot, module["driver"])
            if other:
                pins[abi_modules_package(branch, flavour, boot)] = other["version"]
            else:
                no_module = boot
        for k in keep:
            if k in (abi, boot):
                continue
            kept = module_at(k, module["driver"])
            if kept:
                pins[abi_modules_package(branch, flavour, k)] = kept["version"]
            elif k:
                waits.append(f"the kernel {k} loses its nvidia module with this move: the archive has none for it "
                             f"at driver {module['driver']} (it stays bootable, without the GPU, as a fallback)")
        down = sorted(p for p, v in pins.items() if older(p, v))
        if down:
            waits.append(f"kernel {abi} at driver {module['driver']} is not taken: it would downgrade "
                         f"{', '.join(down)}")
            continue
        newest_user = next((v["version"] for v in archive.get(user[1], [])), "")
        if newest_user and upstream(newest_user) != module["driver"]:
            waits.append(f"driver {upstream(newest_user)} waits: no module for kernel {abi} built against it yet")
        return DriverSet(pins, boot, module["driver"], waits, no_module)
    return DriverSet({}, next_boot, "", waits, next_boot)
