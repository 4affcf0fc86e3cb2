"""Association of module presence with sample annotations (METHOD.md section 5): :func:`lava.tl.associate`."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._compat import as_generator, as_seed
from .._docs import doc_params
from .._store import read_amf, read_localities, store_step
from .._validate import check_not_view, check_positive
from ..core.stats import (
    association_test,
    benjamini_hochberg,
    empirical_pvalue,
    locality_means,
    membership_matrix,
)


def _obs_column(adata, name: str, what: str) -> pd.Series:
    if not isinstance(name, str):
        msg = f"{what} must be the name of an adata.obs column, got {type(name).__name__}."
        raise TypeError(msg)
    if name not in adata.obs.columns:
        cols = list(map(str, adata.obs.columns))
        shown = ", ".join(map(repr, cols[:10])) + (", ..." if len(cols) > 10 else "")
        msg = f"no column {name!r} in adata.obs; available: {shown or 'none'}. Pass {what}=... naming one."
        raise KeyError(msg)
    return adata.obs[name]


def _label_matrix(column: pd.Series, groupby: str) -> tuple[np.ndarray, list[str], bool]:
    """Per-sample values (E, K): category indicators, or the numeric column; the category names; whether numeric."""
    is_numeric = (
        not isinstance(column.dtype, pd.CategoricalDtype)
        and pd.api.types.is_numeric_dtype(column.dtype)
        and not pd.api.types.is_bool_dtype(column.dtype)
    )
    if is_numeric:
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable dtypes: <NA> -> NaN
        if not np.all(np.isfinite(values)):
            n_bad = int(np.sum(~np.isfinite(values)))
            msg = f"adata.obs[{groupby!r}] has {n_bad} NaN or infinite values; fill or drop those samples first."
            raise ValueError(msg)
        return values[:, None], [groupby], True
    cat = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category")
    counts = cat.value_counts(sort=False)
    unused = [str(c) for c, n in counts.items() if n == 0]
    if unused:
        msg = (
            f"categories {unused} of adata.obs[{groupby!r}] have no samples; drop them with "
            f"adata.obs[{groupby!r}] = adata.obs[{groupby!r}].cat.remove_unused_categories()."
        )
        raise ValueError(msg)
    codes = cat.cat.codes.to_numpy()
    K = len(cat.cat.categories)
    if K == 0:
        msg = f"adata.obs[{groupby!r}] has no categories (all values missing)."
        raise ValueError(msg)
    onehot = np.zeros((codes.size, K))
    ok = codes >= 0  # missing labels count in no category
    onehot[np.flatnonzero(ok), codes[ok]] = 1.0
    return onehot, [str(c) for c in cat.cat.categories], False


#: A category in fewer localities than this, or than this share of all localities, gets a warning (few localities
#: carry its associations, possibly all from one donor).
FEW_LOCALITIES = 5
FEW_LOCALITIES_FRACTION = 0.1
#: obs column names that usually name the unit cells cluster by in an embedding: candidates for ``groups=``.
GROUP_COLUMN_NAMES = re.compile(r"donor|sample|patient|individual|subject|batch|project|experiment|orig\.?ident", re.I)


def _group_candidates(obs: pd.DataFrame, groupby: str) -> list[tuple[str, int, bool]]:
    """Return the obs columns that look like a donor or sample column for ``groups=``: ``(name, n_groups, nests)``.

    A candidate has 2 < n_groups < n_obs / 10 groups and either a name such as donor, sample, patient or batch
    (:data:`GROUP_COLUMN_NAMES`) or groups that nest ``groupby`` (each group holds one value of it, and there are
    more groups than values: the annotation is a property of the groups, e.g. a disease of donors). Nesting ones
    come first.
    """
    label = obs[groupby]
    n_values = label.nunique(dropna=True)
    found = []
    for name in obs.columns:
        if name == groupby:
            continue
        column = obs[name]
        named = bool(GROUP_COLUMN_NAMES.search(str(name)))
        dtype = column.dtype
        is_label = (
            isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype)
        )
        if not (is_label or (named and pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))):
            continue
        try:  # a hint only: a column pandas cannot group (e.g. of lists) is no candidate
            n_groups = column.nunique(dropna=True)
            if not 2 < n_groups < len(obs) / 10:
                continue
            nests = n_groups > n_values and bool(
                pd.DataFrame({"g": column.to_numpy(), "y": label.to_numpy()})
                .groupby("g", observed=True, dropna=True)["y"]
                .nunique(dropna=True)
                .max()
                <= 1
            )
        except TypeError:
            continue
        if named or nests:
            found.append((str(name), int(n_groups), nests))
    return sorted(found, key=lambda item: not item[2])


def _warn_design(obs: pd.DataFrame, groupby: str, fractions: np.ndarray, categories: list[str], numeric: bool) -> None:
    """Warn when localities are weak evidence for ``groupby`` without ``groups=``, naming the column to pass.

    Two signs: categories whose samples fall in few localities (:data:`FEW_LOCALITIES`,
    :data:`FEW_LOCALITIES_FRACTION`), and an obs column that looks like the donor or sample (:func:`_group_candidates`).
    """
    candidates = _group_candidates(obs, groupby)
    name = candidates[0][0] if candidates else None
    suggestion = f"groups={name!r}, permutations=1000" if name else "groups=<the donor column>, permutations=1000"
    if not numeric:
        n_loc = fractions.shape[0]
        present = np.count_nonzero(fractions > 0, axis=0)
        few = np.flatnonzero((present < FEW_LOCALITIES) | (present < FEW_LOCALITIES_FRACTION * n_loc))
        if few.size:
            listed = ", ".join(f"{categories[k]!r} ({present[k]})" for k in few[:5]) + (", ..." if few.size > 5 else "")
            logg.warning(
                f"{few.size} {'category' if few.size == 1 else 'categories'} of adata.obs[{groupby!r}] "
                f"{'has' if few.size == 1 else 'have'} samples in fewer than {FEW_LOCALITIES} "
                f"localities or {FEW_LOCALITIES_FRACTION:.0%} of the {n_loc}: {listed}. Their associations rest on "
                "those localities alone, which may hold the cells of a single donor or sample; test at that level "
                f"with {suggestion}."
            )
    if name is None:
        return
    _, n_groups, nests = candidates[0]
    why = f"{n_groups} groups, each holding one value of {groupby!r}" if nests else f"by its name, {n_groups} groups"
    others = ", ".join(repr(c[0]) for c in candidates[1:4])
    detail = ""
    if nests and not numeric:
        labels = pd.DataFrame({"g": obs[name].to_numpy(), "y": obs[groupby].to_numpy()}).dropna()
        per_category = labels.groupby(labels["y"].astype(str))["g"].nunique()
        single = [c for c in categories if per_category.get(c, 0) == 1]
        if single:
            detail = (
                f" Categories found in a single {name!r} group ({', '.join(map(repr, single[:5]))}) cannot be told "
                "apart from that group's own state."
            )
    logg.warning(
        f"adata.obs[{name!r}] looks like the donor or sample the cells come from ({why})"
        + (f"; other candidates: {others}" if others else "")
        + ". Cells of one donor sit together in the embedding, so neighbouring localities are not independent "
        f"evidence and the parametric p-values are optimistic.{detail} Pass {suggestion} for p-values at that level."
    )


@doc_params()
def associate(
    adata: AnnData,
    groupby: str,
    *,
    min_presence: float = 0.01,
    method: Literal["pearson", "spearman"] = "spearman",
    permutations: int = 0,
    groups: str | None = None,
    rng: int | np.random.Generator | None = 0,
    key: str = "lava",
    copy: bool = False,
) -> AnnData | None:
    """Test whether each module's presence follows a sample annotation (categories or a numeric value).

    For each module and each category of ``adata.obs[groupby]``: over the localities where the module's presence
    is above ``min_presence``, the Pearson and Spearman correlations between the presence and the fraction of the
    locality's samples in the category (samples with a missing label count in no category). A numeric ``groupby``
    uses the locality's mean value instead (one row per module, ``category`` = ``groupby``). p-values are two-sided;
    ``p_adjusted`` is the Benjamini-Hochberg adjustment of the ``method`` p-values over all modules x categories.
    A module present in fewer than 3 localities gets NaN statistics (``n_localities`` says how many it had).

    Why Spearman by default (the paper reports both): presence is bounded by 1 and often saturates there, and a
    category's fraction is 0 in most localities, so one or two localities can carry a Pearson correlation alone and
    its parametric p-value then claims far more than they show. On pbmc68k_reduced (M = 7) a cytotoxic module present
    in 5 localities, 4 at presence 1.00 and one at 0.011 (the only one with B cells, 5%), gave Pearson r = -1.00,
    p = 2e-9 with the B-cell fraction, and Spearman r = -0.71, p = 0.18. Ranks bound what one locality can do;
    ``method="pearson"`` adjusts the Pearson p-values instead.

    The parametric p-values assume independent localities. They are optimistic when localities overlap (o > 1
    shares samples) and, above all, when the samples of one donor (patient, batch, animal) cluster together in the
    embedding: then a handful of donors, not hundreds of localities, carry the evidence. With ``permutations=N``
    and ``groups="donor"`` the null keeps that structure: each donor's label summary (its fraction of samples per
    category, or its mean for a numeric annotation) is reassigned to another donor by a random permutation of the
    donors, each locality's fraction is recomputed as the sample-count-weighted average of its donors' reassigned
    summaries, and the empirical two-sided p-value is ``(1 + #{|r_perm| >= |r|}) / (N + 1)``. For a label that is
    constant within donors (disease, sex, site) this is exactly a permutation of the labels among donors. For a label
    that varies within donors, whole donor blocks are moved: the null spreads each donor's composition evenly over
    the cells of the donor it lands on, while the observed r uses the cells' own labels. The p-value then asks
    whether the association is stronger than moving whole donors around produces: one carried by cells within
    donors (a cell-type label) stays significant, one carried by a few donors does not. With only a few
    donors the permutations are few and the smallest reachable p-value is large, which is the honest answer.
    Without ``groups``, single samples are permuted (a plain permutation test, no better than the parametric p when
    donors cluster).

    Without ``groups``, two warnings name what to pass: when a category's samples fall in fewer than 5 localities
    (or 10% of them), so that its associations rest on those few; and when ``adata.obs`` has a column that looks like
    the donor or sample of the cells: 2 < n_groups < n_obs / 10 groups and a name such as donor, sample, patient,
    batch, project or experiment, or groups that each hold one value of ``groupby`` (a property of donors, such as
    a disease). ``n_localities`` in the table says how many localities entered each module's test.

    Parameters
    ----------
    {adata}
    groupby
        Column of ``adata.obs``: categorical (or string/bool) for fractions per category, numeric for means.
    min_presence
        A locality enters a module's test when the module's presence there is above this.
    method
        Which correlation's p-value is adjusted into ``p_adjusted`` (and used for permutations): ``"spearman"``
        (default) or ``"pearson"``. Both correlations and their p-values are always reported.
    permutations
        Number of permutations for empirical p-values (0: none).
    groups
        Column of ``adata.obs`` naming the donor (or other unit whose samples cluster) to permute at; needs
        ``permutations > 0``. None permutes single samples.
    {rng}
    {key}
    {copy}

    Returns
    -------
    ``None`` (or a copy with ``copy=True``) and writes ``adata.uns[key]["association"]``: a DataFrame with one row
    per (module, category), columns ``module`` (int), ``groupby`` (str), ``category`` (str), ``n_localities`` (int),
    ``pearson_r``, ``pearson_p``, ``spearman_r``, ``spearman_p``, ``p_adjusted`` (float), and with permutations
    ``permutation_p`` and ``permutation_p_adjusted`` (float, BH over all rows). Read it with
    :func:`lava.get.association`.
    """
    check_not_view(adata, copy)
    presence = np.asarray(read_amf(adata, key, require=("presence",)).presence, dtype=np.float64)
    loc = read_localities(adata, key)
    indices = loc.indices
    if presence.shape[0] != indices.shape[0]:
        msg = (
            f"stored presence {presence.shape} and locality indices {indices.shape} disagree; rerun lava.tl.amf "
            f"(key={key!r})."
        )
        raise ValueError(msg)
    loc.check_samples(adata.n_obs)
    column = _obs_column(adata, groupby, "groupby")
    if method not in ("pearson", "spearman"):
        msg = f"method must be 'pearson' or 'spearman', got {method!r}."
        raise ValueError(msg)
    check_positive(min_presence, "min_presence", allow_zero=True)
    check_positive(permutations, "permutations", integer=True, allow_zero=True)
    if groups is not None:
        if permutations == 0:
            msg = "groups is only used by permutation tests; pass permutations=1000 (say) as well, or groups=None."
            raise ValueError(msg)
        group_col = _obs_column(adata, groups, "groups")
        if group_col.isna().any():
            msg = f"adata.obs[{groups!r}] has {int(group_col.isna().sum())} missing values; every sample needs a group."
            raise ValueError(msg)
        codes, uniques = pd.factorize(group_col, sort=True)
        if uniques.size < 2:
            msg = f"adata.obs[{groups!r}] has a single group; permutations need at least 2."
            raise ValueError(msg)
    values, categories, numeric = _label_matrix(column, groupby)
    seed = as_seed(rng)

    start = logg.info(f"associating {presence.shape[1]} modules with {groupby!r}")
    n_loc = indices.shape[1]
    fractions = locality_means(indices, values)  # (l, K)
    if groups is None:
        _warn_design(adata.obs, groupby, fractions, categories, numeric)
    M, K = presence.shape[1], len(categories)
    stats_ = {name: np.full((M, K), np.nan) for name in ("pearson_r", "pearson_p", "spearman_r", "spearman_p")}
    n_used = np.zeros(M, dtype=np.int64)
    selections = []
    for m in range(M):
        sel = np.flatnonzero(presence[:, m] > min_presence)
        selections.append(sel)
        n_used[m] = sel.size
        if sel.size < 3:
            continue
        for meth in ("pearson", "spearman"):
            r, p = association_test(presence[sel, m], fractions[sel], method=meth)
            stats_[f"{meth}_r"][m], stats_[f"{meth}_p"][m] = r, p
    p_adj = benjamini_hochberg(stats_[f"{method}_p"])

    perm_p = None
    if permutations:
        gen = as_generator(seed)
        if groups is None:
            counts = membership_matrix(indices, adata.n_obs)  # (l, E): every sample its own group
            summary = values
        else:
            G = uniques.size
            onehot_g = sparse.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)), shape=(codes.size, G))
            counts = membership_matrix(indices, adata.n_obs) @ onehot_g  # (l, G) samples per donor per locality
            size_g = np.asarray(onehot_g.sum(axis=0)).ravel()
            summary = np.asarray(onehot_g.T @ values) / size_g[:, None]  # (G, K) donor composition / mean
            varies = np.any(np.abs(values - summary[codes]) > 1e-12)
            if varies:
                logg.info(f"    {groupby!r} varies within {groups!r}: permuting whole donor blocks (compositions)")
            if G <= 10 and np.prod(np.arange(1, G + 1, dtype=np.float64)) < permutations:
                logg.warning(f"only {G} groups: at most {int(np.prod(np.arange(1, G + 1)))} distinct permutations.")
        n_units = summary.shape[0]
        # bound the (units x K x b) permuted summaries and the (l x K x b) null fractions to ~2**25 values each
        batch = int(max(1, min(permutations, 2**25 // max(1, max(indices.shape[0], n_units) * K))))
        null = np.full((M, K, permutations), np.nan)
        done = 0
        while done < permutations:
            b = min(batch, permutations - done)
            perms = np.stack([gen.permutation(n_units) for _ in range(b)])  # (b, units)
            stacked = np.transpose(summary[perms], (1, 2, 0)).reshape(n_units, K * b)
            null_frac = np.asarray(counts @ stacked).reshape(-1, K, b) / n_loc  # (l, K, b)
            for m in range(M):
                sel = selections[m]
                if sel.size >= 3:
                    null[m, :, done : done + b] = association_test(presence[sel, m], null_frac[sel], method=method)[0]
            done += b
        perm_p = empirical_pvalue(stats_[f"{method}_r"], null)

    table = pd.DataFrame(
        {
            "module": np.repeat(np.arange(M, dtype=np.int64), K),
            "groupby": np.full(M * K, groupby, dtype=object),
            "category": np.asarray(categories * M, dtype=object),
            "n_localities": np.repeat(n_used, K),
            **{name: arr.ravel() for name, arr in stats_.items()},
            "p_adjusted": p_adj.ravel(),
        }
    )
    if perm_p is not None:
        table["permutation_p"] = perm_p.ravel()
        table["permutation_p_adjusted"] = benjamini_hochberg(perm_p).ravel()
    params = {
        "groupby": groupby,
        "numeric": bool(numeric),
        "min_presence": float(min_presence),
        "method": method,
        "permutations": int(permutations),
        "groups": groups,
        "rng": seed,
    }
    if copy:
        adata = adata.copy()
    store_step(adata, key, "association", table, params)
    best = table.loc[table["p_adjusted"].idxmin()] if table["p_adjusted"].notna().any() else None
    logg.finished(
        start,
        f"strongest: module {best['module']} ~ {best['category']} ({method} r = {best[f'{method}_r']:.2f}, "
        f"p_adjusted = {best['p_adjusted']:.2g})"
        if best is not None
        else "no module is present in 3 or more localities",
    )
    return adata if copy else None
