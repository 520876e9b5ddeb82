"""``Arch``: a classification network that is a MBConv chain (kind ``chain``).

A stem (conv3x3 then MBConv k3 e1), a list of blocks (output width, stride, head op, stacking
ops) and a tail (conv1x1, global pool, classifier). ``op_specs()`` lists the OpSpecs of the
deployed layers in order and ``build()`` is literally those specs' modules in sequence, so the
latency table that predicts an Arch keys exactly the layers that run. The stem and the tail are
defined here once (``stem_specs``, ``tail_specs``); the DenseNAS space builds its supernet's
fixed parts from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from nas2deploy.errors import UserError
from nas2deploy.nets.base import Network
from nas2deploy.ops import Classifier, ConvBNAct, MBConv, OpSpec, candidate_layer
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
MAX_BLOCKS = 64
MAX_STACK = 16


def stem_specs(input_size: int, conv: int, out: int, stride: int, width: int | None = None) -> list[OpSpec]:
    """The chain's stem: conv3x3 (stride) to ``conv`` channels, then MBConv k3 e1 to ``out``;
    ``width`` for an input that is not square (a DPC backbone's)."""
    first = ConvBNAct(3, input_size, width or input_size, conv, 3, stride)
    c, h, w = first.out_shape()
    return [first, MBConv(c, h, w, out, 3, 1, 1)]


def tail_specs(cin: int, h: int, w: int, tail: int, classes: int) -> list[OpSpec]:
    """The chain's tail: conv1x1 to ``tail`` channels, then global pool and the classifier."""
    return [ConvBNAct(cin, h, w, tail, 1, 1), Classifier(tail, h, w, classes)]


@dataclass(frozen=True)
class Block:
    """One block of a MBConv chain: a head layer that may change width and stride, then stacking
    layers at constant width (``skip`` entries are allowed and vanish from the deployed net)."""

    out: int
    stride: int
    head: str
    stack: tuple[str, ...] = ()


@dataclass(frozen=True)
class Arch(Network):
    input_size: int
    num_classes: int
    stem_conv: int
    stem_out: int
    stem_stride: int
    blocks: tuple[Block, ...]
    tail: int
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    kind: ClassVar[str] = "chain"
    task: ClassVar[str] = "classification"
    unit: ClassVar[str] = "blocks"

    def units(self) -> int:
        return len(self.blocks)

    def op_specs(self, include_free: bool = False) -> list[OpSpec]:
        """Every layer's OpSpec in execution order; ``include_free`` keeps the skip layers."""
        specs = stem_specs(self.input_size, self.stem_conv, self.stem_out, self.stem_stride)
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
        return specs + tail_specs(c, h, w, self.tail, self.num_classes)

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
            "kind": self.kind,
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

    @classmethod
    def from_field(cls, doc: Field) -> Arch:
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

    def build(self, affine: bool = True) -> nn.Module:
        return nn.Sequential(*[spec.build(affine) for spec in self.op_specs()])
