//! The resize protocol.
//!
//! - **Grow**: reserve and set the new length ([`disk::set_length`]), map a
//!   new generation, `fdatasync` so the length is durable. If anything
//!   before the sync fails, the file is cut back to its old length and the
//!   old generation stays current: the mapping keeps working. Never waits
//!   for leases: they keep their own generation.
//! - **Shrink**: the actor runs it only once no lease of any generation of
//!   any open overlaps the cut tail (the lease table queues the shrink until
//!   then). Map the shorter generation first, then `ftruncate`, then
//!   `fdatasync`.
//! - **The file's other opens** follow: read-only and read-write ones get a
//!   generation of the new length; copy-on-write ones keep their private
//!   pages, and a shrink cuts them in place (their length becomes the new
//!   one, and the cut pages are replaced with private zero pages, so that
//!   nothing can fault on the cut file). A grow leaves copy-on-write opens
//!   at their length.
//! - **A failed sync** poisons the mapping (it was also writing back dirty
//!   pages). A grow is then undone (old length, old generation); a shrink
//!   cannot be (the tail is gone), so its shorter generation is published:
//!   the old one reaches past the end of the file. Old generations that are
//!   still alive keep their longer mapping, but nothing may touch their cut
//!   tail: no lease covers it and the actor only uses current generations.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Actor;
use crate::blocking;
use crate::disk;
use crate::error::{Error, Result};
use crate::lease_table::{Access, Cleared, Footprint};
use crate::region::ByteRange;
use crate::request::ResizeKind;
use crate::sys::generation::Keep;
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
    /// New generations of the file's other opens, by index.
    others: Vec<(usize, Generation)>,
    /// Other opens whose generation was cut in place (their length is now
    /// the new one).
    cut: Vec<usize>,
}

/// One of the file's other opens, as the blocking half sees it.
struct Other {
    index: usize,
    file: Arc<File>,
    path: PathBuf,
    mode: Mode,
    keep: Option<Keep>,
    current: Arc<Generation>,
}

/// What a resize changes.
struct Change {
    old_len: u64,
    new_len: u64,
    /// Empty the file first (an open's `truncate`).
    reset: bool,
    preallocate: bool,
}

impl Actor {
    /// Resizes the file to `new_len` through open `index`: the blocking half
    /// on the blocking pool, then the new generations published to the
    /// direct path. The caller has drained the direct path with a hold in
    /// place.
    pub(super) async fn resize(
        &mut self,
        index: usize,
        new_len: u64,
        kind: ResizeKind,
    ) -> Result<()> {
        let open = &self.opens[index];
        let old_len = open.current.len();
        let reset = kind == ResizeKind::Reset;
        match kind {
            ResizeKind::Exact if new_len == old_len => return Ok(()),
            ResizeKind::AtLeast if new_len <= old_len => return Ok(()),
            _ => {}
        }
        self.check_length(index, new_len)?;
        if (new_len < old_len || reset) && open.shared_lock {
            // Cooperating processes that share the lock may map any byte.
            return Err(Error::Locked {
                path: open.shared.path.clone(),
            });
        }
        let file = Arc::clone(&open.file);
        let path = open.shared.path.clone();
        let keep = Some(Arc::clone(&open.keep));
        let change = Change {
            old_len,
            new_len,
            reset,
            preallocate: open.preallocate,
        };
        let others: Vec<Other> = (self.opens.iter().enumerate())
            .filter(|(i, _)| *i != index)
            .map(|(i, o)| Other {
                index: i,
                file: Arc::clone(&o.file),
                path: o.shared.path.clone(),
                mode: o.mode(),
                keep: Some(Arc::clone(&o.keep)),
                current: Arc::clone(&o.current),
            })
            .collect();
        // Admitted only with the tail clear of leases (its footprint).
        let cut = if reset { 0 } else { new_len };
        let cleared = self
            .table
            .clear(&Footprint::new(ByteRange::tail(cut), Access::Write));
        tracing::debug!(old_len, new_len, opens = others.len() + 1, "resize");
        let outcome = blocking::run("resize", move || {
            Ok(resize_blocking(&file, &path, change, keep, others, cleared))
        })
        .await?;
        // Still the old generations: the lengths the change starts from.
        let before = self.lengths();
        if let Some(generation) = outcome.generation {
            // The file has its new length: map it, even if the sync failed.
            self.replace_generation(index, Arc::new(generation)).await;
            self.opens[index]
                .shared
                .len
                .store(new_len, Ordering::Release);
        }
        for (other, generation) in outcome.others {
            self.replace_generation(other, Arc::new(generation)).await;
            self.opens[other]
                .shared
                .len
                .store(new_len, Ordering::Release);
        }
        for other in outcome.cut {
            let len = self.opens[other].current.len();
            self.opens[other].shared.len.store(len, Ordering::Release);
        }
        self.resized(&before);
        if let Err(err) = &outcome.result {
            if outcome.sync_failed {
                // That sync also wrote back dirty pages; the kernel reports
                // such a failure once, so a later flush could succeed
                // although data was lost.
                tracing::error!(%err, "sync failed during a resize; the mapping is poisoned");
                for open in self.opens.iter().filter(|o| o.mode() == Mode::ReadWrite) {
                    open.shared.poison(err);
                }
            } else {
                tracing::warn!(%err, "resize refused");
            }
        }
        outcome.result
    }
}

/// Changes the file's length and maps it anew, for this open and the others.
fn resize_blocking(
    file: &Arc<File>,
    path: &Path,
    change: Change,
    keep: Option<Keep>,
    others: Vec<Other>,
    cleared: Option<Cleared>,
) -> Outcome {
    let Change {
        old_len,
        new_len,
        reset,
        preallocate,
    } = change;
    let changed = if reset {
        disk::reset_length(file, path, old_len, new_len, preallocate).and_then(|()| {
            Generation::map(file, new_len, Mode::ReadWrite, keep)
                .map_err(|e| Error::io("mmap", path, e))
        })
    } else if new_len > old_len {
        grow(file, path, old_len, new_len, preallocate, keep)
    } else {
        shrink(file, path, new_len, keep)
    };
    let generation = match changed {
        Ok(generation) => {
            // The new bytes are holes: reading ahead would only zero pages
            // in a fault (`disk::fresh_bytes`).
            let fresh = if reset { 0 } else { old_len };
            disk::fresh_bytes(&generation, fresh, new_len);
            generation
        }
        Err(err) => {
            return Outcome {
                generation: None,
                result: Err(err),
                sync_failed: false,
                others: Vec::new(),
                cut: Vec::new(),
            }
        }
    };
    let (generation, result, sync_failed) = match disk::sync_data(file, path) {
        Ok(()) => (Some(generation), Ok(()), false),
        Err(err) if new_len > old_len && !reset => {
            // A grow can still be undone: keep the old length and generation.
            drop(generation);
            disk::restore_length(file, path, old_len, &err);
            (None, Err(err), true)
        }
        Err(err) => (Some(generation), Err(err), true),
    };
    let (others, cut) = match generation {
        Some(_) => follow(others, old_len, new_len, cleared.as_ref()),
        None => (Vec::new(), Vec::new()),
    };
    Outcome {
        generation,
        result,
        sync_failed,
        others,
        cut,
    }
}

/// Brings the file's other opens to its new length: new generations for
/// shared mappings, a cut in place for copy-on-write ones (which a remap
/// would rob of their private pages) and for any that could not be
/// remapped. Returns the new generations and the opens that were cut.
fn follow(
    others: Vec<Other>,
    old_len: u64,
    new_len: u64,
    cleared: Option<&Cleared>,
) -> (Vec<(usize, Generation)>, Vec<usize>) {
    let mut remapped = Vec::new();
    let mut cut = Vec::new();
    for other in others {
        let cuts = other.current.len() > new_len;
        if other.mode == Mode::CopyOnWrite {
            if cuts && cut_in_place(&other, new_len, cleared) {
                cut.push(other.index);
            }
            continue;
        }
        match Generation::map(&other.file, new_len, other.mode, other.keep.clone()) {
            Ok(generation) => remapped.push((other.index, generation)),
            // A longer generation left as it is would fault past the new
            // end: cut it in place instead.
            Err(err) if cuts => {
                tracing::warn!(%err, path = %other.path.display(), "could not remap another open; cutting it");
                if cut_in_place(&other, new_len, cleared) {
                    cut.push(other.index);
                }
            }
            Err(err) => {
                tracing::warn!(%err, old_len, new_len, path = %other.path.display(), "another open keeps its shorter mapping");
            }
        }
    }
    (remapped, cut)
}

fn cut_in_place(other: &Other, new_len: u64, cleared: Option<&Cleared>) -> bool {
    let result = match cleared {
        Some(cleared) => other.current.cut(cleared, new_len),
        None => Err(std::io::Error::other(
            "the cut tail was not clear of leases",
        )),
    };
    match result {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(%err, path = %other.path.display(), "could not cut another open's mapping");
            false
        }
    }
}

fn grow(
    file: &Arc<File>,
    path: &Path,
    old_len: u64,
    new_len: u64,
    preallocate: bool,
    keep: Option<Keep>,
) -> Result<Generation> {
    disk::set_length(file, path, old_len, new_len, preallocate)?;
    Generation::map(file, new_len, Mode::ReadWrite, keep)
        .map_err(|e| Error::io("mmap", path, e))
        .inspect_err(|err| disk::restore_length(file, path, old_len, err))
}

fn shrink(file: &Arc<File>, path: &Path, new_len: u64, keep: Option<Keep>) -> Result<Generation> {
    let generation = Generation::map(file, new_len, Mode::ReadWrite, keep)
        .map_err(|e| Error::io("mmap", path, e))?;
    file.set_len(new_len)
        .map_err(|e| Error::io("ftruncate", path, e))?;
    Ok(generation)
}
