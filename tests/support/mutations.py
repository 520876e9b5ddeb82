"""Mutated input files and the functions the commands feed them to, for fuzzing.

Six kinds of file a user hands nas2deploy: latency tables, architectures (Arch), segmentation
architectures (SegArch), trained weights, exported ONNX models and search configurations. A
``Corpus`` writes one valid file of each kind; ``mutate`` derives a mutated copy and says
whether the mutation must be refused (the oracle), and ``consume`` runs what the commands run on
such a file (``lut show``, ``arch info``, the search's latency model, ``export``'s weight
loading, ``bench``, ``search --config``). An outcome is *accepted* (a valid object came back
and was used), *refused* (a ``UserError``: one line for the user) or a *traceback* (any other
exception: a bug). Used by ``tests/test_fuzz.py`` (hypothesis draws the seeds) and by
``benchmarks/fuzz_inputs.py`` (counts over a thousand mutants).

The oracle: most mutations put a value that breaks the field's rule (wrong type, NaN, infinity,
negative, zero, out of bounds, missing, nested too deep, truncated, corrupted bytes) and must be
refused; *benign* ones (a valid value in a field where any valid value is fine, an unknown
metadata member, a byte flip that leaves a weights file's content unchanged) must be accepted.
"""

from __future__ import annotations

import copy
import io
import json
import random
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

KINDS = ("table", "arch", "segarch", "weights", "onnx", "config")
ROOT = Path(__file__).resolve().parents[2]
SHIPPED_TABLE = ROOT / "latency_tables" / "densenas32_small_c10_ort_cpu_fp32_b1.json"
NAN, INF = float("nan"), float("inf")

# Values that break a rule, by the kind of field (each must be refused wherever that kind is).
BAD = {
    "pos": [NAN, INF, -INF, -1.5, 0, 1e308, 10**400, True, "1.5", [], {"x": 1}],
    "nonneg": [NAN, INF, -1.0, 1e308, True, "0", []],
    "finite": [NAN, INF, -INF, 1e308, -1e308, True, "0.1", []],
    "count": [0, -3, 2.5, True, "3", 10**12, 10**400, [], NAN],
    "bool": [1, 0, "false", "true", [], {}],
    "text": [5, True, [], {"a": 1}, 1.5],
    "object": [[], "x", 3, True],
    "list": [{}, "x", 3, True],
    "exact": [True, 1.0, 99, "1", 0, -1],  # a version this release does not read (tables read 1 and 2)
}


@dataclass(frozen=True)
class Target:
    """A field of a kind's document: its path (keys and list indices) and its kind of value."""

    path: tuple[Any, ...]
    kind: str
    required: bool = True


@dataclass
class Mutant:
    kind: str
    what: str
    must_refuse: bool
    path: Path


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _delete(doc: Any, path: tuple[Any, ...]) -> None:
    parent = _get(doc, path[:-1])
    del parent[path[-1]]


class Corpus:
    """One valid file of each kind, written once under ``folder``."""

    def __init__(self, folder: Path):
        from nas2deploy.nets import save_arch
        from nas2deploy.nets.chain import Arch, Block
        from nas2deploy.deploy.export import Exporter, ExportOptions
        from nas2deploy.spaces import make_space
        from nas2deploy.train import save_weights

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.table = folder / "table.json"
        shutil.copy(SHIPPED_TABLE, self.table)
        self.arch_obj = Arch(32, 10, 16, 16, 1, (Block(24, 2, "k3e6", ("k5e3",)), Block(32, 2, "k5e3", ())), 64, "small")
        self.arch = folder / "arch.json"
        save_arch(self.arch_obj, self.arch)
        seg = make_space("dcnas", {"input_size": 64, "layers": 3, "base_width": 8, "num_classes": 6, "head_width": 16})
        self.segarch = folder / "segarch.json"
        save_arch(seg.sample_arch(random.Random(1)), self.segarch)
        torch.manual_seed(0)
        self.weights = folder / "weights.pt"
        save_weights(self.arch_obj.build(), self.weights)
        self.export = folder / "export"
        Exporter(self.arch_obj, str(self.weights), self.export,
                 ExportOptions(data="synthetic:40", samples=4, reference_samples=1, force=True)).run()
        self.config = folder / "config.json"
        self.config.write_text(json.dumps({"epochs": 4, "warmup_epochs": 1, "batch_size": 16, "max_batches": 2, "seed": 1,
                                           "budget_ms": 0.4, "data": "synthetic:100", "a_lr": 0.003, "viterbi": False}))

    def original(self, kind: str) -> Path:
        return {"table": self.table, "arch": self.arch, "segarch": self.segarch, "weights": self.weights,
                "onnx": self.export / "model.onnx", "config": self.config}[kind]


# -- JSON kinds: the fields with rules, and the benign edits ------------------------------------
def _table_targets(doc: dict[str, Any], rng: random.Random) -> list[Target]:
    key = rng.choice(sorted(doc["entries"]))
    e = ("entries", key)
    targets = [Target(("version",), "exact"), Target(("meta",), "object"), Target(("entries",), "object"),
               Target(("meta", "measurement", "batch"), "count"), Target(("meta", "measurement", "threads"), "count"),
               Target(("meta", "measurement", "backend"), "text"), Target(("meta", "timing", "min_runs"), "count"),
               Target(("meta", "timing", "max_cov"), "pos"), Target(("meta", "space", "name"), "text"),
               Target(("meta", "space", "config", "input_size"), "count"),
               Target(("meta", "space", "config", "width_mult"), "pos"),
               Target((*e, "spec"), "object"), Target((*e, "stats"), "object"), Target((*e, "attempts"), "count", False),
               Target(("reference", "stats", "median_ms"), "pos"), Target(("reference", "key"), "text"),
               Target(("calibration", "scale"), "pos"), Target(("calibration", "offset_ms"), "finite"),
               Target(("calibration", "per_op_ms"), "finite"), Target(("calibration", "samples"), "count"),
               Target(("validation", "samples"), "count"), Target(("validation", "raw", "mape"), "finite")]
    targets += [Target((*e, "stats", f), "pos") for f in ("median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms")]
    targets += [Target((*e, "stats", f), "nonneg") for f in ("std_ms", "cov")]
    targets += [Target((*e, "stats", "runs"), "count")]
    targets += [Target((*e, "spec", f), "count") for f in doc["entries"][key]["spec"] if f != "type"]
    return targets


def _one_of(rng: random.Random, edits: list[tuple[str, Callable[[], object]]]) -> str:
    """Apply one edit drawn from ``edits``; returns what it did."""
    what, edit = edits[rng.randrange(len(edits))]
    edit()
    return what


def _table_special(doc: dict[str, Any], rng: random.Random) -> tuple[str, bool]:
    """Mutations that break a rule between fields (all must be refused)."""
    key, other = rng.choice(sorted(doc["entries"])), rng.choice(sorted(doc["entries"]))
    entry, cal = doc["entries"][key], doc["calibration"]
    times = ("median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms")
    what = _one_of(rng, [
        (f"entries[{key}] min above p99", lambda: entry["stats"].update(min_ms=entry["stats"]["p99_ms"] * 2)),
        ("calibration per_op_ms -1 (ops of negative cost)", lambda: cal.update(per_op_ms=-1.0)),
        ("calibration scale -1", lambda: cal.update(scale=-1.0)),
        (f"entries[{key}] holds another op's spec", lambda: entry.update(spec=copy.deepcopy(doc["entries"][other]["spec"]))),
        ("every latency negated", lambda: [e["stats"].update({f: -e["stats"][f] for f in times}) for e in doc["entries"].values()]),
    ])
    return what, not (what.endswith("another op's spec") and other == key)


def _table_benign(doc: dict[str, Any], rng: random.Random) -> str:
    key = rng.choice(sorted(doc["entries"]))
    stats = doc["entries"][key]["stats"]
    slower = {f: stats[f] * 1.5 for f in ("median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms", "std_ms")}
    return _one_of(rng, [
        ("an unknown meta member", lambda: doc["meta"].update(comment="added by hand")),
        ("attempts 2", lambda: doc["entries"][key].update(attempts=2)),
        ("validation null", lambda: doc.update(validation=None)),
        (f"entries[{key}] 1.5x slower", lambda: stats.update(slower)),  # still ordered and positive
    ])


def _arch_targets(doc: dict[str, Any], rng: random.Random) -> list[Target]:
    b = rng.randrange(len(doc["blocks"]))
    targets = [Target(("version",), "exact"), Target(("input_size",), "count"), Target(("num_classes",), "count"),
               Target(("stem",), "object"), Target(("stem", "conv"), "count"), Target(("stem", "out"), "count"),
               Target(("stem", "stride"), "count"), Target(("blocks",), "list"), Target(("tail",), "count"),
               Target(("blocks", b, "out"), "count"), Target(("blocks", b, "stride"), "count"),
               Target(("blocks", b, "head"), "text"), Target(("name",), "text", False)]
    if doc["blocks"][b].get("stack"):
        targets.append(Target(("blocks", b, "stack", 0), "text", False))  # deleting a stacking layer is benign
    return targets


def _arch_special(doc: dict[str, Any], rng: random.Random) -> tuple[str, bool]:
    b = doc["blocks"][rng.randrange(len(doc["blocks"]))]
    return _one_of(rng, [
        ("head k4e6", lambda: b.update(head="k4e6")),
        ("head k999e6", lambda: b.update(head="k999e6")),
        ("stride 3", lambda: b.update(stride=3)),
        ("width 10^6", lambda: b.update(out=10**6)),
        ("2000 blocks", lambda: doc.update(blocks=[copy.deepcopy(doc["blocks"][-1]) for _ in range(2000)])),
        ("input size 10^9", lambda: doc.update(input_size=10**9)),
        ("10^8 classes", lambda: doc.update(num_classes=10**8)),
        ("meta as a list", lambda: doc.update(meta=[1, 2])),
    ]), True


def _arch_benign(doc: dict[str, Any], rng: random.Random) -> str:
    return _one_of(rng, [
        ("renamed", lambda: doc.update(name="renamed")),
        ("meta with a budget", lambda: doc.update(meta={"budget_ms": 0.5, "note": "by hand"})),
        ("last block 40 wide", lambda: doc["blocks"][-1].update(out=40)),
        ("first head k7e3", lambda: doc["blocks"][0].update(head="k7e3")),
    ])


def _segarch_targets(doc: dict[str, Any], rng: random.Random) -> list[Target]:
    c = rng.randrange(len(doc["cells"]))
    return [Target(("version",), "exact"), Target(("input_size",), "count"), Target(("num_classes",), "count"),
            Target(("widths",), "list"), Target(("widths", rng.randrange(4)), "count"), Target(("head_width",), "count"),
            Target(("resize_mode",), "text", False), Target(("align_corners",), "bool", False),
            Target(("cells",), "list"), Target(("cells", c, "layer"), "layer"), Target(("cells", c, "scale"), "scale"),
            Target(("cells", c, "op"), "text"), Target(("cells", c, "inputs"), "list")]


def _segarch_special(doc: dict[str, Any], rng: random.Random) -> tuple[str, bool]:
    cell = doc["cells"][rng.randrange(len(doc["cells"]))]
    return _one_of(rng, [
        ('align_corners "false"', lambda: doc.update(align_corners="false")),
        ("resize_mode cubic", lambda: doc.update(resize_mode="cubic")),
        ("head_width 0", lambda: doc.update(head_width=0)),
        ("num_classes 0", lambda: doc.update(num_classes=0)),
        ("input from a later layer", lambda: cell.update(inputs=[[cell["layer"] + 1, cell["scale"]]])),
        ("op sep4", lambda: cell.update(op="sep4")),
        ("scale 9", lambda: cell.update(scale=9)),
    ]), True


def _segarch_benign(doc: dict[str, Any], rng: random.Random) -> str:
    return _one_of(rng, [
        ("renamed", lambda: doc.update(name="renamed")),
        ("align_corners true", lambda: doc.update(align_corners=True)),
        ("last cell sep7", lambda: doc["cells"][-1].update(op="sep7")),
    ])


def _config_targets(doc: dict[str, Any], rng: random.Random) -> list[Target]:
    # every field of a config file is optional (the defaults fill in): deleting one is benign
    return [Target(("epochs",), "count", False), Target(("warmup_epochs",), "nonneg_count", False),
            Target(("batch_size",), "count", False), Target(("max_batches",), "nonneg_count", False),
            Target(("seed",), "nonneg_count", False), Target(("budget_ms",), "pos", False), Target(("data",), "text", False),
            Target(("a_lr",), "pos", False), Target(("viterbi",), "bool", False)]


def _config_special(doc: dict[str, Any], rng: random.Random) -> tuple[str, bool]:
    return _one_of(rng, [
        ("unknown field", lambda: doc.update(learning_rate=0.1)),
        ("table given", lambda: doc.update(table="x.json")),
        ("input_size 33", lambda: doc.update(input_size=33)),
        ("width_mult 5", lambda: doc.update(width_mult=5.0)),
        ("tau 1", lambda: doc.update(tau=1.0)),
        ("w_momentum 1.5", lambda: doc.update(w_momentum=1.5)),
        ("a document that is a list", lambda: doc.clear()),
    ]), True


def _config_benign(doc: dict[str, Any], rng: random.Random) -> str:
    return _one_of(rng, [
        ("epochs 7", lambda: doc.update(epochs=7)),
        ("seed 12345", lambda: doc.update(seed=12345)),
        ("no budget", lambda: doc.update(budget_ms=None)),
        ("every batch", lambda: doc.update(max_batches=0)),
    ])


JSON_KINDS: dict[str, tuple[Callable[..., list[Target]], Callable[..., tuple[str, bool]], Callable[..., str]]] = {
    "table": (_table_targets, _table_special, _table_benign),
    "arch": (_arch_targets, _arch_special, _arch_benign),
    "segarch": (_segarch_targets, _segarch_special, _segarch_benign),
    "config": (_config_targets, _config_special, _config_benign),
}
BAD["nonneg_count"] = [-1, 2.5, True, "3", 10**400, [], NAN]
BAD["layer"] = [-3, 2.5, True, "3", 10**12, [], NAN]  # 0 is a layer
BAD["scale"] = [-1, 4, 2.5, True, "1", NAN]


def _mutate_json(kind: str, original: Path, out: Path, rng: random.Random) -> Mutant:
    text = original.read_text()
    doc = json.loads(text)
    targets, special, benign = JSON_KINDS[kind]
    roll = rng.random()
    if roll < 0.06:  # truncated: a kill mid-copy, a partial download
        cut = rng.randrange(1, len(text) - 1)
        out.write_text(text[:cut])
        return Mutant(kind, f"truncated at byte {cut}", True, out)
    if roll < 0.09:
        depth = rng.choice([100, 5000, 100_000])
        out.write_text("[" * depth + "1" + "]" * depth)
        return Mutant(kind, "JSON nested deep", True, out)
    if roll < 0.25:
        what, refuse = special(doc, rng)
    elif roll < 0.37:
        what, refuse = benign(doc, rng), False
    else:
        target = rng.choice(targets(doc, rng))
        try:
            _get(doc, target.path)
        except (KeyError, IndexError, TypeError):
            target = Target(("version",), "exact")
        if rng.random() < 0.12:
            _delete(doc, target.path)
            what, refuse = f"{'.'.join(map(str, target.path))} deleted", target.required
        else:
            value = rng.choice(BAD[target.kind])
            _set(doc, target.path, value)
            what, refuse = f"{'.'.join(map(str, target.path))} = {value!r:.30}", True
    if kind == "config" and what == "a document that is a list":
        out.write_text("[1, 2]")
    else:
        out.write_text(json.dumps(doc))
    return Mutant(kind, what, refuse, out)


# -- weights ----------------------------------------------------------------------------------------
def _same_content(a: dict[str, Any], b: Any) -> bool:
    return (isinstance(b, dict) and a.keys() == b.keys()
            and all(isinstance(b[k], torch.Tensor) and a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                    and torch.equal(a[k], b[k]) for k in a))


def _mutate_weights(original: Path, out: Path, rng: random.Random) -> Mutant:
    state = torch.load(original, weights_only=True)
    data = original.read_bytes()
    roll = rng.random()
    if roll < 0.45:  # a flipped bit: the file is corrupt when a record fails its own CRC-32 or the
        flipped = bytearray(data)  # tensors decode differently; a flip in zip padding is harmless
        at = rng.randrange(len(flipped))
        flipped[at] ^= 1 << rng.randrange(8)
        out.write_bytes(bytes(flipped))
        try:
            decoded = torch.load(out, weights_only=True)
            with zipfile.ZipFile(out) as archive:
                intact = archive.testzip() is None
        except Exception:
            decoded, intact = None, False
        return Mutant("weights", f"bit flipped at byte {at}", not (intact and _same_content(state, decoded)), out)
    if roll < 0.52:
        out.write_bytes(data[: rng.randrange(1, len(data))])
        return Mutant("weights", "truncated", True, out)
    key = rng.choice(sorted(k for k, v in state.items() if v.is_floating_point() and v.dim() >= 1))
    edits: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("a value that is an int", lambda s: s.update({key: 3})),
        ("a value that is None", lambda s: s.update({key: None})),
        ("a value that is a list", lambda s: s.update({key: [1.0, 2.0]})),
        ("a sparse tensor", lambda s: s.update({key: s[key].float().to_sparse()})),
        ("a meta tensor", lambda s: s.update({key: torch.empty(s[key].shape, device="meta")})),
        ("a bool tensor", lambda s: s.update({key: s[key] > 0})),
        ("a complex tensor", lambda s: s.update({key: s[key].to(torch.complex64)})),
        ("a float64 tensor", lambda s: s.update({key: s[key].double()})),
        ("NaN inside", lambda s: s.update({key: torch.full_like(s[key].float(), NAN).to(s[key].dtype)})),
        ("infinity inside", lambda s: s.update({key: torch.full_like(s[key].float(), INF).to(s[key].dtype)})),
        ("a missing tensor", lambda s: s.pop(key)),
        ("an extra tensor", lambda s: s.update({"extra.weight": torch.zeros(2)})),
        ("a mis-shaped tensor", lambda s: s.update({key: torch.zeros(*s[key].shape, 2)})),
        ("a list instead of a dict", lambda s: None),
    ]
    what, edit = rng.choice(edits)
    mutated = dict(state)
    edit(mutated)
    buf = io.BytesIO()
    torch.save(list(mutated.values()) if what == "a list instead of a dict" else mutated, buf)
    out.write_bytes(buf.getvalue())
    return Mutant("weights", f"{key}: {what}", True, out)


# -- ONNX -------------------------------------------------------------------------------------------
def _mutate_onnx(corpus: Corpus, folder: Path, rng: random.Random) -> Mutant:
    """Inside a copy of the export folder (report.json records the model's SHA-256), or alone."""
    import onnx

    export = folder / "export"
    shutil.copytree(corpus.export, export)
    model_path = export / "model.onnx"
    data = model_path.read_bytes()
    roll = rng.random()
    if roll < 0.4:
        flipped = bytearray(data)
        at = rng.randrange(len(flipped))
        flipped[at] ^= 1 << rng.randrange(8)
        model_path.write_bytes(bytes(flipped))
        return Mutant("onnx", f"bit flipped at byte {at} (export folder)", True, model_path)
    if roll < 0.5:
        model_path.write_bytes(data[: rng.randrange(1, len(data))])
        return Mutant("onnx", "truncated (export folder)", True, model_path)
    alone = folder / "model.onnx"  # a model handed over without its export report
    model = onnx.load_from_string(data)
    edits = ["input channels 4", "input element type int64", "output removed", "input size 0", "input renamed",
             "input 10^9 wide", "output shape edited"]
    what = rng.choice(edits)
    graph = model.graph
    if what == "input channels 4":
        graph.input[0].type.tensor_type.shape.dim[1].dim_value = 4
    elif what == "input element type int64":
        graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    elif what == "output removed":
        graph.output.pop()
    elif what == "input size 0":
        graph.input[0].type.tensor_type.shape.dim[2].dim_value = 0
    elif what == "input renamed":
        old = graph.input[0].name
        graph.input[0].name = "pixels"
        for node in graph.node:
            node.input[:] = ["pixels" if n == old else n for n in node.input]
    elif what == "input 10^9 wide":
        graph.input[0].type.tensor_type.shape.dim[3].dim_value = 10**9
    else:
        graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7
    alone.write_bytes(model.SerializeToString())
    return Mutant("onnx", what, what != "input renamed", alone)


def mutate(kind: str, corpus: Corpus, folder: Path, rng: random.Random) -> Mutant:
    """A mutated copy of ``kind``'s original, written in the empty ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "weights":
        return _mutate_weights(corpus.weights, folder / "weights.pt", rng)
    if kind == "onnx":
        return _mutate_onnx(corpus, folder, rng)
    return _mutate_json(kind, corpus.original(kind), folder / corpus.original(kind).name, rng)


# -- what the commands do with each kind --------------------------------------------------------------
def consume(mutant: Mutant, corpus: Corpus) -> None:
    """Run what the commands run on the file; raises UserError when it is refused."""
    if mutant.kind == "table":
        from nas2deploy.latency.summary import summarize
        from nas2deploy.spaces import get_space
        from nas2deploy.spaces.tables import load_table, table_space

        table = load_table(mutant.path)  # lut show, arch info --lut, search --lut
        summarize(table)
        space = table_space(table)
        table.predict(space.sample_arch(random.Random(0)))
        entry = get_space(space.name)
        searched = entry.make_search(space, table, dict(entry.search_defaults))
        assert searched.fastest_ms() > 0 and float(searched.latency_model().detach()) > 0
    elif mutant.kind in ("arch", "segarch"):
        from nas2deploy.nets import load_arch
        from nas2deploy.latency.network_summary import arch_summary

        arch = load_arch(mutant.path)  # arch info, train, export
        arch_summary(arch)
        arch.build()
    elif mutant.kind == "weights":
        from nas2deploy.deploy.export import verify_artifact
        from nas2deploy.train import load_weights

        verify_artifact(mutant.path)  # export --weights
        load_weights(corpus.arch_obj, mutant.path)
    elif mutant.kind == "onnx":
        from nas2deploy.backends import BackendSettings
        from nas2deploy.backends.timing import TimingSettings
        from nas2deploy.deploy.bench import bench_model

        bench_model(str(mutant.path), BackendSettings(), TimingSettings(warmup_runs=1, warmup_ms=0, min_runs=2, min_time_ms=0))
    elif mutant.kind == "config":
        from nas2deploy.runs import prepare
        from nas2deploy.search.config import SearchConfig

        fields = SearchConfig.from_file(mutant.path)  # search --config
        prepare(SearchConfig(table=str(corpus.table), **fields))
    else:
        raise ValueError(kind_error(mutant.kind))


def kind_error(kind: str) -> str:
    return f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}"


def outcome(mutant: Mutant, corpus: Corpus) -> tuple[str, str]:
    """(accepted | refused | multi-line refusal | traceback, the message or exception)."""
    from nas2deploy.errors import UserError

    try:
        consume(mutant, corpus)
    except UserError as exc:
        text = str(exc)
        return ("refused" if "\n" not in text and text else "multi-line refusal"), text
    except Exception as exc:  # a bug: the fuzzer's whole point is to find these
        return "traceback", f"{type(exc).__name__}: {str(exc)[:200]}"
    return "accepted", ""
