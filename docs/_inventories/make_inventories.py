"""Write the offline intersphinx inventories in this folder (run after editing OBJECTS; the .inv files are committed).

docs/conf.py links to anndata, scanpy, numpy and pandas through intersphinx. A build first fetches each project's
full ``objects.inv``; where it cannot (a build machine without internet), it falls back to these small inventories,
which hold the objects lava's pages and docstrings refer to, at the addresses of each project's stable docs.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: project -> (name, role, page relative to the project's docs root)
OBJECTS: dict[str, list[tuple[str, str, str]]] = {
    "anndata": [
        ("anndata.AnnData", "class", "generated/anndata.AnnData.html"),
        ("anndata.experimental.read_lazy", "function", "generated/anndata.experimental.read_lazy.html"),
    ],
    "scanpy": [
        ("scanpy.pl.embedding", "function", "api/scanpy.pl.embedding.html"),
        ("scanpy.pl.umap", "function", "api/scanpy.pl.umap.html"),
        ("scanpy.pp.highly_variable_genes", "function", "api/scanpy.pp.highly_variable_genes.html"),
    ],
    "numpy": [
        ("numpy.ndarray", "class", "reference/generated/numpy.ndarray.html"),
        ("numpy.memmap", "class", "reference/generated/numpy.memmap.html"),
        ("numpy.random.Generator", "class", "reference/random/generator.html"),
        ("numpy.triu_indices", "function", "reference/generated/numpy.triu_indices.html"),
    ],
    "pandas": [
        ("pandas.DataFrame", "class", "reference/api/pandas.DataFrame.html"),
        ("pandas.Series", "class", "reference/api/pandas.Series.html"),
    ],
}


def write(project: str, objects: list[tuple[str, str, str]]) -> Path:
    header = f"# Sphinx inventory version 2\n# Project: {project}\n# Version: stable\n"
    header += "# The remainder of this file is compressed using zlib.\n"
    # "name domain:role priority uri dispname"; "$" in the uri stands for the name (the anchor), "-" for dispname
    body = "".join(f"{name} py:{role} 1 {page}#$ -\n" for name, role, page in sorted(objects))
    path = HERE / f"{project}.inv"
    path.write_bytes(header.encode() + zlib.compress(body.encode()))
    return path


if __name__ == "__main__":
    for project, objects in OBJECTS.items():
        print(write(project, objects))
