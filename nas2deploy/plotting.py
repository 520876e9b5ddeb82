"""The plotting primitives the reports share (matplotlib, headless Agg backend, PNG files)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import matplotlib

from nas2deploy.fileio import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def save(fig: Any, path: Path) -> str:
    """Render to memory, then write atomically (never through a link planted at ``path``)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def bars(path: Path, labels: Sequence[str], values: Sequence[float], ylabel: str, title: str,
         hline: float | None = None, hline_label: str = "") -> str:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.2))
    ax.bar(range(len(values)), values, color="#4477aa")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 5 else 0, ha="right" if len(labels) > 5 else "center")
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    if hline is not None:
        ax.axhline(hline, color="#cc3311", linestyle="--", label=hline_label)
        ax.legend(loc="lower right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save(fig, path)


def heatmap(path: Path, matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
            title: str, colorbar: str) -> str:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(col_labels) + 2.5), max(2.5, 0.16 * len(row_labels) + 1.2)))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=7)
    step = max(1, len(row_labels) // 40)
    ax.set_yticks(range(0, len(row_labels), step), [row_labels[i] for i in range(0, len(row_labels), step)], fontsize=6)
    fig.colorbar(image, ax=ax, label=colorbar)
    ax.set_title(title)
    return save(fig, path)


def curves(path: Path, x: Sequence[float], panels: list[tuple[str, dict[str, Sequence[float | None]], bool]]) -> str:
    """One panel per (y label, {series: values}, log scale); None values are gaps."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    for ax, (ylabel, series, log) in zip(np.atleast_1d(axes), panels):
        for name, ys in series.items():
            ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return save(fig, path)


def arch_diagram(path: Path, rows: list[dict[str, Any]], title: str) -> str:
    """Blocks left to right: box height grows with channels, labels give ops and output shape."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.25 * len(rows)), 3.4))
    widest = max(r["out"][0] for r in rows)
    for i, r in enumerate(rows):
        height = 0.25 + 0.75 * r["out"][0] / widest
        ax.add_patch(plt.Rectangle((i * 1.2, -height / 2), 1.0, height, facecolor="#88ccee", edgecolor="#335577"))
        ops = "\n".join(k.split("_i")[0].replace("mbconv_", "").replace("conv_", "conv ") for k in r["ops"][:4])
        if len(r["ops"]) > 4:
            ops += f"\n+{len(r['ops']) - 4}"
        ax.text(i * 1.2 + 0.5, 0, ops, ha="center", va="center", fontsize=6)
        ax.text(i * 1.2 + 0.5, -0.62, r["name"], ha="center", fontsize=7)
        ax.text(i * 1.2 + 0.5, 0.56, "x".join(map(str, r["out"])), ha="center", fontsize=6)
        if i:
            ax.annotate("", (i * 1.2, 0), (i * 1.2 - 0.2, 0), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.2, len(rows) * 1.2)
    ax.set_ylim(-0.75, 0.7)
    ax.axis("off")
    ax.set_title(title)
    return save(fig, path)
