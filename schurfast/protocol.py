"""The ablation protocol end to end: train, decompose, ablate, evaluate, tabulate.

For every model of a configuration the protocol trains (or reuses) a one-layer tanh RNN, puts
all trained ``W_hh`` of one width in ordered real Schur form in one batched call, builds every
ablation variant ``W_S = Q (T - Delta_S) Q^T`` (all 8 subsets of {RR, RC, CC} for each
threshold ``alpha``) plus matched-norm random controls ``W_hh + ||Delta_S||_F G / ||G||_F``
(``G`` isotropic Gaussian, seeded), and evaluates all variants of a task in large batches on one
held-out set with ``W_xh``, ``W_hy`` and biases fixed. Per variant it records the metric, FVU,

    Delta = metric(W_S) - metric(W_none),   S = Delta / (||Delta_S||_F / ||T||_F),

where ``W_none`` is the rebuilt intact matrix (no block removed). ``S`` is left undefined (NaN)
when the mass removed is below :data:`MIN_MASS`, the float32 resolution of the rollout.

Every finished unit (a trained model, the Schur forms of one width, the variants of one width,
an evaluated batch of variants) is written atomically into ``DIR/units`` under a hash of exactly
the configuration it depends on, so rerunning the same command redoes nothing and gives the
same results, and a changed option recomputes only what depends on it.

Limitations: a ``torch.save``d state dict does not record the nonlinearity of the RNN it came
from, so :func:`ablate_model` trusts that such a file holds a tanh ``nn.RNN``; pass the module
itself to have it checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from schurfast._io import atomic_write
from schurfast.ablation import BLOCKS
from schurfast.models import DENSE_INITS

logger = logging.getLogger(__name__)

COPY_CONSTRUCTIONS = ("dense-default", "dense-orthogonal", "dense-normal", "cayley")
UnitHook = Callable[[str, Path], None]
# below this relative mass a change is within float32 rounding of W_hh; S is left undefined
MIN_MASS = 1e-6


@dataclass(frozen=True)
class ProtocolConfig:
    """Resolved settings of one protocol run; see :data:`PRESETS` for the named ones.

    Models: for the copy task one per construction in ``copy_constructions`` at width
    ``copy_hidden_size``; for every other task a dense network with init ``init`` at width
    ``hidden_size``; each for every seed in ``seeds``, the seeds of one kind trained together.

    Copy controllers train in two stages: a warm-up on the copy task with a short replay
    (``copy_warmup_replay_steps``; ``None`` skips it) until the validation accuracy reaches
    ``copy_warmup_target`` or ``copy_warmup_max_steps`` steps, then the full task until the
    validation accuracy reaches ``copy_target`` or after ``copy_max_steps`` more steps
    (``None`` targets train exactly ``epochs`` epochs). Every stage uses Adam at ``lr`` with
    the ``lr_schedule`` of ``schurfast.train`` over its step budget. A controller counts as
    solved when its held-out replay accuracy is at least ``copy_solved``. Training runs on
    ``train_threads`` torch threads and checks itself on ``train_eval_size`` validation trials.

    Evaluation: every subset of {RR, RC, CC} for every threshold in ``alphas``, ``controls``
    matched-norm random draws per single-block ablation (seeded by ``control_seed`` and the
    matrix), ``heldout_size`` held-out trials per task, variants rolled out in chunks of at
    most ``max_batch_bytes`` of outputs and hidden states on ``device`` with ``backend``.
    """

    name: str = "custom"
    tasks: tuple[str, ...] = ("copy", "flipflop", "sine", "integration")
    seeds: tuple[int, ...] = (0, 1, 2)
    hidden_size: int = 64
    init: str = "orthogonal"
    copy_hidden_size: int = 72
    copy_constructions: tuple[str, ...] = COPY_CONSTRUCTIONS
    epochs: int = 30
    batches_per_epoch: int = 128
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    copy_target: float | None = 0.995
    copy_max_steps: int | None = 3000
    copy_warmup_replay_steps: int | None = 24
    copy_warmup_target: float | None = 0.999
    copy_warmup_max_steps: int | None = 4000
    copy_solved: float = 0.99
    train_eval_size: int = 1024
    train_threads: int | None = 1
    alphas: tuple[float, ...] = (0.85, 0.9, 0.95)
    controls: int = 16
    control_seed: int = 0
    heldout_size: int = 1024
    task_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    backend: str = "auto"
    max_batch_bytes: int = 1 << 30

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRESETS: dict[str, ProtocolConfig] = {
    # the settings of DESIGN.md (3 seeds, 30 epochs of 128 batches of 64); copy controllers
    # warm up on a 24-step replay, then train on the full task until solved or out of budget
    "paper": ProtocolConfig(name="paper"),
    # every task and construction end to end in about a minute on two cores: 256 training
    # steps per network, enough for the neuroscience tasks to learn part of the job
    "quick": ProtocolConfig(
        name="quick",
        seeds=(0, 1),
        epochs=4,
        batches_per_epoch=64,
        batch_size=32,
        copy_target=None,
        copy_max_steps=None,
        copy_warmup_replay_steps=None,
        controls=4,
        heldout_size=128,
        train_eval_size=256,
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """One trained network of the protocol: task, construction, width and seed."""

    task: str
    construction: str
    init: str | None
    hidden_size: int
    seed: int

    @property
    def label(self) -> str:
        return self.construction if self.init is None else f"{self.construction}-{self.init}"

    @property
    def name(self) -> str:
        return f"{self.task}_{self.label}_H{self.hidden_size}_seed{self.seed}"


@dataclass
class ProtocolResult:
    """What a run leaves behind: the tables it wrote and where."""

    out: Path
    results: pd.DataFrame
    models: pd.DataFrame
    report: Path
    computed: dict[str, int]
    reused: dict[str, int]


def resolve_config(preset: str | ProtocolConfig = "quick", **overrides: Any) -> ProtocolConfig:
    """The configuration of a named preset with some fields replaced, checked.

    Args:
        preset: ``"quick"``, ``"paper"`` or a :class:`ProtocolConfig`.
        **overrides: fields of :class:`ProtocolConfig`.

    Raises:
        ValueError: unknown preset, task, construction, field or backend, a value out of
            range, or a backend that cannot run on the device.
        TypeError: a value of the wrong type (a float where a count is expected, ...).
    """
    from schurfast.tasks import TASKS, _check_float, _check_int
    from schurfast.training import LR_SCHEDULES, _check_device, _check_seeds

    if isinstance(preset, ProtocolConfig):
        cfg = preset
    elif preset in PRESETS:
        cfg = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")

    names = {f.name for f in dataclasses.fields(ProtocolConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; expected fields of ProtocolConfig")
    given = dict(overrides)
    if isinstance(given.get("device"), torch.device):
        given["device"] = str(given["device"])
    for key in ("tasks", "seeds", "alphas", "copy_constructions"):
        if key in given:
            given[key] = _as_tuple(given[key], key)
    cfg = dataclasses.replace(cfg, **given)

    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad or not cfg.tasks:
        raise ValueError(f"unknown task(s) {bad}; expected a non-empty choice of {list(TASKS)}")
    _check_distinct(cfg.tasks, "tasks")
    bad = [c for c in cfg.copy_constructions if c not in COPY_CONSTRUCTIONS]
    if bad:
        raise ValueError(f"unknown construction(s) {bad}; expected {list(COPY_CONSTRUCTIONS)}")
    _check_distinct(cfg.copy_constructions, "copy_constructions")
    if "copy" in cfg.tasks and not cfg.copy_constructions:
        raise ValueError(f"the copy task needs at least one of {list(COPY_CONSTRUCTIONS)}")
    if cfg.init not in DENSE_INITS:
        raise ValueError(f"init must be one of {list(DENSE_INITS)}, got {cfg.init!r}")
    _check_seeds(cfg.seeds)  # as train checks them
    if not cfg.alphas:
        raise ValueError("alphas must hold at least one threshold, got none")
    for k, alpha in enumerate(cfg.alphas):
        # at 0 every eigenvalue is leading and the RC and CC blocks are empty
        _check_float(alpha, f"alphas[{k}]", 0.0, 1.0, low_open=True)
    _check_distinct(cfg.alphas, "alphas")

    positive = ("epochs", "batches_per_epoch", "batch_size", "heldout_size", "hidden_size")
    for key in (*positive, "train_eval_size", "copy_hidden_size", "max_batch_bytes"):
        _check_int(getattr(cfg, key), key)
    for key in ("controls", "control_seed"):
        _check_int(getattr(cfg, key), key, 0)
    optional = ("copy_max_steps", "copy_warmup_replay_steps", "copy_warmup_max_steps")
    for key in (*optional, "train_threads"):
        if getattr(cfg, key) is not None:
            _check_int(getattr(cfg, key), key)
    # the normal construction pairs hidden units into 2 x 2 blocks
    if cfg.init == "normal" and cfg.hidden_size % 2 and set(cfg.tasks) - {"copy"}:
        raise ValueError(f"init 'normal' needs an even hidden_size, got {cfg.hidden_size}")
    if "copy" in cfg.tasks and "dense-normal" in cfg.copy_constructions:
        if cfg.copy_hidden_size % 2:
            raise ValueError(
                f"the copy construction dense-normal needs an even copy_hidden_size, got "
                f"{cfg.copy_hidden_size}"
            )
    _check_float(cfg.lr, "lr", 0.0, low_open=True)
    for key in ("copy_target", "copy_warmup_target", "copy_solved"):
        if getattr(cfg, key) is not None:
            _check_float(getattr(cfg, key), key, 0.0, 1.0)
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {cfg.lr_schedule!r}"
        )
    if not isinstance(cfg.task_params, dict):
        raise TypeError(
            f"task_params must be a dict of task name to parameters, got "
            f"{type(cfg.task_params).__name__}"
        )
    bad = [t for t in cfg.task_params if t not in TASKS]
    if bad:
        raise ValueError(f"task_params names unknown task(s) {bad}; expected {list(TASKS)}")
    for name in cfg.tasks:
        _task(name, cfg)  # the task's own checks of its parameters
    if not isinstance(cfg.device, str):
        raise TypeError(f"device must be a str, 'cpu' or 'cuda', got {type(cfg.device).__name__}")
    _check_device(cfg.device)  # as train checks it
    _check_backend(cfg.backend, cfg.device)
    return cfg


def _as_tuple(value: Any, name: str) -> tuple:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        hint = f"; for one write {name}=({value!r},)" if not isinstance(value, bytes) else ""
        raise TypeError(
            f"{name} must be a list or tuple, got {type(value).__name__} {value!r}{hint}"
        )
    return tuple(value)


def _check_distinct(values: tuple, name: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"{name} must be distinct; repeated: {repeated}")


def model_specs(cfg: ProtocolConfig) -> list[ModelSpec]:
    """Every model of a configuration, in the fixed order used for all tables."""
    specs = []
    for task in cfg.tasks:
        if task == "copy":
            kinds = [_split_construction(c) for c in cfg.copy_constructions]
            width = cfg.copy_hidden_size
        else:
            kinds, width = [("dense", cfg.init)], cfg.hidden_size
        for construction, init in kinds:
            for seed in cfg.seeds:
                specs.append(ModelSpec(task, construction, init, width, seed))
    return specs


def _split_construction(label: str) -> tuple[str, str | None]:
    if label == "cayley":
        return "cayley", None
    construction, init = label.split("-", 1)
    return construction, init


def _check_backend(backend: str, device: str) -> None:
    # the same rules as schurfast.rollout applies at the first evaluation, checked before training
    from schurfast.rollout import BACKENDS, _triton_interpreted

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    on_cuda = device.startswith("cuda")
    if backend == "cpu" and on_cuda:
        raise ValueError(f"backend 'cpu' needs device 'cpu', got {device!r}")
    if backend == "triton" and not on_cuda:
        if not _triton_interpreted():
            raise ValueError(
                f"backend 'triton' needs device 'cuda' (or TRITON_INTERPRET=1 on a CPU), "
                f"got {device!r}"
            )


def check_writable(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and prove a file can be written there; nothing is removed.

    Raises:
        ValueError: ``out`` is a file, or cannot be created or written.
    """
    if not str(out).strip():
        raise ValueError("output directory must be a path, got an empty one")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(
            f"output directory {str(out)!r} is not writable ({err.strerror})"
        ) from None
    return out


OWNER_FILE = "owner.json"


def _claim(out: Path, command: str, model_sha256: str | None = None) -> None:
    """Record in ``out`` which command writes there, and refuse a directory another one owns.

    ``run`` continues any run of its own (a changed option recomputes what depends on it);
    ``ablate`` only its own ablation of the same model. The claim is written before the first
    unit, so an interrupted command is recognised when it is run again.
    """
    owner = {"command": command}
    if command == "ablate":
        owner["model_sha256"] = model_sha256
    path = out / OWNER_FILE
    try:
        found = json.loads(path.read_text()) if path.is_file() else _owner_from_tables(out)
    except (OSError, ValueError):
        found = {"command": f"unknown (an unreadable {OWNER_FILE})"}
    if found is None:
        write_text(path, json.dumps(owner) + "\n")
        return
    if found == owner:
        return
    if not isinstance(found, dict):
        found = {"command": f"unknown (a {OWNER_FILE} that is not a JSON object)"}
    if found.get("command") == "ablate" and command == "ablate":
        held = f"the ablation of another model (sha256 {str(found.get('model_sha256'))[:12]})"
    elif found.get("command") in ("run", "ablate"):
        held = f"the files of `schurfast {found['command']}`"
    else:
        held = f"the files of an {found.get('command', 'unknown command')}"
    raise ValueError(
        f"output directory {str(out)!r} holds {held}; {command} would replace its tables: "
        "choose another directory"
    )


def _owner_from_tables(out: Path) -> dict[str, Any] | None:
    # a directory written before owner files existed: ablate's model table names its source
    try:
        models = pd.read_parquet(out / "models.parquet")
    except (OSError, ValueError):
        return None
    if "source" not in models.columns:
        return {"command": "run"}
    return {"command": "ablate", "model_sha256": str(models["checkpoint_sha256"].iloc[0])}


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the new one."""
    _atomic_write(path, lambda p: p.write_text(text))


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Write ``df`` (without its index) to a parquet file at ``path``, atomically."""
    _atomic_write(path, lambda p: df.to_parquet(p, index=False))


def _read_npz(path: Path, expected: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
    """The named arrays of an ``.npz`` file, each checked against ``(shape, dtype kinds)``.

    Raises:
        KeyError: an array is missing. ValueError: one has another shape or kind of dtype.
    """
    # opened here, so that a damaged archive does not leave the file open
    with open(path, "rb") as f, np.load(f) as z:
        arrays = {k: z[k] for k in expected}
    for key, (shape, kinds) in expected.items():
        a = arrays[key]
        if a.shape != shape or a.dtype.kind not in kinds:
            raise ValueError(
                f"{key} is {a.dtype} {list(a.shape)}, expected {list(shape)} of kind {kinds!r}"
            )
    return arrays


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    _atomic_write(path, write)


class _Units:
    """Finished units under ``DIR/units``, counted, with a hook called after each new one."""

    def __init__(self, out: Path, hook: UnitHook | None):
        self.root = out / "units"
        self.hook = hook
        self.computed: dict[str, int] = {}
        self.reused: dict[str, int] = {}

    def path(self, kind: str, name: str) -> Path:
        return self.root / kind / name

    def reuse(self, kind: str) -> None:
        self.reused[kind] = self.reused.get(kind, 0) + 1

    def read(self, path: Path, reader: Callable[[Path], Any]) -> Any:
        """``reader(path)`` for a stored unit; None when it is missing or cannot be read.

        An unreadable unit (a damaged disk, a hand-edited file) is moved aside to
        ``NAME.unreadable`` and computed again.
        """
        if not path.exists():
            return None
        try:
            if not path.is_file():
                raise IsADirectoryError(f"{path.name} is not a file")
            return reader(path)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
            aside = path.with_name(path.name + ".unreadable")
            os.replace(path, aside)
            logger.warning(
                "unit %s could not be read (%s: %s); moved to %s and computed again",
                path,
                type(err).__name__,
                err,
                aside.name,
            )
            return None

    def done(self, kind: str, path: Path) -> None:
        self.computed[kind] = self.computed.get(kind, 0) + 1
        if self.hook is not None:
            self.hook(kind, path)


def _task(name: str, cfg: ProtocolConfig):
    from schurfast.tasks import make_task

    return make_task(name, **cfg.task_params.get(name, {}))


def _train_key(spec: ModelSpec, cfg: ProtocolConfig, task) -> dict[str, Any]:
    is_copy = spec.task == "copy"
    return {
        "task": spec.task,
        "task_params": task.params,
        "construction": spec.construction,
        "init": spec.init,
        "hidden_size": spec.hidden_size,
        "seed": spec.seed,
        # the seeds of a group train as one batched model
        "trained_with": list(cfg.seeds),
        "epochs": cfg.epochs,
        "batches_per_epoch": cfg.batches_per_epoch,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "lr_schedule": cfg.lr_schedule,
        "eval_size": cfg.train_eval_size,
        # the thread count can change the order of float reductions, so it is part of the key
        "threads": cfg.train_threads,
        "target": cfg.copy_target if is_copy else None,
        "max_steps": cfg.copy_max_steps if is_copy else None,
        "warmup": _warmup_key(cfg) if is_copy else None,
        "device": cfg.device,
    }


def _warmup_key(cfg: ProtocolConfig) -> dict[str, Any] | None:
    if cfg.copy_warmup_replay_steps is None:
        return None
    return {
        "replay_steps": cfg.copy_warmup_replay_steps,
        "target": cfg.copy_warmup_target,
        "max_steps": cfg.copy_warmup_max_steps,
    }


def _train_models(cfg, specs, tasks, units, progress):
    """Every model of ``specs`` from its checkpoint, training the groups that lack one."""
    from schurfast.checkpoints import load_checkpoint

    keys = [_train_key(spec, cfg, tasks[spec.task]) for spec in specs]
    paths = [
        units.path("models", f"{spec.name}_{_digest(key)}.safetensors")
        for spec, key in zip(specs, keys, strict=True)
    ]

    # the seeds of one (task, construction, width) train together, in one batched call
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.task, spec.construction, spec.init, spec.hidden_size), []).append(i)
    stored = {
        path: units.read(path, _checkpoint_unit(key, required=True))
        for path, key in zip(paths, keys, strict=True)
    }
    missing = [m for m in groups.values() if any(stored[paths[i]] is None for i in m)]
    for path in paths:
        if stored[path] is not None:
            units.reuse("models")

    bar = tqdm(total=sum(map(len, missing)), desc="train", unit="model", disable=not progress)
    for members in missing:
        spec = specs[members[0]]
        bar.set_postfix_str(f"{spec.task} {spec.label} H={spec.hidden_size}")
        with _torch_threads(cfg.train_threads):
            _train_group(
                cfg,
                [specs[i] for i in members],
                [keys[i] for i in members],
                [paths[i] for i in members],
                tasks[spec.task],
                units,
                progress,
            )
        bar.update(len(members))
    bar.close()

    models, rows = [], []
    for spec, path in zip(specs, paths, strict=True):
        model, meta = stored[path] or load_checkpoint(path)
        info = getattr(model, "train_info", None) or meta.get("train_info") or {}
        held = info.get("heldout_metric")
        solved = None if spec.task != "copy" or held is None else bool(held >= cfg.copy_solved)
        models.append(model.cpu().eval())
        rows.append(
            {
                "model": spec.name,
                "task": spec.task,
                "construction": spec.label,
                "hidden_size": spec.hidden_size,
                "seed": spec.seed,
                "steps": info.get("steps"),
                "final_loss": info.get("final_loss"),
                "heldout_metric": held,
                "solved": solved,
                "train_wall_s": info.get("wall_s"),
                "checkpoint": str(path.relative_to(units.root.parent)),
                "checkpoint_sha256": file_sha256(path),
            }
        )
    return models, pd.DataFrame(rows)


@contextlib.contextmanager
def _torch_threads(n: int | None):
    # the matrices are small: on a few cores one thread avoids contention between threads
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_group(cfg, specs, keys, paths, task, units, progress) -> None:
    """Train the seeds of one kind together and store each model's checkpoint."""
    from schurfast.checkpoints import load_checkpoint, save_checkpoint
    from schurfast.tasks import make_task
    from schurfast.training import train

    spec, key = specs[0], keys[0]
    common = dict(
        hidden_size=spec.hidden_size,
        construction=spec.construction,
        init=spec.init or "orthogonal",
        seeds=[s.seed for s in specs],
        epochs=cfg.epochs,
        batches_per_epoch=cfg.batches_per_epoch,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_schedule=cfg.lr_schedule,
        device=cfg.device,
        quiet=not progress,
        eval_n=cfg.train_eval_size,
    )

    # copy warm-up: the same task with a short replay, its models a unit of their own
    start = None
    if key["warmup"] is not None:
        warm = key["warmup"]
        # the warm-up depends on everything but the second stage's target and budget
        warm_keys = [
            {**{f: v for f, v in k.items() if f not in ("target", "max_steps")}, "stage": 1}
            for k in keys
        ]
        warm_paths = [
            units.path("warmup", f"{s.name}_{_digest(k)}.safetensors")
            for s, k in zip(specs, warm_keys, strict=True)
        ]
        # warm-ups stored before they recorded their key are trusted by their file name
        warm_units = [_checkpoint_unit(k, required=False) for k in warm_keys]
        stored = [units.read(p, r) for p, r in zip(warm_paths, warm_units, strict=True)]
        if all(unit is not None for unit in stored):
            for _ in warm_paths:
                units.reuse("warmup")
            start = [model for model, _ in stored]
        else:
            params = {**task.params, "replay_steps": warm["replay_steps"]}
            params["metric_steps"] = warm["replay_steps"]
            short = make_task(task.name, **params)
            trained = train(short, target=warm["target"], max_steps=warm["max_steps"], **common)
            _store(trained, warm_paths, units, "warmup", save_checkpoint, warm_keys)
            start = [load_checkpoint(p)[0] for p in warm_paths]

    extra = {} if start is None else {"init_from": start}
    trained = train(task, target=key["target"], max_steps=key["max_steps"], **common, **extra)
    _store(trained, paths, units, "models", save_checkpoint, keys)


def _checkpoint_unit(key: dict[str, Any], *, required: bool) -> Callable[[Path], Any]:
    """A reader of a stored checkpoint that refuses one trained under another key."""
    from schurfast.checkpoints import load_checkpoint

    expected = json.loads(json.dumps(key))

    def read(path: Path) -> tuple[Any, dict[str, Any]]:
        model, meta = load_checkpoint(path)
        if (required or "config" in meta) and meta.get("config") != expected:
            raise ValueError("its stored configuration is not the one its name stands for")
        return model, meta

    return read


def _store(models, paths, units, kind, save_checkpoint, keys=None) -> None:
    for k, (model, path) in enumerate(zip(models, paths, strict=True)):
        # a checkpoint already on disk is kept: results always come from the stored file
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(model.cpu(), path, **({} if keys is None else {"config": keys[k]}))
        units.done(kind, path)


def _schur_group(W_hh: torch.Tensor, hashes: list[str], alphas, units: _Units):
    """Ordered Schur forms and all subset variants of a stack of ``W_hh [M, H, H]``."""
    from schurfast.ablation import ALL_SUBSETS, ablation_variants
    from schurfast.schur import ordered_schur

    H = W_hh.shape[-1]
    schur_key = _digest({"checkpoints": hashes})
    schur_path = units.path("schur", f"H{H}_{schur_key}.npz")
    var_key = _digest({"schur": schur_key, "alphas": list(alphas), "subsets": ALL_SUBSETS})
    var_path = units.path("variants", f"H{H}_{var_key}.npz")
    table_path = var_path.with_suffix(".parquet")

    F = None
    M = W_hh.shape[0]
    expected = {
        "eigenvalues": ((M, H), "c"),
        "moduli": ((M, H), "f"),
        "block_sizes": ((M, H), "iu"),
    }
    expected |= {"refused": ((M,), "iub"), "status": ((M,), "U")}
    spectrum = units.read(schur_path, lambda p: _read_npz(p, expected))
    if spectrum is not None:
        units.reuse("schur")
    else:
        F = ordered_schur(W_hh)
        spectrum = {
            "eigenvalues": np.asarray(F.eigenvalues),
            "moduli": np.asarray(F.moduli),
            "block_sizes": np.asarray(F.block_sizes),
            "refused": np.asarray(F.refused).reshape(-1),
            "status": np.asarray(F.status).reshape(-1).astype(str),
        }
        _write_npz(schur_path, **spectrum)
        units.done("schur", schur_path)

    table = units.read(table_path, pd.read_parquet)
    stored = None
    if table is not None:
        stored = units.read(var_path, lambda p: _finite_variants(p, (len(table), H, H)))
    if stored is not None:
        W = stored
        units.reuse("variants")
    else:
        # the Schur form is deterministic, so recomputing it for new alphas gives the stored one
        if F is None:
            F = ordered_schur(W_hh)
        W, table = ablation_variants(F, ALL_SUBSETS, list(alphas))
        W = W.numpy() if isinstance(W, torch.Tensor) else np.asarray(W)
        table = table.reset_index(drop=True)
        write_parquet(table_path, table)
        _write_npz(var_path, W=W)
        units.done("variants", var_path)
    return spectrum, W, table


def _finite_variants(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    W = _read_npz(path, {"W": (shape, "f")})["W"]
    if W.dtype != np.float64 or not np.isfinite(W).all():
        raise ValueError(f"W must hold finite float64 numbers, got {W.dtype}")
    return W


@dataclass(frozen=True)
class _Weights:
    """The fixed parts of one trained network, and its ``W_hh`` in float64."""

    W_hh: np.ndarray
    W_xh: torch.Tensor
    W_hy: torch.Tensor
    b: torch.Tensor | None
    c: torch.Tensor | None


def _weights(model) -> _Weights:
    def grab(t):
        return None if t is None else t.detach().to("cpu", torch.float32).clone()

    with torch.no_grad():
        return _Weights(
            W_hh=model.W_hh.detach().cpu().double().numpy(),
            W_xh=grab(model.W_xh),
            W_hy=grab(model.W_hy),
            b=grab(model.b),
            c=grab(model.c),
        )


def _variant_rows(table: pd.DataFrame, local: int, controls: int) -> pd.DataFrame:
    """The subset variants of one matrix followed by their matched-norm controls."""
    rows = table[table["matrix"] == local].copy()
    rows["source"] = rows.index.to_numpy()
    rows["kind"] = "ablation"
    rows["draw"] = -1
    single = rows[rows["subset"].isin(BLOCKS)]
    ctrl = single.loc[single.index.repeat(controls)].copy()
    ctrl["kind"] = "control"
    ctrl["draw"] = np.tile(np.arange(controls), len(single))
    cols = ["source", "kind", "subset", "alpha", "draw", "n_R", "delta_norm", "mass"]
    both = pd.concat([rows[cols], ctrl[cols]], ignore_index=True)
    return both.sort_values("alpha", kind="stable", ignore_index=True)


def _control_matrix(W_hh: np.ndarray, norm: float, key: tuple[int, ...]) -> np.ndarray:
    # an isotropic Gaussian direction scaled to the Frobenius norm of the matched ablation
    G = np.random.default_rng(list(key)).standard_normal(W_hh.shape)
    return W_hh + norm * G / np.linalg.norm(G)


def _evaluate_model(weights, rows, W_var, task, batch, sha, cfg, units, bar):
    """Metric and FVU of every variant of one model, in chunks that are each a unit."""
    from schurfast.rollout import rollout

    # the reference backend keeps hidden states, so budget for y and h of every variant
    B, L, n_out = batch.y.shape
    H = weights.W_hh.shape[-1]
    chunk = max(1, cfg.max_batch_bytes // (4 * B * L * (H + n_out)))
    eval_cfg = {
        "checkpoint": sha,
        "task": task.name,
        "task_params": task.params,
        "heldout_size": cfg.heldout_size,
        "device": cfg.device,
        "backend": cfg.backend,
        "control_seed": cfg.control_seed,
    }
    # seeds of the control draws: one stream per (matrix, alpha, block, draw), keyed by the
    # matrix itself so that retraining to the same weights draws the same controls
    model_seed = int(hashlib.sha256(weights.W_hh.tobytes()).hexdigest()[:8], 16)

    device = torch.device(cfg.device)
    x = batch.x.to(device)
    fixed = {
        "W_xh": weights.W_xh.to(device),
        "W_hy": weights.W_hy.to(device),
        "b": None if weights.b is None else weights.b.to(device),
        "c": None if weights.c is None else weights.c.to(device),
    }

    # chunks never mix thresholds, so a new alpha leaves the evaluated ones valid
    alpha = rows["alpha"].to_numpy()
    edges = [0, *np.flatnonzero(alpha[1:] != alpha[:-1]) + 1, len(rows)]
    spans = [
        (start, min(start + chunk, stop))
        for lo, stop in zip(edges[:-1], edges[1:], strict=True)
        for start in range(lo, stop, chunk)
    ]

    metric, fvu = [], []
    for start, stop in spans:
        part = rows.iloc[start:stop]
        desc = part[["kind", "subset", "alpha", "draw"]].to_dict("records")
        key = _digest({**eval_cfg, "variants": desc})
        path = units.path("eval", f"{task.name}_{sha[:12]}_{key}.npz")

        n = stop - start
        expected = {"metric": ((n,), "f"), "fvu": ((n,), "f")}
        stored = units.read(path, functools.partial(_read_npz, expected=expected))
        if stored is not None:
            m, f = stored["metric"], stored["fvu"]
            units.reuse("eval")
        else:
            mats = []
            for r in part.itertuples():
                if r.kind == "ablation":
                    mats.append(W_var[r.source])
                else:
                    seed = (
                        cfg.control_seed,
                        model_seed,
                        round(r.alpha * 1e6),
                        BLOCKS.index(r.subset),
                        r.draw,
                    )
                    mats.append(_control_matrix(weights.W_hh, r.delta_norm, seed))
            W = torch.as_tensor(np.stack(mats), dtype=torch.float32, device=device)
            with torch.no_grad():
                y = rollout(
                    W,
                    fixed["W_xh"],
                    fixed["W_hy"],
                    x,
                    b=fixed["b"],
                    c=fixed["c"],
                    backend=cfg.backend,
                ).cpu()
            m = np.asarray(task.metric(y, batch), dtype=np.float64)
            f = np.asarray(task.fvu(y, batch), dtype=np.float64)
            _write_npz(path, metric=m, fvu=f)
            units.done("eval", path)
        metric.append(m)
        fvu.append(f)
        bar.update(len(part))
    return np.concatenate(metric), np.concatenate(fvu)


def _finish_table(df: pd.DataFrame) -> pd.DataFrame:
    """Delta against the intact rebuilt matrix of the same model and alpha, and S."""
    intact = df[(df["kind"] == "ablation") & (df["subset"] == "none")]
    ref = intact.set_index(["model", "alpha"])
    keys = pd.MultiIndex.from_frame(df[["model", "alpha"]])
    df["metric_intact"] = ref["metric"].reindex(keys).to_numpy()
    df["delta"] = df["metric"] - df["metric_intact"]
    df["delta_fvu"] = df["fvu"] - ref["fvu"].reindex(keys).to_numpy()

    # S is undefined when less was removed than the float32 rollout can resolve
    mass = df["mass"].to_numpy()
    S = np.full(len(df), np.nan)
    np.divide(df["delta"].to_numpy(), mass, out=S, where=mass >= MIN_MASS)
    df["S"] = S
    S_fvu = np.full(len(df), np.nan)
    np.divide(df["delta_fvu"].to_numpy(), mass, out=S_fvu, where=mass >= MIN_MASS)
    df["S_fvu"] = S_fvu
    return df


def run(
    preset: str | ProtocolConfig = "quick",
    out: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    on_unit: UnitHook | None = None,
    report: bool = True,
    **overrides: Any,
) -> ProtocolResult:
    """Train, decompose, ablate, evaluate and report; the Python side of ``schurfast run``.

    Args:
        preset: ``"quick"``, ``"paper"`` or a :class:`ProtocolConfig`.
        out: output directory, by default ``runs/<preset>``; finished units found there are
            reused.
        progress: show progress bars.
        on_unit: called as ``on_unit(kind, path)`` after each new unit is on disk.
        report: write ``summary.md``, ``report.md`` and figures after the tables.
        **overrides: fields of :class:`ProtocolConfig` that replace the preset's.

    Returns:
        The tables written (``results.parquet``, ``models.parquet``) and the report's path.

    Raises:
        ValueError: a bad option or an unwritable ``out``, before any training.

    Example:
        >>> res = run("quick", "runs/quick")  # doctest: +SKIP
        >>> rc = res.results.query("kind == 'ablation' and subset == 'RC'")  # doctest: +SKIP
        >>> rc.groupby("task")[["delta", "S"]].mean()  # doctest: +SKIP
    """
    cfg = resolve_config(preset, **overrides)
    out = check_writable(out if out is not None else Path("runs") / cfg.name)
    _claim(out, "run")
    units = _Units(out, on_unit)
    specs = model_specs(cfg)
    tasks = {name: _task(name, cfg) for name in cfg.tasks}

    t0 = time.perf_counter()
    logger.info("train: %d models (%s preset) in %s", len(specs), cfg.name, out)
    models, model_table = _train_models(cfg, specs, tasks, units, progress)
    timings = {"train_s": time.perf_counter() - t0}

    return _decompose_and_evaluate(
        cfg, specs, models, model_table, tasks, out, units, timings, progress, report
    )


def _decompose_and_evaluate(
    cfg, specs, models, model_table, tasks, out, units, timings, progress, report
) -> ProtocolResult:
    from schurfast.tasks import HELDOUT_SEED

    # one batched Schur call per width: matrices of different sizes cannot share a batch
    t0 = time.perf_counter()
    weights = [_weights(m) for m in models]
    hashes = model_table["checkpoint_sha256"].tolist()
    groups: dict[int, list[int]] = {}
    for g, spec in enumerate(specs):
        groups.setdefault(spec.hidden_size, []).append(g)
    schur: dict[int, tuple] = {}
    spectra, per_model = [], {}
    for H, members in groups.items():
        W_hh = torch.as_tensor(np.stack([weights[g].W_hh for g in members]))
        spectrum, W_var, table = _schur_group(W_hh, [hashes[g] for g in members], cfg.alphas, units)
        schur[H] = (members, W_var, table)
        names = [specs[g].name for g in members]
        spectra.append(_spectrum_table(names, spectrum))
        for j, name in enumerate(names):
            per_model[name] = {
                "rho": float(spectrum["moduli"][j].max()),
                "schur_refused": int(spectrum["refused"][j]),
                "schur_status": str(spectrum["status"][j]),
            }
    spectra = pd.concat(spectra, ignore_index=True)
    model_table = model_table.assign(
        **{
            k: [per_model[n][k] for n in model_table["model"]]
            for k in next(iter(per_model.values()))
        }
    )
    timings["schur_s"] = time.perf_counter() - t0
    logger.info(
        "schur: %d matrices in %d batched call(s), %d subset variants",
        len(specs),
        len(groups),
        sum(len(v[2]) for v in schur.values()),
    )

    t0 = time.perf_counter()
    frames = []
    for name, task in tasks.items():
        batch = task.sample(cfg.heldout_size, seed=HELDOUT_SEED)
        todo = []
        for g, spec in enumerate(specs):
            if spec.task == name:
                members, W_var, table = schur[spec.hidden_size]
                todo.append((g, _variant_rows(table, members.index(g), cfg.controls), W_var))
        total = sum(len(rows) for _, rows, _ in todo)
        logger.info(
            "evaluate %s: %d variants of %d model(s) on %d held-out trials",
            name,
            total,
            len(todo),
            cfg.heldout_size,
        )
        with tqdm(
            total=total, desc=f"evaluate {name}", unit="variant", disable=not progress
        ) as bar:
            for g, rows, W_var in todo:
                metric, fvu = _evaluate_model(
                    weights[g], rows, W_var, task, batch, hashes[g], cfg, units, bar
                )
                spec = specs[g]
                frames.append(
                    rows.assign(
                        task=name,
                        construction=spec.label,
                        hidden_size=spec.hidden_size,
                        seed=spec.seed,
                        model=spec.name,
                        metric_name=task.metric_name,
                        metric=metric,
                        fvu=fvu,
                    )
                )
    timings["evaluate_s"] = time.perf_counter() - t0

    results = _finish_table(pd.concat(frames, ignore_index=True))[RESULT_COLUMNS]
    write_parquet(out / "results.parquet", results)
    write_parquet(out / "models.parquet", model_table)
    write_parquet(out / "spectra.parquet", spectra)
    manifest = _manifest(cfg, timings, model_table, units)
    write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    report_path = out / "report.md"
    if report:
        from schurfast.report import build_report

        report_path = build_report(out)
    return ProtocolResult(out, results, model_table, report_path, units.computed, units.reused)


def _spectrum_table(names: list[str], spectrum: dict[str, np.ndarray]) -> pd.DataFrame:
    lam = spectrum["eigenvalues"]
    M, H = lam.shape
    return pd.DataFrame(
        {
            "model": np.repeat(names, H),
            "index": np.tile(np.arange(H), M),
            "modulus": spectrum["moduli"].reshape(-1),
            "real": lam.real.reshape(-1),
            "imag": lam.imag.reshape(-1),
            "block_size": spectrum["block_sizes"].reshape(-1).astype(np.int64),
        }
    )


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in (
        "schurfast",
        "torch",
        "numpy",
        "scipy",
        "pandas",
        "pyarrow",
        "matplotlib",
        "safetensors",
        "tqdm",
        "triton",
        "scipy-openblas32",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _manifest(cfg, timings, model_table, units) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "command": sys.argv,
        "versions": _versions(),
        "platform": {
            "machine": platform.machine(),
            "system": platform.system(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name() if cfg.device != "cpu" else None,
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "units_computed": units.computed,
        "units_reused": units.reused,
        "checkpoints": dict(
            zip(model_table["checkpoint"], model_table["checkpoint_sha256"], strict=True)
        ),
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


RESULT_COLUMNS = [
    "task",
    "construction",
    "hidden_size",
    "seed",
    "model",
    "alpha",
    "kind",
    "subset",
    "draw",
    "n_R",
    "delta_norm",
    "mass",
    "metric_name",
    "metric",
    "fvu",
    "metric_intact",
    "delta",
    "delta_fvu",
    "S",
    "S_fvu",
]


def load_model(
    path: str | os.PathLike,
    *,
    rnn_prefix: str | None = None,
    readout_prefix: str | None = None,
):
    """A :class:`~schurfast.models.TanhRNN` from a schurfast checkpoint or a state dict.

    A state dict (``torch.save``d, read with ``weights_only=True``) must hold one one-layer
    ``nn.RNN`` (keys ``<rnn_prefix>weight_ih_l0``, ``weight_hh_l0``, optional ``bias_ih_l0``,
    ``bias_hh_l0``) and one linear readout (``<readout_prefix>weight`` of shape ``[O, H]``,
    optional ``bias``). Prefixes are found automatically when only one choice fits.

    Raises:
        ValueError: missing, corrupt or ambiguous file, or one that is not a one-layer RNN.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    # torch.save writes a zip archive; a damaged one still starts with the zip signature
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if is_zip or zipfile.is_zipfile(path):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"{str(path)!r} could not be read as a state dict with weights_only=True "
                f"({type(err).__name__}); save model.state_dict(), not the module"
            ) from None
        return _model_from_state_dict(state, path, rnn_prefix, readout_prefix)

    from schurfast.checkpoints import load_checkpoint

    try:
        model, _ = load_checkpoint(path)
    except Exception as err:
        raise ValueError(
            f"{str(path)!r} is neither a torch.save'd state dict nor a readable schurfast "
            f"checkpoint ({type(err).__name__}: {err})"
        ) from None
    return model


def _pick_prefix(candidates: list[str], given: str | None, what: str, option: str) -> str:
    if given is not None:
        # "head" names the module whose keys start with "head."
        for prefix in (given, given + "."):
            if prefix in candidates:
                return prefix
        raise ValueError(f"no {what} with prefix {given!r}; found prefixes {candidates}")
    if len(candidates) != 1:
        found = candidates or "none"
        raise ValueError(
            f"expected exactly one {what}, found prefixes {found}; name it with {option}"
        )
    return candidates[0]


def _model_from_state_dict(state, path: Path, rnn_prefix, readout_prefix):
    from schurfast.models import TanhRNN

    if isinstance(state, dict):
        nested = [k for k, v in state.items() if isinstance(v, dict)]
        if nested and not any(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(
                f"{str(path)!r} holds dicts under {nested}, not tensors; save the state dict "
                "itself (torch.save(model.state_dict(), path))"
            )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict of tensors")

    rnns = sorted(k[: -len("weight_hh_l0")] for k in state if k.endswith("weight_hh_l0"))
    prefix = _pick_prefix(rnns, rnn_prefix, "RNN (keys ending in weight_hh_l0)", "--rnn-prefix")
    if prefix + "weight_ih_l0" not in state:
        raise ValueError(
            f"{str(path)!r} has {prefix}weight_hh_l0 but no {prefix}weight_ih_l0; an nn.RNN "
            "state dict holds both"
        )
    extra = [
        k for k in state if k.startswith(prefix) and k[len(prefix) :].endswith(("_l1", "_reverse"))
    ]
    if extra:
        raise ValueError(f"only one-layer unidirectional RNNs are supported; found {extra[0]!r}")
    W_ih, W_hh = state[prefix + "weight_ih_l0"], state[prefix + "weight_hh_l0"]
    if W_hh.dim() != 2 or W_hh.shape[0] != W_hh.shape[1]:
        raise ValueError(
            f"weight_hh_l0 must be square [H, H] as in a tanh nn.RNN, got "
            f"{list(W_hh.shape)} (a GRU or LSTM stacks gates; not supported)"
        )
    H = W_hh.shape[0]
    if W_ih.dim() != 2 or W_ih.shape[0] != H:
        raise ValueError(f"weight_ih_l0 must be [H, I] with H = {H}, got {list(W_ih.shape)}")

    rnn_keys = {prefix + k for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
    heads = sorted(
        k[: -len("weight")]
        for k, v in state.items()
        if k.endswith("weight") and k not in rnn_keys and v.dim() == 2 and v.shape[1] == H
    )
    head = _pick_prefix(
        heads, readout_prefix, f"linear readout (a 2-D weight [O, {H}])", "--readout-prefix"
    )
    W_hy = state[head + "weight"]
    has_bias = prefix + "bias_ih_l0" in state
    has_c = head + "bias" in state
    if has_bias != (prefix + "bias_hh_l0" in state):
        present = "bias_ih_l0" if has_bias else "bias_hh_l0"
        raise ValueError(
            f"{str(path)!r} has {prefix}{present} without its partner; an nn.RNN with biases "
            "holds both bias_ih_l0 and bias_hh_l0"
        )
    used = [k for k in state if k in rnn_keys or k in (head + "weight", head + "bias")]
    for key in used:
        tensor = state[key]
        if not tensor.is_floating_point():
            raise ValueError(f"{key} must hold real floating-point numbers, got {tensor.dtype}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{key} holds NaN or Inf")
        if not torch.isfinite(tensor.float()).all():
            raise ValueError(f"{key} holds values beyond the float32 range the model runs in")

    rnn = torch.nn.RNN(
        W_ih.shape[1], H, num_layers=1, nonlinearity="tanh", bias=has_bias, batch_first=True
    )
    readout = torch.nn.Linear(H, W_hy.shape[0], bias=has_c)
    try:
        rnn.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k in rnn_keys}, strict=True
        )
        readout.load_state_dict(
            {k[len(head) :]: v for k, v in state.items() if k in (head + "weight", head + "bias")},
            strict=True,
        )
    except RuntimeError as err:
        # torch lists every mismatch on the lines after its headline
        details = "; ".join(line.strip() for line in str(err).splitlines()[1:] if line.strip())
        raise ValueError(
            f"{str(path)!r}: the RNN or readout tensors do not fit together ({details})"
        ) from None
    return TanhRNN.from_torch(rnn, readout)


def _as_model(model, rnn_prefix, readout_prefix):
    from schurfast.models import TanhRNN

    if isinstance(model, (str, os.PathLike)):
        return load_model(model, rnn_prefix=rnn_prefix, readout_prefix=readout_prefix)
    if isinstance(model, TanhRNN):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        rnn, readout = model
        if not isinstance(rnn, torch.nn.RNN):
            raise TypeError(f"expected a torch.nn.RNN, got {type(rnn).__name__}")
        if rnn.nonlinearity != "tanh" or rnn.num_layers != 1 or rnn.bidirectional:
            raise ValueError(
                f"expected a one-layer unidirectional tanh nn.RNN, got nonlinearity="
                f"{rnn.nonlinearity!r}, num_layers={rnn.num_layers}, "
                f"bidirectional={rnn.bidirectional}"
            )
        return TanhRNN.from_torch(rnn, readout)
    raise TypeError(
        "expected a path, a TanhRNN or a (torch.nn.RNN, torch.nn.Linear) pair, got "
        f"{type(model).__name__}"
    )


def ablate_model(
    model,
    task: str | None = None,
    *,
    alphas: Sequence[float] = (0.9,),
    out: str | os.PathLike | None = None,
    controls: int = 16,
    heldout_size: int = 1024,
    device: str = "cpu",
    backend: str = "auto",
    task_params: dict[str, Any] | None = None,
    rnn_prefix: str | None = None,
    readout_prefix: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The ablation protocol on one trained network; the Python side of ``schurfast ablate``.

    Args:
        model: a checkpoint or state dict path (see :func:`load_model`), a
            :class:`~schurfast.models.TanhRNN`, or a ``(torch.nn.RNN, torch.nn.Linear)`` pair.
        task: the task the network was trained on; its held-out set is used. By default the
            task a model from ``schurfast.train`` records (kept in its checkpoint), with the
            task parameters it was trained with unless ``task_params`` are given.
        alphas: sector thresholds.
        out: when given, write the same files as :func:`run` there.
        controls: matched-norm random draws per single-block ablation.

    Returns:
        One row per variant, as in ``results.parquet``.

    Raises:
        ValueError: unknown task, no task given for a model that does not record one, or a
            model that does not fit its task.
    """
    from schurfast.tasks import TASKS

    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    net = _as_model(model, rnn_prefix, readout_prefix).cpu().eval()
    for name, tensor in net.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"the model's {name} holds NaN or Inf")
    recorded = (net.train_info or {}).get("config") or {}
    if task is None:
        task = recorded.get("task")
        if task not in TASKS:
            raise ValueError(
                "this model does not record the task it was trained on (only models from"
                " schurfast.train do); pass task= (--task on the command line)"
            )
    if task_params is None and recorded.get("task") == task:
        task_params = recorded.get("task_params")
    cfg = resolve_config(
        ProtocolConfig(name="ablate", tasks=(task,), seeds=(0,)),
        alphas=alphas,
        controls=controls,
        heldout_size=heldout_size,
        device=device,
        backend=backend,
        task_params={task: dict(task_params or {})},
    )
    if out is not None:
        out = check_writable(out)
    the_task = _task(task, cfg)

    H, n_in = net.W_xh.shape
    n_out = net.W_hy.shape[0]
    if (n_in, n_out) != (the_task.input_size, the_task.output_size):
        raise ValueError(
            f"the model has input size {n_in} and output size {n_out}, but task {task!r} has "
            f"{the_task.input_size} and {the_task.output_size}"
        )

    if isinstance(model, (str, os.PathLike)):
        name, sha = Path(model).stem, file_sha256(model)
    else:
        name = "model"
        h = hashlib.sha256()
        for t in net.state_dict().values():
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        sha = h.hexdigest()
    # a model from schurfast.train keeps its construction, seed and training record
    info = net.train_info or {}
    if info:
        init = net.init if net.construction == "dense" else None
        spec = ModelSpec(task, net.construction, init, H, int(info.get("seed", 0)))
    else:
        spec = ModelSpec(task, "user", None, H, 0)
    same_task = recorded.get("task") == task and (task_params or {}) == (
        recorded.get("task_params") or {}
    )
    held = info.get("heldout_metric") if same_task else None
    model_table = pd.DataFrame(
        [
            {
                "model": spec.name,
                "task": task,
                "construction": spec.label,
                "hidden_size": H,
                "seed": spec.seed,
                "steps": info.get("steps"),
                "heldout_metric": held,
                "solved": None if task != "copy" or held is None else bool(held >= cfg.copy_solved),
                "source": name,
                "checkpoint": str(model) if isinstance(model, (str, os.PathLike)) else "in memory",
                "checkpoint_sha256": sha,
            }
        ]
    )

    if out is not None:
        _claim(out, "ablate", sha)
    # without an output directory the units live in a scratch directory for this call only
    with tempfile.TemporaryDirectory(prefix="schurfast-ablate-") as scratch:
        where = out if out is not None else Path(scratch)
        res = _decompose_and_evaluate(
            cfg,
            [spec],
            [net],
            model_table,
            {task: the_task},
            where,
            _Units(where, None),
            {},
            progress,
            out is not None,
        )
    return res.results


def report(out: str | os.PathLike) -> Path:
    """Rebuild tables, figures and ``report.md`` from a run directory; ``schurfast report``.

    Raises:
        ValueError: ``out`` holds no results of a run.
    """
    from schurfast.report import build_report

    return build_report(out)
