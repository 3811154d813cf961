"""Request bodies of the code-completion routes (pydantic), as llama.cpp and Tabby send them.

Unknown fields are ignored: editor plugins send many settings (cache_prompt, n_indent,
t_max_prompt_ms, mode, user, ...) that mean nothing here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from corral.fim import ExtraFile
from corral.server.loras import LoraScale


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InfillChunk(_Body):
    """One `input_extra` entry: another file's text (llama.cpp's field names)."""

    text: str = ""
    filename: str = "tmp"


class InfillRequest(_Body):
    """POST /infill, as llama.cpp's server takes it."""

    model: str | None = None  # corral: llama.cpp serves one model, so it has no such field
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[InfillChunk] = Field(default_factory=list)
    prompt: str = ""  # continues the prefix
    n_predict: int = -1
    temperature: float | None = Field(default=None, ge=0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    spm_infill: bool = False  # a server flag in llama.cpp; per request here
    lora: list[LoraScale] | None = None  # [{id, scale}] of the server's LoRA adapters

    def extra_files(self) -> list[ExtraFile]:
        return [ExtraFile(c.filename, c.text) for c in self.input_extra]


class Snippet(_Body):
    """Tabby's declaration / snippet: a file path and a piece of its code."""

    filepath: str = ""
    body: str = ""


class Segments(_Body):
    """Tabby's view of the code around the cursor."""

    prefix: str = ""
    suffix: str | None = None
    filepath: str | None = None
    git_url: str | None = None
    declarations: list[Snippet] = Field(default_factory=list)
    relevant_snippets_from_changed_files: list[Snippet] = Field(default_factory=list)
    relevant_snippets_from_recently_opened_files: list[Snippet] = Field(default_factory=list)
    clipboard: str | None = None

    def extra_files(self) -> list[ExtraFile]:
        """Context files, most relevant first: declarations the cursor uses, then snippets
        from changed files, then from recently opened ones (fitting drops from the end)."""
        snippets = (
            self.declarations
            + self.relevant_snippets_from_changed_files
            + self.relevant_snippets_from_recently_opened_files
        )
        return [ExtraFile(s.filepath, s.body) for s in snippets if s.body]


class DebugOptions(_Body):
    raw_prompt: str | None = None  # complete this text as is, bypassing the FIM prompt
    disable_retrieval_augmented_code_completion: bool = False


class TabbyRequest(_Body):
    """Tabby's POST /v1/completions body (told apart from OpenAI's by `segments`)."""

    model: str | None = None  # corral: Tabby's server has one model configured
    language: str | None = None
    segments: Segments | None = None
    debug_options: DebugOptions | None = None
    temperature: float | None = Field(default=None, ge=0)
    seed: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)  # corral: Tabby configures it server-side
