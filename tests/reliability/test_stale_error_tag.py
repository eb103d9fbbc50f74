"""A trial that failed (an object-store outage, a killed worker) and then completed after `study resume`
keeps one run in MLflow; its `thoraxmae.error` tag must not outlive the failure, or `study status` and the
report name an error the run no longer has. Real SQLite MLflow, through the study's writer."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.conftest import write_store_manifest
from tests.reliability.test_bad_inputs import spec_dict
from thoraxmae.study import schema
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.tracking.lookup import study_status
from thoraxmae.study.tracking.writer import StudyTracker


@pytest.mark.parametrize("then", [schema.STATUS_COMPLETED, schema.STATUS_PRUNED])
def test_a_run_that_ends_well_after_a_resume_has_no_error_tag(tmp_path, then):
    write_store_manifest(tmp_path / "store")
    spec = with_defaults(parse_spec(spec_dict(tmp_path, name="again")))
    tracker = StudyTracker(spec)
    tracker.start_study()
    run = tracker.start_trial("t1", {})
    tracker.end_trial(run, schema.STATUS_FAILED, error="OSError: endpoint down")
    assert study_status("again", spec.tracking.uri).first_error == ("t1", "OSError: endpoint down")

    resumed = StudyTracker(spec)  # the resumed driver's writer
    resumed.start_study()
    assert resumed.start_trial("t1", {}) == run  # the same run, restarted
    resumed.log_epoch(run, {schema.M_VAL_MAUC: 0.7}, 1)
    resumed.end_trial(run, then)

    tags = MlflowClient(spec.tracking.uri).get_run(run).data.tags
    assert schema.TAG_ERROR not in tags and tags[schema.TAG_STATUS] == then
    status = study_status("again", spec.tracking.uri)
    assert status.first_error is None and status.counts[then] == 1


def test_a_run_that_fails_again_keeps_the_new_error(tmp_path):
    write_store_manifest(tmp_path / "store")
    spec = with_defaults(parse_spec(spec_dict(tmp_path, name="twice")))
    tracker = StudyTracker(spec)
    tracker.start_study()
    run = tracker.start_trial("t1", {})
    tracker.end_trial(run, schema.STATUS_FAILED, error="first")
    tracker.start_trial("t1", {})
    tracker.end_trial(run, schema.STATUS_FAILED, error="second")
    assert MlflowClient(spec.tracking.uri).get_run(run).data.tags[schema.TAG_ERROR] == "second"
