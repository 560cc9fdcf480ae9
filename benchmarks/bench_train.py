"""Training throughput: ms per Adam step and effective GFLOP/s next to the matmul ceiling.

    python benchmarks/bench_train.py [--models alista,na-alista,lista] [--batch 512] [--device cpu]
                                     [--runs RUN ...]

Models are built at their initialisation; ``--runs`` adds finished runs' trained models (on
their own problems): data-dependent work such as the support selection differs once trained
(functional.selection_cut skips rows whose support has settled).

Flop count per step (float32, batch B, K layers, A: m x n): every layer's matrix products
are counted as ``2 B * (inner) * (outer)``; the backward pass of a product costs twice its
forward when the weight is trained (gradients for input and weight) and once when only the
input needs a gradient (A and analytic W are fixed buffers). NA-ALISTA's LSTM cell and head
count as trained products (3x their forward). Element-wise work (threshold, top-k, gates) is
not counted, so the figure is a lower bound on the work done.
The ceiling is the best of a (B x m) @ (m x n) and (B x n) @ (n x m) product timed the
same way. The models run in ``--rounds`` interleaved rounds (each the best of 3 timings of ``--steps`` steps);
a model's step time is its best over the rounds and its ceiling the best measured right
before or after it: on a shared machine whose speed drifts, each model is compared with
what the matmul did at the same time.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import unrolled as ur
from unrolled import Problem, ProblemSpec
from unrolled.cpu import keep_freed_memory
from unrolled.errors import check
from unrolled.io import write_text
from unrolled.models import build


def step_flops(model, B: int) -> float:
    """Forward + backward matmul flops of one training step (see module docstring)."""
    m, n, K, name = model.m, model.n, model.K, model.name
    mn = 2 * B * m * n
    if name in ("alista", "alista-at", "aglista", "slista"):
        return K * (2 * mn) * 2  # two products per layer, each: forward + input-gradient
    if name == "na-alista":  # the same, plus the LSTM cell and head on (B x inputs), trained (x 3)
        c = model.config
        n_in = 2 if c.inputs == "both" else 1
        head = 4 * c.H if c.head == "paper" else 2 * (c.H * c.H + 2 * c.H)
        return K * (2 * mn) * 2 + 3 * K * B * (8 * c.H * (n_in + c.H) + head)
    if name in ("lista",):  # B y once (trained), W_t x per layer (trained, n x n)
        return mn * 3 + K * (2 * B * n * n) * 3
    if name in ("lista-cp", "lista-cpss", "tilista"):  # A x fixed, W_t r trained
        return K * (mn * 2 + mn * 3)
    return K * (2 * mn) * 2


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def ceiling(B: int, m: int, n: int, device: torch.device) -> float:
    a, b = torch.randn(B, m, device=device), torch.randn(m, n, device=device)
    c, d = torch.randn(B, n, device=device), torch.randn(n, m, device=device)

    def run():
        for _ in range(10):
            a @ b
            c @ d
        if device.type == "cuda":
            torch.cuda.synchronize()

    return 10 * 2 * (2 * B * m * n) / timed(run, 5) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="alista,na-alista,lista")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the models; the best counts")
    ap.add_argument("--runs", nargs="*", default=[], metavar="RUN", help="finished runs whose trained models to add")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="benchmarks/results/train_cpu.json")
    ap.add_argument("--malloc", choices=["keep", "system"], default="keep",
                    help="keep: glibc keeps freed blocks, as the CLI does (unrolled/cpu.py); system: the defaults")
    a = ap.parse_args()
    malloc_kept = a.malloc == "keep" and keep_freed_memory()
    dev = torch.device(a.device)
    problem = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=40, seed=0))
    m, n, B, K = problem.m, problem.n, a.batch, a.layers
    models = [(name, build(name, problem, {"K": K}), problem) for name in a.models.split(",") if name]
    for path in a.runs:
        run = ur.load(path)
        model, run_problem = run.model, run.problem
        check((run_problem.m, run_problem.n) == (m, n), f"{path} is a {run_problem.m}x{run_problem.n} problem; "
                                                          f"the benchmark's ceiling is for {m}x{n}")
        models.append((f"{model.name} ({Path(path).name})", model, run_problem))
    runs = {}
    for name, model, prob in models:
        model = model.to(dev)
        x, y = prob.sample(B, torch.Generator().manual_seed(0))
        x, y = x.to(dev), y.to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as the trainer (unrolled/training/trainer.py)

        def steps(model=model, opt=opt, x=x, y=y):
            for _ in range(a.steps):
                opt.zero_grad(set_to_none=True)
                loss = ((model(y) - x) ** 2).sum(1).mean()
                loss.backward()
                opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        runs[name] = dict(model=model, steps=steps, sec=float("inf"), peak=0.0)
    for _ in range(a.rounds):  # interleaved: a slow stretch of a shared machine hits every model alike
        for run in runs.values():
            before = ceiling(B, m, n, dev)
            run["sec"] = min(run["sec"], timed(run["steps"], 3) / a.steps)
            run["peak"] = max(run["peak"], before, ceiling(B, m, n, dev))
    rows = []
    for name, run in runs.items():
        sec, peak = run["sec"], run["peak"]
        gflops = step_flops(run["model"], B) / sec / 1e9
        rows.append(dict(model=name, ms_per_step=1e3 * sec, gflops=gflops, ceiling_gflops=peak,
                         fraction=gflops / peak, rounds=a.rounds, batch=B, K=run["model"].K, m=m, n=n, device=str(dev),
                         threads=torch.get_num_threads(), malloc_kept=malloc_kept, torch=torch.__version__,
                         cpu=platform.processor()))
    print(f"training step, batch {B}, K={K}, {m}x{n}, float32, {dev} ({torch.get_num_threads()} threads); "
          f"best of {a.rounds} interleaved rounds; matmul ceiling: the best measured right before or after the model")
    width = max(12, *(len(r["model"]) + 2 for r in rows))
    print(f"{'model':<{width}}{'ms/step':>10}{'GFLOP/s':>10}{'ceiling':>10}{'of ceiling':>12}")
    for r in rows:
        print(f"{r['model']:<{width}}{r['ms_per_step']:>10.1f}{r['gflops']:>10.1f}{r['ceiling_gflops']:>10.1f}"
              f"{100 * r['fraction']:>11.0f}%")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
