"""Skeleton: replace."""

def localities(adata, *args, **kwargs):
    raise NotImplementedError


def neighborhood_retention(adata, *args, **kwargs):
    raise NotImplementedError


