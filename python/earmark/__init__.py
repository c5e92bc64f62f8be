"""earmark: an audio fingerprint consent gate, in Python.

Screen audio for registered works and the consent their holders gave for a
purpose (AI training by default)::

    import earmark

    gate = earmark.Gate("earmark-data", purpose="ai-training")
    result = gate.screen("clip.mp3")
    print(result.verdict, [(m.work_id, m.start_s, m.end_s) for m in result.matches])

Datasets: :mod:`earmark.hf` (Hugging Face ``datasets``) and :mod:`earmark.ray`
(Ray Data, across a cluster); :mod:`earmark.report` writes ``earmark scan``'s
report and summary from Python results.
"""

from ._earmark import (
    ENGINE_VERSION,
    FINGERPRINT_CONFIG_ID,
    POLICY_VERSION,
    ConfigMismatchError,
    DataDirError,
    DecodeError,
    EarmarkError,
    GenerationMismatchError,
)
from ._gate import DEFAULT_PURPOSE, Gate, fingerprint
from ._result import VERDICTS, Attribution, Match, ScreenResult

__version__ = ENGINE_VERSION

__all__ = [
    "ENGINE_VERSION",
    "FINGERPRINT_CONFIG_ID",
    "POLICY_VERSION",
    "VERDICTS",
    "DEFAULT_PURPOSE",
    "Attribution",
    "ConfigMismatchError",
    "DataDirError",
    "DecodeError",
    "EarmarkError",
    "Gate",
    "GenerationMismatchError",
    "Match",
    "ScreenResult",
    "fingerprint",
]
