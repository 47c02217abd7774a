"""A tiny model directory for vLLM's CPU build (issue 29): the default checkpoint's real config.json with its
dimensions shrunk (2 layers, hidden 256, head_dim 64: the CPU attention refuses head_dim 16) and its quantization
dropped (random 16-bit weights: --load-format dummy), its generation and tokenizer configs, a real tokenizer.json
(Meta's tokenizer.model, tests/fixtures/tokenizers/llama3, converted by transformers' own TikTokenConverter with the
checkpoint's 256 special tokens at 128000+) and the ORIGINAL chat template, taken from the `trl` wheel at test time
(``chat_template``: the path of trl/chat_templates/<name>.jinja, never committed here).

    python -m testing.tiny_model DEST TEMPLATE [--weights]   (with a Python that has transformers, tiktoken,
                                                              sentencepiece; --weights: and torch)

``--weights`` makes a directory vLLM loads as it is (no --load-format dummy: a repo the test hub serves and the
deploy fetches): random float16 weights (seeded; input and output embeddings tied, 65 MB) and, in its
generation_config.json, ``max_new_tokens`` 24, vLLM's server-wide cap on an answer (random tokens rarely end: on 2
cores an uncapped one runs to the context's end).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "tests/fixtures/models/llama-3.1-8b-instruct-awq-int4"
TOKENIZER = REPO / "tests/fixtures/tokenizers/llama3/tokenizer.model"
PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")
SHRINK = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 64}


TRL = REPO / ".cache" / "realengine" / "trl"


def original_template(name: str = "llama3_1") -> Path:
    """trl's copy of a checkpoint's ORIGINAL chat template (trl/chat_templates/<name>.jinja), from the wheel on PyPI
    (pip's own client, downloaded once into .cache), never committed here."""
    import fcntl
    import subprocess
    import zipfile

    out = TRL / f"{name}.jinja"
    TRL.mkdir(parents=True, exist_ok=True)
    with open(TRL / ".lock", "w") as lock:  # `make test`'s two tiers may both ask first
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            if not list(TRL.glob("trl-*.whl")):
                subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(TRL), "trl"],
                               check=True, timeout=600, stdin=subprocess.DEVNULL)
            whl = sorted(TRL.glob("trl-*.whl"))[-1]
            out.write_bytes(zipfile.ZipFile(whl).read(f"trl/chat_templates/{name}.jinja"))
    return out


def build(dest: Path, template: Path, weights: bool = False) -> Path:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    dest.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((CHECKPOINT / "config.json").read_text())
    cfg.pop("quantization_config", None)
    cfg.update(SHRINK, torch_dtype="bfloat16")
    if weights:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg.update(torch_dtype="float16", tie_word_embeddings=True)
        torch.manual_seed(29)
        LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.float16).save_pretrained(dest, safe_serialization=True)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    gen = json.loads((CHECKPOINT / "generation_config.json").read_text())
    (dest / "generation_config.json").write_text(json.dumps({**gen, "max_new_tokens": 24} if weights else gen,
                                                            indent=2))
    tc = json.loads((CHECKPOINT / "tokenizer_config.json").read_text())
    special = [t["content"] for _, t in sorted(tc["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))]
    tok = TikTokenConverter(vocab_file=str(TOKENIZER), pattern=PAT_STR, extra_special_tokens=special).converted()
    tok.save(str(dest / "tokenizer.json"))
    tc["chat_template"] = template.read_text()
    (dest / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    return dest


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]), weights="--weights" in sys.argv[3:])
