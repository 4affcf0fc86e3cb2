"""Real datasets: read from a local cache, else download from a public source and check a pinned sha256."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._compat import RngLike, as_generator, as_seed
from .._docs import doc_params

#: Seconds to wait for a server before giving up.
TIMEOUT = 60


def _convert_keras_mnist(raw: bytes) -> dict[str, np.ndarray]:
    """Keras' ``mnist.npz`` (x_train, y_train, x_test, y_test) -> ``images`` (70000, 784), ``labels`` (70000,)."""
    with np.load(io.BytesIO(raw)) as f:
        images = np.concatenate([f["x_train"], f["x_test"]]).reshape(-1, 784).astype(np.uint8)
        labels = np.concatenate([f["y_train"], f["y_test"]]).astype(np.uint8)
    return {"images": images, "labels": labels}


@dataclass(frozen=True)
class Remote:
    """Where a dataset comes from and how to recognise it.

    ``sha256`` pins the file as served by ``url``. When ``convert`` is set, the cache holds the converted arrays
    (``np.savez``) instead, recognised by ``content_sha256``: the sha256 of the arrays' bytes in ``convert``'s key
    order (a re-saved npz differs in its zip metadata but not in its arrays).
    """

    filename: str
    url: str | None
    sha256: str
    size: int | None = None
    convert: Callable[[bytes], dict[str, np.ndarray]] | None = None
    content_sha256: str | None = None
    where_to_get: str = ""


#: The pinned datasets (tests monkeypatch this table).
REGISTRY: dict[str, Remote] = {
    "mnist": Remote(
        filename="mnist.npz",
        # the Keras/TensorFlow datasets mirror of the original IDX files; its sha256 is the one Keras pins
        url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
        convert=_convert_keras_mnist,
        content_sha256="c2069063c1105f2bf96266aef1ff68c6e13bdda7a54e37bf19c16f1db24efc83",
    ),
    "kidney_immune": Remote(
        filename="kidneyimmune.h5ad",
        url="https://github.com/zktuong/ktplotspy/raw/master/data/kidneyimmune.h5ad",
        # the copy shipped with ktplotspy 0.3.5
        sha256="38e7b2c9e6b6715837513f8eacd836df84abd5888ddc9779350d12e7bbec3b53",
        size=8257180,
    ),
    "go_bp_human": Remote(
        filename="go_bp_human.gmt",
        url=None,
        sha256="0591a729fd940613b5e20024f53a79770cbd6bf68059be344e0d87e0efa8e3a0",
        size=2998214,
        where_to_get=(
            "This GO biological-process GMT (human symbols, ancestor-propagated, 15-500 genes per term, built from "
            "Bioconductor org.Hs.eg.db 3.16.0 and GO.db 3.16.0) has no public download; lava's source repository "
            "documents how it was built. Any GMT works with lava.tl.enrich: e.g. gseapy.get_library('GO_Biological_"
            "Process_2023') or an MSigDB collection."
        ),
    ),
}

# (path, size, mtime_ns) of cache files already checked in this process
_VERIFIED: set[tuple[str, int, int]] = set()


def data_dir() -> Path:
    """Return the dataset cache: ``$LAVA_DATA_DIR`` if set, else the platform's user cache directory for lava.

    Returns
    -------
    The directory (not created here).
    """
    env = os.environ.get("LAVA_DATA_DIR")
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # pragma: no cover - platformdirs is nearly always present
        return Path.home() / ".cache" / "lava"
    return Path(user_cache_dir("lava"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_arrays(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for value in arrays.values():
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def _verify_cached(path: Path, remote: Remote) -> None:
    """Check a cache file once per process (size first, then the hash); raise naming the file to delete."""
    stat = path.stat()
    token = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if token in _VERIFIED:
        return
    fix = f"delete {path} and call again to download a fresh copy, or place a good copy there."
    if remote.convert is None:
        if remote.size is not None and stat.st_size != remote.size:
            msg = f"the cached file {path} has {stat.st_size} bytes, expected {remote.size}: it is corrupt; {fix}"
            raise ValueError(msg)
        digest = _sha256_file(path)
        if digest != remote.sha256:
            msg = f"the cached file {path} has sha256 {digest}, expected {remote.sha256}: it is corrupt; {fix}"
            raise ValueError(msg)
    else:
        try:
            with open(path, "rb") as fh, np.load(fh) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception as err:  # any failure to read a zip/npz means the same thing here
            msg = f"the cached file {path} cannot be read ({err}): it is corrupt; {fix}"
            raise ValueError(msg) from err
        digest = _sha256_arrays(arrays)
        if digest != remote.content_sha256:
            msg = f"the cached file {path} holds arrays with sha256 {digest}, expected {remote.content_sha256}; {fix}"
            raise ValueError(msg)
    _VERIFIED.add(token)


def _download(remote: Remote, path: Path) -> None:
    """Download ``remote.url``, check its sha256, convert if needed, and move it to ``path`` atomically."""
    url = remote.url
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError) as err:
        msg = (
            f"could not download {url} ({err}); place the file at {path} "
            f"or set LAVA_DATA_DIR to a directory that holds {remote.filename}."
        )
        raise ConnectionError(msg) from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != remote.sha256:
        msg = (
            f"the file downloaded from {url} has sha256 {digest}, expected {remote.sha256}; the source changed or "
            f"the download was damaged. Nothing was saved; place a good copy at {path}."
        )
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        if remote.convert is None:
            tmp.write_bytes(raw)
        else:
            arrays = remote.convert(raw)
            if remote.content_sha256 is not None and _sha256_arrays(arrays) != remote.content_sha256:
                msg = f"converting {url} gave arrays that differ from the pinned ones; place a good copy at {path}."
                raise ValueError(msg)
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(name: str) -> Path:
    """Return the path of dataset ``name`` in the cache, downloading (and checking) it first when missing.

    Parameters
    ----------
    name
        A key of :data:`REGISTRY`: ``"mnist"``, ``"kidney_immune"``, ``"go_bp_human"``.

    Returns
    -------
    Path of the verified cache file.
    """
    if name not in REGISTRY:
        msg = f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}."
        raise KeyError(msg)
    remote = REGISTRY[name]
    path = data_dir() / remote.filename
    if not path.is_file():
        if remote.url is None:
            msg = f"{remote.filename} is not in lava's data cache; place it at {path} (or set LAVA_DATA_DIR to a "
            msg += f"directory that holds it). {remote.where_to_get}"
            raise FileNotFoundError(msg)
        start = logg.info(f"downloading {remote.url} to {path}")
        _download(remote, path)
        logg.finished(start)
    _verify_cached(path, remote)
    return path


@doc_params()
def mnist(embedding: Literal["umap"] | None = None, *, n_obs: int | None = None, rng: RngLike = 0):
    """MNIST handwritten digits (LeCun, Cortes & Burges; CC BY-SA 3.0), one image per sample, one pixel per feature.

    The cache holds ``mnist.npz`` (``images`` uint8 (70000, 784), ``labels`` uint8 (70000,); rows 0-59999 are the
    official training set, 60000-69999 the test set, in their original order). When missing, it is converted from
    Keras' ``mnist.npz`` (``storage.googleapis.com/tensorflow/tf-keras-datasets``, sha256 pinned).

    Parameters
    ----------
    embedding
        ``"umap"``: add ``obsm["X_umap"]``, a UMAP of the pixels (umap-learn, default parameters, ``random_state``
        = the seed). It is cached in the data directory per ``n_obs`` and seed, so a second call is fast.
    n_obs
        Keep this many images, drawn at random without replacement (in their original order); default all 70000.
    {rng}
        Used for the subset and the UMAP.

    Returns
    -------
    AnnData (n_obs x 784) with ``X`` float32 pixel intensities in [0, 1] (the uint8 values / 255);
    ``obs_names`` the image's row in the full set; ``obs["label"]`` categorical digit ``"0"`` ... ``"9"``;
    ``obs["split"]`` categorical ``"train"`` / ``"test"``; ``var_names`` ``"px_<row>_<col>"`` (``"px_0_0"`` ...
    ``"px_27_27"``, row-major); ``uns["image_shape"]`` int array ``[28, 28]``; ``obsm["X_umap"]`` float32
    (n_obs, 2) when ``embedding="umap"``.
    """
    import anndata as ad

    if embedding not in (None, "umap"):
        msg = f"embedding must be None or 'umap', got {embedding!r}."
        raise ValueError(msg)
    if n_obs is not None and (isinstance(n_obs, bool) or not isinstance(n_obs, int | np.integer) or n_obs < 1):
        msg = f"n_obs must be a positive integer or None, got {n_obs!r}."
        raise ValueError(msg)
    seed = as_seed(rng)
    path = fetch("mnist")
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    total = images.shape[0]
    if n_obs is not None and n_obs > total:
        msg = f"n_obs = {n_obs} exceeds the {total} MNIST images; pass n_obs <= {total} or None."
        raise ValueError(msg)
    if n_obs is None or n_obs == total:
        rows = np.arange(total)
    else:
        rows = np.sort(as_generator(seed).choice(total, size=n_obs, replace=False))
    X = images[rows].astype(np.float32) / np.float32(255.0)
    obs = pd.DataFrame(
        {
            "label": pd.Categorical(labels[rows].astype(str), categories=[str(d) for d in range(10)]),
            "split": pd.Categorical(np.where(rows < 60000, "train", "test"), categories=["train", "test"]),
        },
        index=pd.Index(rows.astype(str)),
    )
    var_names = [f"px_{r}_{c}" for r in range(28) for c in range(28)]
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(var_names)))
    adata.uns["image_shape"] = np.array([28, 28])
    if embedding == "umap":
        adata.obsm["X_umap"] = _mnist_umap(X, len(rows), seed)
    return adata


def _mnist_umap(X: np.ndarray, n_obs: int, seed: int) -> np.ndarray:
    cache = data_dir() / f"mnist_umap_n{n_obs}_seed{seed}.npy"
    if cache.is_file():
        Z = np.load(cache)
        if Z.shape == (n_obs, 2):
            return Z.astype(np.float32)
        logg.warning(f"ignoring {cache}: shape {Z.shape}, expected {(n_obs, 2)}; recomputing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportWarning)  # umap-learn announces that TensorFlow is missing
        from umap import UMAP

    start = logg.info(f"computing UMAP of {n_obs} MNIST images")
    with warnings.catch_warnings():
        # umap-learn warns that a random_state forces one thread, which is what reproducibility needs
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        Z = UMAP(n_components=2, random_state=seed).fit_transform(X).astype(np.float32)
    logg.finished(start)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.part")
        with open(tmp, "wb") as f:
            np.save(f, Z)
        os.replace(tmp, cache)
    except OSError as err:
        logg.warning(f"could not cache the UMAP at {cache} ({err}); it will be recomputed next time")
    return Z


def kidney_immune():
    """Human kidney immune cells (1000 cells x 19969 genes), as shipped with ktplotspy (MIT).

    Log-normalised expression of kidney immune cells from several tissue and disease sources (``obs["Experiment"]``),
    ktplotspy's example data. The download is the raw file ``data/kidneyimmune.h5ad`` of ktplotspy's GitHub repository, checked against the
    sha256 of the copy in ktplotspy 0.3.5.

    Returns
    -------
    AnnData (1000 x 19969): ``X`` and ``layers["logcounts"]`` log-normalised; ``obsm["X_umap"]``, ``obsm["X_pca"]``;
    ``obs["celltype"]`` (12 types), ``obs["compartment"]``, ``obs["Experiment"]`` (tissue / disease source),
    ``obs["Project"]``.
    """
    import anndata as ad

    path = fetch("kidney_immune")
    with warnings.catch_warnings():
        # the file predates anndata's encoding metadata; it reads correctly
        warnings.filterwarnings("ignore", message=".*without encoding metadata")
        return ad.read_h5ad(path)


def go_bp_human() -> dict[str, list[str]]:
    """Gene Ontology biological-process gene sets for human gene symbols (5233 terms of 15-500 genes).

    Built from Bioconductor ``org.Hs.eg.db`` 3.16.0 and ``GO.db`` 3.16.0 (GO release 2022-07-01, ancestor-
    propagated). No public URL serves this build: the loader reads ``go_bp_human.gmt`` from the data cache and
    otherwise raises an error that says where to put it.

    Returns
    -------
    dict mapping the term name (``"mitochondrial genome maintenance (GO:0000002)"``) to its genes, in file order.
    """
    return read_gmt(fetch("go_bp_human"))


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a GMT file (one gene set per line: name, description, genes, tab-separated) into a dict of gene lists.

    Offline (nothing is downloaded); the one reader of gene-set files in lava (:func:`lava.tl.enrich` and the command
    line use it too). Every field is stripped of surrounding whitespace and a leading byte-order mark is ignored.
    Blank lines and lines with a blank name are skipped, and so are sets without any gene (nothing to test). A name
    seen again adds its genes to the earlier set, and a gene listed twice in a set counts once (first position kept),
    so the result holds each set's distinct genes in file order.

    Parameters
    ----------
    path
        The GMT file.

    Returns
    -------
    dict mapping set name to its genes, sets in the order of their first line.

    Raises
    ------
    ValueError
        For a line with a name but no tab (not GMT: often a file separated by spaces), naming the line; and when the
        file holds no gene set at all.
    """
    gene_sets: dict[str, list[str]] = {}
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            fields = [field.strip() for field in line.rstrip("\r\n").split("\t")]
            if not fields[0]:
                continue
            if len(fields) < 2:
                msg = f"{path}, line {lineno}: a GMT line needs a name, a description and genes, separated by tabs."
                raise ValueError(msg)
            genes = [g for g in fields[2:] if g]
            if genes:
                gene_sets[fields[0]] = list(dict.fromkeys(gene_sets.get(fields[0], []) + genes))
    if not gene_sets:
        msg = f"{path} holds no gene sets; a GMT line is: name <TAB> description <TAB> gene <TAB> gene ..."
        raise ValueError(msg)
    return gene_sets


def pbmc68k_reduced():
    """Load scanpy's shipped subset of 10x PBMC 68k (700 cells x 765 genes), offline.

    Returns
    -------
    AnnData from :func:`scanpy.datasets.pbmc68k_reduced` (``obsm["X_umap"]``, ``obs["bulk_labels"]``,
    scaled ``X``, log-normalised ``raw``).
    """
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced()
