"""What the architecture modules share besides their forward pass.

- Hyper-parameters: `ArgsBase` reads what every causal LM file has (blocks, width, context,
  vocabulary) into a frozen dataclass; `DecoderArgs` adds the attention heads, `RmsRopeArgs`
  the RMSNorm epsilon and rope of the llama family, `LayerNormArgs` the LayerNorm epsilon of
  the GPT-style ones. An architecture's `ModelArgs` extends one of them: its own fields,
  read in `read` on top of `super().read`, and its defaults as class constants.
- Construction: `GGUFModel.from_gguf` builds `args_class` from the file and hands it to the
  architecture's `__init__` with a `TensorSource`; `AttentionLM` adds the KV cache.
- Weights: `GluBlock` loads the pre-norm q/k/v/o + gated-MLP block of the llama family
  (subclasses add their tensors in `tensors`); LayerNorm weight/bias pairs load with
  `load_norm` and apply with `layer_norm`.

Each architecture's forward pass stays in its own file and reads top to bottom there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

import torch
import torch.nn.functional as F

from corral.engine.device import CPU, Device
from corral.engine.kv_cache import AttentionCache, KVCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.layers import RopeFreqs, rms_norm, rope_cos_sin
from corral.models.weights import Linear, TensorSource

Norm = tuple[torch.Tensor, torch.Tensor | None]  # LayerNorm weight, bias (when it has one)


@dataclass(frozen=True)
class ArgsBase:
    """The hyper-parameters of every causal LM file; subclasses add their own fields."""

    n_layers: int
    n_embd: int
    context_length: int
    vocab_size: int

    CONTEXT_LENGTH: ClassVar[int] = 2048  # when the file does not say
    # vocabulary size: the file's `vocab_size` first (else the token count), or the reverse
    VOCAB_FROM_METADATA: ClassVar[bool] = False

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Self:
        return cls(**cls.read(HParams(gguf.metadata, gguf.architecture, gguf.path.name), gguf))

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        """The field values found in the file (subclasses extend `super().read(...)`)."""
        n_tokens = len(gguf.get("tokenizer.ggml.tokens", []))
        if cls.VOCAB_FROM_METADATA:
            vocab = hp.int("vocab_size", 0) or n_tokens
        else:
            vocab = n_tokens or hp.int("vocab_size")
        return {
            "n_layers": hp.int("block_count"),
            "n_embd": hp.int("embedding_length"),
            "context_length": hp.int("context_length", cls.CONTEXT_LENGTH),
            "vocab_size": vocab,
        }


@dataclass(frozen=True)
class DecoderArgs(ArgsBase):
    """ArgsBase plus the attention heads."""

    n_head: int
    n_head_kv: int
    head_dim: int

    # head width from `attention.key_length` when the file has it (else always E / H)
    HEAD_DIM_FROM_KEY_LENGTH: ClassVar[bool] = True
    HEAD_COUNT_KV: ClassVar[int | None] = None  # when the file does not say; None: n_head

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        base = super().read(hp, gguf)
        n_head = hp.int("attention.head_count")
        head_dim = base["n_embd"] // n_head
        if cls.HEAD_DIM_FROM_KEY_LENGTH:
            head_dim = hp.int("attention.key_length", head_dim)
        n_kv_default = n_head if cls.HEAD_COUNT_KV is None else cls.HEAD_COUNT_KV
        return base | {
            "n_head": n_head,
            "n_head_kv": hp.int("attention.head_count_kv", n_kv_default),
            "head_dim": head_dim,
        }


@dataclass(frozen=True)
class RmsRopeArgs(DecoderArgs):
    """DecoderArgs plus RMSNorm's epsilon and rope's base and linear scaling."""

    rms_eps: float
    rope_base: float
    rope_scale: float  # linear scaling: positions are multiplied by this

    CONTEXT_LENGTH: ClassVar[int] = 32768
    RMS_EPS: ClassVar[float] = 1e-6
    ROPE_BASE: ClassVar[float] = 10000.0

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        scaling = hp.str("rope.scaling.type", "none")
        factor = hp.float("rope.scaling.factor", 1.0) or 1.0
        return super().read(hp, gguf) | {
            "rms_eps": hp.float("attention.layer_norm_rms_epsilon", cls.RMS_EPS),
            "rope_base": hp.float("rope.freq_base", cls.ROPE_BASE),
            "rope_scale": 1.0 / factor if scaling == "linear" else 1.0,
        }


@dataclass(frozen=True)
class LayerNormArgs(DecoderArgs):
    """DecoderArgs plus LayerNorm's epsilon, for the GPT-style decoders (head width E / H)."""

    norm_eps: float

    HEAD_DIM_FROM_KEY_LENGTH: ClassVar[bool] = False

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        return super().read(hp, gguf) | {
            "norm_eps": hp.float("attention.layer_norm_epsilon", 1e-5),
        }


A = TypeVar("A", bound=ArgsBase)
D = TypeVar("D", bound=DecoderArgs)


class GGUFModel(Generic[A]):
    """Base of an architecture's `Model`: built from a GGUF file, with the fields the engine
    reads (vocab_size, context_length) and the token embeddings (`token_embd.weight`)."""

    args_class: type[A]  # the architecture's ModelArgs

    def __init__(self, args: A, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = CPU) -> Self:
        return cls(cls.args_class.from_gguf(gguf), TensorSource(gguf, device))

    def tied_output(self, src: TensorSource) -> Linear:
        """`output.weight`, or the token embeddings when the file ties the head to them."""
        return src.weight("output.weight") if src.has("output.weight") else self.tok_embd


class AttentionLM(GGUFModel[D]):
    """A GGUFModel whose layers keep keys and values in a KVCache."""

    def make_cache(self, max_len: int, batch: int = 1) -> KVCache:
        a, d = self.args, self.device
        kv_dtype = torch.float16 if d.is_cpu else d.dtype  # CPU: float16 as llama.cpp
        return KVCache(
            a.n_layers, a.n_head_kv, a.head_dim, max_len, batch, kv_dtype, device=d.torch_device
        )


R = TypeVar("R", bound=RmsRopeArgs)


class RopeDecoder(AttentionLM[R]):
    """A decoder whose blocks share one rope table (llama, qwen2): embeds, runs the fused
    decode step where it applies (`fused`, models/fused.py), else the architecture's eager
    `_blocks`, then the final norm and the output head."""

    inv_freq: RopeFreqs  # the rope angles' recipe (layers.rope_cos_sin)
    fused: Any  # FusedDecode | None
    output_norm: torch.Tensor
    output: Linear

    def _blocks(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: AttentionCache,
        last_only: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """The eager block loop: x [B, T, E] -> [B, T, E] ([B, 1, E] with last_only: the last
        block's feed-forward half on each sequence's last row only, layers.last_rows),
        writing the new keys/values."""
        raise NotImplementedError

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: AttentionCache, last_only: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V] float32 ([B, 1, V] when last_only)."""
        tokens = tokens.to(self.device.torch_device)
        _, t = tokens.shape
        cos, sin = rope_cos_sin(self.inv_freq, cache.positions(t))  # [B, 1, T, D/2]
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        if self.fused is None or not self.fused(x, cos, sin, cache, last_only):
            x = self._blocks(x, cos, sin, cache, last_only)
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.output_norm, self.args.rms_eps)).float()


@dataclass
class GluBlock:
    """A pre-norm block's weights: RMSNorm, q/k/v/o projections, RMSNorm, gated MLP."""

    attn_norm: torch.Tensor
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    ffn_norm: torch.Tensor
    gate: Linear
    up: Linear
    down: Linear

    @classmethod
    def load(cls, src: TensorSource, i: int) -> Self:
        """Block i's tensors (GGUF names `blk.{i}.*`)."""
        return cls(**cls.tensors(src, f"blk.{i}."))

    @classmethod
    def tensors(cls, src: TensorSource, p: str) -> dict[str, Any]:
        """Field values by name under prefix p (subclasses extend `super().tensors(...)`)."""
        return {
            "attn_norm": src.vector(p + "attn_norm.weight"),
            "wq": src.weight(p + "attn_q.weight"),
            "wk": src.weight(p + "attn_k.weight"),
            "wv": src.weight(p + "attn_v.weight"),
            "wo": src.weight(p + "attn_output.weight"),
            "ffn_norm": src.vector(p + "ffn_norm.weight"),
            "gate": src.weight(p + "ffn_gate.weight"),
            "up": src.weight(p + "ffn_up.weight"),
            "down": src.weight(p + "ffn_down.weight"),
        }


def load_norm(src: TensorSource, name: str, optional_bias: bool = True) -> Norm:
    """LayerNorm `name`.weight and `name`.bias (None when absent and optional_bias)."""
    bias = src.optional_vector if optional_bias else src.vector
    return src.vector(name + ".weight"), bias(name + ".bias")


def layer_norm(x: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """LayerNorm over x's last dim with norm's weight and (optional) bias."""
    return F.layer_norm(x, (x.shape[-1],), norm[0], norm[1], eps)


def plus(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x + bias, or x when there is no bias."""
    return x if bias is None else x + bias
