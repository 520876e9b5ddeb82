"""Every plot of both demos' reports, rendered and read back as matplotlib measures it: no text
outside the figure, a title on every panel, labelled axes, probabilities on
0..1 with the uniform value marked, the budget in every latency plot, a cell network drawn as a
graph (its arrows leave the chain)."""

import random

import matplotlib
import pytest
from conftest import saved_table, search_config

from nas2deploy import plotting
from nas2deploy.deploy.export import Exporter, ExportOptions
from nas2deploy.report import regenerate
from nas2deploy.runs import start_search
from nas2deploy.spaces import make_space

SPACES = {
    "densenas": ({"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 1}, "synthetic:100", 16),
    "dcnas": ({"input_size": 64, "layers": 4, "base_width": 8, "num_classes": 6, "head_width": 16}, "seg-synthetic:40", 8),
}


@pytest.fixture()
def figures(monkeypatch):
    """What each plot looked like when it was saved: its file name and the figure's facts."""
    seen = {}
    real = plotting.save

    def checked(fig, path):
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        images = [im for ax in axes for im in ax.get_images()]
        seen[path.name] = {
            "clipped": plotting.clipped_texts(fig),
            "titles": [ax.get_title() for ax in axes],
            "labels": [(ax.get_xlabel(), ax.get_ylabel()) for ax in axes if ax.axison],
            "limits": [im.get_clim() for im in images],
            "texts": [t.get_text() for t in fig.findobj(matplotlib.text.Text)],
            "legends": [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()],
            "arrows": [a.xy for ax in axes for a in ax.texts if isinstance(a, matplotlib.text.Annotation) and a.arrow_patch],
            "arrow_starts": [a.xyann for ax in axes for a in ax.texts if isinstance(a, matplotlib.text.Annotation) and a.arrow_patch],
        }
        return real(fig, path)

    monkeypatch.setattr(plotting, "save", checked)
    return seen


@pytest.mark.parametrize("space", list(SPACES))
def test_the_plots_of_a_search_and_an_export_read_right(tmp_path_factory, tmp_path, figures, space):
    shape, data, batch = SPACES[space]
    table = saved_table(tmp_path_factory, space, shape, seed=1)
    config = search_config(table=table, space=space, data=data, epochs=2, warmup_epochs=1, batch_size=batch, max_batches=1,
                           budget_ms=50.0, seed=0)
    start_search(config, tmp_path / "run").run()
    regenerate(tmp_path / "run")
    arch = make_space(space, shape).sample_arch(random.Random(2)).with_meta({"data": data, "budget_ms": 0.01})
    Exporter(arch, None, tmp_path / "export", ExportOptions(samples=4)).run()

    assert {"curves.png", "beta.png", "latency.png", "blocks.png", "arch.png"} <= set(figures)
    for name, fig in figures.items():
        assert fig["clipped"] == [], (name, fig["clipped"])
        if name != "arch.png":  # a diagram has no axes
            assert fig["labels"] and all(x and y for x, y in fig["labels"]), (name, fig["labels"])
        if name != "curves.png":  # its panels are named by their y labels
            assert all(fig["titles"]), name
    for name in [n for n in figures if n.startswith(("alpha", "beta"))]:
        assert figures[name]["limits"] == [(0.0, 1.0)], name  # probabilities on 0..1, whatever the values
    alphas = [n for n in figures if n.startswith("alpha")]
    assert all(any(t.startswith("uniform ") for t in figures[n]["texts"]) for n in alphas)
    assert "budget" in figures["curves.png"]["legends"] and any("budget" in t for t in figures["latency.png"]["texts"])
    assert not any("x10^" in t or "×10" in t for t in figures["curves.png"]["texts"])
    heights = {round(y, 3) for _, y in figures["arch.png"]["arrows"]}
    assert (len(heights) > 1) == (space == "dcnas")  # cells on a grid of scales; blocks in a chain


def test_the_plots_of_a_dpc_study_read_right(tmp_path, figures):
    import json

    from nas2deploy.search.blackbox.study import STUDY_FORMAT

    cell = [{"op": "sep3x3", "rate": [6, 21], "input": -1}, {"op": "pool", "grid": [2, 4], "input": 0}]
    rows = [{"number": i, "state": "pruned" if i % 4 == 3 else "complete", "miou": None if i % 4 == 3 else 0.2 + 0.01 * (i % 5),
             "latency_ms": 30.0 + i * 0.37, "worker": "h:1", "seconds": 1.0, "cell": cell} for i in range(12)]
    (tmp_path / "study.json").write_text(json.dumps({
        "format": STUDY_FORMAT, "version": 1, "study": "dpc", "sampler": "evolution", "budget_ms": 33.5,
        "space_name": "dpc", "options": {"proxy_epochs": 4}, "score_label": "proxy mIoU", "trial_rows": rows,
        "best": {"trial": 4}}))
    report = regenerate(tmp_path).read_text()
    assert "9 trained, 3 over the budget (never trained)" in report and "b0(F, sep3x3_r6x21), b1(b0, pool_g2x4)" in report
    assert {"trajectory.png", "pareto.png"} <= set(figures)
    for name in ("trajectory.png", "pareto.png"):
        assert figures[name]["clipped"] == [] and all(figures[name]["titles"]), name
        assert all(x and y for x, y in figures[name]["labels"]), name
    assert {"budget", "Pareto front", "chosen (trial 4)"} <= set(figures["pareto.png"]["legends"])
