"""``unrolled images ...``: natural-image experiments (issue 19; needs the ``images`` extra).

* ``images list``: the experiments in ``configs/images/``;
* ``images run NAME``: run or continue one (``--budget smoke|quick``, ``--out``, ``--training FOLDER``);
* ``images dictionary OUT.npz``: learn the 256 x 512 patch dictionary (a problem file);
* ``images conv-dictionary OUT.npz``: learn 3x3 filters with sporco, or convert ``--from FILE``;
* ``images weights FILTERS``: the analytic convolutional W (closed form and PGD) and its coherence;
* ``images psnr ESTIMATE REFERENCE``: PSNR of two image files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import check
from .args import positive, positive_int, seed_int


def cmd_list(a: argparse.Namespace) -> None:
    from ..images import experiments as E

    for name in E.names():
        exp = E.load(name, "smoke")
        print(f"{name:18s} {exp['task']:8s} {exp['title']}")


def cmd_run(a: argparse.Namespace) -> None:
    from ..images import experiments as E

    exp = E.load(a.name, a.budget)
    if a.training:
        exp["data"]["training"] = str(Path(a.training).resolve())
    if a.test_folder:
        exp["test"]["folder"] = str(Path(a.test_folder).resolve())
    out = Path(a.out or f"runs/images/{exp['name']}-{a.budget}")
    path = E.run(exp, out, docs=Path(a.docs) if a.docs else None)
    print(f"report: {path}")


def cmd_dictionary(a: argparse.Namespace) -> None:
    from ..images import data
    from ..images import dictionary as Dm

    images = data.training_images(a.training, a.patch, print)
    D = Dm.learn_patch_dictionary(list(images.values()), a.atoms, a.patch, a.count, a.alpha, a.epochs, a.seed)
    path = Dm.save_dictionary(a.out, D, f"{a.training or 'packaged'} count={a.count} epochs={a.epochs} "
                                        f"alpha={a.alpha} seed={a.seed}")
    print(f"dictionary {D.shape[0]}x{D.shape[1]} from {len(images)} images -> {path}")


def cmd_conv_dictionary(a: argparse.Namespace) -> None:
    from ..images import data
    from ..images import dictionary as Dm

    if a.source:
        F = Dm.load_conv_dictionary(a.source, a.key, a.layout)
        meta = dict(source=str(a.source), key=a.key or "", layout=a.layout)
    else:
        images = data.training_images(a.training, a.crop, print)
        F = Dm.learn_conv_dictionary(list(images.values()), a.filters, a.size, a.lam, a.iterations, a.crop,
                                     a.crops, a.seed)
        meta = dict(source=a.training or "packaged", lam=a.lam, iterations=a.iterations)
    path = Dm.save_conv_dictionary(a.out, F, meta)
    print(f"{Dm.describe(F)} -> {path} (array D, layout (M, h, w))")


def cmd_weights(a: argparse.Namespace) -> None:
    from ..images import conv as C
    from ..images import dictionary as Dm
    from ..images.run_cs import md_table
    from ..images.run_denoise import analytic_report

    F = Dm.load_conv_dictionary(a.filters, a.key, a.layout)
    rows = analytic_report(F, a.seed)
    print(md_table(["W", "objective", "coherence", "constraint error", "seconds", "note"],
                   [[r[0], r[1], r[2], f"{r[3]:.1e}", f"{r[4]:.3f}", r[5]] for r in rows]))
    if a.out:
        check(Path(a.out).suffix == ".npy", f"--out {a.out} must end in .npy")
        from ..io import atomic_write

        W = C.closed_form(F)
        atomic_write(Path(a.out), lambda f: np.save(f, W))
        print(f"closed-form W {W.shape} (M, h, w) -> {a.out}")


def cmd_psnr(a: argparse.Namespace) -> None:
    from ..images import data
    from ..images.patches import psnr

    est, note_e = data.load_image(a.estimate)
    ref, note_r = data.load_image(a.reference)
    for path, note in ((a.estimate, note_e), (a.reference, note_r)):
        if note:
            print(f"note: {path}: {note}")
    check(est.shape == ref.shape, f"the images differ in size: {est.shape} vs {ref.shape}")
    print(f"PSNR {psnr(est, ref):.2f} dB")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("images", help="natural images: patch compressive sensing, convolutional denoising")
    s = p.add_subparsers(dest="images_command", required=True, parser_class=type(p))
    pl = s.add_parser("list", help="the image experiments (configs/images/*.toml)")
    pl.set_defaults(func=cmd_list)
    pr = s.add_parser("run", help="run or continue an image experiment; writes its report")
    pr.add_argument("name", help="experiment name (images list) or a .toml file")
    pr.add_argument("--budget", default="quick", help="smoke | quick (default quick)")
    pr.add_argument("--out", help="run folder (default runs/images/NAME-BUDGET)")
    pr.add_argument("--training", help="a folder of training images instead of the packaged ones (e.g. BSD500)")
    pr.add_argument("--test-folder", help="test images (default ../shared/data/test_images, Set11)")
    pr.add_argument("--docs", help="write the report and figure under DOCS/repro and DOCS/images")
    pr.set_defaults(func=cmd_run)
    pd = s.add_parser("dictionary", help="learn a patch dictionary (scikit-learn) into a problem file")
    pd.add_argument("out")
    pd.add_argument("--training", help="a folder of training images (default: the packaged ones)")
    pd.add_argument("--patch", type=positive_int, default=16)
    pd.add_argument("--atoms", type=positive_int, default=512)
    pd.add_argument("--count", type=positive_int, default=30000, help="training patches")
    pd.add_argument("--epochs", type=positive_int, default=2)
    pd.add_argument("--alpha", type=positive, default=0.05)
    pd.add_argument("--seed", type=seed_int, default=0)
    pd.set_defaults(func=cmd_dictionary)
    pc = s.add_parser("conv-dictionary", help="learn 3x3 filters (sporco) or convert a filter file")
    pc.add_argument("out")
    pc.add_argument("--from", dest="source", help="a .mat/.npy/.npz filter bank to convert")
    pc.add_argument("--key", help="array name inside a .mat/.npz file")
    pc.add_argument("--layout", default="auto", help="auto | matlab (h, w, M) | torch (M, h, w)")
    pc.add_argument("--training", help="a folder of training images (default: the packaged ones)")
    pc.add_argument("--filters", type=positive_int, default=100)
    pc.add_argument("--size", type=positive_int, default=3)
    pc.add_argument("--lam", type=positive, default=0.05)
    pc.add_argument("--iterations", type=positive_int, default=100)
    pc.add_argument("--crop", type=positive_int, default=64)
    pc.add_argument("--crops", type=positive_int, default=16)
    pc.add_argument("--seed", type=seed_int, default=0)
    pc.set_defaults(func=cmd_conv_dictionary)
    pw = s.add_parser("weights", help="analytic convolutional W of a filter bank, with its coherence")
    pw.add_argument("filters")
    pw.add_argument("--key", help="array name inside a .mat/.npz file")
    pw.add_argument("--layout", default="auto", help="auto | matlab (h, w, M) | torch (M, h, w)")
    pw.add_argument("--out", help="write the closed-form W (M, h, w) to this .npy file")
    pw.add_argument("--seed", type=seed_int, default=0, help="seed of the random W compared")
    pw.set_defaults(func=cmd_weights)
    pp = s.add_parser("psnr", help="PSNR (dB, 0-255) of an estimate against a reference image")
    pp.add_argument("estimate")
    pp.add_argument("reference")
    pp.set_defaults(func=cmd_psnr)
