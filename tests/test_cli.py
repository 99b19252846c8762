"""The ``schurfast`` command: run, ablate on a plain torch RNN, report, and every user mistake."""

import numpy as np
import pandas as pd
import pytest
import torch

from schurfast import protocol
from schurfast.cli import main
from schurfast.tasks import HELDOUT_SEED, make_task

RUN_ARGS = [
    "--tasks", "flipflop", "--seeds", "0,1", "--epochs", "1", "--batches-per-epoch", "2",
    "--batch-size", "8", "--hidden-size", "5", "--alphas", "0.9", "--controls", "2",
    "--heldout-size", "16", "--train-eval-size", "16", "--no-progress",
]  # fmt: skip


class Net(torch.nn.Module):
    """What a user typically saves: an nn.RNN and a readout inside one module."""

    def __init__(self, n_in, hidden, n_out, **rnn_kw):
        super().__init__()
        self.rnn = torch.nn.RNN(n_in, hidden, batch_first=True, **rnn_kw)
        self.readout = torch.nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.readout(self.rnn(x)[0])


@pytest.fixture(scope="module")
def flipflop_state(tmp_path_factory):
    """A plain torch RNN trained for a few steps on flipflop, saved as a state dict."""
    task = make_task("flipflop")
    torch.manual_seed(0)
    net = Net(task.input_size, 11, task.output_size)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(20):
        batch = task.sample(16, seed=step)
        loss = ((net(batch.x) - batch.y) ** 2)[batch.mask].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("user") / "net.pt"
    torch.save(net.state_dict(), path)
    return net, path


def _fails(capsys, argv, match):
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert match in lines[0], lines[0]
    return lines[0]


def test_run_prints_where_the_report_is_and_report_rebuilds_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *RUN_ARGS]) == 0
    captured = capsys.readouterr()
    assert f"report: {out / 'report.md'}" in captured.out
    for stage in ("train:", "schur:", "evaluate flipflop:"):
        assert stage in captured.err
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 2 * (8 + 3 * 2)

    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()


def test_ablate_state_dict_matches_plain_torch(flipflop_state, capsys, tmp_path):
    net, path = flipflop_state
    task = make_task("flipflop")
    df = protocol.ablate_model(path, "flipflop", alphas=(0.9, 0.8), controls=3, heldout_size=64)
    assert len(df) == 2 * (8 + 3 * 3)

    # the intact rebuilt network scores what the torch module scores on the same trials
    batch = task.sample(64, seed=HELDOUT_SEED)
    with torch.no_grad():
        expected = task.metric(net(batch.x), batch)
    intact = df[(df["kind"] == "ablation") & (df["subset"] == "none")]["metric"]
    np.testing.assert_allclose(intact, expected, rtol=1e-4)

    out = tmp_path / "ablate"
    assert main(["ablate", str(path), "--task", "flipflop", "--controls", "3",
                 "--heldout-size", "64", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    for subset in ("none", "RR", "RC", "CC", "RR+RC+CC"):
        assert f"| {subset} |" in printed
    assert "control" in printed
    assert (out / "results.parquet").is_file() and (out / "summary.md").is_file()


def test_ablate_reads_a_schurfast_checkpoint(tmp_path, capsys):
    from schurfast.checkpoints import save_checkpoint
    from schurfast.models import TanhRNN

    path = tmp_path / "model.safetensors"
    save_checkpoint(TanhRNN(3, 6, 3, seed=1), path)
    argv = ["ablate", str(path), "--task", "flipflop", "--controls", "2", "--heldout-size", "8"]
    assert main(argv) == 0
    assert "| RR+RC+CC |" in capsys.readouterr().out
    _fails(capsys, [*argv[:3], "sine"], "input size 3 and output size 3")
    # an untrained model records no task
    _fails(capsys, [argv[0], argv[1], *argv[4:]], "does not record the task")


def test_ablate_takes_task_and_its_parameters_from_a_trained_checkpoint(tmp_path, capsys):
    from schurfast.checkpoints import save_checkpoint
    from schurfast.training import train

    task = make_task("sine", frequencies=(0.1, 0.2))
    (model,) = train(task, hidden_size=6, seeds=(0,), epochs=1, batches_per_epoch=2,
                     batch_size=4, quiet=True, eval_n=8)  # fmt: skip
    path = tmp_path / "sine.safetensors"
    save_checkpoint(model, path)

    recorded = protocol.ablate_model(path, controls=1, heldout_size=16)
    named = protocol.ablate_model(
        path, "sine", controls=1, heldout_size=16, task_params={"frequencies": (0.1, 0.2)}
    )
    default_params = protocol.ablate_model(
        path, "sine", controls=1, heldout_size=16, task_params={}
    )
    pd.testing.assert_frame_equal(recorded, named)
    # the task's default frequencies give other trials, so other metrics
    assert not np.allclose(recorded["metric"], default_params["metric"])
    assert main(["ablate", str(path), "--controls", "1", "--heldout-size", "16"]) == 0
    assert "| RR+RC+CC |" in capsys.readouterr().out

    # the report names the network by its construction and seed, with its training record
    out = tmp_path / "out"
    protocol.ablate_model(path, controls=1, heldout_size=16, out=out)
    models = pd.read_parquet(out / "models.parquet")
    assert models[["construction", "seed", "steps"]].values.tolist() == [["dense-orthogonal", 0, 2]]
    assert models["heldout_metric"].item() == pytest.approx(model.train_info["heldout_metric"])
    assert "| sine | dense-orthogonal | 6 | 0 | 2 |" in (out / "summary.md").read_text()
    # a metric measured on other trials is not reported as this task's
    protocol.ablate_model(path, controls=1, heldout_size=16, out=out, task_params={})
    assert pd.read_parquet(out / "models.parquet")["heldout_metric"].isna().all()


def test_ablate_finds_prefixes_or_asks_for_them(flipflop_state, tmp_path, capsys):
    net, _ = flipflop_state
    state = {f"a.{k}": v for k, v in net.state_dict().items()}
    state.update({f"b.{k}": v for k, v in net.state_dict().items()})
    path = tmp_path / "two.pt"
    torch.save(state, path)
    args = ["ablate", str(path), "--task", "flipflop", "--controls", "1", "--heldout-size", "8"]
    _fails(capsys, args, "--rnn-prefix")
    _fails(capsys, [*args, "--rnn-prefix", "a.rnn."], "--readout-prefix")
    assert main([*args, "--rnn-prefix", "a.rnn.", "--readout-prefix", "b.readout."]) == 0
    # a module's name, without the dot, names the same keys
    assert main([*args, "--rnn-prefix", "a.rnn", "--readout-prefix", "b.readout"]) == 0
    capsys.readouterr()
    _fails(capsys, [*args, "--rnn-prefix", "a.rn"], "found prefixes ['a.rnn.', 'b.rnn.']")


def test_ablate_explains_a_state_dict_saved_inside_a_dict(flipflop_state, tmp_path, capsys):
    net, _ = flipflop_state
    path = tmp_path / "nested.pt"
    torch.save({"model": net.state_dict(), "epoch": 3}, path)
    _fails(capsys, ["ablate", str(path), "--task", "flipflop"], "dicts under ['model']")


def test_run_rejects_unknown_preset_and_task(tmp_path, capsys):
    _fails(capsys, ["run", "--preset", "huge", "--out", str(tmp_path)], "unknown preset 'huge'")
    _fails(capsys, ["run", "--tasks", "parity", "--out", str(tmp_path)], "unknown task")
    _fails(capsys, ["run", "--lr-schedule", "linear", "--out", str(tmp_path)], "lr_schedule")


def test_an_empty_output_path_is_refused(capsys):
    _fails(capsys, ["run", "--out", "", *RUN_ARGS], "output directory must be a path")


def test_unwritable_directory_fails_before_training(tmp_path, capsys, monkeypatch):
    import schurfast.training

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the output directory")

    monkeypatch.setattr(schurfast.training, "train", no_training)
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    _fails(capsys, ["run", "--out", str(blocker), *RUN_ARGS], "not a directory")
    _fails(capsys, ["run", "--out", str(blocker / "sub"), *RUN_ARGS], "not writable")
    assert blocker.read_text() == "keep me"


def test_a_failed_training_ends_with_one_line_and_status_1(tmp_path, capsys, monkeypatch):
    import schurfast.training

    def diverge(*args, **kwargs):
        raise schurfast.training.TrainingError("seed 0: 25 consecutive non-finite steps")

    monkeypatch.setattr(schurfast.training, "train", diverge)
    assert main(["run", "--out", str(tmp_path / "run"), *RUN_ARGS]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "schurfast run: failed: seed 0: 25 consecutive non-finite steps"
    assert not any("Traceback" in line for line in lines)


def test_run_options_are_checked_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "never"
    for args, match in [
        (["--alphas", "0.9,0.9"], "alphas must be distinct; repeated: [0.9]"),
        (["--tasks", "copy,copy"], "tasks must be distinct; repeated: ['copy']"),
        (["--tasks", "copy", "--copy-constructions", ",,"], "copy task needs at least one"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--copy-hidden-size", "3", "--tasks", "copy"], "needs an even copy_hidden_size"),
    ]:
        _fails(capsys, ["run", "--out", str(out), *args], match)
    assert not out.exists()


def test_ablate_rejects_models_that_do_not_fit(tmp_path, capsys):
    cases = {
        "size": (Net(2, 6, 3), "input size 2"),
        "lstm": (torch.nn.LSTM(3, 6), "GRU or LSTM"),
        "layers": (Net(3, 6, 3, num_layers=2), "one-layer"),
    }
    for name, (module, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(module.state_dict(), path)
        _fails(capsys, ["ablate", str(path), "--task", "flipflop"], match)

    relu = torch.nn.RNN(3, 6, nonlinearity="relu", batch_first=True)
    with pytest.raises(ValueError, match="tanh"):
        protocol.ablate_model((relu, torch.nn.Linear(6, 3)), "flipflop")


def test_ablate_rejects_corrupt_files_and_keeps_the_output_directory(
    flipflop_state, tmp_path, capsys
):
    _, good = flipflop_state
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("earlier work")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model at all" * 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:-200])
    module = tmp_path / "module.pt"
    torch.save(Net(3, 4, 3), module)

    for path, match in [
        (garbage, "neither a torch.save'd state dict nor"),
        (truncated, "could not be read"),
        (module, "weights_only=True"),
        (tmp_path / "missing.pt", "does not exist"),
    ]:
        _fails(capsys, ["ablate", str(path), "--task", "flipflop", "--out", str(out)], match)
    _fails(capsys, ["ablate", str(good), "--task", "parity"], "unknown task")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "earlier work"


def test_ablate_and_run_never_write_over_each_others_tables(flipflop_state, tmp_path, capsys):
    _, path = flipflop_state
    run_dir, ablate_dir = tmp_path / "run", tmp_path / "ablate"
    assert main(["run", "--out", str(run_dir), *RUN_ARGS]) == 0
    before = (run_dir / "results.parquet").read_bytes()
    capsys.readouterr()
    args = ["--task", "flipflop", "--controls", "1", "--heldout-size", "8"]
    _fails(capsys, ["ablate", str(path), *args, "--out", str(run_dir)], "files of `schurfast run`")
    assert (run_dir / "results.parquet").read_bytes() == before

    assert main(["ablate", str(path), *args, "--out", str(ablate_dir)]) == 0
    # the same model again (say with other alphas) continues its own ablation
    assert main(["ablate", str(path), *args, "--alpha", "0.8", "--out", str(ablate_dir)]) == 0
    capsys.readouterr()
    other = tmp_path / "other.pt"
    state = torch.load(path, weights_only=True)
    torch.save({k: v * 0.5 for k, v in state.items()}, other)
    _fails(capsys, ["ablate", str(other), *args, "--out", str(ablate_dir)], "another model")
    _fails(capsys, ["run", "--out", str(ablate_dir), *RUN_ARGS], "files of `schurfast ablate`")

    # the claim is made before any unit: an interrupted run keeps its directory
    interrupted = tmp_path / "interrupted"
    assert main(["run", "--out", str(interrupted), *RUN_ARGS, "--device", "tpu"]) == 2
    assert not interrupted.exists()  # a bad option claims nothing
    interrupted.mkdir()
    (interrupted / "owner.json").write_text('{"command": "run"}\n')
    capsys.readouterr()
    _fails(capsys, ["ablate", str(path), *args, "--out", str(interrupted)], "`schurfast run`")

    # a directory from before owner files: its model table tells an ablation from a run
    (ablate_dir / "owner.json").unlink()
    (ablate_dir / "manifest.json").unlink()
    _fails(capsys, ["run", "--out", str(ablate_dir), *RUN_ARGS], "files of `schurfast ablate`")
    assert main(["ablate", str(path), *args, "--out", str(ablate_dir)]) == 0


def test_ablate_names_the_tensor_that_is_wrong(flipflop_state, tmp_path, capsys):
    net, _ = flipflop_state
    good = net.state_dict()
    cases = {
        "nan": ({**good, "rnn.weight_ih_l0": good["rnn.weight_ih_l0"] * np.nan},
                "rnn.weight_ih_l0 holds NaN or Inf"),
        "inf": ({**good, "readout.weight": good["readout.weight"] * np.inf},
                "readout.weight holds NaN or Inf"),
        "complex": ({**good, "rnn.weight_hh_l0": good["rnn.weight_hh_l0"].to(torch.complex64)},
                    "rnn.weight_hh_l0 must hold real floating-point numbers, got torch.complex64"),
        "int": ({**good, "rnn.weight_hh_l0": good["rnn.weight_hh_l0"].long()},
                "must hold real floating-point numbers, got torch.int64"),
        "huge": ({**good, "rnn.weight_hh_l0": good["rnn.weight_hh_l0"].double() * 1e200},
                 "beyond the float32 range"),
        "no_ih": ({k: v for k, v in good.items() if k != "rnn.weight_ih_l0"},
                  "no rnn.weight_ih_l0"),
        "one_bias": ({k: v for k, v in good.items() if k != "rnn.bias_ih_l0"},
                     "rnn.bias_hh_l0 without its partner"),
        "bias_size": ({**good, "rnn.bias_hh_l0": torch.zeros(3)},
                      "size mismatch for bias_hh_l0"),
    }  # fmt: skip
    for name, (state, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(state, path)
        _fails(capsys, ["ablate", str(path), "--task", "flipflop"], match)

    rnn, readout = net.rnn, net.readout
    broken = torch.nn.Linear(11, 3)
    with torch.no_grad():
        broken.weight.copy_(readout.weight)
        broken.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="bias_y holds NaN or Inf"):
        protocol.ablate_model((rnn, broken), "flipflop")


def test_report_of_a_directory_without_results_fails_cleanly(tmp_path, capsys):
    _fails(capsys, ["report", str(tmp_path)], "missing results.parquet")
