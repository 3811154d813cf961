"""Pre-tokenizer table for byte-level BPE vocabularies, keyed by `tokenizer.ggml.pre`.

llama.cpp splits text into words with a list of regexes before BPE merging: each regex in
turn splits every piece left by the previous one, keeping both the matches and the text
between them as pieces. `regexes_for` returns that list for a pre-tokenizer type, written
for the Oniguruma engine inside HF `tokenizers` (which supports the \\p{..} classes and
look-aheads these patterns use), and `resolve_pre` maps the GGUF name to the type plus the
per-name flags llama.cpp sets alongside it (clean-up of spaces when decoding, whether whole
words found in the vocabulary skip merging, whether BOS is added by default).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum


class PreType(Enum):
    """The pre-tokenizer families: each one is a distinct list of split regexes."""

    DEFAULT = "default"
    LLAMA3 = "llama3"
    DEEPSEEK_LLM = "deepseek-llm"
    DEEPSEEK_CODER = "deepseek-coder"
    DEEPSEEK3_LLM = "deepseek-v3"
    FALCON = "falcon"
    STARCODER = "starcoder"
    GPT2 = "gpt-2"
    QWEN2 = "qwen2"
    CHATGLM4 = "chatglm-bpe"
    BLOOM = "bloom"
    VIKING = "viking"
    TEKKEN = "tekken"
    GPT4O = "gpt-4o"
    SEED_CODER = "seed-coder"
    BAILINGMOE = "bailingmoe"


# Building blocks shared by several families. The contraction group is spelled with explicit
# case classes (not (?i:...)) the way llama.cpp adapted it, which is what its matcher runs.
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CJK = "[一-龥ࠀ-一가-퟿]+"
# Letters of the scripts DeepSeek-LLM's tokenizer treats as words (a literal range list).
_DEEPSEEK_LETTERS = (
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼι"
    "ῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ"
    "𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃"
)
_UPPER_THEN_LOWER = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
)

_REGEXES: dict[PreType, tuple[str, ...]] = {
    PreType.DEFAULT: (
        r"[\p{P}\$\+<=>\^~\|]+",
        _GPT2,
        r"\p{N}+",
        r"[0-9][0-9][0-9]",
    ),
    PreType.LLAMA3: (_LLAMA3,),
    PreType.DEEPSEEK_LLM: (
        r"[\r\n]",
        r"\s?[" + _DEEPSEEK_LETTERS + "]+",
        r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
        r"\s+$",
        _CJK,
        r"\p{N}+",
    ),
    PreType.DEEPSEEK_CODER: (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"),
    PreType.DEEPSEEK3_LLM: (
        r"\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
        r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    PreType.FALCON: (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"),
    PreType.STARCODER: (r"\p{N}", _GPT2),
    PreType.GPT2: (_GPT2,),
    PreType.QWEN2: (_QWEN2,),
    PreType.CHATGLM4: (_LLAMA3,),
    PreType.BLOOM: (r" ?[^(\s|.,!?…。，、।۔،)]+",),
    PreType.VIKING: (r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"),
    PreType.TEKKEN: (
        _UPPER_THEN_LOWER + r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    PreType.GPT4O: (
        r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+" + _CONTRACTIONS + "?"
        r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*" + _CONTRACTIONS + "?"
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    PreType.SEED_CODER: (
        _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    PreType.BAILINGMOE: (
        r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    ),
}


@dataclass(frozen=True)
class PreConfig:
    """What one `tokenizer.ggml.pre` name means: its regex family plus per-name flags."""

    name: str
    type: PreType
    clean_spaces: bool = True  # llama.cpp's decode-time " ." / " 's" clean-up
    ignore_merges: bool = False  # a word that is itself a token skips merging
    add_bos: bool = False  # default for add_bos when the GGUF does not say


def _cfg(pre: PreType, *names: str, **flags: bool) -> dict[str, tuple[PreType, dict[str, bool]]]:
    return {n: (pre, flags) for n in names}


# GGUF name -> (family, flags), following the name switch in llama.cpp's vocabulary loader.
_NAMES: dict[str, tuple[PreType, dict[str, bool]]] = {
    **_cfg(PreType.DEFAULT, "default"),
    **_cfg(
        PreType.LLAMA3,
        *("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0"),
        *("lfm2", "jina-v5-nano"),
        ignore_merges=True,
        add_bos=True,
    ),
    **_cfg(PreType.LLAMA3, "dbrx", "smaug-bpe"),
    **_cfg(PreType.DEEPSEEK_LLM, "deepseek-llm", clean_spaces=False),
    **_cfg(PreType.DEEPSEEK_CODER, "deepseek-coder", clean_spaces=False),
    **_cfg(PreType.DEEPSEEK3_LLM, "deepseek-v3", "hunyuan-dense", clean_spaces=False),
    **_cfg(PreType.FALCON, "falcon"),
    **_cfg(PreType.STARCODER, "starcoder", "refact", "codeshell", "exaone", "minerva-7b"),
    **_cfg(PreType.STARCODER, "mellum2"),
    **_cfg(PreType.STARCODER, "command-r", "smollm", clean_spaces=False),
    **_cfg(
        PreType.GPT2,
        *("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de"),
        *("a.x-4.0", "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais"),
        *("jina-v1-en", "jina-v2-code", "roberta-bpe"),
    ),
    **_cfg(PreType.GPT2, "trillion", "granite-docling", clean_spaces=False),
    **_cfg(PreType.QWEN2, "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", clean_spaces=False),
    **_cfg(PreType.QWEN2, "hunyuan", "grok-2", "solar-open", clean_spaces=False),
    **_cfg(PreType.QWEN2, "stablelm2", "megrez"),
    **_cfg(PreType.CHATGLM4, "glm4", "chatglm-bpe"),
    **_cfg(PreType.BLOOM, "bloom", "gpt3-finnish"),
    **_cfg(PreType.BLOOM, "poro-chat", clean_spaces=False),
    **_cfg(PreType.VIKING, "viking", clean_spaces=False),
    **_cfg(PreType.TEKKEN, "tekken", clean_spaces=False, ignore_merges=True, add_bos=True),
    **_cfg(PreType.GPT4O, "gpt-4o", "llama4", "kanana2", "talkie", clean_spaces=False),
    **_cfg(PreType.SEED_CODER, "seed-coder", clean_spaces=False),
    **_cfg(PreType.BAILINGMOE, "bailingmoe", "bailingmoe2", "llada-moe", clean_spaces=False),
}


def resolve_pre(name: str | None) -> PreConfig:
    """Map a `tokenizer.ggml.pre` value to its pre-tokenizer configuration.

    A missing name means "default", as in llama.cpp. An unknown name also falls back to
    "default", with a warning: recent llama.cpp refuses to load such a file instead, but a
    user who has the file in hand would rather run it with a loud note that tokens may
    differ from the reference than not run it at all.
    """
    if not name:
        return PreConfig("default", PreType.DEFAULT)
    if name not in _NAMES:
        warnings.warn(
            f"unknown tokenizer pre-type {name!r}; using the default pre-tokenizer "
            "(token ids may differ from llama.cpp)",
            stacklevel=3,
        )
        return PreConfig(name, PreType.DEFAULT)
    pre, flags = _NAMES[name]
    return PreConfig(name, pre, **flags)


def regexes_for(pre: PreType) -> tuple[str, ...]:
    """The split regexes, applied in order, for a pre-tokenizer family."""
    return _REGEXES[pre]
