"""The DenseNAS supernet: every block of the space, densely connected, with architecture weights.

- alpha: one row per mixed op (head layers: 6 MBConv candidates per incoming edge; stacking
  layers: the same 6 plus skip); beta: one entry per edge, normalised over each block's outgoing
  edges into path probabilities p_ij = softmax(beta_i)_j (reference.md section 2).
- A block sums its head layers' outputs weighted by the path probabilities of the edges they
  sit on, then runs its stacking layers. Edges into the tail carry its fixed conv1x1 branch.
- Candidates are built from the same OpSpecs as the latency table's entries, with affine-free BN
  (as published), so the latency model and the supernet cannot disagree about what an op is.
- Each forward pass runs the ops that ``OpChoice`` names for each mixed op, weighted by the
  softmax of their alphas: one op (weight steps), two ops (architecture steps), or all of them.
  Given a ``Route`` instead, it runs that one network alone with the supernet's weights (a
  single-path step of the one-shot search, or a network scored by its inherited weights).
- Candidate weights (our choice; the search option ``separate_op_weights`` restores the
  published independent candidates): the MBConv candidates of one mixed op share one set of
  weights, as in once-for-all and BigNAS: ``kXeY`` uses the first ``Cin * Y`` expanded channels
  and the centre ``X x X`` of the depthwise kernels; each candidate keeps its own
  (affine-free) BN statistics. Why: with independent candidates every uniformly sampled op
  feeds the next layer channels that mean something else, and on the built-in data the
  supernet stayed at chance for 400 weight steps (a fixed network of the same ops learns in
  100); sharing gives every candidate the same channel meaning and the supernet learns in 150
  steps (``benchmarks/supernet_learning.py``). The derived network is trained from scratch as
  before, and the latency table still prices each candidate as the separate op it deploys as.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nas2deploy.ops import MBConv, OpSpec, Skip, batch_norm, uncount_batch_norms
from nas2deploy.search.sampling import on_device
from nas2deploy.spaces.densenas.space import HEAD_OPS, STACK_OPS, DenseNASSpace, Edge, Route

ALPHA_INIT = 1e-3


class Mixture(nn.Module):
    """A mixed op: the candidates ``indices`` run on one input, summed with ``weights``."""

    def run(self, x: torch.Tensor, index: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, indices: list[int], weights: torch.Tensor) -> torch.Tensor:
        if len(indices) == 1 and not weights.requires_grad:  # a weight step or the argmax network:
            return self.run(x, indices[0])  # its weight, the softmax of one alpha, is exactly 1
        out = weights[0] * self.run(x, indices[0])
        for k in range(1, len(indices)):
            out = out + weights[k] * self.run(x, indices[k])
        return out


class MixedOp(Mixture):
    """Candidates with independent weights, each the module its OpSpec builds (as published)."""

    def __init__(self, candidates: list[OpSpec]):
        super().__init__()
        self.candidates = nn.ModuleList([spec.build(affine=False) for spec in candidates])

    def run(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.candidates[index](x)


class SharedMixedOp(Mixture):
    """MBConv candidates (and ``skip``) of one input and output that share the largest
    candidate's weights: candidate ``kXeY`` is ``MBConv`` with the first ``Cin * Y`` channels of
    the expansion and projection and the centre ``X x X`` of each depthwise kernel, so it computes
    exactly what ``MBConv(..., X, Y, stride).build(affine=False)`` computes with those weights
    copied in. Each candidate has its own BN statistics (its channel statistics differ)."""

    def __init__(self, candidates: list[OpSpec]):
        super().__init__()
        convs = [s for s in candidates if isinstance(s, MBConv)]
        if not convs or any(not isinstance(s, (MBConv, Skip)) for s in candidates) or \
                any(s.expansion == 1 for s in convs) or len({(s.cin, s.out, s.stride) for s in convs}) != 1:
            raise ValueError("shared weights need MBConv candidates (expansion > 1) of one shape, and skip")
        first = convs[0]
        self.cin, self.stride = first.cin, first.stride
        self.residual = first.stride == 1 and first.cin == first.out
        self.specs = candidates
        self.kernel = max(s.kernel for s in convs)
        hidden = first.cin * max(s.expansion for s in convs)
        self.expand = nn.Parameter(torch.empty(hidden, first.cin, 1, 1))
        self.depthwise = nn.Parameter(torch.empty(hidden, 1, self.kernel, self.kernel))
        self.project = nn.Parameter(torch.empty(first.out, hidden, 1, 1))
        for w in (self.expand, self.depthwise, self.project):  # nn.Conv2d's default initialisation
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.norms = nn.ModuleList([
            nn.ModuleList([batch_norm(s.cin * s.expansion, False), batch_norm(s.cin * s.expansion, False),
                           batch_norm(s.out, False)]) if isinstance(s, MBConv)
            else nn.ModuleList() for s in candidates])

    def run(self, x: torch.Tensor, index: int) -> torch.Tensor:
        spec = self.specs[index]
        if not isinstance(spec, MBConv):
            return x  # skip
        hidden, k, c = spec.cin * spec.expansion, spec.kernel, self.kernel // 2
        norms = cast(nn.ModuleList, self.norms[index])
        full = hidden == self.expand.shape[0]  # the largest candidate's weights need no slicing (no view to
        kernel = self.depthwise[:hidden] if not full else self.depthwise  # dispatch, no slice_backward)
        if k != self.kernel:
            kernel = kernel[:, :, c - k // 2:c + k // 2 + 1, c - k // 2:c + k // 2 + 1]
        y = F.relu6(norms[0](F.conv2d(x, self.expand if full else self.expand[:hidden])))
        y = F.relu6(norms[1](F.conv2d(y, kernel, stride=self.stride, padding=k // 2, groups=hidden)))
        y = norms[2](F.conv2d(y, self.project if full else self.project[:, :hidden]))
        return x + y if self.residual else y


@dataclass(frozen=True)
class OpChoice:
    """Which candidates run in each mixed op: ``head[r]`` for alpha_head row r, ``stack[l]`` for
    stacking layer l (rows of index tensors, shape (rows, k)), on the CPU: the host reads them to
    decide which modules to launch, without waiting for a GPU."""

    head: torch.Tensor
    stack: torch.Tensor

    @staticmethod
    def all(net: DenseNASSupernet) -> OpChoice:
        def every(alpha: torch.Tensor) -> torch.Tensor:
            return torch.arange(alpha.shape[1]).repeat(alpha.shape[0], 1)

        return OpChoice(every(net.alpha_head), every(net.alpha_stack))


class DenseNASSupernet(nn.Module):
    def __init__(self, space: DenseNASSpace, separate_op_weights: bool = False):
        super().__init__()
        self.space = space
        mixed = MixedOp if separate_op_weights else SharedMixedOp
        self.stem = nn.Sequential(*[s.build(affine=False) for s in space.stem_specs()])
        self.head_edges = [e for e in space.edges if e.dst != space.tail_node]
        self.tail_edges = [e for e in space.edges if e.dst == space.tail_node]
        self.heads = nn.ModuleList([mixed(space.head_candidates(e)) for e in self.head_edges])
        self.tail_branches = nn.ModuleList([space.head_candidates(e)[0].build(affine=False) for e in self.tail_edges])
        #: (node, layer) of every stacking mixed op, in alpha_stack row order.
        self.stack_layers = [(n, l) for n, count in enumerate(space.stack_layers) for l in range(count)]
        self.stacks = nn.ModuleList([mixed(space.stack_candidates(n)) for n, _ in self.stack_layers])
        # Index maps shared by the forward pass, the latency model and derivation.
        self.in_edges: dict[int, list[int]] = {}
        for ei, e in enumerate(space.edges):
            self.in_edges.setdefault(e.dst, []).append(ei)
        self.head_row = {e: r for r, e in enumerate(self.head_edges)}
        self.tail_row = {e: r for r, e in enumerate(self.tail_edges)}
        self.stack_rows: dict[int, list[int]] = {}
        for r, (n, _) in enumerate(self.stack_layers):
            self.stack_rows.setdefault(n, []).append(r)
        self.classifier = space.classifier_spec().build()
        n_head, n_stack = len(space.head_candidates(self.head_edges[0])), len(space.stack_candidates(1))
        self.alpha_head = nn.Parameter(ALPHA_INIT * torch.randn(len(self.head_edges), n_head))
        self.alpha_stack = nn.Parameter(ALPHA_INIT * torch.randn(len(self.stack_layers), n_stack))
        self.beta = nn.Parameter(ALPHA_INIT * torch.randn(len(space.edges)))
        # Edges are generated source by source, so each block's outgoing edges form one slice.
        self.out_slices: dict[int, slice] = {}
        for i, e in enumerate(space.edges):
            start = self.out_slices.get(e.src, slice(i, i)).start
            self.out_slices[e.src] = slice(start, i + 1)
        uncount_batch_norms(self)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_head, self.alpha_stack, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def path_probs(self) -> torch.Tensor:
        """p_e for every edge: softmax of beta over its source block's outgoing edges."""
        parts = [torch.softmax(self.beta[s], 0) for _, s in sorted(self.out_slices.items())]
        return torch.cat(parts)

    def edge_index(self, edge: Edge) -> int:
        return self.space.edges.index(edge)

    def forward(self, x: torch.Tensor, choice: OpChoice | Route) -> torch.Tensor:
        """No host synchronisation: the sampled indices are read on the host (CPU tensors), the
        weights gathered on the device from one copy of them."""
        if isinstance(choice, Route):
            return self.forward_route(x, choice)
        space = self.space
        device = self.alpha_head.device
        # one unbind per tensor rather than an indexing op per row: each op is a host launch on a GPU
        p = self.path_probs().unbind()
        head_w = torch.softmax(self.alpha_head.gather(1, on_device(choice.head, device)), -1).unbind()
        stack_w = torch.softmax(self.alpha_stack.gather(1, on_device(choice.stack, device)), -1).unbind()
        heads, stacks = choice.head.tolist(), choice.stack.tolist()
        outs: list[torch.Tensor | None] = [None] * (space.tail_node + 1)
        outs[0] = self.stem(x)
        for node in range(1, space.tail_node + 1):
            acc: torch.Tensor | None = None
            for ei in self.in_edges[node]:
                e = space.edges[ei]
                src = outs[e.src]
                assert src is not None
                if node == space.tail_node:
                    y = self.tail_branches[self.tail_row[e]](src)
                else:
                    r = self.head_row[e]
                    y = self.heads[r](src, heads[r], head_w[r])
                acc = p[ei] * y if acc is None else acc + p[ei] * y
            assert acc is not None
            for r in self.stack_rows.get(node, []):
                acc = self.stacks[r](acc, stacks[r], stack_w[r])
            outs[node] = acc
        final = outs[space.tail_node]
        assert final is not None
        return self.classifier(final)

    def forward_route(self, x: torch.Tensor, route: Route) -> torch.Tensor:
        """The one network ``route`` names, run with the supernet's weights: each block on its
        path through the head layer of the edge it arrives by and its stacking layers, the
        ops the route chose (no architecture weights: a single path is exactly one network)."""
        y = self.stem(x)
        blocks = iter(zip(route.heads, route.stacks))
        for edge in route.edges:
            if edge.dst == self.space.tail_node:
                y = self.tail_branches[self.tail_row[edge]](y)
                continue
            head, stack = next(blocks)
            y = cast(Mixture, self.heads[self.head_row[edge]]).run(y, HEAD_OPS.index(head))
            for r, op in zip(self.stack_rows.get(edge.dst, []), stack):
                y = cast(Mixture, self.stacks[r]).run(y, STACK_OPS.index(op))
        return self.classifier(y)
