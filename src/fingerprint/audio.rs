//! Fingerprinting audio files and in-memory audio: decoding (bounded memory)
//! feeds the streaming fingerprinter, with the two overlapped on two threads
//! when one file is fingerprinted on a plain thread.

use std::path::Path;

use super::{Fingerprint, Print, SAMPLE_RATE_HZ, Side, StreamingFingerprinter};
use crate::decode::{self, AudioInfo, DecodeLimits};
use crate::error::EngineError;

/// Fingerprints a file as it decodes (bounded memory, parallel blocks).
/// Fingerprints a file as it decodes (bounded memory, parallel blocks).
pub fn fingerprint_file(
    path: &Path,
    limits: &DecodeLimits,
    side: Side,
) -> Result<(Fingerprint, AudioInfo), EngineError> {
    fingerprint_file_observed(path, limits, side, &mut |_| {})
}

/// Passes the prints made since the last call to `observe`, if there are any.
struct PrintFeed<'o> {
    observe: &'o mut dyn FnMut(&[Print]),
    seen: usize,
}

impl PrintFeed<'_> {
    fn feed(&mut self, prints: &[Print]) {
        if let Some(new) = prints.get(self.seen..).filter(|new| !new.is_empty()) {
            (self.observe)(new);
            self.seen = prints.len();
        }
    }
}

/// [`fingerprint_file`] that hands each batch of prints to `observe` as soon
/// as it is made (every print once, in the order of the returned
/// fingerprint), while the rest of the file is still decoding.
pub fn fingerprint_file_observed(
    path: &Path,
    limits: &DecodeLimits,
    side: Side,
    observe: &mut dyn FnMut(&[Print]),
) -> Result<(Fingerprint, AudioInfo), EngineError> {
    let mut feed = PrintFeed { observe, seen: 0 };
    if rayon::current_thread_index().is_some() {
        // On a pool worker (scan, service): items already run in parallel.
        let mut fingerprinter = StreamingFingerprinter::new(side);
        let info = decode::decode_file_stream(path, limits, SAMPLE_RATE_HZ, |block| {
            fingerprinter.push(block);
            feed.feed(fingerprinter.prints());
        })?;
        let fingerprint = fingerprinter.finish();
        feed.feed(&fingerprint.prints);
        return Ok((fingerprint, info));
    }
    // One file on a plain thread (the command line): decode on a second thread
    // while this one fingerprints what has arrived, so the two overlap on two
    // cores instead of taking turns. The queue bounds what is buffered.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<f32>>(PIPELINE_QUEUE_BLOCKS);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            // Decoded packets are small (a few hundred samples at 8 kHz): they
            // are sent in chunks so the two threads do not wake each other for
            // every packet. A send fails only once the receiver is gone, and it
            // is not dropped before the decoder is joined.
            let mut chunk: Vec<f32> = Vec::with_capacity(PIPELINE_CHUNK_SAMPLES);
            let info = decode::decode_file_stream(path, limits, SAMPLE_RATE_HZ, |block| {
                chunk.extend_from_slice(block);
                if chunk.len() >= PIPELINE_CHUNK_SAMPLES {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(PIPELINE_CHUNK_SAMPLES));
                    let _ = sender.send(full);
                }
            });
            if !chunk.is_empty() {
                let _ = sender.send(chunk);
            }
            info
        });
        let mut fingerprinter = StreamingFingerprinter::pipelined(side);
        for block in &receiver {
            fingerprinter.extend(&block);
            // Whatever queued up while the last blocks were fingerprinted is
            // taken at once, so a backlog is worked off in parallel.
            while let Ok(more) = receiver.try_recv() {
                fingerprinter.extend(&more);
            }
            fingerprinter.process_ready();
            feed.feed(fingerprinter.prints());
        }
        let info = decoder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        let fingerprint = fingerprinter.finish();
        feed.feed(&fingerprint.prints);
        Ok((fingerprint, info))
    })
}

/// Chunks queued between the decoding thread and the fingerprinter.
const PIPELINE_QUEUE_BLOCKS: usize = 16;
/// Samples per chunk sent from the decoding thread (2 s at 8 kHz).
const PIPELINE_CHUNK_SAMPLES: usize = 2 * SAMPLE_RATE_HZ as usize;

/// Fingerprints in-memory encoded audio (e.g. an upload).
pub fn fingerprint_bytes(
    bytes: Vec<u8>,
    input: &str,
    extension_hint: Option<&str>,
    limits: &DecodeLimits,
    side: Side,
) -> Result<(Fingerprint, AudioInfo), EngineError> {
    let mut fingerprinter = StreamingFingerprinter::new(side);
    let info = decode::decode_bytes(bytes, input, extension_hint, limits, SAMPLE_RATE_HZ, |b| {
        fingerprinter.push(b)
    })?;
    Ok((fingerprinter.finish(), info))
}
