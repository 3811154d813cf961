"""all-MiniLM-L6-v2 against sentence-transformers: 200 varied sentences within cosine 0.9999.

The reference (data/, made once by make_reference.py in an environment with
sentence-transformers) is compared with corral on the same folder, and on a GGUF written
here from that folder the way llama.cpp's converter writes BERT (phantom-space WordPiece
vocabulary, llama.cpp tensor names): its ids must equal tokenizer.json's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from tiny_encoders import gguf_tensors

from corral.embed import Embedder, TextEncoder, load_embedder
from corral.tokenizer.wpm import phantom

pytestmark = pytest.mark.realmodel

DATA = Path(__file__).parent / "data"
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def folder() -> Path:
    """The MiniLM folder: CORRAL_TEST_MODELS/all-MiniLM-L6-v2, or the store's `minilm`."""
    env = os.environ.get("CORRAL_TEST_MODELS")
    if env and (Path(env) / "all-MiniLM-L6-v2" / "config.json").is_file():
        return Path(env) / "all-MiniLM-L6-v2"
    try:
        from corral.store import Store

        return Store().resolve("minilm").path
    except Exception as e:  # noqa: BLE001 - a clear failure, as the other real-model tests
        pytest.fail(f"real model 'minilm' not available (run `corral pull minilm`): {e}")


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    texts = json.loads((DATA / "minilm_sentences.json").read_text(encoding="utf-8"))
    vecs = np.load(DATA / "minilm_reference.npy").astype(np.float32)
    return texts, vecs


def _min_cosine(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)  # float16 storage: renormalize
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    return float((ours * ref).sum(1).min())


def test_folder_matches_sentence_transformers(folder: Path, reference) -> None:
    texts, ref = reference
    emb = load_embedder(folder)
    assert (emb.dimensions, emb.max_tokens, emb.info.pooling.value) == (384, 256, "mean")
    assert max(emb.count_tokens(texts)) > 256  # the long ones are cut, as ST cuts them
    cos = _min_cosine(emb.embed(texts, max_batch_size=32), ref)
    assert cos >= MIN_COSINE, f"min cosine {cos:.6f}"


def write_gguf_from_folder(folder: Path, path: Path) -> Path:
    """A BERT GGUF of `folder`, as llama.cpp's convert_hf_to_gguf.py lays it out (F32)."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    cfg = json.loads((folder / "config.json").read_text())
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    specials = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    sd = {
        k: v
        for k, v in load_file(str(folder / "model.safetensors")).items()
        if not k.startswith("pooler.") and not k.endswith("position_ids")
    }
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_tokenizer_model("bert")
    w.add_token_list([phantom(t) for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    w.add_token_type_count(cfg["type_vocab_size"])
    for name, i in (("bos", "[CLS]"), ("sep", "[SEP]"), ("unk", "[UNK]"), ("pad", "[PAD]")):
        getattr(w, f"add_{name}_token_id")(tok.token_to_id(i))
    for name, t in gguf_tensors("bert", sd).items():
        w.add_tensor(name, t.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gguf_embedder(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    path = tmp_path_factory.mktemp("minilm") / "all-minilm-l6-v2.gguf"
    return load_embedder(write_gguf_from_folder(folder, path))


def test_gguf_wordpiece_ids_equal_tokenizer_json(folder: Path, gguf_embedder, reference) -> None:
    from tokenizers import Tokenizer

    texts, _ = reference
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    want = [e.ids for e in tok.encode_batch(texts)]
    text = gguf_embedder.text
    got = [[*text.prefix, *ids, *text.suffix] for ids in text.backend.plain(texts)]
    assert got == want
    assert gguf_embedder.count_tokens(texts) == [len(ids) for ids in want]


def test_gguf_matches_sentence_transformers(gguf_embedder, reference) -> None:
    texts, ref = reference
    # a GGUF knows only the position table's 512, not sentence-transformers' 256: cut to it
    st_cut = TextEncoder(gguf_embedder.text.backend, 256, gguf_embedder.text.pad_id)
    cos = _min_cosine(gguf_embedder.embed_ids(st_cut.encode(texts)).vectors, ref)
    assert cos >= MIN_COSINE, f"min cosine {cos:.6f}"
