"""The plotting primitives the reports share (matplotlib, headless Agg backend, PNG files).

Rules every plot keeps, because a plot that misleads is worse than none: titles are wrapped to
the figure's width (a table's path once ran off the edge), probabilities are drawn on 0..1 with
the uniform value marked (a colour range of 0.160-0.175 made a near-uniform distribution look
like a strong preference), every latency plot shows the budget, numbers are printed without
matplotlib's offset notation ("1.514x10^-1" for a plain 0.15), and a network is drawn as the
graph it is (``Network.layout``). ``clipped_texts`` says which texts fall outside a figure; the
tests render every report plot through it.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib

from nas2deploy.fileio import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, ScalarFormatter  # noqa: E402

#: Characters of a title per inch of figure width (at the title's font size, 10 pt).
_TITLE_CHARS_PER_INCH = 13


def save(fig: Any, path: Path) -> str:
    """Render to memory, then write atomically (never through a link planted at ``path``)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def clipped_texts(fig: Any) -> list[str]:
    """The drawn texts (titles, axis labels, tick labels in view, annotations, legends) that
    extend past the figure's edges once laid out as ``save`` lays it out, as matplotlib
    measures them."""
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = list(fig.texts)
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())) if ax.axison else ():
            low, high = sorted(limits)
            texts += [t.label1 for t in axis.get_major_ticks() + axis.get_minor_ticks() if low <= t.get_loc() <= high]
        legend = ax.get_legend()
        texts += list(legend.get_texts()) if legend is not None else []
    box = fig.bbox
    out = []
    for text in texts:
        if not text.get_visible() or not text.get_text().strip():
            continue
        extent = text.get_window_extent(renderer)
        if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y0 < box.y0 - 1 or extent.y1 > box.y1 + 1:
            out.append(text.get_text())
    return out


def title(ax: Any, text: str) -> None:
    """A title wrapped to the width of its figure, so that none runs off the edge."""
    width = ax.figure.get_size_inches()[0]
    ax.set_title(textwrap.fill(text, max(20, int(width * _TITLE_CHARS_PER_INCH))), fontsize=10)


def _plain_numbers(ax: Any, log: bool) -> None:
    """Tick labels as plain numbers: no offset or scientific notation on a linear axis, and
    three significant digits on a log axis (whose ticks are otherwise 1.514x10^-1)."""
    if log:
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    else:
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        ax.yaxis.set_major_formatter(formatter)


def bars(path: Path, labels: Sequence[str], values: Sequence[float], xlabel: str, ylabel: str, text: str,
         hline: float | None = None, hline_label: str = "") -> str:
    """Bars with their values; ``hline`` (a budget) drawn across, labelled in the right margin so
    that the label hides neither a bar's value nor the title."""
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(labels) + 2), 3.4))
    ax.bar(range(len(values)), values, color="#4477aa")
    rotate = len(labels) > 5 or max((len(line) for label in labels for line in label.split("\n")), default=0) > 12
    ax.set_xticks(range(len(labels)), labels, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3g}", (i, v), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
    top = max([*values, hline or 0.0]) * 1.2
    ax.set_ylim(0, top if top > 0 else 1)
    if hline is not None:
        ax.axhline(hline, color="#cc3311", linestyle="--", zorder=0)
        ax.text(1.01, hline, hline_label, transform=ax.get_yaxis_transform(), color="#cc3311", fontsize=8, va="center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _plain_numbers(ax, False)
    title(ax, text)
    return save(fig, path)


def heatmap(path: Path, matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], text: str,
            colorbar: str, probability: bool = False, uniform: float | None = None, xlabel: str = "",
            ylabel: str = "") -> str:
    """A matrix as colours. ``probability``: the scale is 0..1 whatever the values, ``uniform``
    (the value of a distribution that prefers nothing) is marked on the colour bar, and small
    matrices print their values; NaN cells (no such entry) stay blank."""
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(col_labels) + 2.8), max(2.8, 0.18 * len(row_labels) + 1.4)))
    low, high = (0.0, 1.0) if probability else (None, None)
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest", vmin=low, vmax=high)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=7)
    step = max(1, len(row_labels) // 40)
    ax.set_yticks(range(0, len(row_labels), step), [row_labels[i] for i in range(0, len(row_labels), step)], fontsize=6)
    bar = fig.colorbar(image, ax=ax, label=colorbar)
    if uniform is not None:
        bar.ax.axhline(uniform, color="white", linewidth=2)
        bar.ax.text(1.6, uniform, f"uniform {uniform:.2f}", transform=bar.ax.get_yaxis_transform(), va="center", fontsize=7)
    if probability and matrix.size <= 160:
        for (r, c), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6, color="black" if value > 0.6 else "white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    title(ax, text)
    return save(fig, path)


def curves(path: Path, x: Sequence[float], panels: list[tuple[str, dict[str, Sequence[float | None]], bool]],
           hlines: dict[str, tuple[float, str]] | None = None) -> str:
    """One panel per (y label, {series: values}, log scale); None values are gaps; ``hlines``
    draws a dashed line (a budget) in the panel of that y label."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (ylabel, series, log) in zip(np.atleast_1d(axes), panels):
        for name, ys in series.items():
            ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", markersize=3, label=name)
        if hlines and ylabel in hlines:
            value, label = hlines[ylabel]
            ax.axhline(value, color="#cc3311", linestyle="--", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        _plain_numbers(ax, log)
        ax.legend(fontsize=7)
    return save(fig, path)


def arch_diagram(path: Path, rows: list[dict[str, Any]], text: str,
                 layout: tuple[dict[str, tuple[float, float]], list[tuple[str, str]]] | None = None) -> str:
    """One box per row (its ops and output shape) at the ``layout`` position of its name, arrows
    from each input to what it feeds (``Network.layout``; default a chain left to right). Box
    height grows with channels; a grid of cells shows its main op only, so the text fits."""
    places, edges = layout or ({r["name"]: (float(i), 0.0) for i, r in enumerate(rows)},
                               [(a["name"], b["name"]) for a, b in zip(rows, rows[1:])])
    chain = len({y for _, y in places.values()}) == 1
    xs = [x for x, _ in places.values()]
    ys = [y for _, y in places.values()]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * (max(xs) - min(xs) + 1)), 3.6 if chain else 1.0 + 1.1 * (max(ys) - min(ys) + 1)))
    widest = max(r["out"][0] for r in rows)
    for r in rows:
        x, y = places[r["name"]]
        height = (0.25 + 0.5 * r["out"][0] / widest) if chain else 0.6
        ax.add_patch(plt.Rectangle((x - 0.42, y - height / 2), 0.84, height, facecolor="#88ccee", edgecolor="#335577"))
        ops = [k.split("_i")[0].replace("mbconv_", "").replace("conv_", "conv ") for k in r["ops"]]
        shown = "\n".join(ops[:4]) + (f"\n+{len(ops) - 4}" if len(ops) > 4 else "") if chain else \
            textwrap.fill(ops[-1].replace("_", " "), 11)
        ax.text(x, y, shown, ha="center", va="center", fontsize=6)
        ax.text(x, y - height / 2 - 0.08, r["name"], ha="center", va="top", fontsize=6 if chain else 5)
        ax.text(x, y + height / 2 + 0.04, "x".join(map(str, r["out"])), ha="center", va="bottom", fontsize=5)
    for src, dst in edges:
        (x0, y0), (x1, y1) = places[src], places[dst]
        ax.annotate("", (x1 - 0.42, y1), (x0 + 0.42, y0), arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.7,
                                                                     "connectionstyle": "arc3,rad=0.12"})
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.75, max(ys) + 0.7)
    ax.axis("off")
    title(ax, text)
    return save(fig, path)
