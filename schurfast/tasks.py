"""Tasks that trained networks are probed on: copy, flipflop, sine and integration.

Every task draws ``(x, y, mask)`` batches from a generator of its own, seeded per call, so the
same seed always gives the same batch and no global random state is touched. Training streams,
the validation set used for early stopping and the held-out set come from different seeds:

- ``HELDOUT_SEED``: the held-out set every reported metric is computed on; training never
  draws from it.
- ``VALIDATION_SEED``: the set early stopping watches during training.
- training batches use seeds ``(seed, step, 1)``, which never coincide with either.

Metrics, over the entries where ``mask`` is true:

    FVU = sum (y_hat - y)^2 / sum (y - y_bar)^2,   y_bar the per-output mean over trials and time

and for the copy task the sign accuracy of the autonomous replay over its first 128 steps and
all output bits (chance 0.5).

Example:
    >>> task = make_task("flipflop")
    >>> batch = task.sample(4, seed=0)
    >>> tuple(batch.x.shape), tuple(batch.y.shape)
    ((4, 25, 3), (4, 25, 3))
    >>> task.metric(batch.y, batch)
    0.0
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

TASKS = ("copy", "flipflop", "sine", "integration")
HELDOUT_SEED = 20_261_203
VALIDATION_SEED = 20_261_204

Seed = int | Sequence[int]


class Batch(NamedTuple):
    """Trials ``x [n, L, I]``, ``y [n, L, O]`` (float32) and ``mask [n, L, O]`` (bool)."""

    x: Tensor
    y: Tensor
    mask: Tensor


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as a Python int in ``[minimum, maximum]``; numpy ints pass, bools do not."""
    if maximum is not None:
        top = "2**64 - 1" if maximum == 2**64 - 1 else str(maximum)
        expected = f"an int in [{minimum}, {top}]"
    else:
        expected = {0: "a non-negative int", 1: "a positive int"}.get(
            minimum, f"an int >= {minimum}"
        )
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {expected}, got {_describe(value)}")
    value = operator.index(value)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


def _check_float(
    value: Any,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite Python float in the given interval; bools and arrays do not pass."""
    left = "(" if low_open or low == -math.inf else "["
    right = ")" if high_open or high == math.inf else "]"
    interval = f"{left}{low:g}, {high:g}{right}"
    expected = "a finite number" + ("" if interval == "(-inf, inf)" else f" in {interval}")
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}, got {_describe(value)}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def _check_seed(seed: Any, name: str = "seed") -> int | tuple[int, ...]:
    """A non-negative int, or a non-empty sequence of them (numpy ``SeedSequence`` entropy)."""
    expected = f"{name} must be a non-negative int or a non-empty sequence of them"
    if isinstance(seed, Sequence) and not isinstance(seed, str | bytes):
        if not seed:
            raise ValueError(f"{expected}, got an empty {type(seed).__name__}")
        entries = []
        for s in seed:
            if isinstance(s, bool | np.bool_) or not isinstance(s, numbers.Integral):
                raise TypeError(f"{expected}, got an entry {_describe(s)}")
            if s < 0:
                raise ValueError(f"{expected}, got an entry {int(s)}")
            entries.append(operator.index(s))
        return tuple(entries)
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{expected}, got {_describe(seed)}")
    if seed < 0:
        raise ValueError(f"{expected}, got {int(seed)}")
    return operator.index(seed)


def _rng(seed: Seed) -> np.random.Generator:
    return np.random.default_rng(_check_seed(seed))


def _as_batch(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> Batch:
    return Batch(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)),
    )


def _check_batch(batch: Any) -> Batch:
    """``batch`` if it is a ``Batch`` of tensors, as ``Task.sample`` returns."""
    if not isinstance(batch, Batch):
        raise TypeError(f"batch must be a Batch (from task.sample), got {_describe(batch)}")
    for name, t in zip(Batch._fields, batch, strict=True):
        if not isinstance(t, Tensor):
            raise TypeError(f"batch.{name} must be a torch tensor, got {_describe(t)}")
    return batch


def _as_numpy(y_hat: Any) -> np.ndarray:
    if isinstance(y_hat, Tensor) and not y_hat.is_complex():
        return y_hat.detach().to("cpu", torch.float64).numpy()
    # None would become a NaN scalar
    if not isinstance(y_hat, Tensor) and y_hat is not None and not np.iscomplexobj(y_hat):
        try:
            return np.asarray(y_hat, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    dtype = getattr(y_hat, "dtype", None)
    got = type(y_hat).__name__ + ("" if dtype is None else f" of dtype {dtype}")
    raise TypeError(f"y_hat must be a real torch tensor or numpy array, got {got}")


class Task:
    """Common base: sampling checks and the batched metrics.

    Subclasses set ``name``, ``input_size``, ``output_size``, ``seq_len``, ``metric_name`` and
    implement ``_sample(n, rng)``.
    """

    name: str
    input_size: int
    output_size: int
    seq_len: int
    metric_name: str = "fvu"

    def __init__(self, **params: Any) -> None:
        self.params = params

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def sample(self, n: int, seed: Seed) -> Batch:
        """Draw ``n`` trials from a generator seeded with ``seed``.

        Args:
            n: number of trials.
            seed: a non-negative int or a sequence of them (numpy ``SeedSequence`` entropy).

        Returns:
            ``Batch(x [n, L, I], y [n, L, O], mask [n, L, O])``; the same seed gives the same
            batch.

        Raises:
            TypeError: ``n`` or ``seed`` is not an int (bools, floats and strings are not).
            ValueError: ``n < 1`` or a negative seed.
        """
        n = _check_int(n, "n")
        return self._sample(n, _rng(seed))

    def _sample(self, n: int, rng: np.random.Generator) -> Batch:
        raise NotImplementedError

    def _check(self, y_hat: Any, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        batch = _check_batch(batch)
        y_hat = _as_numpy(y_hat)
        y = batch.y.detach().cpu().double().numpy()
        mask = batch.mask.detach().cpu().numpy().astype(bool)
        if y_hat.shape[-3:] != y.shape or y_hat.ndim not in (3, 4):
            raise ValueError(
                f"y_hat must have shape {list(y.shape)} or [V, {', '.join(map(str, y.shape))}]"
                f" to match the batch, got {list(y_hat.shape)}"
            )
        return y_hat, y, mask

    def fvu(self, y_hat: Any, batch: Batch) -> float | np.ndarray:
        """Fraction of variance unexplained over the masked entries.

        Args:
            y_hat: predictions ``[B, L, O]`` or ``[V, B, L, O]`` (torch or numpy).
            batch: the batch they predict.

        Returns:
            a float for ``[B, L, O]``, a numpy array ``[V]`` for ``[V, B, L, O]``.

        Raises:
            TypeError: ``y_hat`` is not a real torch tensor or numpy array, or ``batch`` is not
                a ``Batch``.
            ValueError: a shape mismatch, a mask that selects nothing, or a target without
                variance over the masked entries (FVU is then undefined).
        """
        y_hat, y, mask = self._check(y_hat, batch)
        count = mask.sum(axis=(0, 1))
        if not count.any():
            raise ValueError("the batch mask selects no entries, FVU is undefined")

        # per-output mean over trials and time, masked entries only
        y_bar = np.where(count > 0, (y * mask).sum(axis=(0, 1)) / np.maximum(count, 1), 0.0)
        total = (((y - y_bar) * mask) ** 2).sum()
        if not total > 0:
            raise ValueError(
                f"the {self.name} batch's target has zero variance over the masked entries,"
                " FVU is undefined"
            )
        resid = (((y_hat - y) * mask) ** 2).sum(axis=(-3, -2, -1))
        out = resid / total
        return float(out) if y_hat.ndim == 3 else out

    def metric(self, y_hat: Any, batch: Batch) -> float | np.ndarray:
        """The task's measure (see ``metric_name``), batched like ``fvu``."""
        return self.fvu(y_hat, batch)


class CopyTask(Task):
    """Copy a sequence of binary symbols, then replay it periodically without input.

    ``n_symbols`` random symbols in {-1, +1}^bits are shown one per step; then the input is
    zero and the target is the same symbol sequence repeated for ``replay_steps`` steps. Loss
    and metric count the replay steps only. ``L = n_symbols + replay_steps``, ``I = O = bits``.
    The metric is the sign accuracy over the first ``metric_steps`` replay steps and all bits.

    Args:
        n_symbols: symbols in the sequence (default 8).
        bits: bits per symbol, the input and output size (default 8).
        replay_steps: steps of autonomous replay (default 128).
        metric_steps: replay steps counted by the accuracy (default 128, at most
            ``replay_steps``).
    """

    name = "copy"
    metric_name = "accuracy"

    def __init__(
        self, n_symbols: int = 8, bits: int = 8, replay_steps: int = 128, metric_steps: int = 128
    ) -> None:
        n_symbols = _check_int(n_symbols, "copy task: n_symbols")
        bits = _check_int(bits, "copy task: bits")
        replay_steps = _check_int(replay_steps, "copy task: replay_steps")
        # metric_steps counts replay steps, so it cannot exceed them
        metric_steps = _check_int(metric_steps, "copy task: metric_steps", maximum=replay_steps)
        super().__init__(
            n_symbols=n_symbols, bits=bits, replay_steps=replay_steps, metric_steps=metric_steps
        )
        self.input_size = self.output_size = bits
        self.seq_len = n_symbols + replay_steps

    def _sample(self, n: int, rng: np.random.Generator) -> Batch:
        S, bits, R = self.params["n_symbols"], self.params["bits"], self.params["replay_steps"]
        symbols = rng.choice(np.array([-1.0, 1.0]), size=(n, S, bits))

        x = np.zeros((n, S + R, bits))
        x[:, :S] = symbols
        y = np.zeros_like(x)
        y[:, S:] = symbols[:, np.arange(R) % S]
        mask = np.zeros(x.shape, dtype=bool)
        mask[:, S:] = True
        return _as_batch(x, y, mask)

    def metric(self, y_hat: Any, batch: Batch) -> float | np.ndarray:
        """Sign accuracy over the first ``metric_steps`` replay steps, batched like ``fvu``.

        A prediction (or variant) with a NaN in the counted window scores NaN, not a miss.
        """
        y_hat, y, _ = self._check(y_hat, batch)
        S, M = self.params["n_symbols"], self.params["metric_steps"]
        counted = y_hat[..., S : S + M, :]
        hits = np.sign(counted) == np.sign(y[..., S : S + M, :])
        out = np.where(
            np.isnan(counted).any(axis=(-3, -2, -1)), np.nan, hits.mean(axis=(-3, -2, -1))
        )
        return float(out) if y_hat.ndim == 3 else out


class FlipFlopTask(Task):
    """Each output holds the sign of the last pulse on its input channel.

    Each step, each channel carries a pulse with probability ``pulse_prob``, of sign +-1 with
    equal odds; otherwise zero. Before a channel's first pulse its target is 0 and masked out.
    ``I = O = bits``.

    Args:
        bits: channels (default 3).
        seq_len: trial length ``L`` (default 25).
        pulse_prob: per-step, per-channel pulse probability (default 0.1).
    """

    name = "flipflop"

    def __init__(self, bits: int = 3, seq_len: int = 25, pulse_prob: float = 0.1) -> None:
        bits = _check_int(bits, "flipflop task: bits")
        seq_len = _check_int(seq_len, "flipflop task: seq_len")
        pulse_prob = _check_float(pulse_prob, "flipflop task: pulse_prob", 0.0, 1.0, low_open=True)
        super().__init__(bits=bits, seq_len=seq_len, pulse_prob=pulse_prob)
        self.input_size = self.output_size = bits
        self.seq_len = seq_len

    def _sample(self, n: int, rng: np.random.Generator) -> Batch:
        L, bits = self.seq_len, self.params["bits"]
        pulses = rng.random((n, L, bits)) < self.params["pulse_prob"]
        signs = rng.choice(np.array([-1.0, 1.0]), size=(n, L, bits))
        x = np.where(pulses, signs, 0.0)

        # index of the latest pulse at or before each step, -1 before the first one
        steps = np.where(pulses, np.arange(L)[None, :, None], -1)
        last = np.maximum.accumulate(steps, axis=1)
        mask = last >= 0
        y = np.where(mask, np.take_along_axis(x, np.maximum(last, 0), axis=1), 0.0)
        return _as_batch(x, y, mask)


class SineTask(Task):
    """Generate a sine wave whose frequency a constant input level selects.

    Trial k draws an index j uniformly from ``len(frequencies)``; the input is the constant
    ``j / len(frequencies) + cue_offset`` for the whole trial and the target is
    ``sin(frequencies[j] * t)``, t = 1..L. ``I = O = 1``.

    Args:
        seq_len: trial length ``L`` (default 50).
        frequencies: angular frequencies in radians per step (default 8 values evenly spaced
            in [0.1, 0.6]).
        cue_offset: offset of the input level (default 0.25).
    """

    name = "sine"

    def __init__(
        self,
        seq_len: int = 50,
        frequencies: Sequence[float] = tuple(np.linspace(0.1, 0.6, 8).round(6).tolist()),
        cue_offset: float = 0.25,
    ) -> None:
        seq_len = _check_int(seq_len, "sine task: seq_len")
        if isinstance(frequencies, np.ndarray) and frequencies.ndim == 1:
            frequencies = frequencies.tolist()
        if not isinstance(frequencies, Sequence) or isinstance(frequencies, str | bytes):
            raise TypeError(
                "sine task: frequencies must be a sequence of numbers,"
                f" got {_describe(frequencies)}"
            )
        if not frequencies:
            raise ValueError("sine task: frequencies must hold at least one frequency, got none")
        freqs = tuple(
            _check_float(f, f"sine task: frequencies[{k}]") for k, f in enumerate(frequencies)
        )
        cue_offset = _check_float(cue_offset, "sine task: cue_offset")
        super().__init__(seq_len=seq_len, frequencies=freqs, cue_offset=cue_offset)
        self.input_size = self.output_size = 1
        self.seq_len = seq_len

    def _sample(self, n: int, rng: np.random.Generator) -> Batch:
        freqs = np.asarray(self.params["frequencies"])
        j = rng.integers(len(freqs), size=n)
        t = np.arange(1, self.seq_len + 1)

        level = j / len(freqs) + self.params["cue_offset"]
        x = np.broadcast_to(level[:, None, None], (n, self.seq_len, 1))
        y = np.sin(freqs[j][:, None] * t[None, :])[..., None]
        return _as_batch(x, y, np.ones(y.shape, dtype=bool))


class IntegrationTask(Task):
    """Context-dependent integration: sum the evidence stream the context selects.

    Two evidence streams ``mu_k + noise_std * N(0, 1)`` (channels 0 and 1), with per-trial
    biases ``mu_k`` uniform in ``[-bias_scale, bias_scale]``, and a one-hot context on channels
    2 and 3 held for the whole trial. The target is
    ``target_scale * sum_{s <= t} stream_c(s)`` for the selected stream c. ``I = 4``, ``O = 1``.

    Args:
        seq_len: trial length ``L`` (default 48).
        noise_std: evidence noise (default 0.5).
        bias_scale: bound of the per-trial evidence bias (default 0.2).
        target_scale: scale of the running sum (default 0.1).
    """

    name = "integration"

    def __init__(
        self,
        seq_len: int = 48,
        noise_std: float = 0.5,
        bias_scale: float = 0.2,
        target_scale: float = 0.1,
    ) -> None:
        super().__init__(
            seq_len=_check_int(seq_len, "integration task: seq_len"),
            noise_std=_check_float(noise_std, "integration task: noise_std", 0.0),
            bias_scale=_check_float(bias_scale, "integration task: bias_scale", 0.0),
            target_scale=_check_float(
                target_scale, "integration task: target_scale", 0.0, low_open=True
            ),
        )
        self.input_size, self.output_size = 4, 1
        self.seq_len = self.params["seq_len"]

    def _sample(self, n: int, rng: np.random.Generator) -> Batch:
        L, p = self.seq_len, self.params
        mu = rng.uniform(-p["bias_scale"], p["bias_scale"], size=(n, 1, 2))
        streams = mu + p["noise_std"] * rng.standard_normal((n, L, 2))
        context = rng.integers(2, size=n)

        x = np.zeros((n, L, 4))
        x[:, :, :2] = streams
        x[np.arange(n), :, 2 + context] = 1.0
        selected = streams[np.arange(n), :, context]
        y = p["target_scale"] * np.cumsum(selected, axis=1)[..., None]
        return _as_batch(x, y, np.ones(y.shape, dtype=bool))


_CLASSES: dict[str, type[Task]] = {
    "copy": CopyTask,
    "flipflop": FlipFlopTask,
    "sine": SineTask,
    "integration": IntegrationTask,
}


def make_task(name: str, **params: Any) -> Task:
    """Build a task by name.

    Args:
        name: one of ``TASKS``: ``"copy"``, ``"flipflop"``, ``"sine"``, ``"integration"``.
        **params: the task's parameters (see each task class); missing ones take defaults.

    Returns:
        the task; ``task.params`` holds every resolved parameter.

    Raises:
        TypeError: a name that is not a string, or a parameter value of the wrong type (each
            message names the task and the parameter).
        ValueError: for an unknown name or parameter, or a parameter value out of its range
            (floats must be finite).
    """
    if not isinstance(name, str):
        raise TypeError(
            f"task name must be a str, one of {', '.join(TASKS)}; got {_describe(name)}"
        )
    if name not in _CLASSES:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    try:
        inspect.signature(_CLASSES[name]).bind(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for task {name!r}: {err}") from None
    return _CLASSES[name](**params)


def plot_trials(
    task: Task,
    batch: Batch,
    path: str | Path,
    y_hat: Any = None,
    n_trials: int = 3,
) -> Path:
    """Draw a few trials (inputs, targets and, when given, model outputs) to a PNG.

    Args:
        task: the task the batch comes from.
        batch: trials to draw from.
        path: PNG file to write.
        y_hat: model outputs ``[B, L, O]`` (torch or numpy), optional.
        n_trials: how many of the first trials to draw (default 3).

    Returns:
        the path written.

    Raises:
        TypeError: ``batch`` is not a ``Batch``, or ``y_hat`` is not a real torch tensor or
            numpy array.
        ValueError: ``y_hat`` does not have the shape of ``batch.y``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    batch = _check_batch(batch)
    x, y = batch.x.cpu().numpy(), batch.y.cpu().numpy()
    mask = batch.mask.cpu().numpy()
    out = None if y_hat is None else _as_numpy(y_hat)
    if out is not None and out.shape != y.shape:
        raise ValueError(f"y_hat must have shape {list(y.shape)}, got {list(out.shape)}")
    n_trials = min(n_trials, x.shape[0])

    # an explicit Figure on an Agg canvas, so nothing touches pyplot's global state
    fig = Figure(figsize=(4 * n_trials, 5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n_trials, squeeze=False, sharex=True)
    t = np.arange(x.shape[1])
    for k in range(n_trials):
        axes[0, k].plot(t, x[k], lw=1)
        axes[0, k].set_title(f"{task.name}, trial {k}")
        for o in range(y.shape[-1]):
            target = np.where(mask[k, :, o], y[k, :, o], np.nan)
            line = axes[1, k].plot(t, target, lw=1.5)[0]
            if out is not None:
                axes[1, k].plot(t, out[k, :, o], ls="--", lw=1, color=line.get_color())
        axes[1, k].set_xlabel("step t")
    axes[0, 0].set_ylabel("input x")
    axes[1, 0].set_ylabel("target y (solid), output (dashed)")

    path = Path(path)
    fig.savefig(path, dpi=80)
    return path
