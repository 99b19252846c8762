"""build_report on the stored files of a run: every malformed file is named in a ValueError."""

import json
import shutil

import pandas as pd
import pytest

from schurfast import protocol
from schurfast.report import build_report

# one sine model: a second or two
ONE = dict(
    tasks=("sine",),
    seeds=(0,),
    epochs=1,
    batches_per_epoch=2,
    batch_size=8,
    hidden_size=6,
    alphas=(0.9,),
    controls=2,
    heldout_size=16,
    train_eval_size=16,
)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    protocol.run("quick", out, progress=False, report=False, **ONE)
    return out


@pytest.fixture
def run_dir(stored, tmp_path):
    """A fresh copy of the stored run, for one test to damage."""
    return shutil.copytree(stored, tmp_path / "run")


def test_report_of_an_intact_copy(run_dir):
    assert build_report(run_dir) == run_dir / "report.md"
    assert "Configuration `quick`" in (run_dir / "report.md").read_text()


def test_report_without_a_manifest(run_dir):
    (run_dir / "manifest.json").unlink()
    assert "Configuration `unknown`" in build_report(run_dir).read_text()


def test_report_of_a_file_or_a_missing_directory(tmp_path):
    file = tmp_path / "results.parquet"
    file.write_text("x")
    with pytest.raises(ValueError, match=r"results.parquet' is not a directory"):
        build_report(file)
    with pytest.raises(ValueError, match=r"nowhere' does not exist"):
        build_report(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "text, match",
    [
        ("garbage", r"manifest.json' is not valid JSON \(Expecting value"),
        ("[1, 2]", r"manifest.json' must hold a JSON object, got list \[1, 2\]"),
        ('{"config": [1]}', r"manifest.json': config must be a JSON object, got list"),
        ('{"timings_s": {"train_s": "x"}}', r"manifest.json': timings_s must map names to"),
        ('{"units_computed": 3}', r"manifest.json': units_computed must be a JSON object"),
    ],
)
def test_report_of_a_malformed_manifest(run_dir, text, match):
    (run_dir / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        build_report(run_dir)


def test_report_of_a_manifest_that_is_not_text(run_dir):
    (run_dir / "manifest.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"manifest.json' is not valid JSON"):
        build_report(run_dir)


@pytest.mark.parametrize("name", ["results", "models", "spectra"])
def test_report_of_a_table_with_other_columns(run_dir, name):
    pd.DataFrame({"a": [1], "b": [2]}).to_parquet(run_dir / f"{name}.parquet")
    lacking = {"results": "task, construction, seed", "models": "model, task", "spectra": "model"}
    with pytest.raises(ValueError, match=f"{name}.parquet' .* lacks the column.* {lacking[name]}"):
        build_report(run_dir)


def test_report_lists_the_missing_columns(run_dir):
    path = run_dir / "results.parquet"
    pd.read_parquet(path).drop(columns=["alpha", "S"]).to_parquet(path)
    with pytest.raises(ValueError, match=r"results.parquet' .* lacks the column\(s\) alpha, S$"):
        build_report(run_dir)


@pytest.mark.parametrize("name", ["results", "models", "spectra"])
def test_report_of_a_table_without_rows(run_dir, name):
    path = run_dir / f"{name}.parquet"
    pd.read_parquet(path).iloc[:0].to_parquet(path)
    with pytest.raises(
        ValueError, match=f"{name}.parquet' is not a table of a run: it has no rows"
    ):
        build_report(run_dir)


def test_report_of_a_table_with_text_for_numbers(run_dir):
    path = run_dir / "results.parquet"
    table = pd.read_parquet(path)
    table.assign(alpha=table["alpha"].astype(str)).to_parquet(path)
    with pytest.raises(ValueError, match=r"results.parquet': column\(s\) alpha must be numeric"):
        build_report(run_dir)


def test_report_of_a_table_that_is_not_parquet(run_dir):
    (run_dir / "spectra.parquet").write_text(json.dumps({"not": "parquet"}))
    with pytest.raises(ValueError, match=r"spectra.parquet' could not be read as a table"):
        build_report(run_dir)
