//! The streaming pipeline:
//!
//! ```text
//! source thread ──bounded channel──▶ rayon workers ──▶ reorder buffer ──▶ sink (report, copies, summary)
//!   (inputs, in order)                (screen items)      (input order)     (caller's thread)
//! ```
//!
//! Memory is bounded whatever the corpus size: at most `window_items` items
//! (and about `window_bytes` of in-memory audio) are between the source and the
//! sink at any time; the source waits for the sink to catch up. Results are
//! handed to the sink in input order, which makes the report a checkpoint (its
//! rows are a prefix of the input). On resume, the first items are *replayed*
//! from the report instead of being screened again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, PoisonError};

use rayon::prelude::*;

use super::error::ScanError;
use super::input::{InputOptions, InputSpec, emit_input};
use super::item::{Event, Item};
use super::report::{ReportRow, RowReader};
use super::screen::{ScreenContext, screen};

/// Pipeline sizes.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    pub jobs: usize,
    pub window_items: u64,
    pub window_bytes: u64,
}

/// A finished unit of work, handed to the sink in input order.
pub enum Done {
    /// Screened now.
    Screened { item: Item, row: ReportRow },
    /// Finished by an earlier run: the row comes from the report.
    Replayed { item: Item, row: ReportRow },
    /// An input boundary.
    Boundary(Event),
    /// The scan cannot go on from this item (the sink stops there).
    Fatal(ScanError),
}

enum Work {
    Screen(Item),
    Replay(Item, ReportRow),
    Boundary(Event),
}

impl Work {
    fn memory_bytes(&self) -> u64 {
        match self {
            Work::Screen(item) | Work::Replay(item, _) => item.memory_bytes(),
            Work::Boundary(_) => 0,
        }
    }
}

/// Limits what is in flight between the source and the sink.
struct Window {
    state: Mutex<(u64, u64, bool)>,
    cv: Condvar,
    max_items: u64,
    max_bytes: u64,
}

impl Window {
    fn new(max_items: u64, max_bytes: u64) -> Self {
        Self {
            state: Mutex::new((0, 0, false)),
            cv: Condvar::new(),
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    /// Waits for room; false if the pipeline is shutting down.
    fn acquire(&self, bytes: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !s.2 && s.0 > 0 && (s.0 >= self.max_items || s.1 + bytes > self.max_bytes) {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.2 {
            return false;
        }
        s.0 += 1;
        s.1 += bytes;
        true
    }

    fn release(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0 = s.0.saturating_sub(1);
        s.1 = s.1.saturating_sub(bytes);
        self.cv.notify_all();
    }

    fn shut(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.2 = true;
        self.cv.notify_all();
    }
}

/// Reads the inputs, pairs the first items with the report rows to replay, and
/// feeds the workers.
struct Source<'a> {
    inputs: &'a [InputSpec],
    options: &'a InputOptions,
    replay: Option<RowReader>,
    replayed: u64,
    tx: SyncSender<(u64, u64, Work)>,
    window: &'a Window,
    stop: &'a AtomicBool,
    seq: u64,
}

impl Source<'_> {
    fn send(&mut self, work: Work) -> Result<(), ScanError> {
        let bytes = work.memory_bytes();
        if self.stop.load(Ordering::Relaxed) || !self.window.acquire(bytes) {
            return Err(ScanError::Fatal {
                reason: "scan stopped".into(),
            });
        }
        self.tx
            .send((self.seq, bytes, work))
            .map_err(|_| ScanError::Fatal {
                reason: "scan stopped".into(),
            })?;
        self.seq += 1;
        Ok(())
    }

    fn event(&mut self, event: Event) -> Result<(), ScanError> {
        let item = match event {
            Event::Item(item) => item,
            boundary => return self.send(Work::Boundary(boundary)),
        };
        let Some(replay) = self.replay.as_mut().filter(|r| r.remaining() > 0) else {
            return self.send(Work::Screen(item));
        };
        let row = replay.next_row()?.ok_or_else(|| ScanError::Resume {
            reason: "the report ended early".into(),
        })?;
        self.replayed += 1;
        if row.item != item.id || row.source != item.source || row.kind != item.kind {
            return Err(ScanError::Resume {
                reason: format!(
                    "the input changed since the interrupted run: report row {} is '{}' from {}, the input now has '{}' from {} there; start again without --resume",
                    self.replayed, row.item, row.source, item.id, item.source
                ),
            });
        }
        self.send(Work::Replay(item, row))
    }

    fn run(mut self) -> Result<(), ScanError> {
        let (inputs, options) = (self.inputs, self.options);
        for (index, spec) in inputs.iter().enumerate() {
            let mut emit = |event: Event| self.event(event);
            emit_input(index, spec, options, &mut emit)?;
        }
        match &self.replay {
            Some(r) if r.remaining() > 0 => Err(ScanError::Resume {
                reason: format!(
                    "the report has {} more rows than the inputs have items; start again without --resume",
                    r.remaining()
                ),
            }),
            _ => Ok(()),
        }
    }
}

fn process(work: Work, ctx: &ScreenContext<'_>) -> Done {
    match work {
        Work::Screen(mut item) => match screen(&mut item, ctx) {
            Ok(row) => Done::Screened { item, row },
            Err(e) => Done::Fatal(e),
        },
        Work::Replay(item, row) => Done::Replayed { item, row },
        Work::Boundary(event) => Done::Boundary(event),
    }
}

/// Runs the pipeline; `sink` receives every result in input order.
pub fn run(
    inputs: &[InputSpec],
    options: &InputOptions,
    replay: Option<RowReader>,
    ctx: &ScreenContext<'_>,
    config: PipelineConfig,
    sink: &mut dyn FnMut(Done) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.jobs.max(1))
        .thread_name(|i| format!("earmark-scan-{i}"))
        .build()
        .map_err(|e| ScanError::Usage {
            reason: format!("cannot start {} workers: {e}", config.jobs),
        })?;
    let window = Window::new(config.window_items, config.window_bytes);
    let stop = AtomicBool::new(false);
    let (work_tx, work_rx) = sync_channel::<(u64, u64, Work)>(config.jobs.max(1) * 2);
    let (done_tx, done_rx) = sync_channel::<(u64, u64, Done)>(config.window_items as usize);
    std::thread::scope(|scope| {
        let source = Source {
            inputs,
            options,
            replay,
            replayed: 0,
            tx: work_tx,
            window: &window,
            stop: &stop,
            seq: 0,
        };
        let source = scope.spawn(move || source.run());
        let workers = scope.spawn(|| {
            pool.install(|| {
                work_rx.into_iter().par_bridge().for_each_with(
                    done_tx,
                    |tx, (seq, bytes, work)| {
                        let _ = tx.send((seq, bytes, process(work, ctx)));
                    },
                );
            });
        });
        let written = drain(done_rx, &window, sink);
        if written.is_err() {
            stop.store(true, Ordering::Relaxed);
            window.shut();
        }
        let _ = workers.join();
        let sourced = source.join().unwrap_or_else(|_| {
            Err(ScanError::Fatal {
                reason: "the input reader panicked".into(),
            })
        });
        written?;
        sourced
    })
}

/// Puts results back in order and hands them to the sink.
fn drain(
    rx: Receiver<(u64, u64, Done)>,
    window: &Window,
    sink: &mut dyn FnMut(Done) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, (u64, Done)> = BTreeMap::new();
    for (seq, bytes, done) in rx {
        waiting.insert(seq, (bytes, done));
        while let Some((bytes, done)) = waiting.remove(&next) {
            sink(done)?;
            window.release(bytes);
            next += 1;
        }
    }
    Ok(())
}
