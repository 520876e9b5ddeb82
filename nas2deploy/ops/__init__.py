"""Operators as OpSpecs: small frozen values that name, build and key one layer.

``base.py`` defines what an op is and the registry of op kinds (``register_op``); one module per
family holds its kinds and their torch modules: ``chain.py`` (MBConv chains: MobileNetV2,
DenseNAS, the DPC backbone), ``cells.py`` (DCNAS cells), ``dpc.py`` (dense prediction cells);
``layers.py`` the torch layers they share. Importing this package registers every family, so a
table or an architecture file naming any of their kinds can be read.
"""

from nas2deploy.ops.base import FIELD_RULES, MAX_TENSOR, OP_TYPES, SHARED_RULES, OpSpec, register_op
from nas2deploy.ops.cells import AddN, Resize, SegHead, SepConv, UpConv
from nas2deploy.ops.chain import Classifier, ConvBNAct, MBConv, Skip, candidate_layer
from nas2deploy.ops.dpc import AtrousSep, Concat, Logits, LogitsModule, PointConv, PyramidPool
from nas2deploy.ops.layers import (
    RESIZE_MODES,
    AtrousDepthwise,
    UncountedBatchNorm,
    batch_norm,
    uncount_batch_norms,
)

__all__ = [
    "FIELD_RULES", "MAX_TENSOR", "OP_TYPES", "RESIZE_MODES", "SHARED_RULES", "AddN", "AtrousDepthwise", "AtrousSep",
    "Classifier", "Concat", "ConvBNAct", "Logits", "LogitsModule", "MBConv", "OpSpec", "PointConv", "PyramidPool",
    "Resize", "SegHead", "SepConv", "Skip", "UncountedBatchNorm", "UpConv", "batch_norm", "candidate_layer",
    "register_op", "uncount_batch_norms",
]
