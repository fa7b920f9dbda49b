"""Data-parallel training across processes and machines with ``torch.distributed`` (gloo).

Each rank computes the gradients of its shard of every global batch with the
NumPy/compiled engine; one all-reduce per iteration over a single flat float
buffer (shared zero-copy between NumPy and torch) sums the shard gradients,
each pre-scaled by its share of the global batch, so every rank holds exactly
the gradient of the whole batch and applies the same optimizer step.

Launch with ``torchrun`` (it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)::

    torchrun --nproc-per-node 2 -m fastrnn.cli.train --distributed ...

torch is imported only when a distributed context is created.
"""
import datetime
import os

import numpy as np

from fastrnn import config


class DistributedError(RuntimeError):
    """A collective failed: usually another rank died or the network broke."""


def launched_by_torchrun():
    """True when the environment describes a multi-process job (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def shard_bounds(batch_size, rank, world_size):
    """The [start, stop) rows of a global batch that ``rank`` owns.

    Contiguous, disjoint, covering the batch; sizes differ by at most one.
    """
    if batch_size < world_size:
        raise ValueError(f"batch_size {batch_size} is smaller than the number of ranks "
                         f"{world_size}: every rank needs at least one example")
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class DistributedContext:
    """One rank's view of a gloo process group, with a reusable flat gradient buffer."""

    def __init__(self, timeout_s=None):
        import torch.distributed as dist

        self._dist = dist
        if timeout_s is None:
            timeout_s = config.get(config.DIST_TIMEOUT)
        if not dist.is_initialized():
            missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                       if k not in os.environ]
            if missing:
                raise DistributedError(
                    f"distributed training needs {', '.join(missing)} in the environment; "
                    "launch with torchrun, e.g. `torchrun --nproc-per-node 2 -m fastrnn.cli.train "
                    "--distributed`")
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self._flat = None     # flat gradient buffer, reused while the layout holds
        self._views = None
        self._layout = None

    @property
    def is_main(self):
        return self.rank == 0

    def shard(self, batch_size):
        """``slice`` of the global batch owned by this rank."""
        return slice(*shard_bounds(batch_size, self.rank, self.world_size))

    def _buffer(self, grads, dtype):
        """The flat buffer and per-key views, allocated once and reused every iteration."""
        layout = [(k, g.shape) for k, g in sorted(grads.items())]
        if self._layout != layout or self._flat.dtype != dtype:
            total = sum(int(np.prod(shape)) for _, shape in layout) + 1  # + the loss
            self._flat = np.empty(total, dtype=dtype)
            self._views, offset = {}, 0
            for k, shape in layout:
                size = int(np.prod(shape))
                self._views[k] = self._flat[offset:offset + size].reshape(shape)
                offset += size
            self._layout = layout
        return self._flat, self._views

    def allreduce_gradients(self, loss, grads, weight, iteration=None):
        """Sum ``weight * (loss, grads)`` over ranks with one all-reduce.

        ``weight`` is this rank's share of the global batch (n_local / batch_size),
        so the result is the loss and gradient of the whole global batch. Returns
        ``(loss, grads)``; the grads are views into the reused flat buffer, valid
        until the next call.
        """
        import torch

        dtype = next(iter(grads.values())).dtype
        flat, views = self._buffer(grads, dtype)
        for k, g in grads.items():
            np.multiply(g, weight, out=views[k])
        flat[-1] = loss * weight
        try:
            self._dist.all_reduce(torch.from_numpy(flat), op=self._dist.ReduceOp.SUM)
        except Exception as err:  # gloo raises RuntimeError/DistBackendError subclasses
            where = f" at iteration {iteration}" if iteration is not None else ""
            raise DistributedError(
                f"rank {self.rank}/{self.world_size}: gradient all-reduce failed{where}: {err}. "
                "Another rank has probably died or timed out; see its log.") from err
        return float(flat[-1]), views

    def broadcast_params(self, params):
        """Overwrite every rank's params (dict of arrays, in place) with rank 0's."""
        import torch

        for k in sorted(params):
            p = params[k]
            if not p.flags.c_contiguous:
                raise ValueError(f"parameter {k} must be C-contiguous to broadcast in place")
            try:
                self._dist.broadcast(torch.from_numpy(p), src=0)
            except Exception as err:
                raise DistributedError(f"rank {self.rank}: broadcasting parameter {k} from rank 0 "
                                       f"failed: {err}") from err

    def barrier(self):
        try:
            self._dist.barrier()
        except Exception as err:
            raise DistributedError(f"rank {self.rank}: barrier failed: {err}") from err

    def close(self):
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


def global_loss_and_grads(context, model, features, captions, iteration=None):
    """Loss and gradients of the whole global minibatch: this rank's shard, all-reduced."""
    shard = context.shard(len(captions))
    loss, grads = model.loss(features[shard], captions[shard])
    weight = (shard.stop - shard.start) / len(captions)
    return context.allreduce_gradients(loss, grads, weight, iteration=iteration)


def distributed_solver(context, model, data, resume=None, **solver_kwargs):
    """A CaptioningSolver that trains data-parallel on ``context``'s process group.

    Every rank draws the same global minibatch (same seed), computes the loss and
    gradients of its own shard, and all-reduces them, so the run equals a
    single-process run with the same global ``batch_size``. Only rank 0 shows
    progress, evaluates and writes checkpoints. With ``resume=PATH`` every rank
    continues the run saved there, whatever number of ranks saved it (``model`` is
    then taken from the checkpoint).
    """
    from fastrnn.captioning.solver import CaptioningSolver

    class DistributedCaptioningSolver(CaptioningSolver):
        def _loss_and_grads(self, features, captions):
            return global_loss_and_grads(context, self.model, features, captions,
                                         iteration=self.iteration + 1)

        def train(self):
            context.broadcast_params(self.model.params)
            return super().train()

    # Every rank must draw the same minibatches; a seed from each process's own global
    # NumPy state would not be the same on all of them.
    solver_kwargs.setdefault("seed", 0)
    if not context.is_main:
        solver_kwargs.update(progress=False, verbose=False, eval_fn=None, checkpoint_dir=None)
    if resume is not None:
        return DistributedCaptioningSolver.resume(resume, data, **solver_kwargs)
    return DistributedCaptioningSolver(model, data, **solver_kwargs)
