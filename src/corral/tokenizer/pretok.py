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
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"  # CJK ideographs, Hangul
# Letters of the scripts DeepSeek-LLM's tokenizer treats as words (a literal range list).
# Written as escapes: several range ends (U+1F7D, U+1FD3, U+1FDB, U+2126, U+212A, U+1FBE)
# are characters that Unicode normalization silently replaces by look-alikes, which would
# turn their ranges upside down.
_DEEPSEEK_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
    "\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a"
    "\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556"
    "\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b"
    "\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4"
    "\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128"
    "\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184"
    "\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b"
    "\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
    "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943"
)
# ASCII and full-width punctuation, curly quotes, ideographic space and full stops
_DEEPSEEK_PUNCT = "!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002"
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
        r"\s?[" + _DEEPSEEK_PUNCT + "]+",
        r"\s+$",
        _CJK,
        r"\p{N}+",
    ),
    PreType.DEEPSEEK_CODER: (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"),
    PreType.DEEPSEEK3_LLM: (
        r"\p{N}{1,3}",
        "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",  # CJK ideographs, kana
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
