"""Converters for the pre-llama families: gptj, bloom, mpt, falcon."""

from __future__ import annotations
