"""Skeleton: replace."""

def amf(adata, *args, **kwargs):
    raise NotImplementedError


