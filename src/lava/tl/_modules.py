"""Skeleton: replace."""

def module_genes(adata, *args, **kwargs):
    raise NotImplementedError


def enrich(adata, *args, **kwargs):
    raise NotImplementedError


def associate(adata, *args, **kwargs):
    raise NotImplementedError


