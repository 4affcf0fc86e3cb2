"""Benchmark AMF: fused max-product training vs naive torch autograd, and the learning-rate evidence.

Sizes (synthetic planted C, K sparse modules, localities holding 1-2 of them, sparse noise):
  mnist: l = 280,  P = 306,936 (D = 784), M = 9  (the paper's MNIST setting)
  large: l = 1350, P = 499,500 (D = 1000), M = 9 (KPMP-like: 1000 HVGs)

Implementations: "compiled" (the fused step as two numba kernels, the default on the CPU),
"eager" (the same fused step as chunked eager torch operations, the CUDA path) and "naive".
Each (size, implementation) runs in its own subprocess so that its peak RSS is its own. The naive reference is
plain torch autograd on the materialised (batch x M x P) product with ``.max(1)``, the same loss, Adam and clamp.

    python benchmarks/bench_amf.py speed [--sizes mnist large] [--threads 1] [--epochs 3] [--naive-steps 3]
    python benchmarks/bench_amf.py lr [--seeds 5] [--lrs 1e-3 3e-3 1e-2 3e-2]
    python benchmarks/bench_amf.py fit --sizes mnist large [--losses expectile paper] [--max-epochs 5000]

Writes benchmarks/out/amf_<what>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
SIZES = {"mnist": (280, 784, 9), "large": (1350, 1000, 9), "small": (200, 40, 4)}


def planted(n_loc, n_features, n_modules, *, density=0.05, noise=0.05, seed=0, alone_every=2):
    """Planted C (float32): K random sparse pair sets; localities with 1 (every ``alone_every``-th) or 2 modules."""
    from lava.core import reconstruct

    rng = np.random.default_rng(seed)
    n_pairs = n_features * (n_features - 1) // 2
    modules = np.zeros((n_modules, n_pairs), np.float32)
    for k in range(n_modules):
        support = rng.random(n_pairs) < density
        modules[k, support] = rng.uniform(0.5, 1.0, support.sum())
    presence = np.zeros((n_loc, n_modules), np.float32)
    for i in range(n_loc):
        n_here = 1 if i % alone_every == 0 else 2
        ks = [i % n_modules] if n_here == 1 else rng.choice(n_modules, 2, replace=False)
        presence[i, ks] = rng.uniform(0.6, 1.0, len(ks))
    C = np.empty((n_loc, n_pairs), np.float32)
    for r0 in range(0, n_loc, 64):
        block = reconstruct(presence[r0 : r0 + 64], modules)
        shape = block.shape
        block += noise * np.abs(rng.standard_normal(shape, dtype=np.float32)) * (rng.random(shape, np.float32) < 0.2)
        C[r0 : r0 + 64] = np.clip(block, 0, 1)
    return C, modules, presence


def naive_epoch(C, a, presence, modules, optimizer, order, batch_size, nu, gamma, max_steps=None):
    import torch

    n_loc, _n_pairs = C.shape
    steps = 0
    for start in range(0, n_loc, batch_size):
        rows = order[start : start + batch_size]
        optimizer.zero_grad()
        h = (presence[rows][:, :, None] * modules[None]).max(1).values
        c = C[rows]
        w = torch.where(h > c, nu, 1.0).detach()
        u, v = w * c, w * h
        cos = (u * v).sum(1) / (u.norm(dim=1).clamp_min(1e-8) * v.norm(dim=1).clamp_min(1e-8))
        mae = (c - h).abs().mean(1)
        loss = (n_loc / len(rows)) * ((a[rows] * (1 - cos)).sum() + gamma * mae.sum() / n_loc)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            presence.clamp_(0, 1)
            modules.clamp_(0, 1)
        steps += 1
        if max_steps and steps >= max_steps:
            break
    return steps


def run_speed_child(size, impl, threads, epochs, naive_steps):
    import torch

    from lava.core import _amf_torch as amft
    from lava.core.amf import locality_weights

    torch.set_num_threads(threads)
    n_loc, n_features, n_mod = SIZES[size]
    C, _, _ = planted(n_loc, n_features, n_mod)
    c_bytes = C.nbytes
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    a = locality_weights(C)
    rng = np.random.default_rng(0)
    batch = 64
    C_t = torch.from_numpy(C)
    presence = torch.tensor(rng.random((n_loc, n_mod), dtype=np.float32), requires_grad=True)
    modules = torch.tensor(rng.random((n_mod, C.shape[1]), dtype=np.float32), requires_grad=True)
    optimizer = torch.optim.Adam([modules, presence], lr=1e-2)
    steps_per_epoch = -(-n_loc // batch)
    out = {"size": size, "impl": impl, "threads": threads, "l": n_loc, "P": C.shape[1], "M": n_mod, "C_bytes": c_bytes}
    if impl in ("compiled", "eager"):
        problem = amft.Problem(C_t, torch.from_numpy(a), nu=9.0, gamma=1e-4, n_pairs_total=C.shape[1], kernel=impl)
        buffers = amft.Buffers(batch, C.shape[1], n_mod, torch.device("cpu"))
        if impl == "compiled":
            amft._match_threads()
        amft.run_epoch(problem, presence, modules, optimizer, torch.as_tensor(rng.permutation(n_loc)), batch, buffers)
        t0 = time.perf_counter()
        for _ in range(epochs):
            amft.run_epoch(
                problem, presence, modules, optimizer, torch.as_tensor(rng.permutation(n_loc)), batch, buffers
            )
        t_train = (time.perf_counter() - t0) / epochs
        t0 = time.perf_counter()
        for _ in range(epochs):
            amft.evaluate(problem, presence.detach(), modules.detach())
        t_eval = (time.perf_counter() - t0) / epochs
        out.update(train_epoch_s=t_train, eval_s=t_eval, epoch_s=t_train + t_eval)
    else:
        a_t = torch.from_numpy(a).float()
        naive_epoch(
            C_t, a_t, presence, modules, optimizer, torch.as_tensor(rng.permutation(n_loc)), batch, 9.0, 1e-4, 1
        )
        t0 = time.perf_counter()
        steps = naive_epoch(
            C_t,
            a_t,
            presence,
            modules,
            optimizer,
            torch.as_tensor(rng.permutation(n_loc)),
            batch,
            9.0,
            1e-4,
            naive_steps,
        )
        per_step = (time.perf_counter() - t0) / steps
        # extrapolated to one epoch; the naive path has no separate evaluation pass (it would only add time)
        out.update(step_s=per_step, train_epoch_s=per_step * steps_per_epoch, epoch_s=per_step * steps_per_epoch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.update(peak_rss_bytes=peak, rss_after_data_bytes=rss_data, extra_over_C_bytes=peak - rss_data)
    print(json.dumps(out))


def speed(args):
    rows = []
    for size in args.sizes:
        for impl in args.impls:
            cmd = [
                sys.executable,
                __file__,
                "_child",
                size,
                impl,
                str(args.threads),
                str(args.epochs),
                str(args.naive_steps),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                rows.append({"size": size, "impl": impl, "error": proc.stderr[-500:]})
                print(proc.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = [
        "| size | l | P | impl | threads | s/epoch (train) | s/eval | epochs/s | speed-up | peak RSS - RSS after C (MB) | C (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        by = {r["impl"]: r for r in rows if r["size"] == size and "error" not in r}
        for impl, r in by.items():
            eps = 1 / r["epoch_s"]
            ratio = by["naive"]["epoch_s"] / r["epoch_s"] if "naive" in by else float("nan")
            lines.append(
                f"| {size} | {r['l']} | {r['P']} | {impl} | {r['threads']} | {r['train_epoch_s']:.3g} |"
                f" {r.get('eval_s', float('nan')):.3g} | {eps:.3g} | {ratio:.3g}x |"
                f" {r['extra_over_C_bytes'] / 2**20:.0f} | {r['C_bytes'] / 2**20:.0f} |"
            )
    write("amf_speed", rows, lines)


def lr_study(args):
    import torch
    from scipy.optimize import linear_sum_assignment

    from lava.core import fit_amf

    torch.set_num_threads(args.threads)
    rows = []
    for seed in range(args.seeds):
        C, modules, _ = planted(*SIZES["small"], density=0.1, seed=seed, alone_every=args.alone_every)
        for lr in args.lrs:
            t0 = time.perf_counter()
            res = fit_amf(C, SIZES["small"][2], lr=lr, rng=seed, max_epochs=args.max_epochs)
            unit = lambda X: X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # noqa: E731
            S = unit(modules) @ unit(res.modules).T
            r, c = linear_sum_assignment(-S)
            row = {
                "seed": seed,
                "lr": lr,
                "n_epochs": res.n_epochs,
                "best_epoch": res.best_epoch,
                "converged": res.converged,
                "loss": res.loss,
                "similarity": res.similarity,
                "overestimation_ratio": res.overestimation_ratio,
                "min_match": float(S[r, c].min()),
                "n_recovered": int((S[r, c] >= 0.95).sum()),
                "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(row, flush=True)
    lines = ["| lr | mean loss | mean similarity | mean overestimation | modules recovered (>= 0.95) | mean epochs |"]
    lines.append("|---|---|---|---|---|---|")
    for lr in args.lrs:
        rs = [r for r in rows if r["lr"] == lr]
        lines.append(
            f"| {lr:g} | {np.mean([r['loss'] for r in rs]):.4f} | {np.mean([r['similarity'] for r in rs]):.3f} |"
            f" {np.mean([r['overestimation_ratio'] for r in rs]):.3f} |"
            f" {sum(r['n_recovered'] for r in rs)}/{SIZES['small'][2] * len(rs)} |"
            f" {np.mean([r['n_epochs'] for r in rs]):.0f} |"
        )
    write(f"amf_lr_alone{args.alone_every}", rows, lines)


def whole_fit(args):
    import torch

    from lava.core import fit_amf

    torch.set_num_threads(args.threads)
    rows = []
    for size, loss in ((s, loss) for s in args.sizes for loss in args.losses):
        C, _, _ = planted(*SIZES[size])
        kwargs = {"loss": loss}
        if loss == "paper":  # the paper's setting throughout: random start, its stopping rule
            kwargs.update(init="random", stop="paper")
        t0 = time.perf_counter()
        res = fit_amf(C, SIZES[size][2], max_epochs=args.max_epochs, rng=0, progress=True, **kwargs)
        rows.append(
            {
                "size": size,
                "loss": loss,
                "n_epochs": res.n_epochs,
                "converged": res.converged,
                "best_epoch": res.best_epoch,
                "loss_value": res.loss,
                "overestimation_ratio": res.overestimation_ratio,
                "seconds": time.perf_counter() - t0,
                "max_epochs": args.max_epochs,
            }
        )
        print(rows[-1], flush=True)
    lines = [
        "| size | loss | epochs (cap) | converged | loss value | overestimation | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['size']} | {r['loss']} | {r['n_epochs']} ({r['max_epochs']}) | {r['converged']} | {r['loss_value']:.4f} |"
        f" {r['overestimation_ratio']:.3f} | {r['seconds']:.0f} |"
        for r in rows
    ]
    write("amf_fit", rows, lines)


def write(name, rows, lines):
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(rows, indent=1, default=float))
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        size, impl, threads, epochs, naive_steps = sys.argv[2:7]
        run_speed_child(size, impl, int(threads), int(epochs), int(naive_steps))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["speed", "lr", "fit"])
    parser.add_argument("--sizes", nargs="+", default=["mnist", "large"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--impls", nargs="+", default=["compiled", "eager", "naive"])
    parser.add_argument("--naive-steps", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2])
    parser.add_argument("--alone-every", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=5000)
    parser.add_argument("--losses", nargs="+", default=["expectile", "paper"])
    args = parser.parse_args()
    {"speed": speed, "lr": lr_study, "fit": whole_fit}[args.what](args)


if __name__ == "__main__":
    main()
