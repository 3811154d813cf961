"""`corral.load()` and the `Model` it returns: tokenize, generate, chat, logits.

A Model owns one KV cache and remembers which tokens it holds, so a follow-up request that
starts with the same tokens (the next turn of a chat) only computes the new ones.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corral.engine.constraints import LogitsConstraint
from corral.engine.device import resolve_device
from corral.engine.generate import (
    GenerationRequest,
    Timings,
    common_prefix,
    fit_prompt,
    generate_tokens,
)
from corral.engine.kv_cache import KVCache
from corral.engine.memory import gc_paused, release_free_memory, tune_allocator
from corral.engine.sampling import SamplingParams
from corral.engine.seq2seq import EncoderDecoderLM, generate_seq2seq_tokens, seq2seq_logits
from corral.errors import CorralError
from corral.generation import GenerationEvent, GenerationResult, collect, text_events
from corral.gguf.reader import open_gguf
from corral.models.base import CausalLM
from corral.models.registry import check_architecture, load_model
from corral.tokenizer import Tokenizer, load_tokenizer

DEFAULT_CONTEXT = 4096


@dataclass(frozen=True)
class ModelInfo:
    """What `show` prints and the server reports about a loaded model."""

    name: str
    path: Path
    architecture: str
    context_length: int
    n_ctx: int
    vocab_size: int
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)
    adapters: tuple[tuple[str, float], ...] = ()  # LoRA (path, scale) pairs applied


class Model:
    """A loaded GGUF model, ready to generate."""

    def __init__(
        self, net: CausalLM, tokenizer: Tokenizer, info: ModelInfo, load_seconds: float
    ) -> None:
        self.net = net
        self.tokenizer = tokenizer
        self.info = info
        self.load_seconds = load_seconds
        self._cache: KVCache | None = None
        self._cached_ids: list[int] = []
        self._template: Any = None
        self._graph: Any = None  # GraphedDecoder, made on first GPU generation

    # -- text <-> ids -------------------------------------------------------------------

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        """Token ids of `text` (BOS/EOS added as the model file asks, when add_special)."""
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: Sequence[int], render_special: bool = False) -> str:
        """Text of token ids; control tokens are left out unless render_special."""
        return self.tokenizer.decode(ids, render_special=render_special)

    # -- raw model outputs ----------------------------------------------------------------

    def logits(self, ids: Sequence[int], decoder_ids: Sequence[int] | None = None) -> np.ndarray:
        """Next-token logits at every position: float32 [len(ids), vocab].

        Encoder-decoder models (t5): `ids` is the encoder input and the result is the
        decoder's, float32 [1 + len(decoder_ids), vocab]: row i scores the decoder's token
        i + 1 after its start token and decoder_ids[:i] (decoder_ids only applies to them).
        """
        ids = list(ids)
        if not ids:
            raise ValueError("logits() needs at least one token id")
        if isinstance(self.net, EncoderDecoderLM):
            return seq2seq_logits(self.net, ids, decoder_ids or ()).float().cpu().numpy()
        if decoder_ids is not None:
            raise ValueError("decoder_ids is for encoder-decoder models only")
        cache = self.net.make_cache(len(ids))
        out = self.net.forward(torch.tensor([ids], dtype=torch.long), cache)
        return out[0].float().cpu().numpy()

    # -- generation ----------------------------------------------------------------------

    def _kv(self) -> KVCache:
        if self._cache is None:
            self._cache = self.net.make_cache(self.info.n_ctx)
        return self._cache

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            # prompts may carry the chat markup as text: parse special tokens, as llama.cpp does
            return self.tokenize(prompt, add_special=True, parse_special=True)
        return [int(t) for t in prompt]

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 256,
        *,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        ignore_eos: bool = False,
        truncate: bool = False,
        stream: bool = False,
    ) -> GenerationResult | Iterator[GenerationEvent]:
        """Continue `prompt` (text or token ids).

        Returns a GenerationResult, or with stream=True an iterator of GenerationEvents
        whose last one carries the finish reason and timings. Temperature 0 is greedy.
        A prompt longer than the context raises ContextOverflowError unless truncate.
        """
        params = SamplingParams(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            typical_p=typical_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
            presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, seed=seed,
        )  # fmt: skip
        return self.generate_with(
            self._prompt_ids(prompt), max_tokens, params, stop, ignore_eos, truncate, stream
        )

    def generate_with(
        self,
        ids: list[int],
        max_tokens: int,
        params: SamplingParams,
        stop: Sequence[str] | str | None = None,
        ignore_eos: bool = False,
        truncate: bool = False,
        stream: bool = False,
        constraint: LogitsConstraint | None = None,
    ) -> GenerationResult | Iterator[GenerationEvent]:
        """`generate` for callers that already hold token ids and SamplingParams;
        `constraint` masks each step's logits (grammars, JSON schemas)."""
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        ids = fit_prompt(ids, self.info.n_ctx, truncate)
        req = GenerationRequest(
            prompt_ids=ids, max_tokens=max_tokens, sampling=params,
            stop_ids=self.tokenizer.eog_ids, ignore_eos=ignore_eos, truncate=truncate,
            constraint=constraint,
        )  # fmt: skip
        events = self._events(req, stops)
        if stream:
            return events
        return collect(events, len(ids))

    def _events(self, req: GenerationRequest, stops: list[str]) -> Iterator[GenerationEvent]:
        if isinstance(self.net, EncoderDecoderLM):  # t5: encode the prompt, then decode
            timings = Timings()
            tokens = generate_seq2seq_tokens(self.net, req, self._kv(), timings)
            yield from text_events(tokens, self.tokenizer, stops, timings)
            return
        device = getattr(self.net, "device", None)
        if device is not None and device.torch_device.type == "cuda":
            yield from self._graph_events(req, stops)
            return
        cache = self._kv()
        reuse = common_prefix(self._cached_ids, req.prompt_ids)
        self._cached_ids = []  # the cache is in flux until this generation ends
        timings = Timings()
        tokens = generate_tokens(self.net, req, cache, timings, cached_prefix=reuse)
        held = list(req.prompt_ids)
        try:
            yield from text_events(_track(tokens, held), self.tokenizer, stops, timings)
        finally:
            # what the cache now holds: the prompt and every token fed back through the model
            self._cached_ids = held[: cache.offset]

    def _graph_events(self, req: GenerationRequest, stops: list[str]) -> Iterator[GenerationEvent]:
        """On a GPU: decode steps replayed from a captured CUDA graph (no prefix reuse)."""
        from corral.engine.cuda_graph import GraphedDecoder, graph_generate_tokens

        if self._graph is None:
            self._graph = GraphedDecoder(self.net, 1, self.info.n_ctx)
        timings = Timings()
        tokens = graph_generate_tokens(self._graph, req, timings)
        yield from text_events(tokens, self.tokenizer, stops, timings)

    def chat(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int = 512,
        *,
        stream: bool = False,
        tools: list[Any] | None = None,
        tool_choice: Any = None,
        run_tools: bool = False,
        max_tool_steps: int = 5,
        **kwargs: Any,
    ) -> GenerationResult | Iterator[GenerationEvent]:
        """Answer a conversation ([{"role": ..., "content": ...}, ...]) using the model's chat
        template; takes the same sampling keywords as `generate`.

        `tools` (@corral.tool functions, plain functions or OpenAI tool dicts) makes the
        answer a `ToolChatResult` with parsed `tool_calls`; `tool_choice` is "auto",
        "none", "required" or a function name dict; with `run_tools` corral runs the calls
        and feeds the results back, at most `max_tool_steps` rounds, until a text answer.
        """
        if tools or run_tools:
            from corral.chat.tools.loop import chat_with_tools

            return chat_with_tools(
                self, messages, list(tools or []), max_tokens, stream=stream,
                tool_choice=tool_choice, run_tools=run_tools, max_steps=max_tool_steps,
                **kwargs,
            )  # fmt: skip
        return self.generate(self.chat_prompt_ids(messages), max_tokens, stream=stream, **kwargs)

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:  # fmt: skip
        """The chat template applied to `messages`, as text."""
        if self._template is None:
            from corral.chat import template_for

            self._template = template_for(self.info.metadata)
        return self._template.render(
            messages, add_generation_prompt=add_generation_prompt, tools=tools
        )

    def chat_prompt_ids(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Token ids of the rendered conversation, ready to generate from."""
        ids = self.tokenize(self.render_chat(messages, tools), add_special=True, parse_special=True)
        bos = self.tokenizer.bos_id
        # templates usually write the BOS text themselves; don't start with two BOS tokens
        if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        return ids

    def __repr__(self) -> str:
        i = self.info
        return f"<corral.Model {i.name} ({i.architecture}, n_ctx={i.n_ctx})>"


def _track(tokens: Iterator[Any], held: list[int]) -> Iterator[Any]:
    for ev in tokens:
        held.append(ev.token_id)
        yield ev


def load(
    name_or_path: str | os.PathLike[str],
    n_ctx: int | None = None,
    threads: int | None = None,
    name: str | None = None,
    device: str | None = None,
    adapters: Sequence[tuple[str | os.PathLike[str], float]] | None = None,
) -> Model:
    """Load a model by store name ("smollm2", "gemma3-270m:latest") or .gguf path.

    n_ctx: context size (default: the model's, capped at 4096). threads: CPU threads for
    torch (default: torch's choice, one per physical core). name: the display name (default:
    the store name, or the file's stem). device: "cpu", "cuda" or None for the GPU when torch
    sees one (also $CORRAL_DEVICE). adapters: LoRA adapters as (path, scale) pairs, a
    llama.cpp GGUF adapter file or a PEFT folder each, applied on top of the base weights.
    """
    t0 = time.perf_counter()
    tune_allocator()
    if threads:
        torch.set_num_threads(threads)
    path = Path(name_or_path)
    if not (path.suffix == ".gguf" or path.exists()):
        from corral.store import Store

        ref = Store().resolve(str(name_or_path))
        path, shown = ref.path, f"{ref.name}:{ref.tag}"
    else:
        shown = path.stem
    with gc_paused():
        return _load_file(path, shown, n_ctx, name, device, adapters, t0)


def _load_file(
    path: Path,
    shown: str,
    n_ctx: int | None,
    name: str | None,
    device: str | None,
    adapters: Sequence[tuple[str | os.PathLike[str], float]] | None,
    t0: float,
) -> Model:
    gguf = open_gguf(path)
    try:
        check_architecture(gguf)
        tokenizer = load_tokenizer(gguf.metadata)
        with _adapter_hook(gguf.metadata, adapters):
            net = load_model(gguf, resolve_device(device or os.environ.get("CORRAL_DEVICE")))
        meta = {k: v for k, v in gguf.metadata.items() if not k.startswith("tokenizer.ggml.")}
        meta.update(
            {
                k: v
                for k, v in gguf.metadata.items()
                if k.startswith("tokenizer.ggml.") and not isinstance(v, (list, np.ndarray))
            }
        )
        if "tokenizer.ggml.tokens" in gguf.metadata:
            meta["tokenizer.ggml.tokens"] = gguf.metadata["tokenizer.ggml.tokens"]
        arch = gguf.architecture
    finally:
        gguf.close()
    release_free_memory()
    ctx = n_ctx or min(net.context_length, DEFAULT_CONTEXT)
    if ctx < 8:
        raise CorralError(f"context size {ctx} is too small")
    info = ModelInfo(name or shown, path, arch, net.context_length, ctx, net.vocab_size, meta)
    info = replace(info, adapters=tuple((str(p), float(s)) for p, s in adapters or ()))
    return Model(net, tokenizer, info, time.perf_counter() - t0)


def _adapter_hook(
    metadata: dict[str, Any], adapters: Sequence[tuple[str | os.PathLike[str], float]] | None
) -> contextlib.AbstractContextManager[Any]:
    """Wraps the weights built inside it with the LoRA adapters (nothing when none)."""
    if not adapters:
        return contextlib.nullcontext()
    from corral.adapters import attach, load_adapters

    return attach(load_adapters(adapters, metadata))
