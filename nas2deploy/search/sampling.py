"""Op sampling and the re-balancing shift of DenseNAS's architecture steps (reference.md section 2).

Every rank of a distributed search draws from a generator seeded by (seed, step), so all ranks
run the same sub-network at a step and their gradients can be averaged. The draw happens on the
CPU, from one copy of the architecture parameters per step: which candidates run is control
flow that the host needs anyway, so the indices stay CPU tensors (read without waiting for a
GPU), and the forward pass gathers the weights with one device copy of them. A CUDA generator
would make the same draw on the GPU, but the host would then wait for the indices before it
could launch the sampled candidates: one synchronisation either way, here outside the forward
pass and identical on CPUs and GPUs (so a CPU run and a GPU run sample the same sub-networks).
"""

from __future__ import annotations

import torch


def on_device(indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy of host indices on ``device`` that does not wait for it: a copy from pageable
    memory would synchronise with the GPU's stream first, one from pinned memory is queued."""
    if device.type != "cuda":
        return indices.to(device)
    return indices.pin_memory().to(device, non_blocking=True)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_ops(alpha: torch.Tensor, k: int, uniform: bool, generator: torch.Generator) -> torch.Tensor:
    """k distinct candidates per row, drawn by softmax(alpha) (or uniformly), sorted; on the CPU."""
    probs = torch.ones(alpha.shape) if uniform else torch.softmax(alpha.detach().float().cpu(), -1)
    idx = torch.multinomial(probs, k, replacement=False, generator=generator)
    return idx.sort(-1).values


def argmax_ops(alpha: torch.Tensor) -> torch.Tensor:
    """The strongest candidate of each row, on the CPU."""
    return alpha.detach().argmax(-1, keepdim=True).cpu()


@torch.no_grad()
def rebalance_(alpha: torch.Tensor, idx: torch.Tensor, old: torch.Tensor) -> None:
    """Shift the sampled alphas by ln(sum_S exp(old) / sum_S exp(new)).

    An architecture step only sees the sampled ops S; the shift restores their total softmax
    mass to what it was, so ops that were not sampled keep their probability.
    """
    idx = on_device(idx, alpha.device)
    new = alpha.gather(1, idx)
    shift = torch.logsumexp(old, -1, keepdim=True) - torch.logsumexp(new, -1, keepdim=True)
    alpha.scatter_(1, idx, new + shift)
