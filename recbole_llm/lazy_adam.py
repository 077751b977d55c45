"""``learner: lazy_adam``: Adam that updates only the item rows a batch touched, for catalogs of a million items.

With the sampled softmax a step touches a few thousand item rows, yet Adam moves every row of the item table (its
moments decay even where the gradient is zero): at a million items x 64 that is most of a step's time, all memory
traffic. Lazy Adam (TensorFlow Addons' ``LazyAdam``, torch's ``SparseAdam``) updates the moments and weights of the
rows whose gradient is non-zero only; every other parameter is updated as by Adam. Where every row is touched the
two are the same optimizer (tested). The rows left alone keep their moments, so the result is not Adam's: it is an
option for large catalogs, off by default and off in the ``paper`` preset.

Item rows are the parameters whose first dimension is the model's ``n_items`` (the item table, the per-item bias;
BERT4Rec's table has one more row, its [MASK] token). Their gradients stay dense (RecBole's models gather rows by indexing), and after a step only the touched rows
are zeroed again, so ``zero_grad`` costs nothing for them.
"""
from __future__ import annotations

import math

import torch
from recbole.trainer import Trainer

from .allocator import keep_freed_memory


class LazyAdam(torch.optim.Optimizer):
    """Adam (L2 ``weight_decay`` added to the gradient, as torch's and RecBole's Adam) whose ``rows`` parameters are
    updated only on the rows with a non-zero gradient."""

    def __init__(self, params, rows, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._rows = {id(p) for p in rows}

    @torch.no_grad()
    def zero_grad(self, set_to_none: bool = True):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if id(p) in self._rows and state.get("grad_zeroed"):
                    state["grad_zeroed"] = False  # step zeroed the rows it read: the rest were zero already
                elif set_to_none and id(p) not in self._rows:
                    p.grad = None
                else:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                lazy = id(p) in self._rows
                if lazy:
                    touched = p.grad.reshape(len(p), -1).ne(0).any(1).nonzero().squeeze(1)
                    grad = p.grad[touched]
                    value, exp_avg, exp_avg_sq = p[touched], state["exp_avg"][touched], state["exp_avg_sq"][touched]
                else:
                    grad, value, exp_avg, exp_avg_sq = p.grad, p, state["exp_avg"], state["exp_avg_sq"]
                if group["weight_decay"]:
                    grad = grad.add(value, alpha=group["weight_decay"])
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(group["eps"])
                update = value.addcdiv(exp_avg, denom, value=-group["lr"] / bias1)
                if lazy:
                    p[touched] = update
                    state["exp_avg"][touched] = exp_avg
                    state["exp_avg_sq"][touched] = exp_avg_sq
                    p.grad[touched] = 0
                    state["grad_zeroed"] = True
                else:
                    p.copy_(update)
        return loss


def item_row_parameters(model) -> list[torch.nn.Parameter]:
    """The trainable parameters with one row per item: the item table (BERT4Rec's has one more row, its [MASK]
    token) and the per-item bias."""
    return [p for p in model.parameters()
            if p.requires_grad and p.dim() >= 1 and len(p) in (model.n_items, model.n_items + 1)]


FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)  # RecBole's adam and adamw


class CatalogTrainer(Trainer):
    """RecBole's Trainer that also knows ``learner: lazy_adam`` (every other learner is RecBole's own) and
    ``train_precision`` (the model's setting): ``fp32`` leaves RecBole's ``enable_amp`` as set; ``bf16`` trains under
    bf16 autocast (fp32 master weights), refused on a CPU without native bf16; ``auto`` is bf16 where the CPU (AVX-512
    BF16 / AMX) or GPU runs it natively, else fp32, so one setting serves every machine. ``adam`` and ``adamw``
    are torch's fused implementations (the same update up to float rounding)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        precision = model.settings.train_precision  # the Paper models' TrainingSettings (their trainer_class)
        self.bf16 = False
        if precision != "fp32":  # fp32 leaves RecBole's enable_amp as the run set it
            self.bf16 = self.resolve_train_precision(precision, self.device) == "bf16"
            self.enable_amp = self.bf16

    @staticmethod
    def resolve_train_precision(setting: str, device) -> str:
        """``train_precision`` on this machine: fp32 or bf16 (``auto`` by the hardware; ``bf16`` refused where it is
        not native). The run's checks call it too, so a refusal comes before any data is read."""
        from .llm.precision import resolve_precision

        return resolve_precision(setting, device, key="train_precision", allowed=("auto", "fp32", "bf16"))

    def _train_epoch(self, *args, **kwargs):
        """RecBole's epoch, with freed memory kept for the next step (``train_keep_freed_memory``:
        ``recbole_llm/allocator.py``), its autocast in bf16 where ``train_precision`` asked for it: RecBole's
        ``torch.autocast`` names no dtype, which is bf16 on the CPU but fp16 on CUDA (and fp16 without RecBole's
        GradScaler can underflow)."""
        with keep_freed_memory(self.model.settings.train_keep_freed_memory):
            if not self.bf16:
                return super()._train_epoch(*args, **kwargs)
            device = torch.device(self.device).type
            before = torch.get_autocast_dtype(device)
            torch.set_autocast_dtype(device, torch.bfloat16)
            try:
                return super()._train_epoch(*args, **kwargs)
            finally:
                torch.set_autocast_dtype(device, before)

    def _build_optimizer(self, **kwargs):
        if str(kwargs.get("learner", self.learner)).lower() != "lazy_adam":
            optimizer = super()._build_optimizer(**kwargs)  # RecBole's choice, settings and warnings
            if type(optimizer) not in FUSED_OPTIMIZERS:
                return optimizer
            # the same optimizer as one fused kernel per parameter instead of a dozen small ops each: the same
            # update up to float rounding (tests/test_lazy_adam.py)
            groups = [{k: v for k, v in group.items() if k not in ("fused", "foreach")}
                      for group in optimizer.param_groups]
            return type(optimizer)(groups, fused=True)
        params = list(kwargs.get("params", self.model.parameters()))
        rows = item_row_parameters(self.model)
        return LazyAdam(params, rows, lr=kwargs.get("learning_rate", self.learning_rate),
                        weight_decay=kwargs.get("weight_decay", self.weight_decay) or 0.0)
