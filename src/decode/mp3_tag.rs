//! Does an MP3 file declare its length?
//!
//! An MPEG audio stream has no end marker, and symphonia's reader ends the
//! stream at the last whole frame it finds, so a cut MP3 would decode as a
//! shorter file without an error. Most encoders (LAME, ffmpeg) put a Xing or
//! Info tag with the number of frames into the first frame; when it is there,
//! the decoded length must reach it. Without it, the declared length is only
//! an estimate from the bitrate, which variable-bitrate files make unreliable,
//! so nothing is checked.

/// ID3v2 tag header: "ID3", version (2), flags (1), size (4, syncsafe).
const ID3_HEADER_BYTES: usize = 10;
/// ID3v2 flag: a 10-byte footer follows the tag.
const ID3_FOOTER_FLAG: u8 = 0x10;
/// Bytes after the tag searched for the first frame.
pub(super) const FRAME_SEARCH_BYTES: usize = 4_096;
/// MPEG audio frame header.
const FRAME_HEADER_BYTES: usize = 4;
/// Xing/Info flag: the frame count field is present.
const FRAME_COUNT_FLAG: u8 = 0x01;

/// Bytes of the ID3v2 tag at the start of `head` (0 without one), if the
/// header is whole.
pub(super) fn id3v2_len(head: &[u8]) -> Option<usize> {
    let header = head.get(..ID3_HEADER_BYTES)?;
    if !header.starts_with(b"ID3") {
        return Some(0);
    }
    let size = header
        .get(6..10)?
        .iter()
        .fold(0usize, |size, &b| (size << 7) | usize::from(b & 0x7f));
    let footer = if header.get(5).is_some_and(|f| f & ID3_FOOTER_FLAG != 0) {
        ID3_HEADER_BYTES
    } else {
        0
    };
    Some(ID3_HEADER_BYTES + size + footer)
}

/// Whether the first MPEG Layer III frame in `frames` (the bytes right after
/// any ID3v2 tag) carries a Xing/Info tag with a frame count.
pub(super) fn declares_frame_count(frames: &[u8]) -> bool {
    let Some(at) = first_frame(frames) else {
        return false;
    };
    let Some(header) = frames.get(at..at + FRAME_HEADER_BYTES) else {
        return false;
    };
    let mpeg1 = header[1] & 0x18 == 0x18;
    let mono = header[3] & 0xc0 == 0xc0;
    let side_info_bytes = match (mpeg1, mono) {
        (true, false) => 32,
        (true, true) | (false, false) => 17,
        (false, true) => 9,
    };
    let tag_at = at + FRAME_HEADER_BYTES + side_info_bytes;
    let Some(tag) = frames.get(tag_at..tag_at + 8) else {
        return false;
    };
    (tag.starts_with(b"Xing") || tag.starts_with(b"Info")) && tag[7] & FRAME_COUNT_FLAG != 0
}

/// Offset in `frames` of the first plausible Layer III frame header, within
/// [`FRAME_SEARCH_BYTES`].
pub(super) fn first_frame(frames: &[u8]) -> Option<usize> {
    let search = frames.get(..FRAME_SEARCH_BYTES).unwrap_or(frames);
    search
        .windows(FRAME_HEADER_BYTES)
        .position(is_layer3_header)
}

/// A plausible MPEG audio Layer III frame header: frame sync, a known version,
/// layer III, a bitrate and a sample rate index that are not reserved.
fn is_layer3_header(h: &[u8]) -> bool {
    let [b0, b1, b2, _] = *h else {
        return false;
    };
    let version = (b1 >> 3) & 0x03;
    let layer = (b1 >> 1) & 0x03;
    let bitrate = b2 >> 4;
    let rate = (b2 >> 2) & 0x03;
    b0 == 0xff && b1 & 0xe0 == 0xe0 && version != 1 && layer == 1 && bitrate != 0x0f && rate != 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MPEG-1 Layer III stereo frame header, 128 kbit/s, 44.1 kHz.
    const STEREO_HEADER: [u8; 4] = [0xff, 0xfb, 0x90, 0x00];

    fn first_frame(tag: &[u8; 4], flags: u8) -> Vec<u8> {
        let mut frame = STEREO_HEADER.to_vec();
        frame.extend([0u8; 32]); // side information
        frame.extend_from_slice(tag);
        frame.extend([0, 0, 0, flags, 0, 0, 0x10, 0]);
        frame
    }

    #[test]
    fn a_xing_or_info_frame_count_is_found_after_an_id3_tag() {
        for tag in [b"Xing", b"Info"] {
            let mut file = b"ID3\x04\x00\x00\x00\x00\x01\x00".to_vec(); // 128-byte tag
            file.extend([0u8; 128]);
            file.extend(first_frame(tag, FRAME_COUNT_FLAG | 0x02));
            let tag_len = id3v2_len(&file).expect("whole header");
            assert_eq!(tag_len, ID3_HEADER_BYTES + 128);
            assert!(declares_frame_count(&file[tag_len..]));
        }
    }

    #[test]
    fn no_tag_or_no_frame_count_declares_nothing() {
        assert!(!declares_frame_count(&first_frame(b"Xing", 0x02)));
        assert!(!declares_frame_count(&first_frame(b"LAME", 0x01)));
        let mut plain = STEREO_HEADER.to_vec();
        plain.extend([0x11u8; 400]);
        assert!(!declares_frame_count(&plain));
        assert!(!declares_frame_count(b"not an mp3 at all"));
        assert!(!declares_frame_count(&[]));
        assert_eq!(id3v2_len(b"ID3"), None);
        assert_eq!(id3v2_len(b"RIFF....WAVE"), Some(0));
    }
}
