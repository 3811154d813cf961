"""Retrieval routes over RAG collections (corral.rag): POST /retrieval/query, and the
ChatGPT retrieval plugin's /upsert, /upsert-file, /query and /delete."""
