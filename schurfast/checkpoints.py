"""Checkpoints: safetensors weights with JSON metadata in the file's header, never pickle.

The header's metadata holds two JSON strings: ``schurfast.model`` (what is needed to rebuild
the model: sizes, construction, init, biases) and ``schurfast.meta`` (everything else: the
caller's metadata, the model's ``train_info`` when it has one, and the package version).
The tensors keep the model's dtype (float32, or float64 after ``model.double()``), and a
loaded model has it again.
Files are written to a temporary name in the same folder and renamed into place, so a reader
never sees half a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from schurfast._io import atomic_write
from schurfast.models import CONSTRUCTIONS, TanhRNN
from schurfast.tasks import _check_int

_MODEL_KEY = "schurfast.model"
_META_KEY = "schurfast.meta"


def _jsonable(value: Any, key: str) -> Any:
    """Plain JSON types: tensors and numpy arrays become lists, numpy scalars Python scalars,
    NaN and infinities None; ``key`` names the entry in errors."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor | np.ndarray):
        return _jsonable(value.tolist(), key)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"checkpoint metadata {key!r} must be JSON-like (dict, list, tuple, str, number, bool,"
        f" None, numpy array or tensor), got {type(value).__name__}"
    )


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes a model built from ``config`` has, without building it."""
    H = config["hidden_size"]
    n_in, n_out = config["input_size"], config["output_size"]
    shapes: dict[str, tuple[int, ...]] = {}
    if config["construction"] == "dense":
        shapes["weight_hh"] = (H, H)
    else:
        shapes.update(skew=(H, H), block_a=(H // 2,), block_b=(H // 2,))
        if H % 2:
            shapes["block_lone"] = (1,)
    shapes.update(weight_xh=(H, n_in), weight_hy=(n_out, H))
    if config["hidden_bias"]:
        shapes["bias_h"] = (H,)
    if config["readout_bias"]:
        shapes["bias_y"] = (n_out,)
    return shapes


def _check_config(config: Any, tensors: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    """The header's model config, checked field by field and against the stored tensors."""
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the model config must be a JSON object, got {config!r}")
    missing = [
        k
        for k in ("input_size", "hidden_size", "output_size", "construction", "init")
        + ("hidden_bias", "readout_bias")
        if k not in config
    ]
    if missing:
        raise ValueError(f"{where}: the model config lacks {', '.join(missing)}")
    try:
        for key in ("input_size", "hidden_size", "output_size"):
            _check_int(config[key], key)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad model config: {err}") from None
    if config["construction"] not in CONSTRUCTIONS:
        raise ValueError(
            f"{where}: bad model config: construction must be one of {', '.join(CONSTRUCTIONS)},"
            f" got {config['construction']!r}"
        )
    for key in ("hidden_bias", "readout_bias"):
        if not isinstance(config[key], bool):
            raise ValueError(
                f"{where}: bad model config: {key} must be true or false, got {config[key]!r}"
            )

    # compare shapes before building anything: the header alone must never decide how much
    # memory a model takes
    expected = _expected_shapes(config)
    stored = {k: tuple(v.shape) for k, v in tensors.items()}
    if stored != expected:
        wrong = sorted(
            f"{k}: expected {list(expected[k]) if k in expected else 'nothing'},"
            f" stored {list(stored[k]) if k in stored else 'nothing'}"
            for k in expected.keys() | stored.keys()
            if expected.get(k) != stored.get(k)
        )
        raise ValueError(
            f"{where}: inconsistent schurfast metadata: the model config does not match the"
            f" stored tensors ({'; '.join(wrong)})"
        )
    return config


def save_checkpoint(model: TanhRNN, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``model`` and ``meta`` to a safetensors file, atomically.

    Args:
        model: the model to save.
        path: destination file (conventionally ``*.safetensors``).
        **meta: JSON-like metadata (task, seed, training configuration, metrics, ...; numpy
            arrays and tensors are stored as lists, numpy scalars as numbers). The
            model's construction, init, width (``H``) and, after ``train``, its ``train_info``,
            seed, task and held-out metric are added unless given.

    Returns:
        the path written.

    Raises:
        TypeError: ``model`` is not a ``TanhRNN``, its tensors do not share one dtype, or a
            metadata value (named in the message) is not JSON-like.
        ValueError: ``path`` is a directory or its directory does not exist.

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
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path}: is a directory; give a file path inside it")
    if not path.parent.is_dir():
        raise ValueError(f"checkpoint {path}: the directory {path.parent} does not exist")
    # the stored tensors keep their dtype, which load_checkpoint restores: one for all of them
    dtypes = sorted({str(t.dtype) for t in model.state_dict().values()})
    if len(dtypes) > 1:
        raise TypeError(
            f"model tensors must share one dtype to be saved, got {', '.join(dtypes)};"
            " cast with model.float() or model.double()"
        )
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
        _META_KEY: json.dumps({k: _jsonable(v, k) for k, v in full.items()}, allow_nan=False),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_checkpoint(path: str | os.PathLike) -> tuple[TanhRNN, dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``.

    Args:
        path: the file.

    Returns:
        ``(model, meta)``; ``model.train_info`` is restored when it was saved, and the model
        has the dtype of the stored tensors (float32 for a file whose tensors differ in dtype).

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

    where = f"checkpoint {path}"
    try:
        config = json.loads(header[_MODEL_KEY])
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: metadata is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: the metadata must be a JSON object, got {meta!r}")
    train_info = meta.get("train_info")
    if train_info is not None and not isinstance(train_info, dict):
        raise ValueError(f"{where}: train_info must be a JSON object, got {train_info!r}")
    config = _check_config(config, tensors, where)
    dtypes = {t.dtype for t in tensors.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    if not dtype.is_floating_point:
        raise ValueError(
            f"{where}: inconsistent schurfast metadata: the stored tensors must be floating"
            f" point, got {dtype}"
        )

    try:
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
        model.to(dtype).load_state_dict(tensors, strict=True)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{where}: inconsistent schurfast metadata: {err}") from None
    model.train_info = train_info
    return model, meta
