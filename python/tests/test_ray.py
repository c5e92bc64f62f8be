"""Ray Data on a real cluster started by the test: verdicts, report and summary
equal to `earmark scan` on the same files, item for item.

One cluster serves the whole module (see ray_cluster.py for how it is started
and stopped and why its traffic stays in namespaces the test makes, or on
loopback).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("ray")
import pyarrow as pa
import pyarrow.parquet as pq

import earmark
import earmark.ray
from conftest import AUDIO, earmark_bin, register_works, run_earmark
from ray_cluster import RayCluster

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "ray_driver.py"

#: The corpus: positives, negatives and corrupt files (an `error` each).
FILES = [
    "submissions/mix-two-works.ogg",
    "submissions/unrelated.ogg",
    "submissions/pitched.ogg",
    "submissions/speech.ogg",
    "submissions/speed.wav",
    "submissions/excerpt-mp3.mp3",
    "formats/clip.flac",
    "formats/bad/truncated.ogg",
    "formats/bad/text.wav",
]
#: The WebDataset shard holds the Ogg files only (one member suffix, `ogg`).
OGG_FILES = [f for f in FILES if f.endswith(".ogg")]
#: Summary fields that differ between any two runs (times, paths, speed).
RUN_FIELDS = {"inputs", "report", "started_at", "finished_at", "consent_evaluated_at", "throughput"}
#: Logical CPUs per node and per actor: an actor needs more than half a node,
#: so the two actors land on the two nodes, and a CPU is left for reading.
NODE_CPUS = 3
ACTOR_CPUS = 2


@pytest.fixture(scope="module")
def cluster():
    with RayCluster(cpus_per_node=NODE_CPUS) as c:
        yield c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-corpus") / "audio"
    folder.mkdir()
    for rel in FILES:
        shutil.copy(AUDIO / rel, folder / rel.replace("/", "__"))
    return folder


def scan(data_dir, inputs, tmp: Path, name: str):
    report, summary = tmp / f"{name}-scan.jsonl", tmp / f"{name}-scan.json"
    run_earmark(
        "--data", data_dir, "scan", "--quiet", "--purpose", "ai-training",
        "--report", report, "--summary", summary, *inputs,
    )
    return earmark.report.read_report(report), json.loads(summary.read_text())


def drive(cluster, tmp: Path, name: str, *args):
    report, summary = tmp / f"{name}-ray.jsonl", tmp / f"{name}-ray.json"
    facts_file = tmp / f"{name}-facts.json"
    proc = cluster.run_driver(
        [
            str(DRIVER), *map(str, args),
            "--report", str(report), "--summary", str(summary), "--facts", str(facts_file),
            "--actors", "2", "--actor-cpus", str(ACTOR_CPUS),
        ]
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-6000:]}\n{cluster.logs()}"
    facts = json.loads(facts_file.read_text())
    return earmark.report.read_report(report), json.loads(summary.read_text()), facts


def by_item(rows, key=lambda item: item):
    return {key(r["item"]): r for r in rows}


def assert_same_rows(scan_rows, ray_rows, key=lambda item: item):
    scanned, rayed = by_item(scan_rows, key), by_item(ray_rows, key)
    assert sorted(rayed) == sorted(scanned)
    for item, want in scanned.items():
        got = rayed[item]
        assert list(got) == list(want), "report columns differ"
        for field in ("verdict", "matches", "duration_s", "content_sha256", "kind"):
            assert got[field] == want[field], (item, field, got[field], want[field])
        assert (got["error"] is None) == (want["error"] is None), (item, got, want)
        if want["error"] is None:
            # Error texts name the input as each reader spells it.
            assert got["reasons"] == want["reasons"], item


def assert_same_summary(scan_summary, ray_summary):
    assert list(ray_summary) == [k for k in scan_summary if k != "remote"]
    for key, value in scan_summary.items():
        if key not in RUN_FIELDS:
            assert ray_summary[key] == value, (key, ray_summary[key], value)
    assert list(ray_summary["throughput"]) == list(scan_summary["throughput"])


def test_cluster_is_real(cluster):
    assert cluster.nodes == (2 if cluster.layout == "netns" else 1)


def test_files_screen_as_earmark_scan_does(cluster, corpus, data_dir, tmp_path):
    scan_rows, scan_summary = scan(data_dir, [corpus], tmp_path, "files")
    rows, summary, facts = drive(
        cluster, tmp_path, "files", "--data", data_dir, "--input", corpus, "--kind", "files"
    )
    assert len(facts["nodes"]) == cluster.nodes
    # Rows were screened on the cluster's nodes. With a handful of items one
    # actor may take every batch before the other has started on a loaded
    # machine, so which nodes did the work is not asserted.
    assert facts["nodes_used"] and set(facts["nodes_used"]) <= set(cluster.addresses)
    base = lambda item: os.path.basename(item)  # noqa: E731 - scan and Ray spell paths alike
    assert_same_rows(scan_rows, rows, key=base)
    verdicts = {base(r["item"]): r["verdict"] for r in rows}
    assert verdicts["submissions__mix-two-works.ogg"] == "block"
    assert verdicts["submissions__unrelated.ogg"] == "allow"
    assert verdicts["submissions__pitched.ogg"] == "flag"
    assert verdicts["formats__bad__truncated.ogg"] == "error"
    assert_same_summary(scan_summary, summary)
    assert summary["exit_code"] == 3 and summary["verdicts"]["error"]["items"] == 2


def test_parquet_audio_structs_and_webdataset_shards(cluster, corpus, data_dir, tmp_path):
    # Hugging Face's parquet layout: an `audio` struct of bytes and path.
    table = pa.table(
        {
            "id": [f.replace("/", "__") for f in FILES],
            "audio": [
                {"bytes": (AUDIO / f).read_bytes(), "path": f.split("/")[-1]} for f in FILES
            ],
        }
    )
    parquet = tmp_path / "corpus.parquet"
    pq.write_table(table, parquet)
    rows, summary, _ = drive(
        cluster, tmp_path, "parquet", "--data", data_dir, "--input", parquet, "--kind", "parquet"
    )
    file_rows, _ = scan(data_dir, [corpus], tmp_path, "parquet-files")
    # The same audio as files: the same verdicts, matches and hashes.
    assert_same_rows(
        [dict(r, kind="parquet-row") for r in file_rows],
        rows,
        key=lambda item: os.path.basename(item),
    )
    shard = tmp_path / "corpus.tar"
    with tarfile.open(shard, "w") as tar:
        for rel in OGG_FILES:
            data = (AUDIO / rel).read_bytes()
            info = tarfile.TarInfo(f"{rel.replace('/', '__')[:-4]}.ogg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    scan_rows, scan_summary = scan(data_dir, [shard], tmp_path, "tar")
    rows, summary, _ = drive(
        cluster, tmp_path, "tar", "--data", data_dir, "--input", shard, "--kind", "webdataset"
    )
    assert_same_rows(scan_rows, rows)
    assert_same_summary(scan_summary, summary)


def test_a_run_refuses_to_mix_index_generations(cluster, tmp_path):
    data = tmp_path / "data"
    register_works(data)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        json.dumps(
            {
                "id": "late-work",
                "file": str(AUDIO / "submissions/unrelated.ogg"),
                "title": "Registered during the run",
                "holder": "Someone",
            }
        )
        + "\n"
    )
    folder = tmp_path / "audio"
    folder.mkdir()
    shutil.copy(AUDIO / "submissions/unrelated.ogg", folder / "unrelated.ogg")
    proc = cluster.run_driver(
        [
            str(DRIVER), "--data", str(data), "--input", str(folder), "--kind", "files",
            "--report", str(tmp_path / "r.jsonl"), "--change-index-with", str(extra),
            "--earmark-bin", str(earmark_bin()), "--actors", "1",
            "--facts", str(tmp_path / "facts.json"),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    outcome = json.loads((tmp_path / "facts.json").read_text())
    assert outcome["failed"], outcome
    assert "GenerationMismatchError" in outcome["message"] or "generation" in outcome["message"]
    assert not (tmp_path / "r.jsonl").exists()


def test_screen_batch_class_without_a_cluster(data_dir):
    """The actor's batch function on a pyarrow table, in this process."""
    batch = pa.table(
        {
            "path": [str(AUDIO / f) for f in FILES[:3]],
            "bytes": [(AUDIO / f).read_bytes() for f in FILES[:3]],
        }
    )
    gate = earmark.Gate(data_dir)
    fn = earmark.ray.ScreenBatch(
        gate.options, "bytes", None, "2030-01-01T00:00:00Z", keep_audio=False
    )
    out = fn(batch)
    assert "bytes" not in out.column_names
    assert out.column("earmark_verdict").to_pylist() == ["block", "allow", "flag"]
    assert out.column("earmark_name").to_pylist() == batch.column("path").to_pylist()
    assert set(out.column("earmark_index_generation").to_pylist()) == {gate.index_generation}
    assert out.schema.field("earmark_matches").type == earmark.ray.output_schema()["earmark_matches"]
    with pytest.raises(earmark.GenerationMismatchError):
        earmark.ray.ScreenBatch(
            dict(gate.options, expected_generation=gate.index_generation + 1),
            "bytes", None, None, keep_audio=False,
        )
