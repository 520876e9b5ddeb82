"""Whether a searched network beats random networks of its latency window: its rank, its margin
in pooled seed standard deviations, a one-sided Mann-Whitney U test and a bootstrap of the
difference of means."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from nas2deploy.evaluation.scores import network_body, pooled_std


def one_sided_tests(searched: list[float], random_means: list[float], rng: np.random.Generator) -> tuple[float | None, float]:
    """(Mann-Whitney U p, bootstrap p) that the searched scores exceed the random networks'; the
    U test needs scipy (not in the GPU machines' image: None there, the bootstrap decides)."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        u_p = None
    else:
        u_p = float(mannwhitneyu(searched, random_means, alternative="greater").pvalue)
    s, r = np.asarray(searched), np.asarray(random_means)
    diffs = rng.choice(s, (10_000, len(s))).mean(1) - rng.choice(r, (10_000, len(r))).mean(1)
    return u_p, float((diffs <= 0).mean())


def compare(rows: list[dict[str, Any]], rng: np.random.Generator) -> dict[str, Any]:
    """The statistics of one budget's rows (kinds searched, closed loop, random). The closed loop
    often keeps the table's network: each network counts once in the pooled seed std and the
    ranking (twice counted, the searched network's own seed std would weigh double)."""
    rand = [r for r in rows if r["kind"] == "random"]
    rand_mean = statistics.mean(r["mean"] for r in rand)
    distinct = list({network_body(r["arch"]): r for r in rows}.values())
    pooled = pooled_std(distinct)
    summary: dict[str, Any] = {"random_mean": rand_mean, "random_best": max(r["mean"] for r in rand),
                               "random_worst": min(r["mean"] for r in rand), "pooled_seed_std": pooled, "networks": len(distinct)}
    searched_body = network_body(next(r for r in rows if r["kind"] == "searched")["arch"])
    for kind in ("searched", "closed loop"):
        r = next(r for r in rows if r["kind"] == kind)
        u_p, boot_p = one_sided_tests(r["scores"], [x["mean"] for x in rand], rng)
        summary[kind] = {"mean": r["mean"], "rank": 1 + sum(x["mean"] > r["mean"] for x in distinct), "of": len(distinct),
                         "same_as_searched": network_body(r["arch"]) == searched_body,
                         "margin_in_pooled_std": (r["mean"] - rand_mean) / pooled if pooled else float("inf"),
                         "mannwhitney_p": u_p, "bootstrap_p": boot_p}
    return summary
