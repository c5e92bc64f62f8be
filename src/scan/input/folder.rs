//! Folder inputs: a sorted, recursive walk that follows symlinks.
//!
//! Every regular file is looked at: it is an item when its first bytes look
//! like audio or its extension is an audio extension. Entries that cannot be
//! visited — unreadable directories or files, broken links, symlink loops — are
//! reported as `error` items and the walk goes on.

use std::fs::File;
use std::path::Path;

use walkdir::WalkDir;

use super::Emit;
use crate::scan::compress::read_up_to;
use crate::scan::error::ScanError;
use crate::scan::item::{Carry, Event, InputLayout, Item, ItemKind, Payload};
use crate::scan::sniff;

/// Emits the audio files under `root`.
pub fn emit_folder(input: usize, root: &Path, emit: &mut Emit<'_>) -> Result<(), ScanError> {
    emit(Event::InputStart {
        input,
        layout: InputLayout::Folder,
    })?;
    let source = root.display().to_string();
    let walk = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter();
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                let path = err.path().unwrap_or(root).to_path_buf();
                let reason = match err.loop_ancestor() {
                    Some(ancestor) => format!(
                        "symlink loop: leads back to {} (not followed)",
                        ancestor.display()
                    ),
                    None => format!("cannot visit: {}", io_reason(&err)),
                };
                emit(Event::Item(Item {
                    input,
                    id: path.display().to_string(),
                    source: source.clone(),
                    kind: ItemKind::WalkEntry,
                    position: None,
                    payload: Payload::Failed(reason),
                    carry: Carry::None,
                }))?;
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let payload = match is_audio_file(path) {
            Ok(false) => continue,
            Ok(true) => Payload::File(path.to_path_buf()),
            Err(reason) => Payload::Failed(reason),
        };
        let relative = path.strip_prefix(root).unwrap_or(path).to_path_buf();
        emit(Event::Item(Item {
            input,
            id: path.display().to_string(),
            source: source.clone(),
            kind: ItemKind::File,
            position: None,
            payload,
            carry: Carry::FolderFile {
                relative,
                absolute: absolute(path),
            },
        }))?;
    }
    emit(Event::InputEnd {
        input,
        complete: true,
    })
}

/// Emits a single audio file given directly.
pub fn emit_single(input: usize, path: &Path, emit: &mut Emit<'_>) -> Result<(), ScanError> {
    emit(Event::InputStart {
        input,
        layout: InputLayout::SingleFile,
    })?;
    let relative = path
        .file_name()
        .map_or_else(|| path.to_path_buf(), Into::into);
    emit(Event::Item(Item {
        input,
        id: path.display().to_string(),
        source: path.display().to_string(),
        kind: ItemKind::File,
        position: None,
        payload: Payload::File(path.to_path_buf()),
        carry: Carry::FolderFile {
            relative,
            absolute: absolute(path),
        },
    }))?;
    emit(Event::InputEnd {
        input,
        complete: true,
    })
}

/// Audio by content or by extension; `Err` if the file cannot be read (it is
/// then reported, since it might be audio).
pub fn is_audio_file(path: &Path) -> Result<bool, String> {
    let by_extension = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(sniff::has_audio_extension);
    let mut head = [0u8; sniff::SNIFF_BYTES];
    let n = File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(by_extension || sniff::looks_like_audio(&head[..n]))
}

fn io_reason(err: &walkdir::Error) -> String {
    err.io_error()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

/// An absolute form of `path` (symlinks kept).
pub fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
