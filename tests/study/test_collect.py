"""`safecls study collect`: what a reader needs of each run lands in study/, records gzipped, and the committed
data manifest is never replaced by one of other data."""

from __future__ import annotations

import gzip
import json

from safecls.study.commands import collect


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
