"""schurfast: which structured changes to a trained recurrent weight matrix keep its behaviour.

Trained one-layer tanh RNNs are put in ordered real Schur form, chosen coupling blocks between
the leading and complement sectors are removed, and every ablated variant is re-run at once.
"""

from schurfast._openblas import preload as _preload

_preload()

from schurfast import _core  # noqa: E402
from schurfast.ablation import ablate, ablation_variants, sectors  # noqa: E402
from schurfast.rollout import rollout  # noqa: E402
from schurfast.schur import SchurError, SchurResult, ordered_schur  # noqa: E402

__version__ = _core.__version__

__all__ = [
    "SchurError",
    "SchurResult",
    "__version__",
    "ablate",
    "ablation_variants",
    "ordered_schur",
    "rollout",
    "sectors",
]
