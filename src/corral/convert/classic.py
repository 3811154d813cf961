"""Converters for the pre-llama families: gptj, bloom, mpt, falcon (llama.cpp's classes)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFWriter

from corral.convert.base import ArchConverter
from corral.convert.checkpoint import ConvertError
from corral.convert.vocab import add_bpe_vocab, add_spm_vocab

T = MODEL_TENSOR
_FFN = (T.FFN_UP, T.FFN_DOWN)


class GPTJConverter(ArchConverter):
    hf_architectures = ("GPTJForCausalLM",)
    arch = MODEL_ARCH.GPTJ
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM, T.OUTPUT)
    required_per_block = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, *_FFN)

    def set_params(self, w: GGUFWriter) -> None:
        hp = self.hp
        n_embd, n_head = hp["n_embd"], hp["n_head"]
        w.add_block_count(self.n_layers)
        w.add_context_length(hp.get("n_positions", hp.get("n_ctx", 2048)))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(hp.get("n_inner") or 4 * n_embd)
        w.add_head_count(n_head)
        w.add_layer_norm_eps(hp["layer_norm_epsilon"])
        # rotary on the first rotary_dim dims of each head
        w.add_rope_dimension_count(int(hp.get("rotary_dim") or n_embd // n_head))

    def set_vocab(self, w: GGUFWriter) -> None:
        # GPT-2's byte-level BPE; its probe hash is not in llama.cpp's table
        add_bpe_vocab(w, self.ckpt.folder, self.hp.get("vocab_size"), pre="gpt-2")


class BloomConverter(ArchConverter):
    hf_architectures = ("BloomForCausalLM", "BloomModel")
    arch = MODEL_ARCH.BLOOM
    required = (T.TOKEN_EMBD, T.TOKEN_EMBD_NORM, T.OUTPUT_NORM, T.OUTPUT)
    required_per_block = (T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, *_FFN)

    def set_params(self, w: GGUFWriter) -> None:
        n_embd = self.find("hidden_size", "n_embed")
        n_head = self.find("n_head", "num_attention_heads")
        w.add_context_length(self.hp.get("seq_length", n_embd))  # llama.cpp's fallback
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(4 * n_embd)
        w.add_block_count(self.n_layers)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head)
        w.add_layer_norm_eps(self.hp["layer_norm_epsilon"])

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        name = name.removeprefix("transformer.")
        n_head = self.find("n_head", "num_attention_heads")
        if "query_key_value" in name:
            # Bloom interleaves [q, k, v] per head; GGUF wants all q, then all k, then all v
            qkv = t.reshape(n_head, 3, t.shape[0] // n_head // 3, *t.shape[1:])
            t = torch.cat([qkv[:, i].reshape(-1, *t.shape[1:]) for i in range(3)])
        yield self.map_name(name), t
        if name == "word_embeddings.weight" and "lm_head.weight" not in self.ckpt:
            # llama.cpp's bloom loader wants its own output matrix: a copy of the tied one
            yield self.gguf_name(T.OUTPUT), t


class MPTConverter(ArchConverter):
    hf_architectures = ("MPTForCausalLM", "MptForCausalLM")
    arch = MODEL_ARCH.MPT
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = (T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, *_FFN)

    def set_params(self, w: GGUFWriter) -> None:
        hp, attn = self.hp, self.hp.get("attn_config") or {}
        w.add_context_length(hp["max_seq_len"])
        w.add_embedding_length(hp["d_model"])
        w.add_block_count(self.n_layers)
        w.add_feed_forward_length(int(hp.get("expansion_ratio", 4) * hp["d_model"]))
        w.add_head_count(hp["n_heads"])
        if kv := attn.get("kv_n_heads"):
            w.add_head_count_kv(kv)
        w.add_layer_norm_eps(hp.get("layer_norm_epsilon") or 1e-5)
        if attn.get("clip_qkv") is not None:
            w.add_clamp_kqv(attn["clip_qkv"])
        w.add_max_alibi_bias(attn.get("alibi_bias_max", 8.0) if attn.get("alibi", True) else 0.0)

    def set_vocab(self, w: GGUFWriter) -> None:
        folder, n = self.ckpt.folder, self.hp.get("vocab_size")
        try:
            add_bpe_vocab(w, folder, n)
        except ConvertError:
            if not (folder / "tokenizer.model").is_file():
                raise
            add_spm_vocab(w, folder, n)  # SEA-LION's MPT variant


class FalconConverter(ArchConverter):
    hf_architectures = ("FalconForCausalLM", "RWForCausalLM")
    arch = MODEL_ARCH.FALCON
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = (T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, *_FFN)

    def _heads(self) -> tuple[int, int]:
        n_head = self.find("num_attention_heads", "n_head")
        # the key/value head count that transformers' Falcon actually uses: num_kv_heads is
        # only read by the new (40B-style) layout; older files are multi-query or plain
        if self.hp.get("new_decoder_architecture"):
            n_kv = self.find("num_kv_heads", "n_head_kv", default=1)
        elif "n_head_kv" in self.hp:  # original RW configs
            n_kv = self.hp["n_head_kv"]
        else:
            n_kv = 1 if self.hp.get("multi_query", True) else n_head
        return n_head, n_kv

    def set_params(self, w: GGUFWriter) -> None:
        n_head, n_kv = self._heads()
        n_embd = self.hp["hidden_size"]
        w.add_context_length(self.hp.get("max_position_embeddings") or 2048)
        w.add_tensor_data_layout("jploski")  # the qkv rearrangement below
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(self.hp.get("ffn_hidden_size") or 4 * n_embd)
        w.add_block_count(self.n_layers)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_layer_norm_eps(self.hp["layer_norm_epsilon"])
        if (theta := self.rope.get("rope_theta")) is not None:
            w.add_rope_freq_base(theta)

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        if "query_key_value" in name:
            # HF groups rows per kv head: [q x (n_head / n_kv), k, v] for each group;
            # GGUF (llama.cpp's "jploski" layout) wants all q rows, then k rows, then v rows
            n_head, n_kv = self._heads()
            hd = self.hp["hidden_size"] // n_head
            qkv = t.reshape(n_kv, n_head // n_kv + 2, hd, *t.shape[1:])
            q = qkv[:, :-2].reshape(n_head * hd, *t.shape[1:])
            k = qkv[:, -2].reshape(n_kv * hd, *t.shape[1:])
            v = qkv[:, -1].reshape(n_kv * hd, *t.shape[1:])
            t = torch.cat((q, k, v))
        yield self.map_name(name), t
