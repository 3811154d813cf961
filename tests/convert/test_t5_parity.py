"""`corral convert` on tiny random T5 models (gated-GELU as Flan-T5, ReLU as the original T5
with its tied, scaled head), checked against transformers' T5ForConditionalGeneration:
float32 decoder logits within 1e-4 and the same 16 greedy tokens, with and without the
decoder's KV cache; then through `corral.load(...)`: logits, generate, and the tokenizer."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from corral.convert import convert_hf  # noqa: E402
from corral.convert.spm_proto import Piece, write_pieces  # noqa: E402

VOCAB = 300
EOS = 1
STEPS = 16
WORDS = ["▁translate", "▁English", "▁to", "▁German", ":", "▁the", "▁house", "▁is", "▁wonderful"]
WORDS += ["▁", "s", "e", "a", "t", "h", "o", "u", "▁a", "n", "r", "i", "."]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_spiece(path: Path) -> None:
    """A tiny Unigram spiece.model: T5's <pad> </s> <unk>, some words, and a normalizer spec
    (dummy prefix, whitespace folding, no charsmap)."""
    pieces = [Piece("<pad>", 0.0, 3), Piece("</s>", 0.0, 3), Piece("<unk>", 0.0, 2)]
    pieces += [Piece(w, -1.0 - i * 0.5, 1) for i, w in enumerate(WORDS)]
    trainer = b"\x18" + _varint(1)  # model_type = UNIGRAM
    normalizer = b"\x18\x01\x20\x01"  # add_dummy_prefix, remove_extra_whitespaces
    buf = write_pieces(pieces)
    buf += b"\x12" + _varint(len(trainer)) + trainer + b"\x1a" + _varint(len(normalizer))
    path.write_bytes(buf + normalizer)


CONFIGS = {
    "flan-t5": {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "t5": {"feed_forward_proj": "relu", "tie_word_embeddings": True},
}


def save_tiny_t5(
    folder: Path, variant: str, encoder_layers: int = 2, decoder_layers: int = 3
) -> Any:
    """A random T5ForConditionalGeneration (by default 3 decoder layers against 2 encoder
    ones, so that t5.decoder_block_count matters) with the tiny spiece.model."""
    folder.mkdir(parents=True)
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=encoder_layers,
        num_decoder_layers=decoder_layers,
        num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=EOS, **CONFIGS[variant],
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config)
    with torch.no_grad():  # random norms and a strong position bias, so that both matter
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + 1.0)
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn_like(p))
    model.eval().save_pretrained(folder)
    write_spiece(folder / "spiece.model")
    return model


@pytest.fixture(autouse=True)
def exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain float32 compute (as CORRAL_EXACT=1): no llama.cpp float16 roundings."""
    monkeypatch.setattr("corral.models.layers._EXACT", True)
    monkeypatch.setattr("corral.models.weights._EXACT", True)


@pytest.fixture(params=sorted(CONFIGS))
def converted(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, Path]:
    hf = save_tiny_t5(tmp_path / "hf", request.param)
    return hf, convert_hf(tmp_path / "hf", tmp_path / "m.gguf", "f32")


def _greedy(logits: torch.Tensor) -> int:
    """The argmax of logits [..., V] at the last position, EOS excluded (transformers'
    min_new_tokens keeps it out for all the compared steps)."""
    last = logits.reshape(-1, logits.shape[-1])[-1].clone()
    last[EOS] = float("-inf")
    return int(last.argmax())


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(3, VOCAB - 10, (1, n), generator=torch.Generator().manual_seed(seed))


def test_matches_transformers(converted: tuple[Any, Path]) -> None:
    from corral.gguf import open_gguf
    from corral.models.registry import load_model

    hf, path = converted
    m = load_model(open_gguf(path))
    # the prompt is longer than the exact-bucket range, so log-spaced buckets are used too
    enc, dec = _ids(40, 3), torch.cat([torch.zeros(1, 1, dtype=torch.long), _ids(9, 4)], 1)
    with torch.no_grad():
        ref = hf(input_ids=enc, decoder_input_ids=dec, use_cache=False).logits.float()

    cache = m.make_cache(64, dtype=torch.float32)
    m.encode(enc, cache)
    full = m.forward(dec, cache)
    assert float((full - ref).abs().max()) <= 1e-4

    cache = m.make_cache(64, dtype=torch.float32)
    m.encode(enc, cache)
    parts = [m.forward(dec[:, :3], cache)]
    parts += [m.forward(dec[:, i : i + 1], cache) for i in range(3, dec.shape[1])]
    assert float((torch.cat(parts, 1) - ref).abs().max()) <= 1e-4

    with torch.no_grad():
        # an explicit cache: transformers sizes its default one by the encoder's layer count
        kv = transformers.EncoderDecoderCache(
            transformers.DynamicCache(), transformers.DynamicCache()
        )
        want = hf.generate(
            enc, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, cache=kv
        )[0, 1:].tolist()  # fmt: skip
    cache = m.make_cache(64, dtype=torch.float32)
    m.encode(enc, cache)
    logits = m.forward(torch.tensor([[m.decoder_start_id]]), cache)
    got_cached = []
    for _ in range(STEPS):
        got_cached.append(_greedy(logits))
        logits = m.forward(torch.tensor([got_cached[-1:]]), cache)
    seq = [m.decoder_start_id]
    for _ in range(STEPS):
        cache = m.make_cache(64, dtype=torch.float32)
        m.encode(enc, cache)
        seq.append(_greedy(m.forward(torch.tensor([seq]), cache, last_only=True)))
    assert got_cached == want
    assert seq[1:] == want


def test_load_generate_and_logits(converted: tuple[Any, Path]) -> None:
    import corral

    hf, path = converted
    model = corral.load(path, n_ctx=64)
    enc = _ids(12, 5)[0].tolist()
    with torch.no_grad():
        dec = torch.tensor([[0, 7, 9]])
        ref = hf(input_ids=torch.tensor([enc]), decoder_input_ids=dec).logits[0]
        kv = transformers.EncoderDecoderCache(
            transformers.DynamicCache(), transformers.DynamicCache()
        )
        want = hf.generate(
            torch.tensor([enc]), max_new_tokens=8, do_sample=False, cache=kv
        )[0, 1:].tolist()  # fmt: skip
    got = model.logits(enc, decoder_ids=[7, 9])
    assert got.shape == (3, VOCAB)
    assert abs(got - ref.numpy()).max() <= 0.02  # the float16 KV cache, as llama.cpp's
    assert model.logits(enc).shape == (1, VOCAB)

    # generation stops at EOS as transformers does (which keeps EOS in its output)
    res = model.generate(enc, max_tokens=8, temperature=0)
    ids = [e.token_id for e in model.generate(enc, max_tokens=8, temperature=0, stream=True)]
    assert ids == want[: len(ids)]
    assert res.text == model.detokenize([t for t in ids if t != EOS])
    prompt = "translate English to German: the house"
    assert model.tokenize(prompt) == [3, 4, 5, 6, 7, 8, 9, EOS]  # EOS closes the input
    by_text = model.generate(prompt, max_tokens=4, temperature=0, ignore_eos=True)
    by_ids = model.generate(model.tokenize(prompt), max_tokens=4, temperature=0, ignore_eos=True)
    assert by_text.text == by_ids.text


def test_tokenizer_matches_hf_unigram(converted: tuple[Any, Path]) -> None:
    """Viterbi over the converted vocabulary == the tokenizers library's Unigram model."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    from corral.gguf import open_gguf
    from corral.tokenizer import load_tokenizer

    _, path = converted
    ours = load_tokenizer(open_gguf(path).metadata)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(w, -1.0 - i * 0.5) for i, w in enumerate(WORDS)]
    ref = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    ref.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    ref.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    for text in ["translate English to German: the house is wonderful.", "  a  seat  ", "xyz the"]:
        want = ref.encode(text.strip()).ids + [EOS]
        assert ours.encode(text) == want, text
    assert ours.decode(ours.encode("the house is wonderful.")) == "the house is wonderful."


def test_cli_convert_and_scheduler(tmp_path: Path) -> None:
    import corral
    from corral.cli.main import main
    from corral.engine.sampling import SamplingParams
    from corral.engine.scheduler import Request, Scheduler

    save_tiny_t5(tmp_path / "hf", "flan-t5")
    out = tmp_path / "m.gguf"
    assert main(["convert", str(tmp_path / "hf"), "-o", str(out), "--outtype", "q8_0"]) == 0
    model = corral.load(out, n_ctx=32)
    want = model.generate([5, 6, 7, EOS], max_tokens=3, temperature=0, ignore_eos=True)
    sched = Scheduler(model)  # served one decoder cache per slot (engine/slots.py)
    try:
        req = Request([5, 6, 7, EOS], 3, SamplingParams(temperature=0), ignore_eos=True)
        assert [e.token_id for e in sched.submit(req)] == want.token_ids
    finally:
        sched.close()


def test_precompiled_charsmap() -> None:
    """A hand-made XCDA mapping "A" -> "a": the longest-prefix walk llama.cpp does."""
    from corral.tokenizer.ugm import CharsMap

    units = [0] * 66
    units[0] = 1 << 10  # root: BASE 1, so "A" (0x41) lives at 1 ^ 0x41 = 64
    units[64] = (1 << 10) | (1 << 8) | 0x41  # LCHECK "A", a leaf, BASE 1 -> value node 65
    units[65] = 1 << 31  # value: replacement at offset 0 (bit 31: never a child)
    blob = struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units)
    cmap = CharsMap(blob + b"a\x00")
    assert cmap.match(b"xAB", 1) == (b"a", 1)
    assert cmap.match(b"xAB", 2) is None
