"""The engine: token ids in, typed generation events out. It never sees text."""
