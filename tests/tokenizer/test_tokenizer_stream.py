"""The streaming decoder never emits part of a UTF-8 character."""

from __future__ import annotations

from synth_vocab import GPT2_BYTE_CHARS, bpe_metadata, ids_of, spm_metadata

from corral.tokenizer import load_tokenizer


def _byte_ids(tok, text: str) -> list[int]:
    return ids_of(tok, *(f"<0x{b:02X}>" for b in text.encode()))


def test_emoji_over_byte_tokens_comes_out_whole() -> None:
    tok = load_tokenizer(spm_metadata({"a": -1}))
    stream = tok.stream_decoder()
    chunks = [stream.push(t) for t in _byte_ids(tok, "😀")]
    assert chunks == ["", "", "", "😀"]
    assert stream.flush() == ""


def test_chunks_are_always_whole_characters() -> None:
    text = "a😀b👍🏽é中"
    tok = load_tokenizer(spm_metadata({"a": -1, "b": -1}))
    ids = [i for ch in text for i in (ids_of(tok, ch) if ch in "ab" else _byte_ids(tok, ch))]
    stream = tok.stream_decoder()
    chunks = [stream.push(t) for t in ids] + [stream.flush()]
    for chunk in chunks:
        assert "\ufffd" not in chunk
        chunk.encode("utf-8")  # no lone surrogates either
    assert "".join(chunks) == text
    assert chunks[0] == "a" and chunks[1:4] == ["", "", ""]


def test_byte_level_bpe_pieces_of_one_character() -> None:
    tok = load_tokenizer(bpe_metadata())
    ids = ids_of(tok, *(GPT2_BYTE_CHARS[b] for b in "🎉!".encode()))
    assert tok.encode("🎉!") == ids
    stream = tok.stream_decoder()
    assert [stream.push(t) for t in ids] == ["", "", "", "🎉", "!"]


def test_incomplete_tail_is_flushed_as_replacement() -> None:
    tok = load_tokenizer(spm_metadata({"a": -1}))
    stream = tok.stream_decoder()
    assert stream.push(ids_of(tok, "a")[0]) == "a"
    assert stream.push(_byte_ids(tok, "é")[0]) == ""
    assert stream.flush() == "\ufffd"
    assert stream.push(ids_of(tok, "a")[0]) == "a"  # usable again after flush


def test_control_tokens_shown_only_when_asked() -> None:
    tok = load_tokenizer(spm_metadata({"a": -1}))
    assert tok.stream_decoder().push(1) == ""
    assert tok.stream_decoder(render_special=True).push(1) == "<s>"
