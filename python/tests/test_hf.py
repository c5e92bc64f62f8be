"""Hugging Face `datasets` integration: ds.map(screen_columns(gate), batched=True)."""

from __future__ import annotations

import math

import pytest

datasets = pytest.importorskip("datasets")

import earmark
import earmark.hf
from conftest import AUDIO, EXPECTED, expected_verdict

FILES = [
    "submissions/mix-two-works.ogg",
    "submissions/unrelated.ogg",
    "submissions/pitched.ogg",
    "formats/bad/truncated.ogg",
    "submissions/speech.ogg",
    "formats/clip.flac",
]


def truth(rel):
    if rel in EXPECTED["bad"]:
        return "error"
    entry = EXPECTED["submissions"].get(rel) or EXPECTED["formats"][rel]
    return expected_verdict(m["work_id"] for m in entry["matches"])


def audio_dataset(decode: bool):
    ds = datasets.Dataset.from_dict(
        {"audio": [str(AUDIO / f) for f in FILES], "rel": FILES}
    )
    return ds.cast_column("audio", datasets.Audio(decode=decode))


def test_encoded_audio_column(gate):
    ds = audio_dataset(decode=False)
    # Small batches: a batch of only errors or only allows must not change a
    # column's type.
    out = ds.map(earmark.hf.screen_columns(gate), batched=True, batch_size=2)
    assert out["earmark_verdict"] == [truth(f) for f in FILES]
    row = out[0]
    works = [m.work_id for m in earmark.hf.matches(row)]
    assert works == ["wesnoth-northerners", "fof-muldjord-armygeddon"]
    assert row["earmark_index_generation"] == gate.index_generation
    assert row["earmark_policy_version"] == earmark.POLICY_VERSION
    assert row["earmark_submission_id"].startswith("sha256:")
    bad = out[3]
    assert bad["earmark_error"] and math.isnan(bad["earmark_duration_s"])
    kept = out.filter(earmark.hf.allowed)
    assert kept["rel"] == [f for f in FILES if truth(f) == "allow"]


def test_decoded_audio_column(gate):
    # Decoding is done by datasets (arrays); the corrupt file would fail in
    # datasets itself, before earmark sees it, so it is left out here.
    files = [f for f in FILES if f not in EXPECTED["bad"]]
    ds = datasets.Dataset.from_dict({"audio": [str(AUDIO / f) for f in files]})
    ds = ds.cast_column("audio", datasets.Audio())
    assert "array" in ds[0]["audio"]
    out = ds.map(earmark.hf.screen_columns(gate), batched=True, batch_size=4)
    assert out["earmark_verdict"] == [truth(f) for f in files]
    assert all(s.startswith("prints:") for s in out["earmark_submission_id"])


def test_the_map_function_pickles_and_runs_in_worker_processes(gate):
    ds = audio_dataset(decode=False)
    out = ds.map(earmark.hf.screen_columns(gate), batched=True, batch_size=2, num_proc=2)
    assert out["earmark_verdict"] == [truth(f) for f in FILES]
