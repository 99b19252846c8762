import numpy as np
import pytest
import torch

from schurfast.tasks import HELDOUT_SEED, TASKS, Batch, make_task, plot_trials

SHAPES = {
    "copy": (8, 8, 136),
    "flipflop": (3, 3, 25),
    "sine": (1, 1, 50),
    "integration": (4, 1, 48),
}


@pytest.mark.parametrize("name", TASKS)
def test_sample_shapes_and_dtypes(name):
    task = make_task(name)
    n_in, n_out, L = SHAPES[name]
    batch = task.sample(5, seed=3)

    assert isinstance(batch, Batch)
    assert (task.input_size, task.output_size, task.seq_len) == (n_in, n_out, L)
    assert batch.x.shape == (5, L, n_in) and batch.x.dtype == torch.float32
    assert batch.y.shape == (5, L, n_out) and batch.y.dtype == torch.float32
    assert batch.mask.shape == (5, L, n_out) and batch.mask.dtype == torch.bool
    assert batch.mask.any()


@pytest.mark.parametrize("name", TASKS)
def test_sample_is_deterministic_per_seed_and_leaves_global_rng(name):
    task = make_task(name)
    # the global generators are read here only to check that sampling leaves them alone
    torch.manual_seed(0)
    a = task.sample(7, seed=11)
    state_torch = torch.get_rng_state()
    state_np = np.random.get_state()[1].copy()  # noqa: NPY002
    b = task.sample(7, seed=11)
    c = task.sample(7, seed=(11, 0, 1))

    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.x, c.x)
    assert torch.equal(state_torch, torch.get_rng_state())
    assert np.array_equal(state_np, np.random.get_state()[1])  # noqa: NPY002


@pytest.mark.parametrize("name", TASKS)
def test_fvu_of_perfect_and_mean_prediction(name):
    task = make_task(name)
    batch = task.sample(33, seed=HELDOUT_SEED)
    mask = batch.mask
    y_bar = (batch.y * mask).sum((0, 1)) / mask.sum((0, 1))

    assert task.fvu(batch.y, batch) == 0.0
    assert task.fvu(y_bar.expand_as(batch.y), batch) == pytest.approx(1.0, rel=1e-9)
    # entries outside the mask do not count
    noisy = torch.where(mask, batch.y, batch.y + 100.0)
    assert task.fvu(noisy, batch) == 0.0


@pytest.mark.parametrize("name", TASKS)
def test_metric_batches_over_a_leading_variant_axis(name):
    task = make_task(name)
    batch = task.sample(9, seed=1)
    variants = torch.stack([batch.y, batch.y + 0.3 * torch.randn_like(batch.y), -batch.y])

    values = task.metric(variants, batch)
    fvus = task.fvu(variants.numpy(), batch)

    assert isinstance(values, np.ndarray) and values.shape == (3,)
    for v in range(3):
        assert values[v] == pytest.approx(task.metric(variants[v], batch), rel=1e-12)
        assert fvus[v] == pytest.approx(task.fvu(variants[v], batch), rel=1e-12)


def test_copy_accuracy_counts_replay_signs():
    task = make_task("copy")
    batch = task.sample(16, seed=2)
    S = task.params["n_symbols"]

    assert task.metric_name == "accuracy"
    assert task.metric(batch.y, batch) == 1.0
    assert task.metric(-batch.y, batch) == 0.0
    # the presentation steps are not scored, half the replay steps flipped gives one half
    flipped = batch.y.clone()
    flipped[:, :S] = 5.0
    flipped[:, S : S + 64] *= -1
    assert task.metric(flipped, batch) == pytest.approx(0.5)
    # the replay repeats the presented symbols with period n_symbols
    assert torch.equal(batch.y[:, S : 2 * S], batch.x[:, :S])
    assert torch.equal(batch.y[:, 2 * S : 3 * S], batch.x[:, :S])
    assert not batch.mask[:, :S].any() and batch.mask[:, S:].all()


def test_flipflop_target_holds_last_pulse():
    task = make_task("flipflop", pulse_prob=0.3)
    batch = task.sample(20, seed=4)
    x, y, mask = batch.x.numpy(), batch.y.numpy(), batch.mask.numpy()

    for n, t, k in zip(*np.nonzero(mask), strict=True):
        last = np.nonzero(x[n, : t + 1, k])[0][-1]
        assert y[n, t, k] == x[n, last, k]
    assert set(np.unique(x)) <= {-1.0, 0.0, 1.0}


def test_integration_target_sums_selected_stream():
    task = make_task("integration", noise_std=0.3, target_scale=0.5)
    batch = task.sample(10, seed=5)
    x, y = batch.x.double(), batch.y.double()
    context = x[:, 0, 2:].argmax(-1)
    selected = x[torch.arange(10), :, context]

    torch.testing.assert_close(y[..., 0], 0.5 * selected.cumsum(1), rtol=1e-5, atol=1e-5)


def test_make_task_errors():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_task("nope")
    with pytest.raises(ValueError, match="bad parameters"):
        make_task("sine", amplitude=2)
    with pytest.raises(ValueError, match="pulse_prob"):
        make_task("flipflop", pulse_prob=0.0)
    with pytest.raises(ValueError, match="metric_steps"):
        make_task("copy", replay_steps=16)
    with pytest.raises(ValueError, match="positive int"):
        make_task("sine").sample(0, seed=1)
    with pytest.raises(TypeError, match="seed"):
        make_task("sine").sample(3, seed=1.5)
    task = make_task("flipflop")
    with pytest.raises(ValueError, match="y_hat must have shape"):
        task.fvu(torch.zeros(3, 25, 2), task.sample(3, seed=0))


def test_plot_trials_writes_png(tmp_path):
    import matplotlib.pyplot as plt

    task = make_task("integration")
    batch = task.sample(4, seed=0)
    figures_before = plt.get_fignums()
    path = plot_trials(task, batch, tmp_path / "trials.png", y_hat=batch.y * 0.9, n_trials=2)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == figures_before


@pytest.mark.parametrize(
    "name, params, error, match",
    [
        ("copy", dict(bits=True), TypeError, "copy task: bits must be a positive int, got bool"),
        ("copy", dict(metric_steps=True), TypeError, "copy task: metric_steps .* got bool"),
        ("copy", dict(n_symbols=2.0), TypeError, "copy task: n_symbols .* got float"),
        ("sine", dict(seq_len=True), TypeError, "sine task: seq_len .* got bool"),
        ("sine", dict(frequencies=[float("nan")]), ValueError, r"sine task: frequencies\[0\]"),
        ("sine", dict(frequencies="abc"), TypeError, "sine task: frequencies must be a sequence"),
        ("sine", dict(frequencies=[]), ValueError, "sine task: frequencies must hold at least"),
        ("sine", dict(cue_offset=float("nan")), ValueError, "sine task: cue_offset .* finite"),
        ("sine", dict(cue_offset="x"), TypeError, "sine task: cue_offset .* got str"),
        ("flipflop", dict(pulse_prob=np.array([0.5, 0.5])), TypeError, "flipflop task: pulse_p"),
        ("flipflop", dict(pulse_prob=float("nan")), ValueError, r"pulse_prob .* in \(0, 1\]"),
        ("integration", dict(noise_std=float("nan")), ValueError, "integration task: noise_std"),
        ("integration", dict(target_scale=float("inf")), ValueError, "task: target_scale"),
        ("integration", dict(bias_scale=None), TypeError, "integration task: bias_scale"),
    ],
)
def test_task_parameter_errors(name, params, error, match):
    with pytest.raises(error, match=match):
        make_task(name, **params)


def test_task_name_errors():
    with pytest.raises(TypeError, match=r"task name must be a str.*got list \['copy'\]"):
        make_task(["copy"])


def test_tasks_take_numpy_integers():
    task = make_task(
        "copy", bits=np.int64(4), n_symbols=np.int32(3), replay_steps=5, metric_steps=np.int16(5)
    )
    assert task.params["bits"] == 4 and type(task.params["bits"]) is int
    assert task.sample(np.int64(2), seed=np.uint8(7)).x.shape == (2, 8, 4)


@pytest.mark.parametrize(
    "seed, error",
    [(-1, ValueError), (np.int64(-3), ValueError), ((1, -2), ValueError), ([], ValueError)]
    + [("abc", TypeError), (1.7, TypeError), (True, TypeError), ([1, [2]], TypeError)],
)
def test_sample_seed_errors(seed, error):
    with pytest.raises(error, match="seed must be a non-negative int"):
        make_task("flipflop").sample(2, seed)


def test_fvu_errors():
    task = make_task("sine", frequencies=[0.0])
    batch = task.sample(3, seed=0)
    with pytest.raises(ValueError, match="target has zero variance.*FVU is undefined"):
        task.fvu(batch.y + 0.1, batch)
    with pytest.raises(TypeError, match="y_hat must be a real"):
        task.fvu(batch.y.to(torch.complex64), batch)


def test_copy_accuracy_of_nan_predictions_is_nan_per_variant():
    task = make_task("copy", n_symbols=2, bits=3, replay_steps=6, metric_steps=4)
    batch = task.sample(5, seed=0)
    poisoned = batch.y.clone()
    poisoned[1, 2 + 3, 0] = float("nan")
    # outside the counted window a NaN does not count
    outside = batch.y.clone()
    outside[1, 2 + 5, 0] = float("nan")

    assert np.isnan(task.metric(poisoned, batch))
    assert task.metric(outside, batch) == 1.0
    values = task.metric(torch.stack([batch.y, poisoned, -batch.y]), batch)
    assert values[0] == 1.0 and np.isnan(values[1]) and values[2] == 0.0


@pytest.mark.parametrize("name", ["copy", "sine"])
def test_metric_argument_type_errors(name, tmp_path):
    task = make_task(name)
    batch = task.sample(2, seed=0)
    with pytest.raises(TypeError, match=r"batch must be a Batch \(from task.sample\), got tuple"):
        task.metric(batch.y, (1, 2, 3))
    with pytest.raises(TypeError, match=r"batch must be a Batch .*got tuple"):
        task.fvu(batch.y, tuple(batch))
    with pytest.raises(TypeError, match=r"batch.y must be a torch tensor, got ndarray"):
        task.metric(batch.y, batch._replace(y=batch.y.numpy()))
    with pytest.raises(TypeError, match=r"batch must be a Batch .*got NoneType"):
        plot_trials(task, None, tmp_path / "x.png")
    for call in (task.metric, task.fvu):
        with pytest.raises(
            TypeError, match="y_hat must be a real torch tensor or numpy array, got NoneType"
        ):
            call(None, batch)
    assert list(tmp_path.iterdir()) == []
