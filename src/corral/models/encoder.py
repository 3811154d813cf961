"""Encoder (embedding) models: the contract, where their weights come from, which module.

An encoder maps a padded batch of token ids to one hidden state per token; pooling and
normalization are the embedder's business (corral.embed). Each architecture module
(bert.py, nomic_bert.py, jina_bert_v2.py) exports `ModelArgs` (with `from_gguf` and
`from_hf` for a Hugging Face config.json) and `Model(args, weights)`, and reads its
tensors by their GGUF names, whatever file they came from:

    GGUFWeights        a GGUF file (llama.cpp's converter names), any supported quant type
    SafetensorsWeights a Hugging Face / sentence-transformers folder; names are mapped with
                       gguf-py's own HF -> GGUF table (`gguf.TensorNameMap`), so there is one
                       name table for both, and the architecture's `hf_tensors` hook only
                       handles what that table cannot (tensors llama.cpp splits)

Encoders are small (20M-140M parameters) and always run on batches of many tokens, so every
weight is widened to float32 once at load and the matmuls are plain BLAS.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from corral.errors import GGUFError, UnsupportedError
from corral.gguf.reader import GGUFFile

# GGUF general.architecture -> module under corral.models
ENCODER_ARCHITECTURES: dict[str, str] = {
    "bert": "bert",
    "nomic-bert": "nomic_bert",
    "jina-bert-v2": "jina_bert_v2",
}
_HF_PREFIXES = ("bert.", "model.", "encoder_model.")


class EncoderModel(Protocol):
    """A bidirectional encoder: token ids -> contextual hidden states."""

    hidden_size: int
    vocab_size: int
    max_positions: int  # the longest input it was trained for (tokens, specials included)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [B, T] long, mask [B, T] bool (False: padding) -> hidden [B, T, E] float32."""
        ...


class WeightSource(Protocol):
    """Float32 tensors by GGUF name (`token_embd.weight`, `blk.0.attn_q.bias`, ...)."""

    name: str  # the file or folder, for error messages

    def has(self, name: str) -> bool: ...

    def get(self, name: str) -> torch.Tensor: ...


def optional(src: WeightSource, name: str) -> torch.Tensor | None:
    """The tensor, or None where the file has none (biases some models leave out)."""
    return src.get(name) if src.has(name) else None


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] @ w[out, in].T + b."""
    return torch.nn.functional.linear(x, w, b)


def norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim."""
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


class Packing:
    """The real tokens of a right-padded batch as one [N, C] matrix, and back to [B, T, C].

    Everything but attention works token by token, so the linears and norms run on the N
    real tokens only: a batch of texts of mixed lengths no longer pays for its padding in
    the matmuls, which are most of an encoder's time. Attention needs the [B, T] layout and
    gets it back with `unpack` (padding rows zero; the mask keeps them out).
    """

    def __init__(self, mask: torch.Tensor) -> None:
        self.b, self.t = mask.shape
        self.full = bool(mask.all())  # no padding: pack and unpack are free reshapes
        self.idx = None if self.full else mask.reshape(-1).nonzero().squeeze(1)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [N, C]."""
        flat = x.reshape(self.b * self.t, x.shape[-1])
        return flat if self.idx is None else flat.index_select(0, self.idx)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] -> [B, T, C], zeros at the padding."""
        if self.idx is None:
            return x.reshape(self.b, self.t, x.shape[-1])
        out = x.new_zeros(self.b * self.t, x.shape[-1])
        return out.index_copy_(0, self.idx, x).view(self.b, self.t, x.shape[-1])


def padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """mask [B, T] bool -> [B, 1, 1, T] for SDPA (True: attend to that key)."""
    return mask[:, None, None, :]


class GGUFWeights:
    """The tensors of an open GGUF file, dequantized to float32 on request."""

    def __init__(self, gguf: GGUFFile) -> None:
        from corral.quant import SUPPORTED_TYPES, is_supported

        self.gguf = gguf
        self.name = gguf.path.name
        for t in gguf.tensors.values():
            if not is_supported(t.ggml_type):
                names = ", ".join(q.name for q in SUPPORTED_TYPES)
                raise UnsupportedError(
                    f"{self.name}: tensor '{t.name}' has type {t.ggml_type.name}, "
                    f"which is not supported (supported: {names})"
                )

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def get(self, name: str) -> torch.Tensor:
        from corral.models.weights import to_float

        try:
            return to_float(self.gguf.tensors[name])
        except KeyError:
            raise GGUFError(f"{self.name}: missing tensor '{name}'") from None


# An architecture's hook for HF tensors the name table does not cover: given the HF name and
# tensor, the (GGUF name, tensor) pairs it stands for, or None to use the table.
HFTensorHook = Callable[[str, torch.Tensor], Iterable[tuple[str, torch.Tensor]] | None]


class SafetensorsWeights:
    """The *.safetensors of a Hugging Face folder, renamed to GGUF tensor names."""

    def __init__(
        self, folder: Path, arch: str, n_layers: int, hook: HFTensorHook | None = None
    ) -> None:
        from gguf import MODEL_ARCH_NAMES, get_tensor_name_map
        from safetensors import safe_open

        self.name = folder.name
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise UnsupportedError(
                f"{folder.name}: no *.safetensors weights (PyTorch .bin files are not read)"
            )
        model_arch = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
        table = get_tensor_name_map(model_arch, n_layers)
        self.tensors: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for hf_name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    tensor = f.get_tensor(hf_name).float()
                    for name, t in _renamed(hf_name, tensor, table, hook):
                        self.tensors[name] = t

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.name}: missing weight for '{name}'") from None


def _renamed(
    hf_name: str, tensor: torch.Tensor, table: Any, hook: HFTensorHook | None
) -> Iterator[tuple[str, torch.Tensor]]:
    for candidate in (hf_name, *(hf_name[len(p) :] for p in _HF_PREFIXES if hf_name.startswith(p))):
        if hook is not None and (pairs := hook(candidate, tensor)) is not None:
            yield from pairs
            return
        name = table.get_name(candidate, try_suffixes=(".weight", ".bias"))
        if name is not None:
            yield name, tensor
            return
    # anything else (pooler, MLM head, position_ids buffers) is not part of the encoder


def hf_architecture(config: dict[str, Any], folder_name: str) -> str:
    """The GGUF architecture name for a Hugging Face config.json."""
    archs = " ".join(config.get("architectures") or [])
    model_type = str(config.get("model_type", ""))
    if model_type == "nomic_bert" or "NomicBert" in archs:
        return "nomic-bert"
    if "JinaBert" in archs or config.get("position_embedding_type") == "alibi":
        return "jina-bert-v2"
    if model_type == "bert" or "BertModel" in archs:
        return "bert"
    raise UnsupportedError(
        f"{folder_name}: model type '{model_type or archs or '?'}' is not a supported encoder "
        f"(supported: {', '.join(sorted(ENCODER_ARCHITECTURES))})"
    )


def is_encoder_architecture(arch: str) -> bool:
    return arch in ENCODER_ARCHITECTURES


def _module(arch: str, where: str) -> Any:
    module_name = ENCODER_ARCHITECTURES.get(arch)
    if module_name is None:
        raise UnsupportedError(
            f"{where}: architecture '{arch}' is not an embedding model corral can run "
            f"(supported: {', '.join(sorted(ENCODER_ARCHITECTURES))})"
        )
    return importlib.import_module(f"corral.models.{module_name}")


def load_encoder_gguf(gguf: GGUFFile) -> EncoderModel:
    """Build the encoder of an open GGUF file (the weights are copied out of the mapping)."""
    module = _module(gguf.architecture, gguf.path.name)
    return module.Model(module.ModelArgs.from_gguf(gguf), GGUFWeights(gguf))  # type: ignore[no-any-return]


def load_encoder_folder(folder: Path) -> tuple[EncoderModel, str]:
    """Build the encoder of a Hugging Face folder; returns it and its architecture name."""
    config = read_json(folder / "config.json")
    arch = hf_architecture(config, folder.name)
    module = _module(arch, folder.name)
    args = module.ModelArgs.from_hf(config)
    weights = SafetensorsWeights(folder, arch, args.n_layers, getattr(module, "hf_tensor", None))
    return module.Model(args, weights), arch


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model folder, with a one-line error when it is missing or bad."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnsupportedError(f"{path.parent.name}: no {path.name}") from None
    except (OSError, ValueError) as e:
        raise UnsupportedError(f"{path.parent.name}/{path.name}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise UnsupportedError(f"{path.parent.name}/{path.name}: not a JSON object")
    return data
