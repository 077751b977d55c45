"""RecBole's DDP path (``nproc`` > 1) on CPU, for tests.

RecBole 1.2.1 hard-wires NCCL and CUDA devices when ``local_rank`` is set. Each spawned
process here swaps in the gloo backend and CPU device (the only changes), then runs
RecBole's own ``run_recboles``, so what is exercised is RecBole's DistributedDataParallel
trainer and evaluator with our models inside it.
"""
import recbole_llm  # noqa: F401  (first: its RecBole patches, and our models registered in spawned processes)
import torch
import torch.distributed as dist
from recbole.config import Config
from recbole.quick_start import quick_start
from recbole.trainer import trainer as recbole_trainer


def _init_gloo_device(self):
    cfg = self.final_config_dict
    dist.init_process_group(backend="gloo", rank=cfg["local_rank"] + cfg["offset"], world_size=cfg["world_size"],
                            init_method=f"tcp://{cfg['ip']}:{cfg['port']}")
    cfg["device"] = torch.device("cpu")
    cfg["single_spec"] = False
    if cfg["local_rank"] != 0:
        cfg["state"], cfg["show_progress"], cfg["verbose"] = "error", False, False


class _CpuDDP(torch.nn.parallel.DistributedDataParallel):
    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module, device_ids=None, **kwargs)  # CPU modules take no device ids


def run_recboles_on_gloo(rank, *args):
    Config._init_device = _init_gloo_device
    recbole_trainer.DistributedDataParallel = _CpuDDP
    quick_start.run_recboles(rank, *args)
