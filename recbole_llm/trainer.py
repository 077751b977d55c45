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

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluation, plus any figures the model reports about itself
        (LLMSeqPrompt: unique recommendations, hallucination rate, ...)."""
        report = getattr(self.model, "evaluation_report", None)
        if report is not None:
            report()  # discard what was counted outside this evaluation (e.g. RecBole's FLOPs probe)
        result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if result is not None and report is not None:
            result.update(report())
        return result


class _FirstBatches:
    """A RecBole train loader seen through a budget: at most ``limit`` batches."""

    def __init__(self, loader, limit: int):
        self._loader, self._limit = loader, limit

    def __iter__(self):
        for number, batch in enumerate(self._loader):
            if number >= self._limit:
                break
            yield batch

    def __len__(self):
        return min(self._limit, len(self._loader))

    def __getattr__(self, name):
        return getattr(self._loader, name)


class StepBudgetTrainer(Trainer):
    """RecBole's Trainer with ``max_train_steps`` batches per epoch (unset: all),
    for models whose steps are expensive (a forward and backward pass through an LLM)."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        limit = self.config["max_train_steps"]
        if limit:
            train_data = _FirstBatches(train_data, int(limit))
        return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
