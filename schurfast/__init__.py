"""schurfast: which structured changes to a trained recurrent weight matrix keep its behaviour.

Trained one-layer tanh RNNs are put in ordered real Schur form, chosen coupling blocks between
the leading and complement sectors are removed, and every ablated variant is re-run at once.
"""

from schurfast._openblas import preload as _preload

_preload()

from schurfast import _core  # noqa: E402
from schurfast.ablation import ablate, ablation_variants, sectors  # noqa: E402
from schurfast.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from schurfast.models import TanhRNN  # noqa: E402
from schurfast.rollout import rollout  # noqa: E402
from schurfast.schur import SchurError, SchurResult, ordered_schur  # noqa: E402
from schurfast.tasks import make_task  # noqa: E402
from schurfast.training import TrainingError, evaluate, train  # noqa: E402

__version__ = _core.__version__

__all__ = [
    "SchurError",
    "SchurResult",
    "TanhRNN",
    "TrainingError",
    "__version__",
    "ablate",
    "ablation_variants",
    "evaluate",
    "load_checkpoint",
    "make_task",
    "ordered_schur",
    "rollout",
    "save_checkpoint",
    "sectors",
    "train",
]
