"""Version tables (REFERENCE.md §2, §3): vLLM -> torch -> CUDA runtime -> minimum driver, and common cards.

Pure logic, no pyinfra import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

LOCKS = Path(__file__).resolve().parent / "locks"

# Minimum Linux driver for a CUDA runtime (NVIDIA's CUDA toolkit release notes, table 3).
CUDA_MIN_DRIVER: dict[str, str] = {
    "12.1": "530.30.02",
    "12.4": "550.54.14",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "13.0": "580.65.06",
}

# Ubuntu's -server driver branches (canonical/nvidia-graphics-drivers, Launchpad): the ones llmhost installs, and
# the transitional ones whose packages now pull another branch (590-server -> 595-server, LP #2146602).
SERVER_BRANCHES = frozenset({470, 535, 550, 570, 580, 595})
TRANSITIONAL_BRANCHES = {590: 595}

# The newest driver of a branch satisfies the runtimes up to this version.
BRANCH_MAX_CUDA: dict[int, str] = {525: "12.0", 530: "12.1", 535: "12.2", 545: "12.3", 550: "12.4",
                                   555: "12.5", 560: "12.6", 565: "12.7", 570: "12.8", 575: "12.9", 580: "13.0",
                                   595: "13.0"}


def read_lock(path: Path) -> list[str]:
    """A lock file's pins, one ``name==version`` each (comments and blank lines dropped)."""
    return [line.strip() for line in Path(path).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@dataclass(frozen=True)
class Era:
    """Everything that follows from one vLLM pin. One row per version the deploy can install."""

    vllm: str  # the exact pin
    torch: str  # what its wheel pins
    cuda: str  # CUDA runtime its wheels bundle (the host's CUDA toolkit does not matter to it)
    min_compute_capability: float  # oldest GPU its kernels are built for
    exclude_newer: str  # uv --exclude-newer: its dependencies as of its release
    exclude_newer_package: tuple[tuple[str, str], ...]  # per-package cut-offs past exclude_newer
    memory_model: str  # the planner's model: "v0" or "v1"
    help_fixture: str  # tests/fixtures/<this>: the recorded `api_server --help`, every flag we pass is checked
    python: str  # Python for its venv
    requirements: tuple[str, ...]  # besides vllm==pin
    serve_args: tuple[str, ...]  # fixed arguments of this era's api_server
    act_order: bool = True  # GPTQ desc_act (g_idx) honoured; vLLM 0.30 ignores g_idx (vllm #54809)
    serve_cli: bool = False  # started as `vllm serve MODEL` (else `python -m vllm.entrypoints.openai.api_server`)

    @property
    def lock(self) -> Path:
        """The era's lock: every package of its venv at one version (uv pip compile of vllm==pin and its
        requirements for the era's Python on x86_64 Linux, with the era's cut-off). The venv is installed from it."""
        return LOCKS / f"vllm-{self.vllm}.txt"

    @property
    def flashinfer(self) -> bool:
        """Its venv has FlashInfer, whose top-p/top-k sampler vLLM JIT-builds at start (the unit turns it off)."""
        return any(r.startswith("flashinfer-python==") for r in self.locked_requirements())

    def locked_requirements(self) -> list[str]:
        """The lock's pins, one ``name==version`` each (comments dropped)."""
        return read_lock(self.lock)

    @property
    def min_driver(self) -> str:
        """The oldest Linux driver for its CUDA runtime (CUDA_MIN_DRIVER)."""
        return CUDA_MIN_DRIVER[self.cuda]


ERAS: dict[str, Era] = {e.vllm: e for e in [
    # October 2024, V0 engine, CUDA 12.1 (the newest vLLM of the 12.1 line). Kept: a 530-550 driver box can run it.
    # setuptools: its triton imports it at runtime and uv venvs have none. pyairports 0.0.1 was re-uploaded in
    # 2025, so without its own cut-off the pin does not resolve.
    Era("0.6.3.post1", "2.4.0", "12.1", 7.0, "2024-10-20T00:00:00Z",
        (("pyairports", "2026-01-01T00:00:00Z"),), "v0", "vllm-0.6.3.post1-api-server-help.txt", "3.11",
        ("setuptools",), ("--disable-log-requests",)),
    # The default. The newest release that pins the GPU host's torch 2.11.0 (0.20-0.26 do; 0.27+ pin 2.13), so it is
    # the newest one whose rendered command could be started on a real GPU here. Released 2026-07-25 (uv resolves
    # vllm==0.26.0 with --exclude-newer 2026-07-26 and not with 2026-07-25). CUDA 13.0: driver >= 580.65.06 and
    # Turing (sm_75) or newer (CUDA 13 dropped Maxwell, Pascal and Volta). Request logging is off by default
    # (--disable-log-requests no longer exists).
    Era("0.26.0", "2.11.0", "13.0", 7.5, "2026-07-27T00:00:00Z", (), "v1",
        "vllm-0.26.0-api-server-help.txt", "3.12", (), ()),
    # The newest vLLM that installs from PyPI as published: 0.34.0's wheel pins flashinfer-python==0.7.3, which
    # PyPI does not serve (0.7.2.post1 and 0.7.4 only: uv says "there is no version of flashinfer-python==0.7.3").
    # Released 2026-11-01 (uv resolves vllm==0.33.0 with --exclude-newer 2026-11-02 and not with 2026-11-01). torch
    # 2.14.0, CUDA 13.0. GPTQ act-order is ignored (g_idx dropped in 0.30, vllm #54809). Started as `vllm serve`
    # (the api_server module form is deprecated). Its memory model is V1's, as calibrated on 0.26.0. An era a user
    # can pin, not yet the default: its GPU proof (tools/gpu_replay.py with LLMHOST_ERA=0.33.0) has not run.
    Era("0.33.0", "2.14.0", "13.0", 7.5, "2026-11-03T00:00:00Z", (), "v1",
        "vllm-0.33.0-serve-help.txt", "3.12", (), (), act_order=False, serve_cli=True),
]}
DEFAULT_ERA = "0.26.0"  # 0.33.0 becomes the default once its GPU proof has run (issue 28)


@dataclass(frozen=True)
class Family:
    """What a model family needs from vLLM and Open WebUI beyond memory: its tool-call parser (None: the model
    has no tool calling vLLM can parse) and reasoning parser. Open WebUI puts its builtin tools into every chat by
    default (native function calling); vLLM refuses `tools` without --enable-auto-tool-choice --tool-call-parser,
    so a family without a parser gets Open WebUI's prompt-based ("legacy") function calling instead."""

    name: str
    tool_call_parser: str | None
    reasoning_parser: str | None
    why: str


FAMILIES: dict[str, Family] = {f.name: f for f in [
    # Llama 3.0: no tool-calling format; its tokenizer has no <|python_tag|> (id 128010 is a reserved token), and
    # vLLM's llama3_json parser then fails every request (500, REFERENCE §9).
    Family("llama-3.0", None, None, "Llama 3.0 has no tool calling (no <|python_tag|> token)"),
    # Llama 3.1 / 3.2 / 3.3: JSON tool calls after <|python_tag|> (vLLM docs, tool_calling.md: llama3_json).
    Family("llama-3.1", "llama3_json", None, "Llama 3.1+ JSON tool calls (<|python_tag|>)"),
    # Qwen2.5 instruct: Hermes-style <tool_call> tags (vLLM docs: hermes).
    Family("qwen2.5", "hermes", None, "Qwen2.5 Hermes-style <tool_call> tags"),
    # Qwen3: the same <tool_call> tags, and <think> blocks that vLLM's qwen3 reasoning parser moves out of the answer
    # (vLLM docs: tool_calling.md hermes, reasoning_outputs.md qwen3; REFERENCE §10).
    Family("qwen3", "hermes", "qwen3", "Qwen3 Hermes-style <tool_call> tags and <think> reasoning"),
    Family("other", None, None, "no tool-call parser known for this model family"),
]}


def model_family(config: dict) -> Family:
    """The family of a config.json: Llama 3.1+ carry rope_scaling.rope_type 'llama3' (3.0 has none); Qwen2 is
    model_type qwen2, Qwen3 qwen3. Anything else gets no parser (Open WebUI's prompt-based function calling)."""
    mtype = str(config.get("model_type", ""))
    rope = (config.get("rope_scaling") or {}).get("rope_type") or (config.get("rope_scaling") or {}).get("type")
    if mtype == "llama" and int(config.get("vocab_size", 0)) >= 128256:
        return FAMILIES["llama-3.1" if rope == "llama3" else "llama-3.0"]
    if mtype == "qwen2":
        return FAMILIES["qwen2.5"]
    if mtype == "qwen3":
        return FAMILIES["qwen3"]
    return FAMILIES["other"]


def chosen_family(tool_call_parser: str, config: dict) -> Family:
    """The family the deploy serves with: the config's ('auto', the setting vllm_tool_call_parser's default), none
    ('none': no parser, Open WebUI's prompt-based function calling), or the parser the setting names."""
    if tool_call_parser == "auto":
        return model_family(config)
    if tool_call_parser == "none":
        return Family("none", None, None, "vllm_tool_call_parser=none")
    return Family("custom", tool_call_parser, None, "vllm_tool_call_parser")


def family_args(family: Family) -> list[str]:
    """vLLM's flags for the family: tool calling (and reasoning) where it has a parser, nothing otherwise."""
    args = ["--enable-auto-tool-choice", f"--tool-call-parser={family.tool_call_parser}"] \
        if family.tool_call_parser else []
    return args + ([f"--reasoning-parser={family.reasoning_parser}"] if family.reasoning_parser else [])


# What Open WebUI adds to the prompts it sends, from its requests recorded at the stand-in while a real browser chatted
# (tests/fixtures/openwebui/<version>/, tests/test_realhost_openwebui.py), in tokens of Llama 3's own tokenizer and
# prompt format (Meta's tokenizer.model and chat_format.py; tests/test_eras.py recounts them from the recording):
# its longest own prompt (the follow-up, title, tags, query task templates and the RAG template, framed as a message
# with the prompt's begin and assistant header, less the conversation it quotes), the max_tokens of its title task,
# and the builtin tool schemas native function calling puts into every chat turn (laid out as Llama 3.1's JSON tool
# calling does: indent 4, with its instructions). Qwen2's tokenizer was not counted.
OPENWEBUI_PROMPTS: dict[str, dict[str, int]] = {"0.12.4": dict(template_tokens=397, title_max_tokens=1000,
                                                                tools_tokens=7999)}
MIN_CONVERSATION_TOKENS = 1024


def openwebui_prompt_tokens(openwebui_version: str, native_tools: bool) -> int:
    """Tokens Open WebUI's own prompt takes of a context: its longest task prompt plus the title's answer, and with
    native function calling its tool schemas on top (each chat turn carries them)."""
    o = OPENWEBUI_PROMPTS.get(openwebui_version) or OPENWEBUI_PROMPTS[max(OPENWEBUI_PROMPTS)]
    return o["template_tokens"] + o["title_max_tokens"] + (o["tools_tokens"] if native_tools else 0)


def needed_context(openwebui_version: str, native_tools: bool) -> int:
    """The shortest context Open WebUI can chat in: its own prompt plus MIN_CONVERSATION_TOKENS."""
    return openwebui_prompt_tokens(openwebui_version, native_tools) + MIN_CONVERSATION_TOKENS


def conversation_room(max_model_len: int, openwebui_version: str, native_tools: bool) -> int:
    """What is left of max_model_len for the conversation once Open WebUI's own prompt is in; ValueError below
    MIN_CONVERSATION_TOKENS."""
    room = max_model_len - openwebui_prompt_tokens(openwebui_version, native_tools)
    if room < MIN_CONVERSATION_TOKENS:
        raise ValueError(f"max_model_len {max_model_len} leaves {room} tokens for the conversation after Open WebUI "
                         f"{openwebui_version}'s own prompt ({openwebui_prompt_tokens(openwebui_version, native_tools)}"
                         " tokens: its task templates, the title's 1000-token answer"
                         + (", its builtin tool schemas" if native_tools else "") + f"); at least "
                         f"{MIN_CONVERSATION_TOKENS} are needed: raise vllm_max_model_len (or vllm_gpu_memory_utilization)"
                         + (" or set vllm_tool_call_parser=none (prompt-based function calling, no schemas)"
                            if native_tools else ""))
    return room


def check_act_order(vllm_version: str, desc_act: bool) -> None:
    """A GPTQ checkpoint quantized with act-order (desc_act) needs an era that honours g_idx."""
    if desc_act and not era(vllm_version).act_order:
        raise ValueError(f"the checkpoint is GPTQ with desc_act (act-order) and vllm_version={vllm_version} ignores "
                         "g_idx (its output would be garbage): pick a checkpoint without act-order or an older "
                         f"vllm_version ({', '.join(v for v, e in ERAS.items() if e.act_order)})")


def era(vllm_version: str) -> Era:
    """The era of a pin, or ValueError naming the pins that have one."""
    if vllm_version not in ERAS:
        raise ValueError(f"vllm_version={vllm_version} has no era (its torch, CUDA, driver, dependency cut-off and "
                         f"--help are not recorded): choose one of {', '.join(ERAS)}")
    return ERAS[vllm_version]


def vllm_cuda(vllm_version: str) -> str:
    """CUDA runtime that the vLLM wheels of this version bundle (its era's)."""
    return era(vllm_version).cuda


def vllm_engine(vllm_version: str) -> str:
    """The planner's memory model: the era's, else 'v0' before 0.8 (V1 became the default engine in 0.8.0)."""
    if vllm_version in ERAS:
        return ERAS[vllm_version].memory_model
    return "v0" if Version(vllm_version) < Version("0.8.0") else "v1"


def check_vllm_driver(vllm_version: str, driver_branch: int) -> str:
    """Return the CUDA runtime of vllm_version, or raise if the driver branch is too old for it."""
    cuda = vllm_cuda(vllm_version)
    branch_cuda = BRANCH_MAX_CUDA.get(driver_branch)
    if branch_cuda is None:
        known = max(k for k in BRANCH_MAX_CUDA if k <= driver_branch) if driver_branch >= 525 else None
        branch_cuda = BRANCH_MAX_CUDA[known] if known else "11.8"
    if Version(branch_cuda) < Version(cuda):
        raise ValueError(
            f"vllm_version={vllm_version} bundles CUDA {cuda}, which needs driver >= {CUDA_MIN_DRIVER[cuda]}; "
            f"nvidia_driver_branch={driver_branch} supports CUDA {branch_cuda} at most. Raise nvidia_driver_branch "
            f"(580 covers every line) or pin an older vllm_version (0.6.3.post1 is the newest CUDA 12.1 release)")
    return cuda


def check_compute_capability(vllm_version: str, cc: float) -> None:
    need = era(vllm_version).min_compute_capability
    if cc < need:
        raise ValueError(f"vllm_version={vllm_version} needs compute capability >= {need}; this GPU has {cc}: "
                         "pin vllm_version=0.6.3.post1 (sm_70 and newer) or use a newer card")


def driver_satisfies(driver_version: str, cuda: str) -> bool:
    return Version(driver_version) >= Version(CUDA_MIN_DRIVER[cuda])


@dataclass(frozen=True)
class Card:
    name: str
    smi_mib: int  # what nvidia-smi's memory.total says
    cuda_mib: int  # what torch.cuda.mem_get_info()[1] says (the planner uses this)
    compute_capability: float


# cuda_mib: the CUDA-visible total, smaller than nvidia-smi's by the driver's reservation. Where a public
# figure exists it is used (RTX 3060: PyTorch reports "11.76 GiB total capacity"); otherwise smi - 2.0 %.
CARDS: dict[str, Card] = {
    c.name: c
    for c in [
        Card("rtx-3060-12gb", 12288, 12042, 8.6),
        Card("rtx-3060-ti", 8192, 7982, 8.6),
        Card("rtx-3080-10gb", 10240, 10017, 8.6),
        Card("rtx-3080-12gb", 12288, 12042, 8.6),
        Card("rtx-3090", 24576, 24146, 8.6),
        Card("rtx-4060-ti-16gb", 16380, 16072, 8.9),
        Card("rtx-4070", 12282, 11994, 8.9),
        Card("rtx-4080", 16376, 16072, 8.9),
        Card("rtx-4090", 24564, 24080, 8.9),
        Card("a10", 23028, 22564, 8.6),
        Card("l4", 23034, 22478, 8.9),
        Card("a100-40gb", 40960, 40339, 8.0),
        Card("a100-80gb", 81920, 81051, 8.0),
        Card("h100-80gb", 81559, 81121, 9.0),
        Card("h200", 143771, 143155, 9.0),  # measured: nvidia-smi 143771, torch.cuda.mem_get_info 143155.9 MiB
    ]
}


def cuda_visible_mib(smi_name: str, smi_mib: int) -> int:
    """CUDA-visible MiB for a card nvidia-smi reports as (name, memory.total MiB).

    A known card gives its measured/published figure; any other card gets nvidia-smi's total less 256 MiB and
    0.25 %, which reproduces the gaps seen (H200: 615 MiB measured, H100: 438 MiB, RTX 3060: 246 MiB) within 0.4 %.
    """
    key = smi_name.lower().replace("nvidia", "").replace("geforce", "").strip()
    for card in CARDS.values():
        base = card.name.rsplit("-", 1)[0] if card.name.endswith("gb") else card.name
        if base.replace("-", " ") in key and abs(card.smi_mib - smi_mib) <= 0.02 * smi_mib:
            return card.cuda_mib
    return smi_mib - 256 - smi_mib // 400


# --- The NVIDIA driver's decisions: kernel module flavour, module packages for the running kernel ---------------
# Turing (sm_75) and newer can use the open kernel modules; PCI device ids below 0x1e00 are Pascal/Volta or older.
FIRST_TURING_DEVICE_ID = 0x1E00


def driver_flavour(setting: str, pci_device_ids: list[int]) -> str:
    """'open' or 'proprietary' for nvidia_driver_flavour (auto = open unless a card predates Turing)."""
    old = any(d < FIRST_TURING_DEVICE_ID for d in pci_device_ids)
    if setting == "auto":
        return "proprietary" if old else "open"
    if setting == "open" and old:
        raise ValueError("nvidia_driver_flavour=open, but this card predates Turing and cannot use the open kernel "
                         "modules: set nvidia_driver_flavour=proprietary (or auto)")
    return setting
