import json

import pytest

from safecls.errors import ConfigError
from safecls.study.commands import merged


def test_a_model_measured_again_replaces_its_entry_and_the_others_stay(tmp_path):
    path = tmp_path / "head.json"
    path.write_text(json.dumps([{"model": "a", "auc": 0.9}, {"model": "probe", "auc": 0.99}]))
    out = merged(path, {"a": {"model": "a", "auc": 0.95}, "b": {"model": "b", "auc": 0.7}})
    assert list(out) == ["a", "probe", "b"]
    assert [row["auc"] for row in out.values()] == [0.95, 0.99, 0.7]


def test_a_dict_file_merges_by_name_and_a_missing_file_is_the_new_entries(tmp_path):
    path = tmp_path / "utility.json"
    assert merged(path, {"base": {"mean": 2.0}}) == {"base": {"mean": 2.0}}
    path.write_text(json.dumps({"base": {"mean": 2.0}, "safecls": {"mean": 2.3}}))
    assert merged(path, {"safecls": {"mean": 2.2}}) == {"base": {"mean": 2.0}, "safecls": {"mean": 2.2}}


@pytest.mark.parametrize("text", ["{not json", "3", '[{"auc": 0.9}]'])
def test_a_file_that_is_not_results_by_model_is_refused_with_the_fix(tmp_path, text):
    path = tmp_path / "head.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="delete it or pass another --out"):
        merged(path, {})
