//! The resize protocol.
//!
//! - **Grow**: reserve and set the new length ([`disk::set_length`]), map a
//!   new generation, `fdatasync` so the length is durable. If anything
//!   before the sync fails, the file is cut back to its old length and the
//!   old generation stays current: the mapping keeps working. Never waits
//!   for leases: they keep their own generation.
//! - **Shrink**: the actor runs it only once no lease of any generation
//!   overlaps the cut tail (the lease table queues the shrink until then).
//!   Map the shorter generation first, then `ftruncate`, then `fdatasync`.
//! - **A failed sync** poisons the mapping (it was also writing back dirty
//!   pages). A grow is then undone (old length, old generation); a shrink
//!   cannot be (the tail is gone), so its shorter generation is published:
//!   the old one reaches past the end of the file. Old generations that are
//!   still alive keep their longer mapping, but nothing may touch their cut
//!   tail: no lease covers it and the actor only uses the current
//!   generation.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::MappingActor;
use crate::blocking;
use crate::disk;
use crate::error::{Error, Result};
use crate::sys::file::FileLock;
use crate::sys::Generation;
use crate::Mode;

/// What the blocking half of a resize did.
struct Outcome {
    /// The new generation, if the file keeps its new length (a shrink whose
    /// sync failed keeps it: the old mapping would reach past the end).
    generation: Option<Generation>,
    result: Result<()>,
    /// The failure was the sync: data may be lost, poison the mapping.
    sync_failed: bool,
}

impl MappingActor {
    /// Resizes to `new_len`: the blocking half on the blocking pool, then
    /// the new generation published to the direct path. The caller has
    /// drained the direct path with a hold in place.
    pub(super) async fn resize(&mut self, new_len: u64) -> Result<()> {
        let old_len = self.current.len();
        if new_len == old_len {
            return Ok(());
        }
        let file = Arc::clone(&self.file);
        let path = self.shared.path.clone();
        let preallocate = self.preallocate;
        let lock = self.lock.clone();
        tracing::debug!(old_len, new_len, "resize");
        let outcome = blocking::run("resize", move || {
            Ok(resize_blocking(
                &file,
                &path,
                old_len,
                new_len,
                preallocate,
                lock,
            ))
        })
        .await?;
        if let Some(generation) = outcome.generation {
            // The file has its new length: map it, even if the sync failed.
            self.replace_generation(Arc::new(generation)).await;
            self.shared.len.store(new_len, Ordering::Release);
        }
        if let Err(err) = &outcome.result {
            if outcome.sync_failed {
                // That sync also wrote back dirty pages; the kernel reports
                // such a failure once, so a later flush could succeed
                // although data was lost.
                tracing::error!(%err, "sync failed during a resize; the mapping is poisoned");
                self.shared.poison(err);
            } else {
                tracing::warn!(%err, "resize refused");
            }
        }
        outcome.result
    }
}

/// Changes the file from `old_len` to `new_len` bytes and maps it anew.
fn resize_blocking(
    file: &File,
    path: &Path,
    old_len: u64,
    new_len: u64,
    preallocate: bool,
    lock: Option<Arc<FileLock>>,
) -> Outcome {
    let changed = if new_len > old_len {
        grow(file, path, old_len, new_len, preallocate, lock)
    } else {
        shrink(file, path, new_len, lock)
    };
    let generation = match changed {
        Ok(generation) => generation,
        Err(err) => {
            return Outcome {
                generation: None,
                result: Err(err),
                sync_failed: false,
            }
        }
    };
    match disk::sync_data(file, path) {
        Ok(()) => Outcome {
            generation: Some(generation),
            result: Ok(()),
            sync_failed: false,
        },
        Err(err) if new_len > old_len => {
            // A grow can still be undone: keep the old length and generation.
            drop(generation);
            disk::restore_length(file, path, old_len, &err);
            Outcome {
                generation: None,
                result: Err(err),
                sync_failed: true,
            }
        }
        Err(err) => Outcome {
            generation: Some(generation),
            result: Err(err),
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
    lock: Option<Arc<FileLock>>,
) -> Result<Generation> {
    disk::set_length(file, path, old_len, new_len, preallocate)?;
    Generation::map(file, new_len, Mode::ReadWrite, lock)
        .map_err(|e| Error::io("mmap", path, e))
        .inspect_err(|err| disk::restore_length(file, path, old_len, err))
}

fn shrink(
    file: &File,
    path: &Path,
    new_len: u64,
    lock: Option<Arc<FileLock>>,
) -> Result<Generation> {
    let generation = Generation::map(file, new_len, Mode::ReadWrite, lock)
        .map_err(|e| Error::io("mmap", path, e))?;
    file.set_len(new_len)
        .map_err(|e| Error::io("ftruncate", path, e))?;
    Ok(generation)
}
