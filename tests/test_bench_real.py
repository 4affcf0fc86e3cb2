"""The metrics of benchmarks/bench_real.py on hand-made inputs (the benchmark's own runs are not part of the suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_covered_cells_needs_one_locality_with_a_module_at_the_threshold(bench):
    indices = np.array([[0, 1], [1, 2], [3, 4]])
    presence = np.array([[0.6, 0.1], [0.2, 0.49], [0.0, 0.5]])  # max 0.6, 0.49, 0.5 (the threshold counts)
    covered = bench.covered_cells(indices, presence, n_obs=6)
    # cell 1 is in a covered and an uncovered locality; cell 2 only in the uncovered one; cell 5 in none
    np.testing.assert_array_equal(covered, [True, True, False, True, True, False])


def test_population_coverage(bench):
    labels = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 2 + ["rare"])  # rare: 1 of 11 cells, above 5%
    indices = np.array([[0, 1, 2], [4, 5, 8], [5, 6, 7], [9, 0, 1]])  # majorities: a, b (2 of 3), b, a (2 of 3)
    presence = np.array([[0.9, 0.0], [0.0, 0.3], [0.0, 0.7], [0.2, 0.1]])
    rows = {r["population"]: r for r in bench.population_coverage(indices, presence, labels)}
    assert set(rows) == {"a", "b", "c", "rare"}
    keys = ("n_localities", "has_module", "modules", "locality_coverage", "cell_coverage")

    def pick(row):
        return {k: row[k] for k in keys}

    # a: localities 0 and 3, only 0 covered; cells 0, 1, 2 covered (locality 0), cell 3 is in no locality
    assert pick(rows["a"]) == {"n_localities": 2, "has_module": True, "modules": [0],
                               "locality_coverage": 0.5, "cell_coverage": 0.75}  # fmt: skip
    # b: localities 1 (max 0.3) and 2; cells 5, 6, 7 covered, 4 not
    assert pick(rows["b"]) == {"n_localities": 2, "has_module": True, "modules": [1],
                               "locality_coverage": 0.5, "cell_coverage": 0.75}  # fmt: skip
    # c is the most frequent label of no locality: no module (and its cells 8, 9 are in uncovered ones)
    assert pick(rows["c"]) == {"n_localities": 0, "has_module": False, "modules": [],
                               "locality_coverage": 0.0, "cell_coverage": 0.0}  # fmt: skip
    assert rows["rare"]["share_of_cells"] == pytest.approx(1 / 11)
    assert rows["rare"]["cell_coverage"] == 0.0
    # below the minimum share a population is not scored
    rows = bench.population_coverage(indices, presence, labels, min_share=0.2)  # c: 2 of 11 cells
    assert {r["population"] for r in rows} == {"a", "b"}


def test_jaccard(bench):
    assert bench.jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert bench.jaccard([], []) == 0.0


def test_distinct_modules_greedy_in_the_given_order(bench):
    sets = [
        ["a", "b", "c", "d"],  # 0
        ["a", "b", "c", "e"],  # 1: Jaccard 3/5 = 0.6 with 0: a duplicate
        ["x", "y"],  # 2
        [],  # 3: empty, never kept
        ["x", "z"],  # 4: Jaccard 1/3 with 2: distinct
        ["a", "b", "f", "g"],  # 5: Jaccard 2/6 with 0 and with 1: distinct
        ["x", "y", "z", "w"],  # 6: Jaccard 2/4 = 0.5 with 2 (and 4): at the threshold, a duplicate
    ]
    kept, max_jac = bench.distinct_modules(sets)
    assert kept == [0, 2, 4, 5]
    assert max_jac == pytest.approx(0.6)
    kept, _ = bench.distinct_modules(sets, order=[1, 6, 0, 2, 3, 4, 5])
    assert kept == [1, 6, 5]  # 6 first swallows 2 and 4 (Jaccard 0.5 each)
    assert bench.distinct_modules([["a"], []]) == ([0], 0.0)


def test_leading_genes_are_the_genes_of_the_most_significant_term(bench):
    import pandas as pd

    table = pd.DataFrame(
        {
            "module": [0, 0, 0, 1],
            "term": ["b", "a", "c", "d"],
            "p_value": [1e-5, 1e-5, 1e-3, 0.2],
            "n_overlap": [2, 3, 4, 1],
            "genes": ["HLA-DRA;CD74", "HLA-DRA;CD74;HLA-DPB1", "GZMB;PRF1;NKG7;GNLY", "X"],
        }
    )
    assert bench.leading_genes(table, 0) == {"HLA-DRA", "CD74", "HLA-DPB1"}  # tied p: the term with more genes
    assert bench.leading_genes(table, 1) == {"X"}
    assert bench.leading_genes(table, 2) == set()
    # two lists that differ but are enriched through the same genes are one programme
    leads = [{"HLA-DRA", "CD74", "HLA-DPB1"}, {"HLA-DRA", "CD74", "HLA-DPB1", "HLA-DQA1"}, {"GZMB", "PRF1"}]
    assert bench.distinct_programmes(leads) == [0, 2]


def test_distinct_programmes_use_the_overlap_of_the_smaller_set(bench):
    hla = [f"HLA-{g}" for g in ("DRA", "DRB1", "DRB5", "DPA1", "DPB1", "DQA1", "DQA2", "DQB1", "DMA", "DMB")]
    leads = [set(hla), set(hla[:5]), set(hla[5:]), {"GZMA", "GZMB", "PRF1"}, set(), {"GZMB", "NKG7", "GNLY", "CST7"}]
    # halves of the MHC class II genes (Jaccard 0.5 with all ten, 0 with each other) are the same programme;
    # 1 of 3 cytotoxic genes shared (overlap 1/3) is another; an empty set never counts
    assert bench.distinct_programmes(leads) == [0, 3, 5]
    assert bench.distinct_programmes(leads, order=[1, 2, 0]) == [1, 2]  # the halves first: two, and all ten joins both
    # four of the ten: Jaccard 0.4 (distinct modules), overlap 1 (the same programme)
    assert bench.distinct_modules([set(hla), set(hla[:4])])[0] == [0, 1]
    assert bench.distinct_programmes([set(hla), set(hla[:4])]) == [0]


def test_matched_cosines_is_the_optimal_matching_not_the_greedy_one(bench):
    # cosines A x B = [[0.6, 0.5], [0.55, 0.0]]: greedy takes 0.6 then 0.0; the optimum 0.5 + 0.55
    A = np.eye(3)[:2]
    B = np.array([[0.6, 0.55, np.sqrt(1 - 0.6**2 - 0.55**2)], [0.5, 0.0, np.sqrt(0.75)]])
    np.testing.assert_allclose(bench.matched_cosines(A, B), [0.5, 0.55])
    # scale does not matter; a permutation is undone
    rng = np.random.default_rng(0)
    M = rng.uniform(size=(5, 40))
    perm = rng.permutation(5)
    np.testing.assert_allclose(bench.matched_cosines(M, 3 * M[perm]), np.ones(5))


def test_matched_share(bench):
    M = np.eye(4)
    other = M.copy()
    other[3] = [0.8, 0, 0, 0.6]  # cosine 0.6 with its match
    assert bench.matched_share(M, other) == 0.75
    assert bench.matched_share(M, np.zeros((4, 4))) == 0.0  # all-zero modules match nothing
    assert bench.matched_share(M[:2], M) == 0.5  # of the larger fit: 2 of 4 have a match


def test_background_features_are_those_in_a_nonzero_pair(bench):
    features = ["f0", "f1", "f2", "f3"]  # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    C = np.zeros((2, 6), dtype=np.float32)
    C[1, 4] = 0.3  # (1, 3)
    assert bench.background_features(C, features) == ["f1", "f3"]
    C[0, 2] = 0.1  # (0, 3)
    assert bench.background_features(C, features) == ["f0", "f1", "f3"]


def test_mnist_findings(bench):
    digits = np.repeat(np.arange(10), 10)  # 100 digits, 10 of each
    indices = np.arange(100).reshape(10, 10)  # locality d holds the digits d
    presence = np.zeros((10, 3))
    presence[[3, 5, 8], 0] = [1.0, 0.6, 0.5]  # module 0: digits 3, 5, 8 (0.5 = half of its largest)
    presence[[4, 7, 9, 1], 1] = [0.8, 0.8, 0.8, 0.39]  # module 1: 4, 7, 9 (1 is below half)
    presence[:, 2] = 0.5  # module 2: every digit (more than 5): shared by nothing in particular
    found = bench.mnist_findings(indices, presence, digits)
    assert found["module_digits"][0] == [3, 5, 8]
    assert found["module_digits"][1] == [4, 7, 9]
    assert (found["shared_358"], found["shared_479"]) == ([0], [1])
    presence[8, 0] = 0.49
    assert bench.mnist_findings(indices, presence, digits)["shared_358"] == []


def test_best_of_groups_keeps_the_lowest_loss_and_the_medoid(bench):
    from types import SimpleNamespace

    # one placement, seeds 0-3 in groups of 2: (0, 1) and (2, 3). Lowest loss keeps 1 and 2; the medoid of a pair is
    # a tie (both have the same closeness), so the lower loss again: 1 and 2. With R = 4 the medoid is seed 3, which
    # is closest to the others, while seed 1 has the lowest loss.
    cos = {(0, 1): 0.5, (0, 2): 0.5, (0, 3): 0.8, (1, 2): 0.4, (1, 3): 0.9, (2, 3): 0.9}
    share = {(0, 1): 0.1, (0, 2): 0.2, (0, 3): 0.3, (1, 2): 0.4, (1, 3): 0.5, (2, 3): 0.6}
    pairs = [{"placement_seed": 0, "seeds": [a, b], "mean_cosine": cos[a, b], "share": share[a, b]} for a, b in cos]
    runs = [{"placement_seed": 0, "seed": s, "loss": loss} for s, loss in enumerate([0.3, 0.1, 0.2, 0.25])]
    args = SimpleNamespace(group_best=[1, 2, 4], seeds=[0, 1, 2, 3], placement_seeds=[0])
    out = bench.best_of_groups(pairs, runs, args)
    assert set(out) == {"1", "2"}  # R = 4 leaves one group: nothing to compare
    assert out["2"]["kept_seeds"] == {"loss": {"0": [1, 2]}, "medoid": {"0": [1, 2]}}
    assert out["2"]["loss_share_mean"] == out["2"]["medoid_share_mean"] == pytest.approx(0.4)
    assert out["1"]["loss_share_mean"] == pytest.approx(np.mean(list(share.values())))
    args.group_best, args.seeds = [4], [0, 1, 2, 3, 0, 1, 2, 3]  # two groups of the same 4 fits
    pairs += [{"placement_seed": 0, "seeds": [s, s], "mean_cosine": 1.0, "share": 1.0} for s in range(4)]
    kept = bench.best_of_groups(pairs, runs, args)["4"]["kept_seeds"]
    assert kept == {"loss": {"0": [1, 1]}, "medoid": {"0": [3, 3]}}


def test_bench_reproducibility_counts_other_calls_and_bins_by_reproducibility(monkeypatch):
    import sys

    monkeypatch.syspath_prepend(str(PATH.parent))  # bench_reproducibility imports bench_real by name
    spec = importlib.util.spec_from_file_location("bench_reproducibility", PATH.parent / "bench_reproducibility.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("bench_real", None)
    a = np.eye(3)
    # call 1 has all three of call 0's modules (its third at cosine 0.9 / sqrt(0.99) = 0.905); call 2 only the first
    # (its others are at cosine 0.71 to modules 1 and 2)
    b = np.array([[1, 0, 0], [0, 1, 0], [0.3, 0.3, 0.9]])
    c = np.array([[1, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5]])
    found = module.found_by_other_calls([a, b, c])
    np.testing.assert_allclose(found[0], [1.0, 0.5, 0.5])
    rows = module.by_bin([np.array([0.0, 0.6, 1.0]), np.array([1.0, 1.0, 0.25])], [found[0], found[1]])
    assert [r["n_modules"] for r in rows] == [2, 1, 3]
    assert rows[0]["found"] == pytest.approx((1.0 + found[1][2]) / 2)
    assert rows[1]["found"] == pytest.approx(0.5)


def test_score_reference_scores_a_peers_programmes_as_lavas_modules(bench):
    # 10 cells: a (4), b (4), rare (2); programme 0 scores high on a's cells, programme 1 on one b cell only
    labels = np.array(["a"] * 4 + ["b"] * 4 + ["rare"] * 2)
    scores = np.zeros((10, 3))
    scores[:4, 0] = 5.0
    scores[4, 1] = 5.0
    genes = [["G1", "G2", "G3", "G4"], ["G1", "G2", "G3", "G5"], ["X1", "X2"]]  # 0 and 1: Jaccard 3/5
    go = {"set one": ["G1", "G2", "G3"], "set two": ["X1", "X2", "Y1"]}
    background = ["G1", "G2", "G3", "G4", "G5", "X1", "X2", "Y1", "Y2", "Y3", "Y4", "Y5"]
    row = bench.score_reference("pbmc", "peer", genes, scores, labels, go, background, ids=[7, 8, 9])
    assert (row["n_modules"], row["distinct_modules"], row["max_jaccard"]) == (3, 2, pytest.approx(0.6))
    pops = {p["population"]: p for p in row["populations"]}
    # z over cells: programme 0 is 1.22 SD up on a's cells; programme 1 on cell 4 only (median over b is below 1)
    assert (pops["a"]["has_module"], pops["a"]["modules"], pops["a"]["cell_coverage"]) == (True, [7], 1.0)
    assert (pops["b"]["has_module"], pops["b"]["cell_coverage"]) == (False, 0.25)
    assert (row["coverage"], row["populations_with_module"]) == (pytest.approx(0.5), 1)
    # GO: with 12 background genes, set s (5 genes) holds 4 of programme 0's and 4 of programme 1's genes:
    # P(X >= 4) = C(5, 4) / C(12, 4) = 5 / 495 for both (one set: BH leaves p); programme 2 shares no gene
    sets = {"s": ["G1", "G2", "G3", "G4", "G5"], "t": ["Y1", "Y2", "Y3", "Y4", "Y5"]}
    row = bench.score_reference("pbmc", "peer", genes, scores, labels, sets, background, ids=[7, 8, 9])
    assert (row["go_significant"], row["distinct_go"], row["go_background"]) == (2, 1, 12)
    assert row["go_top_terms"] == {7: ["s", "t"], 8: ["s", "t"]}
    # different lists, and leading genes G1-G4 and G1-G3 + G5 (Jaccard 0.6): one enriched programme
    assert row["go_leading_genes"] == {7: ["G1", "G2", "G3", "G4"], 8: ["G1", "G2", "G3", "G5"]}
    assert row["go_programmes"] == 1
    # without GO sets (MNIST) there are no GO columns
    assert "go_significant" not in bench.score_reference("mnist", "peer", genes, scores, labels, None, background)
