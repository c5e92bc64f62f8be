"""Screening Hugging Face ``datasets``.

::

    import earmark, earmark.hf

    gate = earmark.Gate("earmark-data", purpose="ai-training")
    ds = ds.map(earmark.hf.screen_columns(gate), batched=True)
    allowed = ds.filter(earmark.hf.allowed)   # or: lambda row: row["earmark_verdict"] == "allow"

The audio column may be encoded (``Audio(decode=False)``: ``{"bytes", "path"}``
cells, screened without decoding in Python; the fastest form), decoded
(``{"array", "sampling_rate"}`` cells, as ``datasets`` 3 decodes, or torchcodec
decoders as ``datasets`` 4 and later give), or plain paths/bytes.

The added columns (names start with ``prefix``, ``earmark_`` by default):
``verdict``; ``matches``, a JSON list of the works found with their time
ranges and consent (the objects of ``earmark scan``'s report, read back with
:func:`matches`); ``reasons``; ``error`` (``""`` when the audio was screened);
``duration_s`` (NaN when unknown); ``submission_id`` (``""`` when unknown);
``index_generation``; ``policy_version``. No column is ever null or an empty
list, so ``datasets`` infers the same types for every batch.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional

from ._gate import Gate, Instant
from ._result import Match

#: Prefix of the added columns.
DEFAULT_PREFIX = "earmark_"


class ScreenColumns:
    """A batched ``datasets`` map function adding earmark's verdict columns.

    Picklable (the gate pickles as its path), so ``ds.map(..., num_proc=N)``
    and ``datasets``' caching work; each process opens the data directory once.
    """

    def __init__(
        self,
        gate: Gate,
        audio_column: str = "audio",
        *,
        prefix: str = DEFAULT_PREFIX,
        name_column: Optional[str] = None,
        consent_at: Optional[Instant] = None,
    ) -> None:
        self.gate = gate
        self.audio_column = audio_column
        self.prefix = prefix
        self.name_column = name_column
        self.consent_at = consent_at

    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        if self.audio_column not in batch:
            raise KeyError(
                f"no column {self.audio_column!r} in the batch (columns: {sorted(batch)}); "
                "pass audio_column="
            )
        names = batch[self.name_column] if self.name_column else None
        if names is not None:
            names = [None if n is None else str(n) for n in names]
        results = self.gate.screen_batch(
            batch[self.audio_column], names=names, consent_at=self.consent_at
        )
        p = self.prefix
        return {
            f"{p}verdict": [r.verdict for r in results],
            f"{p}matches": [
                json.dumps([m.to_dict() for m in r.matches], ensure_ascii=False)
                for r in results
            ],
            f"{p}reasons": [list(r.reasons) for r in results],
            f"{p}error": [r.error or "" for r in results],
            f"{p}duration_s": [
                math.nan if r.duration_s is None else r.duration_s for r in results
            ],
            f"{p}submission_id": [r.submission_id or "" for r in results],
            f"{p}index_generation": [r.index_generation for r in results],
            f"{p}policy_version": [r.policy_version for r in results],
        }


def screen_columns(
    gate: Gate,
    audio_column: str = "audio",
    *,
    prefix: str = DEFAULT_PREFIX,
    name_column: Optional[str] = None,
    consent_at: Optional[Instant] = None,
) -> ScreenColumns:
    """The function for ``ds.map(..., batched=True)`` that screens
    ``audio_column`` and adds the verdict columns (see the module docs).
    ``name_column`` names each result (default: the audio's path, if any)."""
    return ScreenColumns(
        gate, audio_column, prefix=prefix, name_column=name_column, consent_at=consent_at
    )


def allowed(row: Dict[str, Any], prefix: str = DEFAULT_PREFIX) -> bool:
    """``ds.filter`` predicate keeping rows whose verdict is ``allow`` (never
    ``error``, ``flag`` or ``block``)."""
    return row[f"{prefix}verdict"] == "allow"


def matches(row: Dict[str, Any], prefix: str = DEFAULT_PREFIX) -> List[Match]:
    """The matches of a screened row, as :class:`~earmark.Match` objects."""
    return [Match(**m) for m in json.loads(row[f"{prefix}matches"])]
