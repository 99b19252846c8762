"""Training throughput: seeds as one batched model, one after another, and pure-torch peers.

Every row trains the same seeds for the same number of steps with the same settings (task,
width, batch, Adam lr 1e-3, gradient clipping at 1.0) and reports the median wall time over
repeats, seed-steps per second (one step of one seed) and the speedup of the first row over it:

- ``schurfast, seeds batched``: one ``schurfast.train`` call with all seeds (the fused CPU
  forward and backward kernels, one call per step for all seeds);
- ``schurfast, one seed after another``: one ``schurfast.train`` call per seed;
- ``torch loop, seeds batched`` / ``one seed after another``: the same two, with the rollout
  replaced by the pure-torch reference (a loop over time, one batched matmul per step,
  differentiated by autograd);
- ``torch.nn.RNN, one seed after another``: what a user writes without schurfast: an
  ``nn.RNN`` and an ``nn.Linear`` per seed, Adam and clipping, on the same batches.

Before timing, each batched seed is checked against the same seed trained alone.

Usage:
    python benchmarks/bench_training.py [--task sine] [--hidden 64] [--batch-size 64]
        [--steps 60] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import schurfast.training
from schurfast._seed_rollout import seed_rollout_loop
from schurfast.tasks import make_task
from schurfast.training import train


@contextlib.contextmanager
def torch_loop_rollout():
    """``train`` with its rollout replaced by the autograd loop, for the reference rows."""
    fused = schurfast.training.seed_rollout
    schurfast.training.seed_rollout = seed_rollout_loop
    try:
        yield
    finally:
        schurfast.training.seed_rollout = fused


def train_nn_rnn(task, seed: int, hidden: int, steps: int, batch_size: int) -> None:
    """One seed with ``torch.nn.RNN`` + ``nn.Linear``, Adam and clipping, as train() does."""
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(task.input_size, hidden, batch_first=True, bias=False)
    readout = torch.nn.Linear(hidden, task.output_size, bias=False)
    params = [*rnn.parameters(), *readout.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    for step in range(steps):
        batch = task.sample(batch_size, (seed, step, 1))
        opt.zero_grad(set_to_none=True)
        y = readout(rnn(batch.x)[0])
        loss = ((y - batch.y).square() * batch.mask).sum() / batch.mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sine")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--construction", default="dense")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = make_task(args.task)
    seeds = tuple(range(args.seeds))
    config = dict(
        hidden_size=args.hidden,
        construction=args.construction,
        epochs=1,
        batches_per_epoch=args.steps,
        batch_size=args.batch_size,
        quiet=True,
        eval_n=64,
    )

    # correctness first: each batched seed ends where it ends alone
    together = train(task, seeds=seeds, **config)
    for seed, model in zip(seeds, together, strict=True):
        alone = train(task, seeds=(seed,), **config)[0]
        diff = (model.W_hh - alone.W_hh).abs().max().item()
        assert diff < 1e-4, f"seed {seed}: batched and alone differ by {diff}"

    def batched():
        train(task, seeds=seeds, **config)

    def sequential():
        for seed in seeds:
            train(task, seeds=(seed,), **config)

    def reference(run):
        def timed():
            with torch_loop_rollout():
                run()

        return timed

    def nn_rnn():
        for seed in seeds:
            train_nn_rnn(task, seed, args.hidden, args.steps, args.batch_size)

    rows = {
        "schurfast, seeds batched": batched,
        "schurfast, one seed after another": sequential,
        "torch loop, seeds batched": reference(batched),
        "torch loop, one seed after another": reference(sequential),
        "torch.nn.RNN, one seed after another": nn_rnn,
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for run in rows.values():
        run()  # warm-up
    for _ in range(args.repeats):
        for name, run in rows.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    seed_steps = args.seeds * args.steps
    median = {name: statistics.median(t) for name, t in times.items()}
    first = median["schurfast, seeds batched"]
    print(
        f"task {args.task}, H={args.hidden}, {args.construction}, {args.seeds} seeds x"
        f" {args.steps} steps, batch {args.batch_size}, L={task.seq_len}, {args.threads} thread(s),"
        f" median of {args.repeats}"
    )
    print("| mode | wall s | seed-steps/s | schurfast batched is faster by |")
    print("|---|---|---|---|")
    for name, t in median.items():
        print(f"| {name} | {t:.2f} | {seed_steps / t:.1f} | {t / first:.2f}x |")


if __name__ == "__main__":
    main()
