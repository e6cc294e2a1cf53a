"""Data-parallel training over processes, GPUs and nodes: PyTorch DDP, started with ``torchrun``.

``torchrun --nproc-per-node N -m cganseg train ...`` starts N copies of the command; each finds
its rank in the environment torchrun sets and joins one process group (NCCL between GPUs, gloo
on CPU). The design keeps a distributed run equal to a single-process run at the same batch:

- ``batch_size`` is the *global* batch. Every process reads the same seeded stream of sample keys
  and keeps its share of each batch (:class:`cganseg.data.dataset.ShardSampler`), so the samples
  of a step do not depend on the number of processes, and a checkpoint resumes on any number.
- Every random draw of a step (DiffAugment policies, the generator's styles and noise) is made for
  the global batch on every process, from generators in the same state, and each keeps its rows.
- Statistics over the batch are global: BatchNorm becomes torch's ``SyncBatchNorm`` on GPUs and
  :class:`GlobalBatchNorm2d` on CPU (``SyncBatchNorm`` has no CPU kernels); the Dice term of the
  segmentation loss sums over the global batch (:func:`sum_across`).
- Gradients are averaged by ``DistributedDataParallel``; logged loss terms are averaged once per
  ``log_every`` steps. Rank 0 alone validates, logs and writes checkpoints; the others follow
  its early-stopping decision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cganseg.errors import InputError

#: how long processes wait for each other (rank 0 validates and saves while the others wait)
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class Rank:
    """This process's place in the job: global rank, number of processes, rank on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0 writes files, logs and shows progress."""
        return self.rank == 0

    def rows(self, local_batch: int) -> slice:
        """This process's rows of a global batch of ``local_batch * world`` items."""
        return slice(self.rank * local_batch, (self.rank + 1) * local_batch)


def from_env() -> Rank:
    """The rank torchrun set in the environment; a single process without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise InputError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)"
        ) from None
    return Rank(rank, world, local)


def setup(device: torch.device) -> tuple[Rank, torch.device]:
    """Join torchrun's process group, if any; returns the rank and this process's device.

    On CUDA each process takes ``cuda:LOCAL_RANK`` whatever index ``device`` names.
    """
    rank = from_env()
    if not rank.distributed:
        return rank, device
    if device.type == "cuda":
        if rank.local_rank >= torch.cuda.device_count():
            raise InputError(
                f"process {rank.local_rank} of this node has no GPU: {torch.cuda.device_count()} "
                f"visible; start at most that many with torchrun --nproc-per-node"
            )
        device = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return rank, device


def barrier() -> None:
    """Wait until every process gets here (no-op alone)."""
    if _active():
        dist.barrier()


def teardown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SumAcross(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradients: every process's loss depends
    on every process's input, and DDP's gradient averaging then gives the global gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_across(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over all processes, with gradients flowing back to each (identity when alone)."""
    return _SumAcross.apply(tensor) if _active() else tensor


def mean_across(values: torch.Tensor) -> torch.Tensor:
    """Mean over all processes, without gradients (for logging)."""
    if not _active():
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def mean_terms(sums: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, float]:
    """Loss terms summed over steps, averaged over the steps that computed each (``counts``)
    and over all processes, with one host sync; a term can be absent in some steps (a cGAN-Seg
    warm-up)."""
    means = mean_across(torch.stack([v.float() / counts[k] for k, v in sums.items()]))
    return dict(zip(sums, means.tolist(), strict=True))


def any_across(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is True on any (e.g. rank 0's early stop)."""
    if not _active():
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the samples of all processes (CPU/gloo).

    Same parameters, buffers and results as ``nn.BatchNorm2d`` on the whole global batch: the
    mean is the all-reduced sum over the all-reduced count, the variance the all-reduced sum of
    squares about that mean (two passes, stable), and the all-reduces pass gradients back. Alone,
    or in eval mode, it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        totals = sum_across(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centered = x - mean.view(shape)
        var = sum_across((centered * centered).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                if momentum is None:  # cumulative average, as nn.BatchNorm2d
                    momentum = 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * n / (n - 1).clamp(min=1), momentum)
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _to_global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a GlobalBatchNorm2d sharing its tensors."""
    if type(module) is nn.BatchNorm2d:
        out = GlobalBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        for name, param in module.named_parameters(recurse=False):
            setattr(out, name, param)
        for name, buf in module.named_buffers(recurse=False):
            setattr(out, name, buf)
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, _to_global_batchnorm(child))
    return module


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Global batch statistics for ``module``'s BatchNorm layers when running distributed.

    Call before the optimiser is built; parameters are shared, so checkpoints keep their keys.
    """
    if not _active():
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global_batchnorm(module)


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when running distributed, else ``module`` itself.

    Buffers are synced once, at the start, not every step: global batch statistics keep them equal.
    """
    if not _active():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)
