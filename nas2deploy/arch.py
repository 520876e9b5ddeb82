"""Derived networks as plain data: the ``Arch`` of a MBConv chain, its JSON form and its builder.

In the spirit of timm's EfficientNet builder, a network is a compact description decoded by one
builder: a stem (conv3x3 then MBConv k3 e1), a list of blocks (output width, stride, head op,
stacking ops) and a tail (conv1x1, global pool, classifier). ``arch.op_specs()`` lists the
OpSpecs of the deployed layers in order, ``build(arch)`` is literally those specs' modules in
sequence, so the latency table that predicts an Arch keys exactly the layers that run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.fileio import atomic_write_json, check_format, read_json
from nas2deploy.ops import Classifier, ConvBNAct, MBConv, OpSpec, candidate_layer
from nas2deploy.seg_arch import SegArch, SegNet
from nas2deploy.validate import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_SIDE,
    NETWORK_FIX,
    Field,
    network_meta,
    network_size,
)

ARCH_FORMAT = "nas2deploy.arch"
ARCH_VERSION = 1
#: Named architectures shipped with the package, one JSON file each (networks are data).
ARCH_DIR = Path(__file__).parent / "archs"
MAX_BLOCKS = 64
MAX_STACK = 16


@dataclass(frozen=True)
class Block:
    """One block of a MBConv chain: a head layer that may change width and stride, then stacking
    layers at constant width (``skip`` entries are allowed and vanish from the deployed net)."""

    out: int
    stride: int
    head: str
    stack: tuple[str, ...] = ()


@dataclass(frozen=True)
class Arch:
    input_size: int
    num_classes: int
    stem_conv: int
    stem_out: int
    stem_stride: int
    blocks: tuple[Block, ...]
    tail: int
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    task = "classification"

    def op_specs(self, include_free: bool = False) -> list[OpSpec]:
        """Every layer's OpSpec in execution order; ``include_free`` keeps the skip layers."""
        size = self.input_size
        specs: list[OpSpec] = [ConvBNAct(3, size, size, self.stem_conv, 3, self.stem_stride)]
        c, h, w = specs[-1].out_shape()
        specs.append(MBConv(c, h, w, self.stem_out, 3, 1, 1))
        c, h, w = specs[-1].out_shape()
        for i, block in enumerate(self.blocks):
            for j, name in enumerate((block.head, *block.stack)):
                stride = block.stride if j == 0 else 1
                try:
                    spec = candidate_layer(name, c, h, w, block.out, stride)
                except UserError as exc:
                    where = "head" if j == 0 else f"stack[{j - 1}]"
                    raise UserError(f"arch {self.name or '<unnamed>'}: blocks[{i}].{where}: {exc}") from None
                if include_free or not spec.is_free:
                    specs.append(spec)
                c, h, w = spec.out_shape()
        specs.append(ConvBNAct(c, h, w, self.tail, 1, 1))
        specs.append(Classifier(self.tail, h, w, self.num_classes))
        return specs

    def groups(self) -> list[tuple[str, list[OpSpec]]]:
        """The deployed ops grouped as stem, block 1..n, tail (skip layers included, they cost 0)."""
        specs = self.op_specs(include_free=True)
        groups = [("stem", specs[:2])]
        i = 2
        for n, block in enumerate(self.blocks, 1):
            size = 1 + len(block.stack)
            groups.append((f"block {n}", specs[i:i + size]))
            i += size
        groups.append(("tail", specs[i:]))
        return groups

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ARCH_FORMAT,
            "version": ARCH_VERSION,
            "name": self.name,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "stem": {"conv": self.stem_conv, "out": self.stem_out, "stride": self.stem_stride},
            "blocks": [
                {"out": b.out, "stride": b.stride, "head": b.head, "stack": list(b.stack)} for b in self.blocks
            ],
            "tail": self.tail,
            "meta": self.meta,
        }

    @staticmethod
    def from_dict(doc: Any, source: str = "<arch>") -> Arch:
        return Arch.from_field(Field(doc, f"arch {source}", NETWORK_FIX))

    @staticmethod
    def from_field(doc: Field) -> Arch:
        """Validate an arch document field by field; errors name the file, the field and the rule."""
        stem = doc["stem"]
        blocks = []
        for b in doc["blocks"].list(max_len=MAX_BLOCKS):
            stack = b["stack"].list(max_len=MAX_STACK) if b.has("stack") else []
            blocks.append(Block(b["out"].int(1, MAX_CHANNELS), b["stride"].int(choices=(1, 2)), b["head"].str(),
                                tuple(s.str() for s in stack)))
        name = doc.get("name")
        arch = Arch(
            input_size=doc["input_size"].int(32, MAX_SIDE),
            num_classes=doc["num_classes"].int(1, MAX_CLASSES),
            stem_conv=stem["conv"].int(1, MAX_CHANNELS),
            stem_out=stem["out"].int(1, MAX_CHANNELS),
            stem_stride=stem["stride"].int(choices=(1, 2)),
            blocks=tuple(blocks),
            tail=doc["tail"].int(1, MAX_CHANNELS),
            name=(name.str() if name else "") or doc.source.removeprefix("arch "),
            meta=network_meta(doc),
        )
        try:
            specs = arch.op_specs()  # raises on unknown ops, a skip that changes width, ...
        except UserError as exc:
            raise UserError(f"{exc}; {NETWORK_FIX}") from None
        network_size(doc, sum(s.macs() for s in specs), sum(s.params() for s in specs))
        return arch


#: Any derived network: a classification chain or a segmentation cell graph.
AnyArch = Arch | SegArch


def build(arch: AnyArch, affine: bool = True) -> nn.Module:
    """The deployable network: the modules of ``arch.op_specs()`` in sequence (a SegArch, whose
    cells form a graph, builds its SegNet)."""
    if isinstance(arch, SegArch):
        return SegNet(arch)
    return nn.Sequential(*[spec.build(affine) for spec in arch.op_specs()])


def named_archs() -> list[str]:
    return sorted(p.stem for p in ARCH_DIR.glob("*.json"))


def load_arch(path: str | os.PathLike[str]) -> AnyArch:
    """Load an arch file, or a shipped architecture by name (``mobilenetv2``, ``densenas-a``...)."""
    p = Path(path)
    if not p.exists() and str(path) in named_archs():
        p = ARCH_DIR / f"{path}.json"
    elif not p.exists():
        raise UserError(f"arch {path}: no such file, nor a named architecture ({', '.join(named_archs())})")
    doc = Field(check_format(read_json(p, "arch"), p, ARCH_FORMAT, ARCH_VERSION, "arch"), f"arch {path}", NETWORK_FIX)
    task = doc.get("task")
    kind = task.str(("classification", "segmentation")) if task else "classification"
    return SegArch.from_field(doc) if kind == "segmentation" else Arch.from_field(doc)


def save_arch(arch: AnyArch, path: str | os.PathLike[str]) -> None:
    atomic_write_json(path, arch.to_dict())
