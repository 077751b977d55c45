"""recbole-llm: LLM item knowledge for RecBole's sequential recommenders.

Importing the package calls ``install()`` once: the table of RecBole patches (``patches``: RecBole 1.2.1 on
this stack, the temporal SESSION split, the prepare stage), our models registered so that RecBole finds them by
name, and the beyond-accuracy metrics. RecBole's own models are never changed.
"""
import warnings

_INSTALLED = False


def install() -> None:
    """Everything importing the package does to the process, once and in this order: the warning filters for known
    third-party noise (ray's import of pkg_resources, RecBole's pandas FutureWarnings, the CUDA GradScaler notice on
    CPU; by message and origin, nothing else), the patch table (``patches.apply``), our metrics and models
    registered with RecBole, and torch's anomaly detection put back where it was before RecBole's SINE module
    turned it on at import (on only if the user had it on before). ``import recbole_llm`` calls it."""
    global _INSTALLED
    if _INSTALLED:
        return
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"Deprecated call to `pkg_resources", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    warnings.filterwarnings("ignore", message=r".*GradScaler.*", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\..*is deprecated", category=FutureWarning)
    import sys

    import torch

    anomaly_before = torch.is_anomaly_enabled() and "recbole.model.sequential_recommender.sine" not in sys.modules
    from . import metrics, patches

    patches.apply()  # every change to RecBole, from one table (recbole_llm/patches.py)
    metrics.register()
    from . import model  # noqa: F401  (registers the models)

    patches.restore_anomaly_detection(anomaly_before)
    _INSTALLED = True


install()

from .quick_start import load_data_and_model, preset_config, run  # noqa: E402
from .recommend import build_fitted_model, item_table, recommend, recommend_many  # noqa: E402
from .registry import get_model, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["run", "load_data_and_model", "get_model", "register_model", "recommend", "recommend_many",
           "item_table", "build_fitted_model", "install", "preset_config"]
