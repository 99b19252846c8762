"""One-layer tanh RNN with dense or Cayley-normal recurrent matrices.

    h_t = tanh(W_hh h_{t-1} + W_xh x_t + b),   h_0 = 0,   y_t = W_hy h_t + c

Constructions of ``W_hh [H, H]``:

- ``"dense"``: a free matrix, initialized ``"default"`` (uniform +-1/sqrt(H), as
  ``torch.nn.RNN``), ``"orthogonal"`` (random orthogonal) or ``"normal"``
  (``Q0 blockdiag([[a, -b], [b, a]]) Q0^T``, a and b Gaussian with variance 1/6, Q0 random
  orthogonal; H even).
- ``"cayley"``: ``W_hh = O(A) D O(A)^T`` with ``A`` skew-symmetric (zero at start),
  ``O(A) = (I - A)(I + A)^{-1}`` and ``D`` block diagonal with trainable 2x2 blocks
  ``[[a, -b], [b, a]]`` (one 1x1 block when H is odd). D starts at the eigenvalues of a random
  Gaussian matrix with entry variance 1/H: each conjugate pair gives one block; real
  eigenvalues are sorted and paired, each pair becoming the block with the pair's mean as
  ``a`` and half its spread as ``b``. ``W_hh`` is assembled in float64, so it is normal to
  rounding: the ``W_hh`` property of a Cayley model is float64, every other tensor has the
  parameters' dtype (float32).

``W_xh`` and ``W_hy`` start uniform in +-1/sqrt(H) (the ``torch.nn.RNN`` and
``torch.nn.Linear`` defaults); biases, when present, start at zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from schurfast.rollout import rollout_reference
from schurfast.tasks import _check_int

CONSTRUCTIONS = ("dense", "cayley")
DENSE_INITS = ("default", "orthogonal", "normal")


def _cayley_blocks(H: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None]:
    """(a [H//2], b [H//2], lone [1] or None) from the spectrum of a random Gaussian matrix."""
    G = torch.randn(H, H, generator=gen, dtype=torch.float64) / math.sqrt(H)
    lam = np.linalg.eigvals(G.numpy())

    pairs = lam[lam.imag > 0]
    real = np.sort(lam[lam.imag == 0].real)
    lone = None
    if real.size % 2:
        # odd H: keep the largest real eigenvalue as the 1x1 block
        lone, real = real[-1:], real[:-1]
    mean = (real[0::2] + real[1::2]) / 2
    spread = (real[1::2] - real[0::2]) / 2
    a = np.concatenate([pairs.real, mean])
    b = np.concatenate([pairs.imag, spread])
    as_t = lambda v: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))  # noqa: E731
    return as_t(a), as_t(b), None if lone is None else as_t(lone)


class TanhRNN(nn.Module):
    """One-layer tanh RNN ``x [B, L, I] -> y [B, L, O]``.

    Args:
        input_size: I.
        hidden_size: H.
        output_size: O.
        construction: ``"dense"`` or ``"cayley"``.
        init: for ``"dense"``: ``"default"``, ``"orthogonal"`` or ``"normal"``; ignored
            for ``"cayley"``.
        bias: with a hidden bias ``b [H]`` and a readout bias ``c [O]``.
        seed: seed of the initialization, an int in ``[0, 2**64 - 1]`` (a generator of its
            own; default 0).

    Example:
        >>> model = TanhRNN(3, 16, 3)
        >>> model(torch.zeros(2, 5, 3)).shape
        torch.Size([2, 5, 3])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        construction: str = "dense",
        init: str = "orthogonal",
        bias: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        input_size = _check_int(input_size, "input_size")
        hidden_size = _check_int(hidden_size, "hidden_size")
        output_size = _check_int(output_size, "output_size")
        # the range torch.Generator.manual_seed takes without wrapping around
        seed = _check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {type(bias).__name__} {bias!r}")
        if construction not in CONSTRUCTIONS:
            raise ValueError(
                f"construction must be one of {', '.join(CONSTRUCTIONS)}, got {construction!r}"
            )
        if construction == "dense" and init not in DENSE_INITS:
            raise ValueError(f"init must be one of {', '.join(DENSE_INITS)}, got {init!r}")
        if construction == "dense" and init == "normal" and hidden_size % 2:
            raise ValueError(f"init='normal' needs an even hidden_size, got {hidden_size}")

        H = hidden_size
        self.input_size, self.hidden_size, self.output_size = input_size, H, output_size
        self.construction = construction
        self.init = init if construction == "dense" else "cayley"
        self.train_info: dict[str, Any] | None = None
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(H)

        if construction == "dense":
            self.weight_hh = nn.Parameter(self._dense_init(H, init, gen))
        else:
            # A = S - S^T from the strict upper triangle of S
            self.skew = nn.Parameter(torch.zeros(H, H))
            a, b, lone = _cayley_blocks(H, gen)
            self.block_a = nn.Parameter(a)
            self.block_b = nn.Parameter(b)
            self.register_parameter("block_lone", None if lone is None else nn.Parameter(lone))

        self.weight_xh = nn.Parameter(
            torch.empty(H, input_size).uniform_(-bound, bound, generator=gen)
        )
        self.weight_hy = nn.Parameter(
            torch.empty(output_size, H).uniform_(-bound, bound, generator=gen)
        )
        self.register_parameter("bias_h", nn.Parameter(torch.zeros(H)) if bias else None)
        self.register_parameter("bias_y", nn.Parameter(torch.zeros(output_size)) if bias else None)

    @staticmethod
    def _dense_init(H: int, init: str, gen: torch.Generator) -> Tensor:
        if init == "default":
            return torch.empty(H, H).uniform_(-1 / math.sqrt(H), 1 / math.sqrt(H), generator=gen)
        if init == "orthogonal":
            return nn.init.orthogonal_(torch.empty(H, H), generator=gen)

        Q0 = nn.init.orthogonal_(torch.empty(H, H, dtype=torch.float64), generator=gen)
        ab = torch.randn(2, H // 2, generator=gen, dtype=torch.float64) / math.sqrt(6.0)
        return (Q0 @ _block_diag(ab[0], ab[1], None) @ Q0.T).float()

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, {self.output_size},"
            f" construction={self.construction!r}, init={self.init!r},"
            f" bias={self.bias_h is not None}"
        )

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild an empty model of the same shape."""
        return dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            output_size=self.output_size,
            construction=self.construction,
            init=self.init,
            hidden_bias=self.bias_h is not None,
            readout_bias=self.bias_y is not None,
        )

    def recurrent(self, dtype: torch.dtype | None = None) -> Tensor:
        """Differentiable ``W_hh [H, H]`` in ``dtype`` (default: the parameters' dtype).

        For ``"cayley"`` the product is formed in float64 and then cast.
        """
        dtype = dtype or self.weight_xh.dtype
        if self.construction == "dense":
            return self.weight_hh.to(dtype)

        S = self.skew.to(torch.float64).triu(1)
        A = S - S.T
        eye = torch.eye(self.hidden_size, dtype=torch.float64, device=A.device)
        # (I - A) and (I + A)^{-1} commute, so O(A) = (I + A)^{-1} (I - A)
        O_A = torch.linalg.solve(eye + A, eye - A)
        D = _block_diag(self.block_a, self.block_b, self.block_lone, dtype=torch.float64)
        return (O_A @ D @ O_A.T).to(dtype)

    @property
    def W_hh(self) -> Tensor:
        """``[H, H]``, detached; float64 for ``"cayley"``, else the parameters' dtype."""
        dtype = torch.float64 if self.construction == "cayley" else None
        with torch.no_grad():
            return self.recurrent(dtype).detach().clone()

    @property
    def W_xh(self) -> Tensor:
        """``[H, I]``, detached."""
        return self.weight_xh.detach().clone()

    @property
    def W_hy(self) -> Tensor:
        """``[O, H]``, detached."""
        return self.weight_hy.detach().clone()

    @property
    def b(self) -> Tensor | None:
        """Hidden bias ``[H]`` (detached), or None."""
        return None if self.bias_h is None else self.bias_h.detach().clone()

    @property
    def c(self) -> Tensor | None:
        """Readout bias ``[O]`` (detached), or None."""
        return None if self.bias_y is None else self.bias_y.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, L, I] -> y [B, L, O]``, differentiable.

        ``x`` may have any real floating dtype; it is cast to the parameters' dtype.

        Raises:
            TypeError: ``x`` is not a torch tensor, or not real floating point (complex,
                integer or bool).
            ValueError: ``x`` is not ``[B, L, I]`` with this model's ``I``.
        """
        if not isinstance(x, Tensor):
            raise TypeError(
                f"x must be a torch tensor [B, L, {self.input_size}], got {type(x).__name__};"
                " convert with torch.as_tensor(x)"
            )
        if not x.is_floating_point():
            hint = "" if x.is_complex() else "; convert with x.float()"
            raise TypeError(f"x must be a real floating-point tensor, got dtype {x.dtype}{hint}")
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must have shape [B, L, {self.input_size}], got {list(x.shape)}")
        x = x.to(self.weight_xh.dtype)
        W_hh = self.recurrent()[None]
        y = rollout_reference(W_hh, self.weight_xh, self.weight_hy, x, b=self.bias_h, c=self.bias_y)
        return y[0]

    def to_torch(self) -> tuple[nn.RNN, nn.Linear]:
        """``(torch.nn.RNN, torch.nn.Linear)`` computing the same function (batch first).

        The hidden bias goes into ``bias_ih_l0``; ``bias_hh_l0`` is zero.
        """
        dtype = self.weight_xh.dtype
        has_b, has_c = self.bias_h is not None, self.bias_y is not None
        rnn = nn.RNN(
            self.input_size,
            self.hidden_size,
            nonlinearity="tanh",
            bias=has_b,
            batch_first=True,
            dtype=dtype,
        )
        readout = nn.Linear(self.hidden_size, self.output_size, bias=has_c, dtype=dtype)
        with torch.no_grad():
            rnn.weight_hh_l0.copy_(self.recurrent(torch.float64))
            rnn.weight_ih_l0.copy_(self.weight_xh)
            if has_b:
                rnn.bias_ih_l0.copy_(self.bias_h)
                rnn.bias_hh_l0.zero_()
            readout.weight.copy_(self.weight_hy)
            if has_c:
                readout.bias.copy_(self.bias_y)
        return rnn.to(self.weight_xh.device), readout.to(self.weight_xh.device)

    @classmethod
    def from_torch(cls, rnn: nn.Module, readout: nn.Module) -> TanhRNN:
        """A dense ``TanhRNN`` from a one-layer tanh ``torch.nn.RNN`` and a ``torch.nn.Linear``.

        Supported: ``torch.nn.RNN`` with ``nonlinearity="tanh"``, ``num_layers=1``,
        ``bidirectional=False`` (its two biases are merged into ``b``), and a ``torch.nn.Linear``
        readout from the hidden state.

        The model is float32 whatever the dtype of ``rnn`` and ``readout``: every parameter,
        biases included, is cast.

        Raises:
            ValueError: for anything else (LSTM, GRU, relu, several layers, bidirectional, a
                readout of the wrong size).
        """
        supported = (
            "supported: torch.nn.RNN(nonlinearity='tanh', num_layers=1, bidirectional=False)"
            " with a torch.nn.Linear readout"
        )
        if type(rnn) is not nn.RNN:
            raise ValueError(f"got a {type(rnn).__name__}; {supported}")
        if rnn.nonlinearity != "tanh" or rnn.num_layers != 1 or rnn.bidirectional:
            raise ValueError(
                f"got nn.RNN(nonlinearity={rnn.nonlinearity!r}, num_layers={rnn.num_layers},"
                f" bidirectional={rnn.bidirectional}); {supported}"
            )
        if not isinstance(readout, nn.Linear) or readout.in_features != rnn.hidden_size:
            raise ValueError(
                f"readout must be an nn.Linear with in_features={rnn.hidden_size}, got"
                f" {readout!r}; {supported}"
            )

        # every parameter takes the model's dtype (float32), whatever the source's dtype; the
        # two biases are summed in float64 before the cast
        model = cls(rnn.input_size, rnn.hidden_size, readout.out_features, init="default")
        dtype = model.weight_xh.dtype
        with torch.no_grad():
            model.weight_hh.copy_(rnn.weight_hh_l0)
            model.weight_xh.copy_(rnn.weight_ih_l0)
            model.weight_hy.copy_(readout.weight)
            if rnn.bias:
                b = rnn.bias_ih_l0.double() + rnn.bias_hh_l0.double()
                model.bias_h = nn.Parameter(b.to("cpu", dtype))
            if readout.bias is not None:
                model.bias_y = nn.Parameter(readout.bias.detach().to("cpu", dtype))
        return model.to(rnn.weight_hh_l0.device)


def _block_diag(
    a: Tensor, b: Tensor, lone: Tensor | None, dtype: torch.dtype | None = None
) -> Tensor:
    """Block diagonal ``[H, H]`` of the 2x2 blocks ``[[a, -b], [b, a]]`` (then ``lone``)."""
    dtype = dtype or a.dtype
    a, b = a.to(dtype), b.to(dtype)
    blocks = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    D = torch.block_diag(*blocks) if a.numel() else a.new_zeros(0, 0)
    if lone is not None:
        D = torch.block_diag(D, lone.to(dtype).reshape(1, 1))
    return D
