//! Recognising audio by content (magic numbers), with the file extension as a
//! second opinion.
//!
//! A folder or a WebDataset sample may hold audio under any name, and sidecar
//! files (JSON, text, features) under audio-looking names. An entry is screened
//! when its first bytes look like an audio container **or** its extension is an
//! audio extension; one that cannot then be decoded becomes an `error` item
//! (fail closed) rather than being silently skipped.

/// Bytes read from the start of a file to recognise it.
pub const SNIFF_BYTES: usize = 4096;

/// Extensions of audio (and audio-carrying video) containers.
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "bwf", "rf64", "flac", "ogg", "oga", "opus", "spx", "mp3", "mp2", "m4a", "m4b",
    "mp4", "aac", "adts", "aif", "aiff", "aifc", "caf", "mka", "mkv", "webm", "wma", "wv", "ape",
    "amr", "au", "snd", "alac",
];

/// True if `ext` (without the dot, any case; for multi-part WebDataset
/// extensions the last part counts) names an audio container.
pub fn has_audio_extension(ext: &str) -> bool {
    let last = ext.rsplit('.').next().unwrap_or(ext);
    AUDIO_EXTENSIONS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(last))
}

/// True if the first bytes of a file look like an audio container.
pub fn looks_like_audio(head: &[u8]) -> bool {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let riff = (at(0, b"RIFF") || at(0, b"RF64") || at(0, b"BW64")) && at(8, b"WAVE");
    let aiff = at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC"));
    riff || aiff
        || at(0, b"fLaC")
        || at(0, b"OggS")
        || at(0, b"ID3")
        || at(0, b"caff")
        || at(4, b"ftyp")
        || at(0, &[0x1A, 0x45, 0xDF, 0xA3]) // EBML: Matroska / WebM
        || at(0, b"wvpk")
        || at(0, b"MAC ")
        || at(0, b"#!AMR")
        || at(0, b".snd")
        || at(0, &[0x30, 0x26, 0xB2, 0x75]) // ASF (WMA)
        || mpeg_frames(head)
        || adts_frames(head)
}

/// Length in bytes of an MPEG-1/2/2.5 audio frame starting with `h`, if valid.
fn mpeg_frame_len(h: &[u8]) -> Option<usize> {
    if h.len() < 4 || h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 0b11; // 0: 2.5, 2: 2, 3: 1
    let layer = (h[1] >> 1) & 0b11; // 1: III, 2: II, 3: I
    let bitrate_index = usize::from(h[2] >> 4);
    let rate_index = usize::from((h[2] >> 2) & 0b11);
    let padding = usize::from((h[2] >> 1) & 1);
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    const RATES: [[u32; 3]; 3] = [
        [11_025, 12_000, 8_000],
        [22_050, 24_000, 16_000],
        [44_100, 48_000, 32_000],
    ];
    const V1_L1: [u32; 15] = [
        0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ];
    const V1_L2: [u32; 15] = [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ];
    const V1_L3: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V2_L1: [u32; 15] = [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ];
    const V2_L23: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let rate = match version {
        0 => RATES[0][rate_index],
        2 => RATES[1][rate_index],
        _ => RATES[2][rate_index],
    };
    let kbps = match (version == 3, layer) {
        (true, 3) => V1_L1[bitrate_index],
        (true, 2) => V1_L2[bitrate_index],
        (true, _) => V1_L3[bitrate_index],
        (false, 3) => V2_L1[bitrate_index],
        (false, _) => V2_L23[bitrate_index],
    };
    let bits = kbps as usize * 1000;
    let len = if layer == 3 {
        (12 * bits / rate as usize + padding) * 4
    } else if layer == 1 && version != 3 {
        72 * bits / rate as usize + padding
    } else {
        144 * bits / rate as usize + padding
    };
    (len >= 4).then_some(len)
}

/// Two consecutive valid MPEG audio frame headers at the start.
fn mpeg_frames(head: &[u8]) -> bool {
    mpeg_frame_len(head).is_some_and(|len| {
        head.get(len..)
            .is_some_and(|next| mpeg_frame_len(next).is_some())
    })
}

/// Two consecutive valid ADTS (raw AAC) frame headers at the start.
fn adts_frames(head: &[u8]) -> bool {
    let frame_len = |h: &[u8]| -> Option<usize> {
        if h.len() < 7 || h[0] != 0xFF || h[1] & 0xF6 != 0xF0 {
            return None;
        }
        if (h[2] >> 2) & 0x0F > 12 {
            return None;
        }
        let len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        (len >= 7).then_some(len)
    };
    frame_len(head).is_some_and(|len| head.get(len..).is_some_and(|n| frame_len(n).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_containers() {
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.resize(64, 0);
        assert!(looks_like_audio(&wav));
        assert!(looks_like_audio(b"fLaC\0\0\0\x22"));
        assert!(looks_like_audio(b"OggS\0\x02"));
        assert!(looks_like_audio(b"ID3\x04\0\0"));
        assert!(looks_like_audio(b"\0\0\0\x20ftypM4A "));
        assert!(!looks_like_audio(b"{\"text\": \"hello\"}"));
        assert!(!looks_like_audio(b""));
        assert!(!looks_like_audio(b"RIFF\0\0\0\0AVI LIST"));
    }

    #[test]
    fn mpeg_needs_two_frames() {
        // MPEG-1 layer III, 128 kb/s, 44.1 kHz: 417-byte frames.
        let header = [0xFF, 0xFB, 0x90, 0x00];
        let mut two = vec![0u8; 417 + 4];
        two[..4].copy_from_slice(&header);
        two[417..].copy_from_slice(&header);
        assert!(looks_like_audio(&two));
        let mut one = two.clone();
        one[417] = 0;
        assert!(!looks_like_audio(&one));
    }

    #[test]
    fn extensions() {
        assert!(has_audio_extension("FLAC"));
        assert!(has_audio_extension("seg.wav"));
        assert!(!has_audio_extension("json"));
        assert!(!has_audio_extension("wav.json"));
    }
}
