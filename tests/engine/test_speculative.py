"""Prompt-lookup speculative decoding yields exactly the plain loop's events, only faster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as Q

import corral
from corral.engine.generate import (
    FinishReason,
    GenerationRequest,
    Timings,
    TokenEvent,
    generate_tokens,
    prefill,
)
from corral.engine.sampling import SamplingParams
from corral.engine.speculative import (
    ROW_COST,
    DraftLength,
    DraftStats,
    NgramDrafter,
    speculation_applies,
    speculative_decode,
)
from corral.kernels import attention
from corral.models.base import CausalLM

pytestmark = pytest.mark.skipif(not attention.available(), reason="corral._attn not built")

GREEDY = SamplingParams(temperature=0.0)
QUOTING = "hello world, hello world. the cat sat on the mat; the cat sat on the mat; the cat"
PLAIN = "Colorless green ideas sleep furiously beside 42 quiet anvils!"


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CausalLM:
    from tiny_gguf import write_tiny

    path = tmp_path_factory.mktemp("spec") / f"{request.param}.gguf"
    write_tiny(path, arch=request.param, qtype=Q.Q8_0, n_embd=64, sliding_window=8, context=256)
    return corral.load(path).net


def ids_of(text: str) -> list[int]:
    return [3 + b for b in text.encode()]  # tiny_gguf: byte tokens follow three specials


class ScriptedDrafter(NgramDrafter):
    """Drafts from a known answer (`ref`: prompt + the plain loop's tokens), spoiling one
    token in some drafts, so every accept/reject shape occurs whatever the random model
    says."""

    def __init__(self, ref: Sequence[int], spoil_every: int = 0) -> None:
        super().__init__()
        self.ref = list(ref)
        self.spoil_every = spoil_every
        self.calls = 0

    def propose(self, k: int) -> list[int]:
        self.calls += 1
        pos = len(self.tokens)
        draft = self.ref[pos : pos + max(k, 0)]
        if self.spoil_every and draft and self.calls % self.spoil_every == 0:
            i = self.calls % len(draft)
            draft[i] = (draft[i] + 1) % 200
        return draft


def plain(net: CausalLM, req: GenerationRequest, n_ctx: int = 256) -> tuple[list[TokenEvent], int]:
    cache = net.make_cache(n_ctx)
    events = list(generate_tokens(net, replace(req, speculative=False), cache))
    return events, cache.offset


def spec(
    net: CausalLM, req: GenerationRequest, n_ctx: int = 256,
    drafter: NgramDrafter | None = None, stats: DraftStats | None = None,
) -> tuple[list[TokenEvent], int]:  # fmt: skip
    cache = net.make_cache(n_ctx)
    assert speculation_applies(net, req, cache)
    logits = prefill(net, cache, req.prompt_ids)
    # scripted drafts are scored in full, whatever their record: every accept/reject shape
    row_cost = 0.0 if drafter is not None else ROW_COST
    gen = speculative_decode(
        net, req, cache, req.prompt_ids, logits, Timings(), stats, drafter, row_cost
    )
    events = list(gen)
    return events, cache.offset


# -- the drafter ----------------------------------------------------------------------------


def test_drafter_proposes_what_followed_the_latest_match() -> None:
    d = NgramDrafter([1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3])
    assert d.propose(3) == [7, 8, 5]  # the later "1 2 3" wins
    assert d.propose(1) == [7]
    assert d.propose(0) == []


def test_drafter_prefers_the_longest_ngram() -> None:
    d = NgramDrafter([4, 2, 3, 50, 1, 2, 3, 60, 3, 70, 1, 2, 3])
    assert d.propose(2) == [60, 3]  # "1 2 3" beats the more recent "3"
    d.extend([99, 3])
    assert d.propose(2) == [99, 3]  # only the 1-gram "3" matches now: its latest use


def test_drafter_without_a_match_and_built_incrementally() -> None:
    assert NgramDrafter([1, 2, 3, 4]).propose(5) == []
    assert NgramDrafter([]).propose(5) == []
    whole = NgramDrafter([5, 6, 7, 5, 6, 8, 5, 6])
    parts = NgramDrafter([5, 6])
    for t in [7, 5, 6, 8, 5, 6]:
        parts.extend([t])
    assert parts.propose(4) == whole.propose(4) == [8, 5, 6]
    assert NgramDrafter([7, 7, 7]).propose(3) == [7]  # a run proposes its own continuation
    with pytest.raises(ValueError):
        NgramDrafter(min_ngram=0)


def test_draft_length_follows_the_acceptance_record() -> None:
    lengths = DraftLength(row_cost=0.3)
    assert lengths.choose(3, 0) == 0
    start = lengths.choose(3, 12)
    assert 1 <= start < 12
    for _ in range(10):
        lengths.update(3, 10, 10)  # every draft held: verify as much as offered
    assert lengths.choose(3, 12) == 12
    for _ in range(10):
        lengths.update(1, 4, 0)  # nothing held: not worth a row
    assert lengths.choose(1, 12) == 0
    assert lengths.rate(1) < 0.2 < lengths.rate(2) < lengths.rate(3)
    for _ in range(100):  # written off, but tried again after a while
        lengths.choose(1, 12)
    assert lengths.choose(1, 12) > 0
    assert DraftLength(row_cost=0.0).choose(1, 12) == 12


# -- same events as the plain loop ----------------------------------------------------------


@pytest.mark.parametrize("text", [QUOTING, PLAIN])
def test_ngram_speculation_matches_plain_greedy(net: CausalLM, text: str) -> None:
    req = GenerationRequest(ids_of(text), max_tokens=60, sampling=GREEDY, ignore_eos=True)
    assert spec(net, req) == plain(net, req)


@pytest.mark.parametrize("spoil_every", [0, 1, 2, 3])
def test_partly_wrong_drafts_give_the_plain_tokens(net: CausalLM, spoil_every: int) -> None:
    req = GenerationRequest(ids_of(QUOTING), max_tokens=48, sampling=GREEDY, ignore_eos=True)
    want, offset = plain(net, req)
    ref = req.prompt_ids + [e.token_id for e in want]
    stats = DraftStats()
    assert spec(net, req, drafter=ScriptedDrafter(ref, spoil_every), stats=stats) == (want, offset)
    assert stats.forwards < len(want) - 1  # drafts did save forward passes
    assert 0 < stats.accepted <= stats.drafted
    if spoil_every:
        assert stats.accepted < stats.drafted
    else:
        assert stats.acceptance == 1.0


@pytest.mark.parametrize("max_tokens", [0, 1, 2, 3, 5, 9, 17])
def test_max_tokens_is_exact(net: CausalLM, max_tokens: int) -> None:
    req = GenerationRequest(ids_of(QUOTING), max_tokens=max_tokens, sampling=GREEDY)
    req = replace(req, ignore_eos=True)
    want, offset = plain(net, req)
    ref = req.prompt_ids + [e.token_id for e in want] + [0] * 20  # drafts may run long
    got = spec(net, req, drafter=ScriptedDrafter(ref))
    assert got == (want, offset)
    assert len(want) == max_tokens
    if want:
        assert want[-1].finish_reason is FinishReason.LENGTH


def test_stop_token_inside_an_accepted_draft(net: CausalLM) -> None:
    req = GenerationRequest(ids_of(PLAIN), max_tokens=40, sampling=GREEDY, ignore_eos=True)
    free, _ = plain(net, req)
    stop = free[6].token_id
    req = replace(req, stop_ids=frozenset({stop}), ignore_eos=False)
    want, offset = plain(net, req)
    assert want[-1].finish_reason is FinishReason.STOP and want[-1].eog
    ref = req.prompt_ids + [e.token_id for e in free]
    assert spec(net, req, drafter=ScriptedDrafter(ref)) == (want, offset)
    assert spec(net, req) == (want, offset)


def test_context_limit_ends_as_the_plain_loop(net: CausalLM) -> None:
    req = GenerationRequest(ids_of(QUOTING), max_tokens=100, sampling=GREEDY, ignore_eos=True)
    n_ctx = len(req.prompt_ids) + 13
    want, offset = plain(net, req, n_ctx)
    assert want[-1].finish_reason is FinishReason.LENGTH and len(want) < 100
    ref = req.prompt_ids + [e.token_id for e in want] + [0] * 20
    assert spec(net, req, n_ctx, drafter=ScriptedDrafter(ref)) == (want, offset)


def test_closing_early_leaves_the_cache_as_the_plain_loop(net: CausalLM) -> None:
    req = GenerationRequest(ids_of(QUOTING), max_tokens=40, sampling=GREEDY, ignore_eos=True)
    want, _ = plain(net, req)
    ref = req.prompt_ids + [e.token_id for e in want]
    cache = net.make_cache(256)
    logits = prefill(net, cache, req.prompt_ids)
    gen = speculative_decode(
        net,
        req,
        cache,
        req.prompt_ids,
        logits,
        Timings(),
        drafter=ScriptedDrafter(ref),
        row_cost=0.0,
    )
    got = [next(gen) for _ in range(5)]
    gen.close()
    assert got == want[:5]
    assert cache.offset == len(req.prompt_ids) + 4  # the fifth token was never fed back


def test_seeded_sampling_and_top_logprobs_are_identical(net: CausalLM) -> None:
    params = SamplingParams(temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    req = GenerationRequest(ids_of(QUOTING), max_tokens=30, sampling=params, top_logprobs=3)
    req = replace(req, ignore_eos=True)
    want, offset = plain(net, req)
    ref = req.prompt_ids + [e.token_id for e in want]
    assert spec(net, req, drafter=ScriptedDrafter(ref, spoil_every=2)) == (want, offset)
    assert want[0].top_logprobs is not None


def test_a_constraint_sees_only_the_tokens_drawn(net: CausalLM) -> None:
    from corral.engine.constraints import AllowedTokens

    allowed = set(ids_of("abc "))
    req = GenerationRequest(ids_of(QUOTING), max_tokens=40, sampling=GREEDY, ignore_eos=True)
    want, offset = plain(net, replace(req, constraint=AllowedTokens(allowed, 25)))
    assert want[-1].finish_reason is FinishReason.STOP and len(want) == 25
    ref = req.prompt_ids + [e.token_id for e in want] + [0] * 20
    got = spec(
        net, replace(req, constraint=AllowedTokens(allowed, 25)), drafter=ScriptedDrafter(ref)
    )
    assert got == (want, offset)


# -- where it applies -----------------------------------------------------------------------


def test_applies_only_where_rows_are_exact(
    net: CausalLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_gguf import write_tiny

    req = GenerationRequest([5, 6, 7])
    assert speculation_applies(net, req, net.make_cache(16))
    assert not speculation_applies(net, replace(req, speculative=False), net.make_cache(16))
    assert not speculation_applies(net, req, net.make_cache(16, batch=2))
    assert not speculation_applies(net, req, object())  # a recurrent state, say
    f32 = corral.load(write_tiny(tmp_path / "f32.gguf", qtype=Q.F32)).net
    assert not speculation_applies(f32, req, f32.make_cache(16))  # float GEMM rows vary
    monkeypatch.setenv("CORRAL_SPECULATIVE", "0")
    assert not speculation_applies(net, req, net.make_cache(16))


def test_model_generate_same_text_and_prefix_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_gguf import write_tiny

    model = corral.load(write_tiny(tmp_path / "m.gguf", qtype=Q.Q8_0, context=256))
    kw = {"max_tokens": 40, "temperature": 0.0, "ignore_eos": True}
    on = [model.generate(QUOTING, **kw).text, model.generate(QUOTING + " again", **kw).text]
    held = list(model._cached_ids)
    assert model._cache is not None and len(held) == model._cache.offset
    monkeypatch.setenv("CORRAL_SPECULATIVE", "0")
    off_model = corral.load(model.info.path)
    off = [
        off_model.generate(QUOTING, **kw).text,
        off_model.generate(QUOTING + " again", **kw).text,
    ]
    assert on == off
    assert held == off_model._cached_ids


@pytest.mark.realmodel
def test_smollm2_quoting_chat_is_identical_and_accepts_drafts(smollm2_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared machine: one thread is steadier than two
    try:
        model = corral.load(smollm2_path, n_ctx=512)
        text = (
            "The old lighthouse stood on the edge of the cliff for more then two hundred years. "
            "Every night its keeper climbed the narow stairs and lit the great lamp."
        )
        msg = {"role": "user", "content": f"Repeat with the typos fixed:\n\n{text}"}
        ids = model.chat_prompt_ids([msg])
        eog = model.tokenizer.eog_ids
        req = GenerationRequest(ids, max_tokens=32, sampling=GREEDY, stop_ids=eog)
        want = plain(model.net, req, 512)
        stats = DraftStats()
        assert spec(model.net, req, 512, stats=stats) == want
        assert stats.acceptance > 0.3 and stats.forwards < len(want[0]) * 0.7
    finally:
        torch.set_num_threads(threads)
