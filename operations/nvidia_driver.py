"""The NVIDIA driver: a pinned branch from Ubuntu's archive, prebuilt signed modules; the kernel, its modules and
the user space held and moved together by the deploy (operations/core/driver_set.py says why), kept out of
unattended-upgrades, nouveau blacklisted; reboot only when the set moved."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, server

from operations.context import Context
from operations.core.boundary import shell_line
from operations.facts import AptHolds, DpkgVersion
from operations.shared_ops import gpu_step_applies, held, moves, pinned_and_held, skipped
from operations.core.driver_set import other_branch, stale_holds, userspace_packages

UNATTENDED_BLACKLIST = """// llmhost: driver, CUDA and container-toolkit upgrades must go through the deploy (a user-space
// driver upgrade under a loaded module gives "Driver/library version mismatch"; a kernel's NVIDIA
// modules are built against one driver version, so kernel, modules and driver move together).
// The kernel and modules metapackages and the driver's user space are also held (apt-mark showhold).
Unattended-Upgrade::Package-Blacklist {
    "nvidia-";
    "libnvidia-";
    "cuda-";
    "linux-modules-nvidia-";
    "linux-objects-nvidia-";
    "linux-signatures-nvidia-";
};
"""

NOUVEAU_BLACKLIST = "# llmhost: the NVIDIA driver owns the card\nblacklist nouveau\noptions nouveau modeset=0\n"


def driver_check(utils_package: str) -> str:
    """Right after the reboot: nvidia-smi answers and the loaded module is the installed package's version; else
    stop here with what was found, before 5 GB of weights and a 900 s service timeout would show it."""
    return ("loaded=$(sed -n 's/^NVRM version:.*  \\([0-9][0-9.]*\\)  .*/\\1/p' /proc/driver/nvidia/version "
            f"2>/dev/null); installed=$(dpkg-query -W -f='${{Version}}' {utils_package} | cut -d- -f1); "
            "if nvidia-smi -L >/dev/null 2>&1 && [ \"$loaded\" = \"$installed\" ]; then exit 0; fi; "
            "echo \"the NVIDIA driver does not answer after the reboot: loaded module ${loaded:-none}, installed "
            "$installed, nvidia-smi: $(nvidia-smi -L 2>&1 | head -1). Check Secure Boot and 'dmesg | grep -i "
            "nvidia', then re-run\" >&2; exit 1")


def loaded_module_differs(ctx: Context, package: str):
    """At execution time (after the install): does the loaded module differ from the installed package, or does
    another kernel than the running one boot with it?"""

    def check() -> bool:
        dset = ctx.driver_set  # the set pins the user space at exactly its driver version
        installed = dset.driver if dset and dset.pins else host.get_fact(DpkgVersion, package=package).split("-")[0]
        boot = ctx.driver_set.boot if ctx.driver_set else ctx.running_kernel
        flavour = ctx.module.get("flavour")  # proprietary -> open at the same version is a new module too
        return installed != ctx.module.get("version") or boot != ctx.running_kernel or bool(
            flavour and flavour != ctx.flavour)

    return check


@deploy("NVIDIA driver")
def ensure(ctx: Context):
    s = ctx.s
    if not gpu_step_applies(ctx, "NVIDIA driver"):
        return
    user = userspace_packages(s.nvidia_driver_branch, ctx.flavour)
    packages = [*user, ctx.modules_package]
    hold = [ctx.kernel_meta, *ctx.other_kernel_metas, ctx.modules_package, *user]
    present = host.get_fact(DebPackages)
    from_deb = any(p in present for p in packages) or ctx.driver_from_deb
    if ctx.working_driver and not from_deb:
        skipped(name="NVIDIA driver (left alone)",
                reason=f"driver {ctx.working_driver} ({ctx.module.get('flavour', '?')} module) is loaded and new "
                       f"enough for vLLM {s.vllm_version}; it was not installed from a deb, so llmhost leaves it alone")
        return

    if s.driver_standin_archive:
        standin = files.put(create_remote_dir=False, name="TEST ONLY: stand-in NVIDIA archive (tests/aptarchive.py)",
                            src=StringIO(f"deb [trusted=yes] {s.driver_standin_archive} ./\n"),
                            dest="/etc/apt/sources.list.d/llmhost-standin.list", mode="644")
        apt.update(name="Refresh apt (stand-in archive changed)", _if=standin.did_change)
    files.put(create_remote_dir=False, name="Keep NVIDIA/CUDA out of unattended-upgrades", src=StringIO(UNATTENDED_BLACKLIST),
              dest="/etc/apt/apt.conf.d/51llmhost-nvidia", mode="644")
    files.put(create_remote_dir=False, name="Blacklist nouveau", src=StringIO(NOUVEAU_BLACKLIST),
              dest="/etc/modprobe.d/llmhost-blacklist-nouveau.conf", mode="644")
    other = stale_holds(host.get_fact(AptHolds), hold)
    if other:  # held packages cannot be replaced: apt would stop with "held broken packages"
        server.shell(name=f"Release the holds of the previous driver branch or flavour ({len(other)} packages)",
                     commands=[shell_line(["apt-mark", "unhold", *other])])
    dset = ctx.driver_set
    # packages change (a set that only gains holds moves nothing: no reboot for that)
    moved = moves(dset.pins) if dset else True
    if dset:
        install = pinned_and_held(
            name=f"Kernel {dset.boot}, its {ctx.flavour} modules and the {s.nvidia_driver_branch} driver "
                 f"{dset.driver} together (held)", versions=dset.pins, hold=hold,
            auto=[p for p in dset.pins if p.startswith("linux-modules-nvidia-") and p != ctx.modules_package],
            remove=other_branch(list(host.get_fact(DebPackages)), s.nvidia_driver_branch))  # a branch change
    else:  # apt has not read an archive with these packages yet (a fresh box): the newest set, then held
        install = apt.packages(name=f"Install the {s.nvidia_driver_branch} driver ({ctx.flavour} modules: "
                                    f"{ctx.modules_package})", packages=packages, no_recommends=True,
                               update=any(p not in present for p in packages), cache_time=3600)
        held(name="Hold the kernel and modules metapackages and the user-space driver", packages=hold)
    if ctx.kernel_missing_module:
        # The running kernel lost its module (a kernel update without it): the set above pins it back; without a
        # set, install the package built for exactly this kernel. Load it: no reboot is needed for that.
        repair = install if dset else apt.packages(
            name=f"Install the nvidia module for the running kernel {ctx.running_kernel}",
            packages=[ctx.kernel_missing_module], no_recommends=True, update=True, cache_time=3600)
        if not s.driver_standin_archive:
            server.shell(name="Load the nvidia module", commands=["modprobe nvidia"], _if=repair.did_change)
    if s.driver_standin_archive:
        skipped(name="Load / reboot (skipped: TEST ONLY stand-in archive)",
                reason="driver_standin_archive: a container cannot load kernel modules or boot another kernel")
    elif s.nvidia_reboot:
        if dset and dset.no_module:
            skipped(name="Reboot (withheld)", reason=f"the kernel {dset.no_module} would boot without an nvidia "
                                                     "module: reboot by hand after removing it or once its module is in")
            return
        reboot = server.reboot(name="Reboot into the new kernel / driver (the set moved)", reboot_timeout=600,
                               delay=s.nvidia_reboot_delay_s,
                               _if=[install.did_change, lambda: moved,
                                    loaded_module_differs(ctx, user[1])])
        server.shell(name="Driver answers after the reboot (nvidia-smi; loaded module = installed package)",
                     commands=[driver_check(user[1])], _if=reboot.did_change)
    else:
        skipped(name="Reboot (disabled)", reason="nvidia_reboot=False: reboot by hand if the driver changed")
