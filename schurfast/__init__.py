"""schurfast: which structured changes to a trained recurrent weight matrix keep its behaviour.

Trained one-layer tanh RNNs are put in ordered real Schur form, chosen coupling blocks between
the leading and complement sectors are removed, and every ablated variant is re-run at once.
"""

from schurfast._openblas import preload as _preload

_preload()

from schurfast import _core  # noqa: E402

__version__ = _core.__version__

from schurfast.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from schurfast.models import TanhRNN  # noqa: E402
from schurfast.tasks import make_task  # noqa: E402
from schurfast.training import TrainingError, evaluate, train  # noqa: E402

__all__ = [
    "__version__",
    "TanhRNN",
    "TrainingError",
    "evaluate",
    "load_checkpoint",
    "make_task",
    "save_checkpoint",
    "train",
]
