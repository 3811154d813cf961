"""Build the C kernels (corral._qkernels); everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# OpenMP threads the kernels; -ffp-contract=off keeps float results identical between the
# AVX2 and portable paths' shared scalar code. AVX2 code is compiled per function with
# target attributes and chosen at run time, so no -march flag is needed (or wanted).
_gnu = sys.platform.startswith("linux")
# headers the kernels share (a change to one rebuilds them all)
_HEADERS = [f"src/corral/kernels/{h}.h" for h in ("half", "capi", "scratch", "vexp")]
_args = ["-O3", "-ffp-contract=off", "-fno-math-errno"] + (["-fopenmp"] if _gnu else [])

setup(
    ext_modules=[
        Extension(
            "corral._qkernels",
            ["src/corral/kernels/qkernels.c"],
            depends=_HEADERS,
            extra_compile_args=_args,
            extra_link_args=["-fopenmp"] if _gnu else [],
            # a platform without a C compiler still installs corral (the model code then
            # keeps to torch: corral.kernels.available() is False); tests/kernels fail
            # loudly there, so a broken build is not silent
            optional=True,
        ),
        # decode-step attention over the float16 KV cache (corral.kernels.attention)
        Extension(
            "corral._attn",
            ["src/corral/kernels/attention.c"],
            depends=_HEADERS,
            extra_compile_args=_args,
            extra_link_args=["-fopenmp"] if _gnu else [],
            optional=True,
        ),
        # per-row RMS norm and rotary embedding (corral.kernels.rowops)
        Extension(
            "corral._rowops",
            ["src/corral/kernels/rowops.c"],
            depends=_HEADERS,
            extra_compile_args=_args,
            extra_link_args=["-fopenmp"] if _gnu else [],
            optional=True,
        ),
        # prompt-sized quantized matmul on AMX int8 tiles (corral.kernels, QMatrix dense route)
        Extension(
            "corral._amx",
            ["src/corral/kernels/amx.c"],
            depends=["src/corral/kernels/half.h"],
            extra_compile_args=_args,
            extra_link_args=["-fopenmp"] if _gnu else [],
            optional=True,
        ),
        # every block of a llama-family decode step in one call (corral.kernels.decode); it
        # calls the three modules above through their C tables (capi.h), so it imports only
        # where they do
        Extension(
            "corral._decode",
            ["src/corral/kernels/decode.c"],
            depends=_HEADERS,
            extra_compile_args=_args,
            optional=True,
        ),
        # llama.cpp's BPE merging, tables built in ~20 ms (corral.tokenizer.bpe)
        Extension(
            "corral._bpe",
            ["src/corral/tokenizer/bpe.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        # GGUF string arrays (vocabularies) parsed in one call (corral.gguf.reader)
        Extension(
            "corral._gguf_strings",
            ["src/corral/gguf/strings.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
