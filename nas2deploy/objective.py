"""What a network is trained for and scored by, per task, shared by the search, retraining and
the export's accuracy check: the one home of the losses and the metrics.

Classification: cross-entropy and top-1. Segmentation: per-pixel cross-entropy that skips the
ignore label (255, the boundaries of VOC-style masks), and mIoU from a confusion matrix summed
over all the batches scored (so a pass's mIoU is over its pixels, not a mean of batch mIoUs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


#: The label of pixels that no loss or metric counts (VOC's object boundaries).
IGNORE = 255

#: The score each task reports, as it appears in logs (``val_top1_argmax``, ``val_miou_argmax``).
METRIC = {"classification": "top1", "segmentation": "miou"}
#: How each score is written for people.
LABEL = {"top1": "top-1", "miou": "mIoU"}


def task_loss(task: str, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    if task == "segmentation":
        return F.cross_entropy(out, y, ignore_index=IGNORE)
    return F.cross_entropy(out, y, label_smoothing=label_smoothing)


class Score:
    """Top-1 or mIoU, accumulated over batches of outputs and targets on their device: adding a
    batch never waits for the GPU; ``value`` reads the total once."""

    def __init__(self, task: str, classes: int, device: torch.device | str = "cpu"):
        self.task, self.classes = task, classes
        self.seen = 0
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.conf = torch.zeros(classes, classes, dtype=torch.long, device=device)

    @property
    def metric(self) -> str:
        return METRIC[self.task]

    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        if self.task == "segmentation":
            self.conf += confusion(out.argmax(1), y, self.classes)
        else:
            self.correct += (out.argmax(-1) == y).sum()
            self.seen += len(y)

    @property
    def value(self) -> float:
        if self.task == "segmentation":
            return miou(self.conf.cpu())
        return int(self.correct) / max(self.seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, task: str, classes: int, batch_size: int = 16,
             device: torch.device | str = "cpu") -> float:
    """The task's score of ``model`` (in eval mode, on ``device``) on ``dataset``."""
    model.eval()
    score = Score(task, classes, device)
    for x, y in DataLoader(dataset, batch_size=batch_size):
        score.add(model(x.to(device)), y.to(device))
    return score.value


def confusion(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """Confusion matrix (rows: truth, columns: prediction) over the pixels not labelled ignore.

    Ignored pixels are counted in one extra bin that is dropped: a fixed-size ``index_add``
    instead of boolean indexing or ``bincount``, whose output sizes would make a GPU wait."""
    keep = target != IGNORE
    idx = torch.where(keep, target * classes + pred, classes * classes).reshape(-1)
    counts = torch.zeros(classes * classes + 1, dtype=torch.long, device=pred.device)
    counts.index_add_(0, idx, torch.ones_like(idx))
    return counts[:-1].reshape(classes, classes)


def miou(conf: torch.Tensor) -> float:
    """Mean IoU over the classes present in the truth or the prediction."""
    tp = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if bool(present.any()) else 0.0


def pixel_accuracy(conf: torch.Tensor) -> float:
    total = conf.sum()
    return float(conf.diag().sum().double() / total) if int(total) else 0.0
