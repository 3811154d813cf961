"""Converters for the llama lineage of pre-norm RoPE decoders: llama (and Mistral), gemma3,
qwen2, qwen3, phi3, starcoder2. Each follows its class in llama.cpp's convert_hf_to_gguf.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFWriter

from corral.convert.base import ArchConverter
from corral.convert.vocab import add_bpe_vocab, add_spm_vocab

T = MODEL_TENSOR
_ATTN = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT)
_SWIGLU = (T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)


def permute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's rotate-half q/k rows -> llama.cpp's adjacent-pair order (its LlamaModel.permute):
    within each head, rows (i, i + D/2) become neighbours."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


class LlamaConverter(ArchConverter):
    hf_architectures = ("LlamaForCausalLM", "MistralForCausalLM")
    arch = MODEL_ARCH.LLAMA
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = _ATTN + _SWIGLU

    def set_params(self, w: GGUFWriter) -> None:
        super().set_params(w)
        w.add_vocab_size(self.hp["vocab_size"])
        n_head = self.hp["num_attention_heads"]
        head_dim = self.hp.get("head_dim") or self.hp["hidden_size"] // n_head
        w.add_rope_dimension_count(head_dim)
        if (window := self.hp.get("sliding_window")) is not None:
            w.add_sliding_window(window)  # Mistral v0.1; llama.cpp ignores it, corral uses it

    def extra_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        if str(self.rope.get("rope_type", "")).lower() != "llama3":
            return
        # Llama 3.1 frequency scaling, stored as per-frequency divisors (llama.cpp's recipe)
        n_head = self.hp["num_attention_heads"]
        dim = self.hp.get("head_dim") or self.hp["hidden_size"] // n_head
        base = self.rope.get("rope_theta", 10000.0)
        freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        factor = self.rope.get("factor", 8.0)
        low, high = self.rope.get("low_freq_factor", 1.0), self.rope.get("high_freq_factor", 4.0)
        old_ctx = self.rope.get("original_max_position_embeddings", 8192)
        factors = []
        for f in freqs.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < old_ctx / high:
                factors.append(1.0)
            elif wavelen > old_ctx / low:
                factors.append(factor)
            else:
                smooth = (old_ctx / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        yield self.gguf_name(T.ROPE_FREQS), torch.tensor(factors, dtype=torch.float32)

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        n_head = self.hp["num_attention_heads"]
        if name.endswith("q_proj.weight") or name.endswith("q_proj.bias"):
            t = permute_qk(t, n_head)
        elif name.endswith("k_proj.weight") or name.endswith("k_proj.bias"):
            t = permute_qk(t, self.hp.get("num_key_value_heads") or n_head)
        yield self.map_name(name), t


class Gemma3Converter(ArchConverter):
    hf_architectures = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
    arch = MODEL_ARCH.GEMMA3
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = _ATTN + _SWIGLU + (
        T.ATTN_Q_NORM, T.ATTN_K_NORM, T.ATTN_POST_NORM, T.FFN_POST_NORM,
    )  # fmt: skip

    def set_params(self, w: GGUFWriter) -> None:
        hp = self.hp
        head_dim = hp.get("head_dim", 256)
        w.add_context_length(hp.get("max_position_embeddings", 131072))
        w.add_embedding_length(hp["hidden_size"])
        w.add_block_count(self.n_layers)
        w.add_feed_forward_length(hp["intermediate_size"])
        w.add_head_count(hp.get("num_attention_heads", 8))
        w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_freq_base(self.rope.get("rope_theta", 1_000_000.0))
        w.add_sliding_window(hp["sliding_window"])
        w.add_head_count_kv(hp.get("num_key_value_heads", 4))
        self.set_rope_scaling(w)
        # llama.cpp assumes 5 local layers per global one; say so only where it differs
        types = hp.get("layer_types")
        if types and [t == "sliding_attention" for t in types] != [
            i % 6 < 5 for i in range(self.n_layers)
        ]:
            w.add_sliding_window_pattern([t == "sliding_attention" for t in types])

    def set_vocab(self, w: GGUFWriter) -> None:
        folder, n = self.ckpt.folder, self.hp.get("vocab_size")
        if (folder / "tokenizer.model").is_file():
            add_spm_vocab(w, folder, n)
            w.add_add_space_prefix(False)
        else:
            add_bpe_vocab(w, folder, n)

    def skip(self, name: str) -> bool:
        return super().skip(name) or name.startswith(("vision_tower", "multi_modal_projector"))

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        name = name.replace("model.language_model.", "model.").removeprefix("language_model.")
        if name.endswith("norm.weight"):
            t = t + 1  # Gemma's RMSNorm scales by (1 + w); GGUF stores 1 + w
        yield self.map_name(name), t


class Qwen2Converter(ArchConverter):
    hf_architectures = ("Qwen2ForCausalLM",)
    arch = MODEL_ARCH.QWEN2
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = _ATTN + _SWIGLU


class Qwen3Converter(ArchConverter):
    hf_architectures = ("Qwen3ForCausalLM",)
    arch = MODEL_ARCH.QWEN3
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = _ATTN + _SWIGLU + (T.ATTN_Q_NORM, T.ATTN_K_NORM)


class Phi3Converter(ArchConverter):
    """Phi-3 / Phi-4: fused qkv and gate|up matrices stay fused, as llama.cpp stores them."""

    hf_architectures = ("Phi3ForCausalLM",)
    arch = MODEL_ARCH.PHI3
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = (T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN)

    def _rope_dims(self) -> int:
        rot = self.rope.get("partial_rotary_factor", self.hp.get("partial_rotary_factor", 1.0))
        return int(rot * self.hp["hidden_size"]) // self.hp["num_attention_heads"]

    def _orig_ctx(self) -> int:
        return self.rope.get(
            "original_max_position_embeddings", self.hp.get("original_max_position_embeddings")
        ) or self.find("n_positions", "max_position_embeddings")

    def set_params(self, w: GGUFWriter) -> None:
        hp = self.hp
        w.add_context_length(self.find("n_positions", "max_position_embeddings"))
        w.add_rope_scaling_orig_ctx_len(self._orig_ctx())
        w.add_embedding_length(hp["hidden_size"])
        w.add_feed_forward_length(hp["intermediate_size"])
        w.add_block_count(self.n_layers)
        w.add_head_count(hp["num_attention_heads"])
        w.add_head_count_kv(self.find("num_key_value_heads", "n_head_kv"))
        w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
        w.add_rope_dimension_count(self._rope_dims())
        w.add_rope_freq_base(self.rope.get("rope_theta", 10000.0))
        # 0 tells Phi-4 (no window) from Phi-3, as llama.cpp writes it
        w.add_sliding_window(hp.get("sliding_window") or 0)
        if self.rope.get("long_factor"):  # LongRoPE: cos/sin scaled by this
            ctx, orig = self.find("n_positions", "max_position_embeddings"), self._orig_ctx()
            scale = ctx / orig
            factor = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
            w.add_rope_scaling_attn_factors(factor)

    def set_vocab(self, w: GGUFWriter) -> None:
        if (self.ckpt.folder / "tokenizer.model").is_file():
            add_spm_vocab(w, self.ckpt.folder, self.hp.get("vocab_size"))
        else:  # Phi-4 ships a GPT-2 BPE tokenizer
            add_bpe_vocab(w, self.ckpt.folder, self.hp.get("vocab_size"))

    def extra_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        long, short = self.rope.get("long_factor"), self.rope.get("short_factor")
        if not long or not short:
            return
        yield self.gguf_name(T.ROPE_FACTORS_LONG), torch.tensor(long, dtype=torch.float32)
        yield self.gguf_name(T.ROPE_FACTORS_SHORT), torch.tensor(short, dtype=torch.float32)


class Starcoder2Converter(ArchConverter):
    hf_architectures = ("Starcoder2ForCausalLM",)
    arch = MODEL_ARCH.STARCODER2
    required = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    required_per_block = _ATTN + (T.FFN_NORM, T.FFN_UP, T.FFN_DOWN)
