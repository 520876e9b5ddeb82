"""Evolutionary samplers of the black-box search, as Optuna samplers: regularised evolution
(``--sampler evolution``) and single-path one-shot's evolution (``--sampler spos``). Both draw a
trial's parameters from a child of earlier trials and fall back to a uniform draw for a
parameter the child lacks (a choice that only some networks have, such as a DenseNAS block
reached by one path and not another).

**Regularised (aging) evolution**
Real et al. (2019, "Regularized evolution for image classifier architecture search",
Algorithm 1): the population is the ``population`` most recent trained models; each new model is
a mutation of the best of ``sample`` models drawn from it at random, and the oldest model leaves
the population when a new one joins (aging, not the worst: a model must keep being rediscovered
to stay). Until the study holds ``population`` trained networks, networks are drawn uniformly.

Mapped onto a study: the population is the last ``population`` COMPLETE trials by trial number
(a network over the budget is pruned untrained and never joins it, so the budget shapes the
population as the paper's accuracy did); a mutation changes one parameter of the parent, chosen
uniformly among its choices (a DPC cell's: each branch's input and op), to another of its values,
chosen uniformly. The population lives in the storage, so workers sharing a study evolve one
population.

Choices where the paper is silent or sized for 20,000 models: ``population`` 12 and ``sample`` 3
(the paper's S/P of 1/4, scaled to studies of tens to hundreds of trials;
``benchmarks/dpc.py samplers`` measures them against random search). Every trial's randomness
comes from ``(seed, trial number)`` alone, so a study is reproducible from its trials and two
workers never share a draw.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class ChildSampler(BaseSampler):
    """A sampler whose trial takes the parameters of a child of earlier trials (``child``), each
    trial's randomness a function of (seed, trial number) alone."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._children: dict[int, dict[str, Any]] = {}  # the child of each trial this worker runs

    def rng(self, number: int, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, number, *salt])

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}  # every parameter goes through sample_independent, which reads the child

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def child(self, study: Study, number: int) -> dict[str, Any]:
        """Trial ``number``'s parameters (missing ones are drawn uniformly)."""
        raise NotImplementedError

    @staticmethod
    def scored(study: Study, number: int) -> list[FrozenTrial]:
        """The trials before ``number`` that may be parents: finished with a score in [0, 1]. A
        storage anyone may edit can hold a NaN, an infinity or 1e308; such a trial never breeds
        (and the study's summary names it, ``study.poisoned``)."""
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.number < number and isinstance(t.value, (int, float)) and 0.0 <= t.value <= 1.0]

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if trial.number not in self._children:
            self._children[trial.number] = self.child(study, trial.number)
        value = self._children[trial.number].get(param_name)
        if isinstance(param_distribution, CategoricalDistribution):
            if value is not None and value in param_distribution.choices:
                return value
            choices = param_distribution.choices  # the random phase (or a parameter the parent lacked)
            return choices[self.rng(trial.number, zlib.crc32(param_name.encode())).integers(len(choices))]
        raise ValueError(f"{type(self).__name__} breeds categorical parameters, not {param_name} ({param_distribution})")

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._children.pop(trial.number, None)


class RegularisedEvolution(ChildSampler):
    def __init__(self, seed: int = 0, population: int = 12, sample: int = 3):
        if not 1 <= sample <= population:
            raise ValueError(f"regularised evolution needs 1 <= sample ({sample}) <= population ({population})")
        super().__init__(seed)
        self.population, self.sample = population, sample

    def child(self, study: Study, number: int) -> dict[str, Any]:
        """Trial ``number``'s parameters: a mutation of the best of ``sample`` members of the
        population, or nothing (drawn uniformly) while the population is not full."""
        population = sorted(self.scored(study, number), key=lambda t: t.number)[-self.population:]
        if len(population) < self.population:
            return {}
        rng = self.rng(number)
        drawn = [population[i] for i in rng.choice(len(population), self.sample, replace=False)]
        parent = max(drawn, key=lambda t: (t.value, -t.number))
        params = dict(parent.params)
        name = sorted(params)[rng.integers(len(params))]
        dist = parent.distributions[name]
        if isinstance(dist, CategoricalDistribution):
            others = [c for c in dist.choices if c != params[name]]
            if others:
                params[name] = others[rng.integers(len(others))]
        return params


class SposEvolution(ChildSampler):
    def __init__(self, seed: int = 0, population: int = 50, top_k: int = 10, mutation: float = 0.1):
        if not 1 <= top_k <= population or not 0 < mutation <= 1:
            raise ValueError(f"SPOS evolution needs 1 <= top_k ({top_k}) <= population ({population}) and a mutation "
                             f"probability in (0, 1] ({mutation})")
        super().__init__(seed)
        self.population, self.top_k, self.mutation = population, top_k, mutation

    def child(self, study: Study, number: int) -> dict[str, Any]:
        """Trial ``number``'s parameters: a mutation or a crossover of the ``top_k`` best scored
        trials before it, or nothing (drawn uniformly) until ``population`` are scored."""
        done = self.scored(study, number)
        if len(done) < self.population:
            return {}
        parents = sorted(done, key=lambda t: (-(t.value or 0.0), t.number))[:self.top_k]
        rng = self.rng(number)
        first = parents[rng.integers(len(parents))]
        if rng.random() < 0.5:  # mutation: each choice redrawn (uniformly, by sample_independent) with p
            return {k: v for k, v in sorted(first.params.items()) if rng.random() >= self.mutation}
        second = parents[rng.integers(len(parents))]
        names = sorted(set(first.params) | set(second.params))
        picks = rng.random(len(names)) < 0.5
        return {k: (first if pick else second).params.get(k, (second if pick else first).params.get(k))
                for k, pick in zip(names, picks)}
