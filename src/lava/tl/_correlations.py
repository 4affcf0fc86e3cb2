"""Skeleton: replace."""

def correlations(adata, *args, **kwargs):
    raise NotImplementedError


