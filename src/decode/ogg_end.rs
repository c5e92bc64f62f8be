//! Is an Ogg file complete?
//!
//! Ogg declares no total length, and symphonia's reader takes the last page it
//! finds for the end of the stream, so a file cut short would decode as a
//! shorter file without an error. A complete Ogg file ends with a whole page
//! whose header is flagged end-of-stream (RFC 3533, section 6), which the last
//! [`MAX_PAGE_BYTES`] of the file always hold.

/// Capture pattern at the start of every page.
const CAPTURE: &[u8; 4] = b"OggS";
/// Fixed part of a page header: capture pattern to segment count.
const HEADER_BYTES: usize = 27;
/// Offsets of fields in the page header.
const VERSION_AT: usize = 4;
const HEADER_TYPE_AT: usize = 5;
const SEGMENT_COUNT_AT: usize = 26;
/// Header-type flag of the last page of a logical bitstream.
const END_OF_STREAM_FLAG: u8 = 0x04;
/// Largest possible page: the header, 255 lacing values and 255 segments of
/// 255 bytes.
pub(super) const MAX_PAGE_BYTES: usize = HEADER_BYTES + 255 + 255 * 255;

/// Whether `head` (the first bytes of a file) starts an Ogg page.
pub(super) fn is_ogg(head: &[u8]) -> bool {
    head.starts_with(CAPTURE)
}

/// Why the Ogg file whose last bytes are `tail` (at least the last
/// [`MAX_PAGE_BYTES`], or the whole file) is incomplete; `None` if it is not.
pub(super) fn incompleteness(tail: &[u8]) -> Option<&'static str> {
    // The last page is the one that ends exactly at the end of the file. The
    // capture pattern can also occur by chance inside audio data, so every
    // occurrence is tried, last first.
    let mut before = tail.len();
    while let Some(at) = tail
        .get(..before)
        .and_then(|search| search.windows(CAPTURE.len()).rposition(|w| w == CAPTURE))
    {
        let page = tail.get(at..).unwrap_or_default();
        if page_len(page) == Some(page.len()) {
            let flags = page.get(HEADER_TYPE_AT).copied().unwrap_or(0);
            return (flags & END_OF_STREAM_FLAG == 0).then_some(
                "its last Ogg page is not marked end-of-stream (cut at a page boundary)",
            );
        }
        before = at;
    }
    Some("it ends inside an Ogg page (cut mid-page)")
}

/// Length of the page starting at `page[0]`, if its header is whole.
fn page_len(page: &[u8]) -> Option<usize> {
    let header = page.get(..HEADER_BYTES)?;
    if header.get(VERSION_AT) != Some(&0) {
        return None;
    }
    let segments = usize::from(*header.get(SEGMENT_COUNT_AT)?);
    let lacing = page.get(HEADER_BYTES..HEADER_BYTES + segments)?;
    Some(HEADER_BYTES + segments + lacing.iter().map(|&b| usize::from(b)).sum::<usize>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One page: `flags`, and a body of `segments` lacing values of `lace` bytes.
    fn page(flags: u8, segments: u8, lace: u8) -> Vec<u8> {
        let mut page = CAPTURE.to_vec();
        page.push(0); // version
        page.push(flags);
        page.extend_from_slice(&[0; 20]); // granule, serial, sequence, CRC
        page.push(segments);
        page.extend(std::iter::repeat_n(lace, usize::from(segments)));
        page.extend(std::iter::repeat_n(
            0x55,
            usize::from(segments) * usize::from(lace),
        ));
        page
    }

    #[test]
    fn a_stream_ending_in_an_end_of_stream_page_is_complete() {
        let mut file = page(0x02, 1, 30);
        file.extend(page(0, 3, 255));
        file.extend(page(END_OF_STREAM_FLAG, 2, 100));
        assert_eq!(incompleteness(&file), None);
        // The tail alone (the last page is whole in it) gives the same answer.
        let last = page(END_OF_STREAM_FLAG, 2, 100).len();
        assert_eq!(incompleteness(&file[file.len() - last - 10..]), None);
    }

    #[test]
    fn cuts_at_page_boundaries_and_mid_page_are_found() {
        let mut file = page(0x02, 1, 30);
        file.extend(page(0, 3, 255));
        let boundary = file.len();
        file.extend(page(END_OF_STREAM_FLAG, 2, 100));
        let at_boundary = incompleteness(&file[..boundary]).unwrap_or_default();
        assert!(
            at_boundary.contains("not marked end-of-stream"),
            "{at_boundary}"
        );
        for cut in [boundary + 3, boundary + 20, boundary + 40, file.len() - 1] {
            let mid_page = incompleteness(&file[..cut]).unwrap_or_default();
            assert!(mid_page.contains("mid-page"), "cut at {cut}: {mid_page}");
        }
        assert!(incompleteness(b"").is_some());
    }

    #[test]
    fn a_capture_pattern_inside_audio_data_is_not_taken_for_a_page() {
        // The last page's body contains "OggS" followed by bytes that would
        // parse as a page header reaching past the end.
        let mut last = page(END_OF_STREAM_FLAG, 1, 60);
        let body_at = last.len() - 60;
        last[body_at..body_at + 4].copy_from_slice(CAPTURE);
        last[body_at + VERSION_AT] = 0;
        let mut file = page(0x02, 1, 30);
        file.extend(last);
        assert_eq!(incompleteness(&file), None);
    }
}
