"""The ollama-compatible API under /api/."""
