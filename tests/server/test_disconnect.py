"""A client that goes away cancels its generation within a step; the server carries on.

Runs a real uvicorn (in-process, so the test can see the scheduler) and slows the model's
forward pass down, with its end-of-generation tokens masked, so a generation is still
running when the client leaves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from corral.server.manager import LoadedModel

SLOW_S = 0.02


@pytest.fixture
def slow_model(live: tuple[str, object]) -> Iterator[tuple[str, LoadedModel]]:
    base, app = live
    httpx.post(f"{base}/api/generate", json={"model": "tiny"}, timeout=60)  # load it
    entry = app.state.corral.manager.loaded()[0]  # type: ignore[attr-defined]
    net = entry.model.net
    real = net.forward
    eog = sorted(entry.model.tokenizer.eog_ids)

    def slow(*a, **k):  # type: ignore[no-untyped-def]
        time.sleep(SLOW_S)
        out = real(*a, **k)
        out = out.clone()  # inference tensors cannot be changed in place
        out[..., eog] = float("-inf")  # never stop by itself
        return out

    net.forward = slow
    try:
        yield base, entry
    finally:
        net.forward = real


def wait_for(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 400}),
        ("/api/generate", {"prompt": "hi", "options": {"num_predict": 400}}),
    ],
)  # fmt: skip
def test_stream_disconnect_cancels(
    slow_model: tuple[str, LoadedModel], path: str, body: dict
) -> None:
    base, entry = slow_model
    stats = entry.scheduler.stats
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{base}{path}", json={"model": "tiny", "stream": True, **body}) as r,
    ):
        it = r.iter_lines()
        got = [next(it) for _ in range(3)]
        assert got
        # leaving the block closed the connection mid-stream
    assert wait_for(lambda: stats.requests_cancelled == 1), "request was not cancelled"
    assert wait_for(lambda: entry.scheduler.active == 0)
    generated = stats.generated_tokens_total
    time.sleep(10 * SLOW_S)
    assert stats.generated_tokens_total == generated < 100  # stopped, long before 400
    assert httpx.get(f"{base}/health").status_code == 200
    ps = httpx.get(f"{base}/api/ps").json()["models"]
    assert ps and ps[0]["name"] == "tiny:latest"
    text = httpx.get(f"{base}/metrics").text
    assert "corral_requests_cancelled_total 1" in text


def test_non_streamed_disconnect_cancels(slow_model: tuple[str, LoadedModel]) -> None:
    base, entry = slow_model
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/chat/completions", json=body, timeout=0.5)
    assert wait_for(lambda: entry.scheduler.stats.requests_cancelled == 1)
    assert wait_for(lambda: entry.scheduler.active == 0)
    body["max_tokens"] = 2
    assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30).status_code == 200
