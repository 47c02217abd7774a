"""Issue 9 (fast tier): the modules package for the running kernel, a lost module repaired, the runfile and proxies.

Plans on scripted @fake hosts; expected package names written by hand from Ubuntu's archive naming.
NOT here: the same against real apt / dpkg holds / unattended-upgrades (the stand-in archive of issue 9 is not
built yet)."""

from pathlib import Path

import pytest

from operations.core import driver_set
from tests.conftest import changed, names


def test_ga_kernel_gets_the_generic_modules_package(fake_plan):
    rc, plan, out = fake_plan("fresh-2204")
    assert rc == 0, out
    assert "NVIDIA driver | Install the 580 driver (open modules: linux-modules-nvidia-580-server-open-generic)" \
        in changed(plan)


def test_modules_package_follows_the_metapackage_of_the_kernel_that_boots_next():
    metas = {"linux-image-generic": "6.8.0-48-generic", "linux-image-generic-hwe-24.04": "6.11.0-29-generic"}
    hwe = driver_set.kernel_metapackage(metas, "6.11.0-29-generic")
    assert hwe == "linux-image-generic-hwe-24.04"
    assert driver_set.modules_package(580, "open", hwe) == "linux-modules-nvidia-580-server-open-generic-hwe-24.04"
    # booted into the GA kernel, the HWE one installed but older than nothing: the newest image boots next
    assert driver_set.kernel_metapackage(metas, "6.8.0-48-generic") == "linux-image-generic"
    assert driver_set.modules_package(580, "proprietary", "linux-image-generic") == \
        "linux-modules-nvidia-580-server-generic"
    # a newer image installed by hand, without a metapackage: the running kernel's metapackage
    assert driver_set.kernel_metapackage(metas, "6.12.9-99-generic", "6.11.0-29-generic") == hwe
    # two metapackages for one kernel: the greatest name, as ubuntu-drivers (kerneldetection.py) picks
    two = {"linux-image-generic-6.14": "6.14.0-36-generic", "linux-image-generic-hwe-24.04": "6.14.0-36-generic"}
    assert driver_set.kernel_metapackage(two, "6.14.0-36-generic") == "linux-image-generic-hwe-24.04"
    # virtual kernels are -generic ones: the -generic modules (ubuntu-drivers, LP #2085962)
    assert driver_set.modules_package(580, "open", "linux-image-virtual") == "linux-modules-nvidia-580-server-open-generic"


def test_cloud_kernels_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"the kernel 6.8.0-1019-aws is a cloud kernel \(-aws\).*Install "
                                         r"linux-image-generic"):
        driver_set.check_kernel("6.8.0-1019-aws")
    driver_set.check_kernel("6.8.0-48-lowlatency")  # lowlatency has its modules


# An archive as AptVersions reads it (newest first), written by hand in Ubuntu's shapes (REFERENCE §9):
# metapackages (= version) on one kernel's package, which bounds nvidia-kernel-common to one driver.
K, M, U = "linux-image-generic", "linux-modules-nvidia-580-server-open-generic", "nvidia-utils-580-server"
H = "nvidia-headless-no-dkms-580-server-open"
A, B, C = "6.8.0-50-generic", "6.8.0-51-generic", "6.8.0-52-generic"


def per_abi(abi: str) -> str:
    return f"linux-modules-nvidia-580-server-open-{abi}"


def mod(version: str, x: str) -> dict:
    return {"version": version, "depends": f"linux-image-X | linux-image-unsigned-X, nvidia-kernel-common-580-server "
                                           f"(<= {x}-1), nvidia-kernel-common-580-server (>= {x})"}


def archive(stage: str) -> dict:
    x1, x2 = "580.95.05", "580.105.08"
    arch = {K: [{"version": "6.8.0-50.50", "depends": f"linux-image-{A}"}],
            M: [{"version": "6.8.0-50.50+1", "depends": f"{per_abi(A)} (= 6.8.0-50.50+1)"}],
            per_abi(A): [mod("6.8.0-50.50+1", x1)],
            U: [{"version": f"{x1}-0ubuntu1", "depends": ""}], H: [{"version": f"{x1}-0ubuntu1", "depends": ""}]}
    if stage in ("a", "b", "c"):  # (a) a point release alone
        arch[U].insert(0, {"version": f"{x2}-0ubuntu1", "depends": ""})
        arch[H].insert(0, {"version": f"{x2}-0ubuntu1", "depends": ""})
    if stage in ("b", "c"):  # (b) modules respun for A against x2, then a security kernel B built against x2
        arch[M].insert(0, {"version": "6.8.0-50.50+2", "depends": f"{per_abi(A)} (= 6.8.0-50.50+2)"})
        arch[per_abi(A)].insert(0, mod("6.8.0-50.50+2", x2))
        arch[K].insert(0, {"version": "6.8.0-51.51", "depends": f"linux-image-{B}"})
        arch[M].insert(0, {"version": "6.8.0-51.51+1", "depends": f"{per_abi(B)} (= 6.8.0-51.51+1)"})
        arch[per_abi(B)] = [mod("6.8.0-51.51+1", x2)]
    if stage == "c":  # (c) kernel C in -security, its modules not published yet
        arch[K].insert(0, {"version": "6.8.0-52.52", "depends": f"linux-image-{C}"})
    return arch


def test_driver_set_moves_kernel_module_and_user_space_together():
    converged = driver_set.driver_set(580, "open", K, A, archive("ga"), keep=(A,))
    assert converged.pins == {K: "6.8.0-50.50", M: "6.8.0-50.50+1", per_abi(A): "6.8.0-50.50+1",
                              H: "580.95.05-0ubuntu1", U: "580.95.05-0ubuntu1"}
    assert (converged.boot, converged.driver, converged.waits, converged.no_module) == (A, "580.95.05", [], "")
    # (a) the point release alone: no module is built against it, so nothing moves and the driver waits
    a = driver_set.driver_set(580, "open", K, A, archive("a"), keep=(A,))
    assert a.pins == converged.pins
    assert a.waits == [f"driver 580.105.08 waits: no module for kernel {A} built against it yet"]
    # (b) the security kernel B, its module and the user space at 580.105.08; the running kernel's respun module
    b = driver_set.driver_set(580, "open", K, A, archive("b"), keep=(A,))
    assert b.pins == {K: "6.8.0-51.51", M: "6.8.0-51.51+1", per_abi(B): "6.8.0-51.51+1", per_abi(A): "6.8.0-50.50+2",
                      H: "580.105.08-0ubuntu1", U: "580.105.08-0ubuntu1"}
    assert (b.boot, b.driver, b.waits) == (B, "580.105.08", [])
    # (c) kernel C has no module yet: it waits, named; B's set is the newest coherent one
    c = driver_set.driver_set(580, "open", K, A, archive("c"), keep=(A,))
    assert c.pins == b.pins
    assert c.waits == [f"kernel {C} (linux-image-generic 6.8.0-52.52) waits: the archive has no {M} for it yet"]
    # C installed anyway (by hand, or by unattended-upgrades before llmhost held the metapackage): it boots next
    # and no module for it exists, so it is named
    late = driver_set.driver_set(580, "open", K, C, archive("c"), keep=(A,))
    assert (late.boot, late.no_module) == (C, C)
    # nothing of the metapackage in apt's lists (apt update has not run): no set, the caller installs by name
    assert driver_set.driver_set(580, "open", K, A, {}) is None


def test_hwe_host_plan_installs_the_hwe_modules(fake_plan):
    rc, plan, out = fake_plan("fresh-2404-hwe")
    assert rc == 0, out
    assert ("NVIDIA driver | Install the 580 driver (open modules: "
            "linux-modules-nvidia-580-server-open-generic-hwe-24.04)") in changed(plan)
    assert not any(n.endswith("(open modules: linux-modules-nvidia-580-server-open-generic)") for n in names(plan))
    assert "NVIDIA driver | Hold the kernel and modules metapackages and the user-space driver" in changed(plan)


def test_kernel_without_a_matching_metapackage_is_refused_before_any_change(fake_plan):
    rc, plan, out = fake_plan("odd-kernel")
    assert rc != 0
    assert "no NVIDIA modules package matches the kernel 6.12.9-custom" in out
    assert "linux-image-generic (6.8.0-48-generic)" in out
    assert "Starting operation" not in out


def test_lost_module_is_reported_and_repaired(fake_apply):
    """Executed: the running kernel's own modules package is installed and the module loaded, in that order."""
    rc, cmds, out = fake_apply("lost-module")
    assert rc == 0, out[-3000:]
    assert "the running kernel 6.8.0-50-generic has no nvidia module" in out
    install = next(i for i, c in enumerate(cmds) if "apt-get" in c and " install " in c
                   and "linux-modules-nvidia-580-server-open-6.8.0-50-generic" in c)
    load = next(i for i, c in enumerate(cmds) if "modprobe nvidia" in c)
    assert install < load


def test_a_branch_or_flavour_change_releases_the_old_holds_only():
    holds = ["libnvidia-container1", "linux-image-generic", "linux-modules-nvidia-580-server-open-generic",
             "nvidia-container-toolkit", "nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"]
    want = ["linux-image-generic", "linux-modules-nvidia-580-server-generic", "nvidia-headless-no-dkms-580-server",
            "nvidia-utils-580-server"]  # open -> proprietary, same branch
    assert driver_set.stale_holds(holds, want) == ["linux-modules-nvidia-580-server-open-generic",
                                                   "nvidia-headless-no-dkms-580-server-open"]
    assert driver_set.stale_holds(holds, [h for h in holds if "container" not in h]) == []


def test_user_space_held_modules_follow_the_kernel():
    from operations.nvidia_driver import UNATTENDED_BLACKLIST
    assert driver_set.userspace_packages(580, "open") == ["nvidia-headless-no-dkms-580-server-open",
                                                         "nvidia-utils-580-server"]
    blocked = [l.strip().strip('";') for l in UNATTENDED_BLACKLIST.splitlines() if l.strip().startswith('"')]
    assert blocked == ["nvidia-", "libnvidia-", "cuda-", "linux-modules-nvidia-", "linux-objects-nvidia-",
                       "linux-signatures-nvidia-"]


def test_recorded_gpu_host_kernel_facts_parse():
    """Recorded on the H200 host (tests/fixtures/gpu-host/vllm-0.26.0/kernel-facts.txt): a Firecracker kernel,
    no linux-image metapackage, no modinfo, the driver not from a deb (so it is left alone, nothing selected)."""
    from pathlib import Path

    from operations.facts import KernelImages, NvidiaModuleForKernel

    text = (Path(__file__).parent / "fixtures/gpu-host/vllm-0.26.0/kernel-facts.txt").read_text().splitlines()
    running = text[text.index("$ uname -r") + 1]
    assert running == "6.18.44-fc-v657-gpu"
    meta_lines = [l for l in text if l.startswith("linux-image")]
    assert KernelImages().process([f"running={running}"] + meta_lines) == {"running": running, "next": running, "meta": {}}
    assert NvidiaModuleForKernel().process([]) == ""


def test_proxy_and_ca_reach_apt_and_the_runfile(fake_apply):
    """Executed on a 24.04 host: apt's proxy file, the CA in the system store, and the CUDA runfile fetched through
    the proxy against its pinned sha256 before the installer runs."""
    rc, cmds, out = fake_apply("fresh-2404", {"http_proxy": "http://10.0.0.1:3128", "ca_bundle": "/etc/corp-ca.pem"})
    assert rc == 0, out[-3000:]
    from operations.download_proxy import apt_proxy_conf

    assert apt_proxy_conf("http://10.0.0.1:3128").splitlines()[1:] == [
        'Acquire::http::Proxy "http://10.0.0.1:3128";', 'Acquire::https::Proxy "http://10.0.0.1:3128";']
    fetch = [c for c in cmds if "cuda_12.1.1_530.30.02_linux.run" in c and ("curl" in c or "wget" in c)]
    assert fetch and all("http://10.0.0.1:3128" in c for c in fetch), fetch
    check = next(i for i, c in enumerate(cmds) if "d74022d41d80105319dfa21beea39b77a5b9919539c0487a05caaf2446d6a70e" in c)
    run = next(i for i, c in enumerate(cmds) if "--toolkit --silent --override" in c)
    assert check < run


def test_no_proxy_no_change(fake_plan):
    rc, plan, out = fake_plan("fresh-2204")
    assert rc == 0, out
    assert "Downloads through the proxy | Proxy and CA (skipped: none set)" in names(plan)
    assert not any(n.startswith("Downloads through the proxy") for n in changed(plan))


def test_container_toolkit_pin_change_goes_through_the_holds(fake_apply):
    """Executed: the four packages at the pin, in one apt call that may move held packages, then held again."""
    rc, cmds, out = fake_apply("fresh-2204", {"container_toolkit_version": "1.17.8-1"})
    assert rc == 0, out[-3000:]
    pkgs = "nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1"
    assert (f"apt-mark unhold {pkgs} >/dev/null && if DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends --allow-downgrades nvidia-container-toolkit=1.17.8-1 "
            "nvidia-container-toolkit-base=1.17.8-1 libnvidia-container-tools=1.17.8-1 libnvidia-container1=1.17.8-1; "
            f"then apt-mark hold {pkgs}; else rc=$?; exit $rc; fi") in cmds
    assert not [c for c in cmds if "apt-get install" in c and "nvidia-container-toolkit " in c + " "
                and "=1.17.8-1" not in c]  # never the unpinned newest


def _run_check(tmp_path, module_line: str | None, smi_ok: bool):
    import subprocess

    from operations.nvidia_driver import driver_check

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text(
        "#!/bin/sh\n" + ("echo 'GPU 0: NVIDIA GeForce RTX 3060'\n" if smi_ok else
                         "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\"; exit 9\n"))
    (tmp_path / "bin" / "dpkg-query").write_text("#!/bin/sh\nprintf '580.95.05-0ubuntu1'\n")
    for f in (tmp_path / "bin").iterdir():
        f.chmod(0o755)
    version = tmp_path / "version"
    if module_line:
        version.write_text(module_line + "\n")
    cmd = driver_check("nvidia-utils-580-server").replace("/proc/driver/nvidia/version", str(version))
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                          env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})


MODULE = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {}  Release Build  (x)  2025"


def test_post_reboot_check_passes_when_smi_answers_and_versions_match(tmp_path):
    assert _run_check(tmp_path, MODULE.format("580.95.05"), True).returncode == 0


def test_post_reboot_check_stops_on_smi_failure_old_module_or_none(tmp_path):
    for i, (line, ok, expect) in enumerate([(MODULE.format("580.95.05"), False, "couldn't communicate"),
                                            (MODULE.format("570.86.15"), True, "loaded module 570.86.15, installed "
                                                                               "580.95.05"),
                                            (None, True, "loaded module none")]):
        d = tmp_path / str(i)
        d.mkdir()
        p = _run_check(d, line, ok)
        assert p.returncode == 1 and expect in p.stderr, p.stderr


def test_post_reboot_check_is_planned_only_after_a_reboot(fake_plan):
    from tests.conftest import conditional

    rc, plan, out = fake_plan("fresh-2204")
    assert rc == 0, out
    assert ("NVIDIA driver | Driver answers after the reboot (nvidia-smi; loaded module = installed package)"
            in conditional(plan))


def test_no_reboot_without_a_driver_change(fake_plan):
    """A converged driver host: the install is a noop (no apt-get update either) and the reboot is never planned
    outright. pyinfra lists every op with `_if` as a conditional change in a dry run, so which condition guards the
    reboot is proven by executing the deploy against the same @fake host (next tests)."""
    from tests.conftest import conditional

    rc, plan, out = fake_plan("driver-installed")
    assert rc == 0, out
    assert "NVIDIA driver | Install the 580 driver (open modules: linux-modules-nvidia-580-server-open-generic)" \
        not in changed(plan)
    reboot = "NVIDIA driver | Reboot into the new kernel / driver (the set moved)"
    assert reboot in names(plan)
    assert reboot not in changed(plan) and reboot in conditional(plan)
    assert "NVIDIA driver | Hold the kernel and modules metapackages and the user-space driver" not in changed(plan)


REBOOT = "( sleep 1 && reboot ) </dev/null >/dev/null 2>&1 &"  # what server.reboot runs (pyinfra 3.10)
INSTALL = ('DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::="--force-confdef" -o Dpkg::Options::='
           '"--force-confold" install --no-install-recommends nvidia-headless-no-dkms-580-server-open '
           'nvidia-utils-580-server linux-modules-nvidia-580-server-open-generic')


def test_fresh_host_executes_install_hold_reboot_check_in_that_order(fake_apply):
    """Executed (not a dry run) against the fresh 22.04 @fake host: every ``_if`` is evaluated as on a real host. The
    driver is installed and held, the host reboots exactly once, then the driver check runs, then the services."""
    rc, cmds, out = fake_apply("fresh-2204")
    assert rc == 0, out[-3000:]
    assert cmds.count(REBOOT) == 1, [c for c in cmds if "reboot" in c]
    hold = ("apt-mark hold linux-image-generic linux-modules-nvidia-580-server-open-generic "
            "nvidia-headless-no-dkms-580-server-open nvidia-utils-580-server")
    check = [i for i, c in enumerate(cmds) if c.startswith("loaded=$(sed -n ")]
    assert len(check) == 1
    assert cmds.index(INSTALL) < cmds.index(hold) < cmds.index(REBOOT) < check[0] < cmds.index(
        "systemctl start vllm.service")


def test_installed_driver_is_never_reinstalled_or_rebooted(fake_apply):
    """Executed against the host whose 580 driver came from the debs, is held and loaded: no install, no hold, no
    reboot, no post-reboot check (an always-true or missing ``_if`` on the reboot fails here)."""
    rc, cmds, out = fake_apply("driver-installed")
    assert rc == 0, out[-3000:]
    assert not [c for c in cmds if "reboot" in c]
    assert INSTALL not in cmds and not [c for c in cmds if c.startswith("apt-mark hold") and "nvidia-utils" in c]
    assert not [c for c in cmds if c.startswith("loaded=$(sed -n ")]


@pytest.mark.parametrize("scenario", ["driver-older-holds", "driver-older-holds-pending"])
def test_a_box_from_an_older_llmhost_gains_the_holds_and_is_not_rebooted(fake_apply, scenario):
    """Executed: the installed set is the archive's newest coherent one, only the kernel and modules metapackages
    are not held yet: one `apt-mark hold` of those two, no apt install, no reboot. -pending: the older llmhost let
    a kernel update in with its module and the user has not rebooted yet; that reboot stays the user's."""
    rc, cmds, out = fake_apply(scenario)
    assert rc == 0, out[-3000:]
    assert "apt-mark hold linux-image-generic linux-modules-nvidia-580-server-open-generic" in cmds
    assert not [c for c in cmds if "apt-get install" in c and "nvidia" in c]
    assert not [c for c in cmds if "reboot" in c]


def test_a_security_kernel_moves_with_its_module_and_driver_and_reboots_once(fake_apply):
    """Executed: kernel 5.15.0-127, its module, the running kernel's respin and the 580.105.08 user space in one
    apt call with the holds released and taken again; then one reboot and the driver check."""
    rc, cmds, out = fake_apply("security-kernel")
    assert rc == 0, out[-3000:]
    held = ("linux-image-generic linux-modules-nvidia-580-server-open-generic nvidia-headless-no-dkms-580-server-open "
            "nvidia-utils-580-server")
    move = (f"apt-mark unhold {held} >/dev/null && if DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends linux-image-generic=5.15.0.127.126 "
            "linux-modules-nvidia-580-server-open-generic=5.15.0-127.137+1 "
            "linux-modules-nvidia-580-server-open-5.15.0-127-generic=5.15.0-127.137+1 "
            "nvidia-headless-no-dkms-580-server-open=580.105.08-0ubuntu0.22.04.1 "
            "nvidia-utils-580-server=580.105.08-0ubuntu0.22.04.1 "
            "linux-modules-nvidia-580-server-open-5.15.0-126-generic=5.15.0-126.136+2; "
            f"then apt-mark hold {held} && apt-mark auto linux-modules-nvidia-580-server-open-5.15.0-127-generic "
            "linux-modules-nvidia-580-server-open-5.15.0-126-generic >/dev/null; "  # autoremove may take old kernels
            f"else rc=$?; apt-mark hold {held} >/dev/null; exit $rc; fi")
    assert move in cmds, [c for c in cmds if "apt-" in c]
    assert cmds.count(REBOOT) == 1
    assert cmds.index(move) < cmds.index(REBOOT) < next(i for i, c in enumerate(cmds) if c.startswith("loaded=$("))


@pytest.mark.parametrize("apt_rc", [0, 100])
def test_apt_failing_mid_move_holds_the_set_again_and_keeps_its_status(tmp_path, apt_rc):
    """Issue 26 (5): the move's command line, run by bash with apt-get / apt-mark standing in as recorders: when
    apt-get fails (exit 100: a newer user space without its modules yet), what was held before is held again and the
    run fails with apt's status; when it succeeds, the set is held. Breakage checked: the old
    `unhold && install && hold` chain (the set left unheld)."""
    import json
    import subprocess

    # the op's own command: test_pyinfra_fixtures.py checks that pinned_and_held yields exactly this line
    fixture = json.loads((Path(__file__).parent / "fixtures/pyinfra/ops/shared_ops.pinned_and_held"
                          / "driver_set_moves.json").read_text())
    line = fixture["commands"][0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    for tool, rc in (("apt-mark", 0), ("apt-get", apt_rc)):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {log}\nexit {rc}\n")
        (bin_dir / tool).chmod(0o755)
    p = subprocess.run(["bash", "-c", line], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True)
    calls = log.read_text().splitlines()
    held = fixture["facts"]["facts.AptHolds"]
    held = held if isinstance(held, list) else next(iter(held.values()))
    assert p.returncode == apt_rc
    assert calls[0].startswith("apt-mark unhold") and calls[1].startswith("apt-get install")
    assert calls[-1].startswith("apt-mark hold") and set(held) <= set(calls[-1].split()[2:]), calls


# --- Issue 26: the paths users take ------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario,named", [
    ("additional-drivers", "linux-modules-nvidia-580-open-6.8.0-50-generic, linux-modules-nvidia-580-open-generic, "
                           "nvidia-driver-580-open, nvidia-utils-580"),
    ("additional-drivers-dkms", "nvidia-dkms-580, nvidia-driver-580, nvidia-utils-580")])
def test_a_driver_from_additional_drivers_is_refused_with_the_fix_before_any_change(fake_plan, scenario, named):
    """(1) Was: no set computed, the -server user space installed by name, apt removing the user's driver and its
    module for the running kernel with no reboot and no warning (the next boot had no nvidia.ko)."""
    rc, plan, out = fake_plan(scenario)
    assert rc != 0, out[-2000:]
    assert f"this box runs Ubuntu's desktop NVIDIA driver ({named}; Additional Drivers" in out
    assert f"sudo apt purge {named.replace(', ', ' ')} && sudo apt autoremove --purge" in out
    assert "Starting operation" not in out and "Traceback" not in out


def test_a_branch_switch_with_the_old_branch_loaded_moves_the_set_in_one_apt_call_and_reboots_once(fake_apply):
    """(2) Was: a loaded 580 made preflight return early (no set for 595), the 580 holds were released and apt was
    asked for 595 by name: a resolver error on every run. Now: the 595 set (its kernel's module, user space) in one
    apt call, the 580 holds released first, held again, one reboot, then the driver check."""
    rc, cmds, out = fake_apply("branch-switch")
    assert rc == 0, out[-3000:]
    release = next(i for i, c in enumerate(cmds) if c.startswith("apt-mark unhold linux-modules-nvidia-580-server"))
    move = next(i for i, c in enumerate(cmds) if "apt-get install" in c and "nvidia-utils-595-server=595.58.03" in c)
    assert "linux-modules-nvidia-595-server-open-5.15.0-126-generic=5.15.0-126.136+1" in cmds[move]
    assert "then apt-mark hold linux-image-generic linux-modules-nvidia-595-server-open-generic" in cmds[move]
    assert release < move < cmds.index(REBOOT) and cmds.count(REBOOT) == 1


def test_every_installed_kernel_metapackage_is_held(fake_apply):
    """(3) linux-image-generic beside linux-image-generic-hwe-24.04: both held (was: only the greatest name, so
    unattended-upgrades took a GA kernel no module of the set was built for)."""
    rc, cmds, out = fake_apply("fresh-2404-hwe")
    assert rc == 0, out[-3000:]
    holds = [c for c in cmds if c.startswith("apt-mark hold")]
    assert holds and "linux-image-generic-hwe-24.04" in holds[0].split() and "linux-image-generic" in holds[0].split()


def test_a_box_just_moved_to_hwe_whose_modules_come_later_keeps_the_running_kernels_set():
    """Found by the generated sequences (seed 101: the user installs linux-generic-hwe-24.04 the day its 6.11 kernel
    is published, its modules a day late, and re-runs the deploy): the set followed the booting kernel's
    metapackage, apt was asked for linux-modules-nvidia-580-server-open-generic-hwe-24.04, which the archive did not
    have yet, and the run failed. Now the set follows the running kernel's metapackage until the HWE modules come."""
    metas = {"linux-image-generic": "6.8.0-61-generic", "linux-image-generic-hwe-24.04": "6.11.0-29-generic"}
    ga = {"linux-modules-nvidia-580-server-open-generic": [{"version": "6.8.0-61.61+1", "depends": ""}]}
    hwe = "linux-image-generic-hwe-24.04"
    assert driver_set.followed_metapackage(hwe, metas, "6.8.0-61-generic", 580, "open", ga) == "linux-image-generic"
    both = {**ga, "linux-modules-nvidia-580-server-open-generic-hwe-24.04": [{"version": "6.11.0-29.29+1",
                                                                               "depends": ""}]}
    assert driver_set.followed_metapackage(hwe, metas, "6.8.0-61-generic", 580, "open", both) == hwe
    assert driver_set.followed_metapackage(hwe, metas, "6.8.0-61-generic", 580, "open", {}) == hwe  # nothing read
    # the running kernel older than its metapackage's (a kernel waiting for a reboot): both metapackages are of its
    # flavour; the one with modules is followed (the same seed found this on the re-run after that deploy)
    assert driver_set.followed_metapackage(hwe, metas, "6.8.0-60-generic", 580, "open", ga) == "linux-image-generic"


def test_grub_order_counts_the_flavour_as_sort_v_does():
    """(4) 6.8.0-50-lowlatency boots before 6.8.0-50-generic (GRUB sorts with sort -V): the set must follow it."""
    archive = {
        "linux-image-generic": [{"version": "6.8.0-50.50", "depends": "linux-image-6.8.0-50-generic"}],
        "linux-modules-nvidia-580-server-open-generic": [
            {"version": "6.8.0-50.50+1", "depends": "linux-modules-nvidia-580-server-open-6.8.0-50-generic (= 6.8.0-50.50+1)"}],
        "linux-modules-nvidia-580-server-open-6.8.0-50-generic": [
            {"version": "6.8.0-50.50+1", "depends": "nvidia-kernel-common-580-server (<= 580.95.05-1), "
                                                    "nvidia-kernel-common-580-server (>= 580.95.05)"}],
        "nvidia-headless-no-dkms-580-server-open": [{"version": "580.95.05-0ubuntu1", "depends": ""}],
        "nvidia-utils-580-server": [{"version": "580.95.05-0ubuntu1", "depends": ""}]}
    dset = driver_set.driver_set(580, "open", "linux-image-generic", "6.8.0-50-lowlatency", archive)
    assert dset.boot == "6.8.0-50-lowlatency" and dset.no_module == "6.8.0-50-lowlatency"  # named, reboot withheld


def test_kernel_order_is_gnu_sort_v_itself():
    """abi_key against GNU sort -V on generated kernel names (flavours, ABI numbers of different widths)."""
    import subprocess

    from hypothesis import example, given, settings, strategies as st

    name = st.builds(lambda a, b, c, d, f: f"{a}.{b}.{c}-{d}-{f}", st.integers(5, 6), st.integers(0, 12),
                     st.integers(0, 1), st.sampled_from([9, 10, 48, 50, 52, 100, 1019]),
                     st.sampled_from(["generic", "lowlatency", "generic-64k", "lowlatency-hwe", "aws"]))

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(st.lists(name, min_size=2, max_size=8, unique=True))
    @example(["6.8.0-50-lowlatency", "6.8.0-50-generic"])
    def check(names):
        gnu = subprocess.run(["sort", "-V"], input="\n".join(names) + "\n", capture_output=True, text=True,
                             check=True).stdout.split()
        assert sorted(names, key=driver_set.abi_key) == gnu == sorted(reversed(names), key=driver_set.abi_key)

    check()


def test_linux_image_virtual_hwe_takes_the_generic_hwe_modules():
    """(7) ubuntu-drivers maps -virtual to -generic (LP #2085962), the HWE metapackage too."""
    assert driver_set.modules_package(580, "open", "linux-image-virtual-hwe-24.04") == \
        "linux-modules-nvidia-580-server-open-generic-hwe-24.04"


def test_a_flavour_change_at_the_same_version_reboots(fake_apply):
    """(7) The open module loaded, the settings ask for the proprietary one at the same driver version: the module
    changes, so the host reboots once (was: same version, same kernel, no reboot; the old module kept running)."""
    rc, cmds, out = fake_apply("driver-installed", {"nvidia_driver_flavour": "proprietary"})
    assert rc == 0, out[-3000:]
    assert cmds.count(REBOOT) == 1


def test_a_fallback_kernel_without_a_respin_is_named_not_silently_left_without_its_module():
    """(7) The running kernel 6.8.0-50 has no module at the new driver: the move to 6.8.0-51 takes its old module away
    (the kernel-common bounds), and the run says so (was: silent, and the docstring said it keeps one)."""
    common = "nvidia-kernel-common-580-server (<= {x}-1), nvidia-kernel-common-580-server (>= {x})"
    archive = {
        "linux-image-generic": [{"version": "6.8.0-51.51", "depends": "linux-image-6.8.0-51-generic"}],
        "linux-modules-nvidia-580-server-open-generic": [{"version": "6.8.0-51.51+1", "depends":
                                                          "linux-modules-nvidia-580-server-open-6.8.0-51-generic (= 6.8.0-51.51+1)"}],
        "linux-modules-nvidia-580-server-open-6.8.0-51-generic": [
            {"version": "6.8.0-51.51+1", "depends": common.format(x="580.105.08")}],
        "linux-modules-nvidia-580-server-open-6.8.0-50-generic": [
            {"version": "6.8.0-50.50+1", "depends": common.format(x="580.95.05")}],
        "nvidia-headless-no-dkms-580-server-open": [{"version": "580.105.08-0ubuntu1", "depends": ""}],
        "nvidia-utils-580-server": [{"version": "580.105.08-0ubuntu1", "depends": ""}]}
    dset = driver_set.driver_set(580, "open", "linux-image-generic", "6.8.0-51-generic", archive,
                                 keep=("6.8.0-50-generic",))
    assert "linux-modules-nvidia-580-server-open-6.8.0-50-generic" not in dset.pins
    assert ("the kernel 6.8.0-50-generic loses its nvidia module with this move: the archive has none for it at "
            "driver 580.105.08") in " ".join(dset.waits)


def test_a_fully_updated_box_in_the_modules_late_window_is_never_downgraded():
    """(6) Ubuntu's pockets keep one version each: linux-image-generic 6.8.0-51.51 is in -security (its modules a day
    late), 6.8.0-50.50 in -updates. The box is fully updated (apt full-upgrade: kernel B and the metapackage at
    6.8.0-51.51 installed) and runs A. Was: the set fell back to linux-image-generic 6.8.0-50.50 (a downgrade, which
    removes linux-generic). Now the metapackage stays, the module set follows the running kernel, and B is named."""
    arch = archive("ga")
    arch[K].insert(0, {"version": "6.8.0-51.51", "depends": f"linux-image-{B}"})
    have = {K: "6.8.0-51.51", "linux-generic": "6.8.0-51.51"}
    dset = driver_set.driver_set(580, "open", K, B, arch, keep=(A,), installed=have)
    assert dset.pins == {K: "6.8.0-51.51", M: "6.8.0-50.50+1", per_abi(A): "6.8.0-50.50+1",
                         H: "580.95.05-0ubuntu1", U: "580.95.05-0ubuntu1"}
    assert (dset.boot, dset.no_module) == (B, B)  # named; the reboot is withheld
    assert dset.waits == [f"kernel {B} (linux-image-generic 6.8.0-51.51) waits: the archive has no {M} for it yet"]
    # and without knowing what is installed (the old behaviour) it would have moved the metapackage backwards
    assert driver_set.driver_set(580, "open", K, B, arch, keep=(A,)).pins[K] == "6.8.0-50.50"


def test_no_driver_set_ever_pins_a_version_older_than_the_installed_one():
    """Every stage of the archive, with every combination of what can be installed (each package at each version
    apt lists, or absent): no pin comes after the installed version in apt's order."""
    import itertools

    for stage in ("ga", "a", "b", "c"):
        arch = archive(stage)
        names = [K, M, U, H, per_abi(A)]
        for combo in itertools.product(*[[None, *(v["version"] for v in arch[n])] for n in names]):
            have = {n: v for n, v in zip(names, combo) if v}
            for boot in (A, B, C):
                dset = driver_set.driver_set(580, "open", K, boot, arch, keep=(A,), installed=have)
                for p, v in (dset.pins if dset else {}).items():
                    order = [x["version"] for x in arch.get(p, [])]
                    assert p not in have or order.index(v) <= order.index(have[p]), (stage, have, boot, p, v)


def test_a_kernel_metapackage_held_beside_the_booting_one_is_named_when_the_archive_moves_on():
    """(3) linux-image-generic held beside linux-image-generic-hwe-24.04 (the kernel that boots): llmhost never moves
    it, so a newer one in the archive is named (was: held forever, nothing said)."""
    hwe = "linux-image-generic-hwe-24.04"
    arch = {K: [{"version": "6.8.0-52.52", "depends": "linux-image-6.8.0-52-generic"},
                {"version": "6.8.0-50.50", "depends": f"linux-image-{A}"}]}
    said = driver_set.held_beside(hwe, [K], {K: "6.8.0-50.50", hwe: "6.11.0-29.29~24.04.1"}, arch)
    assert said == [f"{K} is held at 6.8.0-50.50 beside {hwe} (the kernel that boots): the archive has 6.8.0-52.52, "
                    f"which llmhost does not install (it moves only the booting kernel's metapackage); apt remove {K} "
                    "if that kernel is not used"]
    assert driver_set.held_beside(hwe, [K], {K: "6.8.0-52.52"}, arch) == []  # current: nothing to say


def test_a_kernel_installed_by_hand_beside_a_newer_metapackage_keeps_the_running_flavours_metapackage():
    """Found by the generated sequences (seed 100): linux-image-generic moved to 6.8.0-61 (its modules a day late, the
    reboot withheld, 6.8.0-60 still running), then the user installs 6.8.0-61-lowlatency by hand, which boots next.
    Was: refused ("no NVIDIA modules package matches the kernel"), so the deploy could not even name that kernel. Now
    the running kernel's flavour decides: linux-image-generic, and the lowlatency kernel is named by the set."""
    metas = {"linux-image-generic": "6.8.0-61-generic"}
    assert driver_set.kernel_metapackage(metas, "6.8.0-61-lowlatency", "6.8.0-60-generic") == "linux-image-generic"
    with pytest.raises(ValueError, match="no NVIDIA modules package matches the kernel"):
        driver_set.kernel_metapackage(metas, "6.12.9-custom", "6.12.9-custom")  # still refused: no such flavour


def test_a_branch_change_removes_every_package_of_the_old_branch_in_the_same_apt_call():
    """Found by the generated stories (seed 101, CI's budget): on a box with a 580 module for two kernels (GA and HWE),
    the move to 595 failed on every run ("nvidia-kernel-common-580-server : Conflicts: nvidia-kernel-common",
    pkgProblemResolver "generated breaks"): apt kept the old kernel-common, weighed by its reverse dependencies. The
    old branch's packages are now named for removal in the install's own apt call (pkg-: one call, one reboot);
    the command itself: tests/fixtures/pyinfra/ops/shared_ops.pinned_and_held/branch_change_removes_the_old_branch."""
    installed = ["libnvidia-cfg1-580-server", "libnvidia-container1", "linux-image-6.8.0-60-generic",
                 "linux-modules-nvidia-580-server-open-6.11.0-29-generic",
                 "linux-modules-nvidia-580-server-open-generic-hwe-24.04", "linux-objects-nvidia-580-server-6.8.0-60-generic",
                 "linux-signatures-nvidia-6.8.0-60-generic", "nvidia-container-toolkit", "nvidia-firmware-580-server-580.95.05",
                 "nvidia-kernel-common-580-server", "nvidia-utils-580", "nvidia-utils-580-server", "nvidia-utils-595-server"]
    assert driver_set.other_branch(installed, 595) == [
        "libnvidia-cfg1-580-server", "linux-modules-nvidia-580-server-open-6.11.0-29-generic",
        "linux-modules-nvidia-580-server-open-generic-hwe-24.04", "linux-objects-nvidia-580-server-6.8.0-60-generic",
        "nvidia-firmware-580-server-580.95.05", "nvidia-kernel-common-580-server", "nvidia-utils-580-server"]
    assert driver_set.other_branch(installed, 580) == ["nvidia-utils-595-server"]  # and back
    assert driver_set.other_branch([p for p in installed if "580-server" not in p], 595) == []  # a converged box
