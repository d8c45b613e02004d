"""torch.distributed for train and bench: torchrun's environment, one device a rank, rank 0 speaks and writes."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

from gantool.errors import ConfigError, DeviceError, GantoolError
from gantool.ranks import QUIET_EXIT_DELAY_S, env_int as _env_int, quiet_rank_exit, speaks  # noqa: F401 (re-exported)

T = TypeVar("T")


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A seed for rank `rank`'s noise and dropout stream, independent of every other rank's
    (SeedSequence mixes (seed, rank, step) into one 63-bit value)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint64)[0]) >> 1  # NumPy 1.x: no uint64 >> int


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun).

    Every collective helper is an identity in a single process, so callers need no branches.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    restart: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT: > 0 after a --max-restarts restart

    @classmethod
    def from_env(cls) -> "Dist":
        world = _env_int("WORLD_SIZE", 1)
        return cls(rank=_env_int("RANK", 0), world=world, local_rank=_env_int("LOCAL_RANK", 0),
                   local_world=_env_int("LOCAL_WORLD_SIZE", world),
                   restart=_env_int("TORCHELASTIC_RESTART_COUNT", 0))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- setup --------------------------------------------------------------------------------
    def device(self, name: str = "auto") -> torch.device:
        """The device of this rank: cuda:LOCAL_RANK (one GPU a rank, NCCL) or cpu (gloo).

        Fewer GPUs than ranks on a node is an error, never two ranks sharing a GPU or a silent
        fall back to CPU."""
        from gantool.device import resolve_device

        if not self.enabled:
            return resolve_device(name)
        name = (name or "auto").lower()
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cpu":
            return torch.device("cpu")
        if name.startswith("cuda:"):
            raise ConfigError(f"--device {name} would put every rank on one GPU; under torchrun use "
                              "--device cuda (rank r uses cuda:LOCAL_RANK)")
        if name != "cuda":
            raise ConfigError(f"--device {name} is not supported under torchrun; use cpu (gloo) or cuda (NCCL)")
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < self.local_world:
            raise DeviceError(f"--device cuda: {self.local_world} ranks on this node need one GPU each, "
                              f"but {have} CUDA device(s) are visible (torch {torch.__version__}); "
                              f"use --nproc-per-node {have} or fewer" if have else
                              f"--device cuda: CUDA is not available on this machine (torch {torch.__version__}) "
                              f"for {self.local_world} ranks")
        return torch.device("cuda", self.local_rank)

    def init(self, device: torch.device) -> None:
        """Join the process group: NCCL for CUDA ranks, gloo for CPU ranks."""
        import torch.distributed as dist

        if not self.enabled or dist.is_initialized():
            return
        kw: dict[str, Any] = {}
        if self.restart and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # After a --max-restarts restart the agent's store still holds the killed attempt's
            # keys, so a rank can read a dead peer's address (pytorch#135712): give each attempt
            # its own key space in that store.
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), self.world,
                                  is_master=False)
            kw = dict(store=dist.PrefixStore(f"gantool/attempt_{self.restart}", store), rank=self.rank,
                      world_size=self.world)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device, **kw)
        else:
            dist.init_process_group("gloo", **kw)

    def close(self, barrier: bool = True) -> None:
        """Leave the process group. `barrier` (the normal exit): first wait until every rank is past
        its last collective; a rank that tore gloo down while a peer was still finishing one aborted
        ("terminate called without an active exception") in 2 of 20 two-rank runs on 2 CPU cores,
        0 of 30 with the barrier. Pass False on an error path, where a peer may never arrive."""
        import torch.distributed as dist

        if self.enabled and dist.is_initialized():
            if barrier:
                dist.barrier()
            dist.destroy_process_group()

    @property
    def backend(self) -> str | None:
        import torch.distributed as dist

        return dist.get_backend() if self.enabled and dist.is_initialized() else None

    # --- collectives (identities in one process) ----------------------------------------------
    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel: gradients averaged over ranks in backward."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        import warnings

        # R1's double backward hands DDP a (1, F) weight gradient with strides (1, 1): the same
        # memory order as the bucket's, which DDP still warns about on every step.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids, gradient_as_bucket_view=True)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a detached tensor of the same shape on every rank."""
        if not self.enabled:
            return t
        import torch.distributed as dist

        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world

    def global_mean(self, local_mean: torch.Tensor) -> torch.Tensor:
        """The mean over ranks with gradients that make DDP's average exact.

        Value: the global mean. Gradient with respect to this rank's `local_mean`: 1, which DDP's
        average over ranks turns into d/dlocal of (1/world) * sum_r local_r -- the gradient of the
        global mean. Used where a loss is not linear in the batch (the batch-average class
        distribution of nameability_loss)."""
        if not self.enabled:
            return local_mean
        return local_mean + (self.mean(local_mean) - local_mean.detach())

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate a detached tensor of every rank along dim 0, in rank order."""
        if not self.enabled:
            return t
        import torch.distributed as dist

        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.detach().contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj: T) -> list[T]:
        """Every rank's picklable `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank."""
        if not self.enabled:
            return flag
        # NCCL reduces CUDA tensors only; gloo takes CPU ones.
        where = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else "cpu"
        return bool(self.mean(torch.tensor([float(flag)], device=where)).item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """Run fn on rank 0 only; a GantoolError there stops every rank with the same exit code
        (rank 0 prints the one line, the others exit quietly instead of waiting forever)."""
        err: tuple[int, str] | None = None
        value, failure = None, None
        if self.is_main:
            try:
                value = fn()
            except GantoolError as e:
                if not self.enabled:
                    raise
                err = (e.exit_code, str(e))
                failure = e
        err = self.broadcast(err)
        if err is not None:
            if self.is_main:
                raise failure
            raise RankStopped(err[1], err[0])
        return value


class RankStopped(GantoolError):
    """Another rank (rank 0) stopped on bad input; this rank exits with its code, saying nothing."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


SINGLE = Dist()


def launch(nproc: int, argv: list[str]) -> int:
    """`gantool ... --nproc N`: run `python -m gantool argv` as N local ranks through
    torch.distributed's own launcher (what torchrun --standalone does); returns the exit code.

    The ranks print their own output; a failed rank's code is returned without the launcher's
    failure report, since rank 0 has already said what went wrong in one line."""
    import logging
    import uuid

    if Dist.from_env().enabled:
        raise ConfigError("--nproc starts torchrun itself; under torchrun leave it out")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too: one thread a rank
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.launcher").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", rdzv_configs={"rank": 0},
                          max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "gantool", *argv)
    except ChildFailedError as e:
        codes = {r: f.exitcode for r, f in e.failures.items()}
        # A rank's own code (rank 0's first); the launcher's -15 for ranks it stopped is not one.
        return next((c for r, c in sorted(codes.items()) if c > 0), 1)
    return 0
