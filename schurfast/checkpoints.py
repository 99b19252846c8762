"""Checkpoints: safetensors weights with JSON metadata in the file's header, never pickle.

The header's metadata holds two JSON strings: ``schurfast.model`` (what is needed to rebuild
the model: sizes, construction, init, biases) and ``schurfast.meta`` (everything else: the
caller's metadata, the model's ``train_info`` when it has one, and the package version).
Files are written to a temporary name in the same folder and renamed into place, so a reader
never sees half a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from schurfast.models import TanhRNN

_MODEL_KEY = "schurfast.model"
_META_KEY = "schurfast.meta"


def _jsonable(value: Any) -> Any:
    """Plain JSON types; tensors and numpy scalars become lists and numbers, NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"checkpoint metadata must be JSON-like, got {type(value).__name__}")


def save_checkpoint(model: TanhRNN, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``model`` and ``meta`` to a safetensors file, atomically.

    Args:
        model: the model to save.
        path: destination file (conventionally ``*.safetensors``).
        **meta: JSON-like metadata (task, seed, training configuration, metrics, ...). The
            model's construction, init, width (``H``) and, after ``train``, its ``train_info``,
            seed, task and held-out metric are added unless given.

    Returns:
        the path written.

    Example:
        >>> import tempfile, os
        >>> from schurfast.models import TanhRNN
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> _ = save_checkpoint(TanhRNN(3, 8, 3), path, task="flipflop", seed=0)
        >>> load_checkpoint(path)[1]["seed"]
        0
    """
    if not isinstance(model, TanhRNN):
        raise TypeError(f"model must be a TanhRNN, got {type(model).__name__}")
    from schurfast import __version__

    full = dict(meta)
    full.setdefault("construction", model.construction)
    full.setdefault("init", model.init)
    full.setdefault("width", model.hidden_size)
    if model.train_info is not None:
        full.setdefault("train_info", model.train_info)
        full.setdefault("seed", model.train_info.get("seed"))
        full.setdefault("task", model.train_info.get("config", {}).get("task"))
        full.setdefault("heldout_metric", model.train_info.get("heldout_metric"))
    full["schurfast_version"] = __version__
    header = {
        _MODEL_KEY: json.dumps(model.config),
        _META_KEY: json.dumps(_jsonable(full), allow_nan=False),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[TanhRNN, dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``.

    Args:
        path: the file.

    Returns:
        ``(model, meta)``; ``model.train_info`` is restored when it was saved.

    Raises:
        ValueError: the file is missing, truncated, or not a schurfast checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"checkpoint {path}: not a readable safetensors file (truncated or foreign): {err}"
        ) from None
    if _MODEL_KEY not in header or _META_KEY not in header:
        raise ValueError(
            f"checkpoint {path}: a safetensors file without schurfast metadata;"
            " it was not written by save_checkpoint"
        )

    try:
        config = json.loads(header[_MODEL_KEY])
        meta = json.loads(header[_META_KEY])
        model = TanhRNN(
            config["input_size"],
            config["hidden_size"],
            config["output_size"],
            construction=config["construction"],
            init=config["init"] if config["construction"] == "dense" else "orthogonal",
        )
        # biases are created to match the file, each on its own
        if config["hidden_bias"]:
            model.bias_h = torch.nn.Parameter(torch.zeros(config["hidden_size"]))
        if config["readout_bias"]:
            model.bias_y = torch.nn.Parameter(torch.zeros(config["output_size"]))
        model.load_state_dict(tensors, strict=True)
    except (json.JSONDecodeError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path}: inconsistent schurfast metadata: {err}") from None
    model.train_info = meta.get("train_info")
    return model, meta
