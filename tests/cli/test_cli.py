"""The ``lava`` command: help, version, one-line errors without tracebacks, and the demo and run end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import lava
from lava.cli import main


def _err_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def pbmc_file(pbmc, tmp_path) -> Path:
    path = tmp_path / "pbmc.h5ad"
    pbmc.copy().write_h5ad(path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# help and version


def test_help_via_console_script():
    exe = shutil.which("lava")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "lava.cli", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: lava" in proc.stdout
    assert "run" in proc.stdout
    assert "demo" in proc.stdout


@pytest.mark.parametrize("command", ["run", "demo"])
def test_subcommand_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: lava {command}" in out
    assert "--out" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lava {lava.__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: lava" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------------
# errors: one line on stderr, non-zero exit, no traceback, nothing written


def test_missing_input_file(tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    rc = main(["run", str(tmp_path / "nope.h5ad"), "-n", "50", "-o", "2", "--out", str(out), "-q"])
    assert rc == 1
    lines = _err_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("lava: error: ")
    assert "nope.h5ad" in lines[0]
    assert "does not exist" in lines[0]
    assert not out.exists()


def test_unreadable_input_file(tmp_path, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not an h5ad file\n")
    rc = main(["run", str(bad), "-n", "50", "-o", "2", "--out", str(tmp_path / "out.h5ad"), "-q"])
    assert rc == 1
    lines = _err_lines(capsys)
    assert len(lines) == 1
    assert "cannot read" in lines[0]


def test_missing_basis(pbmc_file, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    rc = main(["run", str(pbmc_file), "--basis", "X_tsne", "-n", "50", "-o", "2", "--out", str(out), "-q"])
    assert rc == 1
    lines = _err_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("lava: error: no 'X_tsne' in adata.obsm")
    assert "X_umap" in lines[0]  # names what is available
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--features", "no_such_column"], "no_such_column"),
        (["--groupby", "no_such_column"], "no_such_column"),
        (["--gene-sets", "missing.gmt"], "missing.gmt"),
        (["--layer", "no_such_layer"], "no_such_layer"),
        (["-n", "5000"], "larger than the number of samples"),
        (["--select", "2:4", "-m", "7"], "not in the --select range"),
        (["--gene-threshold", "1.5"], "must be in [0, 1]"),
        (["--gene-rule", "score", "--gene-reference-rank", "3"], "applies to --gene-rule core only"),
        (["--gene-rule", "score", "--enrich-by", "group"], "tests the gene groups of --gene-rule core"),
    ],
    ids=[
        "features",
        "groupby",
        "gene-sets",
        "layer",
        "n-too-large",
        "m-outside-select",
        "gene-threshold",
        "rank-score",
        "enrich-by-score",
    ],
)
def test_bad_keys_and_values(pbmc_file, tmp_path, capsys, extra, needle):
    out = tmp_path / "out.h5ad"
    rc = main(["run", str(pbmc_file), "-n", "50", "-o", "2", "--out", str(out), "-q", *extra])
    assert rc == 1
    lines = _err_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("lava: error: ")
    assert needle in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["-n", "-5"],
        ["-n", "ten"],
        ["-o", "0"],
        ["--gamma", "-1"],
        ["--select", "5"],
        ["--rng", "-1"],
        ["--gene-rule", "max"],
        ["--gene-reference-rank", "0"],
    ],
    ids=[
        "negative-n",
        "text-n",
        "zero-overlap",
        "negative-gamma",
        "one-module-count",
        "negative-rng",
        "gene-rule",
        "zero-rank",
    ],
)
def test_bad_option_values_are_usage_errors(pbmc_file, tmp_path, capsys, extra):
    args = ["run", str(pbmc_file), "-n", "50", "-o", "2", "--out", str(tmp_path / "o.h5ad"), *extra]
    assert main(args) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("lava run: error: ")


def test_missing_required_option(pbmc_file, capsys):
    assert main(["run", str(pbmc_file), "-o", "2", "--out", "x.h5ad"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1
    assert "--n-neighbors" in lines[0]


def test_output_is_a_folder(pbmc_file, tmp_path, capsys):
    rc = main(["run", str(pbmc_file), "-n", "50", "-o", "2", "--out", str(tmp_path), "-q"])
    assert rc == 1
    lines = _err_lines(capsys)
    assert len(lines) == 1
    assert "is a folder" in lines[0]


def test_unexpected_errors_keep_their_traceback(monkeypatch, pbmc_file, tmp_path):
    import lava.cli

    def boom(job):
        raise RuntimeError("a bug")

    monkeypatch.setattr(lava.cli, "_compute", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["run", str(pbmc_file), "-n", "50", "-o", "2", "--out", str(tmp_path / "o.h5ad"), "-q"])


def test_verbose_adds_the_traceback(tmp_path, capsys):
    rc = main(["run", str(tmp_path / "nope.h5ad"), "-n", "50", "-o", "2", "--out", str(tmp_path / "o.h5ad"), "-v"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("lava: error: input file")


def test_memory_refusal_is_a_user_error(monkeypatch, pbmc_file, tmp_path, capsys):
    import lava.cli

    def refuse(job):
        raise MemoryError("the correlations need 44.6 GiB; pass features='highly_variable' or out= a zarr store")

    monkeypatch.setattr(lava.cli, "_compute", refuse)
    rc = main(["run", str(pbmc_file), "-n", "50", "-o", "2", "--out", str(tmp_path / "o.h5ad"), "-q"])
    assert rc == 1
    lines = _err_lines(capsys)
    assert lines == [
        "lava: error: the correlations need 44.6 GiB; pass features='highly_variable' or out= a zarr store"
    ]


@pytest.fixture
def enrichr(monkeypatch):
    """Enrichr offline: the list of library names, and one library."""
    import gseapy

    names = ["GO_Biological_Process_2023", "KEGG_2021_Human", "MSigDB_Hallmark_2020"]
    monkeypatch.setattr(gseapy, "get_library_name", lambda organism="Human": names)
    return names


def test_gene_set_library_name_is_passed_as_spelled(enrichr):
    from lava.cli import _resolve_gene_sets

    assert _resolve_gene_sets("MSigDB_Hallmark_2020") == "MSigDB_Hallmark_2020"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("go_biological_process_2023", "did you mean 'GO_Biological_Process_2023'"),
        ("KEGG_2021", "did you mean 'KEGG_2021_Human'"),
        ("missing.gmt", "gene-set file 'missing.gmt' does not exist"),
    ],
)
def test_gene_set_names_are_checked_before_computing(enrichr, pbmc_file, tmp_path, capsys, value, needle):
    out = tmp_path / "out.h5ad"
    rc = main(["run", str(pbmc_file), "-n", "50", "-o", "2", "--gene-sets", value, "--out", str(out), "-q"])
    assert rc == 1
    lines = _err_lines(capsys)
    assert len(lines) == 1
    assert needle in lines[0]
    assert not out.exists()


def test_gene_set_library_offline_says_to_pass_a_file(monkeypatch, pbmc_file, tmp_path, capsys):
    import gseapy

    def offline(organism="Human"):
        raise ConnectionError("no network")

    monkeypatch.setattr(gseapy, "get_library_name", offline)
    rc = main(["run", str(pbmc_file), "-n", "50", "-o", "2", "--gene-sets", "KEGG_2021_Human", "--out", "o.h5ad", "-q"])
    assert rc == 1
    (line,) = _err_lines(capsys)
    assert "offline, pass a .gmt file" in line


def test_demo_default_output_is_outside_the_checkout(monkeypatch, tmp_path):
    from lava.cli import build_parser, demo_dir

    monkeypatch.chdir(tmp_path)
    assert build_parser().parse_args(["demo"]).out is None  # resolved by demo_dir(), not relative to the cwd
    where = demo_dir()
    assert where.is_absolute()
    assert tmp_path not in where.parents
    root = Path(__file__).resolve().parents[2]
    assert root not in where.parents
    assert "/lava-demo/" in (root / ".gitignore").read_text().splitlines()


def test_logging_handler_is_removed_after_the_command(tmp_path):
    import logging

    logger = logging.getLogger("lava")
    before = list(logger.handlers), logger.level, logger.propagate
    main(["run", str(tmp_path / "nope.h5ad"), "-n", "5", "-o", "2", "--out", str(tmp_path / "o.h5ad")])
    assert (list(logger.handlers), logger.level, logger.propagate) == before


# ---------------------------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    h5ad = out / "pbmc68k_reduced_lava.h5ad"
    assert h5ad.is_file()
    adata = ad.read_h5ad(h5ad)
    uns = adata.uns["lava"]
    for step in ("localities", "correlations", "amf", "module_genes", "association"):
        assert step in uns, step
    n_modules = uns["amf"]["modules"].shape[0]
    assert n_modules == 3
    assert adata.obsm["lava_presence"].shape == (adata.n_obs, n_modules)
    assert adata.varm["lava_modules"].shape == (adata.n_vars, n_modules)
    assert uns["correlations"]["features"].size == int(adata.var["highly_variable"].sum())
    # compressed: the stored correlations (most of the file) are gzip datasets
    import h5py

    with h5py.File(h5ad) as f:
        assert f["uns/lava/correlations/values"].compression == "gzip"
    # tables for pipelines, next to the h5ad
    import pandas as pd

    genes = pd.read_csv(out / "pbmc68k_reduced_lava_module_genes.tsv", sep="\t")
    assert list(genes.columns) == ["module", "feature", "score", "rank", "group", "n_shared"]
    assert set(genes["feature"]) <= set(adata.var_names)
    presence = pd.read_csv(out / "pbmc68k_reduced_lava_presence.tsv", sep="\t", index_col=0)
    assert list(presence.index) == list(adata.obs_names)
    assert list(presence.columns) == [f"module_{m}" for m in range(n_modules)]
    np.testing.assert_allclose(presence.to_numpy(), adata.obsm["lava_presence"], rtol=1e-6)
    association = pd.read_csv(out / "pbmc68k_reduced_lava_association.tsv", sep="\t")
    assert set(association["groupby"]) == {"bulk_labels"}
    assert not (out / "pbmc68k_reduced_lava_enrichment.tsv").exists()  # no gene sets in the demo
    assert "pbmc68k_reduced_lava_presence.tsv" in captured.out
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"modules.png", "module_genes.png", "association.png"} <= set(pngs)
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the summary names the figures of the fit and where the files went
    assert "overestimation ratio" in captured.out
    assert "module 0:" in captured.out
    assert str(h5ad) in captured.out
    # --quiet: no log lines and no progress bars (lava's warnings still show)
    assert "computing" not in captured.err
    assert "finished" not in captured.err
    assert "%|" not in captured.err


@pytest.mark.slow
def test_enrich_by_reaches_lava_tl_enrich(pbmc_file, tmp_path, monkeypatch, pbmc):
    calls = []
    real = lava.tl.enrich

    def recording(adata, gene_sets, **kwargs):
        calls.append(kwargs)
        return real(adata, gene_sets, **kwargs)

    monkeypatch.setattr(lava.tl, "enrich", recording)
    genes = list(pbmc.var_names[:20])
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("SET_A\tfirst\t" + "\t".join(genes) + "\n")
    out = tmp_path / "o.h5ad"
    args = ["run", str(pbmc_file), "-n", "120", "-o", "2", "-m", "2", "--gene-sets", str(gmt), "--enrich-by", "group"]
    assert main([*args, "--maxfun", "10", "--max-epochs", "50", "--out", str(out), "-q"]) == 0
    assert calls == [{"by": "group"}]


@pytest.mark.slow
def test_run_with_feature_file_groupby_and_gene_sets(pbmc_file, tmp_path, capsys, pbmc):
    genes = list(pbmc.var_names[pbmc.var["highly_variable"].to_numpy()][:40])
    feature_file = tmp_path / "features.txt"
    feature_file.write_text("# forty highly variable genes\n" + "\n".join(genes) + "\n")
    gmt = tmp_path / "sets.gmt"
    gmt.write_text(
        "SET_A\tfirst half\t" + "\t".join(genes[:20]) + "\n" + "SET_B\tsecond half\t" + "\t".join(genes[20:]) + "\n"
    )
    out = tmp_path / "res" / "pbmc_lava.h5ad"
    figs = tmp_path / "figs"
    args = [
        "run",
        str(pbmc_file),
        "--basis",
        "umap",
        "-n",
        "120",
        "-o",
        "2",
        "-m",
        "2",
        "--features",
        str(feature_file),
    ]
    args += ["--groupby", "phase", "--gene-sets", str(gmt), "--maxfun", "20", "--max-epochs", "200", "--lr", "1e-2"]
    args += ["--gene-threshold", "0.3", "--gene-reference-rank", "3"]
    args += ["--out", str(out), "--figures", str(figs)]
    assert main(args) == 0
    captured = capsys.readouterr()
    adata = ad.read_h5ad(out)
    uns = adata.uns["lava"]
    assert list(uns["correlations"]["features"]) == genes
    assert uns["correlations"]["values"].shape == (round(adata.n_obs * 2 / 120), 40 * 39 // 2)
    assert uns["amf"]["presence"].shape[1] == 2
    assert "enrichment" in uns
    genes_params = lava.get.params(adata, "module_genes")
    assert (genes_params["rule"], genes_params["threshold"], genes_params["reference_rank"]) == ("core", 0.3, 3)
    assert lava.get.params(adata, "enrichment")["by"] == "module"
    assert set(uns["association"]["groupby"]) == {"phase"}
    assert set(np.unique(uns["association"]["category"])) <= set(adata.obs["phase"].astype(str))
    assert (figs / "enrichment.png").is_file()
    assert (figs / "association.png").is_file()
    enrichment = pd.read_csv(out.with_name("pbmc_lava_enrichment.tsv"), sep="\t")
    assert set(enrichment["term"]) <= {"SET_A", "SET_B"}
    # every module gets its top term, marked when it is not significant, and the gene sets are named
    assert "gene sets sets.gmt" in captured.out
    section = captured.out.split("top term per module")[1].split("strongest associations")[0]
    for m in range(2):
        assert f"    module {m}: " in section
    best = enrichment.sort_values("p_adjusted").groupby("module").head(1)
    for _, row in best.iterrows():
        significant = row["p_adjusted"] < 0.05
        line = next(x for x in section.splitlines() if x.startswith(f"    module {row['module']}: "))
        assert row["term"] in line
        assert ("not significant" in line) is not significant
    assert "computing" in captured.err  # not --quiet: log lines go to stderr
    assert "step times" in captured.out
