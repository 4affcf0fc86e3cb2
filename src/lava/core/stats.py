"""ORA and metadata association statistics (METHOD.md section 5). OWNER: biology helper. Skeleton: replace."""

from __future__ import annotations


def benjamini_hochberg(pvalues):
    raise NotImplementedError


def ora(module_genes, gene_sets, background):
    raise NotImplementedError


def association_test(presence, values, *, method="pearson"):
    raise NotImplementedError
