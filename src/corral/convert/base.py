"""The converter every architecture extends: config.json -> GGUF hyper-parameters, HF tensor
names -> GGUF names (gguf-py's `TensorNameMap`), and per-architecture tensor rewrites.

Mirrors the shape of llama.cpp's convert_hf_to_gguf.py so that its per-model knowledge maps
over one for one: `set_params` (its set_gguf_parameters), `set_vocab`, `modify` (its
modify_tensors). Subclasses register by the Hugging Face `architectures` names they accept.

`tensors(get)` is run twice by the writer: once on shape-only ("meta") tensors to lay out the
file header, once on the real weights; so every rewrite must be plain torch tensor code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from gguf import (
    MODEL_ARCH,
    MODEL_ARCH_NAMES,
    MODEL_TENSOR,
    TENSOR_NAMES,
    GGUFWriter,
    RopeScalingType,
    get_tensor_name_map,
)

from corral.convert.checkpoint import Checkpoint, ConvertError
from corral.convert.vocab import add_vocab

Getter = Callable[[str], torch.Tensor]
_MISSING: Any = object()
# Buffers some checkpoints save that are not weights.
_SKIP_SUFFIXES = (
    ".rotary_emb.inv_freq",
    ".attn.bias",
    ".attn.masked_bias",
    ".attention.bias",
    ".attention.masked_bias",
)

CONVERTERS: dict[str, type[ArchConverter]] = {}


class ArchConverter:
    """Converts one family of Hugging Face checkpoints to one GGUF architecture."""

    hf_architectures: ClassVar[tuple[str, ...]] = ()
    arch: ClassVar[MODEL_ARCH]
    # GGUF tensors (".weight") a file must have: once, and in every block
    required: ClassVar[tuple[MODEL_TENSOR, ...]] = (MODEL_TENSOR.TOKEN_EMBD,)
    required_per_block: ClassVar[tuple[MODEL_TENSOR, ...]] = ()
    # GGUF tensors llama.cpp's converter keeps in F32 whatever the outtype
    f32_tensors: ClassVar[tuple[MODEL_TENSOR, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for name in cls.hf_architectures:
            CONVERTERS[name] = cls

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        hp = dict(ckpt.config)
        if isinstance(hp.get("text_config"), dict):  # multimodal wrappers: the text model
            hp = {**hp, **hp["text_config"]}
        self.hp = hp
        self.n_layers = int(self.find("n_layers", "num_hidden_layers", "n_layer", "num_layers"))
        self.name_map = get_tensor_name_map(self.arch, self.n_layers)
        # transformers 5 nests rope settings in rope_parameters; older configs use
        # rope_theta and rope_scaling at the top level
        rope = dict(hp.get("rope_parameters") or hp.get("rope_scaling") or {})
        rope = dict(rope.get("full_attention", rope))
        if "rope_theta" not in rope and hp.get("rope_theta") is not None:
            rope["rope_theta"] = hp["rope_theta"]
        rope.setdefault("rope_type", rope.get("type"))
        self.rope = rope

    @property
    def arch_name(self) -> str:
        return MODEL_ARCH_NAMES[self.arch]

    def find(self, *keys: str, default: Any = _MISSING) -> Any:
        """The first of `keys` present in config.json."""
        for k in keys:
            if k in self.hp and self.hp[k] is not None:
                return self.hp[k]
        if default is _MISSING:
            raise ConvertError(f"config.json has none of {', '.join(keys)}")
        return default

    # -- metadata ------------------------------------------------------------------------

    def set_params(self, w: GGUFWriter) -> None:
        """Hyper-parameters under `<arch>.`; what llama.cpp's TextModel writes by default."""
        w.add_block_count(self.n_layers)
        ctx = self.find(
            "max_position_embeddings", "n_ctx", "n_positions", "max_length",
            "max_sequence_length", "model_max_length", default=None,
        )  # fmt: skip
        if ctx is not None:
            w.add_context_length(ctx)
        if (n_embd := self.find("hidden_size", "n_embd", "dim", default=None)) is not None:
            w.add_embedding_length(n_embd)
        if (
            n_ff := self.find("intermediate_size", "n_inner", "hidden_dim", default=None)
        ) is not None:
            w.add_feed_forward_length(n_ff)
        if (
            n_head := self.find("num_attention_heads", "n_head", "n_heads", default=None)
        ) is not None:
            w.add_head_count(n_head)
        if (n_kv := self.find("num_key_value_heads", "n_kv_heads", default=None)) is not None:
            w.add_head_count_kv(n_kv)
        self.set_rope_scaling(w)
        if (theta := self.rope.get("rope_theta")) is not None:
            w.add_rope_freq_base(theta)
        if (eps := self.find("rms_norm_eps", "norm_eps", default=None)) is not None:
            w.add_layer_norm_rms_eps(eps)
        eps = self.find("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", default=None)
        if eps is not None:
            w.add_layer_norm_eps(eps)
        if (head_dim := self.hp.get("head_dim")) is not None:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)

    def set_rope_scaling(self, w: GGUFWriter) -> None:
        rope_type, factor = self.rope.get("rope_type"), self.rope.get("factor")
        if rope_type == "linear" and factor is not None:
            w.add_rope_scaling_type(RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rope_type == "yarn" and factor is not None:
            w.add_rope_scaling_type(RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            w.add_rope_scaling_orig_ctx_len(self.rope["original_max_position_embeddings"])

    def set_vocab(self, w: GGUFWriter) -> None:
        add_vocab(w, self.ckpt.folder, self.hp.get("vocab_size"))

    # -- tensors -------------------------------------------------------------------------

    def gguf_name(
        self, tensor: MODEL_TENSOR, bid: int | None = None, suffix: str = ".weight"
    ) -> str:
        name = TENSOR_NAMES[tensor]
        return (name.format(bid=bid) if bid is not None else name) + suffix

    def map_name(self, name: str) -> str:
        """The GGUF name of an HF tensor; ConvertError (caught and collected) if none."""
        new = self.name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise _Unmapped(name)
        return new

    def keeps_f32(self, name: str) -> bool:
        """Whether the GGUF tensor `name` is one of `f32_tensors` (stored F32 always)."""
        m = re.match(r"blk\.(\d+)\.", name)
        bid = int(m.group(1)) if m else None
        return any(name == self.gguf_name(t, bid) for t in self.f32_tensors)

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Rewrite one HF tensor into GGUF tensors (default: rename only)."""
        yield self.map_name(name), t

    def extra_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Tensors made from config.json rather than the checkpoint (rope factors)."""
        return iter(())

    def skip(self, name: str) -> bool:
        return name.endswith(_SKIP_SUFFIXES)

    def tensors(self, get: Getter) -> Iterator[tuple[str, torch.Tensor]]:
        """All GGUF tensors in file order; lists every HF tensor it cannot place at once."""
        unmapped: list[str] = []
        yield from self.extra_tensors()
        for name in self.ckpt.names():
            if self.skip(name):
                continue
            m = re.search(r"\.(\d+)\.", name)
            bid = int(m.group(1)) if m else None
            try:
                yield from self.modify(name, get(name), bid)
            except _Unmapped as e:
                unmapped.append(str(e))
        if unmapped:
            raise ConvertError(
                f"{self.ckpt.folder.name}: tensors not part of a {self.arch_name} model: "
                + ", ".join(sorted(unmapped))
            )

    def check_complete(self, names: set[str]) -> None:
        """ConvertError naming every required tensor the checkpoint did not provide."""
        want = [self.gguf_name(t) for t in self.required]
        want += [
            self.gguf_name(t, i) for i in range(self.n_layers) for t in self.required_per_block
        ]
        missing = [n for n in want if n not in names]
        if missing:
            raise ConvertError(
                f"{self.ckpt.folder.name}: checkpoint lacks tensors for " + ", ".join(missing)
            )


class _Unmapped(Exception):
    """An HF tensor name with no GGUF counterpart (collected, then reported together)."""


def converter_for(ckpt: Checkpoint) -> ArchConverter:
    """The converter for a checkpoint's `architectures`; a one-line error listing the
    supported ones otherwise."""
    archs = ckpt.config.get("architectures") or []
    for a in archs:
        if a in CONVERTERS:
            return CONVERTERS[a](ckpt)
    raise ConvertError(
        f"{ckpt.folder.name}: architecture {', '.join(archs) or '(none given)'} is not "
        f"supported (supported: {', '.join(sorted(CONVERTERS))})"
    )
