"""The consent gate: one data directory opened read-only, screening audio."""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from . import _earmark
from ._result import ScreenResult
from ._sources import to_native, to_native_or_invalid

PathLike = Union[str, "os.PathLike[str]"]
#: When consent is evaluated: a timezone-aware datetime or an RFC 3339 string.
Instant = Union[_dt.datetime, str]

#: The purpose screened for when none is given.
DEFAULT_PURPOSE = "ai-training"


def _instant(at: Optional[Instant]) -> Optional[str]:
    if at is None:
        return None
    if isinstance(at, _dt.datetime):
        if at.tzinfo is None:
            raise ValueError("consent_at must be timezone-aware (e.g. datetime.timezone.utc)")
        return at.isoformat()
    return str(at)


class Gate:
    """An earmark data directory opened for screening.

    The index is memory-mapped and the registry opened read-only, so opening is
    cheap and any number of processes may share one data directory (on a
    local disk, a network file system, or a synced copy per machine). A gate
    pickles as its arguments: unpickling (in a Ray actor, a ``datasets``
    worker, a ``multiprocessing`` child) opens the data directory again.

    ``purpose`` is the use screened for (``ai-training``, ``ai-fine-tuning``,
    ``ai-generation``, ``voice-synthesis``, ``text-and-data-mining``).
    ``threads`` sizes the gate's own thread pool (default: the CPUs this
    process may use). ``unknown_consent`` (``flag`` or ``allow``) and
    ``territory`` (ISO 3166 code) are the policy settings of ``earmark scan``'s
    options of the same names. ``expected_generation``, when given, makes
    opening fail with :class:`GenerationMismatchError` unless the index is at
    that generation (how a cluster run keeps every worker on one index).

    Screening through a gate is a dry run for the attribution ledger unless
    ``record_attributions=True``: then the registry is also opened for
    writing and each allowed use of an opted-in work is recorded once per
    submission id, as ``earmark scan`` does. Record from one process per data
    directory (SQLite on a local disk), not from every worker of a cluster.

    Raises :class:`DataDirError` when the directory is missing or is not a
    usable earmark data directory, :class:`ConfigMismatchError` when its index
    was built with another fingerprint configuration, and ``ValueError`` for
    an unknown purpose or policy setting.
    """

    def __init__(
        self,
        data_dir: PathLike,
        purpose: str = DEFAULT_PURPOSE,
        *,
        threads: Optional[int] = None,
        unknown_consent: str = "flag",
        territory: Optional[str] = None,
        expected_generation: Optional[int] = None,
        record_attributions: bool = False,
    ) -> None:
        self._args: Dict[str, Any] = {
            "data_dir": os.fspath(data_dir),
            "purpose": purpose,
            "threads": threads,
            "unknown_consent": unknown_consent,
            "territory": territory,
            "expected_generation": expected_generation,
            "record_attributions": record_attributions,
        }
        self._native = _earmark.NativeGate(
            self._args["data_dir"],
            purpose,
            threads,
            unknown_consent,
            territory,
            record_attributions,
        )
        generation = self._native.index_generation
        if expected_generation is not None and generation != expected_generation:
            raise _earmark.GenerationMismatchError(
                f"{self._args['data_dir']}: the index is at generation {generation}, "
                f"this run screens against generation {expected_generation}; the "
                "index changed (works registered or removed) or this node has "
                "another copy: give every node the same index before screening"
            )

    def __reduce__(self):
        return (_open_gate, (dict(self._args),))

    def __repr__(self) -> str:
        return (
            f"Gate({self._args['data_dir']!r}, purpose={self.purpose!r}, "
            f"index_generation={self.index_generation}, "
            f"registered_works={self.registered_works})"
        )

    @property
    def data_dir(self) -> str:
        return self._args["data_dir"]

    @property
    def purpose(self) -> str:
        return self._native.purpose

    @property
    def records_attributions(self) -> bool:
        """Whether allowed opted-in uses are written to the attribution ledger."""
        return self._native.records_attributions

    @property
    def threads(self) -> int:
        """Threads of the gate's pool."""
        return self._native.threads

    @property
    def index_generation(self) -> int:
        """Generation of the index snapshot this gate screens against."""
        return self._native.index_generation

    @property
    def registered_works(self) -> int:
        """Works in the index."""
        return self._native.registered_works

    @property
    def policy_version(self) -> str:
        return self._native.policy_version

    @property
    def engine_version(self) -> str:
        return self._native.engine_version

    @property
    def policy(self) -> Dict[str, Any]:
        """The policy settings, as ``earmark scan`` records them in its summary."""
        import json

        return json.loads(self._native.policy_json)

    @property
    def options(self) -> Dict[str, Any]:
        """The arguments the gate was opened with (what it pickles as)."""
        return dict(self._args)

    def screen(
        self,
        source: Any,
        *,
        sample_rate: Optional[int] = None,
        name: Optional[str] = None,
        submission_id: Optional[str] = None,
        consent_at: Optional[Instant] = None,
    ) -> ScreenResult:
        """Screens one source and returns its verdict.

        ``source`` is a path, encoded audio ``bytes`` (any supported format),
        a NumPy array of samples with ``sample_rate`` (float in [-1, 1] or
        integer PCM; 1-D mono, or 2-D with the shorter axis as channels), or a
        Hugging Face audio cell. Audio that cannot be screened (missing,
        corrupt, empty, too long) gives a result with verdict ``error``, never
        an exception; a source of an unsupported type raises ``TypeError``,
        samples without a sample rate ``ValueError``.

        ``name`` labels the result (and hints the format of ``bytes``, by its
        extension); ``submission_id`` replaces the id derived from the content;
        ``consent_at`` evaluates consent at that instant instead of now. The
        GIL is released while screening.
        """
        item = to_native(
            source, sample_rate=sample_rate, name=name, submission_id=submission_id
        )
        (text,) = self._native.screen_many([item], _instant(consent_at))
        return ScreenResult._from_json(text)

    def screen_batch(
        self,
        sources: Iterable[Any],
        *,
        sample_rate: Optional[int] = None,
        names: Optional[Sequence[Optional[str]]] = None,
        submission_ids: Optional[Sequence[Optional[str]]] = None,
        consent_at: Optional[Instant] = None,
    ) -> List[ScreenResult]:
        """Screens many sources in parallel on the gate's thread pool, with
        the GIL released; results are in input order.

        A source that cannot be screened, of whatever kind or type, gives an
        ``error`` result for that item: the batch never raises for one bad
        item, and an unscreened item is never allowed.
        """
        sources = list(sources)
        if names is not None and len(names) != len(sources):
            raise ValueError(f"{len(names)} names for {len(sources)} sources")
        if submission_ids is not None and len(submission_ids) != len(sources):
            raise ValueError(
                f"{len(submission_ids)} submission ids for {len(sources)} sources"
            )
        items = [
            to_native_or_invalid(
                source,
                sample_rate=sample_rate,
                name=names[i] if names is not None else None,
                submission_id=submission_ids[i] if submission_ids is not None else None,
            )
            for i, source in enumerate(sources)
        ]
        texts = self._native.screen_many(items, _instant(consent_at))
        return [ScreenResult._from_json(t) for t in texts]


def _open_gate(args: Dict[str, Any]) -> Gate:
    data_dir = args.pop("data_dir")
    purpose = args.pop("purpose", DEFAULT_PURPOSE)
    return Gate(data_dir, purpose, **args)


def fingerprint(
    source: Any,
    *,
    sample_rate: Optional[int] = None,
    name: Optional[str] = None,
) -> bytes:
    """The fingerprint of a source, as the bytes of an earmark fingerprint file.

    That is what ``earmark fingerprint FILE --out F`` writes and what the
    gRPC method ``ScreenFingerprints`` and ``earmark identify --remote`` accept:
    a worker can fingerprint locally and send only the prints to a screening
    server, so the audio never leaves it. Raises :class:`DecodeError` when the
    audio cannot be decoded, ``TypeError``/``ValueError`` for unusable sources.
    """
    kind, payload, label, _, rate, channels = to_native(
        source, sample_rate=sample_rate, name=name
    )
    if kind == "path":
        return _earmark.fingerprint_path(payload)
    if kind == "bytes":
        return _earmark.fingerprint_bytes(payload, label)
    return _earmark.fingerprint_pcm(payload, rate, channels, label)
