"""The quick-check result's typed definition: real outputs fit it, its JSON Schema is current and
validates them, files of older schemas still load, and drift is refused."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from dyadlab.synchrony.check import run_check
from dyadlab.synchrony.results import SCHEMA_PATH, QuickCheckResult, ResultFileError, json_schema, load_result
from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    path = write_dyad_xdf(folder / "dyad.xdf", DyadSpec(blocks=[("rest", 30.0), ("cooperation", 30.0)]))
    result = run_check(path, n_surrogates=30, progress=False, json_out=folder / "check.json", bands="alpha=8-12")
    return result, folder / "check.json"


def test_the_written_json_fits_the_published_json_schema(written):
    _, json_path = written
    document = json.loads(json_path.read_text())
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def test_the_written_json_is_the_model_to_the_byte(written):
    _, json_path = written
    document = json.loads(json_path.read_text())
    model = load_result(json_path)
    assert json.loads(model.model_dump_json(exclude_unset=True)) == document
    assert (
        model.conditions["cooperation"].bands["alpha"]["plv"].mean
        == document["conditions"]["cooperation"]["alpha"]["plv"]["mean"]
    )


def test_the_published_json_schema_is_current():
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), (
        "docs/quickcheck-schema.json is stale: run `python -m dyadlab.synchrony.results`"
    )


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "1.3"])
def test_results_of_older_schemas_load(version):
    result = load_result(DATA / f"quickcheck_schema_{version}.json")
    assert result.schema_version == version
    assert result.timing_s["xdf_read"] > 0  # 1.x called it pyxdf_load
    assert set(result.conditions) == {"rest", "cooperation"}
    assert result.conditions["cooperation"].bands["alpha"]["plv"].z is not None


def test_a_result_that_drifts_from_the_schema_is_refused(written, tmp_path):
    _, json_path = written
    document = json.loads(json_path.read_text())
    document["quality"]["A"]["new_unlisted_field"] = 1
    drifted = tmp_path / "drifted.json"
    drifted.write_text(json.dumps(document))
    with pytest.raises(ResultFileError, match="new_unlisted_field"):
        load_result(drifted)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def test_files_that_are_not_results_are_explained(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema_version": "2.0"}))
    with pytest.raises(ResultFileError, match="schema 1.x"):
        load_result(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ResultFileError, match="cannot be read as JSON"):
        load_result(broken)


def test_the_returned_result_validates(written):
    result, _ = written
    QuickCheckResult.model_validate(json.loads(json.dumps(result, default=str)))


def test_a_stream_in_another_unit_fits_the_schema(tmp_path):
    """A stream whose unit is not convertible to microvolts reports ``std`` instead of ``std_uv``."""
    path = write_dyad_xdf(tmp_path / "volts.xdf", DyadSpec(blocks=[("rest", 20.0), ("cooperation", 20.0)]))
    data = path.read_bytes().replace(b"microvolts", b"arbitrary!")  # same length: the chunks stay valid
    other = tmp_path / "other-unit.xdf"
    other.write_bytes(data)
    result = run_check(other, n_surrogates=0, progress=False, json_out=tmp_path / "check.json", bands="alpha=8-12")
    assert "std" in result["quality"]["A"]["channels"] and "std_uv" not in result["quality"]["A"]["channels"]
    jsonschema.validate(json.loads((tmp_path / "check.json").read_text()), json.loads(SCHEMA_PATH.read_text()))
