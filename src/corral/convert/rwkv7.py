"""RWKV-7 "Goose" -> GGUF architecture "rwkv7", as llama.cpp's Rwkv7Model converts it.

Two Hugging Face layouts are read:
- fla-hub's RWKV7ForCausalLM (flash-linear-attention): model.layers.N.attn.{r,k,v,o}_proj,
  LoRAs as small MLPs (w_lora.lora.0 [R, E], lora.2 [E, R] plus its bias w0), g_norm, ffn;
  config keys head_dim, norm_eps, decay/a/v/gate_low_rank_dim;
- Rwkv7ForCausalLM (the BlinkDL names): model.blocks.N.attention.{receptance, ..., w0, w1
  [E, R], w2 [R, E], ...}; config keys head_size, layer_norm_epsilon, lora_rank_*.

Names are first unified as llama.cpp does (blocks -> layers, attn -> attention, ffn ->
feed_forward, g_norm -> ln_x, ...), then mapped through gguf-py's table. Rewrites:
- the LoRAs: lora.0 -> x1, lora.2 -> x2, lora.2's bias -> x0; the BlinkDL matrices (stored
  for x @ W) transposed, fla's (nn.Linear weights) already in ggml's order;
- everything but the lerps squeezed ([1, 1, E] -> [E]); r_k [H, S] flattened to [E];
- the token-shift mixes x_r, x_w, x_k, x_v, x_a, x_g stacked into time_mix_lerp_fused
  [6, 1, 1, E] (fla's pre-fused x_x reshaped to that);
- layer 0 has no value-residual LoRA (its value is v_first): any v0/v1/v2 there are dropped,
  and, as llama.cpp's loader wants them, copies of a0/a1/a2 are written in their place.
No sign flip or exponent is applied to w0 (the graph computes the decay from it).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFWriter

from corral.convert.base import _Unmapped
from corral.convert.checkpoint import Checkpoint
from corral.convert.rwkv_world import WkvConverter

T = MODEL_TENSOR
# llama.cpp's name unification, in its order
_RENAMES = (
    ("blocks", "layers"), ("ffn", "feed_forward"), ("self_attn", "attention"),
    ("attn", "attention"), ("time_mixer.", ""), ("feed_forward_norm", "ln2"),
    ("g_norm", "ln_x"), ("_lora.lora.0.weight", "1.weight"),
    ("_lora.lora.2.weight", "2.weight"), ("_lora.lora.2.bias", "0.weight"),
)  # fmt: skip
_LORAS = tuple(f"time_mix_{x}{i}.weight" for x in "wavg" for i in (1, 2))


def lora_rank(hidden_size: int, exponent: float, multiplier: float) -> int:
    """llama.cpp's default LoRA rank for a hidden size (config.json giving none)."""
    return max(1, round(hidden_size**exponent * multiplier / 32)) * 32


class Rwkv7Converter(WkvConverter):
    hf_architectures = ("Rwkv7ForCausalLM", "RWKV7ForCausalLM")
    arch = MODEL_ARCH.RWKV7
    required = (T.TOKEN_EMBD, T.TOKEN_EMBD_NORM, T.OUTPUT_NORM, T.OUTPUT)
    required_per_block = (
        T.ATTN_NORM, T.ATTN_NORM_2, T.TIME_MIX_W0, T.TIME_MIX_W1, T.TIME_MIX_W2,
        T.TIME_MIX_A0, T.TIME_MIX_A1, T.TIME_MIX_A2, T.TIME_MIX_V0, T.TIME_MIX_V1,
        T.TIME_MIX_V2, T.TIME_MIX_LERP_FUSED, T.TIME_MIX_K_K, T.TIME_MIX_K_A, T.TIME_MIX_R_K,
        T.TIME_MIX_KEY, T.TIME_MIX_VALUE, T.TIME_MIX_RECEPTANCE, T.TIME_MIX_LN,
        T.TIME_MIX_OUTPUT, T.CHANNEL_MIX_LERP_K, T.CHANNEL_MIX_KEY, T.CHANNEL_MIX_VALUE,
        T.TIME_MIX_G1, T.TIME_MIX_G2,
    )  # fmt: skip
    f32_tensors = (T.TIME_MIX_W1, T.TIME_MIX_W2, T.TIME_MIX_LERP_FUSED)

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__(ckpt)
        # without the output gate there is no x_g (llama.cpp's rwkv7 still needs g1/g2)
        self.lerp_order = "rwkvag" if self.hp.get("wkv_has_gate", True) else "rwkva"
        # fla's LoRAs are nn.Linear weights, already [out, in]; BlinkDL's are x @ W matrices
        self.lora_needs_transpose = not any("_lora.lora" in n for n in ckpt.names())

    def set_params(self, w: GGUFWriter) -> None:
        n_embd = int(self.find("hidden_size"))

        def rank(keys: tuple[str, str], exponent: float, multiplier: float) -> int:
            value = self.find(*keys, default=None)
            return int(value) if value is not None else lora_rank(n_embd, exponent, multiplier)

        n_ff = self.find("intermediate_size", default=None)
        w.add_context_length(1048576)  # RWKV isn't context limited
        w.add_embedding_length(n_embd)
        w.add_block_count(self.n_layers)
        w.add_layer_norm_eps(float(self.find("layer_norm_epsilon", "norm_eps")))
        w.add_wkv_head_size(int(self.find("head_size", "head_dim")))
        w.add_decay_lora_rank(rank(("lora_rank_decay", "decay_low_rank_dim"), 0.5, 1.8))
        w.add_iclr_lora_rank(rank(("lora_rank_iclr", "a_low_rank_dim"), 0.5, 1.8))
        w.add_value_residual_mix_lora_rank(
            rank(("lora_rank_value_residual_mix", "v_low_rank_dim"), 0.5, 1.3)
        )
        w.add_gate_lora_rank(rank(("lora_rank_gate", "gate_low_rank_dim"), 0.8, 0.6))
        w.add_feed_forward_length(int(n_ff) if n_ff is not None else 4 * n_embd)
        w.add_head_count(0)  # required by llama.cpp, unused

    def _gguf(self, name: str, hf_name: str) -> str:
        try:
            new = self.map_name(name)
        except _Unmapped:
            raise _Unmapped(hf_name) from None
        return new if new.endswith((".weight", ".bias")) else new + ".weight"

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        hf_name = name
        for old, new in _RENAMES:
            name = name.replace(old, new)
        if bid == 0 and "attention.v" in name and "value" not in self._gguf(name, hf_name):
            return  # layer 0's value-residual LoRA: unused, and not in every checkpoint
        if bid is not None and "attention.x_" in name:
            if name.endswith("attention.x_x"):  # fla's pre-fused lerps
                fused = t.reshape(len(self.lerp_order), 1, 1, -1)
                yield f"blk.{bid}.time_mix_lerp_fused.weight", fused
                return
            letter = name[-1]
            if letter not in self.lerp_order or not name.endswith(f"attention.x_{letter}"):
                raise _Unmapped(hf_name)
            group = self.collect_lerp(bid, letter, hf_name, t.reshape(1, 1, -1))
            if group is not None:  # [6, 1, 1, E]
                yield f"blk.{bid}.time_mix_lerp_fused.weight", torch.stack(group, dim=0)
            return
        t = t.squeeze()
        new = self._gguf(name, hf_name)
        if self.lora_needs_transpose and new.endswith(_LORAS):
            t = t.transpose(0, 1)
        if "r_k" in new:
            t = t.flatten()
        if bid == 0 and "time_mix_a" in new:  # stand-ins for layer 0's missing v0/v1/v2
            yield new.replace("time_mix_a", "time_mix_v"), t
        yield new, t
