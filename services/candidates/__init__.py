"""Candidate service: ANN retrieval over the two-tower item embeddings in Milvus, with filters and fallbacks."""
