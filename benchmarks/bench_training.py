"""Training throughput: 3 seeds as one batched model against 3 seeds one after another.

Both sides run ``schurfast.train`` with the same settings; the batched side passes all seeds
at once, the sequential side one seed per call. Before timing, the batched models are checked
against the seeds trained alone. Reported: median wall time over repeats, steps per second
(seed-steps: one step of one seed) and the ratio.

Usage:
    python benchmarks/bench_training.py [--task sine] [--hidden 64] [--batch-size 64]
        [--steps 60] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from schurfast.tasks import make_task
from schurfast.training import train


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

    batched, sequential = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        train(task, seeds=seeds, **config)
        batched.append(time.perf_counter() - start)

        start = time.perf_counter()
        for seed in seeds:
            train(task, seeds=(seed,), **config)
        sequential.append(time.perf_counter() - start)

    seed_steps = args.seeds * args.steps
    t_b, t_s = statistics.median(batched), statistics.median(sequential)
    print(
        f"task {args.task}, H={args.hidden}, {args.construction}, {args.seeds} seeds x"
        f" {args.steps} steps, batch {args.batch_size}, L={task.seq_len}, {args.threads} thread(s),"
        f" median of {args.repeats}"
    )
    print("| mode | wall s | seed-steps/s |")
    print("|---|---|---|")
    print(f"| one batched model | {t_b:.2f} | {seed_steps / t_b:.1f} |")
    print(f"| one seed after another | {t_s:.2f} | {seed_steps / t_s:.1f} |")
    print(f"speedup batched / sequential: {t_s / t_b:.2f}x")


if __name__ == "__main__":
    main()
