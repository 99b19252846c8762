"""The protocol end to end on a tiny configuration: tables, resume, invalidation, report."""

import json

import numpy as np
import pandas as pd
import pytest

from schurfast import protocol
from schurfast.ablation import ALL_SUBSETS
from schurfast.report import build_report

# every task and copy construction, two widths, two seeds; seconds on a laptop
TINY = dict(
    tasks=("copy", "flipflop", "sine", "integration"),
    seeds=(0, 1),
    epochs=1,
    batches_per_epoch=2,
    batch_size=8,
    hidden_size=7,
    copy_hidden_size=8,
    copy_target=None,
    copy_max_steps=None,
    alphas=(0.9,),
    controls=2,
    heldout_size=16,
    train_eval_size=16,
)
N_MODELS = 4 * 2 + 3 * 2


class Interrupt(Exception):
    pass


def _run(out, **kw):
    return protocol.run("quick", out, progress=False, **{"report": False, **TINY, **kw})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("tiny"), report=True)


def test_run_writes_one_row_per_variant(tiny_run):
    res = tiny_run
    df = pd.read_parquet(res.out / "results.parquet")
    pd.testing.assert_frame_equal(df, res.results)

    per_model = len(ALL_SUBSETS) + 3 * TINY["controls"]
    assert len(df) == N_MODELS * per_model
    assert df["model"].nunique() == N_MODELS
    assert set(df["task"]) == set(TINY["tasks"])
    copy = df[df["task"] == "copy"]
    assert set(copy["construction"]) == set(protocol.COPY_CONSTRUCTIONS)
    assert set(copy["hidden_size"]) == {8}
    assert set(df.loc[df["task"] != "copy", "hidden_size"]) == {7}
    assert set(df.loc[df["kind"] == "ablation", "subset"]) == set(ALL_SUBSETS)
    assert set(df.loc[df["kind"] == "control", "subset"]) == {"RR", "RC", "CC"}
    assert (copy["metric_name"] == "accuracy").all()
    assert (df.loc[df["task"] != "copy", "metric_name"] == "fvu").all()


def test_run_deltas_and_sensitivities_follow_their_definitions(tiny_run):
    df = tiny_run.results
    intact = df[(df["kind"] == "ablation") & (df["subset"] == "none")]
    assert (intact["delta"] == 0).all() and (intact["mass"] == 0).all()
    assert intact["S"].isna().all()

    for _, part in df.groupby("model"):
        ref = part[(part["kind"] == "ablation") & (part["subset"] == "none")]
        np.testing.assert_array_equal(part["delta"], part["metric"] - ref["metric"].iloc[0])
        np.testing.assert_array_equal(part["delta_fvu"], part["fvu"] - ref["fvu"].iloc[0])

    removed = df["mass"] >= protocol.MIN_MASS
    assert removed.any()
    np.testing.assert_allclose(
        df.loc[removed, "S"], df.loc[removed, "delta"] / df.loc[removed, "mass"], rtol=1e-12
    )
    assert df.loc[~removed, "S"].isna().all()


def test_controls_match_the_norm_of_their_ablation(tiny_run):
    df = tiny_run.results
    abl = df[df["kind"] == "ablation"].set_index(["model", "alpha", "subset"])
    ctl = df[df["kind"] == "control"]
    keys = pd.MultiIndex.from_frame(ctl[["model", "alpha", "subset"]])
    np.testing.assert_array_equal(ctl["delta_norm"], abl["delta_norm"].reindex(keys))
    np.testing.assert_array_equal(ctl["n_R"], abl["n_R"].reindex(keys))
    # distinct draws are distinct perturbations wherever anything is perturbed
    moved = ctl[ctl["delta_norm"] > 0]
    per_draw = moved.groupby(["model", "alpha", "subset"])["fvu"].nunique()
    assert (per_draw > 1).any()


def test_run_writes_report_manifest_and_figures(tiny_run):
    out = tiny_run.out
    summary = (out / "summary.md").read_text()
    for heading in ("replay accuracy by threshold", "Single-block ablations", "all 8 subsets"):
        assert heading in summary
    for figure in ("copy_accuracy_vs_mass.png", "block_effects.png", "eigenvalue_moduli.png"):
        assert (out / "figures" / figure).read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "figures/block_effects.png" in report

    manifest = json.loads((out / "manifest.json").read_text())
    computed = sum(manifest["units_computed"].values())
    assert computed > 0 and f"({computed} units computed, 0 reused" in report
    assert manifest["config"]["seeds"] == list(TINY["seeds"])
    assert manifest["versions"]["torch"]
    assert len(manifest["checkpoints"]) == N_MODELS
    for path, sha in manifest["checkpoints"].items():
        assert protocol.file_sha256(out / path) == sha


def test_report_rebuilds_from_stored_results(tiny_run, tmp_path):
    out = tiny_run.out
    before = (out / "summary.md").read_text()
    (out / "summary.md").unlink()
    (out / "figures" / "block_effects.png").unlink()
    assert build_report(out) == out / "report.md"
    assert (out / "summary.md").read_text() == before
    assert (out / "figures" / "block_effects.png").is_file()

    with pytest.raises(ValueError, match="missing results.parquet"):
        build_report(tmp_path)


def test_rerun_redoes_nothing_and_gives_identical_results(tiny_run):
    again = _run(tiny_run.out)
    assert again.computed == {}
    assert again.reused["models"] == N_MODELS
    pd.testing.assert_frame_equal(again.results, tiny_run.results, check_exact=True)


# a part of TINY: its models and their results must be the same as in the full run
PART = dict(tasks=("copy", "flipflop"), copy_constructions=("dense-orthogonal", "cayley"))
N_PART = 2 * 2 + 2


@pytest.mark.parametrize("stop_after", [3, N_PART + 6])
def test_resume_after_interruption_gives_identical_results(tiny_run, tmp_path, stop_after):
    seen = []

    def hook(kind, path):
        seen.append(kind)
        if len(seen) == stop_after:
            raise Interrupt

    with pytest.raises(Interrupt):
        _run(tmp_path, on_unit=hook, **PART)
    assert not (tmp_path / "results.parquet").exists()

    resumed = _run(tmp_path, **PART)
    assert sum(resumed.reused.values()) == stop_after
    assert resumed.results["model"].nunique() == N_PART
    expected = tiny_run.results[tiny_run.results["model"].isin(resumed.results["model"])]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "results.parquet"),
        expected.reset_index(drop=True),
        check_exact=True,
    )


def test_changed_option_recomputes_only_what_depends_on_it(tiny_run, tmp_path):
    import shutil

    shutil.copytree(tiny_run.out / "units", tmp_path / "units")
    res = _run(tmp_path, alphas=(0.9, 0.95))
    assert "models" not in res.computed and "schur" not in res.computed
    # one new evaluated chunk per model for the new threshold, the old ones reused
    assert res.computed["eval"] == N_MODELS
    assert res.reused["eval"] == N_MODELS
    old = res.results[res.results["alpha"] == 0.9].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, tiny_run.results, check_exact=True)

    res = _run(tmp_path, epochs=2, tasks=("flipflop",))
    assert res.computed["models"] == 2
    res = _run(tmp_path, epochs=2, tasks=("flipflop",), lr_schedule="constant")
    assert res.computed["models"] == 2


def test_damaged_units_are_moved_aside_and_computed_again(tiny_run, tmp_path, caplog):
    import shutil

    shutil.copytree(tiny_run.out / "units", tmp_path / "units")
    units = tmp_path / "units"
    model = sorted((units / "models").glob("flipflop_*seed1_*.safetensors"))[0]
    model.write_bytes(model.read_bytes()[:-100])  # truncated
    # the copy models (H = 8) stay intact, so their Schur unit is read again
    schur = sorted((units / "schur").glob("H8_*.npz"))[0]
    schur.write_bytes(b"")  # empty
    variants = sorted((units / "variants").glob("H8_*.npz"))[0]
    np.savez(variants, V=np.zeros(3))  # a key missing
    evaluated = sorted((units / "eval").glob("integration_*.npz"))
    evaluated[0].write_bytes(evaluated[0].read_bytes()[:40])  # not a zip any more
    with np.load(evaluated[1]) as z:
        np.savez(evaluated[1], metric=z["metric"][:1], fvu=z["fvu"][:1])  # too short
    # a sound checkpoint of another model under this one's name
    other = sorted((units / "models").glob("sine_*seed1_*.safetensors"))[0]
    swapped = sorted((units / "models").glob("sine_*seed0_*.safetensors"))[0]
    swapped.write_bytes(other.read_bytes())
    damaged = [model, schur, variants, *evaluated[:2], swapped]

    res = _run(tmp_path)
    pd.testing.assert_frame_equal(res.results, tiny_run.results, check_exact=True)
    for path in damaged:
        assert path.with_name(path.name + ".unreadable").is_file()
        assert path.is_file()  # written again
    # the groups of the damaged checkpoints train again; their intact checkpoints are kept
    assert res.computed["models"] == 2 and res.reused["models"] == N_MODELS - 2
    # H = 7 gets a new Schur unit, as its rewritten checkpoints have other hashes
    assert res.computed["schur"] == 2 and res.computed["eval"] >= 2
    moved = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(moved) == len(damaged)


def test_odd_widths_for_the_normal_construction_are_refused_up_front():
    with pytest.raises(ValueError, match="dense-normal needs an even copy_hidden_size, got 3"):
        protocol.resolve_config("quick", tasks=("copy",), copy_hidden_size=3)
    with pytest.raises(ValueError, match="init 'normal' needs an even hidden_size, got 5"):
        protocol.resolve_config("quick", tasks=("sine",), init="normal", hidden_size=5)
    cfg = protocol.resolve_config("quick", tasks=("copy",), copy_hidden_size=3,
                                  copy_constructions=("cayley",))  # fmt: skip
    assert cfg.copy_hidden_size == 3


def test_copy_warmup_is_a_unit_of_its_own(tmp_path):
    warm = dict(
        tasks=("copy",),
        copy_constructions=("dense-orthogonal",),
        copy_warmup_replay_steps=8,
        copy_warmup_target=1.0,
        copy_warmup_max_steps=2,
        copy_target=1.0,
        copy_max_steps=3,
    )
    seen = []
    res = _run(tmp_path, on_unit=lambda kind, path: seen.append(kind), **warm)
    assert seen[:4] == ["warmup", "warmup", "models", "models"]
    # steps count the warm-up too; unreachable targets run both budgets
    assert res.models["steps"].tolist() == [2 + 3, 2 + 3]
    assert res.models["solved"].notna().all()

    again = _run(tmp_path, **{**warm, "copy_max_steps": 4})
    assert again.reused["warmup"] == 2 and again.computed["models"] == 2
    assert again.models["steps"].tolist() == [2 + 4, 2 + 4]


def test_resolve_config_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        protocol.resolve_config("huge")
    with pytest.raises(ValueError, match="unknown task"):
        protocol.resolve_config("quick", tasks=("copy", "parity"))
    with pytest.raises(ValueError, match="unknown construction"):
        protocol.resolve_config("quick", copy_constructions=("lstm",))
    with pytest.raises(ValueError, match=r"alphas\[0\] must be a finite number in \(0, 1\]"):
        protocol.resolve_config("quick", alphas=(1.5,))
    with pytest.raises(TypeError, match=r"alphas must be a list or tuple, got float 0.9"):
        protocol.resolve_config("quick", alphas=0.9)
    with pytest.raises(TypeError, match=r"tasks must be a list or tuple, got str 'copy'"):
        protocol.resolve_config("quick", tasks="copy")
    with pytest.raises(TypeError, match=r"seeds\[1\] must be an int"):
        protocol.resolve_config("quick", seeds=(0, 1.5))
    with pytest.raises(ValueError, match="init must be one of"):
        protocol.resolve_config("quick", init="xavier")
    with pytest.raises(ValueError, match=r"task_params names unknown task\(s\) \['parity'\]"):
        protocol.resolve_config("quick", task_params={"parity": {}})
    with pytest.raises(ValueError, match="bad parameters for task 'sine'"):
        protocol.resolve_config("quick", task_params={"sine": {"bogus": 1}})
    with pytest.raises(ValueError, match="control_seed must be a non-negative int"):
        protocol.resolve_config("quick", control_seed=-1)
    with pytest.raises(TypeError, match="device must be a str"):
        protocol.resolve_config("quick", device=None)
    with pytest.raises(ValueError, match="unknown option"):
        protocol.resolve_config("quick", epoch=3)
    with pytest.raises(ValueError, match="device"):
        protocol.resolve_config("quick", device="tpu")
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        protocol.resolve_config("quick", lr_schedule="linear")
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\), got nan"):
        protocol.resolve_config("quick", lr=float("nan"))
    with pytest.raises(ValueError, match="controls must be a non-negative int, got -1"):
        protocol.resolve_config("quick", controls=-1)
    with pytest.raises(ValueError, match=r"copy_target must be .* in \[0, 1\], got 1.5"):
        protocol.resolve_config("quick", copy_target=1.5)
    with pytest.raises(TypeError, match="copy_max_steps must be a positive int, got float"):
        protocol.resolve_config("quick", copy_max_steps=2.5)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        protocol.resolve_config("quick", backend="gpu")


def test_a_backend_that_cannot_run_on_the_device_is_refused_before_training(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend 'triton' needs device 'cuda'"):
        protocol.resolve_config("quick", backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert protocol.resolve_config("quick", backend="triton").backend == "triton"


def test_paper_preset_has_the_design_settings():
    cfg = protocol.resolve_config("paper")
    assert cfg.seeds == (0, 1, 2)
    assert (cfg.epochs, cfg.batches_per_epoch, cfg.batch_size, cfg.lr) == (30, 128, 64, 1e-3)
    assert cfg.lr_schedule == "cosine"
    assert (cfg.hidden_size, cfg.copy_hidden_size, cfg.init) == (64, 72, "orthogonal")
    assert cfg.copy_solved == 0.99 and cfg.alphas == (0.85, 0.9, 0.95)
    specs = protocol.model_specs(cfg)
    assert len(specs) == 3 * (4 + 3)
    assert {s.label for s in specs if s.task == "copy"} == set(protocol.COPY_CONSTRUCTIONS)
