"""`corral serve` in a subprocess, driven by the real client libraries: the openai and
ollama SDKs, LangChain's ChatOpenAI and ChatOllama, and raw HTTP for the wire formats."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tiny_gguf import write_tiny

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def oai(served: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def oll(served: str) -> ollama.Client:
    return ollama.Client(host=served, timeout=60)


def test_openai_sdk_chat_and_stream(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="tiny", messages=MSGS, max_tokens=5, seed=1)  # type: ignore[arg-type]
    assert isinstance(r.choices[0].message.content, str) and r.model == "tiny:latest"
    assert r.usage is not None and r.usage.completion_tokens <= 5
    stream = oai.chat.completions.create(
        model="tiny", messages=MSGS, max_tokens=5, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_openai_sdk_completions_models_errors(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model="tiny", prompt="hello", max_tokens=4, logprobs=2)
    assert isinstance(r.choices[0].text, str) and r.choices[0].logprobs is not None
    assert "tiny:latest" in [m.id for m in oai.models.list()]
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="nope", messages=MSGS)  # type: ignore[arg-type]
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="context"):
        oai.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi " * 600}]
        )
    with pytest.raises(openai.BadRequestError, match="function.name"):
        oai.chat.completions.create(
            model="tiny", messages=MSGS,  # type: ignore[arg-type]
            tools=[{"type": "function", "function": {"name": "f g", "parameters": {}}}],
        )  # fmt: skip


def test_ollama_sdk_generate_chat_stream(oll: ollama.Client) -> None:
    r = oll.generate(model="tiny", prompt="hello", options={"num_predict": 3})
    assert r.done and isinstance(r.response, str) and r.eval_count is not None
    assert r.context  # token ids, accepted back
    r2 = oll.generate(model="tiny", prompt="again", context=r.context, options={"num_predict": 2})
    assert r2.done
    c = oll.chat(model="tiny", messages=MSGS, options={"num_predict": 3})
    assert c.message.role == "assistant" and c.done
    parts = list(oll.chat(model="tiny", messages=MSGS, stream=True, options={"num_predict": 3}))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    parts = list(oll.generate(model="tiny", prompt="x", stream=True, options={"num_predict": 3}))
    assert parts[-1].done and parts[-1].total_duration


def test_ollama_sdk_list_show_ps_pull_delete(oll: ollama.Client, tmp_path: Path) -> None:
    assert "tiny:latest" in [m.model for m in oll.list().models]
    info = oll.show("tiny")
    assert info.details is not None and info.details.family == "llama"
    assert info.template and info.modelinfo is not None
    oll.generate(model="tiny")  # load
    assert "tiny:latest" in [m.model for m in oll.ps().models]
    src = write_tiny(tmp_path / "pulled.gguf", context=64)
    statuses = [s.status for s in oll.pull(str(src), stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "pulled:latest" in [m.model for m in oll.list().models]
    oll.copy("pulled", "pulled2")
    assert oll.delete("pulled").status == "success"
    assert oll.delete("pulled2").status == "success"
    assert "pulled:latest" not in [m.model for m in oll.list().models]
    with pytest.raises(ollama.ResponseError) as e:
        oll.chat(model="nope", messages=MSGS)
    assert e.value.status_code == 404 and "not found" in e.value.error
    oll.create(model="sdk-made", from_="tiny", system="Be brief.", parameters={"num_predict": 2})
    assert oll.generate(model="sdk-made", prompt="x").eval_count <= 2  # type: ignore[operator]


def test_langchain_openai(served: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{served}/v1", api_key="unused", model="tiny",  # type: ignore[arg-type]
                     max_tokens=4, max_retries=0)  # fmt: skip
    msg = llm.invoke("hello")
    assert isinstance(msg.content, str)
    pieces = list(llm.stream("hello"))
    assert pieces and all(isinstance(p.content, str) for p in pieces)


def test_langchain_ollama(served: str) -> None:
    from langchain_ollama import ChatOllama

    llm = ChatOllama(base_url=served, model="tiny", num_predict=4)
    msg = llm.invoke("hello")
    assert isinstance(msg.content, str)
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] <= 4
    pieces = list(llm.stream("hello"))
    assert pieces and all(isinstance(p.content, str) for p in pieces)


def test_raw_wire_formats(served: str) -> None:
    """SSE: `data: JSON` events separated by blank lines, ending `data: [DONE]`; NDJSON: one
    JSON object per line, the last with done true. Checked on the raw bytes."""
    body = {"model": "tiny", "messages": MSGS, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{served}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_raw()).decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")[:-1]
    for ev in events[:-1]:
        assert ev.startswith("data: {") and "\n" not in ev
        json.loads(ev.removeprefix("data: "))
    body = {"model": "tiny", "prompt": "hi", "options": {"num_predict": 4}}
    with httpx.stream("POST", f"{served}/api/generate", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        raw = b"".join(r.iter_raw()).decode()
    assert raw.endswith("}\n")
    objs = [json.loads(line) for line in raw.splitlines()]
    assert objs[-1]["done"] is True and all(o["done"] is False for o in objs[:-1])


def test_concurrent_streams_all_complete(served: str) -> None:
    """Several clients at once (more than the scheduler's slots): every stream ends
    properly, none comes back empty."""
    import asyncio

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, int]:
        body = {"model": "tiny", "messages": [{"role": "user", "content": f"hi {i}"}],
                "max_tokens": 12, "stream": True, "seed": i}  # fmt: skip
        events = []
        async with client.stream("POST", f"{served}/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line:
                    events.append(line)
        finishes = sum('"finish_reason":"' in e for e in events)
        return events[-1], finishes

    async def run() -> list[tuple[str, int]]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(one(client, i) for i in range(6)))

    for last, finishes in asyncio.run(run()):
        assert last == "data: [DONE]" and finishes == 1
