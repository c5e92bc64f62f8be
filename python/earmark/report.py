"""``earmark scan``'s report and summary, written from Python results.

A curator can move between the command line and Python (or Ray) without
changing downstream tooling: :func:`report_row` gives the report row of one
result in the schema of ``earmark scan --report`` (JSON lines), and
:class:`SummaryBuilder` computes the document of ``earmark scan --summary``
with the same fields, rounding and ordering (items and hours per verdict,
blocked and flagged works with the seconds found, errors by kind,
throughput, the policy and index generation screened against).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ._result import ScreenResult

#: Item kinds of the report (``kind`` column), as ``earmark scan`` names them.
ITEM_KINDS = (
    "file",
    "manifest-row",
    "tar-sample",
    "tar-shard",
    "parquet-row",
    "walk-entry",
)

#: Exit codes ``earmark scan`` would give (the summary's ``exit_code``).
EXIT_CLEAN = 0
EXIT_FOUND = 1
EXIT_UNSCREENED = 3

_SECONDS_PER_HOUR = 3600.0
#: Reported seconds, hours and rates are rounded to this many per unit.
_ROUNDING = 1000.0
_VERDICT_SLOTS = ("allow", "flag", "block", "error")
_MATCH_KEYS = (
    "work_id",
    "title",
    "isrc",
    "holder",
    "consent",
    "consent_record",
    "outcome",
    "confident",
    "score",
    "start_s",
    "end_s",
    "ref_start_s",
    "ref_end_s",
    "speed_factor",
    "pitch_factor",
)


def _round_half_away(x: float) -> float:
    """Rounds to an integer, halves away from zero (as Rust's ``f64::round``)."""
    whole = math.trunc(x)
    if abs(x - whole) >= 0.5:
        whole += 1 if x > 0 else -1
    return float(whole)


def _round(x: float) -> float:
    return _round_half_away(x * _ROUNDING) / _ROUNDING


def rfc3339(seconds_since_epoch: float) -> str:
    """UTC RFC 3339 with the fraction trimmed, as ``earmark scan`` writes times."""
    whole = math.floor(seconds_since_epoch)
    nanos = int(round((seconds_since_epoch - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if nanos:
        stamp += "." + f"{nanos:09d}".rstrip("0")
    return stamp + "Z"


def report_row(
    result: Any,
    *,
    item: Optional[str] = None,
    source: str = "",
    kind: str = "file",
    position: Optional[int] = None,
    member: Optional[str] = None,
) -> Dict[str, Any]:
    """The report row of one result (a :class:`~earmark.ScreenResult` or its
    ``to_dict()``), in ``earmark scan``'s JSONL schema. ``item`` defaults to
    the result's name; ``member`` names the WebDataset member the audio came
    from (``KEY.flac``), as ``earmark scan`` records it on each match."""
    if kind not in ITEM_KINDS:
        raise ValueError(f"unknown item kind {kind!r} (expected one of {ITEM_KINDS})")
    data = result.to_dict() if isinstance(result, ScreenResult) else dict(result)
    return {
        "item": item if item is not None else data["name"],
        "source": source,
        "kind": kind,
        "position": position,
        "duration_s": data.get("duration_s"),
        "content_sha256": data.get("content_sha256"),
        "verdict": data["verdict"],
        "matches": [_report_match(m, member) for m in data.get("matches", ())],
        "reasons": list(data.get("reasons", ())),
        "error": data.get("error"),
    }


def _report_match(m: Mapping[str, Any], member: Optional[str]) -> Dict[str, Any]:
    out = {k: m[k] for k in _MATCH_KEYS}
    if member is not None:
        out["member"] = member
    return out


def _write_atomically(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".earmark-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_report(rows: Iterable[Mapping[str, Any]], path: str) -> int:
    """Writes report rows as JSON lines, atomically; returns the row count."""
    count = 0

    def write(out):
        nonlocal count
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
            count += 1

    _write_atomically(os.fspath(path), write)
    return count


def read_report(path: str) -> List[Dict[str, Any]]:
    """The rows of a JSONL report (of ``earmark scan`` or :func:`write_report`)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_summary(summary: Mapping[str, Any], path: str) -> None:
    """Writes a summary document as pretty JSON, atomically."""

    def write(out):
        json.dump(summary, out, ensure_ascii=False, indent=2)

    _write_atomically(os.fspath(path), write)


def _union_length(ranges: List[Tuple[float, float]]) -> float:
    ranges = sorted(ranges, key=lambda r: r[0])
    total = 0.0
    current: Optional[Tuple[float, float]] = None
    for s, e in ranges:
        if current is None:
            current = (s, e)
        elif s <= current[1]:
            current = (current[0], max(current[1], e))
        else:
            total += current[1] - current[0]
            current = (s, e)
    return total + (current[1] - current[0] if current else 0.0)


class SummaryBuilder:
    """Accumulates report rows into ``earmark scan``'s summary document."""

    def __init__(self) -> None:
        self._items = 0
        self._seconds = 0.0
        self._per_verdict = {v: [0, 0.0] for v in _VERDICT_SLOTS}
        self._works: Dict[str, Dict[str, Dict[str, Any]]] = {"block": {}, "flag": {}}
        self._errors: Dict[str, int] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        """Counts one report row."""
        seconds = row.get("duration_s") or 0.0
        verdict = row["verdict"]
        if verdict not in self._per_verdict:
            raise ValueError(f"unknown verdict {verdict!r} in report row {row.get('item')!r}")
        self._items += 1
        self._seconds += seconds
        slot = self._per_verdict[verdict]
        slot[0] += 1
        slot[1] += seconds
        for outcome, totals in self._works.items():
            self._add_works(totals, row, outcome)
        if verdict == "error":
            kind = row.get("kind", "")
            self._errors[kind] = self._errors.get(kind, 0) + 1

    @staticmethod
    def _add_works(totals: Dict[str, Dict[str, Any]], row: Mapping[str, Any], outcome: str):
        ranges: Dict[Tuple[str, Tuple[bool, str]], List[Tuple[float, float]]] = {}
        for m in row.get("matches", ()):
            if m["outcome"] != outcome:
                continue
            member = m.get("member")
            key = (m["work_id"], (member is not None, member or ""))
            ranges.setdefault(key, []).append((m["start_s"], m["end_s"]))
            totals.setdefault(
                m["work_id"],
                {
                    "work_id": m["work_id"],
                    "title": m.get("title"),
                    "isrc": m.get("isrc"),
                    "holder": m.get("holder"),
                    "items": 0,
                    "seconds": 0.0,
                },
            )
        counted = set()
        for (work, _), found in sorted(ranges.items()):
            entry = totals[work]
            if work not in counted:
                counted.add(work)
                entry["items"] += 1
            entry["seconds"] += _union_length(found)

    @property
    def items(self) -> int:
        return self._items

    def count(self, verdict: str) -> int:
        return self._per_verdict[verdict][0]

    def exit_code(self) -> int:
        """3 if any item could not be screened, else 1 if any was blocked or
        flagged, else 0 (as ``earmark scan``)."""
        if self.count("error") > 0:
            return EXIT_UNSCREENED
        if self.count("block") + self.count("flag") > 0:
            return EXIT_FOUND
        return EXIT_CLEAN

    def finish(
        self,
        *,
        purpose: str,
        inputs: Sequence[Mapping[str, str]],
        report: str,
        started_at: str,
        finished_at: str,
        consent_evaluated_at: str,
        wall_s: float,
        jobs: int,
        policy_version: str,
        policy: Mapping[str, Any],
        index_generation: int,
        registered_works: int,
        engine_version: str,
    ) -> Dict[str, Any]:
        """The summary document (``earmark scan --summary``'s fields, in order)."""

        def totals(verdict: str) -> Dict[str, Any]:
            items, seconds = self._per_verdict[verdict]
            return {"items": items, "audio_hours": _round(seconds / _SECONDS_PER_HOUR)}

        def ranked(works: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
            out = [dict(w, seconds=_round(w["seconds"])) for w in works.values()]
            out.sort(key=lambda w: w["work_id"])
            out.sort(key=lambda w: w["seconds"], reverse=True)
            return out

        wall = max(wall_s, 2.220446049250313e-16)
        hours = self._seconds / _SECONDS_PER_HOUR
        return {
            "purpose": purpose,
            "inputs": [dict(i) for i in inputs],
            "report": report,
            "started_at": started_at,
            "finished_at": finished_at,
            "consent_evaluated_at": consent_evaluated_at,
            "items": self._items,
            "audio_hours": _round(hours),
            "verdicts": {v: totals(v) for v in _VERDICT_SLOTS},
            "blocked_works": ranked(self._works["block"]),
            "flagged_works": ranked(self._works["flag"]),
            "errors_by_kind": dict(sorted(self._errors.items())),
            "resumed_items": 0,
            "throughput": {
                "wall_s": _round(wall),
                "jobs": jobs,
                "items_screened": self._items,
                "audio_hours_screened": _round(hours),
                "items_per_s": _round(self._items / wall),
                "realtime_factor": _round(self._seconds / wall),
                "audio_hours_per_minute": _round(hours / (wall / 60.0)),
            },
            "policy_version": policy_version,
            "policy": dict(policy),
            "index_generation": index_generation,
            "registered_works": registered_works,
            "engine_version": engine_version,
            "exit_code": self.exit_code(),
        }


def _hours(h: float) -> str:
    return f"{h * 60.0:.1f} min" if h < 1.0 else f"{h:.2f} h"


def human(summary: Mapping[str, Any]) -> str:
    """The summary as the table ``earmark scan`` prints."""
    lines = [f"earmark scan — purpose {summary['purpose']}"]
    lines.append(f"  items     {summary['items']:>9}  {_hours(summary['audio_hours']):>10}")
    v = summary["verdicts"]
    for label, key in (("allowed", "allow"), ("flagged", "flag"), ("blocked", "block"), ("errors", "error")):
        lines.append(f"  {label:<9} {v[key]['items']:>9}  {_hours(v[key]['audio_hours']):>10}")
    for title, key in (("blocked works", "blocked_works"), ("flagged works", "flagged_works")):
        if not summary[key]:
            continue
        lines.append(f"  {title}:")
        for w in summary[key]:
            lines.append(
                f"    {w['work_id']:<32} {w['items']:>6} items {w['seconds']:>9.1f} s  {w['title'] or ''}"
            )
    for kind, n in summary["errors_by_kind"].items():
        lines.append(f"  not screened: {n} {kind} item(s) (see the report)")
    t = summary["throughput"]
    lines.append(
        f"  throughput {t['items_per_s']:.1f} items/s, {t['audio_hours_per_minute']:.2f} audio-h/min, "
        f"{t['realtime_factor']:.1f}× real time ({t['items_screened']} items in {t['wall_s']:.1f} s, "
        f"{t['jobs']} jobs)"
    )
    return "\n".join(lines) + "\n"
