"""The configuration of a search run, and how it is read from a file.

Paper defaults (reference.md section 2) except the batch: 64 instead of 352, with the weights'
learning rate scaled linearly (0.2 x 64 / 352 ~= 0.036) and gradients clipped at norm 5 (at 0.2
and batch 32 the supernet's loss diverged to ~70 within an epoch here).

What belongs to the space is nested under it: ``space_config`` overrides the configuration the
table was profiled with (``input_size``, ``layers``, ...), ``search_options`` are the options of
the space's search (DCNAS: ``path_samples``, ``channel_fraction``, ``viterbi``); the space checks
both (``nas2deploy.runs``). Files written before they were nested carry those fields at the top
level; ``SearchConfig.read`` moves them under the space, so old config files and checkpoints
keep loading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from nas2deploy.errors import UserError
from nas2deploy.fileio import read_json
from nas2deploy.validate import MAX_OP_MS, Field


@dataclass
class SearchConfig:
    table: str
    data: str = ""  # "": the space's built-in data
    space: str = "densenas"
    epochs: int = 150
    warmup_epochs: int = 50
    batch_size: int = 64
    val_fraction: float = 0.2
    max_batches: int = 0  # per pass; 0 = the whole split (small runs, tests and the demo use a cap)
    w_lr: float = 0.036
    w_lr_min: float = 1e-5
    w_momentum: float = 0.9
    w_weight_decay: float = 4e-5
    grad_clip: float = 5.0
    #: Micro-batches per step: each rank's batch is split into this many chunks whose gradients
    #: add up. A run with accumulate=N computes exactly what N torchrun ranks compute (BN then
    #: normalises over the same chunks), and it fits a large batch into little memory.
    accumulate: int = 1
    a_lr: float = 3e-4
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    lam: float = 0.15
    tau: float = 15.0
    budget_ms: float | None = None
    lam_rate: float = 0.05
    seed: int = 0
    #: Where the search runs ("cpu" or "cuda"; under torchrun, each rank on cuda:LOCAL_RANK).
    device: str = "cpu"
    #: Mixed precision of the forward passes: "off", "bf16" or "fp16" (with gradient scaling).
    amp: str = "off"
    #: Processes decoding the data (0: in the search's process).
    workers: int = 0
    #: Images in channels-last memory order (faster convolutions on recent GPUs with AMP).
    channels_last: bool = True  # 1.5x faster steps on a CPU (benchmarks/training_speed.py)
    #: Keep the first N classes of an ImageFolder (DenseNAS searched ImageNet's first 100); 0: all.
    data_classes: int = 0
    #: Segmentation training crops "HxW" (e.g. 512x1024 from Cityscapes' 1024x2048); "": square
    #: at the input size.
    crop: str = ""
    #: How the architecture is searched: "gradient" (alpha and beta learn beside the weights, as
    #: DenseNAS and DCNAS publish) or "evolution" (single-path one-shot: the supernet's weights
    #: train on uniformly drawn networks, then an evolutionary search scores networks of the
    #: budget's window by their inherited weights: ``search/oneshot.py``).
    strategy: str = "gradient"
    #: Overrides of the space configuration the table was profiled with (absent: the table's).
    space_config: dict[str, Any] = field(default_factory=dict)
    #: The options of the space's search (absent: the space's defaults).
    search_options: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def read(doc: Field, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """The fields of a config read from a file (a ``--config`` file or a checkpoint), each
        by its rule in ``CONFIG_RULES``; unknown fields are refused by name; fields of the space
        written at the top level by earlier releases move under ``space_config`` and
        ``search_options``."""
        known = [name for name in (*CONFIG_RULES, *LEGACY_SPACE, *LEGACY_SEARCH) if name not in exclude]
        unknown = sorted(set(doc.object()) - set(known))
        if unknown:
            raise UserError(f"{doc.source}: unknown field(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(n for n in known if n not in (*LEGACY_SPACE, *LEGACY_SEARCH)))}")
        values: dict[str, Any] = {}
        for key, value in doc.items():
            if key in LEGACY_SPACE:
                if value.value is not None:
                    values.setdefault("space_config", {})[key] = value.value
            elif key in LEGACY_SEARCH:
                default = LEGACY_SEARCH[key]  # earlier releases stored every default, for every space
                if not (type(value.value) is type(default) and value.value == default):  # 0 is no False
                    values.setdefault("search_options", {})[key] = value.value
            else:
                values[key] = None if value.value is None and key in OPTIONAL else CONFIG_RULES[key](value)
        return values

    @staticmethod
    def from_file(path: str | Path, saved_run: bool = False) -> dict[str, Any]:
        """A config file's fields; ``table`` and ``space`` come from ``--lut`` and ``--space``, so a
        file may not give them, except a run's own ``config.json`` (``saved_run``), whose are left
        for the resumed run to compare with."""
        raw = read_json(path, "search config")
        if saved_run and isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k not in ("table", "space")}
        doc = Field(raw, f"search config {path}", "correct the field")
        return SearchConfig.read(doc, exclude=("table", "space"))

    def check(self) -> None:
        """The same rules for a config built from command-line options, and the rules across
        fields: some epoch must search the architecture (warm-up epochs train weights only), and
        the cosine schedule falls from ``w_lr`` to ``w_lr_min``, not up to it."""
        SearchConfig.read(Field(asdict(self), "search options", "give a valid value"))
        if self.w_lr_min > self.w_lr:
            raise UserError(f"search config: w_lr_min {self.w_lr_min:g} is above w_lr (--w-lr) {self.w_lr:g}: the "
                            "learning rate would rise over the search; give a w_lr_min at most w_lr")
        if self.strategy == "gradient" and self.warmup_epochs >= self.epochs:
            raise UserError(f"--epochs {self.epochs} with --warmup-epochs {self.warmup_epochs}: every epoch would be "
                            "weight warm-up and no architecture would be searched; give more --epochs than --warmup-epochs")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STRATEGIES = ("gradient", "evolution")
#: Validation images the evolution strategy scores a network on, by default (a standard error of
#: about 0.65 points of top-1 at 70%; the search loop's architecture split of CIFAR-10 is 25,000).
#: Networks of one latency window differ by about 2 points of inherited top-1, and 5,000 images
#: order them only roughly (benchmarks/supernet_ranking.py ranks with several counts).
VALIDATION = 5000
#: The rule of each SearchConfig field (``nas2deploy.validate``); None is allowed for OPTIONAL.
CONFIG_RULES: dict[str, Callable[[Field], Any]] = {
    "table": lambda f: f.str(max_len=4096), "data": lambda f: f.str(max_len=4096), "space": lambda f: f.str(),
    "epochs": lambda f: f.int(1, 10**6), "warmup_epochs": lambda f: f.int(0, 10**6),
    "batch_size": lambda f: f.int(1, 65536), "val_fraction": lambda f: f.number(0, 0.99, lo_open=True),
    "max_batches": lambda f: f.int(0, 10**9), "w_lr": lambda f: f.number(0, 10, lo_open=True),
    "w_lr_min": lambda f: f.number(0, 10), "w_momentum": lambda f: f.number(0, 0.999),
    "w_weight_decay": lambda f: f.number(0, 1), "grad_clip": lambda f: f.number(0, 1e6, lo_open=True),
    "accumulate": lambda f: f.int(1, 1024), "a_lr": lambda f: f.number(0, 10, lo_open=True),
    "a_beta1": lambda f: f.number(0, 0.999), "a_beta2": lambda f: f.number(0, 0.99999),
    "a_weight_decay": lambda f: f.number(0, 1), "lam": lambda f: f.number(0, 1e3), "tau": lambda f: f.number(1, 1e6, lo_open=True),
    "budget_ms": lambda f: f.number(0, MAX_OP_MS, lo_open=True), "lam_rate": lambda f: f.number(0, 10, lo_open=True),
    "seed": lambda f: f.int(0, 2**62),
    "device": lambda f: f.str(("cpu", "cuda")), "amp": lambda f: f.str(("off", "bf16", "fp16")),
    "workers": lambda f: f.int(0, 256), "channels_last": lambda f: f.bool(),
    "data_classes": lambda f: f.int(0, 10**6), "crop": lambda f: _crop_rule(f),
    "strategy": lambda f: f.str(STRATEGIES),
    # the space checks the members (nas2deploy.runs)
    "space_config": lambda f: dict(f.object()), "search_options": lambda f: dict(f.object()),
}
OPTIONAL = ("budget_ms",)


def parse_crop(text: str) -> tuple[int, int] | None:
    """``"HxW"`` as (H, W); "" as None. Sides are multiples of 32 (the supernets downsample 32x)."""
    if not text:
        return None
    h, sep, w = text.partition("x")
    if not (sep and h.isdigit() and w.isdigit()):
        raise ValueError("must be HxW, e.g. 512x1024")
    sides = int(h), int(w)
    if not all(64 <= side <= 8192 and side % 32 == 0 for side in sides):
        raise ValueError("sides must be multiples of 32 in [64, 8192]")
    return sides


def _crop_rule(f: Field) -> str:
    text = f.str(max_len=16)
    try:
        parse_crop(text)
    except ValueError as exc:
        raise f.error(str(exc)) from None
    return text
#: Fields of the space that earlier releases wrote at the top level of a config.
LEGACY_SPACE = ("input_size", "width_mult", "num_classes", "max_stack_layers", "layers", "base_width", "max_back",
                "derive_inputs")
#: Search options that earlier releases wrote at the top level, with the defaults they stored.
LEGACY_SEARCH: dict[str, Any] = {"path_samples": 2, "channel_fraction": 0.25, "viterbi": False}


def provenance(config: SearchConfig, budget_ms: float | None) -> dict[str, Any]:
    """What an architecture file records of its origin: ``export`` reads the budget, the table
    to compare against and the data to check accuracy on from here."""
    meta: dict[str, Any] = {"lut": config.table, "data": config.data, "space": config.space}
    if budget_ms is not None:
        meta["budget_ms"] = budget_ms
    return meta
