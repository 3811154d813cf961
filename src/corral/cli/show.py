"""`corral show`: what a model is, read from its GGUF header, or for a sentence-transformers /
Hugging Face folder (embedding models such as minilm) from its config files and safetensors
headers; no weights are loaded either way.

The REPL's `/show info` prints the same report, so both live here.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.cli.output import human_count

# Metadata keys naming the tokens that end a turn (used when the tokenizer cannot load).
_STOP_TOKEN_KEYS = (
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
)


@dataclass
class ModelFacts:
    """What `corral show` reports about one GGUF file or model folder."""

    path: Path
    architecture: str
    name: str | None
    parameters: int
    quantization: str | None
    context_length: int | None
    embedding_length: int | None
    tensor_types: dict[str, int]
    template: str  # "": none (an embedding model)
    template_name: str | None  # the built-in format's name; None for the file's own template
    license: str | None
    stop: list[str] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)  # pooling etc. of a folder model


def read_facts(path: Path) -> ModelFacts:
    """Read a model's facts from its GGUF header (fast: tensor data stay unread)."""
    from corral.gguf import open_gguf
    from corral.gguf.consts import LlamaFileType

    with open_gguf(path) as g:
        meta = g.metadata
        arch = g.architecture
        types = Counter(t.ggml_type.name for t in g.tensors.values())
        parameters = sum(t.n_elements for t in g.tensors.values())
    try:
        quant = (
            LlamaFileType(meta["general.file_type"])
            .name.removeprefix("MOSTLY_")
            .removeprefix("ALL_")
        )
    except (KeyError, ValueError):
        # No file type recorded: the commonest tensor type says as much.
        quant = types.most_common(1)[0][0] if types else None
    template, template_name = _template(meta)
    licence = meta.get("general.license") or meta.get("general.license.name")
    return ModelFacts(
        path=Path(path),
        architecture=arch,
        name=meta.get("general.name"),
        parameters=parameters,
        quantization=quant,
        context_length=_int(meta.get(f"{arch}.context_length")),
        embedding_length=_int(meta.get(f"{arch}.embedding_length")),
        tensor_types=dict(types.most_common()),
        template=template,
        template_name=template_name,
        license=str(licence) if licence is not None else None,
        stop=_stop_tokens(meta),
        # Newer converters record the model maker's recommended sampling settings.
        sampling={
            k.removeprefix("general.sampling."): v
            for k, v in meta.items()
            if k.startswith("general.sampling.")
        },
    )


def read_folder_facts(folder: Path) -> ModelFacts:
    """Facts of a sentence-transformers / Hugging Face model folder: config.json, modules.json,
    1_Pooling, sentence_bert_config.json and the safetensors headers (tensor data unread)."""
    from corral.embed.loader import _modules
    from corral.embed.pooling import Pooling
    from corral.errors import UnsupportedError
    from corral.models.encoder import hf_architecture, read_json

    modules = _modules(folder)
    transformer = folder / modules.get("Transformer", "")
    if not (transformer / "config.json").is_file():
        raise UnsupportedError(f"{folder}: not a model folder (no config.json)")
    config = read_json(transformer / "config.json")
    arch = hf_architecture(config, folder.name)
    types: Counter[str] = Counter()
    parameters = 0
    for file in sorted(transformer.glob("*.safetensors")):
        for dtype, n in _safetensors_tensors(file):
            types[dtype] += 1
            if dtype.startswith(("F", "BF")):  # integer tensors are buffers (position_ids)
                parameters += n
    n_ctx = _int(config.get("max_position_embeddings") or config.get("n_positions"))
    st_config = transformer / "sentence_bert_config.json"
    max_seq = read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    pooling = Pooling.MEAN  # what the loader uses for a plain Hugging Face folder
    if "Pooling" in modules:
        pooling = Pooling.from_sentence_transformers(
            read_json(folder / modules["Pooling"] / "config.json")
        )
    embedding = {
        "pooling": pooling.value,
        "normalize": "yes" if "Normalize" in modules else "no",
        # what the embedder reads: sentence-transformers' cap, within the position table
        "max tokens": min((int(x) for x in (max_seq, n_ctx) if x), default="?"),
    }
    return ModelFacts(
        path=folder,
        architecture=arch,
        name=None,
        parameters=parameters,
        quantization=None,
        context_length=n_ctx,
        embedding_length=_int(config.get("hidden_size") or config.get("n_embd")),
        tensor_types=dict(types.most_common()),
        template="",
        template_name=None,
        license=_readme_license(folder / "README.md"),
        embedding=embedding,
    )


def _safetensors_tensors(path: Path) -> list[tuple[str, int]]:
    """(dtype, element count) of each tensor in a .safetensors file, from its JSON header:
    8 bytes little-endian header length, then the header."""
    from corral.errors import UnsupportedError

    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as e:
        raise UnsupportedError(f"{path.name}: unreadable safetensors header ({e})") from None
    out = []
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        n = 1
        for dim in entry.get("shape", []):
            n *= int(dim)
        out.append((str(entry.get("dtype", "?")), n))
    return out


_FRONT_LICENSE = re.compile(r"^license:\s*(\S.*?)\s*$", re.MULTILINE)


def _readme_license(readme: Path) -> str | None:
    """The `license:` of a Hugging Face model card's YAML front matter, if any."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    m = _FRONT_LICENSE.search(front)
    return m.group(1).strip("'\"") if m else None


def _stop_tokens(meta: dict[str, Any]) -> list[str]:
    """Texts of the tokens that end an answer, as the tokenizer decides them (it also finds
    end-of-turn tokens the file leaves unnamed, such as Gemma's <end_of_turn>)."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None:
        return []
    from corral.errors import CorralError
    from corral.tokenizer import load_tokenizer

    try:
        ids = sorted(load_tokenizer(meta).eog_ids)
    except CorralError:  # a vocabulary corral cannot use: the ids the file names
        ids = [int(meta[k]) for k in _STOP_TOKEN_KEYS if meta.get(k) is not None]
    return [str(tokens[i]) for i in ids if 0 <= i < len(tokens)]


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _template(meta: dict[str, Any]) -> tuple[str, str | None]:
    """(template source, built-in name or None): the file's own, else the one chosen for it."""
    from corral.chat import builtin_for
    from corral.chat.builtin import builtin_source, llama_cpp_builtin
    from corral.errors import TemplateError

    source = meta.get("tokenizer.chat_template")
    if isinstance(source, str) and source.strip():
        try:  # a llama.cpp template *name* ("rwkv-world") stands for that format
            named = llama_cpp_builtin(source)
        except TemplateError:  # a name corral does not render: show what the file says
            named = None
        if named is None:
            return source, None
        return builtin_source(named), named.value
    which = builtin_for(meta)
    return builtin_source(which), which.value


def info_report(facts: ModelFacts) -> str:
    """The default `corral show` report (also the REPL's `/show info`)."""

    def section(title: str, rows: list[tuple[str, Any]]) -> list[str]:
        width = max(len(k) for k, _ in rows) + 4
        return [f"  {title}", *(f"    {k:<{width}}{v}" for k, v in rows), ""]

    model = [("architecture", facts.architecture)]
    if facts.name:
        model.append(("name", facts.name))
    model.append(("parameters", human_count(facts.parameters)))
    if facts.path.is_dir():
        model.append(("format", "model folder (safetensors)"))
    if facts.context_length:
        model.append(("context length", facts.context_length))
    if facts.embedding_length:
        model.append(("embedding length", facts.embedding_length))
    if facts.quantization:
        model.append(("quantization", facts.quantization))
    lines = section("Model", model)
    lines += section("Tensor types", list(facts.tensor_types.items()) or [("none", "")])
    if facts.embedding:
        lines += section("Embedding", list(facts.embedding.items()))
    if facts.template:
        origin = (
            f"{facts.template_name} (built in)" if facts.template_name else "from the model file"
        )
        lines += section("Chat template", [("format", origin)])
    if facts.stop or facts.sampling:
        rows = [("stop", " ".join(facts.stop))] if facts.stop else []
        lines += section("Parameters", rows + list(facts.sampling.items()))
    if facts.license:
        lines += ["  License", f"    {facts.license.splitlines()[0]}", ""]
    return "\n".join(lines).rstrip() + "\n"


def parameters_report(facts: ModelFacts) -> str:
    """Modelfile-style PARAMETER lines: the stop tokens and any recommended sampling."""
    lines = [f"stop {_quote(s)}" for s in facts.stop]
    lines += [f"{k} {v}" for k, v in facts.sampling.items()]
    return "\n".join(lines) + "\n" if lines else "(no parameters)\n"


def modelfile(facts: ModelFacts) -> str:
    """An ollama-style Modelfile describing the model."""
    out = ['# Modelfile generated by "corral show"', f"FROM {facts.path}", ""]
    if facts.template:  # an embedding model has none
        out += [f'TEMPLATE """{facts.template}"""', ""]
    out += [f"PARAMETER stop {_quote(s)}" for s in facts.stop]
    out += [f"PARAMETER {k} {v}" for k, v in facts.sampling.items()]
    if facts.license:
        out += ["", f'LICENSE """{facts.license}"""']
    return "\n".join(out).rstrip() + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `corral show`."""
    p = sub.add_parser("show", help="show information about a model")
    p.add_argument("model", help="model name, .gguf path or model folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--template", action="store_true", help="print the chat template")
    which.add_argument("--parameters", action="store_true", help="print stop tokens and settings")
    which.add_argument("--license", action="store_true", help="print the license")
    which.add_argument("--modelfile", action="store_true", help="print a Modelfile")
    p.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    """Print the report the flags ask for."""
    from corral.store import Store

    folder = Path(args.model).expanduser()
    # the store resolves names and .gguf files; a folder path is read in place
    path = folder if folder.is_dir() else Store().resolve(args.model).path
    facts = read_folder_facts(path) if path.is_dir() else read_facts(path)
    if args.template and not facts.template:
        text = "(no chat template: an embedding model)\n"
    elif args.template:
        text = facts.template if facts.template.endswith("\n") else facts.template + "\n"
    elif args.parameters:
        text = parameters_report(facts)
    elif args.license:
        text = (facts.license or "(no license in the model file)") + "\n"
    elif args.modelfile:
        text = modelfile(facts)
    else:
        text = info_report(facts)
    print(text, end="")
    return 0
