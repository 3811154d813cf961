"""Code-completion routes: llama.cpp `/infill` and Tabby's `/v1/completions` (segments)."""
