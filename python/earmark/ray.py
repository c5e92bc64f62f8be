"""Screening Ray Data datasets, on one machine or across a cluster.

::

    import ray, earmark.ray

    ds = ray.data.read_binary_files("s3://bucket/audio/", include_paths=True)
    screened = earmark.ray.screen(ds, "/mnt/earmark-data", audio_column="bytes")
    summary = earmark.ray.write_report(
        screened, "report.jsonl", summary="summary.json", data_dir="/mnt/earmark-data"
    )
    allowed = screened.filter(lambda row: row["earmark_verdict"] == "allow")

:func:`screen` adds verdict columns with ``map_batches`` and a callable class:
one :class:`~earmark.Gate` per actor, opened once, with the data directory
shared by path (a network file system, or the same copy on every node). The
driver reads the index generation before the run; an actor that finds
another generation fails with :class:`~earmark.GenerationMismatchError`, so a
run never mixes two states of the index. Every row carries the generation
and the policy version it was screened with.

The audio column may hold encoded bytes (``read_binary_files``, WebDataset
members, parquet ``binary``), paths, or structs as Hugging Face parquet files
store audio (``{"bytes", "path"}``) or decoded audio
(``{"array", "sampling_rate"}``).
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._gate import DEFAULT_PURPOSE, Gate, Instant, _instant, _open_gate
from ._result import ScreenResult
from .report import SummaryBuilder, report_row, rfc3339, write_report as _write_rows
from .report import write_summary

#: Prefix of the columns :func:`screen` adds.
PREFIX = "earmark_"
#: Rows per batch handed to an actor by default.
DEFAULT_BATCH_SIZE = 16

_MATCH_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("work_id", "string"),
    ("title", "string"),
    ("isrc", "string"),
    ("holder", "string"),
    ("consent", "string"),
    ("consent_record", "int64"),
    ("outcome", "string"),
    ("confident", "bool_"),
    ("score", "float64"),
    ("start_s", "float64"),
    ("end_s", "float64"),
    ("ref_start_s", "float64"),
    ("ref_end_s", "float64"),
    ("speed_factor", "float64"),
    ("pitch_factor", "float64"),
)


def output_schema():
    """The Arrow types of the columns :func:`screen` adds (name → type)."""
    import pyarrow as pa

    match = pa.struct([(name, getattr(pa, kind)()) for name, kind in _MATCH_FIELDS])
    return {
        f"{PREFIX}verdict": pa.string(),
        f"{PREFIX}matches": pa.list_(match),
        f"{PREFIX}reasons": pa.list_(pa.string()),
        f"{PREFIX}error": pa.string(),
        f"{PREFIX}name": pa.string(),
        f"{PREFIX}duration_s": pa.float64(),
        f"{PREFIX}content_sha256": pa.string(),
        f"{PREFIX}submission_id": pa.string(),
        f"{PREFIX}purpose": pa.string(),
        f"{PREFIX}evaluated_at": pa.string(),
        f"{PREFIX}index_generation": pa.int64(),
        f"{PREFIX}policy_version": pa.string(),
    }


def _columns(results: Sequence[ScreenResult]) -> Dict[str, Any]:
    import pyarrow as pa

    types = output_schema()
    values: Dict[str, List[Any]] = {
        f"{PREFIX}verdict": [r.verdict for r in results],
        f"{PREFIX}matches": [[m.to_dict() for m in r.matches] for r in results],
        f"{PREFIX}reasons": [list(r.reasons) for r in results],
        f"{PREFIX}error": [r.error for r in results],
        f"{PREFIX}name": [r.name for r in results],
        f"{PREFIX}duration_s": [r.duration_s for r in results],
        f"{PREFIX}content_sha256": [r.content_sha256 for r in results],
        f"{PREFIX}submission_id": [r.submission_id for r in results],
        f"{PREFIX}purpose": [r.purpose for r in results],
        f"{PREFIX}evaluated_at": [r.evaluated_at for r in results],
        f"{PREFIX}index_generation": [r.index_generation for r in results],
        f"{PREFIX}policy_version": [r.policy_version for r in results],
    }
    return {name: pa.array(column, type=types[name]) for name, column in values.items()}


class ScreenBatch:
    """The callable class :func:`screen` maps over the batches (one instance,
    and so one open data directory, per actor)."""

    def __init__(
        self,
        gate_options: Dict[str, Any],
        audio_column: str,
        name_column: Optional[str],
        consent_at: Optional[str],
        keep_audio: bool,
        record_node: bool = False,
    ) -> None:
        self.gate = _open_gate(dict(gate_options))
        self.audio_column = audio_column
        self.name_column = name_column
        self.consent_at = consent_at
        self.keep_audio = keep_audio
        self.node = None
        if record_node:
            import ray

            self.node = ray.util.get_node_ip_address()

    def __call__(self, batch):
        columns = batch.column_names
        if self.audio_column not in columns:
            raise KeyError(
                f"no column {self.audio_column!r} in the dataset (columns: {columns}); "
                "pass audio_column="
            )
        name_column = self.name_column
        if name_column is None and "path" in columns and self.audio_column != "path":
            name_column = "path"
        names = None
        if name_column is not None:
            names = [None if n is None else str(n) for n in batch.column(name_column).to_pylist()]
        sources = batch.column(self.audio_column).to_pylist()
        results = self.gate.screen_batch(sources, names=names, consent_at=self.consent_at)
        out = batch if self.keep_audio else batch.drop_columns([self.audio_column])
        for name, array in _columns(results).items():
            if name in out.column_names:
                out = out.drop_columns([name])
            out = out.append_column(name, array)
        if self.node is not None:
            import pyarrow as pa

            out = out.append_column(
                f"{PREFIX}node", pa.array([self.node] * out.num_rows, type=pa.string())
            )
        return out


def _compute(concurrency: Union[None, int, Tuple[int, int]]):
    from ray.data import ActorPoolStrategy

    if concurrency is None:
        return ActorPoolStrategy(min_size=1)
    if isinstance(concurrency, int):
        return ActorPoolStrategy(size=concurrency)
    low, high = concurrency
    return ActorPoolStrategy(min_size=low, max_size=high)


def _gate_options(data_dir: Union[str, "os.PathLike[str]", Gate], **overrides) -> Dict[str, Any]:
    """A gate's options: those of `data_dir` when it is a Gate, with the
    overrides that are not None."""
    if isinstance(data_dir, Gate):
        options = data_dir.options
    else:
        options = {"data_dir": os.fspath(data_dir)}
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


def screen(
    ds,
    data_dir: Union[str, "os.PathLike[str]", Gate],
    *,
    audio_column: str = "audio",
    purpose: Optional[str] = None,
    name_column: Optional[str] = None,
    concurrency: Union[None, int, Tuple[int, int]] = None,
    num_cpus: float = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep_audio: bool = True,
    consent_at: Optional[Instant] = None,
    unknown_consent: Optional[str] = None,
    territory: Optional[str] = None,
    record_node: bool = False,
):
    """Returns ``ds`` with earmark's verdict columns added (lazily, as Ray Data does).

    ``data_dir`` is the data directory's path as every node sees it, or a
    :class:`~earmark.Gate` (its options are used). ``audio_column`` holds the
    audio; ``name_column`` names the items (default: ``path`` when the dataset
    has it). ``concurrency`` is the number of actors (an int, or ``(min, max)``
    to autoscale; default: from 1 up to what the cluster offers); each actor
    takes ``num_cpus`` CPUs and screens with as many threads. ``keep_audio=False``
    drops the audio column from the output. Consent is evaluated for every row
    at one instant, ``consent_at`` (default: now, on the driver).
    ``record_node=True`` adds ``earmark_node``, the address of the Ray node
    that screened each row (an audit trail of where the work ran).

    The gate is opened here first, so a wrong path or purpose fails at once on
    the driver, and its index generation is what every actor must find.
    """
    options = _gate_options(
        data_dir,
        purpose=purpose,
        unknown_consent=unknown_consent,
        territory=territory,
        threads=max(1, int(num_cpus)),
    )
    options.setdefault("purpose", DEFAULT_PURPOSE)
    options.pop("expected_generation", None)
    # Workers only read: the ledger is never written from a cluster.
    options.pop("record_attributions", None)
    driver_gate = _open_gate(dict(options))
    options = driver_gate.options
    options["expected_generation"] = driver_gate.index_generation
    if consent_at is None:
        consent_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return ds.map_batches(
        ScreenBatch,
        fn_constructor_kwargs={
            "gate_options": options,
            "audio_column": audio_column,
            "name_column": name_column,
            "consent_at": _instant(consent_at),
            "keep_audio": keep_audio,
            "record_node": record_node,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=_compute(concurrency),
        num_cpus=num_cpus,
        zero_copy_batch=True,
    )


def write_report(
    screened,
    report: str,
    *,
    data_dir: Union[str, "os.PathLike[str]", Gate],
    summary: Optional[str] = None,
    item_column: Optional[str] = None,
    position_column: Optional[str] = None,
    kind: str = "file",
    source: str = "",
    inputs: Optional[Sequence[Dict[str, str]]] = None,
    jobs: Optional[int] = None,
    started_at: Optional[float] = None,
    member_suffix: Optional[str] = None,
) -> Dict[str, Any]:
    """Runs a screened dataset to the end and writes ``earmark scan``'s JSONL
    report (and, with ``summary``, its summary document); returns the summary.

    ``data_dir`` (path or :class:`~earmark.Gate`; pass the gate or options
    the run used) supplies what rows do not carry (the policy settings, the
    number of registered works); every row
    must have been screened against its index generation and policy version,
    or :class:`~earmark.GenerationMismatchError` is raised and nothing is
    written. ``item_column`` names each row in the report (default: the
    screened name: the path, when there is one); ``kind`` and ``source`` fill
    the report's columns of the same names (``file`` for files,
    ``parquet-row``, ``tar-sample``...). Rows come in the order Ray delivers
    them; set ``DataContext.execution_options.preserve_order`` for input order.
    ``jobs`` is reported as the run's parallelism (default: the cluster's
    CPUs); ``started_at`` (``time.time()``) is when the run began, for the
    throughput (default: now, right for a dataset that runs lazily here).
    For WebDataset shards, ``member_suffix`` (the audio column, e.g. ``flac``)
    names the member on each match as ``earmark scan`` does (``KEY.flac``).
    """
    from . import _earmark

    gate = data_dir if isinstance(data_dir, Gate) else Gate(data_dir)
    started = time.time() if started_at is None else started_at
    wanted = [
        c
        for c in list(output_schema()) + [item_column, position_column]
        if c is not None
    ]
    rows: List[Dict[str, Any]] = []
    builder = SummaryBuilder()
    purpose = None
    evaluated_at = None
    for row in screened.select_columns(sorted(set(wanted))).iter_rows():
        generation = row[f"{PREFIX}index_generation"]
        if generation != gate.index_generation:
            raise _earmark.GenerationMismatchError(
                f"row {row[f'{PREFIX}name']!r} was screened against index generation "
                f"{generation}, the data directory {gate.data_dir} is at "
                f"{gate.index_generation}; screen again against one index"
            )
        if row[f"{PREFIX}policy_version"] != gate.policy_version:
            raise _earmark.GenerationMismatchError(
                f"row {row[f'{PREFIX}name']!r} was decided by policy "
                f"{row[f'{PREFIX}policy_version']}, this earmark runs {gate.policy_version}"
            )
        if purpose is None:
            purpose, evaluated_at = row[f"{PREFIX}purpose"], row[f"{PREFIX}evaluated_at"]
        elif (purpose, evaluated_at) != (row[f"{PREFIX}purpose"], row[f"{PREFIX}evaluated_at"]):
            raise ValueError(
                "the rows were screened for different purposes or consent instants "
                f"({purpose} at {evaluated_at}, {row[f'{PREFIX}purpose']} at "
                f"{row[f'{PREFIX}evaluated_at']}); write one report per run"
            )
        item = str(row[item_column]) if item_column else None
        out = report_row(
            _row_result(row),
            item=item,
            source=source,
            kind=kind,
            position=int(row[position_column]) if position_column else None,
            member=f"{item or row[f'{PREFIX}name']}.{member_suffix}" if member_suffix else None,
        )
        rows.append(out)
        builder.add(out)
    _write_rows(rows, report)
    finished = time.time()
    if jobs is None:
        jobs = _cluster_cpus()
    document = builder.finish(
        purpose=purpose or gate.purpose,
        inputs=list(inputs) if inputs is not None else [],
        report=os.fspath(report),
        started_at=rfc3339(started),
        finished_at=rfc3339(finished),
        consent_evaluated_at=evaluated_at or rfc3339(int(started)),
        wall_s=finished - started,
        jobs=jobs,
        policy_version=gate.policy_version,
        policy=gate.policy,
        index_generation=gate.index_generation,
        registered_works=gate.registered_works,
        engine_version=gate.engine_version,
    )
    if summary is not None:
        write_summary(document, summary)
    return document


def _row_result(row: Dict[str, Any]) -> Dict[str, Any]:
    """The parts of a result a report row needs, from a screened row."""
    return {
        "name": row[f"{PREFIX}name"],
        "duration_s": row[f"{PREFIX}duration_s"],
        "content_sha256": row[f"{PREFIX}content_sha256"],
        "verdict": row[f"{PREFIX}verdict"],
        "matches": list(row[f"{PREFIX}matches"] or ()),
        "reasons": list(row[f"{PREFIX}reasons"] or ()),
        "error": row[f"{PREFIX}error"],
    }


def _cluster_cpus() -> int:
    import ray

    if not ray.is_initialized():
        return 0
    return int(ray.cluster_resources().get("CPU", 0))
