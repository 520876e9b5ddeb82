"""``search``, ``derive`` and ``train``: find a network under a budget, take it out of the run, train it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nas2deploy.cli.common import (POSITIVE, Finite, SpaceName, data_options, device_options, emit, force_option,
                                   json_option, log, pop_options, space_options, warn_table)
from nas2deploy.errors import UserError
from nas2deploy.fileio import claim_file
from nas2deploy.search.budget import DEFAULT_FILL
from nas2deploy.spaces import DEFAULT_SPACE


@click.command()
@click.option("--space", "space_name", type=SpaceName(), default=DEFAULT_SPACE, show_default=True)
@click.option("--lut", "table", type=click.Path(dir_okay=False), required=True, help="Latency table of the target device.")
@click.option("--data", default="", help="DenseNAS: 'synthetic' (default), 'synthetic-small' (harder), a CIFAR-10 binary folder or an ImageFolder; "
              "DCNAS: 'seg-synthetic' (default), a Cityscapes or a PASCAL VOC folder.")
@click.option("--budget-ms", type=POSITIVE, help="Latency budget: lambda adapts so the expected latency settles here.")
@click.option("--lambda", "lam", type=Finite(min=0, max=1e3), default=0.15, show_default=True, help="Weight of the latency term.")
@click.option("--tau", type=Finite(min=1, min_open=True, max=1e6), default=15.0, show_default=True,
              help="Base of the latency term's logarithm.")
@click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-batches", type=click.IntRange(min=0), default=0, show_default=True, help="Cap per pass (0: all).")
@click.option("--w-lr", type=Finite(min=0, min_open=True, max=10), default=0.036, show_default=True)
@click.option("--a-lr", type=Finite(min=0, min_open=True, max=10), default=3e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@space_options("search")
@space_options("space")
@device_options
@data_options
@click.option("--dist-backend", type=click.Choice(["auto", "nccl", "gloo"]), default="auto", show_default=True,
              help="Under torchrun: auto is nccl on cuda, gloo on cpu; gloo lets ranks share one GPU.")
@click.option("--dist-timeout", type=click.IntRange(min=10), default=300, show_default=True,
              help="Seconds a rank waits for the others before failing (a dead rank, a lost network).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON file of SearchConfig fields.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (runs/NAME).")
@click.option("--force", is_flag=True, help="Start in a folder that holds other files or another search (replacing it).")
@click.option("--weights", help="DPC: weights of the backbone (a classification chain) or of a DPC network.")
@click.option("--trials", type=click.IntRange(min=1), help="DPC: the study's trials in all: each worker runs trials "
              "until the study holds this many (default 20).")
@click.option("--storage", help="DPC: Optuna storage shared by the workers: a journal file or a database URL "
              "(default OUT/study.log).")
@click.option("--study", "study_name", help="DPC: the study's name (default dpc).")
@click.option("--sampler", help="DPC: how trials are drawn: random (default), evolution (regularised), tpe or nsga2.")
@click.option("--proxy-epochs", type=click.IntRange(min=1), help="DPC: epochs a cell trains on the cached features (default 10).")
@click.option("--rerank", type=click.IntRange(min=1), help="DPC: train the study's K best cells end to end on the "
              "pretrained backbone and keep the best (the paper re-ranked 50).")
@click.option("--rerank-epochs", type=click.IntRange(min=1), help="DPC: epochs of each re-ranking training (default 10).")
@click.option("--measure", is_flag=True, default=None, help="DPC: closed loop: the best cell whose network measures "
              "within the budget on this machine (the table's backend).")
@json_option
@click.pass_context
def search(ctx: click.Context, space_name: str, table: str, config_file: str | None, resume: bool, out: str,
           force: bool, as_json: bool, dist_backend: str, dist_timeout: int, **opts: Any) -> None:
    """Latency-regularised search (DenseNAS, DCNAS) or black-box search of DPC cells (--space dpc).

    The first writes log.jsonl, checkpoint.pt and arch.json to --out; the second the feature cache, the
    study's journal and best.json."""
    from nas2deploy.spaces import get_space

    black_box = {k: opts.pop(k) for k in BLACK_BOX if k in opts}
    if get_space(space_name).study is not None:
        study(ctx, space_name, table, out, force, as_json, black_box, opts)
        return
    given = [k for k, v in black_box.items() if v is not None]
    if given:
        raise UserError(f"--{given[0].replace('_', '-')} is an option of the dpc space's black-box search, not of "
                        f"the {space_name} search")
    from nas2deploy.runs import start_search
    from nas2deploy.search.config import SearchConfig
    from nas2deploy.search.distributed import leave_process_group

    # Options are named as SearchConfig fields (the space's under space_config and search_options);
    # a --config file fills what the command line leaves out.
    space_config = pop_options(space_name, opts, "space")
    search_options = pop_options(space_name, opts, "search")
    fields = SearchConfig.from_file(config_file) if config_file else {}
    for name, value in opts.items():
        if name not in fields or ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            fields[name] = value
    fields["space_config"] = {**fields.get("space_config", {}), **space_config}
    fields["search_options"] = {**fields.get("search_options", {}), **search_options}
    if resume and force:
        raise UserError("--resume continues the search in --out, --force replaces it: give one")
    run = start_search(SearchConfig(table=table, space=space_name, **fields), out, resume, log,
                       dist_backend, dist_timeout, force)
    warnings = warn_table(run.table, here=True) if run.rank == 0 else []
    run.run()
    leave_process_group()
    if run.rank == 0:
        from nas2deploy.nets import load_arch

        derived = Path(out) / "arch.json"
        predicted = run.table.predict(load_arch(derived)).best_ms
        last = json.loads((Path(out) / "log.jsonl").read_text().splitlines()[-1])
        emit({"run": out, "arch": str(derived), "predicted_ms": predicted, "last_epoch": last, "warnings": warnings},
             f"derived architecture: {derived} (predicted {predicted:.3f} ms)", as_json)


#: The options only a black-box search (DPC) reads.
BLACK_BOX = ("weights", "trials", "storage", "study_name", "sampler", "proxy_epochs", "rerank", "rerank_epochs", "measure")
#: The options only the differentiable search reads (given to a black-box search, they are refused).
DIFFERENTIABLE = ("lam", "tau", "epochs", "warmup_epochs", "batch_size", "max_batches", "w_lr", "a_lr", "device", "amp",
                  "workers", "channels_last", "data_classes", "crop", "config_file", "resume", "dist_backend", "dist_timeout")


def study(ctx: click.Context, space_name: str, table: str, out: str, force: bool, as_json: bool,
          black_box: dict[str, Any], opts: dict[str, Any]) -> None:
    """``search`` for a space searched black-box (DPC): its options, then the space's own study."""
    from nas2deploy.runs import space_for
    from nas2deploy.search.config import SearchConfig
    from nas2deploy.spaces import get_space, load_table

    given = [name for name in DIFFERENTIABLE if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
    if given:
        raise UserError(f"--{given[0].replace('_', '-').replace('lam', 'lambda')} does not apply to the {space_name} space's "
                        "black-box search")
    if not black_box.get("weights") or opts.get("budget_ms") is None:
        raise UserError(f"the {space_name} search needs --weights (the backbone's) and --budget-ms")
    space_config = pop_options(space_name, opts, "space")
    pop_options(space_name, opts, "search")  # a differentiable search's option, given here, is refused by name
    lut = load_table(table)
    space = space_for(SearchConfig(table=table, space=space_name, space_config=space_config), lut)
    # the options given (the study's defaults are CellSearch's), ``--study`` under its field name
    options = {("study" if k == "study_name" else k): v for k, v in black_box.items() if v is not None and k != "weights"}
    warnings = warn_table(lut, here=True)
    entry = get_space(space_name)
    assert entry.study is not None
    summary = entry.study(lut, space, log, weights=black_box["weights"], data=opts.get("data") or entry.builtin_data,
                          budget_ms=opts["budget_ms"], out=out, seed=opts.get("seed", 0), force=force, **options)
    from nas2deploy.report import regenerate

    summary["report"] = str(regenerate(out))
    best = summary.get("best")
    text = (f"study {summary['study']} ({summary['storage']}): {summary['trials']} trials, {summary['complete']} trained, "
            f"{summary['pruned']} over the budget (pruned untrained), {summary['failed']} failed")
    for r in summary.get("rerank", {}).get("cells", []):
        text += (f"\nre-ranked: trial {r['trial']}, end to end mIoU {r['miou']:.4f} "
                 f"(proxy {r['proxy_miou']:.4f}, {summary['rerank']['epochs']} epochs)")
    for m in summary.get("measured", []):
        text += f"\nmeasured: trial {m['trial']}, {m['measured_ms']:.3f} ms ({'within' if m['fits'] else 'over'} the budget)"
    text += (f"\nbest: trial {best['trial']}, proxy mIoU {best['miou']:.4f}, predicted {best['latency_ms']:.3f} ms -> {best['arch']}"
             if best else "\nno cell trained yet: every trial so far was over the budget")
    text += f"\nreport: {summary['report']}"
    emit({**summary, "warnings": warnings}, text, as_json)


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--budget-ms", type=POSITIVE, help="Most probable architecture whose predicted latency fits.")
@click.option("--fill", type=Finite(min=0, max=1), default=DEFAULT_FILL, show_default=True,
              help="With --budget-ms: use at least this share of the budget (0: the most probable that fits).")
@click.option("--measure", "measured", is_flag=True,
              help="With --budget-ms, on the table's device: measure and tighten until the measured latency fits.")
@space_options("derive")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@force_option
@json_option
@click.pass_context
def derive(ctx: click.Context, run_dir: str, budget_ms: float | None, fill: float, measured: bool, out: str,
           force: bool, as_json: bool, **opts: Any) -> None:
    """Derive an architecture from a search run: the most probable one, or the best under a budget."""
    from nas2deploy.nets import save_arch
    from nas2deploy.runs import open_run
    from nas2deploy.search.config import provenance
    from nas2deploy.search.verify import derive_measured

    if measured and budget_ms is None:
        raise UserError("--measure needs --budget-ms")
    if budget_ms is None and ctx.get_parameter_source("fill") != click.core.ParameterSource.DEFAULT:
        raise UserError("--fill sets how much of --budget-ms the network uses: give --budget-ms, or leave --fill out")
    claim_file(out, force)
    run = open_run(run_dir)
    options = {**run.derive_options, **pop_options(run.config.space, opts, "derive")}
    name = Path(out).stem
    if measured and budget_ms is not None:
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


@click.command()
@click.option("--arch", "arch_ref", required=True, help="Arch JSON file or shipped name.")
@click.option("--data", default="synthetic", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=Finite(min=0, min_open=True, max=10), default=0.05, show_default=True)
@click.option("--lr-warmup", type=Finite(min=0, max=1), default=0.1, show_default=True,
              help="Share of the steps over which the learning rate ramps up linearly.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_options
@data_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Weights file (state dict).")
@force_option
@json_option
def train(arch_ref: str, data: str, epochs: int, batch_size: int, lr: float, lr_warmup: float, seed: int, out: str,
          force: bool, as_json: bool, device: str, amp: str, workers: int, channels_last: bool, data_classes: int, crop: str) -> None:
    """Train a derived network (SGD, cosine schedule after a linear warm-up) and report top-1, or
    mIoU for segmentation."""
    from nas2deploy.nets import load_arch
    from nas2deploy.data import open_dataset
    from nas2deploy.objective import LABEL, METRIC
    from nas2deploy.search.config import parse_crop
    from nas2deploy.search.distributed import compute_device
    from nas2deploy.train import save_weights, train_arch

    claim_file(out, force)  # before the training, not after it
    where = compute_device(device)  # a missing GPU is said before the data is opened
    arch = load_arch(arch_ref)
    try:
        crop_size = parse_crop(crop)
    except ValueError as exc:
        raise UserError(f"--crop {crop}: {exc}") from None
    splits = open_dataset(data, arch.input_size, data_classes, crop_size, fit=arch)
    model, acc = train_arch(arch, splits, epochs, batch_size, lr, seed=seed, progress=log,
                            device=where, amp=amp, workers=workers, channels_last=channels_last,
                            lr_warmup=lr_warmup)
    save_weights(model, out)
    metric = LABEL[METRIC[arch.task]]
    emit({"weights": out, "metric": METRIC[arch.task], "score": acc}, f"{metric} {acc:.4f} on the test split; weights: {out}",
         as_json)
