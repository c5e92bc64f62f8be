//! Does an MP3 without a declared length end inside a frame?
//!
//! Without a Xing/Info frame count ([`super::mp3_tag`]) an MP3 declares no
//! length, and symphonia's reader ends the stream quietly at the last whole
//! frame, so a cut file would decode as a shorter recording. Every MPEG audio
//! frame header gives its frame's size, so the frames form a chain: the next
//! header starts where the frame ends. [`cut_inside_frame`] follows that chain
//! from the first frame. If it reaches a header (of the same stream) whose
//! frame runs past the end of the input, the input was cut inside that frame.
//!
//! Anything else proves nothing and the input is accepted as before: the chain
//! ending exactly at the end of the input, a trailing tag (ID3v1, APE,
//! Lyrics3), junk between frames, a free-format stream (no size in its
//! headers), or a few stray bytes too short to hold a header. The chain must
//! also be confirmed over its first [`CONFIRM_FRAMES`] links before it counts,
//! so bytes in another format (PCM samples, say) that happen to look like a
//! header are never taken for a stream.

/// Bytes of an MPEG audio frame header.
const HEADER_BYTES: usize = 4;
/// Whole frames that must chain before a frame running past the end counts
/// as a cut.
const CONFIRM_FRAMES: u64 = 3;
/// Bytes read at a time while walking the chain.
const WALK_CHUNK_BYTES: usize = 64 * 1024;

/// Layer III bitrates (kbit/s) by bitrate index: MPEG-1, then MPEG-2 and 2.5.
/// Index 0 is free format (no size), 15 is reserved.
const MPEG1_KBPS: [u32; 15] = [
    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
const MPEG2_KBPS: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
/// MPEG-1 sample rates (Hz) by index; MPEG-2 halves them, MPEG-2.5 quarters.
const MPEG1_RATES_HZ: [u32; 3] = [44_100, 48_000, 32_000];
/// Version field values.
const VERSION_MPEG1: u8 = 3;
const VERSION_MPEG2: u8 = 2;
const VERSION_MPEG25: u8 = 0;
/// Layer field value of Layer III.
const LAYER_III: u8 = 1;
/// Header bits that stay the same through a stream: version and layer (byte 1),
/// sample rate index (byte 2).
const STREAM_BITS_1: u8 = 0x1e;
const STREAM_BITS_2: u8 = 0x0c;

/// One MPEG audio Layer III frame as its header describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Frame {
    bytes: usize,
    samples: u32,
    sample_rate_hz: u32,
}

/// The frame a 4-byte header describes, if it is a Layer III header with a
/// known size.
fn parse_header(h: [u8; HEADER_BYTES]) -> Option<Frame> {
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 0x03;
    if (h[1] >> 1) & 0x03 != LAYER_III {
        return None;
    }
    let bitrate_index = usize::from(h[2] >> 4);
    let rate_index = usize::from((h[2] >> 2) & 0x03);
    let padding = usize::from((h[2] >> 1) & 0x01);
    let base_rate_hz = *MPEG1_RATES_HZ.get(rate_index)?;
    let (kbps_table, sample_rate_hz, samples, bytes_per_kbit_s) = match version {
        VERSION_MPEG1 => (&MPEG1_KBPS, base_rate_hz, 1152, 144_000),
        VERSION_MPEG2 => (&MPEG2_KBPS, base_rate_hz / 2, 576, 72_000),
        VERSION_MPEG25 => (&MPEG2_KBPS, base_rate_hz / 4, 576, 72_000),
        _ => return None,
    };
    let kbps = *kbps_table.get(bitrate_index)?;
    if kbps == 0 {
        return None;
    }
    let bytes = (bytes_per_kbit_s * kbps / sample_rate_hz) as usize + padding;
    Some(Frame {
        bytes,
        samples,
        sample_rate_hz,
    })
}

/// Whether two headers belong to one stream (same version, layer and rate).
fn same_stream(a: [u8; HEADER_BYTES], b: [u8; HEADER_BYTES]) -> bool {
    a[1] & STREAM_BITS_1 == b[1] & STREAM_BITS_1 && a[2] & STREAM_BITS_2 == b[2] & STREAM_BITS_2
}

/// Where the chain of frames starting at `first` was cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CutFrame {
    /// Whole frames before the cut one.
    pub whole_frames: u64,
    /// Seconds of audio in those frames.
    pub whole_s: f64,
}

/// Sequential reads over an input of `size` bytes through `read_at`.
struct ChunkReader<F> {
    read_at: F,
    start: u64,
    chunk: Vec<u8>,
}

impl<F, E> ChunkReader<F>
where
    F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
{
    /// The header bytes at `offset`, if the input holds them.
    fn header_at(&mut self, offset: u64) -> Result<Option<[u8; HEADER_BYTES]>, E> {
        let end = self.start + self.chunk.len() as u64;
        if offset < self.start || offset + HEADER_BYTES as u64 > end {
            self.chunk = (self.read_at)(offset, WALK_CHUNK_BYTES)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(self
            .chunk
            .get(at..at + HEADER_BYTES)
            .and_then(|h| <[u8; HEADER_BYTES]>::try_from(h).ok()))
    }
}

/// Follows the frame chain from the header at byte `first` of an input of
/// `size` bytes (`read_at(offset, len)` returns up to `len` bytes from
/// `offset`) and says where it was cut, if it ends inside a frame.
pub(super) fn cut_inside_frame<E>(
    first: u64,
    size: u64,
    read_at: impl FnMut(u64, usize) -> Result<Vec<u8>, E>,
) -> Result<Option<CutFrame>, E> {
    let mut reader = ChunkReader {
        read_at,
        start: 0,
        chunk: Vec::new(),
    };
    let Some(first_header) = reader.header_at(first)? else {
        return Ok(None);
    };
    let (mut at, mut whole_frames, mut whole_samples) = (first, 0u64, 0u64);
    while at < size {
        let Some(header) = reader.header_at(at)? else {
            return Ok(None);
        };
        let Some(frame) = parse_header(header).filter(|_| same_stream(header, first_header)) else {
            return Ok(None);
        };
        let end = at + frame.bytes as u64;
        if end > size {
            return Ok((whole_frames >= CONFIRM_FRAMES).then(|| CutFrame {
                whole_frames,
                whole_s: whole_samples as f64 / f64::from(frame.sample_rate_hz),
            }));
        }
        at = end;
        whole_frames += 1;
        whole_samples += u64::from(frame.samples);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417-byte frames.
    const HEADER: [u8; 4] = [0xff, 0xfb, 0x90, 0x00];
    const FRAME_BYTES: usize = 417;

    fn stream(frames: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..frames {
            bytes.extend(HEADER);
            bytes.extend(std::iter::repeat_n((i % 251) as u8, FRAME_BYTES - 4));
        }
        bytes
    }

    fn walk(bytes: &[u8]) -> Option<CutFrame> {
        cut_inside_frame(0, bytes.len() as u64, |offset, len| {
            let from = offset as usize;
            let rest = bytes.get(from..).unwrap_or_default();
            Ok::<_, ()>(rest.get(..len).unwrap_or(rest).to_vec())
        })
        .expect("in-memory reads do not fail")
    }

    #[test]
    fn header_sizes_follow_the_standard() {
        let frame = parse_header(HEADER).expect("valid header");
        assert_eq!(frame.bytes, FRAME_BYTES);
        assert_eq!((frame.samples, frame.sample_rate_hz), (1152, 44_100));
        // Padding adds a byte; MPEG-2 at 22.05 kHz and 64 kbit/s: 72·64000/22050.
        assert_eq!(
            parse_header([0xff, 0xfb, 0x92, 0x00]).map(|f| f.bytes),
            Some(418)
        );
        let mpeg2 = parse_header([0xff, 0xf3, 0x80, 0x00]).expect("MPEG-2 header");
        assert_eq!((mpeg2.bytes, mpeg2.samples), (208, 576));
        // Free format, reserved bitrate or rate, other layers: no size.
        for h in [
            [0xff, 0xfb, 0x00, 0x00],
            [0xff, 0xfb, 0xf0, 0x00],
            [0xff, 0xfb, 0x9c, 0x00],
            [0xff, 0xfd, 0x90, 0x00],
            [0xff, 0xf1, 0x50, 0x80],
        ] {
            assert_eq!(parse_header(h), None, "{h:x?}");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_found() {
        let whole = stream(40);
        assert_eq!(walk(&whole), None, "a whole chain is not cut");
        let cut = &whole[..20 * FRAME_BYTES + 100];
        let found = walk(cut).expect("cut inside frame 21");
        assert_eq!(found.whole_frames, 20);
        assert!((found.whole_s - 20.0 * 1152.0 / 44_100.0).abs() < 1e-9);
        // Cut at a frame boundary, or leaving fewer bytes than a header: nothing
        // tells it from a shorter stream.
        assert_eq!(walk(&whole[..20 * FRAME_BYTES]), None);
        assert_eq!(walk(&whole[..20 * FRAME_BYTES + 2]), None);
    }

    #[test]
    fn tags_junk_and_other_formats_prove_nothing() {
        let mut tagged = stream(10);
        tagged.extend(b"TAG");
        tagged.extend([b' '; 125]);
        assert_eq!(walk(&tagged), None, "ID3v1 after the last frame");
        let mut junk = stream(10);
        junk.extend([0x55; 17]);
        junk.extend(stream(10));
        junk.truncate(junk.len() - 100);
        assert_eq!(walk(&junk), None, "the chain breaks before the cut");
        // Too few frames to confirm a stream.
        assert_eq!(walk(&stream(3)[..2 * FRAME_BYTES + 50]), None);
        assert_eq!(
            walk(&stream(4)[..3 * FRAME_BYTES + 50]).map(|c| c.whole_frames),
            Some(3)
        );
        // A header of another stream (sample rate changed) ends the walk.
        let mut other = stream(10);
        other.extend([0xff, 0xfb, 0x94, 0x00]);
        other.extend([0u8; 10]);
        assert_eq!(walk(&other), None);
        assert_eq!(walk(b"RIFF\x00\x00\x00\x00WAVEfmt "), None);
        assert_eq!(walk(&[]), None);
    }
}
