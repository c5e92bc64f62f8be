"""Turning what a Python user holds into what the native screener takes.

A source is one of:

* a path (``str`` or ``os.PathLike``) of an audio file in any supported format;
* encoded audio in memory (``bytes``, ``bytearray``, ``memoryview``);
* samples: a NumPy array (float in [-1, 1], or integer PCM) with a sample rate,
  1-D mono or 2-D with the shorter axis as the channels;
* a Hugging Face ``datasets`` audio cell: ``{"bytes", "path"}`` (``Audio(decode=False)``),
  ``{"array", "sampling_rate"}`` (decoded), or a decoder object with
  ``get_all_samples()`` (torchcodec, ``datasets`` 4 and later).

The native layer receives ``(kind, payload, name, submission_id, sample_rate_hz,
channels)``: kind ``path`` (payload ``str``), ``bytes`` (payload ``bytes``),
``pcm`` (payload little-endian float32 ``bytes``, interleaved) or ``invalid``
(payload the reason, screened as an ``error`` result).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional, Tuple

NativeSource = Tuple[str, Any, str, Optional[str], int, int]

#: Most channels a 2-D sample array may have (as the decoder's limit).
MAX_CHANNELS = 32
#: Name of encoded audio given without one.
BYTES_NAME = "<bytes>"
#: Name of samples given without one.
SAMPLES_NAME = "<samples>"

# Full scale of integer PCM types, and their zero.
_INT_SCALE = {
    "int8": (128.0, 0.0),
    "int16": (32768.0, 0.0),
    "int32": (2147483648.0, 0.0),
    "int64": (9223372036854775808.0, 0.0),
    "uint8": (128.0, 128.0),
    "uint16": (32768.0, 32768.0),
}


def _is_array(source: Any) -> bool:
    return hasattr(source, "dtype") and hasattr(source, "shape")


def pcm_bytes(samples: Any) -> Tuple[bytes, int]:
    """Interleaved little-endian float32 bytes and the channel count of an array."""
    import numpy as np

    array = np.asarray(samples)
    kind = array.dtype.kind
    if kind == "f":
        floats = array.astype("<f4", copy=False)
    elif kind in "iu":
        scale = _INT_SCALE.get(array.dtype.name)
        if scale is None:
            raise TypeError(f"unsupported sample type {array.dtype}")
        full, zero = scale
        floats = ((array.astype("<f8") - zero) / full).astype("<f4")
    else:
        raise TypeError(
            f"samples must be a float or integer array, not {array.dtype}"
        )
    if floats.ndim == 1:
        channels = 1
        interleaved = floats
    elif floats.ndim == 2:
        rows, cols = floats.shape
        # The shorter axis holds the channels: (channels, frames) as torchaudio
        # and librosa give, or (frames, channels) as soundfile gives.
        if rows <= cols:
            channels, interleaved = rows, floats.T
        else:
            channels, interleaved = cols, floats
        if channels > MAX_CHANNELS:
            raise ValueError(
                f"a {rows}x{cols} array has more than {MAX_CHANNELS} channels on "
                "either axis; pass mono (1-D) or (channels, frames) samples"
            )
    else:
        raise ValueError(
            f"samples must be 1-D (mono) or 2-D (channels x frames), not {floats.ndim}-D"
        )
    if channels == 0:
        raise ValueError("the sample array has no channels")
    return np.ascontiguousarray(interleaved, dtype="<f4").tobytes(), channels


def _rate(value: Any, what: str) -> int:
    if value is None:
        raise ValueError(f"{what}: samples need a sample rate (sample_rate=...)")
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise ValueError(f"{what}: sample rate must be a positive integer, not {value!r}")
    return int(value)


def to_native(
    source: Any,
    *,
    sample_rate: Optional[int] = None,
    name: Optional[str] = None,
    submission_id: Optional[str] = None,
) -> NativeSource:
    """Classifies one source; raises ``TypeError``/``ValueError`` for sources
    that cannot be screened at all."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return ("path", path, name or path, submission_id, 0, 0)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(source), name or BYTES_NAME, submission_id, 0, 0)
    if _is_array(source):
        rate = _rate(sample_rate, name or SAMPLES_NAME)
        data, channels = pcm_bytes(source)
        return ("pcm", data, name or SAMPLES_NAME, submission_id, rate, channels)
    if isinstance(source, Mapping):
        return _from_mapping(source, sample_rate, name, submission_id)
    if hasattr(source, "get_all_samples"):
        samples = source.get_all_samples()
        data = samples.data
        data = data.numpy() if hasattr(data, "numpy") else data
        return to_native(
            data,
            sample_rate=samples.sample_rate,
            name=name,
            submission_id=submission_id,
        )
    if source is None:
        raise ValueError("no audio (None)")
    raise TypeError(
        "a source is a path, encoded audio bytes, a sample array with a sample "
        f"rate, or a datasets audio cell, not {type(source).__name__}"
    )


def _from_mapping(
    cell: Mapping,
    sample_rate: Optional[int],
    name: Optional[str],
    submission_id: Optional[str],
) -> NativeSource:
    path = cell.get("path")
    label = name or (os.fspath(path) if path else None)
    if cell.get("array") is not None:
        rate = cell.get("sampling_rate", cell.get("sample_rate", sample_rate))
        rate = _rate(rate, label or SAMPLES_NAME)
        data, channels = pcm_bytes(cell["array"])
        return ("pcm", data, label or SAMPLES_NAME, submission_id, rate, channels)
    if cell.get("bytes") is not None:
        return ("bytes", bytes(cell["bytes"]), label or BYTES_NAME, submission_id, 0, 0)
    if path:
        return ("path", os.fspath(path), label, submission_id, 0, 0)
    raise ValueError(
        "an audio cell needs 'bytes', 'path', or 'array' with 'sampling_rate'; "
        f"this one has keys {sorted(cell)}"
    )


def to_native_or_invalid(
    source: Any,
    *,
    sample_rate: Optional[int] = None,
    name: Optional[str] = None,
    submission_id: Optional[str] = None,
) -> NativeSource:
    """:func:`to_native`, with unusable sources turned into ``invalid`` items
    (screened as ``error`` results) instead of exceptions."""
    try:
        return to_native(
            source, sample_rate=sample_rate, name=name, submission_id=submission_id
        )
    except Exception as err:  # noqa: BLE001 - any failure makes an error result
        label = name or type(source).__name__
        return ("invalid", f"{label}: {err}", label, submission_id, 0, 0)
