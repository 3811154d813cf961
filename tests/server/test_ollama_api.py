"""ollama routes against tiny models: generate, chat, model management, Modelfile defaults."""

from __future__ import annotations

import json
import time
from pathlib import Path

from starlette.testclient import TestClient


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_generate_streams_ndjson_with_stats_and_context(client: TestClient) -> None:
    body = {"model": "tiny", "prompt": "hello", "options": {"num_predict": 4, "seed": 1}}
    with client.stream("POST", "/api/generate", json=body) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        objs = lines(r.read().decode())
    *pieces, last = objs
    assert all(o["done"] is False and "response" in o for o in pieces)
    assert last["done"] is True and last["done_reason"] in ("stop", "length")
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[key], int)
    assert last["eval_count"] <= 4 and last["prompt_eval_count"] > 0
    assert last["total_duration"] >= last["eval_duration"]
    assert last["context"][: last["prompt_eval_count"]] and last["model"] == "tiny:latest"
    # the context comes back in: a continuation starts from it
    r = client.post(
        "/api/generate",
        json={"model": "tiny", "prompt": "more", "context": last["context"], "stream": False,
              "options": {"num_predict": 2}},
    )  # fmt: skip
    cont = r.json()
    assert cont["context"][: len(last["context"])] == last["context"]


def test_generate_raw_has_no_context_and_seed_repeats(client: TestClient) -> None:
    body = {"model": "tiny", "prompt": "hello", "raw": True, "stream": False,
            "options": {"num_predict": 5, "seed": 42, "temperature": 1.0}}  # fmt: skip
    a, b = (
        client.post("/api/generate", json=body).json(),
        client.post("/api/generate", json=body).json(),
    )
    assert "context" not in a and a["response"] == b["response"]


def test_generate_system_and_jinja_template(client: TestClient) -> None:
    body = {"model": "tiny", "prompt": "hi", "system": "S", "stream": False,
            "template": "{{ system }}|{{ prompt }}|", "options": {"num_predict": 1}}  # fmt: skip
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    # the prompt is exactly the template's text: "S|hi|" is 5 byte-level tokens
    assert r.json()["prompt_eval_count"] == 5


def test_empty_prompt_loads_and_keep_alive_zero_unloads(client: TestClient) -> None:
    r = client.post("/api/generate", json={"model": "tiny"})
    assert r.json()["done_reason"] == "load"
    ps = client.get("/api/ps").json()["models"]
    assert [m["name"] for m in ps] == ["tiny:latest"]
    assert ps[0]["size_vram"] == 0 and ps[0]["context_length"] == 512
    r = client.post("/api/generate", json={"model": "tiny", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    assert client.get("/api/ps").json()["models"] == []
    r = client.post("/api/chat", json={"model": "tiny", "messages": []})
    assert r.json()["done_reason"] == "load" and r.json()["message"]["content"] == ""


def test_keep_alive_zero_on_a_request_unloads_after_it(client: TestClient) -> None:
    body = {"model": "tiny", "prompt": "x", "stream": False, "keep_alive": "0s",
            "options": {"num_predict": 1}}  # fmt: skip
    assert client.post("/api/generate", json=body).status_code == 200
    for _ in range(50):
        if not client.get("/api/ps").json()["models"]:
            break
        time.sleep(0.05)
    assert client.get("/api/ps").json()["models"] == []


def test_chat_stream_and_whole(client: TestClient) -> None:
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello"}]
    body = {"model": "tiny", "messages": msgs, "options": {"num_predict": 3}}
    with client.stream("POST", "/api/chat", json=body) as r:
        objs = lines(r.read().decode())
    assert all(o["message"]["role"] == "assistant" for o in objs)
    assert objs[-1]["done"] is True and "context" not in objs[-1]
    whole = client.post("/api/chat", json={**body, "stream": False}).json()
    assert whole["done"] is True and isinstance(whole["message"]["content"], str)


def test_options_are_checked(client: TestClient) -> None:
    body = {"model": "tiny", "prompt": "x", "stream": False}
    r = client.post("/api/generate", json={**body, "options": {"temperature": "hot"}})
    assert r.status_code == 400 and "temperature" in r.json()["error"]
    r = client.post("/api/generate", json={**body, "options": {"top_p": 3}})
    assert r.status_code == 400
    # unknown and runtime-only options are ignored, as ollama does
    opts = {"num_predict": 1, "num_gpu": 99, "whatever": 1, "mirostat": 0, "stop": ["\n"]}
    assert client.post("/api/generate", json={**body, "options": opts}).status_code == 200
    r = client.post("/api/generate", json={**body, "keep_alive": "soon"})
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]


def test_refusals(client: TestClient) -> None:
    cases = [
        ("/api/chat", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools"),
        ("/api/generate", {"prompt": "x", "format": "yaml"}, "format"),
        ("/api/generate", {"prompt": "x", "images": ["aGk="]}, "images"),
        ("/api/generate", {"prompt": "x", "suffix": "y"}, "fill-in-the-middle"),
        ("/api/generate", {"prompt": "x", "think": True}, "thinking"),
    ]  # fmt: skip
    for path, body, needle in cases:
        r = client.post(path, json={"model": "tiny", **body})
        assert r.status_code == 400, (path, body)
        assert needle in r.json()["error"]


def test_tags_show_version(client: TestClient) -> None:
    tags = client.get("/api/tags").json()["models"]
    assert {m["name"] for m in tags} == {"tiny:latest", "other:latest"}
    m = tags[0]
    assert len(m["digest"]) == 64 and m["details"]["format"] == "gguf"
    assert m["details"]["family"] == "llama" and m["size"] > 0
    show = client.post("/api/show", json={"model": "tiny"}).json()
    assert "im_start" in show["template"] and show["capabilities"] == ["completion"]
    assert show["model_info"]["general.architecture"] == "llama"
    assert show["model_info"]["tokenizer.ggml.tokens"] is None  # only with verbose
    verbose = client.post("/api/show", json={"name": "tiny", "verbose": True}).json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) > 256
    assert client.get("/api/version").json()["version"]
    # tiny is a generation model; embeddings are tested in test_embeddings_api.py
    assert client.post("/api/embed", json={"model": "tiny", "input": "x"}).status_code == 400


def test_copy_delete(client: TestClient) -> None:
    assert (
        client.post("/api/copy", json={"source": "tiny", "destination": "twin"}).status_code == 200
    )
    assert "twin:latest" in {m["name"] for m in client.get("/api/tags").json()["models"]}
    client.post("/api/generate", json={"model": "twin"})  # loaded: delete must unload it
    assert client.request("DELETE", "/api/delete", json={"model": "twin"}).status_code == 200
    assert client.get("/api/ps").json()["models"] == []
    r = client.request("DELETE", "/api/delete", json={"model": "twin"})
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = client.post("/api/copy", json={"source": "nope", "destination": "x"})
    assert r.status_code == 404


def test_pull_local_file_streams_statuses(client: TestClient, tiny_files: dict[str, Path]) -> None:
    body = {"model": str(tiny_files["tiny"])}
    with client.stream("POST", "/api/pull", json=body) as r:
        objs = lines(r.read().decode())
    assert objs[0]["status"] == "pulling manifest" and objs[-1]["status"] == "success"
    assert any("completed" in o for o in objs)
    with client.stream("POST", "/api/pull", json={"model": "no-such-model-xyz"}) as r:
        objs = lines(r.read().decode())
    assert "error" in objs[-1]
    r = client.post("/api/pull", json={"model": "no-such-model-xyz", "stream": False})
    assert r.status_code == 404


def test_create_from_json_fields_sets_defaults(client: TestClient) -> None:
    body = {"model": "brief", "from": "tiny", "system": "You are brief.",
            "parameters": {"num_predict": 2, "temperature": 0, "stop": ["zz"]},
            "messages": [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}],
            "stream": False}  # fmt: skip
    r = client.post("/api/create", json=body)
    assert r.status_code == 200 and r.json() == {"status": "success"}
    out = client.post(
        "/api/generate", json={"model": "brief", "prompt": "hi", "stream": False}
    ).json()
    assert out["eval_count"] <= 2
    prompt = client.post("/apply-template", json={"model": "brief", "messages": [
        {"role": "user", "content": "hi"}]}).json()["prompt"]  # fmt: skip
    assert (
        prompt.index("You are brief.")
        < prompt.index("ping")
        < prompt.index("pong")
        < prompt.index("hi")
    )
    show = client.post("/api/show", json={"model": "brief"}).json()
    assert show["system"] == "You are brief." and "num_predict" in show["parameters"]
    assert "FROM tiny:latest" in show["modelfile"]
    # OpenAI requests honour the defaults too (temperature 0: repeatable)
    chat = {"model": "brief", "messages": [{"role": "user", "content": "x"}]}
    a = client.post("/v1/chat/completions", json=chat).json()
    assert a["usage"]["completion_tokens"] <= 2


def test_create_from_modelfile_and_inheritance(client: TestClient) -> None:
    modelfile = 'FROM tiny\nPARAMETER num_predict 3\nTEMPLATE """{{ messages[-1].content }}!"""\n'
    r = client.post("/api/create", json={"model": "m1", "modelfile": modelfile})
    assert r.status_code == 200 and lines(r.text)[-1]["status"] == "success"
    r = client.post(
        "/api/create", json={"model": "m2", "from": "m1", "system": "S", "stream": False}
    )
    assert r.status_code == 200
    show = client.post("/api/show", json={"model": "m2"}).json()
    assert show["template"] == "{{ messages[-1].content }}!"  # inherited from m1
    assert "num_predict" in show["parameters"] and show["details"]["parent_model"] == "m1:latest"
    prompt = client.post("/apply-template", json={"model": "m2", "messages": [
        {"role": "user", "content": "yo"}]}).json()["prompt"]  # fmt: skip
    assert prompt == "yo!"


def test_create_errors(client: TestClient) -> None:
    cases = [
        ({"model": "x", "modelfile": "PARAMETER temperature 1"}, 400, "FROM"),
        ({"model": "x", "modelfile": "FROM tiny\nPARAMETER temperature hot"}, 400, "line 2"),
        ({"model": "x", "modelfile": "FROM tiny\nADAPTER ./lora.gguf"}, 400, "no such file"),
        ({"model": "x", "from": "nope"}, 404, "not found"),
        ({"model": "x", "from": "tiny", "template": "{% if %}"}, 400, "template"),
        ({"model": "x", "from": "tiny", "parameters": {"bogus": 1}}, 400, "bogus"),
        ({"model": "Bad Name!", "from": "tiny"}, 400, "invalid model name"),
        ({"model": "x", "files": {"a.gguf": "sha256:00"}}, 400, "invalid digest"),
    ]
    for body, status, needle in cases:
        r = client.post("/api/create", json=body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["error"], (body, r.text)
