"""Time to produce W for a batch of perturbed matrices: the AtoW encoder against the closed form (issue 18).

For ``Abs`` perturbed 250 x 500 matrices ``colnorm(A + sigma G)`` (sigma = 0.01, seed 0):

* closed form, SVD (:func:`unrolled.analytic.closed_form`, one matrix at a time, float64);
* closed form, Cholesky (:func:`unrolled.perturbed.closed_form_batch`, batched, float64);
* the AtoW encoder (eT = 4, :class:`unrolled.models.robust_alista.AtoW`), batched, without autograd, in
  float32 (what the decoder runs in) and float64; with ``--weights RUN`` a trained encoder's weights.

Per method: seconds per matrix (best of ``--repeats``), the matrix-product FLOPs per matrix and the
achieved GFLOP/s, and the quality of the W produced: the rel2 loss F(W; Ã) (closed form: its optimum on
the constraint set) and rho(W^T Ã) of the first matrix (the decoder's stability, docs/spec.md §6.5); then the
same quality at each of ``--quality-sigmas`` (mean over ``--quality-matrices`` test matrices).
FLOPs: encoder ``eT * 2 * 2 m n^2`` (``Ã^T W`` and ``B dF`` per layer); SVD closed form, an estimate
``4 m^2 n + 8 m^3`` (thin SVD with U and V, Golub & Van Loan) ``+ 2 m^2 n`` (A^+) ``+ 2 m n`` (the scaling);
Cholesky closed form ``2 m^2 n`` (``A A^T``) ``+ m^3 / 3 + 2 m^2 n`` (two triangular solves).

    .venv/bin/python benchmarks/bench_robust.py [--abs 1,16,100] [--threads 1] [--device cpu]

Prints a table and writes benchmarks/results/robust.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import torch

from unrolled import Problem, ProblemSpec, perturbed
from unrolled.analytic import closed_form
from unrolled.io import write_text
from unrolled.models.robust_alista import AtoW, rel2_loss
from unrolled.training.robust import init_from

RESULTS = Path(__file__).parent / "results"


def machine(threads: int, device: str) -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return dict(cpu=cpu, gpu=gpu, cores=os.cpu_count(), torch_threads=threads, torch=torch.__version__,
                python=platform.python_version(), load_average_at_start=list(os.getloadavg()))


def best_of(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def rho(W: torch.Tensor, A: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(W.double().T @ A.double()).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=250)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--abs", default="1,16,100", help="comma-separated batch sizes (matrices)")
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (encoder and Cholesky closed form)")
    ap.add_argument("--weights", default=None, help="a pre-training run (or weights file) for the encoder")
    ap.add_argument("--quality-sigmas", default="0,0.01,0.02,0.03",
                    help="sigmas at which the W's quality (F, rho) is compared on --quality-matrices matrices")
    ap.add_argument("--quality-matrices", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "robust.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m, n, dev = a.m, a.n, a.device
    problem = Problem(ProblemSpec(m=m, n=n, seed=0))
    flops = {"closed form, SVD (per matrix, float64)": 4 * m * m * n + 8 * m ** 3 + 2 * m * m * n + 2 * m * n,
             "closed form, Cholesky (batched, float64)": 4 * m * m * n + m ** 3 / 3,
             "AtoW encoder eT=4 (batched, float32)": 4 * 2 * 2 * m * n * n,
             "AtoW encoder eT=4 (batched, float64)": 4 * 2 * 2 * m * n * n}
    enc = AtoW(problem.A)
    if a.weights:

        class Holder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = enc

        init_from(Holder(), a.weights, prefix="encoder.")
    rows = []
    for batch in (int(v) for v in a.abs.split(",")):
        A = perturbed.fixed_set(problem, "test", a.sigma, batch, 1).A
        A_dev = A.to(dev)
        methods = {
            "closed form, SVD (per matrix, float64)": (lambda A=A: torch.stack([closed_form(x)[0] for x in A]), A),
            "closed form, Cholesky (batched, float64)": (lambda A=A_dev: perturbed.closed_form_batch(A), A_dev)}
        for dt, name in ((torch.float32, "float32"), (torch.float64, "float64")):
            e = copy.deepcopy(enc).to(dev, dt)
            Ad = A_dev.to(dt)
            methods[f"AtoW encoder eT=4 (batched, {name})"] = (lambda e=e, Ad=Ad: e(Ad), Ad)
        for label, (fn, _) in methods.items():
            with torch.no_grad():
                fn()  # warm-up
                seconds = best_of(fn, a.repeats, dev) / batch
                W = fn().double().cpu()
            loss = float(rel2_loss(W, A).mean())
            rows.append(dict(method=label, matrices=batch, seconds_per_matrix=seconds, flops_per_matrix=flops[label],
                             gflops=flops[label] / seconds / 1e9, rel2_loss=loss, rho=rho(W[0], A[0])))
            r = rows[-1]
            print(f"Abs={batch:<4} {label:<42} {seconds * 1e3:8.2f} ms/matrix  {r['gflops']:6.1f} GFLOP/s  "
                  f"F={loss:8.2f}  rho={r['rho']:.3f}", flush=True)
    quality = []
    for sigma in (float(v) for v in a.quality_sigmas.split(",") if v):
        A = perturbed.fixed_set(problem, "test", sigma, a.quality_matrices, 1).A
        with torch.no_grad():
            for label, W in (("closed form", perturbed.closed_form_batch(A)),
                             ("AtoW encoder", copy.deepcopy(enc).double()(A))):
                quality.append(dict(sigma=sigma, method=label, rel2_loss=float(rel2_loss(W, A).mean()),
                                    rho=sum(rho(w, x) for w, x in zip(W, A)) / len(A),
                                    diag_err=float(((W * A).sum(-2) - 1).abs().max())))
                q = quality[-1]
                print(f"sigma={sigma:<7g} {label:<13} F={q['rel2_loss']:8.2f}  mean rho(W^T Ã)={q['rho']:.3f}  "
                      f"max |w_i^T ã_i - 1|={q['diag_err']:.2e}", flush=True)
    info = machine(a.threads, dev)
    print(f"\nmachine: {info}")
    write_text(a.out, json.dumps(dict(machine=info, args=vars(a), rows=rows, quality=quality), indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
