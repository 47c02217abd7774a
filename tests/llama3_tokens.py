"""Llama 3's own tokenizer and prompt format, for counting what Open WebUI's requests take of a context.

The BPE ranks are Meta's tokenizer.model (meta-llama/llama-models a9c89c4, models/llama3/tokenizer.model, under its
LICENSE beside it in tests/fixtures/tokenizers/llama3/), loaded with tiktoken exactly as llama-models'
models/llama3/tokenizer.py does (its pat_str, 256 special tokens after the 128,000 ranks). A message is framed as
its models/llama3/chat_format.py encodes it: <|start_header_id|> role <|end_header_id|> "\\n\\n" content <|eot_id|>,
after <|begin_of_text|>, ending with the assistant's header. Tools are rendered as llama-models'
models/llama3_1/prompt_format.md shows JSON tool calling: each schema as JSON with indent 4 in a user message with
its instructions. Llama 3.0, 3.1 and 3.2 share these ranks; Qwen2's tokenizer is not counted here.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

MODEL = Path(__file__).parent / "fixtures" / "tokenizers" / "llama3" / "tokenizer.model"
PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
           "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
           "<|eot_id|>", "<|python_tag|>", "<|image|>"]
TOOLS_INTRO = ("Answer the user's question by making use of the following functions if needed.\n"
               "If none of the function can be used, please say so.\nHere is a list of functions in JSON format:\n")
TOOLS_OUTRO = "Return function calls in JSON format."


@lru_cache(maxsize=1)
def encoding():
    import tiktoken

    ranks = {base64.b64decode(tok): int(rank) for tok, rank in
             (line.split() for line in MODEL.read_text().splitlines() if line)}
    special = SPECIAL + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(SPECIAL))]
    return tiktoken.Encoding(name="llama3", pat_str=PAT_STR, mergeable_ranks=ranks,
                             special_tokens={t: len(ranks) + i for i, t in enumerate(special)})


def count(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


def message_tokens(role: str, content: str) -> int:
    return 1 + count(role) + 1 + count("\n\n") + count(content) + 1


def prompt_tokens(messages: list[dict]) -> int:
    """<|begin_of_text|>, every message framed, then the assistant's header (add_generation_prompt)."""
    return 1 + sum(message_tokens(m["role"], m["content"] or "") for m in messages) + 1 + count("assistant") + 1 \
        + count("\n\n")


def tools_tokens(tools: list[dict]) -> int:
    """The tool schemas as a user message of their own, as Llama 3.1's JSON tool calling lays them out."""
    body = TOOLS_INTRO + "".join(json.dumps(t, indent=4) + "\n\n" for t in tools) + TOOLS_OUTRO
    return message_tokens("user", body)
