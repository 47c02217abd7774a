"""The vLLM flag planner: serving flags derived from the card, the model's config.json and the vLLM version.

Pure logic (no pyinfra import); its command line is operations/plan_cli.py (``llmhost-plan --help``).

Memory model (REFERENCE.md §2), per GPU, in bytes:
    budget    = cuda_total * gpu_memory_utilization
    kv_cache  = budget - weights - non_torch - activation_peak
    blocks    = floor(kv_cache / (16 * kv_bytes_per_token))
weights: every decoder linear at the quantized width plus fp16 scales and packed zeros per group (and g_idx when
desc_act), embeddings and lm_head at 16 bits, norms. activation_peak: the profile run's forward pass over
max_num_batched_tokens tokens plus float32 logits for max_num_seqs sequences (V0 also dequantizes a whole AWQ
matrix for large batches). CUDA graphs are captured after the KV cache is sized, so they must fit in
(1 - gpu_memory_utilization) * cuda_total; if they do not, --enforce-eager is set.
The constants are calibrated on public vLLM startup logs (tests/test_tuning.py keeps them as a table).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from operations.core.versions import CARDS, vllm_engine

GIB = 1024**3
MIB = 1024**2
BLOCK_TOKENS = 16
NON_TORCH_GIB = 0.35  # cuBLAS workspaces + CUDA context growth, V0/V1 logs on sm_8x (vllm #10517)
NON_TORCH_GIB_SM90 = 1.79  # Hopper, Meta-Llama-3-8B on H100 (vllm PR #10511)
MIN_CONTEXT = 1024


class PlanError(ValueError):
    """The model cannot be served on this card with these settings; the message has the numbers and the way out."""


# Dense decoder-only families whose weights, KV and activations the planner models (the calibration runs cover
# llama and qwen2; qwen3 has Qwen2's linear layout with head_dim from its config and two small q/k norms per layer,
# and no run of its own). Anything else is refused by name rather than silently mis-sized.
MODELLED_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2")
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


def refuse_unmodelled(config: dict[str, Any]) -> None:
    mtype = str(config.get("model_type", "?"))
    experts = [k for k in EXPERT_KEYS if config.get(k)]
    if experts:
        raise PlanError(f"model_type={mtype} is a mixture of experts ({experts[0]}={config[experts[0]]}): the planner "
                        "sizes dense models only (experts would be ignored and the weights under-counted many times "
                        "over); pick a dense model or set vllm_max_model_len, vllm_gpu_memory_utilization and "
                        "vllm_max_num_seqs yourself and check vLLM's startup log")
    qm = str((config.get("quantization_config") or {}).get("quant_method", "")).lower()
    if qm and qm not in ("gptq", "awq"):
        raise PlanError(f"quantization {qm!r} is not modelled (only GPTQ and AWQ 4/8-bit; {qm} would be read as "
                        "16-bit weights): pick a GPTQ or AWQ repo")
    if mtype not in MODELLED_TYPES:
        raise PlanError(f"model_type={mtype} is not one the planner models ({', '.join(MODELLED_TYPES)}): its "
                        "weights or attention differ (e.g. phi's fused layers, +28 % weights); pick one of those "
                        "families")


@dataclass(frozen=True)
class Quant:
    method: str | None = None  # gptq, awq, None
    bits: int = 16
    group_size: int = -1
    desc_act: bool = False
    sym: bool = True

    @classmethod
    def of(cls, config: dict[str, Any], quantize_config: dict[str, Any] | None = None) -> "Quant":
        """As vLLM reads it: config.json's quantization_config, else quantize_config.json; 16-bit without either."""
        qc = config.get("quantization_config") or quantize_config
        if not qc:
            return cls()
        method = str(qc.get("quant_method") or ("gptq" if "desc_act" in qc else "")).lower() or None
        return cls(method=method, bits=int(qc.get("bits") or qc.get("w_bit") or 16),
                   group_size=int(qc.get("group_size") or qc.get("q_group_size") or -1),
                   desc_act=bool(qc.get("desc_act", False)), sym=bool(qc.get("sym", True)))


@dataclass(frozen=True)
class ModelSpec:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position_embeddings: int
    tie_embeddings: bool = False
    torch_dtype: str = "float16"
    quant: Quant = field(default_factory=Quant)
    quant_in_config: bool = False  # quantization_config inside config.json (vLLM sees it) vs quantize_config.json
    model_type: str = "llama"

    @classmethod
    def from_config(cls, config: dict[str, Any], quantize_config: dict[str, Any] | None = None) -> "ModelSpec":
        refuse_unmodelled(config)
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            spec = dict(
                hidden=hidden,
                intermediate=int(config["intermediate_size"]),
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab=int(config["vocab_size"]),
                max_position_embeddings=int(config["max_position_embeddings"]),
                tie_embeddings=bool(config.get("tie_word_embeddings", False)),
                torch_dtype=str(config.get("torch_dtype") or config.get("dtype") or "float16"),
            )
        except KeyError as exc:
            raise PlanError(f"config.json lacks {exc.args[0]!r}: only decoder-only transformer configs "
                            "(Llama, Mistral, Qwen2 style) can be planned") from None
        return cls(**spec, quant=Quant.of(config, quantize_config),
                   quant_in_config=bool(config.get("quantization_config")),
                   model_type=str(config.get("model_type", "llama")))

    # --- sizes --------------------------------------------------------------------------------------------
    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each decoder linear of one layer."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def weight_bytes(self, tp: int = 1) -> int:
        linear = 0
        for d_in, d_out in self.linear_shapes():
            n = d_in * d_out
            if self.quant.bits < 16:
                groups = d_in // self.quant.group_size if self.quant.group_size > 0 else 1
                linear += n * self.quant.bits // 8  # packed weights
                linear += groups * d_out * 2  # fp16 scales
                linear += groups * d_out * self.quant.bits // 8  # packed zeros
                if self.quant.desc_act:
                    linear += d_in * 4  # g_idx
            else:
                linear += n * 2
        norms = (2 * self.layers + 1) * self.hidden * 2
        embed = self.vocab * self.hidden * 2 * (1 if self.tie_embeddings else 2)
        return (linear * self.layers + embed) // tp + norms + self.rope_cache_bytes()

    def rope_cache_bytes(self) -> int:
        """vLLM's rotary embedding keeps a cos/sin table of max_position_embeddings x head_dim in the model's
        16-bit dtype on every GPU (a buffer, not a parameter, counted in "Model loading took"): 32 MiB for
        Llama 3.1's 131072 positions."""
        return self.max_position_embeddings * self.head_dim * 2

    def kv_bytes_per_token(self, dtype_bytes: int = 2, tp: int = 1) -> int:
        return 2 * self.layers * max(1, self.kv_heads // tp) * self.head_dim * dtype_bytes

    def activation_bytes_per_token(self, tp: int = 1) -> int:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        return 2 * (3 * self.intermediate // tp + self.hidden + (q + 2 * kv) // tp)


@dataclass(frozen=True)
class GpuSpec:
    memory_mib: int  # CUDA-visible total of one GPU (torch.cuda.mem_get_info()[1] / MiB)
    compute_capability: float = 8.6
    count: int = 1
    name: str = "gpu"

    @classmethod
    def from_card(cls, card: str, count: int = 1) -> "GpuSpec":
        if card not in CARDS:
            raise PlanError(f"unknown card {card!r}; known: {', '.join(CARDS)}; or give the memory in MiB")
        c = CARDS[card]
        return cls(c.cuda_mib, c.compute_capability, count, c.name)


@dataclass
class Plan:
    gpu: str
    vllm_version: str
    engine: str
    tensor_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    dtype: str
    enforce_eager: bool
    total_gib: float
    budget_gib: float
    weights_gib: float
    non_torch_gib: float
    activation_gib: float
    cuda_graph_gib: float
    kv_cache_gib: float
    kv_bytes_per_token: int
    gpu_blocks: int
    kv_tokens: int
    max_concurrency: float
    flags: list[str]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("GPU (CUDA-visible total)", f"{self.total_gib:.2f} GiB x {self.tensor_parallel_size}  [{self.gpu}]"),
            ("budget (x gpu_memory_utilization)", f"{self.budget_gib:.2f} GiB  (x {self.gpu_memory_utilization:.2f})"),
            ("weights", f"{self.weights_gib:.2f} GiB"),
            ("non-torch (CUDA context, cuBLAS)", f"{self.non_torch_gib:.2f} GiB"),
            ("activation peak (profile run)", f"{self.activation_gib:.2f} GiB  ({self.max_num_batched_tokens} tokens,"
             f" {self.max_num_seqs} seqs)"),
            ("KV cache", f"{self.kv_cache_gib:.2f} GiB = {self.gpu_blocks} blocks x 16 tokens"),
            ("KV per token", f"{self.kv_bytes_per_token} B"),
            ("KV tokens", f"{self.kv_tokens}"),
            ("max concurrency at max_model_len", f"{self.max_concurrency:.2f} x {self.max_model_len} tokens"),
            ("CUDA graphs (outside the budget)", f"{self.cuda_graph_gib:.2f} GiB"
             + ("  -> --enforce-eager" if self.enforce_eager else "")),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"vLLM {self.vllm_version} ({self.engine}) plan"] + [f"  {k:<{width}}  {v}" for k, v in rows]
        lines.append("  flags: " + " ".join(self.flags))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _batched_tokens(engine: str, max_model_len: int, total_gib: float) -> int:
    if engine == "v0":
        # V0: chunked prefill is off up to 32K contexts, so the profile batch is a whole max-length prompt.
        return max(max_model_len, 2048) if max_model_len <= 32768 else 512
    # V1 (0.26.0 engine/arg_utils.py, the api_server's defaults): 8192 on cards of >= 70 GiB, 2048 below.
    # The planner passes it explicitly, so the plan and an emulated small card use the same profile batch.
    return 8192 if total_gib >= 70 else 2048


def _graph_gib(model: ModelSpec, max_num_seqs: int) -> float:
    return 0.05 + 0.0015 * min(max_num_seqs, 512) * model.layers / 32


# V1 memory model, read from vLLM 0.26.0's source and fitted to its own startup breakdown on the H200
# (tests/fixtures/gpu-host/vllm-0.26.0/*.log, replayed by tests/test_tuning.py), per GPU:
#   requested = ceil(total * gpu_memory_utilization)              (v1/worker/utils.py request_memory)
#   kv        = requested - weights - peak_activation - non_torch  (v1/worker/gpu_worker.py)
# 0.26.0 runs the V2 model runner (v1/worker/gpu/model_runner.py): its profile_cudagraph_memory() returns 0, so
# CUDA graphs are captured after the KV cache is sized, outside the budget (seen: KV = requested - the three terms).
# peak_activation: the profile run (_dummy_run over max_num_batched_tokens, attention skipped, then one sampler
# run over those rows) peaks at one vocab x hidden fp16 matrix plus two hidden-wide fp16 rows per token; the
# sampler's max_num_seqs rows are inside that once (runs with 16, 32, 64 and 256 seqs logged the same peak).
# non_torch: 0.22 GiB in every single-GPU run on sm_90 (cuBLAS workspaces after the CUDA context), 0.07 GiB per GPU
# with tensor parallel 2 on two NVLinked H200s (2 runs; NCCL's buffers are taken before the profile, outside this
# term). sm_8x and TP > 2 are not measured here and use these figures.
# weights: vLLM 0.26.0 counts the peak while loading ("Peak GPU memory after loading weights"), which is the model's
# parameters and its rotary cos/sin buffer (both modelled; tools/gpu_weights_probe.py listed every parameter and
# buffer of the loaded models on the H200) plus a transient of the load itself that the model's tensors do not show.
# That transient, measured with dummy weights on the H200 (2026-11-30 runs, the largest of each kind, MiB): Llama
# 16-bit 22, Llama GPTQ 16, Qwen2 105. Its cause in vLLM's loader is not identified; families not measured take the
# largest. Loading a real checkpoint was not measured (no weights reach the GPU host).
V1_LOAD_PEAK_MIB = {("llama", False): 22, ("llama", True): 16, ("qwen2", False): 105}
V1_NON_TORCH_GIB = 0.22
V1_NON_TORCH_GIB_TP = 0.07
V1_ROWS_PER_TOKEN = 2  # hidden-wide fp16 rows per profiled token


def capture_sizes(max_num_seqs: int) -> list[int]:
    """vLLM 0.26.0's CUDA-graph capture sizes: 1, 2, 4, steps of 8 to 256, then of 16, up to
    min(2 * max_num_seqs, 512) (the logged cudagraph_capture_sizes of every recorded run)."""
    top = min(2 * max_num_seqs, 512)
    return [x for x in [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, 513, 16)) if x <= top]


def _v1_graph_gib(model: ModelSpec, max_num_seqs: int, tp: int = 1) -> float:
    """Fitted to "Graph capturing finished ..., took X GiB": 0.12-0.62 GiB over 7 single-GPU runs, 0.51 GiB per GPU
    with TP=2 (51 capture sizes)."""
    return 0.05 + 0.011 * len(capture_sizes(max_num_seqs)) * model.layers / 32 * (0.6 + 0.4 / tp)


def _budget(model: ModelSpec, gpu: GpuSpec, engine: str, tp: int, max_model_len: int, util: float,
            max_num_seqs: int, tokens: int | None = None) -> dict[str, float]:
    total = gpu.memory_mib * MIB
    tokens = tokens or _batched_tokens(engine, max_model_len, total / GIB)
    weights = model.weight_bytes(tp)
    per_token = model.kv_bytes_per_token(tp=tp)
    if engine == "v1":
        budget = math.ceil(total * util)
        key = (model.model_type, model.quant.method is not None)
        weights += V1_LOAD_PEAK_MIB.get(key, max(V1_LOAD_PEAK_MIB.values())) * MIB
        non_torch = (V1_NON_TORCH_GIB if tp == 1 else V1_NON_TORCH_GIB_TP) * GIB
        # TP: each GPU holds its shard of the weights, the KV heads and the vocab (fitted on the TP=2 runs too).
        act = model.vocab * model.hidden * 2 // tp + V1_ROWS_PER_TOKEN * tokens * model.hidden * 2
    else:
        budget = total * util
        non_torch = (NON_TORCH_GIB_SM90 if gpu.compute_capability >= 9.0 else NON_TORCH_GIB) * GIB
        act = tokens * model.activation_bytes_per_token(tp) + max_num_seqs * model.vocab * 4
        if model.quant.method == "awq":
            act += 2 * model.hidden * 2 * model.intermediate * 2 // tp  # whole gate_up dequantized for big batches
    kv = budget - weights - non_torch - act
    blocks = max(0, int(kv // (BLOCK_TOKENS * per_token)))
    return dict(total=total, budget=budget, weights=weights, non_torch=non_torch, act=act, kv=kv,
                tokens=tokens, blocks=blocks, kv_tokens=blocks * BLOCK_TOKENS, per_token=per_token)


def estimate(model: ModelSpec, gpu: GpuSpec, vllm_version: str, *, max_model_len: int,
             gpu_memory_utilization: float, max_num_seqs: int, tp: int = 1,
             max_num_batched_tokens: int | None = None) -> dict[str, float]:
    """The raw budget for exactly these values, with no policy (what vLLM would log at startup)."""
    engine = vllm_engine(vllm_version)
    b = _budget(model, gpu, engine, tp, max_model_len, gpu_memory_utilization, max_num_seqs,
                max_num_batched_tokens)
    graph = _v1_graph_gib(model, max_num_seqs, tp) if engine == "v1" else _graph_gib(model, max_num_seqs)
    return dict(weights_gib=b["weights"] / GIB, activation_gib=b["act"] / GIB, non_torch_gib=b["non_torch"] / GIB,
                kv_cache_gib=b["kv"] / GIB, gpu_blocks=b["blocks"], kv_tokens=b["kv_tokens"], cuda_graph_gib=graph)


def plan(model: ModelSpec, gpu: GpuSpec, vllm_version: str, *, max_model_len: int | None = None,
         gpu_memory_utilization: float | None = None, max_num_seqs: int | None = None,
         reserved_mib: int = 0, min_concurrency: float = 2.0, tensor_parallel_size: int | None = None,
         min_context: int = 0, pipeline_parallel_size: int = 1) -> Plan:
    """vLLM's flags for the model on the card. The context is the longest power of two (up to the model's own) at
    which the KV cache holds ``min_concurrency`` full-length sequences; where that is below ``min_context`` (what the
    client's own prompt needs: Open WebUI's with its tool schemas), the longest in 1024-token steps instead."""
    engine = vllm_engine(vllm_version)
    warnings: list[str] = []
    _check_inputs(gpu, max_model_len, gpu_memory_utilization, max_num_seqs, reserved_mib, min_concurrency)
    pp = pipeline_parallel_size
    if pp > 1:  # one model over several hosts: each is a pipeline stage holding ~1/pp of the layers
        if pp > model.layers:
            raise PlanError(f"{model.layers} layers do not split over {pp} hosts")
        model = replace(model, layers=math.ceil(model.layers / pp))
        warnings.append(f"pipeline parallel over {pp} hosts: each stage planned with {model.layers} layers plus the "
                        "whole embedding and LM head (conservative; the multi-node memory model is not measured)")
    limit = model.max_position_embeddings
    if engine == "v0" and model.model_type == "gemma2" and limit > 4096:
        # vLLM 0.6.3.post1 caps Gemma-2 at 4096 (its sliding window needs FlashInfer, which it does not use).
        limit = 4096
        warnings.append("Gemma-2 on vLLM 0.6.3.post1: max_model_len capped at 4096 as vLLM itself does")
    if max_model_len is not None and max_model_len > limit:
        raise PlanError(f"vllm_max_model_len={max_model_len} is above the model's max_position_embeddings={limit}: "
                        f"positions past {limit} give garbage; set vllm_max_model_len <= {limit} or leave it unset, "
                        "or pick a model trained for longer contexts")
    if gpu_memory_utilization is None:
        free_frac = 1 - reserved_mib / gpu.memory_mib
        gpu_memory_utilization = round(min(0.90, free_frac - 0.02), 2)
        if gpu_memory_utilization <= 0.1:
            raise PlanError(f"vllm_reserved_mib={reserved_mib} leaves nothing of {gpu.memory_mib} MiB for vLLM; "
                            "lower vllm_reserved_mib")
    elif reserved_mib and gpu_memory_utilization > 1 - reserved_mib / gpu.memory_mib:
        raise PlanError(f"vllm_gpu_memory_utilization={gpu_memory_utilization} plus vllm_reserved_mib={reserved_mib} "
                        f"exceed the card's {gpu.memory_mib} MiB: vLLM refuses to start when free memory is below "
                        "its share; lower one of them")

    # Tensor parallel over identical GPUs only when one GPU cannot hold the model, or as many as asked for.
    if tensor_parallel_size is not None:
        if not 1 <= tensor_parallel_size <= gpu.count:
            raise PlanError(f"vllm_tensor_parallel_size={tensor_parallel_size}: the host has {gpu.count} GPU(s) of "
                            f"this kind; use 1..{gpu.count}")
        tp = tensor_parallel_size
    else:
        tp = 1
        while tp < gpu.count and _budget(model, gpu, engine, tp, min(limit, 8192), gpu_memory_utilization,
                                         256)["blocks"] * BLOCK_TOKENS < MIN_CONTEXT * min_concurrency:
            tp *= 2
        tp = min(tp, gpu.count)
    if tp > 1 and model.heads % tp:
        raise PlanError(f"{model.heads} attention heads do not split over {tp} GPUs")

    def seqs_for(kv_tokens: int) -> int:
        if max_num_seqs is not None:
            return max_num_seqs
        # the power of two nearest to one sequence per 1024 KV tokens, 4..256
        return max(4, min(256, 2 ** round(math.log2(max(kv_tokens / 1024, 1)))))

    def evaluate(ctx: int) -> tuple[dict[str, float], int]:
        first = _budget(model, gpu, engine, tp, ctx, gpu_memory_utilization, max_num_seqs or 256)
        seqs = seqs_for(first["kv_tokens"])
        return _budget(model, gpu, engine, tp, ctx, gpu_memory_utilization, seqs), seqs

    if max_model_len is not None:
        ctx = max_model_len
        b, seqs = evaluate(ctx)
        if b["kv_tokens"] < ctx:
            raise PlanError(_no_fit(model, gpu, b, ctx, 1.0, tp))
        if b["kv_tokens"] < ctx * min_concurrency:
            warnings.append(f"only {b['kv_tokens'] / ctx:.2f} full-length sequences fit at max_model_len={ctx} "
                            f"(vllm_min_concurrency={min_concurrency})")
    else:
        candidates = [limit] + [c for c in (131072, 65536, 32768, 16384, 8192, 4096, 2048, MIN_CONTEXT) if c < limit]
        for i, ctx in enumerate(candidates):
            b, seqs = evaluate(ctx)
            if b["kv_tokens"] >= ctx * min_concurrency:
                break
        else:
            raise PlanError(_no_fit(model, gpu, b, MIN_CONTEXT, min_concurrency, tp))
        if i and ctx < min_context:  # too short for what the client sends (Open WebUI's prompt with its tool
            # schemas): the longest context in 1024-token steps below the one that did not fit, if it is long enough
            for longer in range(candidates[i - 1] - 1024, ctx, -1024):
                lb, lseqs = evaluate(longer)
                if lb["kv_tokens"] >= longer * min_concurrency:
                    ctx, b, seqs = longer, lb, lseqs
                    break
        if ctx < limit:
            warnings.append(f"max_model_len {ctx} < the model's {limit}: the KV cache holds "
                            f"{min_concurrency:g} sequences only at this length")

    dtype = "float16" if model.quant.method in ("gptq", "awq") else (
        "float16" if gpu.compute_capability < 8.0 else "auto")
    # CUDA graphs are captured after the KV cache is sized (both engines): they must fit outside the budget.
    graph = _v1_graph_gib(model, seqs, tp) if engine == "v1" else _graph_gib(model, seqs)
    margin = (1 - gpu_memory_utilization) * gpu.memory_mib * MIB - reserved_mib * MIB
    eager = margin < graph * GIB
    if eager:
        warnings.append(f"CUDA graphs (~{graph:.2f} GiB) do not fit outside the budget: --enforce-eager "
                        "(slower decode)")
    flags = [f"--dtype={dtype}", f"--max-model-len={ctx}", f"--gpu-memory-utilization={gpu_memory_utilization:.2f}",
             f"--max-num-seqs={seqs}"]
    if engine == "v1":
        flags.append(f"--max-num-batched-tokens={int(b['tokens'])}")
    quant_flag = quantization_flag(model, gpu.compute_capability)
    if quant_flag:
        flags.append(f"--quantization={quant_flag}")
    if tp > 1:
        flags.append(f"--tensor-parallel-size={tp}")
    if pp > 1:
        flags.append(f"--pipeline-parallel-size={pp}")
    if eager:
        flags.append("--enforce-eager")
    return Plan(
        gpu=gpu.name, vllm_version=vllm_version, engine=engine, tensor_parallel_size=tp, max_model_len=ctx,
        max_num_seqs=seqs, max_num_batched_tokens=int(b["tokens"]), gpu_memory_utilization=gpu_memory_utilization,
        dtype=dtype, enforce_eager=eager, total_gib=b["total"] / GIB, budget_gib=b["budget"] / GIB,
        weights_gib=b["weights"] / GIB, non_torch_gib=b["non_torch"] / GIB, activation_gib=b["act"] / GIB,
        cuda_graph_gib=graph, kv_cache_gib=max(b["kv"], 0) / GIB, kv_bytes_per_token=int(b["per_token"]),
        gpu_blocks=int(b["blocks"]), kv_tokens=int(b["kv_tokens"]), max_concurrency=b["kv_tokens"] / ctx,
        flags=flags, warnings=warnings,
    )


def _check_inputs(gpu: GpuSpec, max_model_len: int | None, util: float | None, max_num_seqs: int | None,
                  reserved_mib: int, min_concurrency: float) -> None:
    """Every number the planner takes, in range, before anything is computed (one line each)."""
    if gpu.memory_mib <= 0:
        raise PlanError(f"GPU memory {gpu.memory_mib} MiB: must be > 0 (the CUDA-visible MiB of one GPU)")
    if gpu.count < 1:
        raise PlanError(f"GPU count {gpu.count}: must be >= 1")
    if not 3.0 <= gpu.compute_capability < 20:
        raise PlanError(f"compute capability {gpu.compute_capability}: must look like 8.6")
    if max_model_len is not None and max_model_len < 1:
        raise PlanError(f"max_model_len={max_model_len}: must be >= 1 (or unset: the planner picks it)")
    if util is not None and not 0 < util <= 1:
        raise PlanError(f"gpu_memory_utilization={util}: must be in (0, 1], e.g. 0.90")
    if max_num_seqs is not None and max_num_seqs < 1:
        raise PlanError(f"max_num_seqs={max_num_seqs}: must be >= 1")
    if reserved_mib < 0 or reserved_mib >= gpu.memory_mib:
        raise PlanError(f"reserved_mib={reserved_mib}: must be in [0, {gpu.memory_mib})")
    if min_concurrency <= 0:
        raise PlanError(f"min_concurrency={min_concurrency}: must be > 0")


def quantization_flag(model: ModelSpec, compute_capability: float) -> str | None:
    """--quantization only where vLLM cannot see the method itself.

    vLLM reads the method from quantization_config inside config.json and then picks the fast Marlin kernel on
    sm_80+ by itself: passing --quantization there is the blog recipe's error (plain gptq forces the slow kernel).
    A GPTQ/AWQ repo that carries only quantize_config.json loads as an unquantized model unless told: then, and
    only then, name the method (Marlin on sm_80+, the plain kernel below)."""
    if model.quant.method not in ("gptq", "awq") or model.quant_in_config:
        return None
    return f"{model.quant.method}_marlin" if compute_capability >= 8.0 else model.quant.method


def _no_fit(model: ModelSpec, gpu: GpuSpec, b: dict[str, float], ctx: int, conc: float, tp: int) -> str:
    need = b["weights"] + b["non_torch"] + b["act"] + ctx * conc * b["per_token"]
    return (f"the model does not fit {gpu.name} ({gpu.memory_mib} MiB x {tp}): it needs "
            f"{need / GIB:.2f} GiB (weights {b['weights'] / GIB:.2f} + overhead {(b['non_torch'] + b['act']) / GIB:.2f}"
            f" + KV for {conc:g} x {ctx} tokens {ctx * conc * b['per_token'] / GIB:.2f}) but {b['budget'] / GIB:.2f} "
            f"GiB are available. Use a lower-bit repo (4-bit GPTQ/AWQ), a smaller model, a bigger card, or lower "
            "vllm_min_concurrency / vllm_max_model_len")
