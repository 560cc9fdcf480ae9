"""Forward throughput of every registered model next to the machine's matmul ceiling.

Setting (defaults): K = 16, a 250 x 500 problem (p = 0.1, 40 dB), 10,000 test vectors,
float32, ``torch.inference_mode``; each model runs once to warm up, then the best of 3
wall-clock times counts.

FLOP counting: each model's :meth:`~unrolled.models.UnrolledNet.flops` (its matrix products,
declared by the model; a multiply-add is 2 FLOPs; thresholds, support selection and other
element-wise work are the overhead this benchmark exposes).

Backends (``--backends``, one row per model and backend): ``reference`` (plain autograd
maths), ``torch`` (the fast autograd nodes in PyTorch), ``numba`` (the same with the fused
Numba kernels, where installed) and ``compile`` (``torch.compile`` of the model under the
reference backend, inductor; its compilation time is reported separately and not counted).

The ceiling is the same two products as one ALISTA layer, ``(batch x n) @ (n x m)`` and
``(batch x m) @ (m x n)``, timed the same way: ``ceiling = 2 * 2 batch m n / (t1 + t2)``,
measured before and after the models (the better one counts: the machine may be shared),
each on the whole batch and, as a layer runs them on the CPU, chained on blocks of samples
(``(x_b A^T) A`` for each block of :func:`unrolled.models.base.block_rows` rows), the faster
of the two.

Usage::

    python benchmarks/bench_forward.py [--device cpu|cuda] [--models NAME[:KEY=VALUE...] ...]
                                       [--backends fast,reference,...] [--batch 10000] [--threads N]
                                       [--out benchmarks/results/forward_cpu.csv]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unrolled import ops
from unrolled.cpu import keep_freed_memory
from unrolled.io import write_text
from unrolled.models import MODELS, build
from unrolled.models.base import block_rows
from unrolled.problem import Problem, ProblemSpec


def best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` runs after one warm-up run."""

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    run()
    return min(run() for _ in range(repeats))


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``name[:key=value...]`` -> ``(name, overrides)``."""
    name, *pairs = spec.split(":")
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: model option {pair!r} in {spec!r} must be KEY=VALUE")
        overrides[key] = value
    return name, overrides


def machine() -> str:
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor()} x{len(names) or '?'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--models", nargs="+", default=sorted(MODELS), metavar="NAME[:KEY=VALUE...]",
                    help="registered names, optionally with config overrides (default: all registered)")
    ap.add_argument("--backends", default="fast",
                    help="comma-separated: fast, reference, torch, numba, compile (default %(default)s)")
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--K", type=int, default=16)
    ap.add_argument("--m", type=int, default=250)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's choice)")
    ap.add_argument("--out", default="benchmarks/results/forward_cpu.csv")
    ap.add_argument("--malloc", choices=["keep", "system"], default="keep",
                    help="keep: glibc keeps freed blocks, as the CLI does (unrolled/cpu.py); system: the defaults")
    args = ap.parse_args(argv)
    malloc_kept = args.malloc == "keep" and keep_freed_memory()

    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
    dtype = getattr(torch, args.dtype)
    specs = [parse_spec(s) for s in args.models]
    unknown = [name for name, _ in specs if name not in MODELS]
    if unknown:
        raise SystemExit(f"error: unknown model(s) {', '.join(unknown)}; valid: {', '.join(sorted(MODELS))}")

    problem = Problem(ProblemSpec(m=args.m, n=args.n, p=0.1, snr=40.0, seed=0))
    _, y = problem.test(args.batch, dtype=dtype)
    y = y.to(device)
    B, m, n = args.batch, args.m, args.n
    A = problem.A.to(device, dtype)
    X = torch.randn(B, n, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    R = torch.randn(B, m, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)

    def ceiling_time() -> float:
        """The two products on the whole batch, or chained block by block as a layer runs them (the faster counts)."""
        with torch.inference_mode():
            rows = block_rows(n, X)
            whole = best_time(lambda: X @ A.T, device, args.repeats) + best_time(lambda: R @ A, device, args.repeats)
            if rows >= B:
                return whole
            chained = best_time(lambda: [(x @ A.T) @ A for x in X.split(rows)], device, args.repeats)
            return min(whole, chained)

    t_before = ceiling_time()
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    meta = {"device": str(device), "dtype": args.dtype, "batch": B, "K": args.K, "m": m, "n": n,
            "threads": threads, "torch": torch.__version__, "machine": machine(), "malloc_kept": malloc_kept,
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}
    rows = []

    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        if b != "compile":
            ops.dispatch.resolve(b)  # an unknown or unavailable backend fails here, before any work
    for name, overrides in specs:
        for backend in backends:
            model = build(name, problem, {"K": args.K, **overrides}, dtype).to(device).eval()
            flops = model.flops(B)
            with ops.backend("reference" if backend == "compile" else backend) as resolved, torch.inference_mode():
                compile_s = 0.0
                if backend == "compile":
                    start = time.perf_counter()
                    model = torch.compile(model)
                    model(y)
                    compile_s = time.perf_counter() - start
                seconds = best_time(lambda model=model: model(y), device, args.repeats)
            rows.append({"model": name, "config": ":".join(f"{k}={v}" for k, v in overrides.items()),
                         "backend": backend if backend == "compile" else resolved, "seconds": seconds,
                         "samples_per_s": B / seconds, "gflop": flops / 1e9, "gflops": flops / seconds / 1e9,
                         "compile_s": compile_s, **meta})
            del model

    # The machine may be shared: the ceiling is the better of a measurement before and after the models.
    t_ceiling = min(t_before, ceiling_time())
    ceiling = 4 * B * m * n / t_ceiling / 1e9
    rows.insert(0, {"model": "matmul-ceiling", "config": "", "backend": "", "seconds": t_ceiling, "samples_per_s": "",
                    "gflop": 4 * B * m * n / 1e9, "gflops": ceiling, "compile_s": 0.0, **meta})
    for r in rows:
        r["pct_of_ceiling"] = 100 * r["gflops"] / ceiling

    print(f"device {device} ({meta['machine']}, {threads} threads), {args.dtype}, batch {B}, K {args.K}, {m}x{n}; "
          f"best of {args.repeats} after a warm-up; freed memory kept: {malloc_kept}; "
          f"load average {meta['load_avg_1min']:.2f} at the start")
    head = f"{'seconds':>8} {'samples/s':>10} {'GFLOP':>7} {'GFLOP/s':>8} {'% ceiling':>9}"
    print(f"{'model':<28} {'backend':<10} {head}")
    for r in rows:
        label = r["model"] + (f" [{r['config']}]" if r["config"] else "")
        sps = f"{r['samples_per_s']:10.0f}" if r["samples_per_s"] != "" else f"{'':>10}"
        print(f"{label:<28} {r['backend']:<10} {r['seconds']:8.3f} {sps} {r['gflop']:7.1f} {r['gflops']:8.1f} "
              f"{r['pct_of_ceiling']:8.0f}%" + (f"  (compiled in {r['compile_s']:.0f} s)" if r["compile_s"] else ""))

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(args.out, buf.getvalue())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
