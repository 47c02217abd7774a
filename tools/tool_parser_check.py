"""vLLM's own tool-call parser on a completion in the model's format (issue 28): dummy weights never write a tool
call on their own, so `tool_choice: auto` is checked by feeding the parser the text a Llama 3.1 writes for one
(<|python_tag|> + {"name", "parameters"}, Meta's format) and a plain answer. Run with the era's venv python:
    python tools/tool_parser_check.py MODEL_DIR PARSER   -> JSON on stdout
"""

from __future__ import annotations

import json
import sys

from transformers import AutoTokenizer

try:
    from vllm.tool_parsers import ToolParserManager
except ImportError:  # older layouts
    from vllm.entrypoints.openai.tool_parsers import ToolParserManager
try:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
except ImportError:
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CASES = {"tool call": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
         "tool call without the tag": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
         "plain answer": "It is sunny in Paris."}


def main() -> None:
    model_dir, parser = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(model_dir)
    p = ToolParserManager.get_tool_parser(parser)(tok)
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "weather in Paris?"}],
                                tools=[WEATHER], tool_choice="auto")
    out = {"parser": type(p).__name__}
    for name, text in CASES.items():
        r = p.extract_tool_calls(text, req)
        out[name] = {"text": text, "tools_called": r.tools_called, "content": r.content,
                     "calls": [{"name": c.function.name, "arguments": json.loads(c.function.arguments)}
                               for c in r.tool_calls]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
