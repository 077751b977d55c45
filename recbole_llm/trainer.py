"""A trainer for models that learn nothing by gradient descent."""
from recbole.trainer import Trainer


class FitOnceTrainer(Trainer):
    """Models fitted at construction (LLMSeqSim, SKNN, hybrids over trained
    checkpoints) set ``needs_training = False``: no training epochs, one
    validation pass, then RecBole's usual checkpoint and test evaluation.
    Models with ``needs_training = True`` train as with RecBole's Trainer."""

    def __init__(self, config, model):
        super().__init__(config, model)
        if not getattr(model, "needs_training", True):
            self.epochs = 1

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if getattr(self.model, "needs_training", True):
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        return 0.0
