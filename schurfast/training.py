"""Train one tanh RNN per seed, all seeds at once as one batched model.

The seeds' weights are stacked along a leading axis ``[S, ...]`` so that every time step of
every training step is one batched matmul across seeds. Nothing else is shared: each seed has
its own initialization, draws its own batches from its own seeded stream (``(seed, step, 1)``,
see ``schurfast.tasks``), gets its own loss, its own gradient-norm clipping and its own Adam
state, and stops on its own. A seed trained with others therefore ends where it would end
trained alone, up to float rounding.

On CPU, the forward pass and backpropagation through time of every seed run in the compiled
core (``schurfast._seed_rollout``), on ``torch.get_num_threads()`` threads.

Per step, for each seed: masked mean squared error on the task's mask; Adam (torch defaults,
``lr`` 1e-3, by default decayed to zero along a cosine over the step budget); gradient norm
clipped to ``grad_clip``. A step whose loss or gradient norm is not finite is skipped for that
seed (its weights and Adam state stay as they were) and counted; ``max_bad_steps``
consecutive skipped steps raise ``TrainingError`` naming the seed and step.

Early stopping: with ``target``, each seed's metric on a validation set (``VALIDATION_SEED``,
not the held-out set) is checked after every epoch; a seed stops once it reaches the target
(accuracy >= target for copy, FVU <= target otherwise), and training runs past ``epochs`` up
to ``max_steps`` steps while some seed has not. The reported ``heldout_metric`` is always
measured afterwards on the held-out set (``HELDOUT_SEED``).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from schurfast._seed_rollout import seed_rollout
from schurfast.models import DENSE_INITS, TanhRNN
from schurfast.rollout import rollout_reference
from schurfast.tasks import (
    HELDOUT_SEED,
    VALIDATION_SEED,
    Batch,
    Task,
    _check_float,
    _check_int,
    _check_seed,
)

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine")


class TrainingError(RuntimeError):
    """Training could not continue: too many consecutive non-finite steps for one seed."""


def _stack(models: list[TanhRNN]) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    W_hh = torch.stack([m.recurrent() for m in models])
    W_xh = torch.stack([m.weight_xh for m in models])
    W_hy = torch.stack([m.weight_hy for m in models])
    b = None if models[0].bias_h is None else torch.stack([m.bias_h for m in models])
    c = None if models[0].bias_y is None else torch.stack([m.bias_y for m in models])
    return W_hh, W_xh, W_hy, b, c


def _metrics(models: list[TanhRNN], task: Task, batch: Batch) -> np.ndarray:
    """The task metric of several models on one batch, as one rollout: ``[S]``."""
    with torch.no_grad():
        W_hh, W_xh, W_hy, b, c = _stack(models)
        x = batch.x.to(W_xh.device, W_xh.dtype)
        y = rollout_reference(W_hh, W_xh, W_hy, x, b=b, c=c)
    return np.asarray(task.metric(y.cpu(), batch), dtype=np.float64)


def _reached(task: Task, value: float, target: float | None) -> bool | None:
    if target is None:
        return None
    return bool(value >= target) if task.metric_name == "accuracy" else bool(value <= target)


def _check_seeds(seeds: object) -> list[int]:
    """Distinct ints in ``[0, 2**64 - 1]`` (the range a model's initialization seed takes)."""
    if not isinstance(seeds, Sequence) or isinstance(seeds, str | bytes):
        hint = f"; for one seed write seeds=({seeds!r},)" if isinstance(seeds, int) else ""
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}{hint}")
    out = [_check_int(s, f"seeds[{k}]", minimum=0, maximum=2**64 - 1) for k, s in enumerate(seeds)]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a non-empty sequence of distinct ints, got {out!r}")
    return out


def _copies(
    init_from: Sequence[TanhRNN],
    seeds: list[int],
    sizes: tuple[int, int, int],
    construction: str,
    bias: bool,
) -> list[TanhRNN]:
    if not isinstance(init_from, Sequence) or isinstance(init_from, str | bytes):
        raise TypeError(
            f"init_from must be a list or tuple of TanhRNN models, one per seed, got"
            f" {type(init_from).__name__}"
        )
    if len(init_from) != len(seeds):
        raise ValueError(f"init_from needs one model per seed ({len(seeds)}), got {len(init_from)}")
    for seed, model in zip(seeds, init_from, strict=True):
        if not isinstance(model, TanhRNN):
            raise TypeError(f"init_from must hold TanhRNN models, got {type(model).__name__}")
        got = (model.input_size, model.hidden_size, model.output_size, model.construction)
        if got != (*sizes, construction):
            raise ValueError(
                f"init_from model for seed {seed} has (I, H, O, construction) = {got}, expected"
                f" {(*sizes, construction)}"
            )
        trained_seed = (model.train_info or {}).get("seed", seed)
        if trained_seed != seed:
            raise ValueError(
                f"init_from model for seed {seed} was trained with seed {trained_seed}"
            )
        has_bias = model.bias_h is not None
        if has_bias != bias:
            raise ValueError(
                f"init_from model for seed {seed} has bias={has_bias}, but bias={bias} was"
                " asked for"
            )
        if (model.bias_y is not None) != bias:
            raise ValueError(
                f"init_from model for seed {seed} has a readout bias={model.bias_y is not None},"
                f" but bias={bias} was asked for"
            )
        for name, tensor in model.state_dict().items():
            if tensor.dtype != torch.float32:
                raise ValueError(
                    f"init_from model for seed {seed} holds {name} as {tensor.dtype}; training"
                    " runs in float32 (model.float())"
                )
            if not torch.isfinite(tensor).all():
                raise ValueError(f"init_from model for seed {seed} holds NaN or Inf in {name}")
    inits = sorted({m.init for m in init_from})
    if len(inits) > 1:
        raise ValueError(f"init_from models must share one init, got {inits}")
    return [copy.deepcopy(m) for m in init_from]


def _check_device(device: object) -> torch.device:
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but torch sees no CUDA device")
    return device


def evaluate(
    model: TanhRNN, task: Task, n: int = 1024, seed: int | Sequence[int] = HELDOUT_SEED
) -> float:
    """The task metric of ``model`` on ``n`` trials drawn with ``seed``.

    Args:
        model: a trained ``TanhRNN`` with the task's input and output sizes.
        task: the task.
        n: held-out trials (default 1024).
        seed: seed of the held-out set, a non-negative int or a sequence of them (default
            ``HELDOUT_SEED``, never used by training).

    Returns:
        FVU, or replay accuracy for the copy task.

    Raises:
        TypeError: a model that is not a ``TanhRNN``, a task not from ``make_task``, or a
            seed or ``n`` that is not an int.
        ValueError: sizes that do not match the task, ``n < 1`` or a negative seed.
    """
    n = _check_int(n, "n")
    seed = _check_seed(seed)
    if not isinstance(model, TanhRNN):
        raise TypeError(f"model must be a TanhRNN, got {type(model).__name__}")
    if not isinstance(task, Task):
        hint = f" (make_task({task!r}))" if isinstance(task, str) else ""
        raise TypeError(f"task must come from make_task, got {type(task).__name__}{hint}")
    if (model.input_size, model.output_size) != (task.input_size, task.output_size):
        raise ValueError(
            f"model has I={model.input_size}, O={model.output_size} but task {task.name!r}"
            f" needs I={task.input_size}, O={task.output_size}"
        )
    return float(_metrics([model], task, task.sample(n, seed))[0])


def train(
    task: Task,
    *,
    hidden_size: int,
    construction: str = "dense",
    init: str = "orthogonal",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 30,
    batches_per_epoch: int = 128,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    target: float | None = None,
    max_steps: int | None = None,
    quiet: bool = False,
    bias: bool = False,
    grad_clip: float = 1.0,
    max_bad_steps: int = 25,
    lr_schedule: str = "cosine",
    eval_n: int = 1024,
    init_from: Sequence[TanhRNN] | None = None,
) -> list[TanhRNN]:
    """Train one ``TanhRNN`` per seed on ``task``, all seeds as one batched model.

    Args:
        task: a task from ``make_task``.
        hidden_size: H.
        construction: ``"dense"`` or ``"cayley"``.
        init: dense initialization, ``"default"``, ``"orthogonal"`` or ``"normal"`` (with
            ``init_from``, the models' own is kept and recorded).
        seeds: one model per seed; a seed fixes the initialization and the batch stream.
        epochs: epochs of ``batches_per_epoch`` steps (default 30 x 128).
        batches_per_epoch: steps per epoch.
        batch_size: trials per step and seed.
        lr: Adam learning rate.
        device: where to train, ``"cpu"`` or ``"cuda[:N]"``.
        target: early stopping target on the validation metric (accuracy >= target for copy,
            FVU <= target otherwise); None trains exactly ``epochs`` epochs.
        max_steps: step budget. With a target, training goes on past ``epochs`` up to this
            many steps (default ``epochs * batches_per_epoch``); without one, it caps them.
        quiet: no progress bar (it is also off when stderr is not a terminal).
        bias: models with hidden and readout biases.
        grad_clip: per-seed gradient-norm clipping threshold.
        max_bad_steps: consecutive non-finite steps of one seed that raise ``TrainingError``.
        lr_schedule: ``"cosine"`` (default: from ``lr`` down to zero over the step budget, so
            that the final weights do not depend on where a late swing of the loss left
            them), or ``"constant"``.
        eval_n: trials of the validation and held-out sets.
        init_from: models to continue from, one per seed (copied, not changed), for example
            trained on an easier version of the task. Their batch streams continue after the
            steps they already took; Adam starts afresh.

    Returns:
        one trained model per seed, in ``seeds`` order, each with ``.train_info``: ``seed``,
        ``steps`` (including those of ``init_from``), ``skipped_steps``, ``final_loss`` (mean
        finite loss of its last epoch), ``heldout_metric``, ``validation_metric``,
        ``reached_target`` (bool on the held-out metric, None without a target), ``wall_s``
        (time until it stopped), and ``config``.

    Raises:
        TypeError: an argument of the wrong type (every argument is checked before training).
        ValueError: an argument out of its range (``lr`` and ``grad_clip`` finite and > 0,
            seeds distinct non-negative ints, ...), or a task whose validation or held-out
            targets have no variance.
        TrainingError: ``max_bad_steps`` consecutive non-finite steps for a seed.

    Example:
        >>> from schurfast.tasks import make_task
        >>> models = train(make_task("flipflop"), hidden_size=16, seeds=(0, 1), epochs=1,
        ...                batches_per_epoch=2, quiet=True, eval_n=8)
        >>> [m.train_info["steps"] for m in models]
        [2, 2]
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must come from make_task, got {type(task).__name__}")
    seeds = _check_seeds(seeds)
    epochs = _check_int(epochs, "epochs")
    batches_per_epoch = _check_int(batches_per_epoch, "batches_per_epoch")
    batch_size = _check_int(batch_size, "batch_size")
    eval_n = _check_int(eval_n, "eval_n")
    max_bad_steps = _check_int(max_bad_steps, "max_bad_steps")
    lr = _check_float(lr, "lr", 0.0, low_open=True)
    grad_clip = _check_float(grad_clip, "grad_clip", 0.0, low_open=True)
    if target is not None:
        # accuracy lives in [0, 1]; FVU is non-negative
        high = 1.0 if task.metric_name == "accuracy" else math.inf
        target = _check_float(target, f"target ({task.metric_name})", 0.0, high)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    sizes = (task.input_size, _check_int(hidden_size, "hidden_size"), task.output_size)
    budget = epochs * batches_per_epoch
    if max_steps is not None:
        budget = _check_int(max_steps, "max_steps")
    if target is None:
        budget = min(budget, epochs * batches_per_epoch)

    # both evaluation sets up front, so a task whose targets have no variance (FVU undefined)
    # fails here and not after the whole run
    validation = task.sample(eval_n, VALIDATION_SEED)
    heldout_set = task.sample(eval_n, HELDOUT_SEED)
    for name, batch in (("validation", validation), ("held-out", heldout_set)):
        try:
            if task.metric_name == "fvu":
                task.fvu(batch.y, batch)
        except ValueError as err:
            raise ValueError(f"{err} on the {name} set of eval_n={eval_n} trials") from None
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be True or False, got {type(bias).__name__} {bias!r}")
    if not isinstance(quiet, bool):
        raise TypeError(f"quiet must be True or False, got {type(quiet).__name__} {quiet!r}")
    device = _check_device(device)
    if construction == "dense" and init not in DENSE_INITS:
        raise ValueError(f"init must be one of {', '.join(DENSE_INITS)}, got {init!r}")
    if init_from is not None:
        # continuing models keep the initialization they were made with
        init_from = _copies(init_from, seeds, sizes, construction, bias)
        init = init_from[0].init

    config = dict(
        task=task.name,
        task_params=dict(task.params),
        hidden_size=hidden_size,
        construction=construction,
        init=init,
        epochs=epochs,
        batches_per_epoch=batches_per_epoch,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        grad_clip=grad_clip,
        target=target,
        max_steps=budget,
        bias=bias,
        optimizer="adam",
    )
    if init_from is None:
        models = [TanhRNN(*sizes, construction, init, bias=bias, seed=s) for s in seeds]
    else:
        models = init_from
        config["init_from_steps"] = [(m.train_info or {}).get("steps", 0) for m in init_from]
    models = [m.to(device) for m in models]
    offset = [(m.train_info or {}).get("steps", 0) for m in models]
    params = [list(m.parameters()) for m in models]
    opt = torch.optim.Adam([p for ps in params for p in ps], lr=lr)

    S = len(seeds)
    active = list(range(S))
    steps, skipped, bad_run = [0] * S, [0] * S, [0] * S
    epoch_losses: list[list[float]] = [[] for _ in range(S)]
    last_losses: list[list[float]] = [[] for _ in range(S)]
    val_metric = np.full(S, np.nan)
    wall = [0.0] * S
    start = time.perf_counter()
    bar = tqdm(
        total=budget,
        desc=f"{task.name} H={hidden_size} {construction}",
        disable=quiet or not sys.stderr.isatty(),
        leave=False,
    )

    step = 0
    while active and step < budget:
        # cosine decay over the whole budget, the same for every seed
        if lr_schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / budget))

        batches = [task.sample(batch_size, (seeds[i], offset[i] + step, 1)) for i in active]
        x = torch.stack([bt.x for bt in batches]).to(device)
        y = torch.stack([bt.y for bt in batches]).to(device)
        mask = torch.stack([bt.mask for bt in batches]).to(device)

        opt.zero_grad(set_to_none=True)
        run = [models[i] for i in active]
        W_hh, W_xh, W_hy, b, c = _stack(run)
        y_hat = seed_rollout(W_hh, W_xh, W_hy, x, b, c)
        err = (y_hat - y).square() * mask
        loss = err.sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))
        loss.sum().backward()

        for k, i in enumerate(active):
            norm = torch.nn.utils.clip_grad_norm_(params[i], grad_clip)
            value = float(loss[k].detach())
            steps[i] += 1
            if math.isfinite(value) and bool(torch.isfinite(norm)):
                bad_run[i] = 0
                epoch_losses[i].append(value)
                continue

            # leave this seed's weights and Adam state untouched for this step
            for p in params[i]:
                p.grad = None
            skipped[i] += 1
            bad_run[i] += 1
            # the first skip of a seed is a warning; the rest are counted in skipped_steps
            logger.log(
                logging.WARNING if skipped[i] == 1 else logging.INFO,
                "seed %d: non-finite loss or gradient at step %d, skipped%s",
                seeds[i],
                offset[i] + step,
                " (later skips are counted in train_info['skipped_steps'])"
                if skipped[i] == 1
                else "",
            )
            if bad_run[i] >= max_bad_steps:
                bar.close()
                raise TrainingError(
                    f"seed {seeds[i]}: {bad_run[i]} consecutive non-finite steps ending at step"
                    f" {offset[i] + step} (loss {value}, gradient norm {float(norm)}); lower lr or"
                    " grad_clip"
                )
        opt.step()
        step += 1
        bar.update(1)

        if step % batches_per_epoch and step < budget:
            continue
        val_metric[active] = _metrics([models[i] for i in active], task, validation)
        for i in active:
            last_losses[i] = epoch_losses[i] or last_losses[i]
        logger.info(
            "%s H=%d %s epoch %d (step %d): loss %s, validation %s %s",
            task.name,
            hidden_size,
            construction,
            math.ceil(step / batches_per_epoch),
            step,
            " ".join(
                f"{np.mean(epoch_losses[i]) if epoch_losses[i] else math.nan:.4g}" for i in active
            ),
            task.metric_name,
            " ".join(f"{val_metric[i]:.4g}" for i in active),
        )
        epoch_losses = [[] for _ in range(S)]
        finished = [
            i
            for i in active
            if (target is None and step >= epochs * batches_per_epoch)
            or _reached(task, val_metric[i], target)
        ]
        for i in finished:
            wall[i] = time.perf_counter() - start
        active = [i for i in active if i not in finished]
    bar.close()
    for i in active:
        wall[i] = time.perf_counter() - start

    heldout = _metrics(models, task, heldout_set)
    for i, model in enumerate(models):
        model.train_info = dict(
            seed=seeds[i],
            steps=offset[i] + steps[i],
            skipped_steps=skipped[i],
            final_loss=float(np.mean(last_losses[i])) if last_losses[i] else math.nan,
            heldout_metric=float(heldout[i]),
            validation_metric=float(val_metric[i]),
            metric_name=task.metric_name,
            reached_target=_reached(task, float(heldout[i]), target),
            wall_s=wall[i],
            config=config,
        )
    return models
