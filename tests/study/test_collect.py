"""`safecls study collect`: what a reader needs of each run lands in study/, records gzipped, and the committed
data manifest is never replaced by one of other data."""

from __future__ import annotations

import gzip
import json

import pytest

from safecls.errors import ConfigError
from safecls.study.commands import collect, collect_run


def _runs(tmp_path, manifest: dict):
    runs = tmp_path / "runs"
    (runs / "recipe" / "data").mkdir(parents=True)
    (runs / "recipe" / "data" / "manifest.json").write_text(json.dumps(manifest))
    (runs / "recipe" / "plain" / "final").mkdir(parents=True)
    (runs / "recipe" / "plain" / "config.yaml").write_text("steps: 3\n")
    (runs / "recipe" / "plain" / "final" / "adapter_model.safetensors").write_bytes(b"weights")
    (runs / "study" / "prefill").mkdir(parents=True)
    (runs / "study" / "prefill" / "metrics.json").write_text("{}")
    (runs / "study" / "prefill" / "records.jsonl").write_text('{"key": "a"}\n{"key": "b"}\n')
    return runs


def test_configs_and_records_land_in_study_and_weights_stay_out(tmp_path):
    study = tmp_path / "study"
    collect(_runs(tmp_path, {"seed": 0}), study)
    assert (study / "train" / "plain" / "config.yaml").read_text() == "steps: 3\n"
    assert not list(study.rglob("*.safetensors"))
    with gzip.open(study / "eval" / "prefill" / "records.jsonl.gz", "rt") as f:
        assert [json.loads(x)["key"] for x in f] == ["a", "b"]
    assert json.loads((study / "data" / "manifest.json").read_text()) == {"seed": 0}


def test_a_manifest_of_other_data_goes_beside_the_committed_one(tmp_path):
    study = tmp_path / "study"
    (study / "data").mkdir(parents=True)
    (study / "data" / "manifest.json").write_text(json.dumps({"seed": 0, "limit": 1029}))
    collect(_runs(tmp_path, {"seed": 0, "limit": 250}), study)
    assert json.loads((study / "data" / "manifest.json").read_text()) == {"seed": 0, "limit": 1029}
    beside = [p for p in (study / "data").glob("manifest-*.json")]
    assert len(beside) == 1 and json.loads(beside[0].read_text()) == {"seed": 0, "limit": 250}
    collect(_runs(tmp_path / "again", {"seed": 0, "limit": 250}), study)  # the same data again: no new file
    assert len(list((study / "data").glob("manifest*.json"))) == 2


def test_named_runs_alone_are_collected_under_their_new_names(tmp_path, capsys):
    from safecls.cli import main

    runs = _runs(tmp_path, {"seed": 0, "limit": 250})
    other = tmp_path / "elsewhere" / "head"
    (other / "final").mkdir(parents=True)
    (other / "config.yaml").write_text("l2: 0.01\n")
    (other / "fit.json").write_text("{}")
    (other / "final" / "calibration.json").write_text('{"decode": {}}')
    study = tmp_path / "study"
    assert main(["study", "collect", "--study", str(study), "--run", f"{other}=head-new",
                 "--run", str(runs / "study" / "prefill")]) == 0
    assert sorted(p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file()) == [
        "eval/prefill/metrics.json", "eval/prefill/records.jsonl.gz",
        "train/head-new/calibration.json", "train/head-new/config.yaml", "train/head-new/fit.json"]
    assert "head-new" in capsys.readouterr().out


def test_a_folder_that_is_no_run_is_refused(tmp_path):

    with pytest.raises(ConfigError, match="neither a study run"):
        collect_run(tmp_path, tmp_path / "study")
