"""Formatting helpers and the parameter table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.cli.output import WordWrapper, human_age, human_count, human_size, table
from corral.cli.params import generate_kwargs, max_tokens, parse_param


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 KB"),
        (98_362_432, "98 MB"),
        (2_530_000_000, "2.5 GB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


def test_human_count() -> None:
    assert human_count(56) == "56"
    assert human_count(134_515_008) == "134.52M"
    assert human_count(2_614_341_888) == "2.61B"


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (timedelta(seconds=5), "Less than a minute ago"),
        (timedelta(minutes=1, seconds=30), "About a minute ago"),
        (timedelta(minutes=42), "42 minutes ago"),
        (timedelta(hours=3), "3 hours ago"),
        (timedelta(days=1), "About a day ago"),
        (timedelta(days=20), "2 weeks ago"),
        (timedelta(days=100), "3 months ago"),
        (timedelta(days=800), "2 years ago"),
    ],
)
def test_human_age(ago: timedelta, text: str) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert human_age(now - ago, now) == text


def test_table_aligns_columns() -> None:
    out = table(["NAME", "ID"], [["long-name:latest", "abc"], ["x", "defgh"]])
    lines = out.splitlines()
    assert lines[0] == "NAME                ID"
    assert {line.index(col) for line, col in zip(lines, ["ID", "abc", "defgh"], strict=True)} == {
        20
    }


def wrap_all(width: int, pieces: list[str]) -> str:
    w = WordWrapper(width)
    return "".join(w.feed(p) for p in pieces) + w.flush()


def test_word_wrap_breaks_between_words_across_pieces() -> None:
    text = wrap_all(12, ["The qu", "ick brown f", "ox jumps over", " the lazy dog"])
    assert text.splitlines() == ["The quick ", "brown fox ", "jumps over ", "the lazy dog"]
    assert all(len(line) <= 12 for line in text.splitlines())


def test_word_wrap_keeps_newlines_and_splits_huge_words() -> None:
    assert wrap_all(10, ["ab\ncd"]) == "ab\ncd"
    text = wrap_all(10, ["x" * 25])
    assert text.replace("\n", "") == "x" * 25
    assert max(len(line) for line in text.splitlines()) == 10


def test_parameter_values() -> None:
    assert parse_param("Temperature", " 0.5 ") == ("temperature", 0.5)
    assert parse_param("stop", '"a b" c') == ("stop", ["a b", "c"])
    with pytest.raises(ValueError, match="top_k: '1.5' is not an integer"):
        parse_param("top_k", "1.5")


def test_generate_kwargs_leave_out_session_parameters() -> None:
    params = {"temperature": 0.0, "num_predict": 5, "num_ctx": 256, "seed": 1}
    assert generate_kwargs(params) == {"temperature": 0.0, "seed": 1}
    assert max_tokens(params, 256) == 5
    assert max_tokens({"num_predict": -1}, 256) == 256
    assert max_tokens({}, 128) == 128
