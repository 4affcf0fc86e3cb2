"""One command for the whole benchmark suite: every LAVA step at named sizes, with references measured in the same run.

Sizes (``lava.datasets.synthetic`` counts-like data, CSR, sparsity 0.7: about 70% zeros, as single-cell HVGs):

  small  10,000 x 500,   n = 200,  o = 3,  M = 9   (a smoke size, minutes)
  mnist  the real 70,000 x 784 MNIST pixels (``lava.datasets.mnist(embedding="umap")``), n = 3000, o = 12, M = 9
  kpmp   225,000 x 1000, n = 500,  o = 3,  M = 9   (KPMP-like: the paper's cell count, 1000 HVGs)
  wide   225,000 x 2000, n = 500,  o = 3,  M = 9   (2M pairs; C is 10.8 GB in float32, kept in a zarr store)
  million 1,000,000 x 1000, n = 500, o = 3         (memory check of placement and correlations; C in a zarr store)

Steps, each in its own subprocess (so its peak RSS is its own, inputs included), in this order per size:

  data          generate (or load) X and the embedding, save them to the work directory (not part of the pipeline)
  placement     ``lava.core.place_localities`` at the default budget (the pipeline's localities)
  placement_ref lava and the straightforward reference (a full scikit-learn KMeans fit per DIRECT evaluation, same
                budget, ``bench_placement.run_reference``) at ``--ref-maxfun`` evaluations
  correlations  ``lava.core.locality_correlations`` on the placement's localities; reference: the bare float32
                batched products ``R R^T`` of the same shapes and batches (``bench_correlations``), alternating
                chunks of both so that both see the same machine load
  amf           ``lava.core.fit_amf(C, M)`` (at most ``--amf-max-epochs`` epochs per size); reference: torch autograd
                on the materialised (batch x M x P) product (``bench_amf.naive_epoch``), timed on a few steps and
                extrapolated to the same number of epochs

    python benchmarks/run.py                                  # small and mnist
    python benchmarks/run.py --sizes kpmp --amf-max-epochs 3  # the atlas size (tens of minutes on 2 cores)
    python benchmarks/run.py --sizes small --steps data correlations

Writes ``benchmarks/out/run/results.json`` (every measurement, appended per size and step so that a partial run
keeps what finished) and ``benchmarks/out/run/results.md`` (the table). Intermediate arrays go to
``benchmarks/out/run/<size>/``. Copy the table to ``benchmarks/RESULTS.md`` with the machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "run"
SIZES = {
    "small": {"E": 10_000, "D": 500, "n": 200, "o": 3.0, "M": 9, "amf_max_epochs": 20},
    "mnist": {"E": 70_000, "D": 784, "n": 3000, "o": 12.0, "M": 9, "amf_max_epochs": 5},
    "kpmp": {"E": 225_000, "D": 1000, "n": 500, "o": 3.0, "M": 9, "amf_max_epochs": 3},
    "wide": {"E": 225_000, "D": 2000, "n": 500, "o": 3.0, "M": 9, "amf_max_epochs": 1},
    "million": {"E": 1_000_000, "D": 1000, "n": 500, "o": 3.0, "M": 9, "amf_max_epochs": 1},
}
STEPS = ["data", "placement", "correlations", "amf", "placement_ref"]
SPARSITY = 0.7


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _work(size: str) -> Path:
    path = OUT / size
    path.mkdir(parents=True, exist_ok=True)
    return path


def _zarr(size: str, args) -> bool:
    return size in ("wide", "million") or args.zarr


def _load_X(size: str):
    from scipy import sparse

    work = _work(size)
    if (work / "X.npz").exists():
        return sparse.load_npz(work / "X.npz")
    return np.load(work / "X.npy")


# ---------------------------------------------------------------------------------------------------------------
# steps (run in a child process)


def step_data(size: str, spec: dict, args) -> dict:
    from scipy import sparse

    import lava

    work = _work(size)
    start = time.perf_counter()
    if size == "mnist":
        adata = lava.datasets.mnist(embedding="umap")
    else:
        adata = lava.datasets.synthetic(spec["E"], spec["D"], spec["M"], sparsity=SPARSITY, rng=0)
    seconds = time.perf_counter() - start
    X = adata.X
    if sparse.issparse(X):
        sparse.save_npz(work / "X.npz", X.tocsr(), compressed=False)
        density = X.nnz / np.prod(X.shape)
    else:
        np.save(work / "X.npy", np.asarray(X, dtype=np.float32))
        density = np.count_nonzero(X) / X.size
    np.save(work / "Z.npy", np.asarray(adata.obsm["X_umap"], dtype=np.float64))
    return {"seconds": seconds, "E": adata.n_obs, "D": adata.n_vars, "density": float(density)}


def step_placement(size: str, spec: dict, args) -> dict:
    from lava.core import place_localities

    Z = np.load(_work(size) / "Z.npy")
    start = time.perf_counter()
    res = place_localities(Z, spec["n"], spec["o"], rng=0, maxfun=args.maxfun)
    seconds = time.perf_counter() - start
    np.save(_work(size) / "indices.npy", res.indices)
    return {
        "seconds": seconds,
        "l": int(res.indices.shape[0]),
        "loss": float(res.loss),
        "loss_unoptimized": float(res.loss_unoptimized),
        "n_evaluations": int(res.n_evaluations),
        "maxfun": args.maxfun,
    }


def step_placement_ref(size: str, spec: dict, args) -> dict:
    """Lava and the reference at the same budget, each in its own grandchild process (own peak memory)."""
    rows = {}
    for method in ("lava", "reference"):
        proc = subprocess.run(
            [sys.executable, __file__, "--placement-worker", json.dumps([size, method, args.ref_maxfun])],
            capture_output=True,
            text=True,
            check=True,
        )
        rows[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    lava_row, ref = rows["lava"], rows["reference"]
    return {
        "maxfun": args.ref_maxfun,
        "lava": lava_row,
        "reference": ref,
        "seconds": lava_row["seconds"],
        "reference_seconds": ref["seconds"],
        "speedup": ref["seconds"] / lava_row["seconds"],
        "loss_vs_reference": lava_row["loss"] / ref["loss"] - 1.0,
        "peak_rss_gib": lava_row["peak_rss_gib"],
        "reference_peak_rss_gib": ref["peak_rss_gib"],
    }


def _placement_worker(size: str, method: str, maxfun: int) -> None:
    sys.path.insert(0, str(HERE))
    import bench_placement

    spec = SIZES[size]
    Z = np.load(_work(size) / "Z.npy")
    fn = bench_placement.run_lava if method == "lava" else bench_placement.run_reference
    out = fn(Z, spec["n"], spec["o"], maxfun, 0)
    out["peak_rss_gib"] = _peak_gib()
    print(json.dumps(out))


def step_correlations(size: str, spec: dict, args) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from bench_correlations import time_interleaved

    from lava.core import locality_correlations
    from lava.core.correlations import _auto_batch_size

    X = _load_X(size)
    idx = np.load(_work(size) / "indices.npy")
    P = X.shape[1] * (X.shape[1] - 1) // 2
    store = None
    if _zarr(size, args):  # C written batch by batch into a chunked on-disk store, never whole in memory
        import shutil

        import zarr

        shutil.rmtree(_work(size) / "C.zarr", ignore_errors=True)
        store = zarr.create_array(
            _work(size) / "C.zarr", shape=(idx.shape[0], P), chunks=(1, P), dtype="float32", fill_value=0
        )
    start = time.perf_counter()
    C = locality_correlations(X, idx, device="cpu", out=store)
    seconds = time.perf_counter() - start
    peak = _peak_gib()
    nonzero = n_nonzero = 0
    for r0 in range(0, C.shape[0], 64):
        block = np.asarray(C[r0 : r0 + 64])
        nonzero = nonzero | block.any(axis=0)
        n_nonzero += int(np.count_nonzero(block))
    out = {
        "seconds": seconds,
        "peak_rss_gib": peak,
        "l": int(C.shape[0]),
        "P": int(C.shape[1]),
        "C_gib": C.shape[0] * C.shape[1] * 4 / 2**30,
        "C_store": "zarr" if store is not None else "memory",
        "nonzero_fraction": n_nonzero / (C.shape[0] * C.shape[1]),
        "pairs_nonzero_somewhere": int(np.count_nonzero(nonzero)),
    }
    if args.save_C and store is None:
        np.save(_work(size) / "C.npy", C)
    del C
    if not args.no_references:
        batch_size = _auto_batch_size(idx.shape[1], X.shape[1], 4, torch.device("cpu"))
        t_lava, t_bare = time_interleaved(X, idx, batch_size, args.rounds, "cpu", np.random.default_rng(0))
        out.update(
            interleaved_lava_seconds=t_lava,
            reference_seconds=t_bare,
            ratio_to_bare_products=t_lava / t_bare,
            batch_size=batch_size,
        )
    return out


def _later_epoch_seconds(history) -> float | None:
    t = np.asarray(history.get("seconds", []), dtype=np.float64)
    t = t[np.isfinite(t)]
    if t.size < 3:
        return None
    return float((t[-1] - t[1]) / (t.size - 2))


def step_amf(size: str, spec: dict, args) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from bench_amf import naive_epoch

    from lava.core import fit_amf
    from lava.core.amf import EXPLAINED_PRESENCE, locality_weights

    if _zarr(size, args):
        import zarr

        C = zarr.open_array(_work(size) / "C.zarr", mode="r")  # streamed: minibatches read from the store
    else:
        C = np.load(_work(size) / "C.npy")
    max_epochs = args.amf_max_epochs or spec["amf_max_epochs"]
    start = time.perf_counter()
    res = fit_amf(C, spec["M"], max_epochs=max_epochs, rng=0, device="cpu")
    seconds = time.perf_counter() - start
    out = {
        "seconds": seconds,
        "peak_rss_gib": _peak_gib(),
        "n_epochs": int(res.n_epochs),
        "n_swaps": int(res.n_swaps),
        "swap_epochs": int(res.swap_epochs),  # epochs of every other fit (the first, swaps tried)
        "n_unexplained": int((res.presence.max(axis=1) < EXPLAINED_PRESENCE).sum()),
        "max_epochs": int(max_epochs),
        "converged": bool(res.converged),
        "seconds_per_epoch": seconds / max(1, res.n_epochs + res.swap_epochs),
        # steady state: the epochs after the first (which includes torch.compile's one-off compilation)
        "seconds_per_later_epoch": _later_epoch_seconds(res.history),
        "loss": float(res.loss),
        "l": int(C.shape[0]),
        "P": int(C.shape[1]),
        "C_gib": C.shape[0] * C.shape[1] * 4 / 2**30,
        "C_store": "memory" if isinstance(C, np.ndarray) else "zarr",
    }
    del res
    if not args.no_references and isinstance(C, np.ndarray):
        rng = np.random.default_rng(0)
        C_t = torch.from_numpy(C)
        n_loc, M, batch = C.shape[0], spec["M"], 64
        presence = torch.tensor(rng.random((n_loc, M), dtype=np.float32), requires_grad=True)
        modules = torch.tensor(rng.random((M, C.shape[1]), dtype=np.float32), requires_grad=True)
        optimizer = torch.optim.Adam([modules, presence], lr=3e-3)
        a = torch.from_numpy(np.asarray(locality_weights(C), dtype=np.float32))
        order = torch.as_tensor(rng.permutation(n_loc))
        naive_epoch(C_t, a, presence, modules, optimizer, order, batch, 9.0, 1e-4, 1)  # warm-up step
        t0 = time.perf_counter()
        steps = naive_epoch(C_t, a, presence, modules, optimizer, order, batch, 9.0, 1e-4, args.naive_steps)
        per_step = (time.perf_counter() - t0) / steps
        steps_per_epoch = -(-n_loc // batch)
        out.update(
            reference_seconds_per_step=per_step,
            reference_seconds=per_step * steps_per_epoch * max(1, out["n_epochs"]),
            reference_peak_rss_gib=_peak_gib(),
        )
        out["speedup"] = out["reference_seconds"] / seconds
    return out


# ---------------------------------------------------------------------------------------------------------------
# driver


def _child(size: str, step: str, args) -> None:
    fn = globals()[f"step_{step}"]
    result = fn(size, SIZES[size], args)
    result.setdefault("peak_rss_gib", _peak_gib())
    print("RESULT " + json.dumps(result, default=float))


def _load_avg() -> list[float]:
    try:
        return [round(x, 1) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def run_step(size: str, step: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", size, step, *args.passthrough]
    load_before = _load_avg()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    row = {"size": size, "step": step, "wall_seconds": wall, "load_before": load_before, "load_after": _load_avg()}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        row["error"] = proc.stderr[-3000:]
        print(f"{size}/{step} FAILED:\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
    else:
        row.update(json.loads(lines[-1][len("RESULT ") :]))
    print(json.dumps(row, default=float), flush=True)
    return row


def _fmt(value, spec=".1f", missing="-"):
    return missing if value is None else format(value, spec)


def write_table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Machine: {meta['machine']}; {meta['cpus']} CPUs, {meta['memory_gib']:.0f} GiB; torch {meta['torch']} "
        f"({meta['torch_threads']} threads); {meta['date']}.",
        "",
        "| size | step | wall time (s) | peak RSS (GiB) | reference (s) | ratio | reference peak (GiB) | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['step']} | failed | | | | | {r['error'].splitlines()[-1][:80]} |")
            continue
        ratio, notes = "", f"load {r['load_before'][0] if r['load_before'] else '?'}"
        if r["step"] == "data":
            notes += f"; {r['E']} x {r['D']}, density {r['density']:.2f}"
        elif r["step"] == "placement":
            notes += f"; l = {r['l']}, loss {r['loss']:.3f} (unoptimised {r['loss_unoptimized']:.3f})"
        elif r["step"] == "placement_ref":
            ratio = f"{r['speedup']:.1f}x faster"
            notes += f"; maxfun {r['maxfun']}, loss {100 * r['loss_vs_reference']:+.1f}% vs reference"
        elif r["step"] == "correlations":
            ratio = f"{r['ratio_to_bare_products']:.2f}x bare" if "ratio_to_bare_products" in r else ""
            notes += f"; l x P = {r['l']} x {r['P']}, C {r['C_gib']:.2f} GiB, nonzero {r['nonzero_fraction']:.2f}"
        elif r["step"] == "amf":
            ratio = f"{r['speedup']:.1f}x faster" if "speedup" in r else ""
            notes += (
                f"; {r['n_epochs']} epochs (cap {r['max_epochs']}; {r.get('n_swaps', 0)} swaps kept, "
                f"{r.get('swap_epochs', 0)} epochs in the other fits, {r.get('n_unexplained', '-')} localities "
                f"without a module), {r['seconds_per_epoch']:.1f} s/epoch "
                f"({_fmt(r.get('seconds_per_later_epoch'))} after the first), "
                f"converged {r['converged']}"
            )
        lines.append(
            f"| {r['size']} | {r['step']} | {r['seconds']:.1f} | {r['peak_rss_gib']:.2f} | "
            f"{_fmt(r.get('reference_seconds'))} | {ratio} | {_fmt(r.get('reference_peak_rss_gib'), '.2f')} | {notes} |"
        )
    # pipeline per size: placement (default budget) + correlations + amf, as measured
    for size in dict.fromkeys(r["size"] for r in rows):
        got = {r["step"]: r for r in rows if r["size"] == size and "error" not in r}
        if all(s in got for s in ("placement", "correlations", "amf")):
            total = sum(got[s]["seconds"] for s in ("placement", "correlations", "amf"))
            peak = max(got[s]["peak_rss_gib"] for s in ("placement", "correlations", "amf"))
            lines.append(
                f"| {size} | **pipeline** (placement + correlations + amf as capped) | {total:.1f} | {peak:.2f} | "
                "| | | sum of the steps; peak of any step |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "mnist"], choices=list(SIZES))
    parser.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    parser.add_argument("--maxfun", type=int, default=None, help="placement budget (default: lava's, 50)")
    parser.add_argument("--ref-maxfun", type=int, default=10, help="DIRECT budget of the placement comparison")
    parser.add_argument("--amf-max-epochs", type=int, default=None, help="epoch cap of the AMF fit (per-size default)")
    parser.add_argument("--naive-steps", type=int, default=2, help="timed steps of the naive AMF reference")
    parser.add_argument("--rounds", type=int, default=3, help="alternating chunks in the correlations comparison")
    parser.add_argument("--no-references", action="store_true")
    parser.add_argument("--zarr", action="store_true", help="keep C in a zarr store (always for wide)")
    parser.add_argument("--no-save-C", dest="save_C", action="store_false", help="do not keep C (no amf step)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--placement-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.placement_worker:
        _placement_worker(*json.loads(args.placement_worker))
        return
    if args.child:
        _child(*args.child, args)
        return
    args.passthrough = [
        f"--ref-maxfun={args.ref_maxfun}",
        *([f"--maxfun={args.maxfun}"] if args.maxfun else []),
        f"--naive-steps={args.naive_steps}",
        f"--rounds={args.rounds}",
        *([f"--amf-max-epochs={args.amf_max_epochs}"] if args.amf_max_epochs else []),
        *(["--no-references"] if args.no_references else []),
        *(["--zarr"] if args.zarr else []),
        *([] if args.save_C else ["--no-save-C"]),
    ]

    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "results.json"
    meta = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    for size in args.sizes:
        for step in [s for s in STEPS if s in args.steps]:
            row = run_step(size, step, args)
            # re-read: another invocation (another size) may have written meanwhile
            previous = json.loads(results_path.read_text())["results"] if results_path.exists() else []
            previous = [r for r in previous if (r["size"], r["step"]) != (size, step)] + [row]
            results_path.write_text(json.dumps({"meta": meta, "results": previous}, indent=1, default=float))
            (OUT / "results.md").write_text(write_table(previous, meta))
            if "error" in row and step in ("data", "placement", "correlations"):
                break  # the next steps need this one's output
    print((OUT / "results.md").read_text())


if __name__ == "__main__":
    main()
