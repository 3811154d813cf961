"""SmolLM2 behind the server, through the openai SDK: a sensible answer comes back.

The question carries a system message: with its template's default system prompt (or "You are
a helpful assistant.") and greedy decoding, SmolLM2-135M answers this one in French poetry
rather than with "Paris" — llama.cpp too, token for token.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from server_helpers import free_port, inprocess_server

from corral.server import ServerConfig
from corral.store import Store

QUESTION = [
    {"role": "system", "content": "You are a helpful AI assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.mark.realmodel
def test_capital_of_france(smollm2_path: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    Store(home).add_file(smollm2_path, "smollm2")
    with inprocess_server(ServerConfig(store_home=home, port=free_port())) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        r = client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,  # type: ignore[arg-type]
            max_tokens=32,
            temperature=0,
        )
        answer = r.choices[0].message.content or ""
        assert "Paris" in answer, answer
        stream = client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,  # type: ignore[arg-type]
            max_tokens=32,
            temperature=0,
            stream=True,
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert streamed == answer
