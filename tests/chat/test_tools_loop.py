"""`Model.chat(tools=..., run_tools=True)` on the tiny random model: the grammar forces the
call (tool_choice required), corral runs it and feeds the result back, then the model
answers without tools once the step limit is reached."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

import corral
from corral.chat.tools.loop import ToolChatResult
from tiny_gguf import write_tiny


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    path: Path = tmp_path_factory.mktemp("loop") / "tiny.gguf"
    return corral.load(write_tiny(path, context=2048))


def test_required_call_is_run_and_fed_back(model: corral.Model) -> None:
    seen: list[tuple[str, int]] = []

    @corral.tool
    def light(color: Literal["red", "green"], level: Literal[1, 2, 3]) -> dict:
        """Set a light."""
        seen.append((color, level))
        return {"ok": True}

    messages = [{"role": "user", "content": "lights"}]
    r = model.chat(
        messages, 80, tools=[light], tool_choice="required", run_tools=True,
        max_tool_steps=1, parallel_tool_calls=False, seed=0,
    )  # fmt: skip
    assert isinstance(r, ToolChatResult)
    assert r.steps == 1 and r.tool_calls == [] and len(seen) == 1
    roles = [m["role"] for m in r.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = r.messages[1]["tool_calls"][0]
    assert call["function"]["name"] == "light"
    assert r.messages[2] == {
        "role": "tool", "tool_call_id": call["id"], "name": "light", "content": '{"ok": true}',
    }  # fmt: skip


def test_calls_without_running_and_errors_reported(model: corral.Model) -> None:
    def boom(n: int) -> int:
        raise ValueError("no")

    r = model.chat(
        [{"role": "user", "content": "x"}], 80, tools=[boom],
        tool_choice={"type": "function", "function": {"name": "boom"}}, seed=1,
    )  # fmt: skip
    assert isinstance(r, ToolChatResult)
    if r.finish == "tool_calls":
        assert r.tool_calls[0].name == "boom" and isinstance(r.tool_calls[0].arguments["n"], int)
    from corral.chat.tools.loop import run_call

    assert "ValueError: no" in run_call(boom, r.tool_calls[0]) if r.tool_calls else True
