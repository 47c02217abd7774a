"""Real tier, issues 9 and 18: the driver component with real apt, real dpkg holds and Debian's real
unattended-upgrades, against a local archive of stand-in packages generated from Ubuntu's control data
(tests/aptarchive.py: Ubuntu's Depends, Provides, Conflicts and version locks), served over HTTP on the test host's
gateway, so apt reaches it only through the proxy the deploy configures (http_proxy) and the proxy's log shows it.

The test host is a Debian 12 container: it runs the CI machine's kernel and cannot boot another. The kernel it is
taken to run is therefore an explicit, named test-only input (driver_standin_kernel), and a "reboot" is the test
setting it to the kernel the boot loader would take: the newest /boot/vmlinuz-* (what GRUB's default entry is on
Ubuntu), read here by the test itself. After each step the GPU "must be usable": the kernel that boots has an
nvidia.ko built against the installed user space's version. Loading modules and rebooting are reported as skipped.

Pockets as Ubuntu has them: the archive's root is -updates (the deploy's stand-in source), security/ is -security;
unattended-upgrades takes -security only, as Ubuntu's default configuration does.
"""

from __future__ import annotations

import json
from pathlib import Path
import os
import re
import subprocess
import sys

import pytest

from testing import hub, testhost
from tests import aptarchive
from tests.conftest import REPO, require_test_host

pytestmark = pytest.mark.realhost
HTTP_PORT = 18097
A, B, C = "6.8.0-50-generic", "6.8.0-51-generic", "6.8.0-52-generic"  # GA kernels: running, then two updates
HWE = "6.11.0-29-generic"
X1, X2 = "580.95.05-0ubuntu0.24.04.1", "580.105.08-0ubuntu0.24.04.1"  # a driver and its point release
K, M = "linux-image-generic", "linux-modules-nvidia-580-server-open-generic"
USER = ["nvidia-headless-no-dkms-580-server-open", "nvidia-utils-580-server"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_test_host()
    hub.up()
    h = testhost.up(1, hub_port=hub.PORT)[0]
    archive = tmp_path_factory.mktemp("standin-archive")
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", h["gateway"],
                               "--directory", str(archive)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    # Test prerequisites from Debian (through the harness's proxy), then only the deploy's own apt proxy remains.
    sh(h, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
          "unattended-upgrades kmod curl >/dev/null && rm /etc/apt/apt.conf.d/99llmhost-proxy")  # curl: base does it
    url = f"http://{h['gateway']}:{HTTP_PORT}/"
    path, sha256 = aptarchive.cuda_runfile(archive)  # NVIDIA's URL layout, a named stand-in runfile
    yield {"h": h, "archive": archive, "url": url, "runfile": url + path, "sha256": sha256}
    os.killpg(server.pid, 15)
    server.wait(10)
    testhost.down()
    hub.down()


def sh(h: dict, command: str, check: bool = True) -> str:
    return testhost.ssh(h["address"], command, check=check, timeout=300).stdout


def deploy(env: dict, running: str, **data) -> subprocess.CompletedProcess:
    # The Hub only on the controller's loopback here (this deploy fetches no weights), so no_proxy holds nothing of
    # the gateway and the runfile's curl must take the proxy like apt.
    data = {"driver_standin_archive": env["url"], "driver_standin_kernel": running, "cuda_runfile_url": env["runfile"],
            "cuda_runfile_sha256": env["sha256"], "hf_endpoint": f"http://127.0.0.1:{hub.PORT}", **data}
    cmd = [sys.executable, "-m", "pyinfra", "-y", "inventories/home.py", "tests/driver_deploy.py"]
    for k, v in data.items():
        cmd += ["--data", f"{k}={v}"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    p.stdout += p.stderr
    return p


def changes(out: str) -> int:
    m = re.search(r"Grand total\s+(\d+)\s+(\S+)", out)
    assert m, out[-3000:]
    return 0 if m.group(2) == "-" else int(m.group(2))


def installed(env: dict) -> dict[str, str]:
    out = sh(env["h"], "dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' "
                       "'linux-*' 'nvidia-*' 'libnvidia-*' 2>/dev/null | awk '$1 ~ /^[ih]i/ {print $2, $3}'", check=False)
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())


def holds(env: dict) -> list[str]:
    return sorted(x for x in sh(env["h"], "apt-mark showhold").split() if "container" not in x)


def boots(env: dict) -> str:
    """The kernel the boot loader takes: the newest /boot/vmlinuz-* in version order (GRUB's default on Ubuntu)."""
    return sh(env["h"], "ls /boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1").strip()


def gpu_usable_after_reboot(env: dict, branch: int = 580) -> str:
    """The kernel that boots has an nvidia.ko built against the installed user space's version; returns it."""
    kernel = boots(env)
    ko = sh(env["h"], f"cat /lib/modules/{kernel}/kernel/nvidia-{branch}srv/nvidia.ko 2>/dev/null", check=False)
    user = installed(env).get(f"nvidia-utils-{branch}-server", "?").split("-")[0]
    assert ko.strip() == f"stand-in nvidia.ko {user}", f"{kernel} boots with module {ko.strip() or 'none'}, " \
                                                        f"user space {user}"
    return kernel


def unattended_upgrade(env: dict) -> None:
    out = sh(env["h"], "unattended-upgrade -v 2>&1; echo exit=$?", check=False)
    assert "exit=0" in out, out[-3000:]


def publish(env: dict, stage: str) -> None:
    """(Re)build the archive for a stage of the story, as Ubuntu publishes; each stage adds, nothing is taken away."""
    root, sec = env["archive"], env["archive"] / "security"
    if stage == "ga":
        aptarchive.kernel(root, A, "6.8.0-50.50")
        aptarchive.kernel_meta(root, "generic", "6.8.0-50.50", A)
        aptarchive.driver(root, 580, X1)
        aptarchive.modules(root, 580, X1, A, "6.8.0-50.50+1", ("generic",))
        aptarchive.container_toolkit(root, "1.17.5-1")
    if stage == "a":  # a driver point release alone: no module is built against it yet
        aptarchive.driver(root, 580, X2)
    if stage == "b":  # modules respun for the running kernel against X2, then a security kernel built against X2
        aptarchive.driver(sec, 580, X2)
        aptarchive.modules(sec, 580, X2, A, "6.8.0-50.50+2", ("generic",))
        aptarchive.kernel(sec, B, "6.8.0-51.51")
        aptarchive.kernel_meta(sec, "generic", "6.8.0-51.51", B)
        aptarchive.modules(sec, 580, X2, B, "6.8.0-51.51+1", ("generic",))
    if stage == "c":  # a security kernel whose modules are not published yet
        aptarchive.kernel(sec, C, "6.8.0-52.52")
        aptarchive.kernel_meta(sec, "generic", "6.8.0-52.52", C)
    if stage == "c-next-day":  # its modules reach -updates only, a day later
        aptarchive.modules(root, 580, X2, C, "6.8.0-52.52+1", ("generic",))
    if stage == "toolkit-1.17.8":
        aptarchive.container_toolkit(root, "1.17.8-1")
    if stage == "hwe":  # the HWE metapackage and its kernel, with modules
        aptarchive.kernel(root, HWE, "6.11.0-29.29~24.04.1")
        aptarchive.deb(root, "linux-image-generic-hwe-24.04", "6.11.0-29.29~24.04.1", depends=f"linux-image-{HWE}")
        aptarchive.modules(root, 580, X2, HWE, "6.11.0-29.29~24.04.1+1", ("generic-hwe-24.04",))
    if stage == "595-proprietary":
        aptarchive.driver(root, 595, "595.58.03-0ubuntu0.24.04.1", flavour="proprietary")
        aptarchive.modules(root, 595, "595.58.03-0ubuntu0.24.04.1", HWE, "6.11.0-29.29~24.04.1+1",
                           ("generic-hwe-24.04",), flavour="proprietary")
    if stage == "595":
        aptarchive.driver(root, 595, "595.58.03-0ubuntu0.24.04.1")
        aptarchive.modules(root, 595, "595.58.03-0ubuntu0.24.04.1", HWE, "6.11.0-29.29~24.04.1+1",
                           ("generic-hwe-24.04",))
    aptarchive.index(root)
    aptarchive.index(sec, suite="noble-security")
    sh(env["h"], f"apt-get -o Acquire::http::Proxy=http://{env['h']['gateway']}:8888 update -qq")


def test_ga_kernel_gets_the_ga_modules_package_through_the_proxy(env):
    publish(env, "ga")
    # The box as Ubuntu installs it: its archive (here the stand-in: -updates at the root, -security beside it),
    # unattended-upgrades taking -security only, the GA kernel installed and running.
    sh(env["h"], f"echo 'deb [trusted=yes] {env['url']} ./' > /etc/apt/sources.list.d/llmhost-standin.list && "
                 f"echo 'deb [trusted=yes] {env['url']}security/ ./' > /etc/apt/sources.list.d/ubuntu-security.list && "
                 "printf 'Unattended-Upgrade::Origins-Pattern { \"origin=llmhost-standin,suite=noble-security\"; };\\n' "
                 "> /etc/apt/apt.conf.d/52llmhost-test-origins && "
                 "apt-get -o Acquire::http::Proxy=http://{gw}:8888 update -qq && "
                 "DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::http::Proxy=http://{gw}:8888 install -y -qq "
                 "linux-generic >/dev/null".replace("{gw}", env["h"]["gateway"]))
    proxy_log = testhost.STATE / "tinyproxy.log"
    before = proxy_log.read_text() if proxy_log.exists() else ""
    p = deploy(env, A)
    assert p.returncode == 0, p.stdout[-4000:]
    pk = installed(env)
    assert pk[M] == "6.8.0-50.50+1" and pk[f"linux-modules-nvidia-580-server-open-{A}"] == "6.8.0-50.50+1"
    assert pk["nvidia-utils-580-server"] == X1 and pk["nvidia-kernel-common-580-server"] == X1
    assert pk["nvidia-firmware-580-server-580.95.05"] == X1 and pk["libnvidia-compute-580-server"] == X1
    assert not any("hwe" in name for name in pk)
    # held: the kernel and modules metapackages and the user space (unattended-upgrades moves none of them)
    assert holds(env) == sorted([K, M, *USER])
    held = sh(env["h"], "apt-mark showhold").split()
    assert sorted(p for p in held if "container" in p) == sorted(aptarchive.TOOLKIT)  # newest, held
    assert pk["nvidia-container-toolkit"] == "1.17.5-1"
    assert gpu_usable_after_reboot(env) == A
    # apt went through the proxy that the deploy configured (95llmhost-proxy; the harness's own file was removed)
    assert 'Acquire::http::Proxy "http://' in sh(env["h"], "cat /etc/apt/apt.conf.d/95llmhost-proxy")
    log = proxy_log.read_text()[len(before):]
    assert f"{env['h']['gateway']}:{HTTP_PORT}" in log, log[-2000:]
    # CUDA 12.1 on a non-22.04 host: the runfile (a stand-in that refuses without --override, like NVIDIA's),
    # fetched through the proxy by files.download against the pinned sha256; installed, marker written, runfile gone.
    assert "cuda/12.1.1/local_installers/cuda_12.1.1_530.30.02_linux.run" in log, log[-2000:]
    assert sh(env["h"], "ls /var/cache/llmhost").split() in ([], ["uv"])  # no runfile left (uv: the shared cache)
    assert "release 12.1" in sh(env["h"], "/usr/local/cuda-12.1/bin/nvcc")
    assert sh(env["h"], "test -f /usr/local/cuda-12.1/.llmhost-runfile && echo marker").strip() == "marker"
    assert changes(deploy(env, A).stdout) == 0


def test_runfile_with_the_wrong_sha256_is_never_run(env):
    """A runfile whose sha256 is not the pinned one (a corrupted or swapped download) stops the deploy before it
    runs: no toolkit, no marker. With the right pin the next run installs it."""
    h = env["h"]
    sh(h, "rm -rf /usr/local/cuda-12.1")
    bad = deploy(env, A, cuda_runfile_sha256="ab" * 32)
    assert bad.returncode != 0, bad.stdout[-3000:]
    assert "SHA256 did not match" in bad.stdout, bad.stdout[-3000:]
    assert sh(h, "ls /usr/local/cuda-12.1 2>/dev/null; true").strip() == ""
    good = deploy(env, A)
    assert good.returncode == 0, good.stdout[-3000:]
    assert "release 12.1" in sh(h, "/usr/local/cuda-12.1/bin/nvcc")
    assert sh(h, "ls /var/cache/llmhost").split() in ([], ["uv"])  # no runfile left
    assert changes(deploy(env, A).stdout) == 0


def test_a_point_release_alone_moves_nothing_and_waits(env):
    """(a) A 580-server point release with no module built against it: unattended-upgrades moves nothing, the GPU
    stays usable, the deploy changes nothing and names the driver that waits."""
    publish(env, "a")
    unattended_upgrade(env)
    assert installed(env)["nvidia-utils-580-server"] == X1
    assert gpu_usable_after_reboot(env) == A
    p = deploy(env, A)
    assert p.returncode == 0, p.stdout[-4000:]
    assert changes(p.stdout) == 0
    assert f"driver 580.105.08 waits: no module for kernel {A} built against it yet" in p.stdout


def test_a_security_kernel_built_against_a_new_driver_moves_with_it(env):
    """(b) Modules respun for the running kernel against the point release, then a security kernel built against
    it. unattended-upgrades takes -security but moves none of the held set (a kernel alone would boot without a
    module the held user space can use); the deploy moves kernel, module and user space together; after the
    reboot into the new kernel the GPU is usable and a re-run changes nothing."""
    publish(env, "b")
    unattended_upgrade(env)
    pk = installed(env)
    assert f"linux-image-{B}" not in pk and pk[K] == pk["linux-generic"] == "6.8.0-50.50"
    assert pk["nvidia-utils-580-server"] == X1
    assert gpu_usable_after_reboot(env) == A
    p = deploy(env, A)
    assert p.returncode == 0, p.stdout[-4000:]
    assert f"Kernel {B}, its open modules and the 580 driver 580.105.08 together (held)" in p.stdout
    pk = installed(env)
    assert pk[K] == "6.8.0-51.51" and pk[M] == "6.8.0-51.51+1"
    assert pk["linux-generic"] == "6.8.0-51.51"  # the metapackage on top follows (= version), not removed
    assert pk[f"linux-modules-nvidia-580-server-open-{B}"] == "6.8.0-51.51+1"
    assert pk[f"linux-modules-nvidia-580-server-open-{A}"] == "6.8.0-50.50+2"  # the running kernel's, respun
    assert pk["nvidia-utils-580-server"] == X2 and pk["nvidia-kernel-common-580-server"] == X2
    assert holds(env) == sorted([K, M, *USER])
    assert gpu_usable_after_reboot(env) == B
    assert changes(deploy(env, B).stdout) == 0  # rebooted into B


def test_a_kernel_whose_modules_come_a_day_later_waits_for_them(env):
    """(c) A security kernel whose modules reach only -updates a day later: nothing installs it without its
    module; the deploy names it and changes nothing; once the modules are out, the deploy moves to it."""
    publish(env, "c")
    unattended_upgrade(env)
    assert f"linux-image-{C}" not in installed(env)
    assert gpu_usable_after_reboot(env) == B
    p = deploy(env, B)
    assert p.returncode == 0, p.stdout[-4000:]
    assert changes(p.stdout) == 0
    assert f"kernel {C} ({K} 6.8.0-52.52) waits: the archive has no {M} for it yet" in p.stdout
    publish(env, "c-next-day")
    unattended_upgrade(env)  # -security only: the modules are in -updates, and held anyway
    assert f"linux-image-{C}" not in installed(env)
    p = deploy(env, B)
    assert p.returncode == 0, p.stdout[-4000:]
    assert installed(env)[f"linux-modules-nvidia-580-server-open-{C}"] == "6.8.0-52.52+1"
    assert gpu_usable_after_reboot(env) == C
    assert changes(deploy(env, C).stdout) == 0


def test_a_kernel_installed_by_hand_without_its_module_is_named_before_the_reboot(env):
    """A newer kernel image installed outside the deploy (no modules exist for it): preflight names it before the
    user reboots; the deploy withholds nothing else. Removing it clears the warning."""
    h = env["h"]
    extra = "6.8.0-53-generic"
    aptarchive.kernel(env["archive"], extra, "6.8.0-53.53")
    aptarchive.index(env["archive"])
    sh(h, f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-image-{extra} >/dev/null")
    assert boots(env) == extra
    p = deploy(env, C)
    assert p.returncode == 0, p.stdout[-4000:]
    assert f"the kernel {extra} boots next and has no nvidia 580 module at driver 580.105.08" in p.stdout
    sh(h, f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq linux-image-{extra} >/dev/null")
    assert gpu_usable_after_reboot(env) == C
    assert "boots next and has no nvidia" not in deploy(env, C).stdout


def test_running_kernel_that_lost_its_module_is_reported_and_repaired(env):
    h = env["h"]
    abi_pkg = f"linux-modules-nvidia-580-server-open-{C}"
    sh(h, f"dpkg --purge --force-depends {abi_pkg} >/dev/null 2>&1")
    assert not sh(h, f"ls /lib/modules/{C}/kernel/nvidia-580srv/ 2>/dev/null", check=False).strip()
    p = deploy(env, C)
    assert p.returncode == 0, p.stdout[-4000:]
    assert f"the running kernel {C} has no nvidia module" in p.stdout
    assert abi_pkg in installed(env)
    assert gpu_usable_after_reboot(env) == C
    assert changes(deploy(env, C).stdout) == 0


def test_hwe_kernel_gets_the_hwe_modules_package_and_only_it(env):
    h = env["h"]
    sh(h, "apt-mark unhold $(apt-mark showhold | grep -v container) >/dev/null; dpkg --purge $(dpkg-query -W "
          "-f='${Package}\\n' 'linux-modules-nvidia-*' 'nvidia-*' 'libnvidia-*' 'linux-generic' 'linux-image-generic' "
          "| grep -v container) >/dev/null")
    publish(env, "hwe")
    sh(h, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {K} linux-image-generic-hwe-24.04 >/dev/null")
    assert boots(env) == HWE
    p = deploy(env, HWE)
    assert p.returncode == 0, p.stdout[-4000:]
    assert f"Kernel {HWE}, its open modules and the 580 driver 580.105.08 together (held)" in p.stdout
    pk = installed(env)
    assert "linux-modules-nvidia-580-server-open-generic-hwe-24.04" in pk
    assert f"linux-modules-nvidia-580-server-open-{HWE}" in pk
    assert M not in pk  # the GA one would follow the other kernel
    assert f"linux-modules-nvidia-580-server-open-{C}" not in pk
    # the GA metapackage installed beside is held too (issue 26 (3)): it would pull a kernel without a module
    assert holds(env) == sorted(["linux-image-generic", "linux-image-generic-hwe-24.04",
                                 "linux-modules-nvidia-580-server-open-generic-hwe-24.04", *USER])
    assert gpu_usable_after_reboot(env) == HWE
    assert changes(deploy(env, HWE).stdout) == 0


def test_container_toolkit_pin_change_goes_through_the_holds(env):
    h = env["h"]
    publish(env, "toolkit-1.17.8")
    sh(h, "apt-get update -qq")
    assert "Packages were" not in sh(h, "apt-get install -s nvidia-container-toolkit=1.17.8-1 2>&1", check=False)
    p = deploy(env, HWE, container_toolkit_version="1.17.8-1")
    assert p.returncode == 0, p.stdout[-4000:]
    pk = installed(env)
    assert {name: pk[name] for name in aptarchive.TOOLKIT} == {name: "1.17.8-1" for name in aptarchive.TOOLKIT}
    assert sorted(x for x in sh(h, "apt-mark showhold").split() if "container" in x) == sorted(aptarchive.TOOLKIT)
    assert changes(deploy(env, HWE, container_toolkit_version="1.17.8-1").stdout) == 0


def test_branch_change_goes_through_the_holds(env):
    publish(env, "595")
    p = deploy(env, HWE, nvidia_driver_branch=595)
    assert p.returncode == 0, p.stdout[-4000:]
    assert "Release the holds of the previous driver branch or flavour" in p.stdout
    pk = installed(env)
    assert pk["nvidia-utils-595-server"] == "595.58.03-0ubuntu0.24.04.1" and "nvidia-utils-580-server" not in pk
    assert f"linux-modules-nvidia-595-server-open-{HWE}" in pk and f"linux-modules-nvidia-580-server-open-{HWE}" not in pk
    assert holds(env) == sorted(["linux-image-generic", "linux-image-generic-hwe-24.04",  # GA beside, held too
                                 "linux-modules-nvidia-595-server-open-generic-hwe-24.04",
                                 "nvidia-headless-no-dkms-595-server-open", "nvidia-utils-595-server"])
    assert gpu_usable_after_reboot(env, 595) == HWE
    assert changes(deploy(env, HWE, nvidia_driver_branch=595).stdout) == 0


SUDO_PW = "a sudo password 42"


def _as_me(env: dict, extra_env: dict, **data) -> subprocess.CompletedProcess:
    """The README's route for a real box: LLMHOST_HOST=me@box, LLMHOST_SSH_KEY, LLMHOST_SUDO_PASSWORD."""
    inv = json.loads((REPO / ".cache/testhost/inventory.json").read_text())[0][1]
    settings = {k: v for k, v in inv.items() if not k.startswith("ssh_")}
    settings.update(driver_standin_archive=env["url"], driver_standin_kernel=HWE, cuda_runfile_url=env["runfile"],
                    nvidia_driver_branch=595,
                    cuda_runfile_sha256=env["sha256"],
                    hf_endpoint=f"http://127.0.0.1:{hub.PORT}", **data)
    cmd = [sys.executable, "-m", "pyinfra", "-y", "inventories/home.py", "tests/driver_deploy.py",
           "--data", "ssh_known_hosts_file=/dev/null", "--data", "ssh_strict_host_key_checking=no"]
    for k, v in settings.items():
        cmd += ["--data", f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMHOST_")}
    run_env.update(LLMHOST_HOST=f"me@{env['h']['address']}", LLMHOST_SSH_KEY=str(testhost.ssh_key()), **extra_env)
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
                       env=run_env)
    p.stdout += p.stderr
    return p


def test_non_root_user_whose_sudo_needs_a_password(env):
    h = env["h"]
    sh(h, "id me >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo me; "
          f"echo 'me:{SUDO_PW}' | chpasswd; install -d -m 700 -o me -g me /home/me/.ssh; "
          "install -m 600 -o me -g me /root/.ssh/authorized_keys /home/me/.ssh/authorized_keys")
    assert "password is required" in sh(h, "su - me -c 'sudo -n true' 2>&1", check=False)  # sudo really asks
    ok = _as_me(env, {"LLMHOST_SUDO_PASSWORD": SUDO_PW})
    assert ok.returncode == 0, ok.stdout[-4000:]
    assert changes(ok.stdout) == 0  # the driver is converged; facts (dpkg, holds, modules) were read through sudo
    assert SUDO_PW not in ok.stdout
    missing = _as_me(env, {})
    assert missing.returncode != 0
    assert "Traceback" not in missing.stdout, missing.stdout[-3000:]
    assert "sudo asks for a password and there is no terminal to type it: export LLMHOST_SUDO_PASSWORD" \
        in missing.stdout, missing.stdout[-3000:]


def test_proprietary_flavour_with_objects_and_signatures(env):
    """The proprietary flavour (pre-Turing cards): Ubuntu's non-open headless package and the per-kernel module that
    depends on linux-objects-nvidia-* and linux-signatures-nvidia-* at its own version. On a box that never had the
    open flavour: a switch between flavours in place is not tested (the stand-ins would both ship nvidia.ko, and
    how Ubuntu's two per-kernel packages relate is not in the control data read)."""
    h = env["h"]
    sh(h, "apt-mark unhold $(apt-mark showhold | grep -v container) >/dev/null; dpkg --purge $(dpkg-query -W "
          "-f='${Package}\\n' 'linux-modules-nvidia-*' 'nvidia-*' 'libnvidia-*' | grep -v container) >/dev/null")
    publish(env, "595-proprietary")
    p = deploy(env, HWE, nvidia_driver_branch=595, nvidia_driver_flavour="proprietary")
    assert p.returncode == 0, p.stdout[-4000:]
    pk = installed(env)
    kver = "6.11.0-29.29~24.04.1+1"
    assert {pk.get(f"linux-objects-nvidia-595-server-{HWE}"), pk.get(f"linux-signatures-nvidia-{HWE}")} == {kver}
    assert pk["linux-modules-nvidia-595-server-generic-hwe-24.04"] == kver
    assert "nvidia-headless-no-dkms-595-server" in pk and "nvidia-headless-no-dkms-595-server-open" not in pk
    assert "linux-modules-nvidia-595-server-open-generic-hwe-24.04" not in pk
    assert holds(env) == sorted(["linux-image-generic", "linux-image-generic-hwe-24.04",  # GA beside, held too
                                 "linux-modules-nvidia-595-server-generic-hwe-24.04",
                                 "nvidia-headless-no-dkms-595-server", "nvidia-utils-595-server"])
    assert gpu_usable_after_reboot(env, 595) == HWE
    assert changes(deploy(env, HWE, nvidia_driver_branch=595, nvidia_driver_flavour="proprietary").stdout) == 0


# --- Issue 26: generated sequences of what Ubuntu publishes and what users do, against real apt ------------------
SEQUENCES = int(os.environ.get("LLMHOST_DRIVER_SEQUENCES", "2"))  # CI's fixed budget; more on demand
EVENTS = int(os.environ.get("LLMHOST_DRIVER_EVENTS", "5"))
SEED = int(os.environ.get("LLMHOST_DRIVER_SEED", "100"))  # its first story starts fully updated (finding 6)


def pocket_keeps_one_version(pocket) -> None:
    """Ubuntu's archive serves ONE version per package per pocket (REFERENCE §10): older .debs leave the pocket."""
    newest: dict[str, tuple[str, object]] = {}
    for deb in sorted(pocket.glob("*.deb")):
        name, version = deb.name.split("_")[:2]
        if name in newest:
            keep = subprocess.run(["dpkg", "--compare-versions", version, "gt", newest[name][0]]).returncode == 0
            (newest[name][1] if keep else deb).unlink()
            if not keep:
                continue
        newest[name] = (version, deb)


class Ubuntu:
    """The archive of one generated story: -updates and -security pockets, one version per package each. Kernel i is
    6.8.0-(60+i)-generic; driver k is 580.(95+k).05. Canonical builds a kernel's modules against the newest driver
    of the day; a security kernel's modules may reach -updates only later."""

    def __init__(self, env, root):
        self.env, self.updates, self.security = env, root, root / "security"
        self.security.mkdir(parents=True, exist_ok=True)
        self.apt = f"apt-get -o Acquire::http::Proxy=http://{env['h']['gateway']}:8888"  # as publish() above
        self.kernels, self.drivers, self.respins = 0, 0, 0
        self.module_driver: dict[str, int] = {}  # kernel ABI -> driver its published -server module was built against
        self.hwe_kernels: list[str] = []  # the HWE kernels published, oldest first (6.11 series, then 6.14)
        self.on_hwe = False  # the user moved the box to HWE (linux-generic-hwe-24.04 installed)
        self.branch = 580  # the -server branch the settings name (the story may switch it to 595 once)

    @staticmethod
    def abi(i: int) -> str:
        return f"6.8.0-{60 + i}-generic"

    def driver(self, k: int, branch: int | None = None) -> str:
        return f"{branch or self.branch}.{95 + k}.05-0ubuntu0.24.04.1"

    @staticmethod
    def kernel_version(abi: str) -> str:
        """The kernel's package version: 6.8.0-61.61 (GA), 6.11.0-29.29~24.04.1 (HWE, backported)."""
        series, n = abi.split("-")[:2]
        return f"{series}-{n}.{n}" + ("" if series == "6.8.0" else "~24.04.1")

    def metas(self, abi: str) -> tuple[str, ...]:
        """The modules metapackages that follow ``abi``: its flavour's, where it is that flavour's newest kernel."""
        if abi == self.abi(self.kernels):
            return ("generic",)
        return ("generic-hwe-24.04",) if self.hwe_kernels and abi == self.hwe_kernels[-1] else ()

    def modules(self, pocket, abi: str, server: bool = True, flavour: str = "open") -> None:
        """``abi``'s NVIDIA modules built against the day's driver (Ubuntu's desktop driver's: ``server=False``)."""
        branch = self.branch if server else 580  # Ubuntu's desktop driver: 580-noble's control data only
        if server:
            self.module_driver[abi] = self.drivers
        aptarchive.modules(pocket, branch, self.driver(self.drivers, branch), abi,
                           f"{self.kernel_version(abi)}+{self.drivers + 1}", self.metas(abi), flavour=flavour,
                           server=server)

    def publish(self) -> None:
        for pocket, suite in ((self.updates, "llmhost-standin"), (self.security, "noble-security")):
            pocket.mkdir(parents=True, exist_ok=True)
            pocket_keeps_one_version(pocket)
            aptarchive.index(pocket, suite=suite)
        sh(self.env["h"], f"{self.apt} update -qq")

    def base(self) -> None:
        aptarchive.kernel(self.updates, self.abi(0), "6.8.0-60.60")
        aptarchive.kernel_meta(self.updates, "generic", "6.8.0-60.60", self.abi(0))
        aptarchive.driver(self.updates, self.branch, self.driver(0))
        self.modules(self.updates, self.abi(0))
        aptarchive.container_toolkit(self.updates, "1.17.8-1")  # as the earlier tests left it installed
        self.publish()

    def security_kernel(self, modules_same_day: bool) -> str:
        self.kernels += 1
        i = self.kernels
        aptarchive.kernel(self.security, self.abi(i), f"6.8.0-{60 + i}.{60 + i}")
        aptarchive.kernel_meta(self.security, "generic", f"6.8.0-{60 + i}.{60 + i}", self.abi(i))
        if modules_same_day:
            aptarchive.driver(self.security, self.branch, self.driver(self.drivers))
            self.modules(self.security, self.abi(i))
        self.publish()
        return f"security kernel {self.abi(i)}" + ("" if modules_same_day else " (its modules later)")

    def phased_kernel(self) -> str:
        """A kernel in -updates with its modules the same day, its metapackages phased (Phased-Update-Percentage 0:
        Ubuntu's phasing has not reached any box yet; apt, unattended-upgrades included, holds them back)."""
        self.kernels += 1
        i = self.kernels
        version, phased = f"6.8.0-{60 + i}.{60 + i}", {"Phased-Update-Percentage": "0"}
        aptarchive.kernel(self.updates, self.abi(i), version)
        aptarchive.kernel_meta(self.updates, "generic", version, self.abi(i), fields=phased)
        aptarchive.driver(self.updates, self.branch, self.driver(self.drivers))
        self.modules(self.updates, self.abi(i))
        self.publish()
        # apt reads the field (its policy marks the version); whether its upgrade keeps them back (apt 2.6 here) is
        # what the story logs
        assert f"{version} 500 (phased 0%)" in sh(self.env["h"], "apt-cache policy linux-generic")
        upgrade = sh(self.env["h"], f"{self.apt} -s upgrade")
        kept = re.search(r"(?:kept back|deferred due to phasing):\n((?: .*\n)+)", upgrade)  # apt 2.6 / 2.7+
        deferred = bool(kept) and "linux-generic" in kept.group(1).split()
        return (f"kernel {self.abi(i)} in -updates, its metapackages phased (0 %: apt's upgrade "
                + ("keeps them back)" if deferred else "does not keep them back)"))

    def point_release(self) -> str:
        self.drivers += 1
        aptarchive.driver(self.updates, self.branch, self.driver(self.drivers))
        self.publish()
        return f"driver point release {self.driver(self.drivers)} (no module yet)"

    def respin(self) -> str:
        """The newest kernel's modules rebuilt at the same driver (a new package version, same nvidia.ko)."""
        self.respins += 1
        abi = self.abi(self.kernels)
        d = self.module_driver.setdefault(abi, self.drivers)
        aptarchive.modules(self.updates, self.branch, self.driver(d), abi, f"{self.kernel_version(abi)}+{d + 1}.{self.respins}",
                           ("generic",))
        self.publish()
        return f"modules of {abi} respun"

    def lowlatency(self) -> str:
        """The user installs the lowlatency kernel of the newest ABI (GRUB's sort -V puts it before -generic);
        Ubuntu publishes no -server NVIDIA modules metapackage for it in this story."""
        abi = self.abi(self.kernels).replace("-generic", "-lowlatency")
        aptarchive.kernel(self.updates, abi, f"6.8.0-{60 + self.kernels}.{60 + self.kernels}")
        self.publish()
        sh(self.env["h"], f"DEBIAN_FRONTEND=noninteractive {self.apt} install -y -qq linux-image-{abi} >/dev/null")
        return f"lowlatency kernel {abi} installed by the user"

    def ubuntu_drivers(self, flavour: str = "open", lrm: bool = True) -> str:
        """The user opens "Additional Drivers" (`ubuntu-drivers install`): apt is asked for Ubuntu's desktop driver,
        nvidia-driver-580[-open] at the day's driver (580-noble's control data) and, as ubuntu-drivers asks where
        Ubuntu builds them (``lrm``), linux-modules-nvidia-580[-open]-generic (its modules built for every kernel);
        without it the DKMS package is the driver's only module source (the stand-in DKMS builds nothing: such a box
        has no GPU until the deploy's fix). Returns what apt did: held -server packages refuse the swap."""
        if self.branch != 580:
            return "ubuntu-drivers install: not modelled after the branch change (no 595 desktop control data)"
        aptarchive.driver(self.updates, 580, self.driver(self.drivers), flavour=flavour, server=False)
        for i in range(self.kernels + 1):
            self.modules(self.updates, self.abi(i), server=False, flavour=flavour)
        self.publish()
        f = "-open" if flavour == "open" else ""
        want = f"nvidia-driver-580{f}" + (f" linux-modules-nvidia-580{f}-generic" if lrm else "")
        out = sh(self.env["h"], f"DEBIAN_FRONTEND=noninteractive {self.apt} install -y -qq {want} 2>&1 >/dev/null; "
                                "echo exit=$?", check=False)
        return f"ubuntu-drivers install ({flavour}, {'Ubuntu-built modules' if lrm else 'DKMS'}): " + (
            "desktop driver installed" if "exit=0" in out else "apt refused (" + out.strip().splitlines()[0][:80] + ")")

    def hwe(self, modules_same_day: bool) -> str:
        """An HWE kernel in -security under linux-image-generic-hwe-24.04 / linux-generic-hwe-24.04 (Ubuntu's
        linux-meta-hwe-24.04): the first is the 6.11 series, the later ones the roll to 6.14 (a new ABI under the same
        metapackage names), its modules the same day or later. The first time, the user moves the box to HWE (`apt
        install linux-generic-hwe-24.04`, linux-generic stays) and re-runs the deploy, as for any kernel by hand."""
        series = "6.11.0" if not self.hwe_kernels else "6.14.0"
        abi = f"{series}-{29 + len(self.hwe_kernels)}-generic"
        self.hwe_kernels.append(abi)
        version = self.kernel_version(abi)
        aptarchive.kernel(self.security, abi, version)
        aptarchive.kernel_meta(self.security, "generic-hwe-24.04", version, abi)
        if modules_same_day:
            aptarchive.driver(self.security, self.branch, self.driver(self.drivers))
            self.modules(self.security, abi)
        self.publish()
        what = f"HWE kernel {abi}" + ("" if modules_same_day else " (its modules later)")
        if not self.on_hwe:
            self.on_hwe = True
            sh(self.env["h"], f"DEBIAN_FRONTEND=noninteractive {self.apt} install -y -qq linux-generic-hwe-24.04 "
                              ">/dev/null")
            return what + ": the user moves the box to HWE"
        return what + ": the HWE series rolls"

    def branch_change(self) -> str:
        """The user moves the settings to the 595 branch (nvidia_driver_branch=595) the day its user space and its
        modules for every kernel are published (595-server's control data), then re-runs the deploy."""
        if self.branch == 595:
            return "branch change: already on 595"
        self.branch, self.module_driver = 595, {}
        aptarchive.driver(self.updates, 595, self.driver(self.drivers))
        for abi in [self.abi(i) for i in range(self.kernels + 1)] + self.hwe_kernels:
            self.modules(self.updates, abi)
        self.publish()
        return "branch change 580 -> 595 in the settings (user space and modules published), then a deploy"

    def modules_catch_up(self) -> str:
        """Modules for every kernel without one at the newest driver, respun into -updates."""
        for abi in [self.abi(i) for i in range(self.kernels + 1)] + self.hwe_kernels:
            if self.module_driver.get(abi) != self.drivers:
                self.modules(self.updates, abi)
        self.publish()
        return f"modules for every kernel at {self.driver(self.drivers)}"


def boot_has_module(env, branch: int = 580) -> tuple[str, bool]:
    """The kernel GRUB takes, and whether it has an nvidia.ko built against the installed user space (llmhost's
    -server driver of ``branch``, or Ubuntu's 580 desktop driver where the user put that in its place)."""
    kernel, have = boots(env), installed(env)
    srv = "srv" if f"nvidia-utils-{branch}-server" in have or "nvidia-utils-580" not in have else ""
    where = f"nvidia-{branch}srv" if srv else "nvidia-580"
    ko = sh(env["h"], f"cat /lib/modules/{kernel}/kernel/{where}/nvidia.ko 2>/dev/null", check=False).strip()
    user = have.get(f"nvidia-utils-{branch}-server" if srv else "nvidia-utils-580", "?").split("-")[0]
    return kernel, ko == f"stand-in nvidia.ko {user}"


def refused_untouched_then_fixed(env, deploy_run) -> None:
    """A box with Ubuntu's desktop driver: the deploy refuses before any change (every package, version and hold as
    before) and prints the fix; the fix is run as printed (apt purge ... && apt autoremove --purge, -y added): it
    keeps linux-generic."""
    before, held = installed(env), holds(env)
    p = deploy_run()
    assert p.returncode != 0 and "this box runs Ubuntu's desktop NVIDIA driver" in p.stdout, p.stdout[-3000:]
    assert installed(env) == before and holds(env) == held
    fix = re.search(r"\(sudo (apt purge [^)]*? && sudo apt autoremove --purge)\)", " ".join(p.stdout.split()))
    assert fix, p.stdout[-3000:]
    sh(env["h"], "DEBIAN_FRONTEND=noninteractive " + fix.group(1).replace("sudo ", "").replace("apt ", "apt -y "))
    assert "linux-generic" in installed(env) or "linux-generic" not in before


def new_story(env, name: str) -> tuple[Ubuntu, str]:
    """A clean box on a new archive: the earlier tests' packages purged, the sources on this story's pockets, the
    base published and linux-generic installed (as Ubuntu installs a box)."""
    h = env["h"]
    # apt's cache goes too: an earlier test built other contents under the same package versions (Ubuntu never
    # does), and apt reuses a cached .deb of the same name, version and size (seen in CI: a module built against
    # another driver, "dependency problems - leaving unconfigured")
    sh(h, "apt-get clean; apt-mark unhold $(apt-mark showhold | grep -v container) >/dev/null 2>&1; dpkg --purge $(dpkg-query "
          "-W -f='${Package}\\n' 'linux-modules-nvidia-*' 'linux-objects-nvidia-*' 'linux-signatures-nvidia-*' "
          "'nvidia-*' 'libnvidia-*' 'xserver-xorg-video-nvidia-*' 'linux-generic*' 'linux-image-*' 'linux-headers-*' "
          "'linux-lowlatency-headers-*' 2>/dev/null | "
          "grep -v container) "
          ">/dev/null 2>&1; true")
    story, source = Ubuntu(env, env["archive"] / name), f"{env['url']}{name}/"
    sh(h, f"echo 'deb [trusted=yes] {source} ./' > /etc/apt/sources.list.d/llmhost-standin.list && "
          f"echo 'deb [trusted=yes] {env['url']}{name}/security/ ./' > "
          "/etc/apt/sources.list.d/ubuntu-security.list && printf 'Unattended-Upgrade::Origins-Pattern "
          "{ \"origin=llmhost-standin,suite=noble-security\"; };\\n' > /etc/apt/apt.conf.d/52llmhost-test-origins")
    story.base()
    sh(h, f"DEBIAN_FRONTEND=noninteractive {story.apt} install -y -qq linux-generic >/dev/null")
    return story, source


def downgraded(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Packages whose installed version went backwards (dpkg's own comparison), or that the user had and lost."""
    out = []
    for p, v in before.items():
        if p == "linux-generic" and p not in after:
            out.append(f"{p} removed")
        elif p in after and subprocess.run(["dpkg", "--compare-versions", after[p], "lt", v]).returncode == 0:
            out.append(f"{p} {v} -> {after[p]}")
    return out


def protect_kernels(env, running: str) -> set[str]:
    """What Ubuntu's kernel postinst writes (apt's apt-auto-removal, /etc/apt/apt.conf.d/01autoremove-kernels): the
    running kernel and the newest two installed stay; returns those ABIs."""
    images = sh(env["h"], "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' 'linux-image-[0-9]*' 2>/dev/null | "
                          "awk '$1 ~ /^[ih]i/ {sub(\"linux-image-\", \"\", $2); print $2}' | sort -V", check=False)
    kept = {running, *images.split()[-2:]}
    protect = "".join(f'"^linux-.*-{re.escape(k)}$"; "^linux-.*headers-{re.escape(k.rsplit("-", 1)[0])}$"; '
                      for k in sorted(kept))
    sh(env["h"], f"echo 'APT::NeverAutoRemove {{ {protect}}};' > /etc/apt/apt.conf.d/01autoremove-kernels")
    return kept


def kept_from_autoremove(env, running: str) -> list[str]:
    """Issue 26's invariant: the packages of every kernel beyond the newest two and the running one (its image,
    headers and NVIDIA modules) are autoremovable (`apt-get -s autoremove` takes them), unless an installed kernel
    metapackage depends on that kernel or the user installed it by hand (both the user's own choice, not the
    deploy's). Returns the packages apt would keep that it should not."""
    h, have = env["h"], installed(env)
    kept = protect_kernels(env, running)
    images = {p[len("linux-image-"):] for p in have if re.fullmatch(r"linux-image-\d\S*", p)}
    metas = sh(h, "dpkg-query -W -f='${db:Status-Abbrev} ${Depends}\\n' 'linux-image-generic*' 2>/dev/null | "
                  "awk '$1 ~ /^[ih]i/'", check=False)
    needed = set(re.findall(r"linux-image-(\d[^\s,|()]*)", metas))
    manual = {p[len("linux-image-"):] for p in sh(h, "apt-mark showmanual 'linux-image-[0-9]*'").split()}
    beyond = images - kept - needed - manual
    remv = set(re.findall(r"^Remv (\S+)", sh(h, "apt-get -s autoremove"), re.M))
    return sorted(p for p in have for abi in beyond if p.endswith("-" + abi) and p not in remv)


DRIVER_PACKAGES = re.compile(r"^(nvidia-|libnvidia-|xserver-xorg-video-nvidia-|linux-(modules|objects)-nvidia-|"
                             r"linux-signatures-nvidia-)")


def removed_unsaid(before: dict[str, str], after: dict[str, str], out: str) -> list[str]:
    """Issue 26: nothing the user installed outside the driver set is removed without the run saying so (by name)."""
    return sorted(p for p in set(before) - set(after) if not DRIVER_PACKAGES.match(p) and p not in out)


def unserved(env, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Packages a deploy moved to a version the archive does not serve (issue 26: every version pinned is one the
    archive serves; `apt-cache madison` lists what the pockets have)."""
    moved = sorted(p for p, v in after.items() if before.get(p) != v)
    if not moved:
        return []
    served = sh(env["h"], "apt-cache madison " + " ".join(moved), check=False)
    have = {tuple(x.strip() for x in line.split("|")[:2]) for line in served.splitlines() if "|" in line}
    return [f"{p} {after[p]}" for p in moved if (p, after[p]) not in have]


def test_a_fully_updated_box_in_the_modules_late_window_keeps_its_kernel_metapackage(env):
    """(6) One version per pocket: linux-image-generic 6.8.0-61.61 in -security with its modules a day late,
    6.8.0-60.60 in -updates. The box is fully updated (apt full-upgrade) before its first deploy. Was: the set fell
    back to 6.8.0-60.60, a downgrade that removed linux-generic. Now nothing moves backwards: the module set follows
    the running kernel, 6.8.0-61 is named and its reboot withheld; when its module comes, the next run moves."""
    h = env["h"]
    story, source = new_story(env, "finding6")
    story.security_kernel(modules_same_day=False)
    sh(h, f"DEBIAN_FRONTEND=noninteractive {story.apt} full-upgrade -y -qq >/dev/null")
    before = installed(env)
    assert before[K] == "6.8.0-61.61" and "linux-generic" in before
    p = deploy(env, story.abi(0), driver_standin_archive=source)
    assert p.returncode == 0, p.stdout[-4000:]
    after = installed(env)
    assert downgraded(before, after) == [] and after[K] == "6.8.0-61.61"
    assert f"the kernel {story.abi(1)} boots next and has no nvidia" in p.stdout
    assert {K, M, *USER} <= set(holds(env))
    assert after[f"linux-modules-nvidia-580-server-open-{story.abi(0)}"]  # the running kernel keeps the GPU
    assert changes(deploy(env, story.abi(0), driver_standin_archive=source).stdout) == 0
    story.modules_catch_up()
    p = deploy(env, story.abi(0), driver_standin_archive=source)
    assert p.returncode == 0 and "boots next and has no nvidia" not in p.stdout, p.stdout[-4000:]
    assert boot_has_module(env) == (story.abi(1), True)


def test_a_desktop_driver_from_additional_drivers_is_refused_untouched_and_the_printed_fix_gives_the_gpu(env):
    """(1) with real apt and Ubuntu's desktop packages (580-noble's control data): `ubuntu-drivers install` left
    nvidia-driver-580-open and linux-modules-nvidia-580-open-generic, and the GPU works. The deploy refuses before any
    change; the fix it prints, run as printed, then the deploy give the -server set with the running kernel's module,
    held; a second run changes nothing; Additional Drivers asked again is refused by apt (the holds)."""
    story, source = new_story(env, "desktop")
    assert story.ubuntu_drivers() == "ubuntu-drivers install (open, Ubuntu-built modules): desktop driver installed"
    assert boot_has_module(env) == (story.abi(0), True) and "nvidia-utils-580" in installed(env)
    refused_untouched_then_fixed(env, lambda: deploy(env, story.abi(0), driver_standin_archive=source))
    p = deploy(env, story.abi(0), driver_standin_archive=source)
    assert p.returncode == 0, p.stdout[-4000:]
    have = installed(env)
    assert not {"nvidia-driver-580-open", "nvidia-utils-580", "linux-modules-nvidia-580-open-generic"} & set(have)
    assert {K, M, *USER} <= set(holds(env)) and "linux-generic" in have
    assert boot_has_module(env) == (story.abi(0), True) and "nvidia-utils-580-server" in have
    assert changes(deploy(env, story.abi(0), driver_standin_archive=source).stdout) == 0
    assert story.ubuntu_drivers().startswith("ubuntu-drivers install (open, Ubuntu-built modules): apt refused")
    assert installed(env) == have


def test_old_kernels_leave_with_apt_autoremove_and_their_modules_with_them(env):
    """(7) Three security kernels, each moved to by a deploy (its modules the same day) and booted: the two oldest of
    the four are beyond the newest two and the running one, so `apt autoremove` (with the protection Ubuntu's kernel
    postinst writes) takes them with their headers and NVIDIA modules; the two it keeps have theirs, the GPU stays,
    and a re-run changes nothing. Was: every per-kernel modules package the deploy named became manually installed,
    kept its kernel, and /boot grew without bound."""
    story, source = new_story(env, "autoremove")
    running = story.abi(0)
    for _ in range(3):
        story.security_kernel(modules_same_day=True)
        p = deploy(env, running, driver_standin_archive=source)
        assert p.returncode == 0, p.stdout[-4000:]
        running = gpu_usable_after_reboot(env)  # the reboot the deploy asked for
    assert running == story.abi(3)
    assert kept_from_autoremove(env, running) == []
    sh(env["h"], f"DEBIAN_FRONTEND=noninteractive {story.apt} autoremove -y -qq >/dev/null")
    have = installed(env)
    for i, stays in ((0, False), (1, False), (2, True), (3, True)):
        abi = story.abi(i)
        own = {f"linux-image-{abi}", f"linux-headers-{abi}", f"linux-modules-nvidia-580-server-open-{abi}"}
        assert (own <= set(have)) if stays else not (own & set(have)), (abi, sorted(have))
    assert gpu_usable_after_reboot(env) == running
    assert changes(deploy(env, running, driver_standin_archive=source).stdout) == 0


def test_generated_sequences_keep_the_gpu_and_the_holds(env, tmp_path):
    """Issue 26: sequences drawn (seeded) from what Ubuntu publishes (a security kernel with its modules the same day
    or later, a driver point release without modules, modules catching up, a respin) and what users and the box do
    (unattended-upgrades from -security, and with -updates enabled, a kernel whose metapackages are phased, a branch
    change 580 -> 595 in the settings, `apt upgrade`, `apt full-upgrade`, `apt
    autoremove`, a lowlatency kernel installed, the move to HWE and its series roll (6.11 -> 6.14, modules the same
    day or later), `ubuntu-drivers install` (Ubuntu's desktop driver, also as the box's
    starting point: the deploy must refuse untouched, the user runs the printed fix), a deploy, a reboot into GRUB's
    choice), against real apt + dpkg + unattended-upgrades and pockets that keep one version per package.
    After every step: the kernel that boots has an nvidia.ko built against the installed user space, or the last
    deploy named that kernel (the user does not reboot then); after every deploy: the set is held, a second run
    changes nothing, nothing installed moved backwards and linux-generic is kept (finding 6: half the stories start
    on a box fully updated inside a modules-a-day-late window)."""
    import random

    h = env["h"]
    log = []
    for seq in range(SEQUENCES):
        rnd = random.Random(SEED + seq)
        story, source = new_story(env, f"gen{seq}")
        # a box fully updated before its first deploy, inside a modules-a-day-late window (finding 6), or not
        first = ["security-kernel-late", "apt-full-upgrade"] if rnd.random() < 0.5 else []
        if rnd.random() < 0.5:  # issue 26 (1): the box came with Ubuntu's desktop driver (Additional Drivers)
            first.append("ubuntu-drivers")
        running, named = story.abi(0), ""
        events = first + ["deploy", "reboot"] + [rnd.choice([
            "security-kernel", "point-release", "modules", "respin", "unattended", "unattended-updates",
            "apt-upgrade", "apt-full-upgrade", "autoremove", "deploy", "deploy", "reboot", "lowlatency",
            "ubuntu-drivers", "hwe", "phased", "branch"])
            for _ in range(EVENTS)] + ["deploy"]
        for step, event in enumerate(events):
            what, deploys = event, event in ("deploy", "lowlatency")
            if event.startswith("security-kernel"):
                what = story.security_kernel(event == "security-kernel" and rnd.random() < 0.5)
            elif event == "point-release":
                what = story.point_release()
            elif event == "phased":
                what = story.phased_kernel()
            elif event == "branch":  # issue 26 (2): kernel modules and user space move together, one reboot
                deploys = story.branch == 580
                what = story.branch_change()
            elif event == "modules":
                what = story.modules_catch_up()
            elif event == "respin":
                what = story.respin()
            elif event == "lowlatency":  # a kernel installed by hand, then the deploy re-run (README: do so)
                what = story.lowlatency() + ", then a deploy"
            elif event == "ubuntu-drivers":  # open or proprietary, Ubuntu-built modules or DKMS
                what = story.ubuntu_drivers("open" if rnd.random() < 0.5 else "proprietary", rnd.random() < 0.75)
            elif event == "hwe":  # the first time with a deploy after it (README: re-run after a kernel by hand)
                deploys = not story.on_hwe
                what = story.hwe(rnd.random() < 0.5) + (", then a deploy" if deploys else "")
            elif event == "unattended":
                unattended_upgrade(env)
            elif event == "unattended-updates":  # the user enabled -updates for unattended-upgrades too
                sh(h, "printf 'Unattended-Upgrade::Origins-Pattern { \"origin=llmhost-standin,suite=noble-security\"; "
                      "\"origin=llmhost-standin,suite=llmhost-standin\"; };\\n' > "
                      "/etc/apt/apt.conf.d/52llmhost-test-origins")
                unattended_upgrade(env)
            elif event in ("apt-upgrade", "apt-full-upgrade", "autoremove"):
                verb = {"apt-upgrade": "upgrade", "apt-full-upgrade": "full-upgrade", "autoremove": "autoremove"}[event]
                protect_kernels(env, running)  # as Ubuntu's kernel postinst leaves it
                sh(h, f"DEBIAN_FRONTEND=noninteractive {story.apt} {verb} -y -qq >/dev/null")
            if deploys:
                before = installed(env)
                run = lambda: deploy(env, running, driver_standin_archive=source,  # noqa: E731
                                     nvidia_driver_branch=story.branch)
                if {"nvidia-driver-580-open", "nvidia-driver-580"} & set(before):  # refused untouched; the printed fix
                    refused_untouched_then_fixed(env, run)
                    what += " (refused: desktop driver; the printed fix run, then a deploy)"
                    before = installed(env)
                p = run()
                if p.returncode:
                    print("\n".join(log + [what]), p.stdout[-6000:], sep="\n")
                assert p.returncode == 0, (log, p.stdout[-4000:])
                after = installed(env)
                assert downgraded(before, after) == [], log  # nothing backwards, linux-generic kept
                assert unserved(env, before, after) == [], log  # every version it moved to is one a pocket serves
                assert removed_unsaid(before, after, p.stdout) == [], log  # outside the set: named, or kept
                assert kept_from_autoremove(env, running) == [], log  # old kernels leave with `apt autoremove`
                kernel, ok = boot_has_module(env, story.branch)
                named = kernel if f"the kernel {kernel} boots next and has no nvidia" in p.stdout else ""
                held = holds(env)
                # every kernel metapackage and the modules metapackage the set follows (the HWE one once its
                # modules are out; until then the running GA kernel's) are held; the other one is not (it would
                # block the user space's next move: its module pins the old driver)
                b = story.branch
                user, mods = [u.replace("580", str(b)) for u in USER], M.replace("580", str(b))
                want = {K, *user, *(["linux-image-generic-hwe-24.04"] if story.on_hwe else [])}
                assert want <= set(held) and len({mods, mods + "-hwe-24.04"} & set(held)) == 1, (log, held)
                assert not [x for x in held if "580" in x] or b == 580, (log, held)  # the old branch released
                # finding 7: per-kernel modules stay automatically installed, so they leave with their kernels
                manual = sh(h, "apt-mark showmanual 'linux-modules-nvidia-*'").split()
                assert not [m for m in manual if re.search(r"-\d+\.\d+\.\d+-\d+-", m)], (log, manual)
                assert changes(run().stdout) == 0, log
            if event == "reboot":
                kernel, ok = boot_has_module(env, story.branch)
                if named == kernel:
                    what = f"reboot withheld ({kernel} was named)"
                else:
                    running = kernel
            log.append(f"{seq}.{step} {what}")
            if "deploy" not in events[:step + 1]:
                continue  # no driver before the first deploy: nothing to keep yet
            kernel, ok = boot_has_module(env, story.branch)
            assert ok or named == kernel, (f"after {what}: {kernel} would boot without a module at the user space's "
                                           f"version", log)
    (Path(os.environ.get("LLMHOST_DRIVER_LOG", tmp_path / "sequences.txt"))).write_text("\n".join(log) + "\n")
    print("\n".join(log))
