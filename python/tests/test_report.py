"""earmark.report: the summary built in Python from `earmark scan`'s own report
equals `earmark scan`'s summary; report rows from results have its schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

import earmark
from earmark import report
from earmark._sources import pcm_bytes
from conftest import AUDIO, run_earmark

#: Summary fields that belong to one run (times, paths, speed).
RUN_FIELDS = {"inputs", "report", "started_at", "finished_at", "consent_evaluated_at", "throughput"}


@pytest.fixture(scope="module")
def scanned(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scan")
    out, summary = tmp / "r.jsonl", tmp / "s.json"
    run_earmark(
        "--data", data_dir, "scan", "--quiet", "--report", out, "--summary", summary,
        AUDIO / "submissions", AUDIO / "formats",
    )
    return report.read_report(out), json.loads(summary.read_text())


def test_summary_from_the_scan_report_equals_the_scan_summary(scanned):
    rows, summary = scanned
    builder = report.SummaryBuilder()
    for row in rows:
        builder.add(row)
    t = summary["throughput"]
    rebuilt = builder.finish(
        purpose=summary["purpose"],
        inputs=summary["inputs"],
        report=summary["report"],
        started_at=summary["started_at"],
        finished_at=summary["finished_at"],
        consent_evaluated_at=summary["consent_evaluated_at"],
        wall_s=t["wall_s"],
        jobs=t["jobs"],
        policy_version=summary["policy_version"],
        policy=summary["policy"],
        index_generation=summary["index_generation"],
        registered_works=summary["registered_works"],
        engine_version=summary["engine_version"],
    )
    assert list(rebuilt) == list(summary)
    for key in summary:
        if key != "throughput":
            assert rebuilt[key] == summary[key], key
    assert rebuilt["throughput"]["items_screened"] == t["items_screened"]
    assert rebuilt["throughput"]["audio_hours_screened"] == t["audio_hours_screened"]
    assert summary["blocked_works"] and summary["errors_by_kind"]
    assert report.human(rebuilt).splitlines()[:6] == report.human(summary).splitlines()[:6]


def test_report_rows_of_results_have_the_scan_schema(gate, scanned):
    rows, _ = scanned
    by_item = {r["item"]: r for r in rows}
    for rel in ("submissions/mix-two-works.ogg", "formats/bad/truncated.ogg"):
        path = str(AUDIO / rel)
        want = by_item[path]
        got = report.report_row(gate.screen(path), source=want["source"])
        assert list(got) == list(want)
        for key in ("item", "source", "kind", "duration_s", "content_sha256", "verdict", "matches"):
            assert got[key] == want[key], key
        assert (got["error"] is None) == (want["error"] is None)


def test_rounding_and_times_match_rust():
    assert report._round(0.0005) == 0.001  # halves away from zero, as f64::round
    assert report._round(2.0004999) == 2.0
    assert report._round(-0.0005) == -0.001
    assert report.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert report.rfc3339(1.5) == "1970-01-01T00:00:01.5Z"
    assert report._union_length([(5.0, 7.0), (0.0, 2.0), (1.0, 3.0)]) == 5.0


def test_sample_layouts():
    stereo = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int16)  # (channels, frames)
    data, channels = pcm_bytes(stereo)
    assert channels == 2
    assert np.frombuffer(data, "<f4").tolist() == pytest.approx(
        (stereo.T.reshape(-1) / 32768.0).tolist()
    )
    data_t, channels_t = pcm_bytes(stereo.T)  # (frames, channels): the same samples
    assert (data_t, channels_t) == (data, channels)
    data_u8, _ = pcm_bytes(np.array([0, 128, 255], dtype=np.uint8))
    assert np.frombuffer(data_u8, "<f4").tolist() == pytest.approx([-1.0, 0.0, 127 / 128])
    with pytest.raises(ValueError):
        pcm_bytes(np.zeros((40, 40), np.float32))
    with pytest.raises(TypeError):
        pcm_bytes(np.array(["a"]))


def test_verdict_names():
    assert earmark.VERDICTS == ("allow", "flag", "block", "error")
