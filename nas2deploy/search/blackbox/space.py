"""What a space searched trial by trial gives the black-box search.

A ``BlackBoxSpace`` encodes networks as a trial's choices (``suggest`` draws one through the
trial's ``suggest_categorical``, so that every Optuna sampler, regularised evolution included,
works on it; a finished trial's choices rebuild the same network), says what a study records of
a network (``cell``) and how a person reads it (``describe``), and prepares what scores networks
for one study: an ``Evaluator`` (DPC: the backbone's features cached on disk, and cells trained
on them). The study itself (storage, workers, samplers, the budget, re-ranking, the closed loop,
``study.json``) is ``study.py``'s and the same for every space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from nas2deploy.latency.table import LatencyTable
    from nas2deploy.nets import Network
    from nas2deploy.search.blackbox.study import StudyConfig


@dataclass(frozen=True)
class TrialScore:
    """A network's score (higher is better) and what the study keeps beside it (epochs, seconds)."""

    value: float
    attrs: dict[str, Any] = field(default_factory=dict)


class Evaluator(ABC):
    """What scores the networks of one study."""

    #: What the scores depend on besides the space, the table and the budget, as JSON values: a
    #: study records it, refuses to continue under another, and keys re-ranking trainings with it
    #: (DPC: the hash of what the cached features were computed from).
    identity: dict[str, Any]
    #: The recipe of an end-to-end training in re-ranking (its batch and learning rate), part of
    #: each re-ranking journal line's key.
    rerank_recipe: dict[str, Any] = {}

    @abstractmethod
    def score(self, net: Network, seed: int) -> TrialScore:
        """Score one network within the budget (the trial's number is its seed)."""

    def train_end_to_end(self, net: Network, epochs: int, seed: int) -> float:
        """The network trained whole for ``epochs`` and scored as ``score`` scores (re-ranking)."""
        from nas2deploy.errors import UserError

        raise UserError("this space's study has no end-to-end training: leave out --rerank")


class BlackBoxSpace(ABC):
    """A space's side of the black-box search (module docstring)."""

    #: What the study's folder holds for this space besides the study's own files.
    own_files: tuple[str, ...] = ()
    #: What a score measures, as people read it in reports ("proxy mIoU").
    score_label: str = "score"
    #: Whether a new study starts from networks drawn inside the budget's window
    #: (``initial_trials``); where not, a window random networks never reach is refused up front.
    starts_in_window: bool = False

    @abstractmethod
    def suggest(self, trial: Any, space: Any, name: str) -> Network:
        """The network a trial draws (or a finished trial holds), named ``name``."""

    @abstractmethod
    def cell(self, net: Network) -> Any:
        """The searched part of ``net`` as JSON (``study.json`` rows, the chosen network)."""

    @abstractmethod
    def describe(self, cell: Any) -> str:
        """A ``cell`` as read back from ``study.json``, in words (the report's tables)."""

    @abstractmethod
    def prepare(self, space: Any, table: LatencyTable, config: StudyConfig, out: Path,
                say: Callable[[str], None] | None) -> Evaluator:
        """What scores this study's networks, made once before its trials (resumable after a kill)."""

    def initial_trials(self, space: Any, table: LatencyTable, config: StudyConfig, count: int) -> list[dict[str, Any]]:
        """The parameters of up to ``count`` networks a new study starts from (queued before any
        trial is drawn), or none: a space whose networks rarely fall in the budget's window by
        chance draws its first population inside it, as single-path one-shot search does."""
        return []
