"""The model catalogue: short names a user writes as ``model: <name>`` instead of a repo and a 40-hex commit.

Each entry says what the checkpoint must be (quantization method and bits, act-order, the model family and so its
tool and reasoning parsers, the native context, the licence); its recorded config.json (+ quantize_config.json) lies
beside this file as ``catalogue/<name>.json``, so "what fits my card" needs no network. The commit a box runs is not
here: the first run resolves it on the Hub and writes it to the lock (operations/model_lock.py), and ``check``
compares the fetched files with the entry before anything is locked or changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from operations.core.tuning import GpuSpec, ModelSpec, PlanError, Quant, plan
from operations.core.versions import FAMILIES, check_act_order, era, model_family, needed_context

RECORDED = Path(__file__).resolve().parent / "catalogue"


@dataclass(frozen=True)
class Entry:
    name: str
    repo: str
    quant_method: str  # as config.json's quantization_config (or quantize_config.json) names it
    bits: int
    act_order: bool  # GPTQ desc_act: only eras that honour g_idx can serve it
    family: str  # a key of versions.FAMILIES: the tool-call and reasoning parsers
    context: int  # the model's own context (config.json's max_position_embeddings)
    licence: str
    recorded: str  # where the recorded config.json comes from

    @property
    def files(self) -> dict[str, Any]:
        return _recorded(self.name)

    @property
    def config(self) -> dict[str, Any]:
        return self.files["config.json"]

    @property
    def quantize_config(self) -> dict[str, Any] | None:
        return self.files.get("quantize_config.json")


@cache
def _recorded(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / f"{name}.json").read_text())


CATALOGUE: dict[str, Entry] = {e.name: e for e in [
    Entry("llama-3.1-8b-instruct-4bit", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "awq", 4, False,
          "llama-3.1", 131072, "Llama 3.1 Community License (Meta): read it before serving others",
          "the published Llama-3.1-8B architecture and the repo's AWQ g128 GEMM settings (tests/fixtures/models)"),
    Entry("qwen3-8b-awq", "Qwen/Qwen3-8B-AWQ", "awq", 4, False, "qwen3", 40960, "Apache-2.0",
          "the published Qwen3-8B architecture (36 layers, hidden 4096, 32 heads, 8 KV heads, head_dim 128, "
          "max_position_embeddings 40960) and AWQ g128 GEMM"),
    Entry("qwen2.5-7b-instruct-awq", "Qwen/Qwen2.5-7B-Instruct-AWQ", "awq", 4, False, "qwen2.5", 32768,
          "Apache-2.0", "tests/fixtures/models/qwen2.5-7b-instruct with AWQ g128 GEMM"),
    # The default until 2026-12: GPTQ with act-order, which vLLM >= 0.30 ignores (REFERENCE §10).
    Entry("llama-3-8b-instruct-gptq", "astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit", "gptq", 4, True, "llama-3.0",
          8192, "Meta Llama 3 Community License",
          "tests/fixtures/models/llama-3-8b-instruct-gptq (config.json + quantize_config.json)"),
]}


class CatalogueError(ValueError):
    """A catalogue entry and what the Hub serves disagree, or the era cannot serve it: the message names the fix."""


def entry(name: str) -> Entry:
    if name not in CATALOGUE:
        raise ValueError(f"{name!r} is not in the catalogue: choose one of {', '.join(CATALOGUE)} (`llmhost-plan "
                         "--fits CARD` shows what fits a card), or pin model_repo + model_revision yourself")
    return CATALOGUE[name]


def quantization(config: dict[str, Any], quantize_config: dict[str, Any] | None) -> tuple[str, int, bool]:
    """(method, bits, act-order) as vLLM reads them: config.json's quantization_config, else quantize_config.json."""
    q = Quant.of(config, quantize_config)  # the planner's own reading
    return q.method or "none", q.bits, q.desc_act


def check(e: Entry, config: dict[str, Any], quantize_config: dict[str, Any] | None, chat_template: str | None,
          vllm_version: str) -> None:
    """The checkpoint the Hub serves is the one the entry describes, and this era can serve it; CatalogueError
    otherwise (before anything is locked or changed)."""
    who = f"model={e.name} ({e.repo})"
    method, bits, act_order = quantization(config, quantize_config)
    if (method, bits) != (e.quant_method, e.bits):
        raise CatalogueError(f"{who}: the catalogue expects {e.quant_method} {e.bits}-bit, the repo's config says "
                             f"{method} {bits}-bit: the repo changed; pin model_repo + model_revision yourself or "
                             "choose another entry")
    if act_order != e.act_order:
        raise CatalogueError(f"{who}: the catalogue expects act-order {e.act_order}, the repo's config says desc_act "
                             f"{act_order}: the repo changed; choose another entry")
    try:
        check_act_order(vllm_version, act_order)  # the era table's own refusal
    except ValueError as exc:
        raise CatalogueError(f"{who}: {exc}") from None
    family = model_family(config)
    if family.name != e.family:
        raise CatalogueError(f"{who}: the catalogue expects the {e.family} family, the repo's config.json is "
                             f"{family.name}: choose another entry")
    if family.tool_call_parser:
        problem = tools_problem(chat_template)
        if problem:
            raise CatalogueError(f"{who}: vLLM would parse tool calls ({family.tool_call_parser}) but {problem}: "
                                 "choose another entry or pin a revision whose chat template renders tools")


PROBE_TOOL = "llmhost_probe_tool"


def tools_problem(template: str | None) -> str | None:
    """Why a chat template cannot carry Open WebUI's tools (None when it renders them): it is rendered as
    transformers renders it (jinja2's sandbox, trim_blocks, lstrip_blocks, loop controls, tojson, raise_exception)
    with one tool, whose name must appear in the prompt."""
    if not template:
        return "the repo has no chat template (tokenizer_config.json's chat_template or chat_template.jinja)"
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: "01 Jan 2026")
    tool = {"type": "function", "function": {"name": PROBE_TOOL, "description": "probe",
                                             "parameters": {"type": "object", "properties": {}}}}
    try:
        text = env.from_string(template).render(messages=[{"role": "user", "content": "hi"}], tools=[tool],
                                                add_generation_prompt=True, bos_token="", eos_token="")
    except jinja2.exceptions.TemplateError as exc:
        return f"its chat template fails with tools ({type(exc).__name__}: {exc})"
    return None if PROBE_TOOL in text else "its chat template ignores the tools it is given"


# --- "what fits my card" -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    entry: Entry
    verdict: str  # "fits", "fits without native tools", or why not
    max_model_len: int = 0
    max_concurrency: float = 0.0
    weights_gib: float = 0.0


def fits(gpu: GpuSpec, vllm_version: str, openwebui_version: str, min_concurrency: float = 2.0) -> list[Fit]:
    """Every catalogue entry planned for ``gpu`` as the deploy plans it (the planner, Open WebUI's own prompt and,
    for a family with a parser, its tool schemas in the context)."""
    out = []
    for e in CATALOGUE.values():
        if e.act_order and not era(vllm_version).act_order:
            out.append(Fit(e, f"no: act-order, which vLLM {vllm_version} ignores"))
            continue
        native = bool(FAMILIES[e.family].tool_call_parser)
        spec = ModelSpec.from_config(e.config, e.quantize_config)
        verdict = ""
        for tools in [True, False] if native else [False]:  # too short for the tool schemas: prompt-based?
            need = needed_context(openwebui_version, tools)
            try:
                p = plan(spec, gpu, vllm_version, min_concurrency=min_concurrency, min_context=need)
            except PlanError as exc:
                verdict = f"no: {str(exc).split(':')[0]}"
                break
            if p.max_model_len >= need:
                verdict = ("fits, native tools" if tools else "fits, but no room for native tools "
                           "(vllm_tool_call_parser=none)" if native else "fits, prompt-based tools (no parser)")
                break
            verdict = f"no: context {p.max_model_len} < the {need} tokens Open WebUI's own prompt needs"
        if not verdict.startswith("fits"):
            out.append(Fit(e, verdict))
            continue
        out.append(Fit(e, verdict, p.max_model_len, p.max_concurrency, p.weights_gib))
    return out


def fits_table(rows: list[Fit], gpu: GpuSpec, vllm_version: str) -> str:
    head = ("model", "weights", "context", "chats at full context", "verdict")
    body = [(f.entry.name, f"{f.weights_gib:.2f} GiB" if f.max_model_len else "-",
             str(f.max_model_len or "-"), f"{f.max_concurrency:.1f}" if f.max_model_len else "-", f.verdict)
            for f in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([f"the catalogue on {gpu.name} ({gpu.memory_mib} MiB CUDA-visible x {gpu.count}), vLLM "
                      f"{vllm_version} (choose one with the setting model: <name>):",
                      line(head), *map(line, body)])
