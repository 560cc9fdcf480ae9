"""Figures drawn from result tables only (long-format rows); matplotlib is the ``plot`` extra."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError
from .io import atomic_write


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or a one-line error naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("drawing figures needs matplotlib: pip install 'unrolled[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layers(rows: list[dict], path: str | Path, title: str = "", metric: str = "nmse_db") -> None:
    """NMSE (dB) vs layer for every method; oracle rows (no layer) as horizontal lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    floors = []
    for m in methods:
        pts = sorted((int(r["layer"]), float(r[metric])) for r in rows if r["method"] == m and r["layer"] != "")
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=m)
        else:
            val = next(float(r[metric]) for r in rows if r["method"] == m)
            ax.axhline(val, ls="--", lw=1, color="gray")
            floors.append((m, val))
    if floors:  # one label for all floors (least squares and MMSE nearly coincide)
        text = ", ".join(f"{m} {v:.1f} dB" for m, v in floors)
        ax.annotate(text, (0, min(v for _, v in floors)), textcoords="offset points", xytext=(2, 3), fontsize=7)
    ax.set_xlabel("layer / iteration")
    ax.set_ylabel("aggregate NMSE (dB)" if metric == "nmse_db" else "mean per-sample NMSE (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=suffix))
    plt.close(fig)


def plot_training(rows: list[dict], path: str | Path, title: str = "", ylabel: str = "validation NMSE (dB)") -> None:
    """Training curves from ``metrics.jsonl`` rows: the validation value and the mean training
    loss against training samples, one colour per stage (stage boundaries dotted)."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.6), dpi=120, sharex=True)
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    for i, stage in enumerate(stages):
        pts = [r for r in rows if r["stage"] == stage]
        label = stage if len(stages) <= 8 else None
        samples, colour = [r["samples"] for r in pts], f"C{i % 10}"
        top.plot(samples, [r["val"] for r in pts], marker="o", ms=2, label=label, color=colour)
        bottom.plot(samples, [r["train_loss"] for r in pts], lw=1, color=colour)
        if i:
            for ax in (top, bottom):
                ax.axvline(pts[0]["samples"], ls=":", lw=0.8, color="gray")
    best = min(r["val"] for r in rows)
    top.axhline(best, ls="--", lw=0.8, color="gray")
    top.annotate(f"best {best:.2f}", (rows[0]["samples"], best), textcoords="offset points", xytext=(2, 3), fontsize=7)
    top.set_ylabel(ylabel)
    top.set_title(title, fontsize=9)
    bottom.set_ylabel("mean training loss")
    if all(r["train_loss"] > 0 for r in rows):
        bottom.set_yscale("log")
    bottom.set_xlabel("training samples")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    if len(stages) <= 8:
        top.legend(fontsize=7)
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=suffix))
    plt.close(fig)
