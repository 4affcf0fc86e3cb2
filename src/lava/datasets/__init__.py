"""Datasets: loaders with a cache and pinned sha256, and a synthetic generator with ground truth. OWNER: datasets helper."""
