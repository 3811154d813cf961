"""RWKV-4 (transformers' RwkvForCausalLM) -> GGUF architecture "rwkv" (corral's naming).

llama.cpp has no RWKV-4, so there is no converter of its to follow: names are those of
llama.cpp's rwkv6 for the matching pieces (see corral.models.rwkv), and the token-shift
mixes are stored as rwkv6 lerps (lerp = 1 - time_mix, squeezed to [E]). Weights are stored
as trained: transformers' inference-time rescaling (halving outputs and hidden states every
`rescale_every` blocks) cancels out exactly, so rescale_every_n_layers is 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFWriter

from corral.convert.base import ArchConverter, _Unmapped

T = MODEL_TENSOR

_GLOBAL = {
    "rwkv.embeddings.weight": "token_embd.weight",
    "rwkv.blocks.0.pre_ln.weight": "token_embd_norm.weight",
    "rwkv.blocks.0.pre_ln.bias": "token_embd_norm.bias",
    "rwkv.ln_out.weight": "output_norm.weight",
    "rwkv.ln_out.bias": "output_norm.bias",
    "head.weight": "output.weight",
}
# per block: HF suffix -> (GGUF suffix, stored as 1 - x)
_BLOCK = {
    "ln1.weight": ("attn_norm.weight", False),
    "ln1.bias": ("attn_norm.bias", False),
    "ln2.weight": ("attn_norm_2.weight", False),
    "ln2.bias": ("attn_norm_2.bias", False),
    "attention.time_decay": ("time_mix_decay.weight", False),
    "attention.time_first": ("time_mix_first.weight", False),
    "attention.time_mix_key": ("time_mix_lerp_k.weight", True),
    "attention.time_mix_value": ("time_mix_lerp_v.weight", True),
    "attention.time_mix_receptance": ("time_mix_lerp_r.weight", True),
    "attention.key.weight": ("time_mix_key.weight", False),
    "attention.value.weight": ("time_mix_value.weight", False),
    "attention.receptance.weight": ("time_mix_receptance.weight", False),
    "attention.output.weight": ("time_mix_output.weight", False),
    "feed_forward.time_mix_key": ("channel_mix_lerp_k.weight", True),
    "feed_forward.time_mix_receptance": ("channel_mix_lerp_r.weight", True),
    "feed_forward.key.weight": ("channel_mix_key.weight", False),
    "feed_forward.value.weight": ("channel_mix_value.weight", False),
    "feed_forward.receptance.weight": ("channel_mix_receptance.weight", False),
}


class RwkvConverter(ArchConverter):
    hf_architectures = ("RwkvForCausalLM",)
    arch = MODEL_ARCH.RWKV6  # for gguf-py's tables only; the file says "rwkv"
    required = (T.TOKEN_EMBD, T.TOKEN_EMBD_NORM, T.OUTPUT_NORM, T.OUTPUT)
    required_per_block = (
        T.ATTN_NORM, T.ATTN_NORM_2, T.TIME_MIX_KEY, T.TIME_MIX_VALUE, T.TIME_MIX_RECEPTANCE,
        T.TIME_MIX_OUTPUT, T.CHANNEL_MIX_KEY, T.CHANNEL_MIX_VALUE, T.CHANNEL_MIX_RECEPTANCE,
    )  # fmt: skip

    @property
    def arch_name(self) -> str:
        return "rwkv"

    def set_params(self, w: GGUFWriter) -> None:
        n_embd = int(self.find("hidden_size"))
        w.add_block_count(self.n_layers)
        w.add_context_length(int(self.find("context_length", default=1024)))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(int(self.find("intermediate_size", default=4 * n_embd)))
        w.add_layer_norm_eps(float(self.find("layer_norm_epsilon", default=1e-5)))
        w.add_rescale_every_n_layers(0)

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        if name in _GLOBAL:
            yield _GLOBAL[name], t
            return
        m = re.fullmatch(r"rwkv\.blocks\.(\d+)\.(.+)", name)
        if m is None or m.group(2) not in _BLOCK:
            raise _Unmapped(name)
        new, complement = _BLOCK[m.group(2)]
        if not m.group(2).endswith((".weight", ".bias")):
            t = t.reshape(-1)  # parameters, not modules: [1, 1, E] mixes -> [E]
        if complement:
            t = 1.0 - t
        yield f"blk.{m.group(1)}.{new}", t
