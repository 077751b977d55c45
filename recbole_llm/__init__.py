"""recbole-llm: LLM item knowledge for RecBole's sequential recommenders.

Importing the package applies the table of RecBole patches (``patches``: RecBole 1.2.1 on this stack,
the temporal SESSION split, all-position training), registers our models so RecBole finds them by name
and registers the beyond-accuracy metrics.
"""
import warnings

# Known third-party noise, shown on every command and tuning trial and not actionable by a user:
# ray's import of pkg_resources, RecBole's pandas chained-assignment FutureWarnings, and the CUDA
# GradScaler notice RecBole triggers on CPU. Filtered by message and origin, nothing else.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r"Deprecated call to `pkg_resources", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
warnings.filterwarnings("ignore", message=r".*GradScaler.*", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\..*is deprecated", category=FutureWarning)

import torch as _torch  # noqa: E402

# RecBole's SINE module turns anomaly detection on when it is imported; keep it on only if the user had
# turned it on before RecBole could (turn it on after importing recbole_llm to debug a NaN)
_ANOMALY_BEFORE = _torch.is_anomaly_enabled() and "recbole.model.sequential_recommender.sine" not in __import__(
    "sys").modules

from . import patches  # noqa: E402

patches.apply()  # every change to RecBole, from one table (recbole_llm/patches.py)

from . import metrics  # noqa: E402

metrics.register()

from . import model  # noqa: E402,F401  (registers the models)

patches.restore_anomaly_detection(_ANOMALY_BEFORE)
from .quick_start import load_data_and_model, run  # noqa: E402
from .recommend import build_fitted_model, item_table, recommend, recommend_many  # noqa: E402
from .registry import get_model, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["run", "load_data_and_model", "get_model", "register_model", "recommend", "recommend_many",
           "item_table", "build_fitted_model"]
