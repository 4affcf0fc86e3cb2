"""Per-sample presence as ``adata.obs`` columns, for scanpy's own plots and tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._docs import doc_params
from .._store import presence_obs_key, read_amf
from .._validate import check_modules, check_not_view


@doc_params()
def presence_to_obs(
    adata: AnnData,
    *,
    modules: int | Sequence[int] | None = None,
    key: str = "lava",
    copy: bool = False,
) -> AnnData | None:
    """Copy each module's per-sample presence into ``adata.obs``, so scanpy can colour, group and plot by it.

    ``adata.obsm[f"{key}_presence"]`` (from :func:`lava.tl.amf`: a sample's mean presence over the localities that
    contain it, 0 where none does) becomes one float column per module, named ``f"{key}_presence_{m}"``::

        lava.tl.presence_to_obs(adata)
        sc.pl.umap(adata, color=["lava_presence_0", "lava_presence_1"], cmap="Reds")
        sc.pl.violin(adata, "lava_presence_0", groupby="celltype")

    The columns are a view of stored results, not a step: rerunning :func:`lava.tl.amf` (or any step it depends
    on) removes them, so a column never shows a presence the current fit does not have; call this again then.

    Parameters
    ----------
    {adata}
    modules
        Module numbers to copy (int or list); default all.
    {key}
    {copy}

    Returns
    -------
    ``None`` (or a copy with ``copy=True``) and sets, for each module ``m``:

    ``adata.obs[f"{key}_presence_{m}"]``
        float32, length ``n_obs``: column ``m`` of ``adata.obsm[f"{key}_presence"]``.
    """
    if not isinstance(adata, AnnData):
        msg = f"adata must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    check_not_view(adata, copy)
    amf = read_amf(adata, key, require=("modules", "sample_presence"))
    presence = np.asarray(amf.sample_presence, dtype=np.float32)
    chosen = check_modules(modules, amf.n_modules)

    adata = adata.copy() if copy else adata
    columns = [presence_obs_key(key, m) for m in chosen]
    for column, m in zip(columns, chosen, strict=True):
        adata.obs[column] = presence[:, m].copy()
    logg.logger.info("    added %s to adata.obs", ", ".join(map(repr, columns)))
    return adata if copy else None
