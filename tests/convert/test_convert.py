"""`corral convert` beyond the parity checks: output types, .bin checkpoints, SentencePiece
vocabularies, the command line, and bad input (named tensors, supported list, no debris)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as Q

transformers = pytest.importorskip("transformers")

from corral.cli.main import main  # noqa: E402
from corral.convert import ConvertError, convert_hf  # noqa: E402
from corral.convert.spm_proto import Piece, write_pieces  # noqa: E402
from corral.gguf import open_gguf  # noqa: E402
from corral.models.registry import load_model  # noqa: E402
from corral.tokenizer import load_tokenizer  # noqa: E402
from hf_tiny import save_tiny  # noqa: E402

_CFG = {
    "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "bos_token_id": 0, "eos_token_id": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("llama")
    save_tiny(d, transformers.LlamaConfig(**_CFG))
    return d


def _logits(path: Path) -> torch.Tensor:
    m = load_model(open_gguf(path))
    return m.forward(torch.arange(5, 15)[None], m.make_cache(16))


@pytest.mark.parametrize(
    ("outtype", "matrix_type"), [("f16", Q.F16), ("bf16", Q.BF16), ("q8_0", Q.Q8_0)]
)
def test_outtypes(llama_dir: Path, tmp_path: Path, outtype: str, matrix_type: Q) -> None:
    ref = _logits(convert_hf(llama_dir, tmp_path / "f32.gguf", "f32"))
    out = convert_hf(llama_dir, tmp_path / f"{outtype}.gguf", outtype)
    g = open_gguf(out)
    assert g.tensors["blk.0.attn_q.weight"].ggml_type == matrix_type
    assert g.tensors["token_embd.weight"].ggml_type == matrix_type
    assert g.tensors["blk.0.attn_norm.weight"].ggml_type == Q.F32  # vectors stay float32
    assert (_logits(out) - ref).abs().max() < 0.05


def test_metadata_and_bpe_vocab(llama_dir: Path, tmp_path: Path) -> None:
    g = open_gguf(convert_hf(llama_dir, tmp_path / "m.gguf"))
    assert g.architecture == "llama"
    assert g.get("llama.block_count") == 2
    assert g.get("llama.attention.head_count_kv") == 2
    assert g.get("llama.rope.dimension_count") == 16
    assert g.get("tokenizer.ggml.model") == "gpt2"
    assert g.get("tokenizer.ggml.pre") == "gpt-2"
    assert len(g.get("tokenizer.ggml.tokens")) == 300
    assert g.get("tokenizer.ggml.merges")
    tok = load_tokenizer(g.metadata)
    from tokenizers import Tokenizer

    hf_tok = Tokenizer.from_file(str(llama_dir / "tokenizer.json"))
    text = "the quick brown fox, 1234"
    assert tok.encode(text, add_special=False) == hf_tok.encode(text).ids


def test_pytorch_bin_checkpoint(tmp_path: Path) -> None:
    hf = save_tiny(tmp_path / "hf", transformers.LlamaConfig(**_CFG))
    # a pytorch_model.bin in place of the safetensors (transformers 5 no longer writes them)
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    out = convert_hf(tmp_path / "hf", tmp_path / "m.gguf", "f32")
    with torch.no_grad():
        ref = hf(torch.arange(5, 15)[None]).logits
    assert (_logits(out) - ref).abs().max() < 0.05


def test_sentencepiece_vocab(llama_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "spm"
    folder.mkdir()
    for f in llama_dir.iterdir():
        if f.name not in ("tokenizer.json", "tokenizer_config.json"):
            (folder / f.name).write_bytes(f.read_bytes())
    pieces = [Piece("<unk>", 0.0, 2), Piece("<s>", 0.0, 3), Piece("</s>", 0.0, 3)]
    pieces += [Piece(f"<0x{i:02X}>", 0.0, 6) for i in range(256)]
    pieces += [Piece(w, -float(i), 1) for i, w in enumerate(["▁the", "▁a", "he", "▁t"])]
    (folder / "tokenizer.model").write_bytes(write_pieces(pieces))
    g = open_gguf(convert_hf(folder, tmp_path / "m.gguf"))
    assert g.get("tokenizer.ggml.model") == "llama"
    tokens = g.get("tokenizer.ggml.tokens")
    assert tokens[259:263] == ["▁the", "▁a", "he", "▁t"]
    assert tokens[263] == "[PAD263]"  # padded to the model's vocab_size
    assert list(g.get("tokenizer.ggml.token_type")[:4]) == [2, 3, 3, 6]
    assert float(g.get("tokenizer.ggml.scores")[260]) == -1.0
    assert load_tokenizer(g.metadata).encode("the", add_special=False) == [259]


def test_cli(llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.gguf"
    assert main(["convert", str(llama_dir), "-o", str(out), "--outtype", "q8_0"]) == 0
    assert open_gguf(out).get("general.file_type") == 7
    assert main(["convert", str(tmp_path / "nope"), "-o", str(tmp_path / "x.gguf")]) == 1
    assert "Error:" in capsys.readouterr().err


def _copy_with(src: Path, dst: Path, edit_tensors=None, edit_config=None) -> Path:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    if edit_tensors:
        sd = load_file(dst / "model.safetensors")
        edit_tensors(sd)
        save_file(sd, dst / "model.safetensors")
    if edit_config:
        cfg = json.loads((dst / "config.json").read_text())
        edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_missing_tensor_is_named(llama_dir: Path, tmp_path: Path) -> None:
    d = _copy_with(
        llama_dir, tmp_path / "hf", lambda sd: sd.pop("model.layers.1.mlp.down_proj.weight")
    )
    with pytest.raises(ConvertError, match=r"blk\.1\.ffn_down\.weight"):
        convert_hf(d, tmp_path / "m.gguf")
    assert list(tmp_path.glob("*.gguf*")) == [] and not list(tmp_path.glob(".*part"))


def test_extra_tensor_is_named(llama_dir: Path, tmp_path: Path) -> None:
    def add(sd: dict) -> None:
        sd["model.layers.0.mlp.surprise.weight"] = torch.zeros(2, 2)

    d = _copy_with(llama_dir, tmp_path / "hf", add)
    with pytest.raises(ConvertError, match=r"model\.layers\.0\.mlp\.surprise\.weight"):
        convert_hf(d, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_unknown_architecture_lists_supported(llama_dir: Path, tmp_path: Path) -> None:
    d = _copy_with(
        llama_dir, tmp_path / "hf", edit_config=lambda c: c.update(architectures=["FooLM"])
    )
    with pytest.raises(ConvertError, match=r"FooLM.*supported: .*LlamaForCausalLM"):
        convert_hf(d, tmp_path / "m.gguf")


def test_failure_mid_write_leaves_nothing(
    llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import corral.convert.writer as writer

    calls = {"n": 0}
    real = writer._encode

    def flaky(t, qtype):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real(t, qtype)

    monkeypatch.setattr(writer, "_encode", flaky)
    (tmp_path / "out").mkdir()
    with pytest.raises(OSError, match="disk full"):
        convert_hf(llama_dir, tmp_path / "out" / "m.gguf")
    assert list((tmp_path / "out").iterdir()) == []


def test_bf16_sharded_checkpoint(tmp_path: Path) -> None:
    hf = save_tiny(tmp_path / "hf", transformers.LlamaConfig(**_CFG), dtype=torch.bfloat16)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="40KB")  # several shards + index
    (tmp_path / "hf" / "model.safetensors").unlink(missing_ok=True)
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    out = convert_hf(tmp_path / "hf", tmp_path / "m.gguf", "bf16")
    with torch.no_grad():
        ref = hf.float()(torch.arange(5, 15)[None]).logits
    assert (_logits(out) - ref).abs().max() < 0.05
