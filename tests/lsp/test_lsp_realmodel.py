"""SmolLM2 through `corral lsp`: function bodies written between a signature and a `return`
keep the file parseable.

SmolLM2's vocabulary has no FIM tokens (it has StarCoder's <repo_name>, <file_sep>,
<filename>, but not <fim_prefix>/<fim_suffix>/<fim_middle>), so a FIM request is refused with
the clear error, and the bodies are written from the prefix alone (llm-ls `fim.enabled:
false`); the multi-line shape ends each body where the block ends or the code after the
cursor starts again.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
from lsp_client import LspClient, LspError

SNIPPETS = [
    ("def add(a, b):", "return total"),
    ("def square(x):", "return result"),
    ("def is_even(n):", "return even"),
    ("def greet(name):", "return message"),
    ("def average(values):", "return mean"),
    ("def count_words(text):", "return count"),
    ("def maximum(items):", "return best"),
    ("def reverse(s):", "return out"),
    ("def celsius_to_fahrenheit(c):", "return f"),
    ("def factorial(n):", "return result"),
]


def _source(signature: str, ret: str) -> str:
    return f'"""Small helpers."""\n\n\n{signature}\n    \n    {ret}\n'


@pytest.mark.realmodel
def test_bodies_keep_the_file_parseable(
    start_lsp: Callable[..., LspClient], smollm2_path: Path
) -> None:
    c = start_lsp("--model", str(smollm2_path))
    c.initialize()
    parsed, written = 0, 0
    for i, (signature, ret) in enumerate(SNIPPETS):
        uri = f"file:///snippets/s{i}.py"
        text = _source(signature, ret)
        c.open(uri, text)
        params = {
            "textDocument": {"uri": uri}, "position": {"line": 4, "character": 4},
            "model": "smollm2", "tokensToClear": ["<|endoftext|>"], "contextWindow": 512,
            "fim": {"enabled": False, "prefix": "", "middle": "", "suffix": ""},
            "requestBody": {"parameters": {"max_new_tokens": 32, "temperature": 0}},
            "tlsSkipVerifyInsecure": False, "ide": "vscode", "backend": "huggingface",
        }  # fmt: skip
        if i == 0:  # FIM asked of a model without FIM tokens: refused, not prefix-only
            with pytest.raises(LspError, match="no fill-in-the-middle tokens"):
                c.request("llm-ls/getCompletions", {**params, "fim": {"enabled": True,
                          "prefix": "<fim_prefix>", "middle": "<fim_middle>",
                          "suffix": "<fim_suffix>"}})  # fmt: skip
        out = c.request("llm-ls/getCompletions", params)
        body = out["completions"][0]["generated_text"]
        written += bool(body.strip())
        lines = text.split("\n")
        lines[4] = "    " + body
        try:
            ast.parse("\n".join(lines))
            parsed += 1
        except SyntaxError as e:
            print(f"snippet {i} does not parse: {e}\n{body!r}")
        print(f"snippet {i}: {body!r}")
    print(f"parseable: {parsed}/10, non-empty bodies: {written}/10")
    assert parsed >= 8 and written >= 8
