"""recbole-llm: LLM item knowledge for RecBole's sequential recommenders.

Importing the package makes RecBole 1.2.1 run on this stack (``compat``),
registers our models so RecBole finds them by name, registers the
beyond-accuracy metrics and adds the temporal SESSION split.
"""
from . import compat

compat.apply()

from . import all_positions, metrics, registry  # noqa: E402
from .data import protocol  # noqa: E402

registry.install()
metrics.register()
protocol.install()
all_positions.install()

from .model import output_bias  # noqa: E402

output_bias.install()

from . import model  # noqa: E402,F401  (registers the models)
from .quick_start import load_data_and_model, run  # noqa: E402
from .recommend import recommend  # noqa: E402
from .registry import get_model, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["run", "load_data_and_model", "get_model", "register_model", "recommend"]
