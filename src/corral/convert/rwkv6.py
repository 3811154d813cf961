"""RWKV-6 "Finch" (Rwkv6ForCausalLM: the RWKV/v6-Finch-*-HF checkpoints, whose remote code
is modeling_rwkv6.py) -> GGUF architecture "rwkv6", as llama.cpp's Rwkv6Model converts it.

Tensor rewrites, each as llama.cpp does it:
- the LoRA matrices are stored for ggml's matmul: time_maa_w1 [E, 5X], time_decay_w1 [E, D]
  and time_decay_w2 [D, E] transposed; time_maa_w2 [5, X, E] -> [5, E, X];
- time_decay and the lerps (time_maa_*) squeezed from [1, 1, E] to [E]; time_faaaa (the
  bonus u, [H, S]) kept as time_mix_first; no exponent is taken (the graph does exp(-exp(w)));
- the five data-dependent lerps (w, k, v, r, g, in that order) stacked into
  time_mix_lerp_fused [5, 1, 1, E];
- time_mix_output and channel_mix_value divided by 2 ** (block // rescale_every), the
  rescaling transformers applies at inference; llama.cpp halves the residual stream every
  rescale_every blocks to match (rescale_every_n_layers).

Metadata: llama.cpp hard-codes the LoRA widths (time_mix_extra_dim 32, time_decay_extra_dim
64; 64 / 128 at hidden size 4096), as modeling_rwkv6.py builds them. They are read here from
the tensors' shapes, which gives the same numbers for every released checkpoint and the right
ones for any other.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFWriter

from corral.convert.rwkv_world import WkvConverter

T = MODEL_TENSOR


class Rwkv6Converter(WkvConverter):
    hf_architectures = ("Rwkv6ForCausalLM",)
    arch = MODEL_ARCH.RWKV6
    lerp_order = "wkvrg"
    required = (T.TOKEN_EMBD, T.TOKEN_EMBD_NORM, T.OUTPUT_NORM, T.OUTPUT)
    required_per_block = (
        T.ATTN_NORM, T.ATTN_NORM_2, T.TIME_MIX_W1, T.TIME_MIX_W2, T.TIME_MIX_LERP_X,
        T.TIME_MIX_LERP_FUSED, T.TIME_MIX_FIRST, T.TIME_MIX_DECAY, T.TIME_MIX_DECAY_W1,
        T.TIME_MIX_DECAY_W2, T.TIME_MIX_KEY, T.TIME_MIX_VALUE, T.TIME_MIX_RECEPTANCE,
        T.TIME_MIX_GATE, T.TIME_MIX_LN, T.TIME_MIX_OUTPUT, T.CHANNEL_MIX_LERP_K,
        T.CHANNEL_MIX_LERP_R, T.CHANNEL_MIX_KEY, T.CHANNEL_MIX_VALUE, T.CHANNEL_MIX_RECEPTANCE,
    )  # fmt: skip
    f32_tensors = (
        T.TIME_MIX_FIRST, T.TIME_MIX_W1, T.TIME_MIX_W2, T.TIME_MIX_DECAY_W1,
        T.TIME_MIX_DECAY_W2, T.TIME_MIX_LERP_FUSED,
    )  # fmt: skip

    @property
    def rescale_every(self) -> int:
        return int(self.find("rescale_every", default=6))  # transformers' default

    def _lora_width(self, hf_name: str, parts: int, at_4096: int, otherwise: int) -> int:
        """A LoRA width: block 0's `hf_name` is [E, parts * width]; failing that, llama.cpp's
        fixed value."""
        name = f"rwkv.blocks.0.attention.{hf_name}"
        if name in self.ckpt:
            return int(self.ckpt.shape(name)[-1]) // parts
        return at_4096 if int(self.find("hidden_size")) == 4096 else otherwise

    def set_params(self, w: GGUFWriter) -> None:
        n_embd = int(self.find("hidden_size"))
        n_ff = self.find("intermediate_size", default=None)
        w.add_context_length(1048576)  # RWKV isn't context limited
        w.add_embedding_length(n_embd)
        w.add_block_count(self.n_layers)
        w.add_layer_norm_eps(float(self.find("layer_norm_epsilon")))
        w.add_rescale_every_n_layers(self.rescale_every)
        w.add_wkv_head_size(int(self.find("head_size")))
        w.add_time_mix_extra_dim(self._lora_width("time_maa_w1", 5, 64, 32))
        w.add_time_decay_extra_dim(self._lora_width("time_decay_w1", 1, 128, 64))
        w.add_feed_forward_length(int(n_ff) if n_ff is not None else int(n_embd * 3.5) // 32 * 32)
        w.add_head_count(0)  # required by llama.cpp, unused

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        new = self.map_name(name)
        if not new.endswith((".weight", ".bias")):
            new += ".weight"  # parameters (time_maa_x, time_faaaa, ...), not modules
        if new.endswith(("time_mix_w1.weight", "time_mix_decay_w1.weight", "decay_w2.weight")):
            t = t.transpose(0, 1)
        if new.endswith("time_mix_w2.weight"):
            t = t.permute(0, 2, 1)
        if new.endswith("time_mix_decay.weight") or "lerp" in new:
            t = t.squeeze()
        every = self.rescale_every
        if (
            every > 0
            and bid is not None
            and new.endswith(("time_mix_output.weight", "channel_mix_value.weight"))
        ):
            t = t / 2 ** (bid // every)  # exact: a power of two, in the checkpoint's dtype
        if bid is not None and "time_mix_lerp" in new and "time_mix_lerp_x" not in new:
            group = self.collect_lerp(bid, new.removesuffix(".weight")[-1], name, t)
            if group is not None:  # [5, 1, 1, E]
                yield (
                    f"blk.{bid}.time_mix_lerp_fused.weight",
                    torch.stack([x.unsqueeze(0) for x in group], dim=0).unsqueeze(1),
                )
            return
        yield new, t
