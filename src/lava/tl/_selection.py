"""Skeleton: replace."""

def select_n_modules(adata, *args, **kwargs):
    raise NotImplementedError


def refine_presence(adata, *args, **kwargs):
    raise NotImplementedError


