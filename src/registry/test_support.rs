//! Shared helpers for registry and policy tests.

use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use time::OffsetDateTime;
use time::macros::datetime;

use super::{Isrc, NewWork, ReferenceAudio, Registry, WorkId};

/// The instant test registries start at.
pub(crate) const T0: OffsetDateTime = datetime!(2026-02-01 12:00 UTC);

/// A clock tests can move.
#[derive(Clone)]
pub(crate) struct TestClock(Arc<Mutex<OffsetDateTime>>);

impl TestClock {
    pub(crate) fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap() = t;
    }
}

/// A fresh registry in a temporary directory with its clock at [`T0`].
pub(crate) fn open_temp() -> (TempDir, Registry) {
    let (dir, reg, _) = open_temp_with_clock();
    (dir, reg)
}

pub(crate) fn open_temp_with_clock() -> (TempDir, Registry, TestClock) {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock(Arc::new(Mutex::new(T0)));
    let c = clock.clone();
    let reg =
        Registry::open_with_clock(dir.path(), Box::new(move || *c.0.lock().unwrap())).unwrap();
    (dir, reg, clock)
}

/// A valid work with the given id.
pub(crate) fn sample_work(id: &str) -> NewWork {
    NewWork {
        id: WorkId::parse(id).unwrap(),
        title: format!("Title of {id}"),
        artists: vec!["Artist One".into(), "Artist Two".into()],
        isrc: Some(Isrc::parse("US-S1Z-99-00001").unwrap()),
        iswc: None,
        holder: "Example Music Ltd".into(),
        holder_isni: None,
        reference: ReferenceAudio {
            duration_s: 180.0,
            fingerprint_config: "fp-v1".into(),
            audio_sha256: "ab".repeat(32),
            source_file: format!("{id}.flac"),
        },
    }
}
