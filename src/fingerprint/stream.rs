//! Incremental fingerprinting of a stream of blocks.

use rayon::prelude::*;

use super::{BLOCK_FRAMES, Fingerprint, Side, context_frames, fingerprint_block};
use crate::spectrogram::{self, FFT_SIZE, HOP_SAMPLES};

/// Incremental fingerprinting of a stream of mono blocks: memory stays bounded by
/// a few blocks whatever the input length; full blocks are fingerprinted in
/// parallel batches.
pub struct StreamingFingerprinter {
    side: Side,
    /// Samples not yet fully consumed; `buffer[0]` is whole-signal sample `buffer_start`.
    buffer: Vec<f32>,
    buffer_start: usize,
    /// Blocks fingerprinted together, in parallel, once enough audio has come.
    batch_blocks: usize,
    /// Anchor frames per block.
    block_frames: usize,
    /// Next anchor frame to fingerprint.
    next_frame: usize,
    total_samples: usize,
    done: Fingerprint,
}

/// Blocks fingerprinted together in one parallel batch.
const STREAM_BATCH_BLOCKS: usize = 4;
/// Smallest piece the end of a stream is cut into (≈ 4 s): each piece also
/// analyses its context frames on both sides, which shorter pieces would
/// mostly spend their time on.
const MIN_TAIL_BLOCK_FRAMES: usize = 500;
/// Block length of [`StreamingFingerprinter::pipelined`] (≈ 5 s). Each block
/// also analyses ≈ 1.6 s of context, a third more work, which the second core
/// absorbs while the first decodes (fingerprinting runs at about twice the
/// speed of Vorbis decoding). What is left when decoding ends is at most one
/// block: 20 s blocks left a whole block to do after decoding, 10 s ones
/// still ≈ 2 ms of a one-minute file's ≈ 20 ms.
pub const PIPELINE_BLOCK_FRAMES: usize = 625;

impl StreamingFingerprinter {
    pub fn new(side: Side) -> Self {
        Self::with_batch_blocks(side, STREAM_BATCH_BLOCKS)
    }

    /// Fingerprints every `batch_blocks` blocks as they become ready (smaller
    /// batches start sooner).
    pub fn with_batch_blocks(side: Side, batch_blocks: usize) -> Self {
        Self::with_blocks(side, batch_blocks, BLOCK_FRAMES)
    }

    /// For a stream decoded on another thread: each [`PIPELINE_BLOCK_FRAMES`]
    /// block is fingerprinted as soon as it has arrived, so fingerprinting
    /// trails decoding by one short block and little is left when decoding ends.
    pub fn pipelined(side: Side) -> Self {
        Self::with_blocks(side, 1, PIPELINE_BLOCK_FRAMES)
    }

    fn with_blocks(side: Side, batch_blocks: usize, block_frames: usize) -> Self {
        Self {
            side,
            buffer: Vec::new(),
            buffer_start: 0,
            batch_blocks: batch_blocks.max(1),
            block_frames: block_frames.max(1),
            next_frame: 0,
            total_samples: 0,
            done: Fingerprint::default(),
        }
    }

    /// Appends samples; fingerprints whatever whole blocks are ready.
    pub fn push(&mut self, samples: &[f32]) {
        self.extend(samples);
        self.process_ready();
    }

    /// Appends samples without fingerprinting them yet (see
    /// [`StreamingFingerprinter::process_ready`]).
    pub fn extend(&mut self, samples: &[f32]) {
        self.buffer.extend_from_slice(samples);
        self.total_samples += samples.len();
    }

    /// Fingerprints every whole batch of blocks that is ready, all its blocks
    /// in parallel: a pipelined fingerprinter that fell behind its decoder
    /// catches up on every core, not one block at a time.
    pub fn process_ready(&mut self) {
        let (_, after) = context_frames(self.side);
        let batch_frames = self.block_frames * self.batch_blocks;
        let complete = self
            .buffered_frames_end()
            .saturating_sub(self.next_frame + after + 1);
        let batches = complete / batch_frames;
        if batches > 0 {
            self.process_until(self.next_frame + batches * batch_frames);
        }
    }

    fn buffered_frames_end(&self) -> usize {
        spectrogram::frame_count(self.total_samples)
    }

    fn process_until(&mut self, end_frame: usize) {
        self.process_in_blocks(end_frame, self.block_frames);
    }

    /// Fingerprints frames up to `end_frame` in blocks of `block_frames`, in parallel.
    fn process_in_blocks(&mut self, end_frame: usize, block_frames: usize) {
        let block_frames = block_frames.max(1);
        let starts: Vec<usize> = (self.next_frame..end_frame).step_by(block_frames).collect();
        let base = self.buffer_start;
        let total_frames = self.buffered_frames_end();
        let buffer = &self.buffer;
        let side = self.side;
        let block = |&start: &usize| {
            let end = (start + block_frames).min(end_frame).min(total_frames);
            block_prints_buffered(buffer, base, start, end, side)
        };
        // A single block runs on this thread. Handing it to the pool would
        // wake every idle worker to look for more: on a pipelined decode those
        // spinning workers took half a core from the decoder and the
        // fingerprinter (60 s on two cores: 16 ms of fingerprinting instead
        // of 8).
        let parts: Vec<Fingerprint> = if starts.len() == 1 {
            starts.iter().map(block).collect()
        } else {
            starts.par_iter().map(block).collect()
        };
        for part in parts {
            self.done.append_block(part);
        }
        self.next_frame = end_frame;
        // Drop samples no future block needs.
        let (before, _) = context_frames(self.side);
        let keep_from = self.next_frame.saturating_sub(before) * HOP_SAMPLES;
        if keep_from > self.buffer_start {
            let drop = keep_from - self.buffer_start;
            self.buffer.drain(..drop.min(self.buffer.len()));
            self.buffer_start = keep_from;
        }
    }

    /// The prints made so far, in the order [`StreamingFingerprinter::finish`]
    /// returns them: a consumer may look them up while the stream goes on.
    pub fn prints(&self) -> &[super::Print] {
        &self.done.prints
    }

    /// Fingerprints the rest and returns the whole fingerprint.
    ///
    /// The rest is at most a batch of blocks. Called from a plain thread, with
    /// nothing else left to overlap with, it is cut into one piece per thread (never smaller than
    /// [`MIN_TAIL_BLOCK_FRAMES`]): a short input's last block would otherwise
    /// run on one core while the other waits.
    pub fn finish(mut self) -> Fingerprint {
        let frames = self.buffered_frames_end();
        if frames > self.next_frame {
            let rest = frames - self.next_frame;
            // On a pool worker (scan, service) other items keep the cores busy.
            let pieces = if rayon::current_thread_index().is_some() {
                1
            } else {
                rayon::current_num_threads().max(1)
            };
            let block_frames = rest.div_ceil(pieces).clamp(
                MIN_TAIL_BLOCK_FRAMES.min(self.block_frames),
                self.block_frames,
            );
            self.process_in_blocks(frames, block_frames);
        }
        self.done.frames = frames;
        self.done
    }
}

/// Like [`block_prints`](super::block_prints) for a buffer holding whole-signal samples from `base`.
fn block_prints_buffered(
    buffer: &[f32],
    base: usize,
    start: usize,
    end: usize,
    side: Side,
) -> Fingerprint {
    let (before, after) = context_frames(side);
    let first = start.saturating_sub(before);
    let sample_start = first * HOP_SAMPLES;
    let sample_end = (end + after) * HOP_SAMPLES + FFT_SIZE;
    let lo = sample_start.saturating_sub(base).min(buffer.len());
    let hi = sample_end.saturating_sub(base).min(buffer.len());
    fingerprint_block(&buffer[lo..hi], first, start, end, side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::fingerprint_samples;
    use crate::fingerprint::tests::melody;

    #[test]
    fn streaming_matches_batch() {
        let samples = melody(130.0, 3);
        let batch = fingerprint_samples(&samples, Side::Reference);
        let mut stream = StreamingFingerprinter::new(Side::Reference);
        for chunk in samples.chunks(10_007) {
            stream.push(chunk);
        }
        assert_same_fingerprint(&batch, stream.finish());
    }

    /// The streamed fingerprint is the batch one (prints in any order).
    fn assert_same_fingerprint(batch: &Fingerprint, streamed: Fingerprint) {
        assert_eq!(streamed.frames, batch.frames);
        assert_eq!(streamed.peaks, batch.peaks);
        let (mut a, mut b) = (batch.prints.clone(), streamed.prints);
        a.sort();
        b.sort();
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn pipelined_stream_with_split_tail_matches_batch() {
        // One block at a time, then a tail shorter than a block that `finish`
        // cuts into pieces: the prints must not depend on where the cuts fall.
        for seconds in [7.0, 33.0] {
            let samples = melody(seconds, 5);
            let batch = fingerprint_samples(&samples, Side::Query);
            let mut stream = StreamingFingerprinter::pipelined(Side::Query);
            for chunk in samples.chunks(4_001) {
                stream.push(chunk);
            }
            assert_same_fingerprint(&batch, stream.finish());
        }
    }

    #[test]
    fn a_backlog_is_fingerprinted_in_parallel_blocks_like_the_batch() {
        // A fingerprinter that fell behind gets many blocks at once (as the
        // pipelined decoder's queue hands them over): they are processed
        // together, and the prints are those of the whole signal.
        let samples = melody(47.0, 7);
        let batch = fingerprint_samples(&samples, Side::Query);
        let mut stream = StreamingFingerprinter::pipelined(Side::Query);
        let (backlog, rest) = samples.split_at(samples.len() * 3 / 4);
        for chunk in backlog.chunks(16_000) {
            stream.extend(chunk);
        }
        stream.process_ready();
        assert!(
            stream.next_frame >= 3 * PIPELINE_BLOCK_FRAMES,
            "the backlog's whole blocks are done ({} frames)",
            stream.next_frame
        );
        stream.push(rest);
        assert_same_fingerprint(&batch, stream.finish());
    }
}
