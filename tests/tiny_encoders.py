"""Tiny random encoders written two ways: a sentence-transformers folder (HF names,
safetensors, config.json, tokenizer.json, modules.json, 1_Pooling) and a GGUF file (the
tensor names and metadata llama.cpp's converter writes, spelled out here by hand).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import save_file

State = dict[str, torch.Tensor]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "hello", "world", "run", "##ing"]
PUNCT = [".", ",", "!", "?", "'"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
VOCAB = SPECIALS + WORDS + PUNCT + LETTERS + ["##" + c for c in LETTERS] + list("0123456789")
N_EMBD, N_HEAD, N_FF, N_LAYERS, N_CTX = 32, 4, 64, 2, 64

CONFIGS: dict[str, dict] = {
    "bert": {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": N_EMBD,
        "num_attention_heads": N_HEAD, "intermediate_size": N_FF, "num_hidden_layers": N_LAYERS,
        "layer_norm_eps": 1e-12, "max_position_embeddings": N_CTX, "hidden_act": "gelu",
        "vocab_size": len(VOCAB), "type_vocab_size": 2,
    },
    "nomic-bert": {
        "architectures": ["NomicBertModel"], "model_type": "nomic_bert", "n_embd": N_EMBD,
        "n_head": N_HEAD, "n_inner": N_FF, "n_layer": N_LAYERS, "layer_norm_epsilon": 1e-12,
        "n_positions": N_CTX, "rotary_emb_base": 1000.0, "rotary_emb_fraction": 1.0,
        "activation_function": "swiglu", "vocab_size": len(VOCAB), "type_vocab_size": 2,
    },
    "jina-bert-v2": {
        "architectures": ["JinaBertModel"], "model_type": "bert", "hidden_size": N_EMBD,
        "num_attention_heads": N_HEAD, "intermediate_size": N_FF, "num_hidden_layers": N_LAYERS,
        "layer_norm_eps": 1e-12, "max_position_embeddings": N_CTX, "hidden_act": "gelu",
        "position_embedding_type": "alibi", "feed_forward_type": "geglu",
        "vocab_size": len(VOCAB), "type_vocab_size": 2,
    },
}  # fmt: skip

# HF name -> llama.cpp GGUF name, per architecture (as convert_hf_to_gguf.py writes them)
_COMMON = [
    (r"embeddings\.word_embeddings", "token_embd"),
    (r"embeddings\.position_embeddings", "position_embd"),
    (r"embeddings\.token_type_embeddings", "token_types"),
    (r"embeddings\.LayerNorm", "token_embd_norm"),
    (r"encoder\.layers?\.(\d+)\.attention\.self\.query", r"blk.\1.attn_q"),
    (r"encoder\.layers?\.(\d+)\.attention\.self\.key", r"blk.\1.attn_k"),
    (r"encoder\.layers?\.(\d+)\.attention\.self\.value", r"blk.\1.attn_v"),
    (r"encoder\.layers?\.(\d+)\.attention\.self\.layer_norm_q", r"blk.\1.attn_q_norm"),
    (r"encoder\.layers?\.(\d+)\.attention\.self\.layer_norm_k", r"blk.\1.attn_k_norm"),
    (r"encoder\.layers?\.(\d+)\.attention\.output\.dense", r"blk.\1.attn_output"),
    (r"encoder\.layers?\.(\d+)\.attention\.output\.LayerNorm", r"blk.\1.attn_output_norm"),
    (r"encoder\.layers?\.(\d+)\.intermediate\.dense", r"blk.\1.ffn_up"),
    (r"encoder\.layers?\.(\d+)\.output\.dense", r"blk.\1.ffn_down"),
    (r"encoder\.layers?\.(\d+)\.output\.LayerNorm", r"blk.\1.layer_output_norm"),
    (r"emb_ln", "token_embd_norm"),
    (r"encoder\.layers\.(\d+)\.attn\.Wqkv", r"blk.\1.attn_qkv"),
    (r"encoder\.layers\.(\d+)\.attn\.out_proj", r"blk.\1.attn_output"),
    (r"encoder\.layers\.(\d+)\.norm1", r"blk.\1.attn_output_norm"),
    (r"encoder\.layers\.(\d+)\.norm2", r"blk.\1.layer_output_norm"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc11", r"blk.\1.ffn_up"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc12", r"blk.\1.ffn_gate"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2", r"blk.\1.ffn_down"),
    (r"encoder\.layer\.(\d+)\.mlp\.wo", r"blk.\1.ffn_down"),
    (r"encoder\.layer\.(\d+)\.mlp\.layernorm", r"blk.\1.layer_output_norm"),
]


def random_state(arch: str, seed: int = 0, qk_norm: bool = False, biases: bool = True) -> State:
    """Random HF-named weights of a tiny `arch` encoder."""
    g = torch.Generator().manual_seed(seed)

    def mat(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.2

    def ln(sd: State, name: str, width: int = N_EMBD) -> None:
        sd[name + ".weight"] = 1.0 + torch.randn(width, generator=g) * 0.1
        sd[name + ".bias"] = torch.randn(width, generator=g) * 0.1

    def lin(sd: State, name: str, out: int, inp: int, bias: bool = True) -> None:
        sd[name + ".weight"] = mat(out, inp)
        if bias and biases:
            sd[name + ".bias"] = torch.randn(out, generator=g) * 0.05

    sd: State = {
        "embeddings.word_embeddings.weight": mat(len(VOCAB), N_EMBD),
        "embeddings.token_type_embeddings.weight": mat(2, N_EMBD),
    }
    if arch == "nomic-bert":
        ln(sd, "emb_ln")
        for i in range(N_LAYERS):
            p = f"encoder.layers.{i}."
            lin(sd, p + "attn.Wqkv", 3 * N_EMBD, N_EMBD, bias=False)
            lin(sd, p + "attn.out_proj", N_EMBD, N_EMBD, bias=False)
            ln(sd, p + "norm1")
            lin(sd, p + "mlp.fc11", N_FF, N_EMBD, bias=False)
            lin(sd, p + "mlp.fc12", N_FF, N_EMBD, bias=False)
            lin(sd, p + "mlp.fc2", N_EMBD, N_FF, bias=False)
            ln(sd, p + "norm2")
        return sd
    ln(sd, "embeddings.LayerNorm")
    if arch == "bert":
        sd["embeddings.position_embeddings.weight"] = mat(N_CTX, N_EMBD)
    for i in range(N_LAYERS):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            lin(sd, p + f"attention.self.{n}", N_EMBD, N_EMBD)
        if qk_norm:
            ln(sd, p + "attention.self.layer_norm_q")
            ln(sd, p + "attention.self.layer_norm_k")
        lin(sd, p + "attention.output.dense", N_EMBD, N_EMBD)
        ln(sd, p + "attention.output.LayerNorm")
        if arch == "bert":
            lin(sd, p + "intermediate.dense", N_FF, N_EMBD)
            lin(sd, p + "output.dense", N_EMBD, N_FF)
            ln(sd, p + "output.LayerNorm")
        else:
            lin(sd, p + "mlp.gated_layers", 2 * N_FF, N_EMBD, bias=False)
            lin(sd, p + "mlp.wo", N_EMBD, N_FF)
            ln(sd, p + "mlp.layernorm")
    return sd


def _tokenizer():  # noqa: ANN202 - tokenizers.Tokenizer
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok


def write_folder(
    path: Path, arch: str, sd: State, pooling: str = "mean", max_seq: int = N_CTX
) -> Path:
    """A sentence-transformers folder holding `sd`."""
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(CONFIGS[arch]))
    _tokenizer().save(str(path / "tokenizer.json"))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    modes = {
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_lasttoken": pooling == "last",
    }
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": N_EMBD, **modes})
    )
    return path


def gguf_tensors(arch: str, sd: State, fused_gate_up: bool = False) -> dict[str, torch.Tensor]:
    """`sd` under llama.cpp's tensor names (jina's gated_layers split as its converter does)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        m = re.match(r"encoder\.layer\.(\d+)\.mlp\.gated_layers\.weight", name)
        if m and not fused_gate_up:
            out[f"blk.{m.group(1)}.ffn_gate.weight"] = t[:N_FF]
            out[f"blk.{m.group(1)}.ffn_up.weight"] = t[N_FF:]
            continue
        if m:
            out[f"blk.{m.group(1)}.ffn_up.weight"] = t
            continue
        stem, suffix = name.rsplit(".", 1)
        for pattern, repl in _COMMON:
            if re.fullmatch(pattern, stem):
                out[re.sub(pattern, repl, stem) + "." + suffix] = t
                break
        else:
            raise KeyError(name)
    return out


def write_gguf(
    path: Path,
    arch: str,
    sd: State,
    *,
    pooling: gguf.PoolingType = gguf.PoolingType.MEAN,
    f16: bool = False,
    fused_gate_up: bool = False,
) -> Path:
    """A GGUF file holding `sd`, with the WordPiece vocabulary in phantom-space form."""
    from corral.tokenizer.wpm import phantom

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_block_count(N_LAYERS)
    w.add_head_count(N_HEAD)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(pooling)
    if arch == "nomic-bert":
        w.add_rope_freq_base(1000.0)
    w.add_tokenizer_model("bert")
    w.add_token_list([phantom(t) for t in VOCAB])
    w.add_token_types([3 if t in SPECIALS else 1 for t in VOCAB])
    w.add_token_type_count(2)
    w.add_bos_token_id(2)
    w.add_sep_token_id(3)
    w.add_unk_token_id(1)
    w.add_pad_token_id(0)
    w.add_mask_token_id(4)
    for name, t in gguf_tensors(arch, sd, fused_gate_up).items():
        a = t.numpy().astype(np.float32)
        w.add_tensor(name, a.astype(np.float16) if f16 and a.ndim == 2 else a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
