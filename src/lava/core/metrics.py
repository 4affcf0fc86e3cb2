"""Fit quality and reading figures (METHOD.md sections 3-5). OWNER: AMF helper. Skeleton: replace."""

from __future__ import annotations


def overestimation_ratio(C, C_hat):
    raise NotImplementedError


def reconstruction_similarity(C, C_hat, weights=None):
    raise NotImplementedError


def locality_similarity(C, C_hat):
    raise NotImplementedError


def copresence_entropy(presence, *, min_total=0.5):
    raise NotImplementedError


def presence_weighted_average(presence, modules):
    raise NotImplementedError


def placement_stability(C_a, C_b):
    raise NotImplementedError


def feature_scores(modules, n_features):
    raise NotImplementedError
