"""Retrieval routes over RAG collections (corral.rag): POST /retrieval/query."""
