"""Which ggml type each tensor gets for a quantization scheme: llama.cpp's type mixes.

A scheme (`Scheme.Q4_K_M`, ...) has a default type; `TypePlanner` then moves single tensors
up as `llama_tensor_get_type` (src/llama-quant.cpp) does without an importance matrix or
overrides: the output head (and a tied token embedding) to Q6_K, every third attn_v and
ffn_down plus the first and last eighth of the layers to Q6_K for the _M mixes; the 2- and
3-bit mixes lift attn_v, ffn_down and attn_output a type or two (Q2_K: Q3_K, or Q4_K for
attn_v with grouped KV heads; Q3_K_M / Q3_K_L: Q4_K to Q5_K). Types whose block does not
divide a row fall back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; Q2_K / Q3_K -> Q4_0,
where llama.cpp picks IQ4_NL, which corral does not write: the same 32-value 4.5-bit
block size).
Tensors must be planned in file order: the layer counters follow it, as in llama.cpp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

from gguf import GGML_QUANT_SIZES, LlamaFileType
from gguf import GGMLQuantizationType as Q

from corral.errors import CorralError


class Scheme(Enum):
    """A quantization scheme users name on the command line; the value is llama.cpp's ftype."""

    Q4_0 = LlamaFileType.MOSTLY_Q4_0
    Q4_1 = LlamaFileType.MOSTLY_Q4_1
    Q5_0 = LlamaFileType.MOSTLY_Q5_0
    Q5_1 = LlamaFileType.MOSTLY_Q5_1
    Q8_0 = LlamaFileType.MOSTLY_Q8_0
    Q2_K = LlamaFileType.MOSTLY_Q2_K
    Q3_K_S = LlamaFileType.MOSTLY_Q3_K_S
    Q3_K_M = LlamaFileType.MOSTLY_Q3_K_M
    Q3_K_L = LlamaFileType.MOSTLY_Q3_K_L
    Q4_K_S = LlamaFileType.MOSTLY_Q4_K_S
    Q4_K_M = LlamaFileType.MOSTLY_Q4_K_M
    Q5_K_S = LlamaFileType.MOSTLY_Q5_K_S
    Q5_K_M = LlamaFileType.MOSTLY_Q5_K_M
    Q6_K = LlamaFileType.MOSTLY_Q6_K
    F16 = LlamaFileType.MOSTLY_F16
    F32 = LlamaFileType.ALL_F32

    @property
    def default_type(self) -> Q:
        return _DEFAULT_TYPE[self]

    @classmethod
    def parse(cls, name: str) -> Scheme:
        """A scheme from its name, any case ("q4_k_m"); a one-line error listing the known ones."""
        key = name.strip().upper()
        # llama.cpp accepts Q3_K / Q4_K / Q5_K for the _M mixes
        key = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}.get(key, key)
        try:
            return cls[key]
        except KeyError:
            known = ", ".join(s.name for s in cls)
            raise CorralError(f"unknown quantization type '{name}' (known: {known})") from None


_DEFAULT_TYPE: dict[Scheme, Q] = {
    Scheme.Q4_0: Q.Q4_0,
    Scheme.Q4_1: Q.Q4_1,
    Scheme.Q5_0: Q.Q5_0,
    Scheme.Q5_1: Q.Q5_1,
    Scheme.Q8_0: Q.Q8_0,
    Scheme.Q2_K: Q.Q2_K,
    Scheme.Q3_K_S: Q.Q3_K,
    Scheme.Q3_K_M: Q.Q3_K,
    Scheme.Q3_K_L: Q.Q3_K,
    Scheme.Q4_K_S: Q.Q4_K,
    Scheme.Q4_K_M: Q.Q4_K,
    Scheme.Q5_K_S: Q.Q5_K,
    Scheme.Q5_K_M: Q.Q5_K,
    Scheme.Q6_K: Q.Q6_K,
    Scheme.F16: Q.F16,
    Scheme.F32: Q.F32,
}

# types a row whose length is not a multiple of 256 falls back to
_FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}
# substrings of 2-D tensor names llama.cpp never quantizes (small or precision-critical)
_KEEP = (
    "_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "attn_rel_b.weight", "time_mix_first.weight",
    "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight",
    "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
    "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "position_embd", "token_types.weight",
)  # fmt: skip


class Category(Enum):
    """Broad tensor roles the mixes care about (llama.cpp's tensor_category)."""

    TOKEN_EMBD = "token_embd"
    OUTPUT = "output"
    ATTN_V = "attn_v"  # also fused qkv and kv_b: the tensors most sensitive to quantization
    ATTN_K = "attn_k"
    ATTN_QKV = "attn_qkv"
    ATTN_OUTPUT = "attn_output"
    FFN_DOWN = "ffn_down"
    OTHER = "other"


def category(name: str) -> Category:
    if name == "output.weight":
        return Category.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return Category.TOKEN_EMBD
    if "attn_qkv.weight" in name:
        return Category.ATTN_QKV
    if "attn_kv_b.weight" in name or "attn_v.weight" in name:
        return Category.ATTN_V
    if "attn_k.weight" in name:
        return Category.ATTN_K
    if "attn_output.weight" in name:
        return Category.ATTN_OUTPUT
    if "ffn_down" in name:
        return Category.FFN_DOWN
    return Category.OTHER


def allows_quantization(name: str, n_dims: int) -> bool:
    """Whether llama.cpp would quantize this tensor at all (2-D+ weights, not norms, ...)."""
    return n_dims >= 2 and name.endswith("weight") and not any(k in name for k in _KEEP)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The layers the _M mixes give more bits: first and last eighth, and every third."""
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


def block_size(t: Q) -> int:
    return GGML_QUANT_SIZES[t][0]


class TypePlanner:
    """Chooses each tensor's type for one file, in file order (llama_tensor_get_type)."""

    def __init__(self, scheme: Scheme, metadata: Mapping[str, Any], names: list[str]) -> None:
        self.scheme = scheme
        self.arch = str(metadata.get("general.architecture", ""))
        n_layers = int(metadata.get(f"{self.arch}.block_count", 0) or 0)
        n_head = int(metadata.get(f"{self.arch}.attention.head_count", 0) or 0)
        n_head_kv = metadata.get(f"{self.arch}.attention.head_count_kv", n_head)
        self.n_expert = int(metadata.get(f"{self.arch}.expert_count", 0) or 0)
        # query heads per KV head: the 2-bit mix spends more on a shared attn_v
        self.n_gqa = n_head // int(n_head_kv) if n_head and n_head_kv else 1
        # llama.cpp's 70B special case: 8 heads share each attn_v, so it gets more bits
        self.is_70b = self.arch == "llama" and n_layers == 80 and n_head != int(n_head_kv)
        self.n_ffn_down = n_layers
        self.n_attn_v = sum(category(n) == Category.ATTN_V for n in names)
        self.tied = "output.weight" not in names
        self.i_attn_v = 0
        self.i_ffn_down = 0

    def choose(self, name: str, shape: tuple[int, ...], current: Q) -> Q:
        """The type tensor `name` (torch-order shape, currently `current`) is written as."""
        if not allows_quantization(name, len(shape)):
            return current
        new = self.scheme.default_type
        if new in (Q.F16, Q.F32):
            return new
        new = self._mix(name, shape[-1], new)
        return self._fallback(name, shape[-1], new)

    def _mix(self, name: str, cols: int, new: Q) -> Q:
        s, cat = self.scheme, category(name)
        km = s in (Scheme.Q4_K_M, Scheme.Q5_K_M)
        if cat == Category.OUTPUT or (self.tied and cat == Category.TOKEN_EMBD):
            if self.arch == "falcon" or cols % block_size(new):
                return Q.Q8_0
            return new if new == Q.Q8_0 else Q.Q6_K
        if cat == Category.ATTN_V:
            if s == Scheme.Q2_K:
                new = Q.Q4_K if self.n_gqa >= 4 else Q.Q3_K
            elif s == Scheme.Q3_K_M:
                new = Q.Q5_K if self.i_attn_v < 2 else Q.Q4_K
            elif s == Scheme.Q3_K_L:
                new = Q.Q5_K
            elif km and use_more_bits(self.i_attn_v, self.n_attn_v):
                new = Q.Q6_K
            elif s == Scheme.Q4_K_S and self.i_attn_v < 4:
                new = Q.Q5_K
            if self.is_70b and new in (Q.Q3_K, Q.Q4_K):
                new = Q.Q5_K
            if self.n_expert == 8:
                new = Q.Q8_0
            self.i_attn_v += 1
        elif cat == Category.ATTN_K and self.n_expert == 8:
            new = Q.Q8_0
        elif cat == Category.FFN_DOWN:
            i, n = self._layer(name, self.i_ffn_down, self.n_ffn_down)
            if s == Scheme.Q2_K:
                new = Q.Q3_K
            elif s == Scheme.Q3_K_M:
                if i < n // 16:
                    new = Q.Q5_K
                elif self.arch != "falcon" or use_more_bits(i, n):
                    new = Q.Q4_K
                else:
                    new = Q.Q3_K
            elif s == Scheme.Q3_K_L:
                new = Q.Q4_K if self.arch == "falcon" else Q.Q5_K
            elif s == Scheme.Q4_K_M:
                if self.arch == "falcon":
                    new = Q.Q6_K if i < n // 16 else Q.Q5_K if use_more_bits(i, n) else Q.Q4_K
                elif use_more_bits(i, n):
                    new = Q.Q6_K
            elif s == Scheme.Q5_K_M and use_more_bits(i, n):
                new = Q.Q6_K
            elif s == Scheme.Q4_K_S and self.arch != "falcon" and i < n // 8:
                new = Q.Q5_K
            self.i_ffn_down += 1
        elif cat == Category.ATTN_OUTPUT:
            new = self._attn_output(new)
        elif cat == Category.ATTN_QKV:
            if s in (Scheme.Q3_K_M, Scheme.Q3_K_L):
                new = Q.Q4_K
            elif s == Scheme.Q4_K_M:
                new = Q.Q5_K
            elif s == Scheme.Q5_K_M:
                new = Q.Q6_K
        return new

    def _attn_output(self, new: Q) -> Q:
        s = self.scheme
        if self.arch == "falcon":
            return Q.Q4_K if s == Scheme.Q3_K_L else new
        if self.n_expert == 8:
            lifted = (Scheme.Q2_K, Scheme.Q3_K_S, Scheme.Q3_K_M, Scheme.Q4_K_S, Scheme.Q4_K_M)
            return Q.Q5_K if s in lifted else new
        return {Scheme.Q2_K: Q.Q3_K, Scheme.Q3_K_M: Q.Q4_K, Scheme.Q3_K_L: Q.Q5_K}.get(s, new)

    def _layer(self, name: str, i: int, n: int) -> tuple[int, int]:
        if self.n_expert > 1:
            # experts are not laid out one tensor per layer: read the layer from the name
            m = re.match(r"blk\.(\d+)\.", name)
            if m is None:
                raise CorralError(f"cannot tell the layer of tensor '{name}'")
            i = int(m.group(1))
        return i, n

    @staticmethod
    def _fallback(name: str, cols: int, new: Q) -> Q:
        if cols % block_size(new) == 0:
            return new
        alt = _FALLBACK.get(new)
        if alt is None:
            raise CorralError(
                f"tensor '{name}' has rows of {cols} values, not a multiple of the "
                f"{block_size(new)}-value blocks of {new.name}"
            )
        # llama.cpp's last resort when even the 32-value fallback does not fit
        return alt if cols % block_size(alt) == 0 else Q.F16
