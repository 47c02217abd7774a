"""vLLM under systemd: a dedicated user, a pinned venv (blue/green), flags from the planner, root-only API key."""

from __future__ import annotations

import os

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from operations import python_venv
from operations.context import Context
from operations.shared_ops import generated_secret, secret_file, skipped
from operations.render import rendered
from operations.core import boundary
from operations.core.boundary import shell_word
from operations.core.versions import family_args

START_TIMEOUT = 900


def vllm_requirements(s) -> list[str]:
    """Every package of vLLM's venv at its era's lock (operations/core/locks/vllm-<pin>.txt: vllm==pin, what the era
    needs besides, e.g. 0.6.x's setuptools, and all their dependencies as of the release), so the venv a user gets
    is the one the GPU proof ran. A test host's vllm_requirements_override (vLLM's CPU build) instead."""
    return s.vllm_requirements_override or s.era.locked_requirements()


def uv_args(s) -> list[str]:
    """uv's arguments for vLLM's venv: the era's cut-offs, bytecode compiled; for a test host's override, its pins
    exactly as listed (--no-deps: the CPU build's lock leaves out torchvision, torchaudio and torchcodec, which it
    names but a text model never loads, and whose PyPI builds fail against a +cpu torch), not compiled (21,592
    modules: half a minute of CI on 2 cores, for starts nobody times there)."""
    return ["--no-deps"] if s.vllm_requirements_override else [*uv_cutoffs(s), COMPILE]


def uv_cutoffs(s) -> list[str]:
    """Resolve vLLM's dependencies as of its release (uv --exclude-newer), with per-package exceptions: uv's
    arguments, one item each (quoted once where the command is built)."""
    cutoff = s.vllm_exclude_newer or s.era.exclude_newer
    packages = {**dict(s.era.exclude_newer_package), **s.vllm_exclude_newer_package}
    return ["--exclude-newer", cutoff] + [a for name, date in sorted(packages.items())
                                         for a in ("--exclude-newer-package", f"{name}={date}")]


# vLLM compiles at its first start: Triton builds its launcher in C against Python's headers (vLLM issue 2997:
# "Failed to find C compiler"), torch inductor its kernels in C++ (seen under the unit with vLLM's CPU build on a
# Debian test host: "No working C++ compiler found", then "Python.h: No such file or directory"). A server install
# has neither. python3-dev is the distribution Python's headers, the one uv takes where it is the era's (Ubuntu 24.04:
# 3.12); a Python uv fetches brings its own.
JIT_PACKAGES = ["gcc", "g++", "libc6-dev", "python3-dev"]

# The venv is root's and read-only to vLLM's user: without bytecode compiled at install, every start compiles
# vLLM's imports again (57 s from exec to the engine's first line on the GPU host's first start, 2026-12-01).
COMPILE = "--compile-bytecode"


def cuda_home(s) -> str:
    """CUDA_HOME for vLLM only when the toolkit the deploy installs is the runtime the era's wheels bundle
    (0.6.3.post1: 12.1). vLLM 0.26.0 brings CUDA 13.0; a 12.1 nvcc on CUDA_HOME would be the wrong one for any JIT."""
    if s.gpu_host and s.cuda_version != "none" and s.era.cuda == s.cuda_version:
        return f"/usr/local/cuda-{s.cuda_version}"
    return ""


def multinode_args(s) -> list[str]:
    """vLLM's multi-node mode (mp backend): rank 0 serves the API, the other ranks run --headless."""
    if s.vllm_nnodes <= 1:
        return []
    return ["--distributed-executor-backend=mp", f"--nnodes={s.vllm_nnodes}", f"--node-rank={s.vllm_node_rank}",
            f"--master-addr={s.vllm_master_addr}", f"--master-port={s.vllm_master_port}",
            *(["--headless"] if s.headless else [])]


class RouteToward(FactBase):
    """The network interface this host reaches ``address`` through and its own address on that path: the interface
    holding ``address`` and ``address`` itself (a multi-node rank 0, whose address it is), else the route's device and
    source address (``{}`` if neither).

    Sample output::

        {"interface": "fleet0", "address": "10.214.0.3"}
    """

    @staticmethod
    def default():
        return {}

    def command(self, address: str) -> str:
        a = shell_word(address)
        return (f"d=$(ip -o addr show to {a} 2>/dev/null | awk '{{print $2; exit}}'); if [ -n \"$d\" ]; then "
                f"echo \"${{d%%@*}}\" {a}; else ip -o route get {a} 2>/dev/null | "
                f"sed -n 's/.* dev \\([^ ]*\\).* src \\([^ ]*\\).*/\\1 \\2/p'; fi")

    def process(self, output):
        words = output[0].split() if output else []
        return {"interface": words[0].split("@")[0], "address": words[1]} if len(words) == 2 else {}


def exec_start(ctx: Context, venv: str) -> boundary.Quoted:
    """vLLM's command line for the unit, from an argument list quoted once for systemd (boundary.exec_line)."""
    s = ctx.s
    flags = ctx.plan.flags + family_args(ctx.family) + multinode_args(s)
    if s.vllm_exec_start_override:  # TEST ONLY: each placeholder becomes systemd-quoted words
        word = lambda v: boundary.exec_word(str(v), "vllm_exec_start_override")
        return boundary.Quoted(s.vllm_exec_start_override.format(
            host=word(s.vllm_host), port=s.vllm_port, model=word(ctx.snapshot_path),
            served_model_name=word(s.served_model_name), flags=" ".join(word(f) for f in flags)))
    # A headless rank always takes `vllm serve`: only that CLI acts on --headless (vllm/entrypoints/cli/serve.py);
    # the api_server module ignores it and starts an engine, which stops with "collective_rpc should not be called on
    # follower node" (seen: vLLM's CPU build, rank 1 under its unit on a test host)
    start = [f"{venv}/bin/vllm", "serve", ctx.snapshot_path] if s.era.serve_cli or s.headless else \
        [f"{venv}/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", ctx.snapshot_path]
    args = [*start, "--served-model-name", s.served_model_name, "--host", s.vllm_host, "--port", str(s.vllm_port),
            *s.era.serve_args, *ctx.plan.flags, *family_args(ctx.family),
            *(["--disable-custom-all-reduce"] if s.vllm_nccl_p2p_disable else []), *multinode_args(s)]
    return boundary.exec_line(args, "vLLM's command line")


def env_vars(ctx: Context, route: dict | None = None) -> dict:
    """vllm.env's variables; ``route``: a multi-node host's interface and own address toward rank 0 (RouteToward)."""
    route = (route or {}) if ctx.s.vllm_nnodes > 1 else {}
    return dict(config_root=ctx.s.config_root, data_root=ctx.s.data_root, cuda_home=cuda_home(ctx.s),
                socket_ifname=route.get("interface", ""), host_ip=route.get("address", ""),
                nccl_p2p_disable=ctx.s.vllm_nccl_p2p_disable, flashinfer_sampler_off=ctx.s.era.flashinfer,
                step_timeout=ctx.s.vllm_multinode_step_timeout_s if ctx.s.vllm_nnodes > 1 else None,
                test_env=boundary.Quoted(boundary.env_file(ctx.s.vllm_env_override, "vllm_env_override")))


def unit_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(served_model_name=s.served_model_name, commit=ctx.model_commit, config_root=s.config_root,
                data_root=s.data_root, exec_start=exec_start(ctx, f"{s.install_root}/vllm/current"), probe=ctx.probe,
                vllm_connect=ctx.connect(s.vllm_host), vllm_port=s.vllm_port, start_timeout=START_TIMEOUT,
                headless=s.headless)


@deploy("vLLM service")
def ensure(ctx: Context, weights=None) -> list:
    """Returns the operations whose change means vLLM restarted (verify waits for it then)."""
    s = ctx.s
    if not ctx.serves_vllm:
        skipped(name="vLLM (skipped: a UI host of the fleet)", reason="this host is in ui_hosts only")
        return []
    root = f"{s.install_root}/vllm"
    files.directory(name="vLLM state directory", path=f"{s.data_root}/vllm", user="llmhost-vllm",
                    group="llmhost-vllm", mode="750")
    if s.vllm_api_key_env:  # a fleet: the key its routers hold too, from the controller's environment
        key = secret_file(name=f"API key of the fleet (${s.vllm_api_key_env}, root-only)",
                          path=f"{s.config_root}/vllm.secret.env",
                          content=boundary.env_file({"VLLM_API_KEY": os.environ[s.vllm_api_key_env]},
                                                    f"${s.vllm_api_key_env}"))
    else:
        key = generated_secret(name="API key (generated on the host, root-only)",
                               path=f"{s.config_root}/vllm.secret.env", variable="VLLM_API_KEY")
    changes = [key]
    if s.vllm_exec_start_override:
        skipped(name="vLLM venv (skipped: stand-in)",
                reason="vllm_exec_start_override is set (GPU-less test host): vLLM itself is not installed")
    else:
        apt.packages(name="vLLM's compilers for its start-up JIT (gcc, g++, Python headers)", packages=JIT_PACKAGES,
                     no_recommends=True, _env=ctx.download_env)
        changes.append(python_venv.venv(
            name=f"vLLM {s.vllm_version} venv", root=root, python=s.vllm_python_version, uv=ctx.uv,
            requirements=vllm_requirements(s), index_url=s.pip_index_url, find_links=s.pip_find_links,
            env=ctx.download_env, extra_args=uv_args(s)))
    route = host.get_fact(RouteToward, address=s.vllm_master_addr) if s.vllm_nnodes > 1 else {}
    changes.append(files.put(create_remote_dir=False, name="vLLM environment (no secrets)",
                             src=rendered("vllm.env.j2", **env_vars(ctx, route)),
                             dest=f"{s.config_root}/vllm.env", mode="644"))
    unit = files.put(create_remote_dir=False, name="vllm.service",
                     src=rendered("vllm.service.j2", **unit_vars(ctx)),
                     dest="/etc/systemd/system/vllm.service", mode="644")
    changes += [unit] + ([weights] if weights is not None else [])
    # Decided at execution time (`_if`), so a no-op run evaluates each operation once.
    systemd.daemon_reload(name="Reload systemd (vllm.service changed)", _if=unit.did_change)
    systemd.service(name="vLLM restarted (only when its unit, env, key, venv or weights changed)",
                    service="vllm.service", running=True, restarted=True, _if=any_changed(*changes))
    systemd.service(name="vLLM running and enabled", service="vllm.service", running=True, enabled=True)
    return changes
