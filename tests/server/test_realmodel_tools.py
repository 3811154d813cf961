"""Tools and structured output with SmolLM2-135M behind `corral serve`, through real clients:
tool_choice required gives a valid call 20/20, the openai SDK's tool-calling flow (call,
result, answer; streamed deltas; parse() with a pydantic model) and LangChain's
`bind_tools` work end to end.

Kept short for loaded CI machines: one server for the module, free-text answers (whose
content only has to exist) capped at a few tokens, and the server's OpenMP threads told to
sleep rather than spin while they wait (OMP_WAIT_POLICY=PASSIVE): on a machine whose cores
other processes share, spinning threads wait for each other at every parallel region, and
the 20 calls took 59 s instead of 15 s (with two cores and a load of five)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest
from server_helpers import free_port, wait_up

from corral.store import Store

pytestmark = pytest.mark.realmodel

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 30}},
            "required": ["timezone"],
        },
    },
}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def base(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("served-smollm2")
    home = folder / "home"
    Store(home).add_file(smollm2_path, "smollm2")
    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--port", str(port), "--keep-alive", "-1",
         "--ctx", "2048", "--slots", "4"],
        env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "CORRAL_HOME": str(home)},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def oai(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


def _check_call(call: object) -> None:
    fn = call.function  # type: ignore[attr-defined]
    tool = next(t for t in TOOLS if t["function"]["name"] == fn.name)
    jsonschema.validate(json.loads(fn.arguments), tool["function"]["parameters"])


def test_required_gives_a_valid_call_20_of_20(oai: openai.OpenAI) -> None:
    valid = 0
    for seed in range(0, 20, 4):  # n=4: four tries per request, batched, seeds seed..seed+3
        r = oai.chat.completions.create(
            model="smollm2", messages=ASK, tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
            n=4, seed=seed, temperature=0.8, max_tokens=100, parallel_tool_calls=False,
        )  # fmt: skip
        for choice in r.choices:
            assert choice.finish_reason == "tool_calls", choice
            assert choice.message.tool_calls
            for call in choice.message.tool_calls:
                _check_call(call)
            valid += 1
    assert valid == 20


def test_openai_sdk_tool_flow(oai: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = oai.chat.completions.create(
        model="smollm2", messages=ASK, tools=TOOLS, tool_choice=named,  # type: ignore[arg-type]
        parallel_tool_calls=False, temperature=0, max_tokens=60,
    )  # fmt: skip
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and len(msg.tool_calls or []) == 1
    call = msg.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    _check_call(call)
    history = ASK + [
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "temp_c": 21}'},
    ]
    final = oai.chat.completions.create(
        model="smollm2", messages=history, tools=TOOLS, tool_choice="none",  # type: ignore[arg-type]
        temperature=0, max_tokens=12,
    )  # fmt: skip
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    # the same call, streamed: id/type/name first, then argument fragments by index
    stream = oai.chat.completions.create(
        model="smollm2", messages=ASK, tools=TOOLS, tool_choice=named,  # type: ignore[arg-type]
        parallel_tool_calls=False, temperature=0, max_tokens=60, stream=True,
    )  # fmt: skip
    deltas = [c.choices[0] for c in stream if c.choices]
    parts = [tc for d in deltas for tc in (d.delta.tool_calls or [])]
    assert parts[0].id == call.id or parts[0].id  # a fresh id, present on the first delta
    assert parts[0].function.name == "get_weather" and parts[0].type == "function"
    args = "".join(p.function.arguments or "" for p in parts if p.index == 0)
    assert json.loads(args) == json.loads(call.function.arguments)
    assert deltas[-1].finish_reason == "tool_calls"


def test_openai_sdk_parse_pydantic(oai: openai.OpenAI) -> None:
    from typing import Literal

    from pydantic import BaseModel, Field

    class City(BaseModel):
        name: str = Field(max_length=20)
        country: str = Field(max_length=20)
        size: Literal["small", "medium", "large"]

    r = oai.chat.completions.parse(
        model="smollm2", messages=[{"role": "user", "content": "Describe Paris."}],
        response_format=City, temperature=0, max_tokens=60,
    )  # fmt: skip
    assert isinstance(r.choices[0].message.parsed, City)


def test_langchain_bind_tools(base: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"sunny in {city}"

    llm = ChatOpenAI(
        base_url=f"{base}/v1", api_key="unused", model="smollm2", temperature=0,
        max_tokens=60, max_retries=0, timeout=300,
    )  # fmt: skip
    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    ai = bound.invoke([HumanMessage("What is the weather in Paris?")])
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    assert isinstance(ai.tool_calls[0]["args"].get("city"), str)
    result = get_weather.invoke(ai.tool_calls[0])
    assert isinstance(result, ToolMessage)
    final = llm.bind_tools([get_weather]).invoke(
        [HumanMessage("What is the weather in Paris?"), ai, result], max_tokens=12
    )
    assert isinstance(final.content, str)
