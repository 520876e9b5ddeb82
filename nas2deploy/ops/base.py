"""What an operator is: ``OpSpec``, the field rules that read one from a file, and the registry
of op kinds by their ``type`` field.

An OpSpec is the single source of truth for an operator. The module that is profiled into a
latency table, the candidate inside a supernet and the layer of a derived network are all built
by ``spec.build()``, and the table is keyed by ``spec.key``; so a table entry cannot describe a
different computation than the one that is deployed.

Keys are canonical and readable: type, hyper-parameters, input ``CxHxW`` and output channels,
e.g. ``mbconv_k3_e6_s2_i24x56x56_o32``. ``OpSpec.from_field`` validates untrusted JSON with the
rules of the spec's kind. A kind becomes readable from tables and architecture files by
``register_op`` (the families in this package register theirs; a search space may register its
own the same way).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar

from nas2deploy.validate import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, Field

if TYPE_CHECKING:
    from torch import nn

#: The most elements any tensor of one op may hold (2^27: 512 MB in fp32); real ops stay far below.
MAX_TENSOR = 2**27
#: How one field of an op is read from a file: a ``Field`` in, the checked value out.
Rule = Callable[[Field], Any]



@dataclass(frozen=True)
class OpSpec:
    """Base of all operator specs: the input tensor shape (C, H, W) for batch-agnostic keys."""

    cin: int
    h: int
    w: int

    type_name: ClassVar[str] = ""
    #: An op that disappears from a deployed network (skip) costs nothing and is never profiled.
    is_free: ClassVar[bool] = False

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def cout(self) -> int:
        raise NotImplementedError

    def out_shape(self) -> tuple[int, int, int]:
        """Output (C, H, W); strided ops use 'same' padding, so H_out = ceil(H / stride)."""
        s = getattr(self, "stride", 1)
        return self.cout, -(-self.h // s), -(-self.w // s)

    def build(self, affine: bool = True) -> nn.Module:
        raise NotImplementedError

    def build_standalone(self) -> nn.Module:
        """The module profiled alone, fed one input of (cin, h, w): ``build()`` except for ops
        that take several inputs in a network (AddN)."""
        return self.build()

    def macs(self) -> int:
        """Multiply-accumulates of convolutions and linear layers only (BN, activations, adds and
        pooling excluded): the convention of the published DenseNAS / MobileNetV2 numbers."""
        raise NotImplementedError

    def params(self) -> int:
        """Parameters of ``build(affine=True)``, BN scale and shift included, counted without
        building it (a test checks every type against the built module)."""
        return 0

    def norm_params(self) -> int:
        """The BN scales and shifts among ``params()``: the DPC paper counts a context module's
        parameters without them (``nets.dpc``). Given by the ops such a module is made of."""
        return 0

    def _shape(self) -> str:
        return f"i{self.cin}x{self.h}x{self.w}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, **asdict(self)}

    @staticmethod
    def from_field(doc: Field) -> OpSpec:
        """Rebuild a spec from JSON read from a file: the type must be known, every field present
        and within its kind's rule (``register_op``); errors name the file and the field path."""
        kind = doc["type"].str()
        if kind not in OP_TYPES:
            raise doc["type"].error(f"must be a known op type ({', '.join(sorted(OP_TYPES))})")
        cls, rules = OP_TYPES[kind], FIELD_RULES[kind]
        # A field with a default may be absent (added later: files written before it load as before).
        spec = cls(**{f.name: rules[f.name](doc[f.name]) for f in fields(cls) if doc.has(f.name) or f.default is MISSING})
        spec.check_size(doc)
        return spec

    @staticmethod
    def from_dict(data: Any, source: str = "op") -> OpSpec:
        return OpSpec.from_field(Field(data, source, "give a valid op"))

    def validate(self) -> None:
        """Apply the field rules to a spec built in code (from a candidate name, say)."""
        here = Field(self.to_dict(), f"op {self.type_name}", "choose another op")
        rules = FIELD_RULES[self.type_name]
        for f in fields(self):
            rules[f.name](here[f.name])
        self.check_size(here)

    def check_size(self, where: Field) -> None:
        """The largest tensor the op touches stays below ``MAX_TENSOR`` elements: a hostile file
        must not make profiling allocate terabytes."""
        hidden = self.cin * getattr(self, "expansion", 1)
        c, h, w = self.out_shape()
        if max(hidden * self.h * self.w, c * h * w) > MAX_TENSOR:
            raise where.error(f"describes an op with tensors above {MAX_TENSOR} elements", shown=False)



def odd_kernel(f: Field) -> int:
    k = f.int(1, 15)
    if k % 2 == 0:
        raise f.error("must be an odd kernel size")
    return k


#: Rules of the fields that ops of several kinds share (shapes, widths, kernels, strides).
SHARED_RULES: dict[str, Rule] = {
    "cin": lambda f: f.int(1, MAX_CHANNELS),
    "out": lambda f: f.int(1, MAX_CHANNELS),
    "h": lambda f: f.int(1, MAX_SIDE),
    "w": lambda f: f.int(1, MAX_SIDE),
    "kernel": odd_kernel,
    "stride": lambda f: f.int(choices=(1, 2)),
    "classes": lambda f: f.int(1, MAX_CLASSES),
    "dilation": lambda f: f.int(1, 64),
    "n": lambda f: f.int(2, 64),
}

#: Op kinds by their ``type`` field, and the rule of each of their fields.
OP_TYPES: dict[str, type[OpSpec]] = {}
FIELD_RULES: dict[str, dict[str, Rule]] = {}

S = TypeVar("S", bound=type[OpSpec])


def register_op(cls: S, **rules: Rule) -> S:
    """Make op kind ``cls`` readable from files by its ``type_name``: each of its fields is read by
    the rule given here, else by the shared rule of that name; a field with neither is a
    programming error, raised at import. Returns ``cls``, so it can close a class definition."""
    if not cls.type_name or cls.type_name in OP_TYPES and OP_TYPES[cls.type_name] is not cls:
        raise ValueError(f"op kind {cls.__name__}: type_name {cls.type_name!r} is empty or taken")
    own = {f.name: rules.get(f.name, SHARED_RULES.get(f.name)) for f in fields(cls)}
    if unruled := [name for name, rule in own.items() if rule is None]:
        raise ValueError(f"op kind {cls.type_name}: no rule reads field(s) {', '.join(unruled)}; give them to register_op")
    OP_TYPES[cls.type_name], FIELD_RULES[cls.type_name] = cls, {k: v for k, v in own.items() if v is not None}
    return cls
