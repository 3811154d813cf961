"""Chains: prompt templates with variables, sequential chains, map-reduce summarization.

    from corral.chains import LLMStep, PromptTemplate, SequentialChain, summarize

Everything runs on a loaded `corral.Model` (its `chat` / `generate`); nothing here imports
torch, so building templates and chains is cheap. Modules: `prompt` (PromptTemplate, Jinja2
in corral's bounded sandbox), `sequential` (LLMStep, FunctionStep, SequentialChain),
`summarize` (MapReduceSummarizer behind `corral summarize`).
"""

from __future__ import annotations

from corral.chains.prompt import PromptTemplate
from corral.chains.sequential import FunctionStep, LLMStep, SequentialChain, complete
from corral.chains.summarize import MapReduceSummarizer, Progress, Summary, summarize

__all__ = [
    "FunctionStep",
    "LLMStep",
    "MapReduceSummarizer",
    "Progress",
    "PromptTemplate",
    "SequentialChain",
    "Summary",
    "complete",
    "summarize",
]
