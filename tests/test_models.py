import numpy as np
import pytest
import torch
from torch import nn

from schurfast.models import TanhRNN
from schurfast.rollout import rollout_reference


def _loop(model, x):
    # the model's equations written out, one step at a time
    W_hh, W_xh, W_hy = model.W_hh.double(), model.W_xh.double(), model.W_hy.double()
    b = 0 if model.b is None else model.b.double()
    c = 0 if model.c is None else model.c.double()
    h = torch.zeros(x.shape[0], model.hidden_size, dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        h = torch.tanh(h @ W_hh.T + x[:, t].double() @ W_xh.T + b)
        ys.append(h @ W_hy.T + c)
    return torch.stack(ys, 1)


def _nonnormality(W):
    W = W.double()
    return float(torch.linalg.norm(W @ W.T - W.T @ W) / torch.linalg.norm(W) ** 2)


CASES = [("dense", "default", 7), ("dense", "orthogonal", 9), ("dense", "normal", 10)]
CASES += [("cayley", "orthogonal", 10), ("cayley", "orthogonal", 11)]


@pytest.mark.parametrize("construction,init,H", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_forward_matches_the_equations(construction, init, H, bias):
    model = TanhRNN(3, H, 2, construction, init, bias=bias, seed=5)
    if bias:
        with torch.no_grad():
            model.bias_h.normal_()
            model.bias_y.normal_()
    x = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(0))

    y = model(x)

    assert y.shape == (4, 6, 2) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), _loop(model, x), rtol=1e-5, atol=1e-5)
    assert model.W_hh.shape == (H, H) and model.W_xh.shape == (H, 3) and model.W_hy.shape == (2, H)
    assert (model.b is None) == (not bias) and (model.c is None) == (not bias)


def test_initializations_have_their_spectra():
    H = 12
    orth = TanhRNN(2, H, 1, init="orthogonal", seed=1).W_hh.double()
    torch.testing.assert_close(orth @ orth.T, torch.eye(H, dtype=torch.float64), atol=1e-5, rtol=0)

    normal = TanhRNN(2, H, 1, init="normal", seed=1).W_hh
    assert _nonnormality(normal) < 1e-6

    default = TanhRNN(2, H, 1, init="default", seed=1).W_hh
    assert default.abs().max() <= H**-0.5
    assert _nonnormality(default) > 1e-2

    cayley = TanhRNN(2, H, 1, "cayley", seed=1)
    assert cayley.W_hh.dtype == torch.float64
    assert _nonnormality(cayley.W_hh) < 1e-14
    # D starts at the spectrum of a random Gaussian matrix, not at an orthogonal one
    moduli = torch.linalg.eigvals(cayley.W_hh).abs()
    assert moduli.max() - moduli.min() > 0.1


def test_same_seed_same_init_different_seed_different_init():
    for construction in ("dense", "cayley"):
        a = TanhRNN(3, 8, 2, construction, seed=4)
        b = TanhRNN(3, 8, 2, construction, seed=4)
        c = TanhRNN(3, 8, 2, construction, seed=5)
        assert torch.equal(a.W_hh, b.W_hh) and torch.equal(a.W_xh, b.W_xh)
        assert not torch.equal(a.W_xh, c.W_xh)


def test_cayley_stays_normal_while_it_trains():
    model = TanhRNN(2, 10, 1, "cayley", seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    gen = torch.Generator().manual_seed(0)
    W0 = model.W_hh
    for _ in range(25):
        x = torch.randn(8, 12, 2, generator=gen)
        loss = (model(x) - x[..., :1].cumsum(1)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    W = model.W_hh
    assert (W - W0).abs().max() > 1e-2
    assert _nonnormality(W) <= 1e-10


@pytest.mark.parametrize("construction", ["dense", "cayley"])
@pytest.mark.parametrize("bias", [False, True])
def test_to_torch_and_back_compute_the_same_function(construction, bias):
    model = TanhRNN(3, 9, 2, construction, bias=bias, seed=2)
    if bias:
        with torch.no_grad():
            model.bias_h.uniform_(-0.5, 0.5)
            model.bias_y.uniform_(-0.5, 0.5)
    x = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(1))

    rnn, readout = model.to_torch()
    back = TanhRNN.from_torch(rnn, readout)

    assert isinstance(rnn, nn.RNN) and isinstance(readout, nn.Linear)
    torch.testing.assert_close(readout(rnn(x)[0]), model(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back(x), model(x), rtol=1e-5, atol=1e-6)
    assert back.construction == "dense"


def test_from_torch_merges_the_two_biases():
    rnn = nn.RNN(2, 6, batch_first=True)
    readout = nn.Linear(6, 3)
    x = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(3))

    model = TanhRNN.from_torch(rnn, readout)

    torch.testing.assert_close(model.b, (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach())
    torch.testing.assert_close(model(x), readout(rnn(x)[0]), rtol=1e-5, atol=1e-6)
    W = rollout_reference(model.W_hh[None], model.W_xh, model.W_hy, x, b=model.b, c=model.c)
    torch.testing.assert_close(W[0], model(x))


def test_from_torch_errors():
    readout = nn.Linear(6, 1)
    with pytest.raises(ValueError, match="got a LSTM; supported: torch.nn.RNN"):
        TanhRNN.from_torch(nn.LSTM(2, 6), readout)
    with pytest.raises(ValueError, match="nonlinearity='relu'"):
        TanhRNN.from_torch(nn.RNN(2, 6, nonlinearity="relu"), readout)
    with pytest.raises(ValueError, match="num_layers=2"):
        TanhRNN.from_torch(nn.RNN(2, 6, num_layers=2), readout)
    with pytest.raises(ValueError, match="bidirectional=True"):
        TanhRNN.from_torch(nn.RNN(2, 6, bidirectional=True), readout)
    with pytest.raises(ValueError, match="in_features=6"):
        TanhRNN.from_torch(nn.RNN(2, 6), nn.Linear(5, 1))


def test_constructor_errors():
    with pytest.raises(ValueError, match="construction must be one of dense, cayley"):
        TanhRNN(2, 4, 1, construction="lowrank")
    with pytest.raises(ValueError, match="init must be one of"):
        TanhRNN(2, 4, 1, init="xavier")
    with pytest.raises(ValueError, match="even hidden_size"):
        TanhRNN(2, 5, 1, init="normal")
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        TanhRNN(2, 0, 1)
    with pytest.raises(ValueError, match=r"x must have shape \[B, L, 2\]"):
        TanhRNN(2, 4, 1)(torch.zeros(3, 5, 4))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_from_torch_casts_every_parameter_to_float32(dtype):
    torch.manual_seed(0)
    rnn = nn.RNN(3, 7, batch_first=True, dtype=dtype)
    readout = nn.Linear(7, 2, dtype=dtype)
    model = TanhRNN.from_torch(rnn, readout)
    x = torch.randn(4, 6, 3, dtype=torch.float64)

    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.b is not None and model.c is not None
    with torch.no_grad():
        expected = readout.double()(rnn.double()(x)[0])
    # the model holds the source's weights rounded to float32
    torch.testing.assert_close(model(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((3, True, 3), {}, TypeError, "hidden_size must be a positive int, got bool"),
        ((3, "8", 3), {}, TypeError, "hidden_size must be a positive int, got str"),
        ((3, 8, 3), dict(seed=-1), ValueError, r"seed must be an int in \[0, 2\*\*64 - 1\]"),
        ((3, 8, 3), dict(seed=2**64), ValueError, r"seed must be an int in \[0, 2\*\*64 - 1\]"),
        ((3, 8, 3), dict(seed=1.7), TypeError, "seed must be an int .* got float 1.7"),
        ((3, 8, 3), dict(bias="no"), TypeError, "bias must be True or False"),
    ],
)
def test_constructor_argument_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        TanhRNN(*args, **kwargs)


def test_constructor_takes_numpy_integers():
    model = TanhRNN(np.int32(3), np.int64(8), np.int16(2), seed=np.uint64(5))
    assert model.config["hidden_size"] == 8 and type(model.hidden_size) is int
    torch.testing.assert_close(model.W_hh, TanhRNN(3, 8, 2, seed=5).W_hh)


def test_forward_errors():
    model = TanhRNN(3, 8, 2)
    with pytest.raises(TypeError, match=r"x must be a torch tensor \[B, L, 3\], got ndarray"):
        model(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \[B, L, 3\], got \[2, 4, 5\]"):
        model(torch.zeros(2, 4, 5))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.int64, torch.bool])
def test_forward_refuses_inputs_that_are_not_real_floating_point(dtype):
    model = TanhRNN(3, 8, 2)
    x = torch.ones(2, 4, 3, dtype=dtype)
    with pytest.raises(
        TypeError, match=f"x must be a real floating-point tensor, got dtype {dtype}"
    ):
        model(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_forward_casts_real_floating_inputs_to_the_parameters_dtype(dtype):
    model = TanhRNN(3, 8, 2)
    x = torch.randn(2, 4, 3).to(dtype)
    y = model(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, model(x.float()))
