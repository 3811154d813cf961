"""Plain-torch references of the published encoder architectures, on HF parameter names.

Written from the Hugging Face modeling code of each family (BertModel, NomicBertModel,
JinaBertModel), in its own eager style (explicit score matrices, the extended additive mask,
rotate_half RoPE, the recursive ALiBi slope recipe), independent of corral's implementation:
the tests compare corral's encoders, loaded from GGUF files and from folders, with these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]


def _ln(x: torch.Tensor, sd: State, name: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd.get(name + ".bias"), eps)


def _lin(x: torch.Tensor, sd: State, name: str) -> torch.Tensor:
    return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))


def _extended_mask(mask: torch.Tensor) -> torch.Tensor:
    # BertModel.get_extended_attention_mask: (1 - mask) * dtype min, broadcast over heads
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    b, t, e = x.shape
    return x.view(b, t, n_head, e // n_head).permute(0, 2, 1, 3)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, t, h * d)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + add
    return scores.softmax(-1) @ v


@torch.no_grad()
def bert(sd: State, cfg: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BertModel's last_hidden_state."""
    eps, n_head = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    t = ids.shape[1]
    x = (
        sd["embeddings.word_embeddings.weight"][ids]
        + sd["embeddings.position_embeddings.weight"][torch.arange(t)]
        + sd["embeddings.token_type_embeddings.weight"][torch.zeros_like(ids)]
    )
    x = _ln(x, sd, "embeddings.LayerNorm", eps)
    add = _extended_mask(mask)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (
            _heads(_lin(x, sd, p + f"attention.self.{n}"), n_head)
            for n in ("query", "key", "value")
        )
        a = _merge(_attend(q, k, v, add))
        x = _ln(
            _lin(a, sd, p + "attention.output.dense") + x, sd, p + "attention.output.LayerNorm", eps
        )
        h = F.gelu(_lin(x, sd, p + "intermediate.dense"))
        x = _ln(_lin(h, sd, p + "output.dense") + x, sd, p + "output.LayerNorm", eps)
    return x


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@torch.no_grad()
def nomic_bert(sd: State, cfg: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """NomicBertModel's last_hidden_state (post-norm, rotary non-interleaved, SwiGLU)."""
    eps, n_head, e = cfg["layer_norm_epsilon"], cfg["n_head"], cfg["n_embd"]
    d = e // n_head
    t = ids.shape[1]
    x = (
        sd["embeddings.word_embeddings.weight"][ids]
        + sd["embeddings.token_type_embeddings.weight"][0]
    )
    x = _ln(x, sd, "emb_ln", eps)
    inv = 1.0 / (cfg["rotary_emb_base"] ** (torch.arange(0, d, 2).float() / d))
    freqs = torch.outer(torch.arange(t).float(), inv)  # [T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    add = _extended_mask(mask)
    for i in range(cfg["n_layer"]):
        p = f"encoder.layers.{i}."
        q, k, v = _lin(x, sd, p + "attn.Wqkv").split(e, dim=-1)
        q, k, v = _heads(q, n_head), _heads(k, n_head), _heads(v, n_head)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        a = _merge(_attend(q, k, v, add))
        x = _ln(x + _lin(a, sd, p + "attn.out_proj"), sd, p + "norm1", eps)
        y = _lin(x, sd, p + "mlp.fc11") * F.silu(_lin(x, sd, p + "mlp.fc12"))
        x = _ln(x + _lin(y, sd, p + "mlp.fc2"), sd, p + "norm2", eps)
    return x


def _alibi_slopes(n: int) -> list[float]:
    # jina-bert's _get_alibi_head_slopes
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + _alibi_slopes(2 * closest)[0::2][: n - closest]


@torch.no_grad()
def jina_bert(sd: State, cfg: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """JinaBertModel's last_hidden_state (ALiBi, GEGLU MLP with its own LayerNorm)."""
    eps, n_head, f = cfg["layer_norm_eps"], cfg["num_attention_heads"], cfg["intermediate_size"]
    t = ids.shape[1]
    x = (
        sd["embeddings.word_embeddings.weight"][ids]
        + sd["embeddings.token_type_embeddings.weight"][0]
    )
    x = _ln(x, sd, "embeddings.LayerNorm", eps)
    ctx = torch.arange(t)[:, None]
    mem = torch.arange(t)[None, :]
    alibi = torch.tensor(_alibi_slopes(n_head))[:, None, None] * -torch.abs(mem - ctx)  # [H, T, T]
    add = _extended_mask(mask) + alibi[None]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = _lin(x, sd, p + "attention.self.query")
        k = _lin(x, sd, p + "attention.self.key")
        if p + "attention.self.layer_norm_q.weight" in sd:
            q = _ln(q, sd, p + "attention.self.layer_norm_q", eps)
            k = _ln(k, sd, p + "attention.self.layer_norm_k", eps)
        v = _lin(x, sd, p + "attention.self.value")
        a = _merge(_attend(_heads(q, n_head), _heads(k, n_head), _heads(v, n_head), add))
        x = _ln(
            _lin(a, sd, p + "attention.output.dense") + x, sd, p + "attention.output.LayerNorm", eps
        )
        g = _lin(x, sd, p + "mlp.gated_layers")
        y = F.gelu(g[..., :f]) * g[..., f:]
        x = _ln(_lin(y, sd, p + "mlp.wo") + x, sd, p + "mlp.layernorm", eps)
    return x
