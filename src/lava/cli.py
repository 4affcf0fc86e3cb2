"""The ``lava`` command: run the whole pipeline on an ``.h5ad`` file, or a demo on scanpy's ``pbmc68k_reduced``.

``lava run INPUT.h5ad --basis X_umap --n-neighbors 500 --overlap 3 --n-modules 9 --out OUT.h5ad --figures DIR``
places localities over the embedding, computes the feature-pair correlations, fits the modules (AMF), extracts
each module's features and, when asked, associates presence with a sample annotation (``--groupby``) and tests
module genes for over-representation (``--gene-sets file.gmt`` or an Enrichr library name). It writes the annotated
AnnData (gzip-compressed), tab-separated tables next to it (module genes, presence per sample, enrichment,
association) and PNG figures, and prints a summary. ``lava demo`` does the same on an embedded dataset, offline, in
about half a minute on 2 cores, into lava's cache folder unless ``--out`` says otherwise.

Errors a user can fix (a bad path, a missing key, a bad value, a refused allocation) end with one line on stderr,
``lava: error: ...``, and exit status 1 (``--verbose`` adds the traceback); anything unexpected shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import numpy as np

#: Errors that mean "the input or the options are wrong": reported as one line, no traceback.
USER_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, MemoryError)

#: The tables written next to the output file, ``<stem>_<name>.tsv``, when their step ran.
TABLES = ("module_genes", "presence", "enrichment", "association")

#: The demo's settings: full (about 20 s on 2 cores, 10 s of it the 5 AMF runs) and ``--quick`` (the test suite's,
#: under a minute).
DEMO_SETTINGS = {
    "full": {
        "n_neighbors": 100,
        "overlap": 5,
        "n_modules": 7,  # lava.tl.select_n_modules' suggestion over M = 3-12 on these localities (choosing_m.md)
        "features": "highly_variable",
        "maxfun": None,
        "max_epochs": None,
        "lr": None,  # the default loss's own (expectile: 1e-2)
        "n_runs": None,  # lava.tl.amf's default: 5 fits, the medoid kept
    },
    "quick": {
        "n_neighbors": 100,
        "overlap": 3,
        "n_modules": 3,
        "features": "highly_variable",
        "maxfun": 30,
        "max_epochs": 100,
        "lr": None,
        "n_runs": 2,
    },
}
DEMO_GROUPBY = "bulk_labels"
#: Fits per M of ``--select`` unless ``--n-runs`` says otherwise.
SELECT_N_RUNS = 3


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, like lava's other errors."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------------------------------------------------
# argument types


def _number_type(cast, what: str, *, allow_zero: bool):
    """Return an argparse type that casts the text and accepts finite values > 0 (>= 0 with ``allow_zero``)."""
    bound = "non-negative" if allow_zero else "positive"

    def parse(text: str):
        msg = f"expected a {bound} {what}, got {text!r}"
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(msg) from None
        if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_positive_int = _number_type(int, "integer", allow_zero=False)
_non_negative_int = _number_type(int, "integer", allow_zero=True)
_positive_float = _number_type(float, "number", allow_zero=False)
_non_negative_float = _number_type(float, "number", allow_zero=True)


def _module_range(text: str) -> range:
    """``"2:12"`` (inclusive) or ``"2,4,6"``... as a sorted list of module counts; returned as a range or list."""
    try:
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":"))
            values = list(range(lo, hi + 1))
        else:
            values = sorted({int(p) for p in text.split(",")})
    except ValueError:
        msg = f"expected LO:HI (inclusive) or a comma-separated list of module counts, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if len(values) < 2 or values[0] < 1:
        msg = f"need at least two module counts >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


# --------------------------------------------------------------------------------------------------------------------
# parser


def _add_pipeline_options(p: argparse.ArgumentParser, output: argparse._ArgumentGroup) -> None:
    output.add_argument(
        "--quiet", "-q", action="store_true", help="no log lines and no progress bars (the summary is still printed)"
    )
    output.add_argument(
        "--verbose", "-v", action="store_true", help="show the traceback of an error, not only its one-line message"
    )
    output.add_argument(
        "--compression",
        choices=("gzip", "lzf", "none"),
        default="gzip",
        help="compression of the .h5ad (default gzip: the stored correlations, mostly zeros, shrink about 4x)",
    )
    g = p.add_argument_group("fitting")
    g.add_argument(
        "--gamma",
        type=_non_negative_float,
        default=None,
        help="weight of AMF's MAE term (default 1e-4; the paper used 10 on sparse single-cell data)",
    )
    g.add_argument(
        "--flavor",
        choices=("lava", "paper"),
        default=None,
        help="AMF recipe (default: lava.tl.amf's, 'lava'; 'paper' reproduces the paper)",
    )
    g.add_argument(
        "--loss",
        choices=("expectile", "paper"),
        default=None,
        help="AMF loss (default: the flavor's, 'expectile' for 'lava')",
    )
    g.add_argument(
        "--nu", type=_positive_float, default=None, help="overestimation weight of AMF (default: the loss's, 9)"
    )
    g.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="Adam learning rate of AMF (default: lava.tl.amf's; with few localities, one step per epoch, 1e-2 "
        "converges faster)",
    )
    g.add_argument("--max-epochs", type=_positive_int, default=None, help="cap on AMF epochs (default: lava.tl.amf's)")
    g.add_argument(
        "--maxfun",
        type=_positive_int,
        default=None,
        help="budget of DIRECT evaluations for probe placement (default: lava.tl.localities')",
    )
    g.add_argument("--rng", type=_non_negative_int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N' (default auto)"
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the ``lava`` argument parser (exposed for documentation and tests)."""
    from . import __version__

    parser = _Parser(
        prog="lava",
        description="LAVA (Locality-Aware Variable Associations): explain what in your data shapes an embedding.",
        epilog="Run 'lava demo' for a one-minute example, or 'lava run --help' for your own data.",
    )
    parser.add_argument("--version", action="version", version=f"lava {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,demo}", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run the pipeline on an .h5ad file",
        description=(
            "Place localities over an embedding, compute feature-pair correlations in each, fit modules (AMF), "
            "find each module's features and optionally associate presence with an annotation and test gene sets. "
            "Writes the annotated .h5ad and PNG figures and prints a summary."
        ),
    )
    run.add_argument("input", metavar="INPUT.h5ad", type=Path, help="AnnData file with the data and an embedding")
    req = run.add_argument_group("the method's parameters")
    req.add_argument("--basis", default="X_umap", help="embedding in adata.obsm, 'umap' or 'X_umap' (default X_umap)")
    req.add_argument(
        "--n-neighbors",
        "-n",
        type=_positive_int,
        required=True,
        metavar="N",
        help="locality size n (samples per locality)",
    )
    req.add_argument(
        "--overlap",
        "-o",
        type=_positive_float,
        required=True,
        metavar="O",
        help="overlap o: localities = round(E * o / n)",
    )
    req.add_argument(
        "--n-modules",
        "-m",
        type=_positive_int,
        metavar="M",
        default=None,
        help="number of modules M (default 9, or the suggested M with --select)",
    )
    data = run.add_argument_group("data")
    data.add_argument(
        "--features",
        default=None,
        help="boolean var column naming the features to correlate, 'all', or a text file with one name per line "
        "(default: 'highly_variable' when that column exists, else all)",
    )
    data.add_argument("--layer", default=None, help="use adata.layers[LAYER] instead of X")
    data.add_argument("--use-raw", action="store_true", help="use adata.raw instead of X")
    down = run.add_argument_group("downstream (optional)")
    down.add_argument(
        "--select",
        type=_module_range,
        default=None,
        metavar="LO:HI",
        help="also run model selection over M in LO..HI (slow: several fits per M)",
    )
    down.add_argument(
        "--n-runs",
        type=_positive_int,
        default=None,
        metavar="R",
        help="fits per M for --select (default 3; the paper used 10), or from different seeds for the fit, the "
        "medoid kept (default 5, with --flavor paper 1)",
    )
    down.add_argument(
        "--gene-rule",
        choices=("core", "score"),
        default=None,
        help="how a module's genes are picked (lava.tl.module_genes): 'core' (default), the features of the pairs at "
        ">= T x the module's R-th largest pair value; 'score' (the paper's), the features scoring >= T x its top score",
    )
    down.add_argument(
        "--gene-threshold",
        type=_non_negative_float,
        default=None,
        metavar="T",
        help="the fraction T of --gene-rule, in [0, 1] (default 0.5 for 'core', 0.05 for 'score')",
    )
    down.add_argument(
        "--gene-reference-rank",
        type=_positive_int,
        default=None,
        metavar="R",
        help="--gene-rule core only: the rank R of the pair value the threshold is a fraction of (default 10; 1: the "
        "largest pair)",
    )
    down.add_argument(
        "--enrich-by",
        choices=("module", "group"),
        default="module",
        help="with --gene-sets: test each module's gene list (default) or each of its gene groups (lava.tl.enrich by)",
    )
    down.add_argument("--groupby", default=None, metavar="COL", help="obs column to associate module presence with")
    down.add_argument(
        "--gene-sets",
        default=None,
        metavar="GMT|LIBRARY",
        help="gene sets for over-representation analysis of module genes: a .gmt file, or an Enrichr library name "
        "spelled as in the library (e.g. GO_Biological_Process_2023; human; needs internet)",
    )
    out = run.add_argument_group("output")
    out.add_argument("--out", type=Path, required=True, metavar="OUT.h5ad", help="where to write the annotated AnnData")
    out.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for PNG figures (default: next to OUT, OUT_figures/)",
    )
    _add_pipeline_options(run, out)
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser(
        "demo",
        help="run the pipeline on scanpy's pbmc68k_reduced (offline, about half a minute on 2 cores)",
        description=(
            "Run the whole pipeline on scanpy's shipped pbmc68k_reduced (700 cells, 309 highly variable genes; "
            f"n=100, o=5, M=7) with presence associated with '{DEMO_GROUPBY}'. Writes pbmc68k_reduced_lava.h5ad, "
            "its tables and figures to --out and prints a summary."
        ),
    )
    demo_out = demo.add_argument_group("output")
    demo_out.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default {demo_dir()}, lava's cache folder: never the current folder)",
    )
    demo_out.add_argument("--quick", action="store_true", help="smaller settings (seconds; used by the test suite)")
    _add_pipeline_options(demo, demo_out)
    demo.set_defaults(func=_cmd_demo)
    return parser


# --------------------------------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class _Job:
    """Everything one pipeline run needs, resolved and checked before any computation starts."""

    adata: object
    basis: str
    n_neighbors: int
    overlap: float
    n_modules: int | None
    features: object
    layer: str | None
    use_raw: bool
    select: list[int] | None
    n_runs: int | None
    gene_rule: str | None
    gene_threshold: float | None
    gene_reference_rank: int | None
    groupby: str | None
    gene_sets: str | None
    enrich_by: str
    out: Path
    figures: Path
    gamma: float | None
    flavor: str | None
    loss: str | None
    nu: float | None
    lr: float | None
    max_epochs: int | None
    maxfun: int | None
    rng: int
    device: str
    progress: bool
    label: str
    compression: str | None = "gzip"
    timings: dict[str, float] = field(default_factory=dict)
    figure_files: list[Path] = field(default_factory=list)
    table_files: list[Path] = field(default_factory=list)


def _read(path: Path):
    import anndata as ad

    if not path.exists():
        msg = f"input file {str(path)!r} does not exist"
        raise FileNotFoundError(msg)
    try:
        if path.suffix == ".zarr" or path.is_dir():
            return ad.read_zarr(path)
        return ad.read_h5ad(path)
    except OSError as err:
        msg = f"cannot read {str(path)!r} as an AnnData file (.h5ad or .zarr): {err}"
        raise ValueError(msg) from None


def _resolve_gene_sets(value: str) -> str:
    """Check ``--gene-sets`` before anything is computed: an existing .gmt file (parsed now), or an Enrichr library.

    A library name is passed on exactly as written, so it must be spelled as in Enrichr's list (checked here, with
    the closest names suggested); a value that looks like a path must be an existing file.
    """
    from .tl._modules import read_gmt

    path = Path(value).expanduser()
    if path.is_file():
        read_gmt(path)  # a malformed file fails now, not after the fit
        return str(path)
    if value.lower().endswith(".gmt") or "/" in value or "\\" in value:
        msg = f"gene-set file {value!r} does not exist"
        raise FileNotFoundError(msg)
    import difflib

    import gseapy

    try:
        names = list(gseapy.get_library_name(organism="Human"))
    except Exception as err:  # any failure to reach Enrichr means the same here
        msg = (
            f"--gene-sets {value!r} is not a file, and Enrichr's list of libraries could not be read to check the "
            f"name ({type(err).__name__}: {err}); offline, pass a .gmt file"
        )
        raise ValueError(msg) from None
    if value not in names:
        close = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
        close += [n for n in names if n.lower() == value.lower() and n not in close]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; see gseapy.get_library_name()"
        msg = f"--gene-sets {value!r} is neither a file nor an Enrichr library name (names are case-sensitive){hint}"
        raise ValueError(msg)
    return value


def _resolve_features(adata, features, *, use_raw: bool):
    """Turn the --features option into what lava.tl.correlations takes (a var column, a list of names, or None)."""
    var = adata.raw.var if use_raw and adata.raw is not None else adata.var
    if features is None:
        return "highly_variable" if "highly_variable" in var.columns else None
    if features == "all":
        return None
    if features in var.columns:
        return features
    path = Path(features)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not names:
            msg = f"feature file {features!r} lists no names; write one feature name per line"
            raise ValueError(msg)
        return names
    msg = (
        f"--features {features!r} is neither a column of adata.var ({', '.join(map(repr, var.columns)) or 'none'}), "
        "nor 'all', nor an existing file of names"
    )
    raise KeyError(msg)


def _check_writable(path: Path, what: str) -> None:
    parent = path.parent if path.parent != Path() else Path()
    if parent.exists() and not parent.is_dir():
        msg = f"cannot write {what} {str(path)!r}: {str(parent)!r} is not a folder"
        raise NotADirectoryError(msg)
    if path.is_dir():
        msg = f"cannot write {what} {str(path)!r}: it is a folder; pass a file name ending in .h5ad"
        raise IsADirectoryError(msg)


def _prepare(adata, args, *, out: Path, figures: Path, label: str) -> _Job:
    """Check every option against the data before anything is computed (a failed check costs nothing)."""
    from ._validate import get_data, get_embedding, select_features

    basis, Z = get_embedding(adata, args.basis)
    n_obs = adata.n_obs
    if args.n_neighbors > n_obs:
        msg = f"--n-neighbors {args.n_neighbors} is larger than the number of samples ({n_obs}); pass a smaller n"
        raise ValueError(msg)
    features = _resolve_features(adata, args.features, use_raw=args.use_raw)
    _, var_names, _ = get_data(adata, layer=args.layer, use_raw=args.use_raw)
    n_features = len(select_features(adata, var_names, features, use_raw=args.use_raw))
    if args.groupby is not None and args.groupby not in adata.obs.columns:
        msg = f"--groupby {args.groupby!r} is not a column of adata.obs; available: {', '.join(map(repr, adata.obs.columns))}"
        raise KeyError(msg)
    gene_sets = None if args.gene_sets is None else _resolve_gene_sets(args.gene_sets)
    if args.select is not None and args.n_modules is not None and args.n_modules not in args.select:
        msg = f"--n-modules {args.n_modules} is not in the --select range {args.select[0]}..{args.select[-1]}"
        raise ValueError(msg)
    if args.gene_threshold is not None and args.gene_threshold > 1:
        msg = f"--gene-threshold {args.gene_threshold:g} is a fraction and must be in [0, 1]"
        raise ValueError(msg)
    if args.enrich_by == "group" and args.gene_rule == "score":
        msg = "--enrich-by group tests the gene groups of --gene-rule core; leave out --gene-rule score"
        raise ValueError(msg)
    if args.gene_reference_rank is not None and args.gene_rule == "score":
        msg = "--gene-reference-rank applies to --gene-rule core only; leave it out with --gene-rule score"
        raise ValueError(msg)
    _check_writable(out, "the output")
    if figures.exists() and not figures.is_dir():
        msg = f"--figures {str(figures)!r} exists and is not a folder"
        raise NotADirectoryError(msg)
    logging.getLogger("lava").info(
        "lava: %s: %d samples, %d of %d features selected, basis %r (%d-D)",
        label,
        n_obs,
        n_features,
        len(var_names),
        basis,
        Z.shape[1],
    )
    return _Job(
        adata=adata,
        basis=basis,
        n_neighbors=args.n_neighbors,
        overlap=args.overlap,
        n_modules=args.n_modules,
        features=features,
        layer=args.layer,
        use_raw=args.use_raw,
        select=args.select,
        n_runs=args.n_runs,
        gene_rule=args.gene_rule,
        gene_threshold=args.gene_threshold,
        gene_reference_rank=args.gene_reference_rank,
        groupby=args.groupby,
        gene_sets=gene_sets,
        enrich_by=args.enrich_by,
        out=out,
        figures=figures,
        gamma=args.gamma,
        flavor=args.flavor,
        loss=args.loss,
        nu=args.nu,
        lr=args.lr,
        max_epochs=args.max_epochs,
        maxfun=args.maxfun,
        rng=args.rng,
        device=args.device,
        progress=not args.quiet,
        label=label,
        compression=None if args.compression == "none" else args.compression,
    )


def _timed(job: _Job, name: str, fn: Callable, *args, **kwargs):
    start = perf_counter()
    result = fn(*args, **kwargs)
    job.timings[name] = perf_counter() - start
    return result


def _drop_none(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


def _compute(job: _Job) -> None:
    """Run the steps in order, storing everything under ``adata.uns['lava']``."""
    import lava

    from ._store import read_selection

    adata = job.adata
    _timed(
        job,
        "localities",
        lava.tl.localities,
        adata,
        basis=job.basis,
        n_neighbors=job.n_neighbors,
        overlap=job.overlap,
        rng=job.rng,
        progress=job.progress,
        **_drop_none(maxfun=job.maxfun),
    )
    _timed(
        job,
        "correlations",
        lava.tl.correlations,
        adata,
        features=job.features,
        layer=job.layer,
        use_raw=job.use_raw,
        device=job.device,
        progress=job.progress,
    )
    fit_options = _drop_none(
        flavor=job.flavor, loss=job.loss, nu=job.nu, gamma=job.gamma, lr=job.lr, max_epochs=job.max_epochs
    )
    n_modules = job.n_modules
    if job.select is not None:
        _timed(
            job,
            "select_n_modules",
            lava.tl.select_n_modules,
            adata,
            job.select,
            n_runs=job.n_runs if job.n_runs is not None else SELECT_N_RUNS,
            rng=job.rng,
            device=job.device,
            progress=job.progress,
            **fit_options,
        )
        if n_modules is None:
            n_modules = read_selection(adata, "lava").suggested_n_modules
        _timed(job, "amf", lava.tl.amf, adata, from_selection=n_modules)
    else:
        _timed(
            job,
            "amf",
            lava.tl.amf,
            adata,
            9 if n_modules is None else n_modules,
            n_runs=job.n_runs,
            rng=job.rng,
            device=job.device,
            progress=job.progress,
            **fit_options,
        )
    _timed(
        job,
        "module_genes",
        lava.tl.module_genes,
        adata,
        **_drop_none(rule=job.gene_rule, threshold=job.gene_threshold, reference_rank=job.gene_reference_rank),
    )
    if job.gene_sets is not None:
        _timed(job, "enrich", lava.tl.enrich, adata, job.gene_sets, by=job.enrich_by)
    if job.groupby is not None:
        _timed(job, "associate", lava.tl.associate, adata, job.groupby)


def _write(job: _Job) -> None:
    start = perf_counter()
    job.out.parent.mkdir(parents=True, exist_ok=True)
    if job.out.suffix == ".zarr":
        job.adata.write_zarr(job.out)  # zarr compresses its chunks by default
    else:
        job.adata.write_h5ad(job.out, compression=job.compression)
    job.table_files = _write_tables(job.adata, job.out)
    job.timings["write"] = perf_counter() - start


def _write_tables(adata, out: Path) -> list[Path]:
    """Write the tidy tables of the steps that ran as ``<stem>_<table>.tsv`` next to ``out``, for pipelines."""
    import lava

    from ._store import has_step

    getters = {
        "module_genes": lambda: lava.get.module_genes(adata),
        "presence": lambda: _presence_table(lava.get.presence(adata, level="sample")),
        "enrichment": lambda: lava.get.enrichment(adata),
        "association": lambda: lava.get.association(adata),
    }
    steps = {
        "module_genes": "module_genes",
        "presence": "amf",
        "enrichment": "enrichment",
        "association": "association",
    }
    files = []
    for name in TABLES:
        if not has_step(adata, "lava", steps[name]):
            continue
        path = out.with_name(f"{out.stem}_{name}.tsv")
        table = getters[name]()
        table.to_csv(path, sep="\t", index=name == "presence")
        files.append(path)
    return files


def _presence_table(df):
    """Presence per sample with named columns (``module_0``, ...) and the sample names as the first column."""
    df = df.copy()
    df.columns = [f"module_{int(m)}" for m in df.columns]
    df.index = df.index.astype(str)
    df.index.name = "obs_name"
    return df


def _figures(job: _Job) -> None:
    """Draw every figure the stored results allow, through lava.pl (show=False), and save them as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import lava

    from ._store import has_step

    adata = job.adata
    start = perf_counter()
    job.figures.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, Callable[[], object]]] = [
        ("modules", lambda: lava.pl.modules(adata, show=False, return_fig=True)),
        ("module_genes", lambda: lava.pl.module_genes(adata, n_genes=15, ncols=3, show=False, return_fig=True)),
        ("centrality", lambda: lava.pl.centrality(adata, show=False, return_fig=True)),
        ("copresence", lambda: lava.pl.copresence(adata, show=False, return_fig=True)),
    ]
    if "image_shape" in adata.uns:
        plots.append(("module_images", lambda: lava.pl.module_image(adata, show=False, return_fig=True)))
    if has_step(adata, "lava", "selection"):
        plots.append(("selection", lambda: lava.pl.selection(adata, show=False, return_fig=True)))
    if has_step(adata, "lava", "enrichment") and len(lava.get.enrichment(adata)):
        plots.append(("enrichment", lambda: lava.pl.enrichment(adata, show=False, return_fig=True)))
    if has_step(adata, "lava", "association"):
        plots.append(("association", lambda: lava.pl.association(adata, show=False, return_fig=True)))
    for name, draw in plots:
        fig = draw()
        path = job.figures / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        job.figure_files.append(path)
    job.timings["figures"] = perf_counter() - start


# --------------------------------------------------------------------------------------------------------------------
# summary


def summary(
    adata, *, key: str = "lava", timings: dict[str, float] | None = None, files: Sequence[str] = (), top: int = 8
) -> str:
    """Summarise stored results as plain text: localities, pairs, modules, fit figures, top features, files, times.

    The figures are those of :func:`lava.get.summary`; ``timings`` (seconds per step) and ``files`` are appended.
    """
    import lava

    from .get._summary import summary_text

    return summary_text(lava.get.summary(adata, top=top, key=key), timings=timings, files=files)


def _finish(job: _Job) -> None:
    files = [f"annotated data  {job.out}"]
    if job.table_files:
        files.append(f"tables          {', '.join(str(p) for p in job.table_files)}")
    if job.figure_files:
        names = ", ".join(p.name for p in job.figure_files)
        files.append(f"figures         {job.figures}/ ({names})")
    print(summary(job.adata, timings=job.timings, files=files))


# --------------------------------------------------------------------------------------------------------------------
# commands


def _cmd_run(args) -> int:
    adata = _read(args.input)
    figures = args.figures if args.figures is not None else args.out.with_name(f"{args.out.stem}_figures")
    job = _prepare(adata, args, out=args.out, figures=figures, label=str(args.input))
    _compute(job)
    _write(job)
    _figures(job)
    _finish(job)
    return 0


def _cmd_demo(args) -> int:
    import lava

    settings = DEMO_SETTINGS["quick" if args.quick else "full"]
    adata = lava.datasets.pbmc68k_reduced()
    out_dir: Path = args.out if args.out is not None else demo_dir()
    if out_dir.exists() and not out_dir.is_dir():
        msg = f"--out {str(out_dir)!r} exists and is not a folder"
        raise NotADirectoryError(msg)
    ns = argparse.Namespace(
        basis="X_umap",
        n_neighbors=settings["n_neighbors"],
        overlap=settings["overlap"],
        n_modules=settings["n_modules"],
        features=settings["features"],
        layer=None,
        use_raw=False,
        select=None,
        n_runs=settings["n_runs"],
        gene_rule=None,
        gene_threshold=None,
        gene_reference_rank=None,
        groupby=DEMO_GROUPBY,
        gene_sets=None,
        enrich_by="module",
        gamma=args.gamma,
        flavor=args.flavor,
        loss=args.loss,
        nu=args.nu,
        lr=args.lr if args.lr is not None else settings["lr"],
        max_epochs=args.max_epochs if args.max_epochs is not None else settings["max_epochs"],
        maxfun=args.maxfun if args.maxfun is not None else settings["maxfun"],
        rng=args.rng,
        device=args.device,
        quiet=args.quiet,
        compression=args.compression,
    )
    job = _prepare(
        adata,
        ns,
        out=out_dir / "pbmc68k_reduced_lava.h5ad",
        figures=out_dir / "figures",
        label="demo (pbmc68k_reduced)",
    )
    _compute(job)
    _write(job)
    _figures(job)
    _finish(job)
    return 0


def demo_dir() -> Path:
    """Return where ``lava demo`` writes by default: ``demo/`` in lava's user cache folder, whatever the cwd."""
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # pragma: no cover - platformdirs is nearly always present
        return Path.home() / ".cache" / "lava" / "demo"
    return Path(user_cache_dir("lava")) / "demo"


def _configure_logging(quiet: bool) -> Callable[[], None]:
    """Add a handler to the 'lava' logger for this command only; return a function that removes it again."""
    logger = logging.getLogger("lava")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate

    return restore


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else str(err)
    text = " ".join(str(text).split())
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lava`` command. Returns the exit status (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    restore = _configure_logging(args.quiet)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if args.verbose:
            traceback.print_exc()
        print(f"lava: error: {_one_line(err)}", file=sys.stderr)
        return 1
    finally:
        restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
