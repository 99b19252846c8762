import logging

import numpy as np
import pytest
import torch

from schurfast.models import TanhRNN
from schurfast.tasks import HELDOUT_SEED, FlipFlopTask, make_task
from schurfast.training import TrainingError, evaluate, train

SMALL = dict(hidden_size=7, epochs=2, batches_per_epoch=4, batch_size=8, quiet=True, eval_n=32)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny matmuls: several threads only contend on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class PoisonedFlipFlop(FlipFlopTask):
    """Flipflop whose batches for chosen (seed, step) pairs have NaN targets."""

    def __init__(self, poisoned):
        super().__init__()
        self.poisoned = poisoned

    def sample(self, n, seed):
        batch = super().sample(n, seed)
        if isinstance(seed, tuple) and (seed[0], seed[1]) in self.poisoned:
            batch.y[0, 0, 0] = float("nan")
            batch.mask[0, 0, 0] = True
        return batch


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b, atol):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


@pytest.mark.parametrize("construction", ["dense", "cayley"])
def test_seed_trained_with_others_equals_seed_trained_alone(construction):
    task = make_task("flipflop")
    together = train(task, construction=construction, seeds=(0, 1, 2), **SMALL)
    alone = train(task, construction=construction, seeds=(1,), **SMALL)

    _assert_same_weights(together[1], alone[0], atol=1e-5)
    assert together[1].train_info["heldout_metric"] == pytest.approx(
        alone[0].train_info["heldout_metric"], abs=1e-4
    )
    # and the seeds really differ from one another
    assert not torch.allclose(together[0].W_hh, together[1].W_hh)
    if construction == "cayley":
        W = together[1].W_hh
        assert float(torch.linalg.norm(W @ W.T - W.T @ W) / torch.linalg.norm(W) ** 2) <= 1e-10


def test_training_is_deterministic_and_lowers_the_loss():
    task = make_task("sine")
    config = dict(SMALL, hidden_size=16, epochs=3, batches_per_epoch=10, batch_size=16)
    untrained = evaluate(TanhRNN(1, 16, 1, seed=0), task, n=32)
    a = train(task, seeds=(0,), **config)[0]
    b = train(task, seeds=(0,), **config)[0]

    _assert_same_weights(a, b, atol=0)
    assert a.train_info["heldout_metric"] < untrained


def test_train_info_and_evaluate():
    task = make_task("copy", replay_steps=8, metric_steps=8)
    models = train(task, seeds=(3, 4), **{**SMALL, "hidden_size": 9})

    for seed, model in zip((3, 4), models, strict=True):
        info = model.train_info
        assert info["seed"] == seed and info["steps"] == 8 and info["skipped_steps"] == 0
        assert np.isfinite(info["final_loss"]) and info["wall_s"] > 0
        assert info["reached_target"] is None and info["metric_name"] == "accuracy"
        assert info["config"]["construction"] == "dense" and info["config"]["max_steps"] == 8
        assert 0.0 <= info["heldout_metric"] <= 1.0
        assert evaluate(model, task, n=32) == pytest.approx(info["heldout_metric"], abs=1e-12)

    batch = task.sample(32, HELDOUT_SEED)
    with torch.no_grad():
        direct = task.metric(models[0](batch.x), batch)
    assert evaluate(models[0], task, n=32) == pytest.approx(direct, abs=1e-12)


def test_non_finite_steps_are_skipped_per_seed():
    clean = train(make_task("flipflop"), seeds=(0, 1), **SMALL)
    poisoned = train(PoisonedFlipFlop({(1, 2), (1, 5)}), seeds=(0, 1), **SMALL)

    assert [m.train_info["skipped_steps"] for m in poisoned] == [0, 2]
    assert poisoned[1].train_info["steps"] == 8
    for model in poisoned:
        assert all(torch.isfinite(p).all() for p in model.parameters())
    # the clean seed does not notice, the poisoned one missed two updates
    _assert_same_weights(poisoned[0], clean[0], atol=1e-6)
    assert not torch.allclose(poisoned[1].W_hh, clean[1].W_hh, atol=1e-6)


def test_an_epoch_of_skipped_steps_is_logged_not_fatal(caplog):
    task = PoisonedFlipFlop({(1, k) for k in range(4)})
    with caplog.at_level(logging.INFO, logger="schurfast.training"):
        models = train(task, seeds=(0, 1), max_bad_steps=5, **SMALL)

    assert [m.train_info["skipped_steps"] for m in models] == [0, 4]
    assert np.isfinite(models[1].train_info["final_loss"])
    # one warning for the seed; its later skips are counted, and logged at INFO
    skips = [r for r in caplog.records if "non-finite loss or gradient" in r.getMessage()]
    assert [r.levelno for r in skips] == [logging.WARNING] + [logging.INFO] * 3


def test_consecutive_non_finite_steps_raise_naming_seed_and_step():
    task = PoisonedFlipFlop({(2, k) for k in range(3, 8)})
    with pytest.raises(
        TrainingError, match="seed 2: 3 consecutive non-finite steps ending at step 5"
    ):
        train(task, seeds=(0, 2), max_bad_steps=3, **SMALL)


def test_early_stopping_on_target_and_step_budget():
    task = make_task("flipflop")
    easy = train(task, seeds=(0,), target=10.0, max_steps=40, **SMALL)[0]
    hard = train(task, seeds=(0, 1), target=0.0, max_steps=11, **SMALL)
    copy = make_task("copy", replay_steps=8, metric_steps=8)
    reached = train(copy, seeds=(0,), target=0.0, **{**SMALL, "epochs": 5})[0]

    assert easy.train_info["steps"] == 4 and easy.train_info["reached_target"] is True
    assert [m.train_info["steps"] for m in hard] == [11, 11]
    assert [m.train_info["reached_target"] for m in hard] == [False, False]
    assert reached.train_info["steps"] == 4 and reached.train_info["reached_target"] is True


def test_one_log_line_per_epoch_and_cosine_schedule(caplog):
    with caplog.at_level(logging.INFO, logger="schurfast.training"):
        models = train(make_task("integration"), seeds=(0,), lr_schedule="cosine", **SMALL)
    lines = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]

    assert len(lines) == 2 and "validation fvu" in lines[0]
    assert np.isfinite(models[0].train_info["heldout_metric"])


def test_train_errors():
    task = make_task("sine")
    with pytest.raises(ValueError, match="distinct ints"):
        train(task, seeds=(1, 1), **SMALL)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train(task, **{**SMALL, "epochs": 0})
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        train(task, lr_schedule="step", **SMALL)
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\)"):
        train(task, lr=0.0, **SMALL)
    with pytest.raises(TypeError, match="task must come from make_task"):
        train("sine", **SMALL)
    with pytest.raises(ValueError, match="construction must be one of"):
        train(task, construction="lstm", **SMALL)
    with pytest.raises(ValueError, match="needs I=4, O=1"):
        evaluate(TanhRNN(1, 4, 1), make_task("integration"))


def test_init_from_continues_training_without_changing_its_inputs():
    task = make_task("flipflop")
    first = train(task, seeds=(0, 1), **SMALL)
    before = [_weights(m) for m in first]
    second = train(task, seeds=(0, 1), init_from=first, **SMALL)

    for model, weights in zip(first, before, strict=True):
        for k, v in _weights(model).items():
            assert torch.equal(v, weights[k])
    assert [m.train_info["steps"] for m in second] == [16, 16]
    assert second[0].train_info["config"]["init_from_steps"] == [8, 8]
    assert not torch.allclose(second[0].W_hh, first[0].W_hh)


def test_init_from_errors():
    task = make_task("flipflop")
    first = train(task, seeds=(0, 1), **SMALL)
    with pytest.raises(ValueError, match="one model per seed"):
        train(task, seeds=(0,), init_from=first, **SMALL)
    with pytest.raises(ValueError, match="was trained with seed 1"):
        train(task, seeds=(0, 2), init_from=first, **SMALL)
    with pytest.raises(ValueError, match="construction"):
        train(task, seeds=(0, 1), construction="cayley", init_from=first, **SMALL)


def _no_model_building(monkeypatch):
    # argument errors must come before any model is built or any step is taken
    def refuse(*args, **kwargs):
        raise AssertionError("train built a model before checking its arguments")

    monkeypatch.setattr("schurfast.training.TanhRNN", refuse)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(lr=float("inf")), ValueError, r"lr must be a finite number in \(0, inf\)"),
        (dict(lr=float("nan")), ValueError, "lr must be a finite number"),
        (dict(grad_clip=float("inf")), ValueError, "grad_clip must be a finite number"),
        (dict(seeds=[-1]), ValueError, r"seeds\[0\] must be an int in \[0, 2\*\*64 - 1\]"),
        (dict(seeds=[0.2, 0.7]), TypeError, r"seeds\[0\] .* got float 0.2"),
        (dict(seeds=[1.5, 2.5]), TypeError, r"seeds\[0\] .* got float 1.5"),
        (dict(seeds=[True, 0]), TypeError, r"seeds\[0\] .* got bool"),
        (dict(seeds="01"), TypeError, "seeds must be a sequence of ints, got str"),
        (dict(seeds=5), TypeError, r"got int; for one seed write seeds=\(5,\)"),
        (dict(target="a"), TypeError, r"target \(fvu\) must be a finite number"),
        (dict(target=float("nan")), ValueError, r"target \(fvu\) must be a finite number"),
        (dict(max_steps="3"), TypeError, "max_steps must be a positive int, got str"),
        (dict(max_steps=1.5), TypeError, "max_steps must be a positive int, got float"),
        (dict(max_bad_steps=1.5), TypeError, "max_bad_steps must be a positive int"),
        (dict(bias="yes"), TypeError, "bias must be True or False"),
        (dict(quiet="no"), TypeError, "quiet must be True or False, got str"),
        (dict(init="xavier"), ValueError, "init must be one of default, orthogonal, normal"),
        (dict(device="tpu"), ValueError, r"device must be 'cpu' or 'cuda\[:N\]', got 'tpu'"),
        (dict(device="meta"), ValueError, "device must be 'cpu' or 'cuda"),
        (dict(device=None), TypeError, "device must be a str or torch.device, got NoneType"),
    ],
)
def test_train_argument_errors(monkeypatch, kwargs, error, match):
    _no_model_building(monkeypatch)
    with pytest.raises(error, match=match):
        train(make_task("sine"), **{**SMALL, **kwargs})


def test_train_refuses_cuda_without_a_device(monkeypatch):
    _no_model_building(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' was asked for, but torch sees no CUDA device"):
        train(make_task("sine"), device="cuda", **SMALL)


def test_init_from_models_must_match_the_run():
    task = make_task("flipflop", seq_len=6)
    plain, biased = TanhRNN(3, 7, 3, seed=0), TanhRNN(3, 7, 3, bias=True, seed=1)
    for models in ([plain, biased], [biased, plain]):
        with pytest.raises(ValueError, match="has bias=(True|False), but bias=False"):
            train(task, seeds=(0, 1), init_from=models, **SMALL)
    readout_only = TanhRNN(3, 7, 3, seed=0)
    readout_only.bias_y = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="has a readout bias=True, but bias=False"):
        train(task, seeds=(0,), init_from=[readout_only], **SMALL)
    broken = TanhRNN(3, 7, 3, seed=0)
    with torch.no_grad():
        broken.weight_hy[0, 0] = float("nan")
    with pytest.raises(ValueError, match="seed 0 holds NaN or Inf in weight_hy"):
        train(task, seeds=(0,), init_from=[broken], **SMALL)
    with pytest.raises(ValueError, match="holds weight_hh as torch.float64.*model.float"):
        train(task, seeds=(0,), init_from=[TanhRNN(3, 7, 3).double()], **SMALL)
    mixed = [TanhRNN(3, 8, 3, init="normal" if s else "default", seed=s) for s in (0, 2)]
    with pytest.raises(ValueError, match=r"share one init, got \['default', 'normal'\]"):
        train(task, seeds=(0, 2), init_from=mixed, **{**SMALL, "hidden_size": 8})

    # the models' own initialization is what the run records
    start = [TanhRNN(3, 7, 3, init="default", seed=s) for s in (0, 1)]
    (model, _) = train(task, seeds=(0, 1), init="orthogonal", init_from=start, **SMALL)
    assert model.init == "default" and model.train_info["config"]["init"] == "default"


def test_evaluate_names_a_task_given_by_name():
    with pytest.raises(TypeError, match=r"task must come from make_task, got str \(make_task"):
        evaluate(TanhRNN(3, 4, 3), "flipflop")


def test_train_init_from_errors(monkeypatch):
    _no_model_building(monkeypatch)
    models = (TanhRNN(1, 7, 1) for _ in range(3))
    with pytest.raises(TypeError, match="init_from must be a list or tuple .* got generator"):
        train(make_task("sine"), init_from=models, **SMALL)


def test_train_refuses_a_task_without_target_variance(monkeypatch):
    _no_model_building(monkeypatch)
    with pytest.raises(ValueError, match="zero variance.*on the validation set of eval_n=32"):
        train(make_task("sine", frequencies=[0.0]), **SMALL)


def test_evaluate_errors():
    model, task = TanhRNN(1, 4, 1), make_task("sine")
    for seed, error in [(-3, ValueError), ("abc", TypeError), (1.7, TypeError)]:
        with pytest.raises(error, match="seed must be a non-negative int"):
            evaluate(model, task, n=8, seed=seed)
    with pytest.raises(TypeError, match="n must be a positive int, got bool"):
        evaluate(model, task, n=True)
    assert np.isfinite(evaluate(model, task, n=np.int64(8), seed=np.int64(3)))
