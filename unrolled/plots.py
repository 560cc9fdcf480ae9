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
