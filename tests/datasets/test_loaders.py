from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.error
import warnings

import numpy as np
import pytest

import lava
from data_helpers import skip_without_data
from lava.datasets import _loaders


@pytest.fixture
def needs_mnist():
    skip_without_data("mnist.npz")


@pytest.fixture
def needs_kidneyimmune():
    skip_without_data("kidneyimmune.h5ad")


@pytest.fixture
def needs_go_bp_human():
    skip_without_data("go_bp_human.gmt")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAVA_DATA_DIR", str(cache))
    monkeypatch.setattr(_loaders, "_VERIFIED", set())
    return cache


def _serve(monkeypatch, payload: bytes) -> list[str]:
    """Make urlopen return ``payload``; returns the list of requested URLs."""
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        assert timeout is not None  # downloads must not hang forever
        return io.BytesIO(payload)

    monkeypatch.setattr(_loaders.urllib.request, "urlopen", fake_urlopen)
    return calls


def _offline(monkeypatch):
    def fake_urlopen(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(_loaders.urllib.request, "urlopen", fake_urlopen)


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LAVA_DATA_DIR", str(tmp_path / "x"))
    assert lava.datasets.data_dir() == tmp_path / "x"
    monkeypatch.delenv("LAVA_DATA_DIR")
    default = lava.datasets.data_dir()
    assert "lava" in str(default)
    assert default != tmp_path / "x"


@pytest.mark.usefixtures("needs_mnist")
def test_mnist_from_cache():
    adata = lava.datasets.mnist()
    assert adata.shape == (70000, 784)
    assert adata.X.dtype == np.float32
    assert adata.X.min() == 0.0
    assert adata.X.max() == 1.0
    assert adata.var_names[0] == "px_0_0"
    assert adata.var_names[29] == "px_1_1"
    assert adata.var_names[-1] == "px_27_27"
    np.testing.assert_array_equal(adata.uns["image_shape"], [28, 28])
    assert list(adata.obs["label"].cat.categories) == [str(d) for d in range(10)]
    assert adata.obs["label"].iloc[:5].tolist() == ["5", "0", "4", "1", "9"]  # the official training order
    assert adata.obs["label"].iloc[60000:60003].tolist() == ["7", "2", "1"]  # then the test set
    assert (adata.obs["split"] == "train").sum() == 60000
    raw = np.load(lava.datasets.data_dir() / "mnist.npz")
    np.testing.assert_allclose(adata.X[123], raw["images"][123] / 255.0, rtol=1e-6)


@pytest.mark.usefixtures("needs_mnist")
def test_mnist_subset_is_seeded():
    a = lava.datasets.mnist(n_obs=300, rng=1)
    b = lava.datasets.mnist(n_obs=300, rng=1)
    c = lava.datasets.mnist(n_obs=300, rng=2)
    assert a.n_obs == 300
    assert list(a.obs_names) == list(b.obs_names)
    assert list(a.obs_names) != list(c.obs_names)
    rows = a.obs_names.astype(int).to_numpy()
    assert (np.diff(rows) > 0).all()
    full = np.load(lava.datasets.data_dir() / "mnist.npz")
    np.testing.assert_array_equal(a.obs["label"].astype(int).to_numpy(), full["labels"][rows])
    with pytest.raises(ValueError, match="n_obs"):
        lava.datasets.mnist(n_obs=70001)
    with pytest.raises(ValueError, match="embedding"):
        lava.datasets.mnist(embedding="tsne")


@pytest.mark.usefixtures("needs_mnist")
def test_mnist_umap_is_cached(monkeypatch, tmp_path):
    """The UMAP is computed once per (n_obs, seed) and read back afterwards (umap-learn replaced by a stub)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportWarning)
        import umap

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").symlink_to(lava.datasets.data_dir() / "mnist.npz")
    monkeypatch.setenv("LAVA_DATA_DIR", str(cache))
    fits = []

    class FakeUMAP:
        def __init__(self, n_components=2, random_state=None):
            self.random_state = random_state

        def fit_transform(self, X):
            fits.append((X.shape, self.random_state))
            return X[:, 300:302].astype(np.float64) + self.random_state

    monkeypatch.setattr(umap, "UMAP", FakeUMAP)
    a = lava.datasets.mnist("umap", n_obs=50, rng=3)
    b = lava.datasets.mnist("umap", n_obs=50, rng=3)
    assert fits == [((50, 784), 3)]
    np.testing.assert_array_equal(a.obsm["X_umap"], b.obsm["X_umap"])
    assert a.obsm["X_umap"].dtype == np.float32
    assert (cache / "mnist_umap_n50_seed3.npy").is_file()
    lava.datasets.mnist("umap", n_obs=50, rng=4)
    assert len(fits) == 2


@pytest.mark.slow
@pytest.mark.usefixtures("needs_mnist")
def test_mnist_real_umap(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").symlink_to(lava.datasets.data_dir() / "mnist.npz")
    monkeypatch.setenv("LAVA_DATA_DIR", str(cache))
    adata = lava.datasets.mnist("umap", n_obs=500, rng=0)
    Z = adata.obsm["X_umap"]
    assert Z.shape == (500, 2)
    assert np.isfinite(Z).all()
    # digits form clusters: a sample's nearest embedded neighbour mostly shares its label
    d = ((Z[:, None] - Z[None]) ** 2).sum(axis=2)
    np.fill_diagonal(d, np.inf)
    labels = adata.obs["label"].to_numpy()
    assert (labels[d.argmin(axis=1)] == labels).mean() > 0.6  # chance: about 0.1


@pytest.mark.usefixtures("needs_kidneyimmune")
def test_kidney_immune():
    adata = lava.datasets.kidney_immune()
    assert adata.shape == (1000, 19969)
    assert "X_umap" in adata.obsm
    assert adata.obs["celltype"].nunique() == 12
    assert "logcounts" in adata.layers


@pytest.mark.usefixtures("needs_go_bp_human")
def test_go_bp_human():
    sets = lava.datasets.go_bp_human()
    assert len(sets) == 5233
    genes = sets["mitochondrial genome maintenance (GO:0000002)"]
    assert genes[:3] == ["AKT3", "DNA2", "DNAJA3"]
    sizes = np.array([len(v) for v in sets.values()])
    assert sizes.min() >= 15
    assert sizes.max() <= 500


def test_read_gmt(tmp_path):
    path = tmp_path / "x.gmt"
    path.write_text("set A\tdesc\tG1\tG2\tG3\n\nset B\thttp://x\tG2\t\n")
    assert lava.datasets.read_gmt(path) == {"set A": ["G1", "G2", "G3"], "set B": ["G2"]}
    path.write_text("set A\tdesc\tG1\nlonely\n")
    with pytest.raises(ValueError, match="line 2"):
        lava.datasets.read_gmt(path)


def test_read_gmt_semantics(tmp_path):
    # one reader for lava.datasets, lava.tl.enrich and the command line: fields stripped, a BOM ignored, blank lines,
    # blank names and sets without genes skipped, a repeated name merged, a repeated gene counted once
    from lava.tl import _modules

    assert _modules.read_gmt is lava.datasets.read_gmt
    path = tmp_path / "x.gmt"
    path.write_bytes(
        b"\xef\xbb\xbfset A \t desc\t G1\tG2 \tG1\r\n"
        b"  \t\n"
        b"\tdesc\tG9\n"
        b"empty\tno genes\t\t\n"
        b"named only\tdesc\n"
        b"set B\td\tG3\n"
        b"set A\tagain\tG2\tG4\n"
    )
    sets = lava.datasets.read_gmt(path)
    assert sets == {"set A": ["G1", "G2", "G4"], "set B": ["G3"]}
    assert list(sets) == ["set A", "set B"]
    path.write_text("\n\nonly\tdescriptions\n")
    with pytest.raises(ValueError, match="holds no gene sets"):
        lava.datasets.read_gmt(path)
    path.write_text("SET desc G1 G2\n")  # separated by spaces, not tabs
    with pytest.raises(ValueError, match=r"line 1.*tabs"):
        lava.datasets.read_gmt(path)


def test_pbmc68k_reduced():
    adata = lava.datasets.pbmc68k_reduced()
    assert adata.shape == (700, 765)
    assert "X_umap" in adata.obsm
    assert "bulk_labels" in adata.obs


def test_offline_error_names_the_fix(empty_cache, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(ConnectionError, match="could not download") as info:
        lava.datasets.kidney_immune()
    message = str(info.value)
    assert str(empty_cache / "kidneyimmune.h5ad") in message
    assert "LAVA_DATA_DIR" in message
    with pytest.raises(ConnectionError, match="could not download"):
        lava.datasets.mnist()
    assert not empty_cache.exists() or not any(empty_cache.iterdir())


def test_go_bp_without_cache_explains(empty_cache):
    with pytest.raises(FileNotFoundError, match=r"go_bp_human\.gmt") as info:
        lava.datasets.go_bp_human()
    assert str(empty_cache / "go_bp_human.gmt") in str(info.value)
    assert "LAVA_DATA_DIR" in str(info.value)


def test_download_checks_the_pinned_hash(empty_cache, monkeypatch):
    payload = b"tiny fake dataset\n"
    good = hashlib.sha256(payload).hexdigest()
    remote = _loaders.Remote(filename="tiny.txt", url="https://example.org/tiny.txt", sha256=good, size=len(payload))
    monkeypatch.setitem(_loaders.REGISTRY, "tiny", remote)
    calls = _serve(monkeypatch, payload)
    path = _loaders.fetch("tiny")
    assert path == empty_cache / "tiny.txt"
    assert path.read_bytes() == payload
    assert calls == ["https://example.org/tiny.txt"]
    # the second call reads the cache, no download
    assert _loaders.fetch("tiny") == path
    assert len(calls) == 1
    assert [p.name for p in empty_cache.iterdir()] == ["tiny.txt"]  # no temporary files left behind

    # a wrong pin: the download is refused and nothing is saved
    bad = _loaders.Remote(filename="tiny2.txt", url="https://example.org/tiny.txt", sha256="0" * 64)
    monkeypatch.setitem(_loaders.REGISTRY, "tiny2", bad)
    with pytest.raises(ValueError, match="sha256"):
        _loaders.fetch("tiny2")
    assert not (empty_cache / "tiny2.txt").exists()
    assert sorted(p.name for p in empty_cache.iterdir()) == ["tiny.txt"]


def test_corrupt_cache_file_names_the_file(empty_cache, monkeypatch):
    payload = b"0123456789"
    remote = _loaders.Remote(filename="tiny.txt", url=None, sha256=hashlib.sha256(payload).hexdigest(), size=10)
    monkeypatch.setitem(_loaders.REGISTRY, "tiny", remote)
    empty_cache.mkdir()
    path = empty_cache / "tiny.txt"
    path.write_bytes(b"0123456780")  # same size, other content: caught by the hash
    with pytest.raises(ValueError, match="corrupt") as info:
        _loaders.fetch("tiny")
    assert f"delete {path}" in str(info.value)
    path.write_bytes(b"01234")  # wrong size: caught before hashing
    with pytest.raises(ValueError, match="5 bytes"):
        _loaders.fetch("tiny")
    path.write_bytes(payload)
    assert _loaders.fetch("tiny") == path


def test_corrupt_kidney_cache(empty_cache):
    empty_cache.mkdir()
    path = empty_cache / "kidneyimmune.h5ad"
    path.write_bytes(b"not an h5ad")
    with pytest.raises(ValueError, match=re.escape(f"delete {path}")):
        lava.datasets.kidney_immune()


def test_corrupt_mnist_cache(empty_cache):
    empty_cache.mkdir()
    path = empty_cache / "mnist.npz"
    path.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(ValueError, match="corrupt"):
        lava.datasets.mnist()
    images = np.zeros((3, 784), dtype=np.uint8)
    np.savez(path, images=images, labels=np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match=re.escape(f"delete {path}")):
        lava.datasets.mnist()


def _keras_npz(images: np.ndarray, labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=images[:4].reshape(-1, 28, 28),
        y_train=labels[:4],
        x_test=images[4:].reshape(-1, 28, 28),
        y_test=labels[4:],
    )
    return buf.getvalue()


def test_mnist_download_converts_keras_npz(empty_cache, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 784), dtype=np.uint8)
    labels = np.array([5, 0, 4, 1, 7, 2], dtype=np.uint8)
    payload = _keras_npz(images, labels)
    expected = _loaders._sha256_arrays({"images": images, "labels": labels})
    remote = _loaders.REGISTRY["mnist"]
    pinned = _loaders.Remote(
        filename=remote.filename,
        url=remote.url,
        sha256=hashlib.sha256(payload).hexdigest(),
        convert=remote.convert,
        content_sha256=expected,
    )
    monkeypatch.setitem(_loaders.REGISTRY, "mnist", pinned)
    _serve(monkeypatch, payload)
    adata = lava.datasets.mnist()
    assert adata.shape == (6, 784)
    np.testing.assert_allclose(adata.X, images / 255.0, rtol=1e-6)
    assert adata.obs["label"].tolist() == ["5", "0", "4", "1", "7", "2"]
    with np.load(empty_cache / "mnist.npz") as f:
        np.testing.assert_array_equal(f["images"], images)
        np.testing.assert_array_equal(f["labels"], labels)
    # converted arrays that differ from the pin are refused
    monkeypatch.setattr(_loaders, "_VERIFIED", set())
    os.remove(empty_cache / "mnist.npz")
    monkeypatch.setitem(
        _loaders.REGISTRY,
        "mnist",
        _loaders.Remote(
            filename=remote.filename,
            url=remote.url,
            sha256=pinned.sha256,
            convert=remote.convert,
            content_sha256="f" * 64,
        ),
    )
    with pytest.raises(ValueError, match="differ from the pinned"):
        lava.datasets.mnist()
    assert not (empty_cache / "mnist.npz").exists()


@pytest.mark.usefixtures("needs_mnist")
def test_pinned_content_hash_matches_offline_copy():
    """The content pin of mnist.npz is the one of the offline copy (and of Keras' arrays, same order)."""
    with np.load(lava.datasets.data_dir() / "mnist.npz") as f:
        digest = _loaders._sha256_arrays({"images": f["images"], "labels": f["labels"]})
    assert digest == _loaders.REGISTRY["mnist"].content_sha256


def test_unknown_dataset():
    with pytest.raises(KeyError, match="unknown dataset"):
        _loaders.fetch("nope")


def test_registry_pins_are_sha256():
    for remote in _loaders.REGISTRY.values():
        assert len(remote.sha256) == 64
        int(remote.sha256, 16)
        assert remote.url is not None or remote.where_to_get
