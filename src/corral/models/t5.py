"""The t5 architecture: T5, T5 v1.1, Flan-T5, Flan-Alpaca, mT5 (encoder-decoder generation).

An encoder reads the whole input once (bidirectional self-attention); a decoder then generates
from `decoder_start_token_id` (the pad token), attending causally to its own tokens (a KV cache)
and to the encoder's output (cross-attention K/V, computed once per input and kept in the
cache). Both halves are pre-norm stacks with T5's RMS norm, unscaled dot-product attention and
a learned relative position bias (bucketed key - query distance, one table per stack, kept in
layer 0: `attn_rel_b`), then a feed-forward network: gated GELU (tanh form) when the file has
`ffn_gate` (T5 v1.1, Flan-T5), plain ReLU otherwise (the original T5). As llama.cpp's
llm_build_t5_enc / llm_build_t5_dec.

Contract with the engine (`corral.engine.generate.EncoderDecoderLM`): `encode(ids, cache)`
runs the encoder and stores the cross-attention K/V in a fresh `T5Cache`; `forward(tokens,
cache)` is then the decoder: decoder tokens in, next-token logits out, filling the self-attention
cache. Shape notes: B batch, T new decoder tokens, S decoder positions so far, L encoder
length, H heads, D head dim, E embedding width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from corral.engine.device import CPU, Device
from corral.engine.kv_cache import KVCache
from corral.errors import CorralError
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.layers import gelu_tanh, rms_norm, round_f16
from corral.models.weights import Linear, TensorSource

# llama.cpp fixes the distance beyond which all relative positions share a bucket; so do all
# published T5 checkpoints (transformers' relative_attention_max_distance default).
MAX_DISTANCE = 128


@dataclass(frozen=True)
class ModelArgs:
    n_enc_layers: int
    n_dec_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    head_dim: int
    rms_eps: float
    n_buckets: int
    context_length: int
    vocab_size: int
    decoder_start_id: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        n_layers = hp.int("block_count")
        vocab = hp.int("vocab_size", 0) or len(gguf.get("tokenizer.ggml.tokens", []))
        # llama.cpp's fallback when the file names no start token: the pad token, else 0
        pad = gguf.get("tokenizer.ggml.padding_token_id", 0)
        return cls(
            n_enc_layers=n_layers,
            n_dec_layers=hp.int("decoder_block_count", n_layers),
            n_embd=n_embd,
            n_ff=hp.int("feed_forward_length"),
            n_head=n_head,
            head_dim=hp.int("attention.key_length", n_embd // n_head),
            rms_eps=hp.float("attention.layer_norm_rms_epsilon", 1e-6),
            n_buckets=hp.int("attention.relative_buckets_count", 32),
            context_length=hp.int("context_length", 512),
            vocab_size=vocab,
            decoder_start_id=hp.int("decoder_start_token_id", int(pad)),
        )


def relative_buckets(
    q_pos: torch.Tensor, k_pos: torch.Tensor, n_buckets: int, bidirectional: bool
) -> torch.Tensor:
    """q_pos [T], k_pos [S] -> bucket ids [T, S] of the distances key - query: exact for small
    distances, log-spaced up to MAX_DISTANCE; the encoder splits buckets by direction, the
    decoder only sees the past."""
    rel = k_pos[None, :] - q_pos[:, None]  # [T, S]
    bucket = torch.zeros_like(rel)
    if bidirectional:
        n_buckets //= 2
        bucket = (rel > 0).long() * n_buckets
        rel = rel.abs()
    else:
        rel = -rel.clamp(max=0)
    max_exact = n_buckets // 2
    # float32 log as transformers and llama.cpp take it; rel = 0 gives -inf, unused below
    large = max_exact + (
        torch.log(rel.float() / max_exact)
        / math.log(MAX_DISTANCE / max_exact)
        * (n_buckets - max_exact)
    ).to(torch.long)
    large = large.clamp(max=n_buckets - 1)
    return bucket + torch.where(rel < max_exact, rel, large)


def position_bias(table: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
    """table [n_buckets, H], buckets [T, S] -> additive attention bias [1, H, T, S]."""
    return table[buckets].permute(2, 0, 1)[None]


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    half_cache: bool = False,
) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, H, S, D], bias [1, H, T, S], mask bool broadcastable to
    [B, H, T, S] -> [B, T, H*D]. T5 does not scale the scores by 1/sqrt(D).

    half_cache: k/v came from a float16 KV cache on the CPU, where llama.cpp meets them with
    the queries and the softmax weights rounded to float16 (its decoder self-attention);
    rounded the same here, corral's logits stay within ~1e-5 of llama.cpp's instead of ~1e-3.
    """
    b, h, t, d = q.shape
    qf = round_f16(q.float()) if half_cache else q.float()
    scores = qf @ k.float().transpose(-1, -2)  # [B, H, T, S]
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    p = scores.softmax(-1)
    if half_cache:
        p = round_f16(p)
    out = p @ v.float()  # [B, H, T, D]
    return out.to(q.dtype).transpose(1, 2).reshape(b, t, h * d)


@dataclass
class Attention:
    norm: torch.Tensor
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    rel_b: torch.Tensor | None  # [n_buckets, H] in layer 0 (every layer for umT5)


@dataclass
class FeedForward:
    norm: torch.Tensor
    gate: Linear | None  # present: gated GELU; absent: ReLU
    up: Linear
    down: Linear

    def __call__(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """x [B, T, E] -> the residual stream after this sub-layer."""
        h = rms_norm(x, self.norm, eps)
        if self.gate is None:
            return x + self.down(F.relu(self.up(h)))
        return x + self.down(gelu_tanh(self.gate(h)) * self.up(h))


@dataclass
class EncoderBlock:
    attn: Attention
    ffn: FeedForward


@dataclass
class DecoderBlock:
    attn: Attention
    cross: Attention
    ffn: FeedForward


class T5Cache(KVCache):
    """The decoder's self-attention K/V (a KVCache) plus the cross-attention K/V of one
    encoded input, [B, H, L, D] per decoder layer, set by `Model.encode`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cross_k: list[torch.Tensor] = []
        self.cross_v: list[torch.Tensor] = []

    def set_cross(self, ks: list[torch.Tensor], vs: list[torch.Tensor]) -> None:
        """Start decoding against a new encoder output (forgets the decoded positions)."""
        self.cross_k, self.cross_v = ks, vs
        self.offset = 0

    @property
    def encoded(self) -> bool:
        return bool(self.cross_k)

    def slot(self, index: int, offset: int) -> KVCache:  # type: ignore[override]
        raise CorralError(
            "a T5Cache holds one sequence (its decoder cache and encoding) and has no slot"
            " views; the scheduler keeps one T5Cache per slot instead (engine/slots.py)"
        )


def _attention(src: TensorSource, p: str, kind: str) -> Attention:
    """`kind` is "attn" or "cross_attn"; p the block prefix ("enc.blk.0.")."""
    return Attention(
        norm=src.vector(f"{p}{kind}_norm.weight"),
        wq=src.weight(f"{p}{kind}_q.weight"),
        wk=src.weight(f"{p}{kind}_k.weight"),
        wv=src.weight(f"{p}{kind}_v.weight"),
        wo=src.weight(f"{p}{kind}_o.weight"),
        rel_b=src.optional_vector(f"{p}{kind}_rel_b.weight"),
    )


def _ffn(src: TensorSource, p: str) -> FeedForward:
    gate = f"{p}ffn_gate.weight"
    return FeedForward(
        norm=src.vector(f"{p}ffn_norm.weight"),
        gate=src.weight(gate) if src.has(gate) else None,
        up=src.weight(f"{p}ffn_up.weight"),
        down=src.weight(f"{p}ffn_down.weight"),
    )


class Model:
    """A T5 encoder-decoder built from GGUF tensors (names used as the file has them)."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.decoder_start_id = args.decoder_start_id
        self.tok_embd = src.weight("token_embd.weight")
        # no separate head: the shared embedding, unscaled, as llama.cpp does (our converter
        # writes tied checkpoints' head out, scaled by n_embd^-0.5 as transformers applies it)
        self.output = src.weight("output.weight") if src.has("output.weight") else self.tok_embd
        self.enc_norm = src.vector("enc.output_norm.weight")
        self.dec_norm = src.vector("dec.output_norm.weight")
        self.enc = [
            EncoderBlock(_attention(src, f"enc.blk.{i}.", "attn"), _ffn(src, f"enc.blk.{i}."))
            for i in range(args.n_enc_layers)
        ]
        self.dec = [
            DecoderBlock(
                _attention(src, f"dec.blk.{i}.", "attn"),
                _attention(src, f"dec.blk.{i}.", "cross_attn"),
                _ffn(src, f"dec.blk.{i}."),
            )
            for i in range(args.n_dec_layers)
        ]
        if self.enc[0].attn.rel_b is None or self.dec[0].attn.rel_b is None:
            raise CorralError(f"{src.gguf.path.name}: t5 needs attn_rel_b in layer 0")

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = CPU) -> Model:
        return cls(ModelArgs.from_gguf(gguf), TensorSource(gguf, device))

    def make_cache(self, max_len: int, batch: int = 1, dtype: torch.dtype | None = None) -> T5Cache:
        """A decoder cache for max_len generated positions; float16 entries on the CPU (as
        llama.cpp) unless `dtype` says otherwise."""
        a, d = self.args, self.device
        kv_dtype = dtype or (torch.float16 if d.is_cpu else d.dtype)
        return T5Cache(
            a.n_dec_layers, a.n_head, a.head_dim, max_len, batch, kv_dtype, device=d.torch_device
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, H*D] -> [B, H, T, D]."""
        b, t, _ = x.shape
        return x.view(b, t, self.args.n_head, self.args.head_dim).transpose(1, 2)

    def _rel_table(self, blocks: list[EncoderBlock] | list[DecoderBlock], i: int) -> torch.Tensor:
        """Layer i's bias table, or layer 0's (every layer shares it, except in umT5)."""
        table = blocks[i].attn.rel_b
        return table if table is not None else blocks[0].attn.rel_b  # type: ignore[return-value]

    @torch.inference_mode()
    def encode(self, tokens: torch.Tensor, cache: T5Cache) -> torch.Tensor:
        """Encoder input ids [B, L] -> encoder output [B, L, E]; stores every decoder layer's
        cross-attention K/V [B, H, L, D] in `cache` and empties its decoded positions."""
        a = self.args
        tokens = tokens.to(self.device.torch_device)
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        buckets = relative_buckets(pos, pos, a.n_buckets, bidirectional=True)  # [L, L]
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, L, E]
        for i, blk in enumerate(self.enc):
            bias = position_bias(self._rel_table(self.enc, i), buckets)  # [1, H, L, L]
            at = blk.attn
            h = rms_norm(x, at.norm, a.rms_eps)
            q, k, v = self._heads(at.wq(h)), self._heads(at.wk(h)), self._heads(at.wv(h))
            x = x + at.wo(attend(q, k, v, bias, None))
            x = blk.ffn(x, a.rms_eps)
        out = rms_norm(x, self.enc_norm, a.rms_eps)
        ks = [self._heads(blk.cross.wk(out)) for blk in self.dec]
        vs = [self._heads(blk.cross.wv(out)) for blk in self.dec]
        cache.set_cross(ks, vs)
        return out

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: KVCache, last_only: bool = False
    ) -> torch.Tensor:
        """The decoder: tokens [B, T] at positions cache.offset.. -> logits [B, T, V] float32
        ([B, 1, V] when last_only), given the input `encode` stored in `cache`."""
        if not isinstance(cache, T5Cache) or not cache.encoded:
            raise CorralError("t5: run the encoder first (Model.encode with a T5Cache)")
        a = self.args
        tokens = tokens.to(self.device.torch_device)
        t = tokens.shape[1]
        q_pos = torch.arange(cache.offset, cache.offset + t, device=tokens.device)
        k_pos = torch.arange(cache.offset + t, device=tokens.device)
        buckets = relative_buckets(q_pos, k_pos, a.n_buckets, bidirectional=False)  # [T, S]
        mask = cache.mask(t, None)
        half_cache = tokens.device.type == "cpu" and cache.k[0].dtype == torch.float16
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        for i, blk in enumerate(self.dec):
            bias = position_bias(self._rel_table(self.dec, i), buckets)  # [1, H, T, S]
            at = blk.attn
            h = rms_norm(x, at.norm, a.rms_eps)
            q, k, v = self._heads(at.wq(h)), self._heads(at.wk(h)), self._heads(at.wv(h))
            k, v = cache.update_and_fetch(i, k, v)  # [B, H, S, D]
            x = x + at.wo(attend(q, k, v, bias, mask, half_cache))
            cr = blk.cross
            h = rms_norm(x, cr.norm, a.rms_eps)
            q = self._heads(cr.wq(h))
            x = x + cr.wo(attend(q, cache.cross_k[i], cache.cross_v[i], None, None))
            x = blk.ffn(x, a.rms_eps)
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.dec_norm, a.rms_eps)).float()
