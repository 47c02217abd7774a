"""Real tier, issue 9: the driver component with real apt, real dpkg holds and Debian's real unattended-upgrades,
against a local archive of named stand-in packages (tests/aptarchive.py) served over HTTP on the test host's
gateway, so apt reaches it only through the proxy the deploy configures (http_proxy) and the proxy's log shows it.

The test host is a Debian 12 container: it runs the CI machine's kernel, so its `uname -r` is that kernel and cannot
change. The stand-in kernel packages therefore use that ABI as "the running kernel"; a kernel *update* is a newer
ABI whose module must arrive with it (checked on disk, /lib/modules/<new>/.../nvidia.ko); booting into it is not
possible in a container and is not claimed. The explicit test-only setting driver_standin_archive lets the driver
step run on this GPU-less Debian host; loading modules and rebooting are reported as skipped there.
"""

from __future__ import annotations

import json
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
GA_OLD = "6.8.0-48-generic"  # a GA kernel that is installed but not running
NEW = "6.11.0-30-generic"  # the security update that arrives later


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
    running = sh(h, "uname -r").strip()
    url = f"http://{h['gateway']}:{HTTP_PORT}/"
    path, sha256 = aptarchive.cuda_runfile(archive)  # NVIDIA's URL layout, a named stand-in runfile
    yield {"h": h, "archive": archive, "url": url, "running": running, "runfile": url + path, "sha256": sha256}
    os.killpg(server.pid, 15)
    server.wait(10)
    testhost.down()
    hub.down()


def sh(h: dict, command: str, check: bool = True) -> str:
    return testhost.ssh(h["address"], command, check=check, timeout=300).stdout


def deploy(env: dict, **data) -> subprocess.CompletedProcess:
    # The Hub only on the controller's loopback here (this deploy fetches no weights), so no_proxy holds nothing of
    # the gateway and the runfile's curl must take the proxy like apt.
    data = {"driver_standin_archive": env["url"], "cuda_runfile_url": env["runfile"],
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


def publish(env: dict, stage: str) -> None:
    """(Re)build the archive for a stage of the story; each stage adds packages, nothing is taken away."""
    run, pool = env["running"], env["archive"]
    if stage == "ga":
        aptarchive.kernel(pool, run, "1.0")
        aptarchive.deb(pool, "linux-image-generic", "1.0", depends=f"linux-image-{run}")
        aptarchive.driver(pool, 580, "580.95.05-0ubuntu1", {run: "1.0"}, {"generic": run})
        aptarchive.container_toolkit(pool, "1.17.5-1")
    if stage == "toolkit-1.17.8":
        aptarchive.container_toolkit(pool, "1.17.8-1")
    if stage == "hwe":  # linux-image-generic moves to an older GA kernel; the HWE metapackage owns the running one
        aptarchive.kernel(pool, GA_OLD, "6.8.0-48.48")
        aptarchive.deb(pool, "linux-image-generic", "6.8.0-48.48", depends=f"linux-image-{GA_OLD}")
        aptarchive.deb(pool, "linux-image-generic-hwe-24.04", "1.0", depends=f"linux-image-{run}")
        aptarchive.driver(pool, 580, "580.95.05-0ubuntu1", {run: "1.0", GA_OLD: "6.8.0-48.48"},
                          {"generic": GA_OLD, "generic-hwe-24.04": run})
    if stage == "kernel-update":  # a security kernel, its module, and a newer user space that must wait
        aptarchive.kernel(pool, NEW, "6.11.0-30.30")
        aptarchive.deb(pool, "linux-image-generic-hwe-24.04", "6.11.0-30.30", depends=f"linux-image-{NEW}")
        aptarchive.driver(pool, 580, "580.95.05-0ubuntu1", {NEW: "6.11.0-30.30"}, {"generic-hwe-24.04": NEW})
        aptarchive.deb(pool, "nvidia-utils-580-server", "580.105.08-0ubuntu1", conflicts="nvidia-utils-595-server")
    if stage == "595":
        aptarchive.driver(pool, 595, "595.58.03-0ubuntu1", {run: "1.0", NEW: "6.11.0-30.30"},
                          {"generic-hwe-24.04": NEW})
    aptarchive.index(pool)


def test_ga_kernel_gets_the_ga_modules_package_through_the_proxy(env):
    publish(env, "ga")
    sh(env["h"], f"echo 'deb [trusted=yes] {env['url']} ./' > /etc/apt/sources.list.d/kernel.list && "
                 "apt-get -o Acquire::http::Proxy=http://{gw}:8888 update -qq && "
                 "DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::http::Proxy=http://{gw}:8888 install -y -qq "
                 "linux-image-generic >/dev/null".replace("{gw}", env["h"]["gateway"]))
    proxy_log = testhost.STATE / "tinyproxy.log"
    before = proxy_log.read_text() if proxy_log.exists() else ""
    p = deploy(env)
    assert p.returncode == 0, p.stdout[-4000:]
    pk = installed(env)
    assert "linux-modules-nvidia-580-server-open-generic" in pk
    assert f"linux-modules-nvidia-580-server-open-{env['running']}" in pk
    assert pk["nvidia-utils-580-server"] == "580.95.05-0ubuntu1"
    assert not any("hwe" in name for name in pk)
    holds = sh(env["h"], "apt-mark showhold").split()
    assert [p for p in holds if "container" not in p] == ["nvidia-headless-no-dkms-580-server-open",
                                                          "nvidia-utils-580-server"]
    assert sorted(p for p in holds if "container" in p) == sorted(aptarchive.TOOLKIT)  # newest, held
    assert pk["nvidia-container-toolkit"] == "1.17.5-1"
    assert sh(env["h"], f"ls /lib/modules/{env['running']}/kernel/nvidia-580srv/").split() == ["nvidia.ko"]
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
    assert changes(deploy(env).stdout) == 0


def test_runfile_with_the_wrong_sha256_is_never_run(env):
    """A runfile whose sha256 is not the pinned one (a corrupted or swapped download) stops the deploy before it
    runs: no toolkit, no marker. With the right pin the next run installs it."""
    h = env["h"]
    sh(h, "rm -rf /usr/local/cuda-12.1")
    bad = deploy(env, cuda_runfile_sha256="ab" * 32)
    assert bad.returncode != 0, bad.stdout[-3000:]
    assert "SHA256 did not match" in bad.stdout, bad.stdout[-3000:]
    assert sh(h, "ls /usr/local/cuda-12.1 2>/dev/null; true").strip() == ""
    good = deploy(env)
    assert good.returncode == 0, good.stdout[-3000:]
    assert "release 12.1" in sh(h, "/usr/local/cuda-12.1/bin/nvcc")
    assert sh(h, "ls /var/cache/llmhost").split() in ([], ["uv"])  # no runfile left
    assert changes(deploy(env).stdout) == 0


def test_hwe_kernel_gets_the_hwe_modules_package_and_only_it(env):
    h = env["h"]
    sh(h, "apt-mark unhold $(apt-mark showhold | grep -v container) >/dev/null; dpkg --purge $(dpkg-query -W "
          "-f='${Package}\\n' 'linux-modules-nvidia-*' 'nvidia-headless-*' 'nvidia-utils-*' 'nvidia-kernel-common-*' "
          "'linux-image-generic') >/dev/null")
    publish(env, "hwe")
    sh(h, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-image-generic "
          "linux-image-generic-hwe-24.04 >/dev/null")
    p = deploy(env)
    assert p.returncode == 0, p.stdout[-4000:]
    assert "linux-modules-nvidia-580-server-open-generic-hwe-24.04" in p.stdout
    pk = installed(env)
    assert "linux-modules-nvidia-580-server-open-generic-hwe-24.04" in pk
    assert f"linux-modules-nvidia-580-server-open-{env['running']}" in pk
    assert "linux-modules-nvidia-580-server-open-generic" not in pk  # the GA one would follow the other kernel
    assert f"linux-modules-nvidia-580-server-open-{GA_OLD}" not in pk


def test_kernel_update_by_unattended_upgrades_brings_its_module_and_keeps_the_user_space(env):
    h = env["h"]
    publish(env, "kernel-update")
    sh(h, "printf 'Unattended-Upgrade::Origins-Pattern { \"origin=llmhost-standin\"; };\\n' "
          "> /etc/apt/apt.conf.d/52llmhost-test-origins && apt-get update -qq")
    out = sh(h, "unattended-upgrade -v 2>&1; echo exit=$?", check=False)
    assert "exit=0" in out, out[-3000:]
    pk = installed(env)
    assert pk["linux-image-generic-hwe-24.04"] == "6.11.0-30.30", out[-3000:]
    assert f"linux-image-{NEW}" in pk
    assert f"linux-modules-nvidia-580-server-open-{NEW}" in pk, out[-3000:]
    assert sh(h, f"cat /lib/modules/{NEW}/kernel/nvidia-580srv/nvidia.ko").strip() == "stand-in nvidia.ko 580.95.05"
    assert pk["nvidia-utils-580-server"] == "580.95.05-0ubuntu1"  # held + blacklisted: the newer one waits
    assert changes(deploy(env).stdout) == 0


def test_running_kernel_that_lost_its_module_is_reported_and_repaired(env):
    h = env["h"]
    abi_pkg = f"linux-modules-nvidia-580-server-open-{env['running']}"
    sh(h, f"dpkg --purge --force-depends {abi_pkg} >/dev/null 2>&1")
    assert not sh(h, f"ls /lib/modules/{env['running']}/kernel/nvidia-580srv/ 2>/dev/null", check=False).strip()
    p = deploy(env)
    assert p.returncode == 0, p.stdout[-4000:]
    assert f"the running kernel {env['running']} has no nvidia module" in p.stdout
    assert abi_pkg in installed(env)
    assert sh(h, f"ls /lib/modules/{env['running']}/kernel/nvidia-580srv/").split() == ["nvidia.ko"]
    assert changes(deploy(env).stdout) == 0


def test_container_toolkit_pin_change_goes_through_the_holds(env):
    h = env["h"]
    publish(env, "toolkit-1.17.8")
    sh(h, "apt-get update -qq")
    assert "Packages were" not in sh(h, "apt-get install -s nvidia-container-toolkit=1.17.8-1 2>&1", check=False)
    p = deploy(env, container_toolkit_version="1.17.8-1")
    assert p.returncode == 0, p.stdout[-4000:]
    pk = installed(env)
    assert {name: pk[name] for name in aptarchive.TOOLKIT} == {name: "1.17.8-1" for name in aptarchive.TOOLKIT}
    assert sorted(x for x in sh(h, "apt-mark showhold").split() if "container" in x) == sorted(aptarchive.TOOLKIT)
    assert changes(deploy(env, container_toolkit_version="1.17.8-1").stdout) == 0


def test_branch_change_goes_through_the_holds(env):
    h = env["h"]
    publish(env, "595")
    sh(h, "apt-get update -qq")
    p = deploy(env, nvidia_driver_branch=595)
    assert p.returncode == 0, p.stdout[-4000:]
    assert "Release the holds of the previous driver branch" in p.stdout
    pk = installed(env)
    assert "nvidia-utils-595-server" in pk and "nvidia-utils-580-server" not in pk
    assert "linux-modules-nvidia-595-server-open-generic-hwe-24.04" in pk
    assert [x for x in sh(h, "apt-mark showhold").split() if "container" not in x] == [
        "nvidia-headless-no-dkms-595-server-open", "nvidia-utils-595-server"]
    # On a real box the reboot that follows boots the new kernel, which has its 595 module. This container keeps
    # running its one kernel, whose 580 module left with the 580 branch: the next run sees that and repairs it.
    second = deploy(env, nvidia_driver_branch=595)
    assert second.returncode == 0, second.stdout[-4000:]
    assert f"linux-modules-nvidia-595-server-open-{env['running']}" in installed(env)
    assert changes(deploy(env, nvidia_driver_branch=595).stdout) == 0


SUDO_PW = "a sudo password 42"


def _as_me(env: dict, extra_env: dict, **data) -> subprocess.CompletedProcess:
    """The README's route for a real box: LLMHOST_HOST=me@box, LLMHOST_SSH_KEY, LLMHOST_SUDO_PASSWORD."""
    inv = json.loads((REPO / ".cache/testhost/inventory.json").read_text())[0][1]
    settings = {k: v for k, v in inv.items() if not k.startswith("ssh_")}
    settings.update(driver_standin_archive=env["url"], cuda_runfile_url=env["runfile"], nvidia_driver_branch=595,
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

