"""Run by ``ranks.compare`` under torchrun (or alone): a tiny search whose architecture
parameters and weights each rank saves, so that ranks and a single-process run can be compared. On cuda
every rank uses GPU 0 over gloo (NCCL needs a GPU per rank).

    rank_worker.py TABLE OUT ACCUMULATE SPACE [DEVICE]
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from nas2deploy.runs import start_search
from nas2deploy.search.config import SearchConfig

table, out, accumulate, space = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
if device == "cuda":
    os.environ["LOCAL_RANK"] = "0"  # the ranks share GPU 0
if "WORLD_SIZE" in os.environ:
    dist.init_process_group("gloo")
rank = dist.get_rank() if dist.is_initialized() else 0
data = {"densenas": "synthetic:200", "dcnas": "seg-synthetic:40"}[space]
config = SearchConfig(table=table, space=space, data=data, epochs=2, warmup_epochs=1, batch_size=8, max_batches=2,
                      a_lr=0.05, seed=5, accumulate=accumulate, device=device)
search = start_search(config, out / "run", progress=None)
if device == "cuda":  # the same kernels in every process (the search itself lets cuDNN autotune)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
search.run()
for kind, params in (("arch", search.space_search.arch_parameters()), ("weights", search.space_search.weight_parameters())):
    torch.save([p.detach().cpu().clone() for p in params], out / f"{kind}_rank{rank}.pt")
if dist.is_initialized():
    dist.destroy_process_group()
