"""Fixtures: the repository's test audio, the `earmark` command-line binary,
and a data directory with the four reference clips registered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO / "test-audio"
EXPECTED = json.loads((AUDIO / "submissions" / "EXPECTED.json").read_text())

#: Consent registered for each reference clip (None: nothing recorded), as
#: the Rust scan tests register them.
WORKS = {
    "wesnoth-heroes-rite": "opted-out",
    "wesnoth-northerners": "opted-out",
    "fof-muldjord-armygeddon": "opted-in",
    "fof-sectoid-war-of-freedom": None,
}
#: The verdict each registered work alone leads to.
VERDICT_OF_WORK = {
    "wesnoth-heroes-rite": "block",
    "wesnoth-northerners": "block",
    "fof-muldjord-armygeddon": "allow",
    "fof-sectoid-war-of-freedom": "flag",
}
SEVERITY = {"allow": 0, "flag": 1, "block": 2}


def expected_verdict(work_ids) -> str:
    verdicts = [VERDICT_OF_WORK[w] for w in work_ids]
    return max(verdicts, key=SEVERITY.__getitem__) if verdicts else "allow"


def earmark_bin() -> Path:
    """The `earmark` binary: $EARMARK_BIN, else the repository's build."""
    if os.environ.get("EARMARK_BIN"):
        return Path(os.environ["EARMARK_BIN"])
    for profile in ("release", "debug"):
        candidate = REPO / "target" / profile / "earmark"
        if candidate.is_file():
            return candidate
    found = shutil.which("earmark")
    if found:
        return Path(found)
    pytest.fail(
        "no earmark binary: build it (cargo build --bin earmark) or set EARMARK_BIN",
        pytrace=False,
    )


def run_earmark(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(earmark_bin()), *map(str, args)],
        capture_output=True,
        text=True,
        **kwargs,
    )
    if check and proc.returncode not in (0, 1, 3):
        raise AssertionError(
            f"earmark {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc


def register_works(data_dir: Path) -> None:
    catalog = data_dir.parent / f"{data_dir.name}-catalog.jsonl"
    with catalog.open("w") as out:
        for work_id, consent in WORKS.items():
            row = {
                "id": work_id,
                "file": str(AUDIO / "refs" / f"{work_id}.ogg"),
                "title": f"Title of {work_id}",
                "holder": "Test Holder",
            }
            if consent:
                row.update(consent=consent, scope="ai-training", effective_from="2000-01-01")
            out.write(json.dumps(row) + "\n")
    run_earmark("--data", data_dir, "works", "import", catalog)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data directory with the four reference clips registered."""
    root = tmp_path_factory.mktemp("earmark") / "data"
    register_works(root)
    return root


@pytest.fixture(scope="session")
def gate(data_dir):
    import earmark

    return earmark.Gate(data_dir, purpose="ai-training")
