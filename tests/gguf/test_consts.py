"""corral.gguf.consts against gguf-py's tables, the reference it copies."""

from __future__ import annotations

import gguf.constants as ref

from corral.gguf import consts


def test_enums_match_gguf_py_member_by_member() -> None:
    for name in ("GGMLQuantizationType", "LlamaFileType", "GGUFValueType"):
        ours, theirs = getattr(consts, name), getattr(ref, name)
        assert [(m.name, int(m)) for m in ours] == [(m.name, int(m)) for m in theirs], name


def test_quant_sizes_match_gguf_py() -> None:
    assert {int(k): v for k, v in consts.GGML_QUANT_SIZES.items()} == {
        int(k): v for k, v in ref.GGML_QUANT_SIZES.items()
    }
    assert consts.QK_K == ref.QK_K


def test_members_mix_with_gguf_py_s() -> None:
    # code that writes files uses gguf's enums: values compare and index dicts alike
    ours, theirs = consts.GGMLQuantizationType.Q4_K, ref.GGMLQuantizationType.Q4_K
    assert ours == theirs and hash(ours) == hash(theirs)
    assert ref.GGML_QUANT_SIZES[ours] == consts.GGML_QUANT_SIZES[theirs] == (256, 144)
    assert consts.GGMLQuantizationType(theirs) is ours
