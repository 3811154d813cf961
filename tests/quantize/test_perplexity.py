"""Perplexity as llama.cpp computes it: chunks of n_ctx, BOS first, second half scored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import corral
from corral.cli.main import main
from corral.errors import CorralError
from corral.perplexity import perplexity, perplexity_of_ids
from tiny_gguf import write_tiny

BOS = 0


class CycleModel:
    """Predicts token (t + 1) % K after token t with probability p_late from position
    `late` on and p_early before; the rest is spread evenly over the other tokens."""

    def __init__(self, vocab: int, k: int, p_early: float, p_late: float, late: int) -> None:
        self.vocab, self.k, self.p_early, self.p_late, self.late = vocab, k, p_early, p_late, late
        self.chunks: list[list[int]] = []

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self.chunks.append(list(ids))
        out = np.empty((len(ids), self.vocab), dtype=np.float32)
        for j, t in enumerate(ids):
            p = self.p_late if j >= self.late else self.p_early
            out[j] = math.log((1 - p) / (self.vocab - 1))
            out[j, (t + 1) % self.k if t != BOS else 1] = math.log(p)
        return out


def _cycle(n: int, k: int) -> list[int]:
    return [1 + i % (k - 1) for i in range(n)]  # tokens 1..k-1, never BOS


def test_only_the_second_half_of_each_chunk_counts() -> None:
    # tokens cycle through 1..K-1, so (t + 1) % K is right except after K-1 (it predicts 0)
    k, n_ctx = 8, 16
    tokens = [BOS, *_cycle(16 * 5 - 1, k)]
    model = CycleModel(vocab=10, k=k, p_early=0.01, p_late=0.5, late=n_ctx // 2)
    r = perplexity_of_ids(model, tokens, n_ctx, bos_id=BOS)
    assert r.n_chunks == 5 and r.n_scored == 5 * (n_ctx - n_ctx // 2 - 1)
    assert all(c[0] == BOS for c in model.chunks)  # every chunk starts with BOS
    # independent count: scored positions 8..14 of each chunk predict chunk[j + 1]
    nll = []
    for c in model.chunks:
        for j in range(n_ctx // 2, n_ctx - 1):
            right = (c[j] + 1) % k == c[j + 1]
            nll.append(-math.log(0.5) if right else -math.log(0.5 / 9))
    want = math.exp(sum(nll) / len(nll))
    assert r.ppl == pytest.approx(want, rel=1e-6)
    mean = sum(nll) / len(nll)
    var = sum(v * v for v in nll) / len(nll) - mean * mean
    assert r.error == pytest.approx(want * math.sqrt(var / (len(nll) - 1)), rel=1e-6)
    assert r.running[-1] == pytest.approx(r.ppl)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity() -> None:
    class Uniform:
        def logits(self, ids: Sequence[int]) -> np.ndarray:
            return np.zeros((len(ids), 37), dtype=np.float32)

    r = perplexity_of_ids(Uniform(), [i % 37 for i in range(100)], 10)
    assert r.ppl == pytest.approx(37.0) and r.error == 0.0 and r.n_chunks == 10


def test_too_short_a_text_is_a_clear_error() -> None:
    with pytest.raises(CorralError, match="needs at least 64"):
        perplexity_of_ids(CycleModel(10, 8, 0.5, 0.5, 0), list(range(40)), 32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("ppl") / "tiny.gguf", context=256)


TEXT = "hello world, the quick brown fox jumps over the lazy dog. " * 12


def test_tiny_model_matches_a_direct_computation(tiny: Path) -> None:
    model = corral.load(tiny)
    n_ctx = 32
    r = perplexity(model, TEXT, n_ctx)
    ids = model.tokenize(TEXT)  # this vocabulary adds no BOS: chunks start with the text
    nll = []
    for c in range(len(ids) // n_ctx):
        chunk = ids[c * n_ctx : (c + 1) * n_ctx]
        logits = model.logits(chunk).astype(np.float64)
        for j in range(n_ctx // 2, n_ctx - 1):
            z = logits[j]
            nll.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[chunk[j + 1]])
    assert r.n_scored == len(nll)
    assert r.ppl == pytest.approx(math.exp(float(np.mean(nll))), rel=1e-9)


def test_cli_prints_running_and_final_estimates(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    assert main(["perplexity", str(tiny), str(text), "--ctx", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1]") and "[2]" in out
    assert "Final estimate: PPL = " in out and " +/- " in out
    assert main(["perplexity", str(tiny), str(text), "--ctx", "4096"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("Error: the text has") and "--ctx" in err


SMOL_TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a screw press adapted from the "
    "ones used to make wine. Before that, books were copied by hand, usually by monks working "
    "in monasteries, and a single volume could take months to finish. Printing changed this "
    "quickly: within fifty years, presses had spread to more than two hundred cities across "
    "Europe, and millions of books had been printed. Prices fell, more people learned to "
    "read, and ideas travelled faster than ever before. Scholars could compare identical "
    "copies of a text, which made it easier to correct mistakes and to build on the work of "
    "others. Many historians argue that the printing press helped to make the Renaissance, "
    "the Reformation and the Scientific Revolution possible, because it allowed new ideas "
    "to reach a large audience before they could be suppressed. Newspapers appeared in the "
    "seventeenth century, and by the nineteenth century steam-powered presses could print "
    "thousands of pages every hour, feeding a growing appetite for news, novels and "
    "pamphlets among readers in the expanding cities."
)


@pytest.mark.realmodel
def test_smollm2_perplexity_on_english_prose(smollm2_path: Path) -> None:
    model = corral.load(smollm2_path)
    r = perplexity(model, SMOL_TEXT, 64)
    assert r.n_chunks >= 3
    # a 135M instruct model on plain English prose: low tens, not thousands
    assert 3 < r.ppl < 60, r.ppl
    assert 0 < r.error < r.ppl
