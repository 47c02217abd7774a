"""The disposable test host: Debian 12 from debootstrap, booted with systemd-nspawn behind a private veth pair.

    python -m testing.testhost up [N]     # boot N hosts (default 1), write .cache/testhost/inventory.json
    python -m testing.testhost down       # stop them (by PID) and remove their trees

It is a real systemd host reached over SSH: sshd inside, the project's key injected at each boot, apt and pip
going out through a tinyproxy started on the host side of the veth, the host's CA certificates copied in (outbound
HTTPS here is intercepted). It has no GPU and no route out. The golden image is cached, keyed on this file and the
package list, so a second boot takes seconds. Traffic goes only between this machine and its own test hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".cache" / "testhost"
IMAGES = Path(os.environ.get("LLMHOST_TESTHOST_CACHE", "/var/cache/llmhost-testhost"))
ROOTS = Path("/var/lib/llmhost-testhost")
PACKAGES = ["systemd", "systemd-sysv", "openssh-server", "python3", "python3-venv", "sudo", "dbus", "iproute2",
            "ca-certificates", "procps", "apt-utils"]  # apt-utils: no "debconf: delaying package configuration"
SUBNET = "10.213.{n}"
FLEET_BRIDGE, FLEET_NET = "llmhost-fleet", "10.214.0"  # the hosts' private link to each other (fleet tests)
PROXY_PORT = 8888
STANDIN = REPO / "testing" / "standin"


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def why_not() -> str | None:
    """Why this machine cannot host a test host (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn, veth)"
    for tool in ("debootstrap", "systemd-nspawn", "tinyproxy", "zstd", "ip", "ssh-keygen"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install debootstrap systemd-container tinyproxy zstd)"
    return None


def host_mirror() -> str:
    """The Debian mirror this machine's own apt uses (so the guest uses the same one)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "security" not in line:
                return line.split()[1]
    raise SystemExit("no Debian mirror found in /etc/apt")


def image_key() -> str:
    import inspect

    text = inspect.getsource(golden_image) + " ".join(PACKAGES)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def golden_image() -> Path:
    """Build (once) and return the packed Debian 12 image."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    image = IMAGES / f"bookworm-{image_key()}.tar.zst"
    if image.exists():
        return image
    build = IMAGES / f"build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    print("testhost: building the Debian 12 image once (debootstrap from the Debian archive: a minute or two)",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    run("debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", "bookworm", str(build), host_mirror(),
        stdout=subprocess.DEVNULL)
    (build / "etc/apt/sources.list").write_text(
        f"deb {host_mirror()} bookworm main\ndeb {host_mirror()} bookworm-updates main\n")
    run("chroot", str(build), "systemctl", "enable", "ssh", "systemd-networkd", stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    (build / "etc/ssh/sshd_config.d/llmhost.conf").write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    tmp = image.with_suffix(".tmp")
    run("tar", "--zstd", "-C", str(build), "-cf", str(tmp), ".")
    tmp.rename(image)
    shutil.rmtree(build, ignore_errors=True)
    print(f"testhost: built {image.name} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return image


def ssh_key() -> Path:
    STATE.mkdir(parents=True, exist_ok=True)
    key = STATE / "id_ed25519"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    return key


def _wait_port(address: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1) as sock:
                if port != 22 or sock.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{address}:{port} did not answer within {timeout:.0f} s")


def start_proxy(gateways: list[str]) -> int:
    conf = STATE / "tinyproxy.conf"
    conf.write_text("\n".join([f"Port {PROXY_PORT}", "Listen 0.0.0.0", "Timeout 600", "MaxClients 100",
                               f"PidFile \"{STATE / 'tinyproxy.pid'}\"", "LogLevel Info",
                               f"LogFile \"{STATE / 'tinyproxy.log'}\"",
                               *[f"Allow {g.rsplit('.', 1)[0]}.0/24" for g in gateways], "ConnectPort 443",
                               "ConnectPort 80", ""]))
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def fleet_bridge() -> None:
    """A bridge with no address on this machine: the test hosts reach each other over it, and this machine routes
    nothing between them or anywhere else (ip_forward stays as it is)."""
    if subprocess.run(["ip", "link", "show", FLEET_BRIDGE], capture_output=True).returncode != 0:
        run("ip", "link", "add", FLEET_BRIDGE, "type", "bridge")
    run("ip", "link", "set", FLEET_BRIDGE, "up")


def _wait_link(name: str, proc: subprocess.Popen, log: str) -> None:
    deadline = time.monotonic() + 30
    while subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{name} never appeared (see {log})")
        time.sleep(0.2)


def boot(n: int, image: Path, key: Path, gateways: list[str], fleet: bool = False) -> dict:
    name = f"llmhost-t{n}"
    root = ROOTS / name
    for link in (f"ve-{name}"[:15], f"vf-{name}"):
        # this name's links from a previous host whose namespace is not released yet: nspawn would stop with "Failed
        # to add new veth interfaces (ve-llmhost-t2:host0): File exists" (seen right after a fleet's teardown)
        subprocess.run(["ip", "link", "delete", link], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    run("tar", "--zstd", "-C", str(root), "-xf", str(image))
    net = SUBNET.format(n=n)
    guest, gw = f"{net}.2", f"{net}.1"
    (root / "etc/systemd/network/10-host0.network").write_text(
        f"[Match]\nName=host0\n[Network]\nAddress={guest}/24\nGateway={gw}\nLinkLocalAddressing=no\n")
    fleet_address = f"{FLEET_NET}.{n + 1}" if fleet else None
    if fleet:
        (root / "etc/systemd/network/11-fleet0.network").write_text(
            f"[Match]\nName=fleet0\n[Network]\nAddress={fleet_address}/24\nLinkLocalAddressing=no\n")
    (root / "etc/hostname").write_text(name + "\n")
    # Its own name resolves locally (sudo looks it up) and nothing is asked of a resolver it cannot reach.
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n{guest} {name}\n")
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("# llmhost test host: no resolver (no route out; names are in /etc/hosts)\noptions timeout:1 attempts:1\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(str(key) + ".pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # The host's CA bundle (with the intercepting proxy's CA), for apt, pip, uv and huggingface_hub.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "usr/local/share/llmhost-ca-bundle.crt")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
    (root / "etc/apt/apt.conf.d/99llmhost-proxy").write_text(f'Acquire::http::Proxy "http://{gw}:{PROXY_PORT}";\n'
                                                              f'Acquire::https::Proxy "http://{gw}:{PROXY_PORT}";\n')
    standin = root / "usr/local/lib/llmhost-standin"
    standin.mkdir(parents=True, exist_ok=True)
    shutil.copy(STANDIN / "openai_standin.py", standin / "openai_standin.py")
    cmd = ["systemd-nspawn", "-b", "-D", str(root), f"--machine={name}", "--register=no", "--keep-unit",
           "--network-veth", "--console=read-only"]
    if fleet:
        cmd.append(f"--network-veth-extra=vf-{name}:fleet0")
    if Path("/opt/wheels").is_dir():
        cmd.append("--bind-ro=/opt/wheels")
    # One uv cache for every test host of this machine (uv locks it for concurrent use): each host still builds
    # its venvs with uv exactly as the deploy says, but a wheel crosses the proxy once per machine, not per host.
    (IMAGES / "uv-cache").mkdir(parents=True, exist_ok=True)
    cmd.append(f"--bind={IMAGES / 'uv-cache'}:/var/cache/llmhost/uv")
    log = open(STATE / f"{name}.console.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    veth = f"ve-{name}"[:15]
    _wait_link(veth, proc, log.name)
    run("ip", "addr", "replace", f"{gw}/24", "dev", veth)
    run("ip", "link", "set", veth, "up")
    if fleet:
        _wait_link(f"vf-{name}", proc, log.name)
        run("ip", "link", "set", f"vf-{name}", "master", FLEET_BRIDGE, "up")
    gateways.append(gw)
    return {"name": name, "pid": proc.pid, "address": guest, "gateway": gw, "root": str(root),
            "fleet_address": fleet_address}


def inventory_data(h: dict, key: Path, hub: str | None) -> dict:
    """Connection data and the test-host settings (GPU-less, stand-in vLLM, proxy, CA, local wheels)."""
    data = {
        "ssh_user": "root", "ssh_key": str(key), "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
        "gpu_host": False, "gpu_card": "rtx-3060-12gb",
        "http_proxy": f"http://{h['gateway']}:{PROXY_PORT}", "ca_bundle": "/usr/local/share/llmhost-ca-bundle.crt",
        "vllm_exec_start_override": "/usr/bin/python3 /usr/local/lib/llmhost-standin/openai_standin.py "
                                    "--host {host} --port {port} --model {served_model_name} "
                                    "--requests-log /var/lib/llmhost/vllm/standin-requests.jsonl {flags}",
    }
    wheels = sorted(Path("/opt/wheels").glob("torch-*+cpu-cp311-*.whl"))
    if wheels:
        version = wheels[-1].name.split("-")[1]
        # the +cpu torch from the machine's local wheel store: PyTorch's CPU index (openwebui_torch_backend's
        # default) is not reachable from these machines
        data.update(pip_find_links=["/opt/wheels"], openwebui_extra_requirements=[f"torch=={version}"],
                    openwebui_torch_backend="none")
    if hub:
        data["hf_endpoint"] = hub
        hub_state = REPO / ".cache" / "hub" / "state.json"
        if hub_state.exists():
            st = json.loads(hub_state.read_text())
            data.update(model_repo=st["repo"], model_revision=st["commit"])
            if st.get("embedding_repo"):
                data.update(rag_embedding_repo=st["embedding_repo"], rag_embedding_revision=st["embedding_commit"])
    return data


LOCK = Path("/run/lock/llmhost-testhost.lock")
_lock_fd: int | None = None


def _lock(timeout: float = 1800) -> None:
    """Test hosts have fixed names and subnets: one run of the real tier at a time on this machine (another
    checkout's run waits here). Held by this process until down() or its exit."""
    global _lock_fd
    if _lock_fd is not None:
        return
    import fcntl

    LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline, told = time.monotonic() + timeout, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _lock_fd = fd
            return
        except BlockingIOError:
            if not told:
                print(f"testhost: another run holds {LOCK}; waiting", file=sys.stderr)
                told = True
            if time.monotonic() > deadline:
                raise SystemExit(f"testhost: {LOCK} still held after {timeout:.0f} s") from None
            time.sleep(2)


def up(count: int = 1, hub_port: int | None = None, fleet: bool = False) -> list[dict]:
    """Boot ``count`` hosts; with ``fleet`` each also gets an interface fleet0 (10.214.0.N+1) on one private bridge."""
    reason = why_not()
    if reason:
        raise SystemExit(f"testhost: {reason}")
    _lock()
    down(release=False)
    STATE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    image = golden_image()
    key = ssh_key()
    gateways: list[str] = []
    if fleet:
        fleet_bridge()
    hosts = [boot(n, image, key, gateways, fleet) for n in range(1, count + 1)]
    proxy_pid = start_proxy(gateways)
    for h in hosts:
        _wait_port(h["address"], 22, 60)
    state = {"hosts": hosts, "proxy_pid": proxy_pid, "boot_s": round(time.monotonic() - t0, 1)}
    (STATE / "state.json").write_text(json.dumps(state, indent=1))
    hub = f"http://{hosts[0]['gateway']}:{hub_port}" if hub_port else None
    inv = [[h["address"], inventory_data(h, key, hub and hub.replace(hosts[0]["gateway"], h["gateway"]))]
           for h in hosts]
    (STATE / "inventory.json").write_text(json.dumps(inv, indent=1))
    print(f"testhost: {len(hosts)} host(s) up in {state['boot_s']} s: "
          + ", ".join(h["address"] for h in hosts), file=sys.stderr)
    return hosts


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait for pid to exit (reaping it when it is our child, so a zombie does not count as alive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not our child: it is gone when signal 0 fails
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.1)
    return False


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_gone(pid, 10):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_gone(pid, 5)


def down(release: bool = True) -> None:
    state_file = STATE / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        print(f"testhost: stopping {len(state['hosts'])} host(s) and deleting their files (Open WebUI's venv is "
              "gigabytes: a minute or two)", file=sys.stderr, flush=True)
        for h in state["hosts"]:
            _kill(h["pid"])
            shutil.rmtree(h["root"], ignore_errors=True)
        _kill(state["proxy_pid"])
        state_file.unlink()
        (STATE / "inventory.json").unlink(missing_ok=True)
    if subprocess.run(["ip", "link", "show", FLEET_BRIDGE], capture_output=True).returncode == 0:
        run("ip", "link", "delete", FLEET_BRIDGE)
    if release:
        _unlock()


def _unlock() -> None:
    global _lock_fd
    if _lock_fd is not None:
        os.close(_lock_fd)  # closing the descriptor releases the flock
        _lock_fd = None


def ssh(address: str, command: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run a command on a test host over SSH (as root)."""
    return subprocess.run(["ssh", "-i", str(STATE / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{address}", command],
                          capture_output=True, text=True, check=check, timeout=timeout)


if __name__ == "__main__":
    if sys.argv[1:2] == ["up"]:
        up(int(sys.argv[2]) if len(sys.argv) > 2 else 1,
           int(os.environ["LLMHOST_HUB_PORT"]) if os.environ.get("LLMHOST_HUB_PORT") else None)
    elif sys.argv[1:2] == ["down"]:
        down()
    else:
        raise SystemExit(__doc__)
