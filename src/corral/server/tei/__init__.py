"""text-embeddings-inference's API: /embed, /similarity, /tokenize, /info."""
