"""Scale-out of `sld i2p generate` with Lightning Fabric: the same command on N devices or nodes.

With `scale.devices * scale.num_nodes > 1`, Fabric launches one process per device (strategy "ddp": the command
is re-run with its rank in the environment; on a cluster, the cluster's launcher starts the processes), joins them
in a process group (gloo on CPUs, NCCL on GPUs), and each process takes the batches `rank, rank + world, ...` of
the pending list: disjoint shards that all write into the shared run directory. One process needs no Lightning.
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sld.api import check_device
from sld.eval.config import DEVICE_TYPES, ScaleSection

I2P_EXTRA = "pip install 'safe-latent-diffusion[i2p]' (or pip install lightning)"


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    device: torch.device
    barrier: Callable[[], None]

    def take(self, work: list) -> list:
        """This process's share: every world-th element from its rank on."""
        return work[self.rank::self.world]


def _no_barrier() -> None:
    """One process has nothing to wait for."""


def check_scale(scale: ScaleSection, device: str) -> torch.device:
    """The device (type) every process uses; several processes need a device type without an index."""
    checked = check_device(device)
    if checked.type not in DEVICE_TYPES:
        raise ValueError(f"--device {device!r} is not supported; allowed: {', '.join(DEVICE_TYPES)}")
    if scale.devices * scale.num_nodes == 1:
        return checked
    if checked.index is not None:
        raise ValueError(f"--device {device!r} names one device, but --devices {scale.devices} --num-nodes "
                         f"{scale.num_nodes} asks for several; allowed: a device type ({', '.join(DEVICE_TYPES)})")
    if checked.type == "mps":
        raise ValueError("--device mps runs one process; allowed: --devices 1 --num-nodes 1, or cpu / cuda")
    if checked.type == "cuda" and scale.devices > torch.cuda.device_count():
        raise ValueError(f"--devices {scale.devices} exceeds the {torch.cuda.device_count()} CUDA device(s) of this "
                         "node; allowed: at most that many processes per node")
    return checked


def _fabric_class():
    try:
        from lightning.fabric import Fabric
    except ImportError:
        try:
            from lightning_fabric import Fabric
        except ImportError:
            raise ValueError(f"--devices/--num-nodes above 1 run on Lightning Fabric, which is not installed: "
                             f"{I2P_EXTRA}") from None
    return Fabric


def launch(scale: ScaleSection, device: str) -> Shard:
    """This process's shard; with several processes, Fabric starts the others here (every one returns)."""
    checked = check_scale(scale, device)
    if scale.devices * scale.num_nodes == 1:
        return Shard(0, 1, checked, _no_barrier)
    fabric = _fabric_class()(accelerator=checked.type, devices=scale.devices, num_nodes=scale.num_nodes,
                             strategy=scale.strategy)
    fabric.launch()
    return Shard(fabric.global_rank, fabric.world_size, fabric.device, fabric.barrier)
