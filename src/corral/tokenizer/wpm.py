"""BERT WordPiece (`tokenizer.ggml.model` = "bert") from GGUF metadata.

llama.cpp's converter stores the WordPiece vocabulary in "phantom space" form: a word-start
piece "the" becomes "\u2581the", a continuation "##ing" becomes "ing", and bracketed specials
("[CLS]") stay as they are. `wordpiece_from_gguf` undoes that mapping and rebuilds the
tokenizer that the model's tokenizer.json describes (BERT normalizer: clean text, split CJK
characters, lowercase and strip accents; BERT pre-tokenizer; greedy longest-match WordPiece;
"[CLS] text [SEP]"), with the Hugging Face `tokenizers` library, so a GGUF gives the very ids
of the folder it was converted from.

llama.cpp's own WPM loop differs from that on a few inputs (it keeps combining accents after
NFD, for one); the ids of tokenizer.json are the ones the model was trained with, so those win.
llama.cpp always lowercases WPM text, and so does this.

`WPMTokenizer` wraps it in corral's `Tokenizer` interface, so `load_tokenizer` (and the
llama.cpp-style /tokenize route) work for encoder GGUFs too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.errors import UnsupportedError
from corral.tokenizer.base import Tokenizer
from corral.tokenizer.vocab import Vocab, VocabType, build_vocab

if TYPE_CHECKING:
    import tokenizers

PHANTOM_SPACE = "\u2581"
CONTINUATION = "##"
MAX_CHARS_PER_WORD = 100  # BERT's default: longer words become [UNK]


def _is_bracketed(text: str) -> bool:
    # the converter leaves "[CLS]", "[unused0]", ... unprefixed
    return len(text) > 1 and text.startswith("[") and text.endswith("]")


def unphantom(text: str) -> str:
    """A GGUF WPM token text -> its WordPiece vocab.txt form ("\u2581the" -> "the",
    "ing" -> "##ing", "[CLS]" -> "[CLS]")."""
    if _is_bracketed(text):
        return text
    if text.startswith(PHANTOM_SPACE):
        return text[len(PHANTOM_SPACE) :]
    return CONTINUATION + text


def phantom(text: str) -> str:
    """The inverse of `unphantom`: what llama.cpp's converter stores for a vocab.txt token."""
    if _is_bracketed(text):
        return text
    if text.startswith(CONTINUATION):
        return text[len(CONTINUATION) :]
    return PHANTOM_SPACE + text


def _special_id(meta: dict, keys: tuple[str, ...], text: str, vocab: dict[str, int]) -> int:
    for key in keys:
        v = meta.get("tokenizer.ggml." + key)
        if v is not None and 0 <= int(v) < len(vocab):
            return int(v)
    if text in vocab:
        return vocab[text]
    raise UnsupportedError(f"this WordPiece vocabulary has no {text} token")


def wordpiece_from_gguf(meta: dict) -> tokenizers.Tokenizer:
    """The Hugging Face tokenizer equivalent to the GGUF's WordPiece vocabulary."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    texts = [unphantom(t) for t in meta["tokenizer.ggml.tokens"]]
    vocab: dict[str, int] = {}
    for i, t in enumerate(texts):
        vocab.setdefault(t, i)  # a duplicate keeps its first id, as llama.cpp reports it
    types = meta.get("tokenizer.ggml.token_type")
    unk = _special_id(meta, ("unknown_token_id",), "[UNK]", vocab)
    cls = _special_id(meta, ("cls_token_id", "bos_token_id"), "[CLS]", vocab)
    sep = _special_id(meta, ("seperator_token_id", "eos_token_id"), "[SEP]", vocab)
    tok = Tokenizer(
        models.WordPiece(vocab, unk_token=texts[unk], max_input_chars_per_word=MAX_CHARS_PER_WORD)
    )
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION, cleanup=True)
    # Control tokens are matched as whole texts before normalizing, as tokenizer.json's
    # "added_tokens" are; user-defined ones too, but as ordinary (non-special) tokens.
    if types is not None:
        specials, added = [], []
        for i, ty in enumerate(types):
            if int(ty) == 3:  # CONTROL
                specials.append(AddedToken(texts[i], special=True, normalized=False))
            elif int(ty) == 4:  # USER_DEFINED
                added.append(AddedToken(texts[i], special=False, normalized=False))
        tok.add_special_tokens(specials)
        tok.add_tokens(added)
    cls_t, sep_t = texts[cls], texts[sep]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls_t} $A {sep_t}",
        pair=f"{cls_t} $A {sep_t} $B:1 {sep_t}:1",
        special_tokens=[(cls_t, cls), (sep_t, sep)],
    )
    return tok


class WPMTokenizer(Tokenizer):
    """corral's Tokenizer interface over a GGUF WordPiece vocabulary.

    `encode(add_special=True)` gives "[CLS] ... [SEP]", as llama.cpp does for BERT models.
    """

    def __init__(self, vocab: Vocab, hf: tokenizers.Tokenizer) -> None:
        super().__init__(vocab)
        self.hf = hf
        ids = vocab.token_to_id
        self.cls_id = vocab.id("bos") if vocab.id("bos") is not None else ids.get("[CLS]")
        self.sep_id = vocab.id("sep") if vocab.id("sep") is not None else ids.get("[SEP]")

    @classmethod
    def from_metadata(cls, meta: dict) -> WPMTokenizer:
        """Build from GGUF metadata (the dict `open_gguf` gives)."""
        hf = wordpiece_from_gguf(meta)
        # `partition` has already cut out the special tokens it was asked to parse; the
        # rest, "[CLS]" included, is plain text to WordPiece
        hf.encode_special_tokens = True
        patched = dict(meta)
        # llama.cpp reads the CLS id as BOS for WordPiece vocabularies
        if "tokenizer.ggml.bos_token_id" not in patched and "[CLS]" in hf.get_vocab():
            patched["tokenizer.ggml.bos_token_id"] = hf.token_to_id("[CLS]")
        vocab = build_vocab(patched, VocabType.WPM, clean_spaces=False, add_bos_default=True)
        return cls(vocab, hf)

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        out: list[int] = []
        if add_special and self.cls_id is not None:
            out.append(self.cls_id)
        if text:
            self._encode_fragments(self.partition(text, parse_special), out)
        if add_special and self.sep_id is not None:
            out.append(self.sep_id)
        return out

    def _encode_fragments(self, frags: list[str | int], out: list[int]) -> None:
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
            else:
                out.extend(self.hf.encode(frag, add_special_tokens=False).ids)

    def _normal_piece(self, text: str) -> bytes:
        # a word start renders with its space, a continuation glues on
        return text.replace(PHANTOM_SPACE, " ").encode()
