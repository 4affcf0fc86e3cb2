"""Pure numerics on arrays (numpy, scipy, torch). No AnnData, no logging, no global state.

Usable on its own for plain arrays: embeddings of any model, images, expression matrices.
"""

from .amf import (
    AMFConfig,
    AMFResult,
    amf_loss,
    complete_modules,
    fit_amf,
    locality_weights,
    prune_nested_modules,
    reconstruct,
)
from .correlations import CorrelationSupport, correlation_support, locality_correlations, n_pairs, pair_indices
from .metrics import (
    copresence_entropy,
    core_features,
    duplicate_modules,
    feature_scores,
    gene_groups,
    locality_similarity,
    overestimation_ratio,
    placement_stability,
    presence_weighted_average,
    reconstruction_similarity,
)
from .nmf import fit_nmf
from .placement import (
    LocalityPlacement,
    n_localities,
    neighborhood_centrality,
    neighborhood_retention,
    place_localities,
)
from .refine import refine_presence
from .selection import ModelSelection, fit_runs, select_n_modules
from .stats import association_test, benjamini_hochberg, ora

__all__ = [
    "AMFConfig",
    "AMFResult",
    "CorrelationSupport",
    "LocalityPlacement",
    "ModelSelection",
    "amf_loss",
    "association_test",
    "benjamini_hochberg",
    "complete_modules",
    "copresence_entropy",
    "core_features",
    "correlation_support",
    "duplicate_modules",
    "feature_scores",
    "fit_amf",
    "fit_nmf",
    "fit_runs",
    "gene_groups",
    "locality_correlations",
    "locality_similarity",
    "locality_weights",
    "n_localities",
    "n_pairs",
    "neighborhood_centrality",
    "neighborhood_retention",
    "ora",
    "overestimation_ratio",
    "pair_indices",
    "place_localities",
    "placement_stability",
    "presence_weighted_average",
    "prune_nested_modules",
    "reconstruct",
    "reconstruction_similarity",
    "refine_presence",
    "select_n_modules",
]
