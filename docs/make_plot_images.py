"""Draw every ``lava.pl`` plot for docs/plotting.md: scanpy's pbmc68k_reduced, and MNIST digits for the image plots.

Run from the repository root (about ten minutes on two busy cores; most of it model selection)::

    LAVA_DATA_DIR=/path/to/cache python docs/make_plot_images.py

The cache must hold ``go_bp_human.gmt`` (the enrichment plot) and ``mnist.npz`` (``module_image``); a plot whose
data is missing is skipped with a message. The PNGs go to ``docs/_static/plots/`` at a low resolution, so the
committed images stay small (about 0.5 MB in all).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import scanpy as sc

import lava

OUT = Path(__file__).resolve().parent / "_static" / "plots"
DPI = 60


def pbmc_pipeline() -> sc.AnnData:
    """The README's pipeline on pbmc68k_reduced, plus every optional step a plot reads."""
    adata = lava.datasets.pbmc68k_reduced()
    lava.tl.neighborhood_retention(adata, basis="X_umap", use_rep="X_pca", n_samples=None)
    lava.tl.localities(adata, basis="X_umap", n_neighbors=100, overlap=5, rng=0, progress=False)
    lava.tl.correlations(adata, features="highly_variable", progress=False)
    lava.tl.select_n_modules(adata, range(3, 13), n_runs=3, rng=0, progress=False)
    lava.tl.amf(adata, n_modules=7, rng=0, progress=False)
    lava.tl.module_genes(adata)
    try:
        gene_sets = lava.datasets.go_bp_human()
    except (FileNotFoundError, OSError) as err:
        print(f"skipping the enrichment plot: {err}")
    else:
        lava.tl.enrich(adata, gene_sets)
    lava.tl.associate(adata, "bulk_labels")
    return adata


def mnist_pipeline() -> sc.AnnData | None:
    """A small MNIST run (3000 digits) for the image-shaped plots."""
    try:
        adata = lava.datasets.mnist("umap", n_obs=3000, rng=0)
    except (FileNotFoundError, OSError) as err:
        print(f"skipping the MNIST plots: {err}")
        return None
    lava.tl.localities(adata, basis="X_umap", n_neighbors=300, overlap=4, rng=0, progress=False)
    lava.tl.correlations(adata, progress=False)
    lava.tl.amf(adata, n_modules=6, rng=0, progress=False)
    return adata


def save(fig, name: str) -> None:
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="read/write the computed pbmc AnnData here (to iterate on plots)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.cache is not None and args.cache.is_file():
        adata = sc.read_h5ad(args.cache)
    else:
        adata = pbmc_pipeline()
        if args.cache is not None:
            adata.write_h5ad(args.cache)
    print(f"pbmc68k_reduced pipeline: {time.perf_counter() - start:.0f} s")

    save(lava.pl.neighborhood_retention(adata, return_fig=True), "neighborhood_retention")
    save(lava.pl.centrality(adata, return_fig=True), "centrality")
    save(lava.pl.selection(adata, return_fig=True), "selection")
    save(lava.pl.modules(adata, ncols=5, return_fig=True), "modules")
    save(lava.pl.modules(adata, level="probe", ncols=5, return_fig=True), "modules_probe")
    save(lava.pl.copresence(adata, return_fig=True), "copresence")
    save(lava.pl.module_genes(adata, 0, n_genes=15, return_fig=True), "module_genes")
    save(lava.pl.module_network(adata, 0, top=30, return_fig=True), "module_network")
    save(lava.pl.locality(adata, 0, max_features=25, return_fig=True), "locality")
    if "enrichment" in adata.uns["lava"]:
        save(lava.pl.enrichment(adata, n_terms=3, return_fig=True), "enrichment")
    save(lava.pl.association(adata, return_fig=True), "association")

    digits = mnist_pipeline()
    if digits is not None:
        save(lava.pl.module_image(digits, return_fig=True), "module_image")
    total = sum(p.stat().st_size for p in OUT.glob("*.png"))
    print(f"{total / 1024:.0f} KiB in {OUT} after {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
