"""Choosing M, presence refinement, NMF baseline (METHOD.md sections 3-4). OWNER: selection helper. Skeleton."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSelection:
    pass


def select_n_modules(C, n_modules=range(2, 16), *, n_runs=10, rng=0, **fit_kwargs):
    raise NotImplementedError


def refine_presence(C, modules, presence, *, tau=0.1):
    raise NotImplementedError


def fit_nmf(C, n_modules, *, rng=0):
    raise NotImplementedError
