"""Training throughput: ms per Adam step and effective GFLOP/s next to the matmul ceiling.

    python benchmarks/bench_train.py [--models alista,na-alista,lista] [--backends fast,reference,...]
                                     [--batch 512] [--device cpu] [--runs RUN ...]

Models are built at their initialisation; ``--runs`` adds finished runs' trained models (on
their own problems): data-dependent work such as the support selection differs once trained
(the fast selection skips rows whose support has settled).

Backends (``--backends``, one row per model and backend): ``reference`` (plain autograd),
``torch`` (the fast autograd nodes), ``numba`` (with the fused kernels), ``fast`` (the
default: numba where installed) and ``compile`` (``torch.compile`` of the model under the
reference backend; compilation is done before timing and reported separately).

Flop count per step: each model's ``flops(batch, backward=True)`` (its declared matrix
products, ``2 B (inner) (outer)`` each; a product's backward costs one more product for the
input's gradient and one for a trained matrix's). Element-wise work (threshold, top-k, gates)
is not counted, so the figure is a lower bound on the work done.
The ceiling is the best of a (B x m) @ (m x n) and (B x n) @ (n x m) product timed the
same way. The models run in ``--rounds`` interleaved rounds (each the best of 3 timings of ``--steps`` steps);
a model's step time is its best over the rounds and its ceiling the best measured right
before or after it: on a shared machine whose speed drifts, each model is compared with
what the matmul did at the same time.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

import unrolled as ur
from unrolled import Problem, ProblemSpec, ops
from unrolled.cpu import keep_freed_memory
from unrolled.errors import check
from unrolled.io import write_text
from unrolled.models import build


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
    ap.add_argument("--backends", default="fast",
                    help="comma-separated: fast, reference, torch, numba, compile (default %(default)s)")
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
    backends = [b for b in a.backends.split(",") if b]
    resolved = {b: "compile" if b == "compile" else ops.dispatch.resolve(b) for b in backends}  # fails before work
    runs = {}
    for name, model, prob in models:
        for backend in backends:
            net = copy.deepcopy(model).to(dev)  # each backend trains its own copy from the same start
            x, y = prob.sample(B, torch.Generator().manual_seed(0))
            x, y = x.to(dev), y.to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)  # as unrolled/training/trainer.py
            use = "reference" if backend == "compile" else backend
            forward = torch.compile(net) if backend == "compile" else net

            def steps(forward=forward, opt=opt, x=x, y=y, use=use):
                with ops.backend(use):
                    for _ in range(a.steps):
                        opt.zero_grad(set_to_none=True)
                        loss = ((forward(y) - x) ** 2).sum(1).mean()
                        loss.backward()
                        opt.step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()

            start = time.perf_counter()
            if backend == "compile":
                steps()  # compiles the forward and backward graphs
            runs[(name, backend)] = dict(model=net, steps=steps, sec=float("inf"), peak=0.0,
                                         compile_s=time.perf_counter() - start if backend == "compile" else 0.0)
    for _ in range(a.rounds):  # interleaved: a slow stretch of a shared machine hits every model alike
        for run in runs.values():
            before = ceiling(B, m, n, dev)
            run["sec"] = min(run["sec"], timed(run["steps"], 3) / a.steps)
            run["peak"] = max(run["peak"], before, ceiling(B, m, n, dev))
    rows = []
    for (name, backend), run in runs.items():
        sec, peak = run["sec"], run["peak"]
        gflops = run["model"].flops(B, backward=True) / sec / 1e9
        rows.append(dict(model=name, backend=resolved[backend], compile_s=run["compile_s"], ms_per_step=1e3 * sec,
                         gflops=gflops, ceiling_gflops=peak,
                         fraction=gflops / peak, rounds=a.rounds, batch=B, K=run["model"].K, m=m, n=n, device=str(dev),
                         threads=torch.get_num_threads(), malloc_kept=malloc_kept, torch=torch.__version__,
                         cpu=platform.processor()))
    print(f"training step, batch {B}, K={K}, {m}x{n}, float32, {dev} ({torch.get_num_threads()} threads); "
          f"best of {a.rounds} interleaved rounds; matmul ceiling: the best measured right before or after the model")
    width = max(12, *(len(r["model"]) + 2 for r in rows))
    print(f"{'model':<{width}}{'backend':<11}{'ms/step':>10}{'GFLOP/s':>10}{'ceiling':>10}{'of ceiling':>12}")
    for r in rows:
        print(f"{r['model']:<{width}}{r['backend']:<11}{r['ms_per_step']:>10.1f}{r['gflops']:>10.1f}"
              f"{r['ceiling_gflops']:>10.1f}{100 * r['fraction']:>11.0f}%"
              + (f"  (compiled in {r['compile_s']:.0f} s)" if r["compile_s"] else ""))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(a.out, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
