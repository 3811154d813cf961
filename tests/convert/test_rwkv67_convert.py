"""RWKV-6 / RWKV-7: `corral convert` of Hugging Face folders rebuilt from the tiny llama.cpp
GGUF files (tests/rwkv_hf.py) gives those files back, and corral's logits on the converted
file equal llama.cpp's reference outputs (tests/models/fixtures/rwkv).

"Equal" for tensors: the same names, the same ggml shape (ne, padded to 4 dims: llama.cpp's
converter squeezes the [1, 1, E] lerps to [E], which the fixtures write unsqueezed) and the
same float32 values, bit for bit. Layer 0 of rwkv7 is the one exception, by design: its
value-residual LoRA is unused, and the converter writes copies of a0/a1/a2 there as
llama.cpp's does.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader
from safetensors.torch import load_file, save_file

import corral
from corral.convert import ConvertError, convert_hf
from rwkv_hf import LAYOUTS, read_gguf, save_hf_rwkv
from tiny_rwkv import write_tiny_rwkv

FIXTURES = Path(__file__).parents[1] / "models" / "fixtures" / "rwkv"
ATOL = 1e-3  # as tests/models/test_rwkv.py
PEERS = Path("/tmp/corral-peers/bin/python")


def _arch(layout: str) -> str:
    return layout.split("-")[0]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rwkv_fixtures")
    out = {}
    for arch in ("rwkv6", "rwkv7"):
        ref = np.load(FIXTURES / f"{arch}.npz")
        out[arch] = folder / f"{arch}.gguf"
        assert write_tiny_rwkv(out[arch], arch) == str(ref["digest"]), "tiny_rwkv.py changed"
    return out


@pytest.fixture(scope="module", params=LAYOUTS)
def converted(
    request: pytest.FixtureRequest,
    fixtures: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, Path]:
    layout = request.param
    folder = tmp_path_factory.mktemp(layout)
    hf = save_hf_rwkv(fixtures[_arch(layout)], folder / "hf", layout)
    return layout, hf, convert_hf(hf, folder / "out.gguf", "f32")


def _ne(a: np.ndarray) -> tuple[int, ...]:
    return (*a.shape[::-1], *[1] * (4 - a.ndim))


def test_tensors_equal_the_llama_cpp_file(
    converted: tuple[str, Path, Path], fixtures: dict[str, Path]
) -> None:
    layout, _, out = converted
    want, _ = read_gguf(fixtures[_arch(layout)])
    got, _ = read_gguf(out)
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        if layout.startswith("rwkv7") and re.fullmatch(r"blk\.0\.time_mix_v\d\.weight", name):
            w = want[name.replace("time_mix_v", "time_mix_a")]  # the stand-ins
        assert _ne(got[name]) == _ne(w), name
        assert np.array_equal(got[name].reshape(w.shape), w), name


def test_metadata_is_llama_cpp_s(
    converted: tuple[str, Path, Path], fixtures: dict[str, Path]
) -> None:
    layout, _, out = converted
    arch = _arch(layout)
    _, want = read_gguf(fixtures[arch])
    _, got = read_gguf(out)
    assert got["general.architecture"] == arch
    assert got[f"{arch}.context_length"] == 1048576
    assert got[f"{arch}.attention.head_count"] == 0
    same = [
        "block_count", "embedding_length", "feed_forward_length", "wkv.head_size",
        "attention.layer_norm_epsilon",
    ]  # fmt: skip
    if arch == "rwkv6":
        same += ["rescale_every_n_layers", "time_mix_extra_dim", "time_decay_extra_dim"]
    else:
        same += [
            f"attention.{k}_lora_rank" for k in ("decay", "iclr", "value_residual_mix", "gate")
        ]
    for key in same:
        assert got[f"{arch}.{key}"] == want[f"{arch}.{key}"], key
    assert got["tokenizer.ggml.model"] == "rwkv"
    assert got["tokenizer.chat_template"] == "rwkv-world"
    for key in ("bos_token_id", "eos_token_id", "eot_token_id"):
        assert got[f"tokenizer.ggml.{key}"] == want[f"tokenizer.ggml.{key}"], key
    g, w = GGUFReader(out), GGUFReader(fixtures[arch])
    for field in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
        assert g.fields[field].contents() == w.fields[field].contents()


def test_logits_match_llama_cpp_reference(converted: tuple[str, Path, Path]) -> None:
    layout, _, out = converted
    ref = np.load(FIXTURES / f"{_arch(layout)}.npz")
    model = corral.load(out, n_ctx=64)
    logits = model.logits(ref["prompt_ids"].tolist())
    assert np.abs(logits - ref["logits"]).max() <= ATOL
    got = model.generate(ref["prompt_ids"].tolist(), 16, temperature=0, ignore_eos=True)
    assert got.token_ids == ref["greedy_ids"].tolist()


def test_f16_keeps_llama_cpp_s_f32_tensors(
    converted: tuple[str, Path, Path], tmp_path: Path
) -> None:
    layout, hf, _ = converted
    out = convert_hf(hf, tmp_path / "f16.gguf", "f16")
    types = {t.name: t.tensor_type for t in GGUFReader(out).tensors}
    f32 = ["time_mix_w1", "time_mix_w2", "time_mix_lerp_fused"]
    if layout == "rwkv6":
        f32 += ["time_mix_first", "time_mix_decay_w1", "time_mix_decay_w2"]
    for name in f32:
        assert types[f"blk.1.{name}.weight"] == GGMLQuantizationType.F32, name
    f16 = ["time_mix_key", "channel_mix_value"]
    f16 += ["time_mix_a1", "time_mix_g2"] if layout != "rwkv6" else []
    for name in f16:
        assert types[f"blk.1.{name}.weight"] == GGMLQuantizationType.F16, name
    assert types["token_embd.weight"] == GGMLQuantizationType.F16


def _without(hf: Path, dst: Path, drop: str) -> Path:
    dst.mkdir()
    sd = load_file(hf / "model.safetensors")
    del sd[drop]
    save_file(sd, dst / "model.safetensors")
    for name in ("config.json", "rwkv_vocab_v20230424.txt"):
        (dst / name).write_bytes((hf / name).read_bytes())
    return dst


@pytest.mark.parametrize(
    ("layout", "drop", "named"),
    [
        ("rwkv6", "rwkv.blocks.1.attention.key.weight", r"blk\.1\.time_mix_key\.weight"),
        ("rwkv6", "rwkv.blocks.2.attention.time_maa_v", r"rwkv\.blocks\.2\.attention\.time_maa_v"),
        ("rwkv7-fla", "model.layers.1.attn.x_a", r"model\.layers\.1\.attn\.x_a"),
        ("rwkv7-fla", "model.layers.1.attn.v_lora.lora.2.bias", r"blk\.1\.time_mix_v0\.weight"),
        ("rwkv7", "model.blocks.0.attention.k_k", r"blk\.0\.time_mix_k_k\.weight"),
    ],
)
def test_missing_tensor_is_named(
    layout: str, drop: str, named: str, fixtures: dict[str, Path], tmp_path: Path
) -> None:
    hf = save_hf_rwkv(fixtures[_arch(layout)], tmp_path / "hf", layout)
    folder = _without(hf, tmp_path / "cut", drop)
    with pytest.raises(ConvertError, match=named):
        convert_hf(folder, tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.gguf*")) and not list(tmp_path.glob(".*part"))


def test_missing_vocabulary_is_named(fixtures: dict[str, Path], tmp_path: Path) -> None:
    hf = save_hf_rwkv(fixtures["rwkv6"], tmp_path / "hf", "rwkv6")
    (hf / "rwkv_vocab_v20230424.txt").unlink()
    with pytest.raises(ConvertError, match="rwkv_vocab_v20230424.txt"):
        convert_hf(hf, tmp_path / "m.gguf")


def test_world_vocab_is_padded_to_vocab_size(tmp_path: Path) -> None:
    from corral.convert.rwkv_world import world_tokens

    path = tmp_path / "vocab.txt"
    path.write_text("1 '\\x00' 1\n2 b'\\xff' 1\n3 'a b' 3\n4 '\\u00e9' 2\n", encoding="utf-8")
    tokens, types = world_tokens(path, 8)
    assert tokens == [b"<s>", b"\\x00", b"\\xff", b"a b", b"\\xc3\\xa9", b"[PAD5]", b"[PAD6]",
                      b"[PAD7]"]  # fmt: skip
    assert types == [3, 1, 1, 1, 1, 5, 5, 5]
    with pytest.raises(ConvertError, match="vocab_size 3"):
        world_tokens(path, 3)


# use_extra_bufts off, as make_refs.py: some builds die of SIGILL in the repacked Q8_0
# matmul on CPUs reporting AMX
_LLAMA_CPP = """
import json, sys, llama_cpp, llama_cpp.llama_cpp as lib
defaults = lib.llama_model_default_params
def params():
    p = defaults()
    p.use_extra_bufts = False
    return p
lib.llama_model_default_params = params
out = {}
for path in sys.argv[2:]:
    llm = llama_cpp.Llama(path, n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    ids = json.loads(sys.argv[1])
    llm.eval(ids)
    out[path] = [list(map(float, row)) for row in llm.scores[: len(ids)]]
print(json.dumps(out))
"""


@pytest.mark.skipif(not PEERS.exists(), reason="no llama.cpp peer environment")
@pytest.mark.parametrize("layout", ["rwkv6", "rwkv7-fla"])
def test_llama_cpp_runs_converted_files(
    layout: str, fixtures: dict[str, Path], tmp_path: Path
) -> None:
    """llama.cpp runs the f32, f16 and q8_0 conversions; f32 gives its reference logits
    exactly (the observed difference is 0), the others nearly (f16 ~0.03, q8_0 ~0.5)."""
    ref = np.load(FIXTURES / f"{_arch(layout)}.npz")
    hf = save_hf_rwkv(fixtures[_arch(layout)], tmp_path / "hf", layout)
    paths = [str(convert_hf(hf, tmp_path / f"{t}.gguf", t)) for t in ("f32", "f16", "q8_0")]
    ids = json.dumps(ref["prompt_ids"].tolist())
    run = subprocess.run(
        [str(PEERS), "-c", _LLAMA_CPP, ids, *paths], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for path, tol in zip(paths, (ATOL, 0.1, 1.0), strict=True):
        assert np.abs(np.array(out[path]) - ref["logits"]).max() <= tol, Path(path).name
