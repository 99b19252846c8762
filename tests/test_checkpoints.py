import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import schurfast
from schurfast.checkpoints import load_checkpoint, save_checkpoint
from schurfast.models import TanhRNN
from schurfast.tasks import make_task
from schurfast.training import train


@pytest.mark.parametrize(
    "construction,H,bias", [("dense", 7, False), ("cayley", 9, False), ("dense", 6, True)]
)
def test_checkpoint_round_trip(tmp_path, construction, H, bias):
    model = TanhRNN(3, H, 2, construction, bias=bias, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "model.safetensors"

    save_checkpoint(model, path, task="flipflop", seed=3, metrics={"fvu": 0.01})
    loaded, meta = load_checkpoint(path)

    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(loaded.W_hh, model.W_hh)
    assert loaded.config == model.config
    assert meta["task"] == "flipflop" and meta["seed"] == 3 and meta["metrics"] == {"fvu": 0.01}
    assert meta["construction"] == construction and meta["width"] == H
    assert meta["schurfast_version"] == schurfast.__version__
    assert list(tmp_path.iterdir()) == [path]


def test_checkpoint_keeps_train_info(tmp_path):
    task = make_task("sine")
    model = train(
        task, hidden_size=5, seeds=(1,), epochs=1, batches_per_epoch=2, quiet=True, eval_n=8
    )[0]
    path = save_checkpoint(model, tmp_path / "m.safetensors", task=task.name, **task.params)

    loaded, meta = load_checkpoint(path)

    assert loaded.train_info["seed"] == 1 and loaded.train_info["steps"] == 2
    assert loaded.train_info["config"]["task"] == "sine"
    assert meta["seed"] == 1 and meta["task"] == "sine"
    assert meta["heldout_metric"] == model.train_info["heldout_metric"]
    assert meta["frequencies"] == list(task.params["frequencies"])
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_load_checkpoint_errors(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ValueError, match="missing.safetensors: no such file"):
        load_checkpoint(missing)

    good = save_checkpoint(TanhRNN(2, 5, 1), tmp_path / "good.safetensors", seed=0)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(ValueError, match="truncated.safetensors: not a readable safetensors"):
        load_checkpoint(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="garbage.safetensors: not a readable"):
        load_checkpoint(garbage)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, foreign, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="foreign.safetensors: a safetensors file without"):
        load_checkpoint(foreign)

    # right metadata, wrong tensors
    config = TanhRNN(2, 5, 1).config
    header = {"schurfast.model": json.dumps(config), "schurfast.meta": "{}"}
    mismatched = tmp_path / "mismatched.safetensors"
    save_file({"weight_hh": torch.zeros(4, 4)}, mismatched, metadata=header)
    with pytest.raises(ValueError, match="mismatched.safetensors: inconsistent"):
        load_checkpoint(mismatched)


def test_save_checkpoint_errors(tmp_path):
    with pytest.raises(TypeError, match="model must be a TanhRNN"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="JSON-like"):
        save_checkpoint(TanhRNN(2, 4, 1), tmp_path / "x.safetensors", thing=object())
    assert list(tmp_path.iterdir()) == []


def _with_header(tmp_path, name, config, meta="{}", tensors=None):
    path = tmp_path / name
    tensors = TanhRNN(3, 8, 2).state_dict() if tensors is None else tensors
    save_file(
        tensors, path, metadata={"schurfast.model": json.dumps(config), "schurfast.meta": meta}
    )
    return path


def test_load_checkpoint_header_errors(tmp_path, monkeypatch):
    # a header that disagrees with the tensors must be refused before any model is built
    def refuse(*args, **kwargs):
        raise AssertionError("load_checkpoint built a model from an unchecked header")

    monkeypatch.setattr("schurfast.checkpoints.TanhRNN", refuse)
    config = TanhRNN(3, 8, 2).config

    for k, meta in enumerate(("[]", "null")):
        path = _with_header(tmp_path, f"meta{k}.safetensors", config, meta=meta)
        with pytest.raises(ValueError, match=f"meta{k}.safetensors: the metadata must be"):
            load_checkpoint(path)

    huge = _with_header(tmp_path, "huge.safetensors", {**config, "hidden_size": 10**7})
    with pytest.raises(ValueError, match=r"huge.safetensors: .*weight_hh: expected \[10000000"):
        load_checkpoint(huge)

    no = _with_header(tmp_path, "no.safetensors", {**config, "hidden_bias": "no"})
    with pytest.raises(ValueError, match="no.safetensors: .*hidden_bias must be true or false"):
        load_checkpoint(no)

    listed = _with_header(tmp_path, "listed.safetensors", [1, 2])
    with pytest.raises(ValueError, match="listed.safetensors: the model config must be"):
        load_checkpoint(listed)

    unsized = _with_header(tmp_path, "unsized.safetensors", {**config, "input_size": "3"})
    with pytest.raises(ValueError, match="unsized.safetensors: .*input_size must be a positive"):
        load_checkpoint(unsized)


def test_save_checkpoint_metadata_conversion(tmp_path):
    path = save_checkpoint(
        TanhRNN(2, 4, 1),
        tmp_path / "m.safetensors",
        arr=np.arange(3),
        grid=np.ones((2, 2), dtype=np.float32),
        scalar=np.float32(0.5),
        count=np.int64(7),
        nested={"flag": np.bool_(True), "values": (np.int32(1), torch.tensor([2.0]))},
    )
    meta = load_checkpoint(path)[1]

    assert meta["arr"] == [0, 1, 2] and meta["grid"] == [[1.0, 1.0], [1.0, 1.0]]
    assert meta["scalar"] == 0.5 and meta["count"] == 7
    assert meta["nested"] == {"flag": True, "values": [1, [2.0]]}
    with pytest.raises(TypeError, match=r"checkpoint metadata 'nested.inner\[1\]' must be"):
        save_checkpoint(TanhRNN(2, 4, 1), tmp_path / "x.safetensors", nested={"inner": [1, {2}]})


def test_save_checkpoint_path_errors(tmp_path):
    model = TanhRNN(2, 4, 1)
    nowhere = tmp_path / "nowhere" / "m.safetensors"
    with pytest.raises(ValueError, match=r"m.safetensors: the directory .*nowhere does not exist"):
        save_checkpoint(model, nowhere)
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path}: is a directory"):
        save_checkpoint(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("construction,bias", [("dense", True), ("cayley", False)])
def test_checkpoint_keeps_float64(tmp_path, construction, bias):
    model = TanhRNN(3, 7, 2, construction, bias=bias, seed=1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12 * torch.randn_like(p))
    path = save_checkpoint(model, tmp_path / "m.safetensors")

    loaded, _ = load_checkpoint(path)

    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    for (k, v), (k2, v2) in zip(
        loaded.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.equal(loaded(x), model(x))


def test_save_checkpoint_refuses_mixed_dtypes(tmp_path):
    model = TanhRNN(2, 4, 1)
    model.weight_hy = torch.nn.Parameter(model.weight_hy.double())
    with pytest.raises(TypeError, match="must share one dtype.* got torch.float32, torch.float64"):
        save_checkpoint(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_load_checkpoint_refuses_integer_tensors(tmp_path):
    tensors = {k: v.to(torch.int64) for k, v in TanhRNN(3, 8, 2).state_dict().items()}
    path = _with_header(tmp_path, "ints.safetensors", TanhRNN(3, 8, 2).config, tensors=tensors)
    with pytest.raises(
        ValueError, match="ints.safetensors: .*must be floating point, got torch.int64"
    ):
        load_checkpoint(path)
