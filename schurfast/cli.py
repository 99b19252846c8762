"""The ``schurfast`` command: ``run``, ``ablate`` and ``report``.

A user mistake (unknown task or preset, a model that does not fit, a corrupt file, an unwritable
directory) ends with one line on stderr and exit status 2; a computation that fails (training
that keeps producing non-finite steps, a Schur form LAPACK cannot order) with one line and exit
status 1. Nothing already in the output directory is removed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from schurfast.schur import SchurError
from schurfast.training import TrainingError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schurfast",
        description="Ablations of trained tanh RNNs in ordered real Schur coordinates.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train, decompose, ablate, evaluate and report")
    run.add_argument(
        "--preset",
        default="quick",
        help="quick (about a minute, a demo) or paper (the results; about 15 minutes on two cores)",
    )
    run.add_argument("--out", default=None, help="output directory (default: runs/PRESET)")
    run.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    run.add_argument("--tasks", type=_names, help="comma-separated subset of the tasks")
    run.add_argument("--seeds", type=_ints, help="comma-separated training seeds")
    run.add_argument("--epochs", type=int)
    run.add_argument("--batches-per-epoch", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--lr-schedule", help="cosine or constant (default: cosine)")
    run.add_argument("--hidden-size", type=int, help="width for flipflop, sine, integration")
    run.add_argument("--copy-hidden-size", type=int, help="width for copy")
    run.add_argument(
        "--copy-constructions",
        type=_names,
        help="comma-separated: dense-default, dense-orthogonal, dense-normal, cayley",
    )
    run.add_argument("--copy-max-steps", type=int, help="step budget for copy controllers")
    run.add_argument("--alphas", type=_floats, help="comma-separated thresholds alpha")
    run.add_argument("--controls", type=int, help="matched-norm draws per single-block ablation")
    run.add_argument("--heldout-size", type=int, help="held-out trials per task")
    run.add_argument("--train-eval-size", type=int, help="trials of training's validation sets")
    run.add_argument("--train-threads", type=int, help="torch threads while training (default 1)")
    run.add_argument("--backend", help="rollout backend: auto, reference, cpu, triton")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--verbose", action="store_true", help="also log every training epoch")

    ablate = sub.add_parser("ablate", help="the protocol on one trained model")
    ablate.add_argument("model", help="a schurfast checkpoint or a torch.save'd state dict")
    ablate.add_argument(
        "--task",
        help="copy, flipflop, sine or integration (default: the task a schurfast checkpoint"
        " records; required for a state dict)",
    )
    ablate.add_argument(
        "--alpha", type=_floats, default=(0.9,), help="threshold(s), comma-separated (default: 0.9)"
    )
    ablate.add_argument("--out", default=None, help="also write tables and figures here")
    ablate.add_argument("--controls", type=int, default=16)
    ablate.add_argument("--heldout-size", type=int, default=1024)
    ablate.add_argument("--device", default="cpu")
    ablate.add_argument("--rnn-prefix", default=None, help="key prefix of the nn.RNN")
    ablate.add_argument("--readout-prefix", default=None, help="key prefix of the readout")

    report = sub.add_parser("report", help="rebuild tables and figures from stored results")
    report.add_argument("dir", help="a directory written by run or ablate --out")
    return parser


def _run(args) -> None:
    from schurfast import protocol

    overrides = {
        "device": args.device,
        "tasks": args.tasks,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "batches_per_epoch": args.batches_per_epoch,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "hidden_size": args.hidden_size,
        "copy_hidden_size": args.copy_hidden_size,
        "copy_constructions": args.copy_constructions,
        "copy_max_steps": args.copy_max_steps,
        "alphas": args.alphas,
        "controls": args.controls,
        "heldout_size": args.heldout_size,
        "train_eval_size": args.train_eval_size,
        "train_threads": args.train_threads,
        "backend": args.backend,
    }
    # options not given keep the preset's values
    overrides = {k: v for k, v in overrides.items() if v is not None}
    res = protocol.run(args.preset, args.out, progress=not args.no_progress, **overrides)
    print(f"report: {res.report}")
    print(f"tables: {res.out / 'summary.md'}, {res.out / 'results.parquet'}")


def _ablate(args) -> None:
    from schurfast import protocol
    from schurfast.report import ablate_table

    results = protocol.ablate_model(
        args.model,
        args.task,
        alphas=args.alpha,
        out=args.out,
        controls=args.controls,
        heldout_size=args.heldout_size,
        device=args.device,
        rnn_prefix=args.rnn_prefix,
        readout_prefix=args.readout_prefix,
    )
    print(ablate_table(results), end="")
    if args.out is not None:
        print(f"report: {args.out}/report.md")


def _report(args) -> None:
    from schurfast import protocol

    print(f"report: {protocol.report(args.dir)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``schurfast`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("schurfast: %(message)s"))
    log = logging.getLogger("schurfast")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # one line per stage; the per-epoch training lines only on request
    verbose = getattr(args, "verbose", False)
    logging.getLogger("schurfast.training").setLevel(logging.INFO if verbose else logging.WARNING)
    command = {"run": _run, "ablate": _ablate, "report": _report}[args.command]
    try:
        command(args)
    except (ValueError, TypeError, OSError) as err:
        if os.environ.get("SCHURFAST_DEBUG"):
            raise
        # a user mistake: one line, no traceback
        print(f"schurfast {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (TrainingError, SchurError, MemoryError) as err:
        if os.environ.get("SCHURFAST_DEBUG"):
            raise
        # the computation failed; what finished before stays in the output directory
        what = "out of memory: " if isinstance(err, MemoryError) else ""
        print(f"schurfast {args.command}: failed: {what}{err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            f"schurfast {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        log.removeHandler(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
