"""Ray Data screening against `earmark scan` on the same files, as audio-hours
per minute of wall time (a benchmark, not a test).

    .venv/bin/python python/bench/ray_vs_scan.py [--files N] [--rounds R] [--out result.json]

Corpus: the evaluation corpus fetched by scripts/fetch-corpus.sh
(``$EARMARK_CORPUS``, default ``~/.cache/earmark/corpus``) when it is there,
else the repository's test-audio/. Every other full mix of the corpus is
registered as a work (alternately opted out and opted in) into a fresh data
directory; every Ogg file of the corpus (mixes and stems) is screened.

`earmark scan` (the release binary, ``--jobs 2``) reads a JSONL manifest of
the files. Ray runs on a single-node cluster started here on loopback
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, 127.0.0.1 only) with one logical CPU
per core for the two one-thread actors plus one for reading; Ray's time
counts from reading the file list to the written report (the cluster's start
is not counted, the driver's connection and the actors' start are). Each
round runs both, alternating, and the best round of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "python" / "tests"))

from ray_cluster import RayCluster  # noqa: E402

DRIVER = REPO / "python" / "tests" / "ray_driver.py"
CORPUS = Path(os.environ.get("EARMARK_CORPUS", Path.home() / ".cache" / "earmark" / "corpus"))
#: Screening threads on both sides (this machine has two cores).
JOBS = 2


def corpus_files(limit: int):
    root = CORPUS / "root" / "usr" / "share" / "games"
    if root.is_dir():
        files = sorted(root.rglob("*.ogg"))
        mixes = [f for f in files if "fretsonfire" not in str(f) or f.name == "song.ogg"]
        return "evaluation corpus", files[:limit], mixes[::2]
    audio = REPO / "test-audio"
    files = sorted(p for p in (audio / "submissions").iterdir() if p.suffix in (".ogg", ".mp3", ".wav"))
    return "test-audio", files[:limit], sorted((audio / "refs").glob("*.ogg"))


def earmark_bin() -> Path:
    if os.environ.get("EARMARK_BIN"):
        return Path(os.environ["EARMARK_BIN"])
    return REPO / "target" / "release" / "earmark"


def register(data: Path, refs) -> str:
    """Registers the references; returns the import's summary line (a
    reference too short or silent to fingerprint is reported there and left out)."""
    catalog = data.parent / "catalog.jsonl"
    with catalog.open("w") as out:
        for i, ref in enumerate(refs):
            out.write(
                json.dumps(
                    {
                        "id": f"work-{i:04d}",
                        "file": str(ref),
                        "title": ref.stem,
                        "holder": "bench",
                        "consent": "opted-out" if i % 2 == 0 else "opted-in",
                        "scope": "ai-training",
                    }
                )
                + "\n"
            )
    proc = subprocess.run(
        [str(earmark_bin()), "--data", str(data), "works", "import", str(catalog)],
        capture_output=True,
        text=True,
    )
    # Exit 3: some rows failed (reported in the output); the rest are registered.
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"works import failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


def run_scan(data: Path, files, work: Path) -> dict:
    manifest = work / "files.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(f)}) + "\n" for f in files))
    report, summary = work / "scan.jsonl", work / "scan.json"
    for stale in (report, summary, Path(f"{report}.earmark-scan.json")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        [
            str(earmark_bin()), "--data", str(data), "scan", "--quiet", "--jobs", str(JOBS),
            "--report", str(report), "--summary", str(summary), str(manifest),
        ],
        check=False,
        capture_output=True,
    )
    doc = json.loads(summary.read_text())
    t = doc["throughput"]
    return {
        "items": doc["items"],
        "audio_hours": doc["audio_hours"],
        "wall_s": t["wall_s"],
        "audio_hours_per_minute": doc["audio_hours"] / (t["wall_s"] / 60.0),
        "verdicts": {k: v["items"] for k, v in doc["verdicts"].items()},
    }


def run_ray(cluster: RayCluster, data: Path, files, work: Path) -> dict:
    folder = work / "ray-input"
    if not folder.exists():
        folder.mkdir()
        for i, f in enumerate(files):
            os.symlink(f, folder / f"{i:05d}{f.suffix}")
    report, summary = work / "ray.jsonl", work / "ray.json"
    proc = cluster.run_driver(
        [
            str(DRIVER), "--data", str(data), "--input", str(folder), "--kind", "files",
            "--report", str(report), "--summary", str(summary),
            "--actors", str(JOBS), "--actor-cpus", "1", "--batch-size", "2",
        ],
        timeout_s=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ray driver failed:\n{proc.stderr[-5000:]}\n{cluster.logs()}")
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    doc = json.loads(summary.read_text())
    return {
        "items": doc["items"],
        "audio_hours": doc["audio_hours"],
        "wall_s": facts["wall_s"],
        "audio_hours_per_minute": doc["audio_hours"] / (facts["wall_s"] / 60.0),
        "verdicts": {k: v["items"] for k, v in doc["verdicts"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200, help="files to screen (at most)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    corpus, files, refs = corpus_files(args.files)
    work = Path(tempfile.mkdtemp(prefix="earmark-bench-"))
    data = work / "data"
    imported = register(data, refs)
    print(f"corpus: {corpus}, {len(files)} files; {imported}", file=sys.stderr)
    rounds = []
    with RayCluster(layout="loopback", cpus_per_node=JOBS + 1) as cluster:
        for r in range(args.rounds):
            scan = run_scan(data, files, work)
            ray = run_ray(cluster, data, files, work)
            if scan["verdicts"] != ray["verdicts"]:
                raise RuntimeError(f"verdicts differ: scan {scan['verdicts']}, ray {ray['verdicts']}")
            rounds.append({"scan": scan, "ray": ray})
            print(
                f"round {r + 1}: scan {scan['audio_hours_per_minute']:.2f} audio-h/min "
                f"({scan['wall_s']:.1f} s), ray {ray['audio_hours_per_minute']:.2f} audio-h/min "
                f"({ray['wall_s']:.1f} s)",
                file=sys.stderr,
            )
    best_scan = max(r["scan"]["audio_hours_per_minute"] for r in rounds)
    best_ray = max(r["ray"]["audio_hours_per_minute"] for r in rounds)
    result = {
        "corpus": corpus,
        "files": len(files),
        "audio_hours": rounds[0]["scan"]["audio_hours"],
        "works_import": imported,
        "jobs": JOBS,
        "cpus": os.cpu_count(),
        "scan_audio_hours_per_minute": round(best_scan, 3),
        "ray_audio_hours_per_minute": round(best_ray, 3),
        "ray_over_scan": round(best_ray / best_scan, 3),
        "rounds": rounds,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
