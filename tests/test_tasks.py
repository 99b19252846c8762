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
