"""``search``, ``derive`` and ``train``: find a network under a budget, take it out of the run, train it.

``search`` takes the options of the space it searches (``--space``): a space searched by its
supernet takes the gradient search's options and its own configuration and search options; a
space searched trial by trial takes the black-box study's options and its own configuration and
study options. ``search --space NAME --help`` lists exactly those; an option of another space is
refused naming whose it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nas2deploy.cli.common import (POSITIVE, Finite, InputSize, SpaceName, chosen_space, compute_params, data_params,
                                   declared_command, emit, every_space_params, force_option, json_option, log,
                                   on_interrupt, pop_options, space_params, start_threads, threads_param, warn_table,
                                   with_params)
from nas2deploy.errors import UserError
from nas2deploy.fileio import check_name, claim_file, exclusive, lock_path, require_space
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.search.blackbox.storage import SAMPLERS
from nas2deploy.search.config import STRATEGIES, VALIDATION, SearchConfig
from nas2deploy.spaces import DEFAULT_SPACE, SPACES

if TYPE_CHECKING:
    from nas2deploy.search.loop import SearchRun

_DEFAULTS = SearchConfig(table="")


def supernet_params() -> list[click.Parameter]:
    """The gradient search's options (``SearchConfig`` fields; a ``--config`` file fills the rest)."""
    d = _DEFAULTS
    return [
        click.Option(["--lambda", "lam"], type=Finite(min=0, max=1e3), default=d.lam, show_default=True,
                     help="Weight of the latency term."),
        click.Option(["--tau"], type=Finite(min=1, min_open=True, max=1e6), default=d.tau, show_default=True,
                     help="Base of the latency term's logarithm."),
        click.Option(["--epochs"], type=click.IntRange(min=1), default=d.epochs, show_default=True),
        click.Option(["--warmup-epochs"], type=click.IntRange(min=0), default=d.warmup_epochs, show_default=True),
        click.Option(["--batch-size"], type=click.IntRange(min=1), default=d.batch_size, show_default=True),
        click.Option(["--max-batches"], type=click.IntRange(min=0), default=d.max_batches, show_default=True,
                     help="Cap per pass (0: all)."),
        click.Option(["--w-lr"], type=Finite(min=0, min_open=True, max=10), default=d.w_lr, show_default=True),
        click.Option(["--a-lr"], type=Finite(min=0, min_open=True, max=10), default=d.a_lr, show_default=True),
        *compute_params(), *data_params(),
        click.Option(["--dist-backend"], type=click.Choice(["auto", "nccl", "gloo"]), default="auto", show_default=True,
                     help="Under torchrun: auto is nccl on cuda, gloo on cpu; gloo lets ranks share one GPU."),
        click.Option(["--dist-timeout"], type=click.IntRange(min=10), default=300, show_default=True,
                     help="Seconds a rank waits for the others before failing (a dead rank, a lost network)."),
        click.Option(["--config", "config_file"], type=click.Path(dir_okay=False), help="JSON file of SearchConfig fields."),
        click.Option(["--resume"], is_flag=True, help="Continue the run in --out from its checkpoint."),
    ]


def study_params(trials: int = 20, sampler: str = "random", rerank: bool = True) -> list[click.Parameter]:
    """The black-box study's options (``search.blackbox.StudyConfig``)."""
    from nas2deploy.search.blackbox.storage import SAMPLERS

    return [
        click.Option(["--trials"], type=click.IntRange(min=1), default=trials, show_default=True,
                     help="The study's trials in all: each worker runs trials until the study holds this many."),
        click.Option(["--storage"], help="Optuna storage shared by the workers: a journal file or a database URL "
                     "[default: the study folder's study.log]."),
        click.Option(["--study", "study_name"], help="The study's name [default: the space's; "
                     "with --strategy evolution, the space's and its supernet's]."),
        click.Option(["--sampler"], type=click.Choice(SAMPLERS), default=sampler, show_default=True,
                     help="How trials are drawn: random, regularised evolution, SPOS's evolution (top-k parents, "
                     "mutation, crossover), TPE or NSGA-II."),
        *([click.Option(["--rerank"], type=click.IntRange(min=0), default=0, show_default=True,
                        help="Train the study's K best networks end to end and keep the best."),
           click.Option(["--rerank-epochs"], type=click.IntRange(min=1), default=10, show_default=True,
                        help="Epochs of each re-ranking training.")] if rerank else []),
        click.Option(["--measure"], is_flag=True, help="Closed loop: the best network that measures within the budget "
                     "on this machine (the table's backend)."),
    ]


#: The supernet search's options that only the gradient strategy reads (alpha and beta's).
GRADIENT_ONLY = ("lam", "tau", "a_lr", "warmup_epochs")


def params_of(name: str, strategy: str = "gradient") -> list[click.Parameter]:
    """The options of space ``name``'s search with ``strategy``: its search's and its own (an
    unknown space has none: ``--space`` refuses it)."""
    entry = SPACES.get(name)
    if entry is None:
        return []
    if entry.searched_by == "trials":
        return study_params() + [threads_param()] + space_params(name, "space", "study")
    chosen = [click.Option(["--strategy"], type=click.Choice(STRATEGIES), default="gradient", show_default=True,
                           help="gradient: alpha and beta learn beside the weights (as published); evolution: single-path "
                           "one-shot, the supernet trained on uniformly drawn networks, then an evolutionary search of "
                           "the budget's window scored by inherited weights (search --strategy evolution --help).")]
    if strategy != "evolution":
        return chosen + supernet_params() + space_params(name, "space", "search")
    return chosen + [p for p in supernet_params() if p.name not in GRADIENT_ONLY] + study_params(200, "spos", rerank=False) + [
        click.Option(["--fill"], type=Finite(min=0, max=1), default=DEFAULT_FILL, show_default=True,
                     help="The window's lower end as a share of the budget: networks predicted below it are not scored."),
        click.Option(["--validation-images"], type=click.IntRange(min=0), default=VALIDATION, show_default=True,
                     help="Images of the architecture split each network is scored on (0: all of it): more images "
                     "order the networks of a narrow window more surely, and each trial takes longer."),
    ] + space_params(name, "space", "search")


def chosen_strategy(args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg == "--strategy" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--strategy="):
            return arg.split("=", 1)[1]
    return "gradient"


def foreign_search_option(flag: str, args: list[str]) -> str | None:
    """Whose search an option is, when the chosen space's (and strategy's) is not."""
    chosen, strategy = chosen_space(args), chosen_strategy(args)
    if SPACES.get(chosen) is not None and SPACES[chosen].searched_by == "supernet":
        other = "gradient" if strategy == "evolution" else "evolution"
        if any(flag in p.opts for p in params_of(chosen, other)):
            return (f"{flag} is an option of the {chosen} search's {other} strategy, not of its {strategy} strategy "
                    f"(nas2deploy search --space {chosen} --strategy {strategy} --help lists its options)")
    owners = [name for name in SPACES if name != chosen and any(flag in p.opts for p in params_of(name))]
    if not owners:
        return None
    return (f"{flag} is an option of the search of the {' and '.join(owners)} space, not of {chosen}'s "
            f"(nas2deploy search --space {chosen} --help lists its options)")


@declared_command(lambda ctx, args: params_of(chosen_space(args), chosen_strategy(args)), foreign_search_option,
                  epilog="The options after --json are those of the space searched: nas2deploy search --space NAME --help "
                         "lists the options of another space.")
@click.option("--space", "space_name", type=SpaceName(), default=DEFAULT_SPACE, show_default=True)
@click.option("--lut", "table", type=click.Path(dir_okay=False), required=True, help="Latency table of the target device.")
@click.option("--data", default="", help="DenseNAS: 'synthetic' (default), 'synthetic-small' (harder), a CIFAR-10 binary "
              "folder or an ImageFolder (CIFAR-10 as image files: train/ and test/); DCNAS and DPC: 'seg-synthetic' "
              "(default), a Cityscapes, PASCAL VOC or CamVid folder.")
@click.option("--budget-ms", type=POSITIVE, help="Latency budget (a supernet search: lambda adapts so the expected latency "
              "settles here; a study: networks predicted over it are never trained).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (runs/NAME).")
@click.option("--force", is_flag=True, help="Start in a folder that holds other files or another search (replacing it).")
@json_option
@click.pass_context
def search(ctx: click.Context, space_name: str, table: str, out: str, force: bool, as_json: bool, **opts: Any) -> None:
    """Latency-regularised search (DenseNAS, DCNAS) or black-box search of DPC cells (--space dpc).

    The first writes log.jsonl, checkpoint.pt and arch.json to --out; the second the study's
    journal, study.json, best.json and a report."""
    threads = start_threads(opts.pop("compute_threads", 0))
    if SPACES[space_name].searched_by == "trials":
        study(space_name, table, out, force, as_json, opts, threads)
    else:
        supernet_search(ctx, space_name, table, out, force, as_json, opts, threads)


def supernet_search(ctx: click.Context, space_name: str, table: str, out: str, force: bool, as_json: bool,
                    opts: dict[str, Any], threads: str) -> None:
    """``search`` for a space searched by its supernet: the gradient loop, resumable; with
    ``--strategy evolution`` the one-shot supernet's training, then its evolutionary search."""
    from nas2deploy.runs import start_search
    from nas2deploy.search.distributed import leave_process_group

    dist_backend, dist_timeout, config_file, resume = (opts.pop(k) for k in ("dist_backend", "dist_timeout", "config_file",
                                                                              "resume"))
    evolution: dict[str, Any] = {k: opts.pop(k) for k in ("trials", "storage", "study_name", "sampler", "measure", "fill",
                                                               "validation_images")
                                 if k in opts}
    if opts["strategy"] == "evolution" and opts.get("budget_ms") is None:
        raise UserError("--strategy evolution searches the networks of a budget's window: give --budget-ms")
    # Options are named as SearchConfig fields (the space's under space_config and search_options);
    # a --config file, or with --resume the run's own config.json, fills what the command line leaves out.
    space_config = pop_options(space_name, opts, "space")
    search_options = pop_options(space_name, opts, "search")
    saved = Path(out) / "config.json"
    fields = SearchConfig.from_file(config_file) if config_file else \
        SearchConfig.from_file(saved, saved_run=True) if resume and saved.is_file() else {}
    for name, value in opts.items():
        if name not in fields or ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            fields[name] = value
    fields["space_config"] = {**fields.get("space_config", {}), **space_config}
    fields["search_options"] = {**fields.get("search_options", {}), **search_options}
    if resume and force:
        raise UserError("--resume continues the search in --out, --force replaces it: give one")
    run = start_search(SearchConfig(table=table, space=space_name, **fields), out, resume, log,
                       dist_backend, dist_timeout, force)
    if threads and run.rank == 0:
        log(threads)
    on_interrupt(lambda: f"run {out} keeps its checkpoint of epoch {run.epoch} of {run.config.epochs}" if run.epoch
                 else f"run {out} finished no epoch, so it keeps nothing", lambda: "--resume" if run.epoch else "",
                 drop=("--force",))
    try:
        warnings = warn_table(run.table, here=True) if run.rank == 0 else []
        run.run(keep_lock=True)  # the derived network and the evolution study are the run's too
        leave_process_group()
        if run.rank == 0:
            _finish_search(run, out, evolution, warnings, as_json)
    finally:
        run.folder.release()


def _finish_search(run: SearchRun, out: str, evolution: dict[str, Any], warnings: list[str], as_json: bool) -> None:
    """After the supernet's training: the evolution strategy's study, then the derived network
    and the result."""
    from nas2deploy.nets import load_arch, save_arch

    derived = Path(out) / "arch.json"
    if run.config.strategy == "evolution":
        from nas2deploy.runs import evolve, open_run

        assert run.config.budget_ms is not None
        summary = evolve(open_run(out), out, run.config.budget_ms, Path(out) / "evolution", evolution["trials"],
                         evolution["sampler"], evolution["fill"], evolution["storage"] or "", evolution["study_name"] or "",
                         evolution["measure"], say=log, validation=evolution["validation_images"])
        save_arch(load_arch(summary["best"]["arch"]).renamed(Path(out).name), derived)
    predicted = run.table.predict(load_arch(derived)).best_ms
    last = json.loads((Path(out) / "log.jsonl").read_text().splitlines()[-1])
    emit({"run": out, "arch": str(derived), "predicted_ms": predicted, "last_epoch": last, "warnings": warnings},
         f"derived architecture: {derived} (predicted {predicted:.3f} ms)", as_json)


def study(space_name: str, table: str, out: str, force: bool, as_json: bool, opts: dict[str, Any], threads: str) -> None:
    """``search`` for a space searched trial by trial: its black-box study (``runs.start_study``)."""
    from nas2deploy.report import regenerate
    from nas2deploy.runs import start_study, study_options
    from nas2deploy.search.blackbox.study import StudyConfig, StudyFailed
    from nas2deploy.spaces.tables import load_table

    if opts.get("budget_ms") is None:
        raise UserError(f"the {space_name} search needs --budget-ms: networks predicted over it are never trained")
    space_config = pop_options(space_name, opts, "space")
    options = {o.field: opts.pop(o.field) for o in SPACES[space_name].scoped("study") if opts.get(o.field) is not None}
    study_options(SPACES[space_name], options)  # a missing or bad option is said before any work
    config = StudyConfig(table=table, data=opts["data"], budget_ms=opts["budget_ms"], out=out, trials=opts["trials"],
                         storage=opts["storage"] or "", study=opts["study_name"] or "", sampler=opts["sampler"],
                         rerank=opts["rerank"], rerank_epochs=opts["rerank_epochs"], measure=opts["measure"],
                         seed=opts["seed"], force=force, options=options)
    warnings = warn_table(load_table(table), here=True)
    log(threads)
    on_interrupt(f"study folder {out} keeps its feature cache and its finished trials (a trial cut short is run again)",
                 "", drop=("--force",))
    try:
        summary = start_study(config, space_name, space_config, log)
    except StudyFailed as exc:  # its trials and measurements are written: the report shows them
        raise UserError(f"{exc}; every trial and measurement: {regenerate(out)}") from None
    summary["report"] = str(regenerate(out))
    best, label = summary["best"], summary["score_label"]
    text = (f"study {summary['study']} ({summary['storage']}): {summary['trials']} trials, {summary['complete']} trained, "
            f"{summary['pruned']} over the budget (pruned untrained), {summary['failed']} failed")
    for r in summary.get("rerank", {}).get("cells", []):
        text += (f"\nre-ranked: trial {r['trial']}, end to end {r['score']:.4f} "
                 f"({label} {r['study_score']:.4f}, {summary['rerank']['epochs']} epochs)")
    for m in summary.get("measured", []):
        text += f"\nmeasured: trial {m['trial']}, {m['measured_ms']:.3f} ms ({'within' if m['fits'] else 'over'} the budget)"
    text += f"\nbest: trial {best['trial']}, {label} {best['score']:.4f}, predicted {best['latency_ms']:.3f} ms -> {best['arch']}"
    text += f"\nreport: {summary['report']}"
    emit({**summary, "warnings": warnings + summary["warnings"]}, text, as_json)


@declared_command(lambda ctx, args: every_space_params("derive"))
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--budget-ms", type=POSITIVE, help="Most probable architecture whose predicted latency fits.")
@click.option("--fill", type=Finite(min=0, max=1), default=DEFAULT_FILL, show_default=True,
              help="With --budget-ms: use at least this share of the budget (0: the most probable that fits).")
@click.option("--measure", "measured", is_flag=True,
              help="With --budget-ms, on the table's device: measure and tighten until the measured latency fits.")
@click.option("--trials", type=click.IntRange(min=1), help="An evolution run: the evolutionary search's trials [default: 200].")
@click.option("--sampler", type=click.Choice(SAMPLERS), help="An evolution run: how its trials are drawn [default: spos].")
@click.option("--validation-images", type=click.IntRange(min=0),
              help=f"An evolution run: the images each network is scored on (search --validation-images) "
                   f"[default: {VALIDATION}].")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@force_option
@json_option
@click.pass_context
def derive(ctx: click.Context, run_dir: str, budget_ms: float | None, fill: float, measured: bool, trials: int | None,
           sampler: str | None, validation_images: int | None, out: str, force: bool, as_json: bool, **opts: Any) -> None:
    """Derive an architecture from a search run: the most probable one, or the best under a budget."""
    if measured and budget_ms is None:
        raise UserError("--measure needs --budget-ms")
    if budget_ms is None and ctx.get_parameter_source("fill") != click.core.ParameterSource.DEFAULT:
        raise UserError("--fill sets how much of --budget-ms the network uses: give --budget-ms, or leave --fill out")
    with exclusive(lock_path(check_name(out)), f"architecture {out}"):  # before the output is checked: one writer
        evolution_options = {"trials": trials, "sampler": sampler, "validation_images": validation_images}
        _derive(run_dir, budget_ms, fill, measured, evolution_options, out, force, as_json, opts)


def _derive(run_dir: str, budget_ms: float | None, fill: float, measured: bool, evolution_options: dict[str, Any],
            out: str, force: bool, as_json: bool, opts: dict[str, Any]) -> None:
    from nas2deploy.nets import load_arch, save_arch
    from nas2deploy.runs import evolve, open_run
    from nas2deploy.search.closed_loop import derive_measured
    from nas2deploy.search.config import provenance

    claim_file(out, force)
    run = open_run(run_dir)
    options = {**run.derive_options, **pop_options(run.config.space, opts, "derive")}
    name = Path(out).stem
    evolution = run.config.strategy == "evolution"
    given = [k for k, v in evolution_options.items() if v is not None]
    if not evolution and given:
        raise UserError(f"--{given[0].replace('_', '-')} steers the evolutionary search of a run searched with "
                        f"--strategy evolution; run {run_dir} searched by gradient: leave it out")
    if evolution and budget_ms is None:
        raise UserError(f"run {run_dir} is a one-shot supernet (--strategy evolution): a network is derived by an "
                        "evolutionary search of a budget's window; give --budget-ms")
    if evolution and budget_ms is not None:
        trials, sampler, validation = (evolution_options[k] for k in ("trials", "sampler", "validation_images"))
        summary = evolve(run, run_dir, budget_ms, Path(run_dir) / f"evolution-{budget_ms:g}ms", trials or 200,
                         sampler or "spos", fill, measure=measured, say=log,
                         validation=VALIDATION if validation is None else validation)
        arch = load_arch(summary["best"]["arch"]).renamed(name)
    elif measured and budget_ms is not None:
        found = derive_measured(run.space_search, budget_ms, name=name, say=log, fill=fill, **options).arch
        arch = found.with_meta(provenance(run.config, budget_ms))
    else:
        arch = run.derive(name, budget_ms, fill, **options)
    save_arch(arch, out)
    pred = run.table.predict(arch)
    warnings = warn_table(run.table, pred.raw_ms)
    cal = f", calibrated {pred.calibrated_ms:.3f} ms" if pred.calibrated_ms is not None else ""
    share = f" ({pred.best_ms / budget_ms:.0%} of the budget)" if budget_ms else ""
    emit({"arch": out, "size": arch.size_label(), "raw_ms": pred.raw_ms, "calibrated_ms": pred.calibrated_ms,
          "budget_ms": budget_ms, "warnings": warnings},
         f"wrote {out}: {arch.size_label()}, predicted {pred.raw_ms:.3f} ms summed{cal}{share}", as_json)


def start_from(arch: Any, backbone_weights: str | None) -> Any:
    """The module ``train`` starts from: None (built fresh), or a DPC network whose backbone
    holds ``backbone_weights`` (what the DPC search's re-ranking fine-tunes from)."""
    if backbone_weights is None:
        return None
    from nas2deploy.nets.dpc import DPCNet
    from nas2deploy.spaces.dpc.study import pretrained

    if not isinstance(arch, DPCNet):
        raise UserError(f"--backbone-weights {backbone_weights}: arch {arch.name} is a {arch.kind} network; only a DPC "
                        "network has a backbone to start from (leave the option out)")
    return pretrained(arch, backbone_weights)


@click.command()
@click.option("--arch", "arch_ref", required=True, help="Arch JSON file or shipped name.")
@click.option("--data", default="synthetic", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=Finite(min=0, min_open=True, max=10), default=0.05, show_default=True)
@click.option("--lr-warmup", type=Finite(min=0, max=1), default=0.1, show_default=True,
              help="Share of the steps over which the learning rate ramps up linearly.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--input-size", "size", type=InputSize(),
              help="Train the architecture's layers at this input size (a shipped network on other data).")
@click.option("--num-classes", type=click.IntRange(min=1, max=100_000),
              help="Train the architecture's layers for this many classes (a shipped network on other data).")
@click.option("--backbone-weights", type=click.Path(dir_okay=False),
              help="A DPC network: start its backbone from these weights (a classification chain's, or a DPC "
              "network's); the cell and head start fresh.")
@with_params(lambda: compute_params() + data_params())
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Weights file (state dict).")
@force_option
@json_option
def train(arch_ref: str, data: str, epochs: int, batch_size: int, lr: float, lr_warmup: float, seed: int,
          size: tuple[int, int] | None, num_classes: int | None, backbone_weights: str | None, out: str,
          force: bool, as_json: bool, device: str, amp: str, workers: int, channels_last: bool, compute_threads: int,
          data_classes: int, crop: str) -> None:
    """Train a network (SGD, cosine schedule after a linear warm-up) and report top-1, or mIoU for
    segmentation. A shipped classification chain trained with --input-size and --num-classes on
    the user's data gives the backbone weights a DPC search starts from."""
    from nas2deploy.data import open_dataset
    from nas2deploy.nets import load_arch
    from nas2deploy.objective import LABEL, METRIC
    from nas2deploy.search.config import parse_crop
    from nas2deploy.search.distributed import compute_device
    from nas2deploy.train import save_weights, train_arch, weights_bytes

    with exclusive(lock_path(check_name(out)), f"weights {out}"):  # one writer, from before the output is checked
        claim_file(out, force)  # before the training, not after it
        threads = start_threads(compute_threads)
        where = compute_device(device)  # a missing GPU is said before the data is opened
        arch = load_arch(arch_ref)
        if size is not None or num_classes is not None:
            height, width = size or arch.input_shape[1:]
            arch = arch.for_data(height, width, num_classes or arch.num_classes)
        initial = start_from(arch, backbone_weights)
        require_space(out, weights_bytes(arch))  # the weights fit on the disk: said before the training
        on_interrupt(f"nothing: train writes {out} when it ends", "")
        try:
            crop_size = parse_crop(crop)
        except ValueError as exc:
            raise UserError(f"--crop {crop}: {exc}") from None
        fix = "give other data, or train its layers for this data: --input-size {size} --num-classes {classes}"
        splits = open_dataset(data, arch.input_size, data_classes, crop_size, fit=arch, fix=fix)
        log(threads)
        model, acc = train_arch(arch, splits, epochs, batch_size, lr, seed=seed, progress=log,
                                device=where, amp=amp, workers=workers, channels_last=channels_last,
                                lr_warmup=lr_warmup, initial=initial)
        save_weights(model, out)
    metric = LABEL[METRIC[arch.task]]
    emit({"weights": out, "metric": METRIC[arch.task], "score": acc}, f"{metric} {acc:.4f} on the test split; weights: {out}",
         as_json)
