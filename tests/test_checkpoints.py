import json

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
