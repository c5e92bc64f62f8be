"""Screening results as plain, picklable Python objects."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

#: The verdicts, least to most severe; ``error`` means the audio could not be
#: screened and is never allowed.
VERDICTS = ("allow", "flag", "block", "error")


@dataclass(frozen=True)
class Match:
    """A registered work found in the screened audio, with its consent.

    Times are seconds: ``start_s``/``end_s`` in the screened audio,
    ``ref_start_s``/``ref_end_s`` in the registered recording.
    ``speed_factor`` is reference seconds per screened second and
    ``pitch_factor`` screened frequency over reference frequency.
    """

    work_id: str
    title: Optional[str]
    isrc: Optional[str]
    holder: Optional[str]
    #: Consent in force for the purpose: ``opted-out``, ``opted-in``,
    #: ``constrained`` or ``unknown``.
    consent: str
    #: Id of the consent record that decided it.
    consent_record: Optional[int]
    #: What this match alone calls for: ``allow``, ``flag`` or ``block``.
    outcome: str
    confident: bool
    score: float
    start_s: float
    end_s: float
    ref_start_s: float
    ref_end_s: float
    speed_factor: float
    pitch_factor: float

    def to_dict(self) -> Dict[str, Any]:
        """The match as a dict with the keys of ``earmark scan``'s report."""
        return asdict(self)


@dataclass(frozen=True)
class Attribution:
    """Seconds of an opted-in work used by an allowed submission."""

    work_id: str
    title: str
    isrc: Optional[str]
    holder: str
    seconds_matched: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScreenResult:
    """The outcome of screening one audio source.

    ``verdict`` is ``allow``, ``flag``, ``block`` or ``error`` (the source
    could not be screened: unreadable, corrupt, empty, too long...; ``error``
    is never allowed). ``reasons`` say why in words; ``error`` holds the
    failure for ``error`` verdicts.
    """

    verdict: str
    #: The source's name: its path, the name given, or ``<bytes>``/``<samples>``.
    name: str
    #: Stable id of the submission (``sha256:<hex>`` of encoded audio,
    #: ``prints:<hex>`` for samples, or the id the caller gave).
    submission_id: Optional[str]
    #: SHA-256 (hex) of the encoded audio bytes; ``None`` for samples.
    content_sha256: Optional[str]
    duration_s: Optional[float]
    matches: Tuple[Match, ...]
    reasons: Tuple[str, ...]
    error: Optional[str]
    purpose: str
    #: The instant consent was evaluated at (RFC 3339, UTC).
    evaluated_at: str
    index_generation: int
    policy_version: str
    engine_version: str
    #: Opted-in works used by an allowed submission (for the attribution ledger).
    attributions: Tuple[Attribution, ...] = ()
    #: Ledger entries this screening wrote (0 for a dry run or when the use
    #: was already recorded).
    attributions_recorded: int = 0

    @property
    def allowed(self) -> bool:
        """True only for ``allow``: blocked, flagged and unscreened audio is not."""
        return self.verdict == "allow"

    def to_dict(self) -> Dict[str, Any]:
        """The result as plain dicts and lists (JSON-ready)."""
        out = asdict(self)
        out["matches"] = [m.to_dict() for m in self.matches]
        out["reasons"] = list(self.reasons)
        out["attributions"] = [a.to_dict() for a in self.attributions]
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ScreenResult":
        fields = dict(data)
        fields["matches"] = tuple(Match(**m) for m in data.get("matches", ()))
        fields["reasons"] = tuple(data.get("reasons", ()))
        fields["attributions"] = tuple(
            Attribution(**a) for a in data.get("attributions", ())
        )
        return cls(**fields)

    @classmethod
    def _from_json(cls, text: str) -> "ScreenResult":
        return cls.from_dict(json.loads(text))
