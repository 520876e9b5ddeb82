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


def margin(difference: float, pooled_std: float) -> float:
    """``difference`` in pooled seed stds; without seed noise (one seed, or identical scores) any
    difference is infinitely many, with its sign."""
    return difference / pooled_std if pooled_std else float(np.sign(difference)) * float("inf") if difference else 0.0


#: The kinds of searched network a comparison may hold beside ``random``: the gradient strategy's
#: derived network, its closed-loop derivation and the evolution strategy's choice.
SEARCHED = ("searched", "closed loop", "evolution")


def compare(rows: list[dict[str, Any]], rng: np.random.Generator) -> dict[str, Any]:
    """The statistics of one budget's rows (``random`` and those of ``SEARCHED`` present). Two
    searches often keep the same network: each network counts once in the pooled seed std and
    the ranking (twice counted, its own seed std would weigh double)."""
    rand = [r for r in rows if r["kind"] == "random"]
    rand_mean = statistics.mean(r["mean"] for r in rand)
    distinct = list({network_body(r["arch"]): r for r in rows}.values())
    pooled = pooled_std(distinct)
    summary: dict[str, Any] = {"random_mean": rand_mean, "random_best": max(r["mean"] for r in rand),
                               "random_worst": min(r["mean"] for r in rand), "pooled_seed_std": pooled, "networks": len(distinct)}
    searched_body = network_body(next(r for r in rows if r["kind"] == "searched")["arch"])
    for kind in SEARCHED:
        r = next((r for r in rows if r["kind"] == kind), None)
        if r is None:
            continue
        u_p, boot_p = one_sided_tests(r["scores"], [x["mean"] for x in rand], rng)
        summary[kind] = {"mean": r["mean"], "rank": 1 + sum(x["mean"] > r["mean"] for x in distinct), "of": len(distinct),
                         "same_as_searched": network_body(r["arch"]) == searched_body,
                         "margin_in_pooled_std": margin(r["mean"] - rand_mean, pooled),
                         "mannwhitney_p": u_p, "bootstrap_p": boot_p}
    return summary


def rank_agreement(a: list[float], b: list[float], rng: np.random.Generator, resamples: int = 10_000) -> dict[str, Any]:
    """How well ``a`` ranks what ``b`` ranks (a supernet's scores against stand-alone training's):
    Kendall's tau and Spearman's rho, each with the 2.5 and 97.5 percentiles of its bootstrap
    over the networks (resampled with replacement; resamples of one tied value are skipped).
    Where either side is one value throughout, the order is undefined: None."""
    from scipy.stats import kendalltau, spearmanr

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out: dict[str, Any] = {"networks": len(x)}
    for name, fn in (("kendall_tau", kendalltau), ("spearman_rho", spearmanr)):
        boot = []
        for _ in range(resamples):
            pick = rng.integers(0, len(x), len(x))
            if np.ptp(x[pick]) > 0 and np.ptp(y[pick]) > 0:
                boot.append(float(fn(x[pick], y[pick])[0]))
        out[name] = float(fn(x, y)[0]) if np.ptp(x) > 0 and np.ptp(y) > 0 else None
        out[f"{name}_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else None
    return out
