//! The resize protocol's blocking half (runs on the blocking pool).
//!
//! - **Grow**: reserve the new tail (`posix_fallocate`, unless the mapping is
//!   sparse), set the length, map a new generation, `fdatasync` so the length
//!   is durable. If anything before the sync fails, the file is cut back to
//!   its old length and the old generation stays current: the mapping keeps
//!   working.
//! - **Shrink**: the actor calls this only once no lease of any generation
//!   overlaps the cut tail (the lease table queues the shrink until then).
//!   Map the shorter generation first, then `ftruncate`, then `fdatasync`.
//! - **A failed sync** poisons the mapping (it was also writing back dirty
//!   pages). A grow is then undone (old length, old generation); a shrink
//!   cannot be (the tail is gone), so its shorter generation is published:
//!   the old one reaches past the end of the file.
//!   Old generations that are still alive keep their longer mapping, but
//!   nothing may touch their cut tail: no lease covers it and the actor only
//!   uses the current generation.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::Mapping;
use crate::Mode;

/// What a resize did.
pub(crate) struct Outcome {
    /// The new generation, if the file keeps its new length (a shrink whose
    /// sync failed keeps it: the old mapping would reach past the end).
    pub(crate) map: Option<Mapping>,
    pub(crate) result: Result<()>,
    /// The failure was the sync: data may be lost, poison the mapping.
    pub(crate) sync_failed: bool,
}

/// Changes the file from `old_len` to `new_len` bytes and maps it anew.
pub(crate) fn resize_blocking(
    file: &File,
    path: &Path,
    old_len: u64,
    new_len: u64,
    preallocate: bool,
) -> Outcome {
    let changed = if new_len > old_len {
        grow(file, path, old_len, new_len, preallocate)
    } else {
        shrink(file, path, new_len)
    };
    let map = match changed {
        Ok(map) => map,
        Err(err) => {
            return Outcome {
                map: None,
                result: Err(err),
                sync_failed: false,
            }
        }
    };
    match file.sync_data() {
        Ok(()) => Outcome {
            map: Some(map),
            result: Ok(()),
            sync_failed: false,
        },
        Err(e) if new_len > old_len => {
            // A grow can still be undone: keep the old length and generation.
            drop(map);
            if let Err(undo) = file.set_len(old_len) {
                tracing::error!(%undo, path = %path.display(), "could not restore the length after a failed grow");
            }
            Outcome {
                map: None,
                result: Err(Error::io("fdatasync", path, e)),
                sync_failed: true,
            }
        }
        Err(e) => Outcome {
            map: Some(map),
            result: Err(Error::io("fdatasync", path, e)),
            sync_failed: true,
        },
    }
}

fn grow(
    file: &File,
    path: &Path,
    old_len: u64,
    new_len: u64,
    preallocate: bool,
) -> Result<Mapping> {
    let attempt = || -> Result<Mapping> {
        if preallocate {
            crate::sys::fallocate(file, old_len, new_len - old_len)
                .map_err(|e| Error::io("fallocate", path, e))?;
        }
        file.set_len(new_len)
            .map_err(|e| Error::io("ftruncate", path, e))?;
        Mapping::map(file, new_len, Mode::ReadWrite).map_err(|e| Error::io("mmap", path, e))
    };
    attempt().inspect_err(|err| {
        // Leave the file as it was: a partial fallocate or a length without
        // a mapping must not survive a failed grow.
        if let Err(undo) = file.set_len(old_len) {
            tracing::error!(%err, %undo, path = %path.display(), "could not restore the length after a failed grow");
        }
    })
}

fn shrink(file: &File, path: &Path, new_len: u64) -> Result<Mapping> {
    let map =
        Mapping::map(file, new_len, Mode::ReadWrite).map_err(|e| Error::io("mmap", path, e))?;
    file.set_len(new_len)
        .map_err(|e| Error::io("ftruncate", path, e))?;
    Ok(map)
}
