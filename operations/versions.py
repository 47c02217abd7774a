"""Version tables (REFERENCE.md §2, §3): vLLM -> torch -> CUDA runtime -> minimum driver, and common cards.

Pure logic, no pyinfra import.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import Version

# (first vLLM release of the line, torch, CUDA runtime bundled in the wheels), read from PyPI metadata.
VLLM_LINES: list[tuple[str, str, str]] = [
    ("0.4.2", "2.3", "12.1"),
    ("0.5.4", "2.4.0", "12.1"),
    ("0.6.4", "2.5.1", "12.4"),
    ("0.9.0", "2.7", "12.6"),
    ("0.10.2", "2.8", "12.8"),
    ("0.20", "2.11", "13.0"),
]

# Minimum Linux driver for a CUDA runtime (NVIDIA's CUDA toolkit release notes, table 3).
CUDA_MIN_DRIVER: dict[str, str] = {
    "12.1": "530.30.02",
    "12.4": "550.54.14",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "13.0": "580.65.06",
}

# The newest driver of a branch satisfies the runtimes up to this version.
BRANCH_MAX_CUDA: dict[int, str] = {525: "12.0", 530: "12.1", 535: "12.2", 545: "12.3", 550: "12.4",
                                   555: "12.5", 560: "12.6", 565: "12.7", 570: "12.8", 575: "12.9", 580: "13.0"}


def vllm_cuda(vllm_version: str) -> str:
    """CUDA runtime that the vLLM wheels of this version bundle."""
    v = Version(vllm_version)
    if v < Version(VLLM_LINES[0][0]):
        raise ValueError(f"vllm_version={vllm_version} predates the supported lines (>= {VLLM_LINES[0][0]})")
    cuda = VLLM_LINES[0][2]
    for first, _torch, line_cuda in VLLM_LINES:
        if v >= Version(first):
            cuda = line_cuda
    return cuda


def vllm_engine(vllm_version: str) -> str:
    """'v0' before 0.8 (V1 became the default engine in 0.8.0), else 'v1'."""
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
