"""The latency-regularised loss and the budget controller.

Loss on the architecture step (paper, eq. 8): ``CE + lambda * log_tau(latency)``.

Budget mode (``--budget-ms``): lambda adapts so the expected latency settles at the budget. The
choice here is a multiplicative dual update after every architecture step,
``lambda <- lambda * exp(rate * (latency / budget - 1))``, clamped to [1e-4, 1e3]: above the
budget lambda grows and pushes latency down, below it lambda shrinks and accuracy pulls latency
back up. FasterSeg's doubling or halving once per epoch moves too coarsely for searches of a few
epochs; a per-step update with a small rate reaches the budget within an epoch and is smooth.
The trajectory (lambda, expected latency per epoch) is in the search log.
"""

from __future__ import annotations

import math

import torch

LAMBDA_MIN, LAMBDA_MAX = 1e-4, 1e3


def latency_loss(expected_ms: torch.Tensor, lam: torch.Tensor | float, tau: float) -> torch.Tensor:
    return lam * torch.log(expected_ms) / math.log(tau)


class BudgetController:
    """lambda lives on the search's device as a float64 scalar and is updated there, so a step
    never waits for the GPU to hand the expected latency to the host; ``value`` reads it (once
    per epoch, for the log and the checkpoint)."""

    def __init__(self, lam: float, budget_ms: float | None, rate: float = 0.05, device: torch.device | str = "cpu"):
        self.lam = torch.tensor(float(lam), dtype=torch.float64, device=device)
        self.budget_ms, self.rate = budget_ms, rate

    def update(self, expected_ms: torch.Tensor) -> None:
        if self.budget_ms is not None:
            step = torch.exp(self.rate * (expected_ms.detach().double() / self.budget_ms - 1))
            self.lam = torch.clamp(self.lam * step, LAMBDA_MIN, LAMBDA_MAX)

    @property
    def value(self) -> float:
        return float(self.lam)

    def load(self, value: float) -> None:
        self.lam = torch.tensor(float(value), dtype=torch.float64, device=self.lam.device)
