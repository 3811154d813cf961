"""ADAPTER in Modelfiles, `corral create`, and adapted models on the server: each adapter
set is its own model name, loaded model and scheduler, so requests never mix adapters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from lora_files import random_pairs, write_gguf_lora
from starlette.testclient import TestClient

import corral
from corral.adapters import AdapterError, LoraLinear
from corral.cli.main import main
from corral.server import ServerConfig, create_app
from corral.server.manager import ModelManager
from corral.server.modelfile import Modelfile, create_model, parse_modelfile
from corral.store import Store
from tiny_gguf import write_tiny

TARGETS = ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, Path, Path]:
    """A store holding `tiny`, and two adapters for it on disk."""
    base = write_tiny(tmp_path / "tiny.gguf", context=256)
    store = Store(tmp_path / "home")
    store.add_file(base, "tiny")
    a1 = write_gguf_lora(tmp_path / "a1.gguf", random_pairs(base, TARGETS, 4, seed=1), 8.0)
    a2 = write_gguf_lora(tmp_path / "a2.gguf", random_pairs(base, TARGETS, 4, seed=2), 8.0)
    return store, a1, a2


def test_modelfile_adapter_lines_round_trip() -> None:
    mf = parse_modelfile("FROM tiny\nADAPTER ./lora.gguf\nADAPTER /x/peft folder 0.25\n")
    assert mf.adapters == [("./lora.gguf", 1.0), ("/x/peft folder", 0.25)]
    again = parse_modelfile(mf.render("tiny"))
    assert again.adapters == mf.adapters
    assert Modelfile.from_manifest({"modelfile": mf.to_manifest()}).adapters == mf.adapters


def test_create_records_checked_absolute_adapters(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, a1, a2 = setup
    ref = create_model(store, "tuned", Modelfile("tiny", adapters=[(str(a1), 0.5)]))
    assert Modelfile.from_manifest(ref.manifest).adapters == [(str(a1.resolve()), 0.5)]
    # a model FROM an adapted model keeps its adapters and adds its own
    ref2 = create_model(store, "tuned2", Modelfile("tuned", adapters=[(str(a2), 1.0)]))
    assert [s for _, s in Modelfile.from_manifest(ref2.manifest).adapters] == [0.5, 1.0]
    assert ref2.digest == store.resolve("tiny").digest  # no bytes copied


def test_create_refuses_an_adapter_for_another_model(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = setup
    wide = write_tiny(tmp_path / "wide.gguf", n_embd=96)
    bad = write_gguf_lora(tmp_path / "bad.gguf", random_pairs(wide, TARGETS, 4, 3), 8.0)
    with pytest.raises(AdapterError, match=r"in the model but .* in the adapter"):
        create_model(store, "broken", Modelfile("tiny", adapters=[(str(bad), 1.0)]))
    assert store.get("broken") is None


def test_cli_create_with_adapter_relative_to_the_modelfile(
    setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    store, a1, _ = setup
    monkeypatch.setenv("CORRAL_HOME", str(store.home))
    (tmp_path / "Modelfile").write_text(f"FROM tiny\nADAPTER ./{a1.name} 0.75\n")
    assert main(["create", "tuned", "-f", str(tmp_path / "Modelfile")]) == 0
    assert Modelfile.from_manifest(store.resolve("tuned").manifest).adapters == [(str(a1), 0.75)]
    (tmp_path / "Bad").write_text("FROM tiny\nADAPTER ./missing.gguf\n")
    assert main(["create", "bad", "-f", str(tmp_path / "Bad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("Error: adapter ") and "no such file or folder" in err


def test_manager_gives_each_adapter_set_its_own_model(setup) -> None:  # type: ignore[no-untyped-def]
    store, a1, a2 = setup
    create_model(store, "t1", Modelfile("tiny", adapters=[(str(a1), 1.0)]))
    create_model(store, "t2", Modelfile("tiny", adapters=[(str(a2), 1.0)]))

    async def run() -> list[np.ndarray]:
        mgr = ModelManager(ServerConfig(store_home=store.home, models_max=4), store)
        leases = [await mgr.acquire(n) for n in ("tiny", "t1", "t2")]
        try:
            entries = [lease.entry for lease in leases]
            assert len({id(e.scheduler) for e in entries}) == 3
            assert not isinstance(entries[0].model.net.blocks[0].wq, LoraLinear)
            assert isinstance(entries[1].model.net.blocks[0].wq, LoraLinear)
            ids = entries[0].model.tokenize("hello world")
            return [e.model.logits(ids) for e in entries]
        finally:
            for lease in leases:
                lease.release()
            await mgr.close()

    plain, t1, t2 = asyncio.run(run())
    want = corral.load(store.resolve("tiny").path, adapters=[(a1, 1.0)])
    np.testing.assert_array_equal(t1, want.logits(want.tokenize("hello world")))
    assert not np.allclose(plain, t1) and not np.allclose(t1, t2)


def test_server_requests_pick_the_adapter_by_model(setup) -> None:  # type: ignore[no-untyped-def]
    store, a1, _ = setup
    with TestClient(create_app(ServerConfig(store_home=store.home))) as client:
        body = {"model": "tuned", "modelfile": f"FROM tiny\nADAPTER {a1} 0.5"}
        assert client.post("/api/create", json=body).status_code == 200
        answers = {}
        for name in ("tiny", "tuned"):
            r = client.post("/api/generate", json={
                "model": name, "prompt": "hello", "stream": False,
                "options": {"temperature": 0, "num_predict": 8}})  # fmt: skip
            assert r.status_code == 200, r.text
            answers[name] = r.json()["response"]
        show = client.post("/api/show", json={"model": "tuned"}).json()
        assert f"ADAPTER {a1} 0.5" in show["modelfile"]
        ps = {m["name"] for m in client.get("/api/ps").json()["models"]}
        assert {"tiny:latest", "tuned:latest"} <= ps
