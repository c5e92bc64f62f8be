"""Native part of earmark (Rust, PyO3). Use the wrappers in `earmark`."""

from typing import List, Optional, Sequence, Tuple, Union

ENGINE_VERSION: str
POLICY_VERSION: str
#: Fingerprint configuration id, as `0x0001000b`.
FINGERPRINT_CONFIG_ID: str

class EarmarkError(Exception):
    """Base of earmark's exceptions."""

class DataDirError(EarmarkError):
    """The data directory is missing, unreadable, or not a usable earmark data directory."""

class ConfigMismatchError(DataDirError):
    """The index was built with another fingerprint configuration or format version."""

class GenerationMismatchError(EarmarkError):
    """The index is not at the generation a run screens against."""

class DecodeError(EarmarkError):
    """Audio could not be decoded (only `fingerprint` raises it; screening gives `error` results)."""

#: (kind, payload, name, submission_id, sample_rate_hz, channels); kind is
#: "path" (payload str), "bytes" (payload bytes), "pcm" (payload little-endian
#: float32 interleaved bytes) or "invalid" (payload the reason).
NativeSource = Tuple[str, Union[str, bytes], str, Optional[str], int, int]

class NativeGate:
    def __init__(
        self,
        data_dir: str,
        purpose: str,
        threads: Optional[int],
        unknown_consent: str,
        territory: Optional[str],
        record_attributions: bool,
    ) -> None: ...
    @property
    def records_attributions(self) -> bool: ...
    @property
    def purpose(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def index_generation(self) -> int: ...
    @property
    def registered_works(self) -> int: ...
    @property
    def policy_version(self) -> str: ...
    @property
    def engine_version(self) -> str: ...
    @property
    def policy_json(self) -> str: ...
    def screen_many(
        self, items: Sequence[NativeSource], consent_at: Optional[str]
    ) -> List[str]:
        """One JSON result per item, in order; the GIL is released meanwhile."""

def fingerprint_path(path: str) -> bytes: ...
def fingerprint_bytes(data: bytes, name: str) -> bytes: ...
def fingerprint_pcm(samples: bytes, sample_rate_hz: int, channels: int, name: str) -> bytes: ...
