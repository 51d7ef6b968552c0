//! The process-wide registry of mapped files, keyed by device and inode.
//!
//! Every open of one file in this process is served by one actor and one
//! lease table, so that a shrink through one open waits for the leases
//! taken through another (two tables would let it cut a lease's pages: a
//! `SIGBUS`). Opens of one file are serialised by the slot's async mutex
//! from the moment they find the file's [`Slot`] until they are attached to
//! its actor (or have started one): two opens can never both believe they
//! are the only mapping.
//!
//! The map holds `Weak` slots; the actor and the opens in progress hold
//! them strongly, so an entry disappears with the last of them. An actor
//! about to stop takes the slot's lock, closes its door (nothing can attach
//! afterwards), and lets go.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::mpsc;

use super::Attach;
use crate::lease_table::Notice;
use crate::sys::file::FileLock;
use crate::sys::gate::Gate;
use crate::sys::generation::Keep;

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What a new open of a mapped file needs of the actor serving it.
#[derive(Debug)]
pub(crate) struct Door {
    /// Where the new open is handed to the actor.
    pub(crate) attach: mpsc::UnboundedSender<Attach>,
    /// The file's direct-access gate (one for every open of the file).
    pub(crate) gate: Arc<Gate>,
    /// The actor's notices (lease releases, abandoned requests).
    pub(crate) notices: mpsc::UnboundedSender<Notice>,
    /// The file's counts of what was written and flushed.
    pub(crate) tally: Arc<super::tally::Tally>,
}

impl Door {
    /// Whether the actor behind it still runs.
    pub(crate) fn is_open(&self) -> bool {
        !self.attach.is_closed()
    }
}

impl Slot {
    /// Whether an open or a lease of this process still has the file
    /// mapped. When nothing does, the file the slot was made for may be
    /// gone (closed and unlinked) and its inode number given to a new
    /// file: a new open must not join the actor behind the door then (that
    /// actor is about to stop, perhaps with its runtime).
    pub(crate) fn is_mapped(&self) -> bool {
        self.mapped.load(Ordering::Acquire) > 0
    }
}

/// One file's entry: the door to its actor, if one runs, and how many
/// opens of the file still have a generation mapped (leases included).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) door: tokio::sync::Mutex<Option<Door>>,
    mapped: AtomicUsize,
}

/// What every generation of one open keeps alive: the open's advisory lock
/// (released when the last generation is unmapped) and its count in the
/// slot's `mapped` (which is what "this process maps the file" means).
#[derive(Debug)]
struct OpenKeep {
    _lock: Option<FileLock>,
    slot: Arc<Slot>,
}

impl Drop for OpenKeep {
    fn drop(&mut self) {
        self.slot.mapped.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The keep of a new open of the file behind `slot`, holding `lock`.
pub(crate) fn keep(slot: &Arc<Slot>, lock: Option<FileLock>) -> Keep {
    slot.mapped.fetch_add(1, Ordering::AcqRel);
    Arc::new(OpenKeep {
        _lock: lock,
        slot: Arc::clone(slot),
    })
}

/// The registry of this process's mapped files.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    slots: Mutex<HashMap<FileId, Weak<Slot>>>,
}

/// This process's registry.
pub(crate) fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    /// The slot of `id`, made if there is none.
    pub(crate) fn slot(&self, id: FileId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(&id).and_then(Weak::upgrade) {
            return slot;
        }
        let slot = Arc::new(Slot::default());
        slots.insert(id, Arc::downgrade(&slot));
        slot
    }

    /// Lets go of a slot: the entry goes when nothing holds it any more.
    pub(crate) fn release(&self, id: FileId, slot: Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        drop(slot);
        if slots.get(&id).is_some_and(|weak| weak.strong_count() == 0) {
            slots.remove(&id);
        }
    }

    /// Whether this process maps the file: an open of it, or a lease
    /// taken through one, still has a generation mapped.
    pub(crate) fn is_mapped(&self, id: FileId) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .get(&id)
            .and_then(Weak::upgrade)
            .is_some_and(|slot| slot.mapped.load(Ordering::Acquire) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_entries_live_as_long_as_their_slots() {
        let registry = Registry::default();
        let id = FileId { dev: 1, ino: 2 };
        let a = registry.slot(id);
        let b = registry.slot(id);
        assert!(Arc::ptr_eq(&a, &b), "one slot per file");
        assert!(!registry.is_mapped(id), "nothing mapped yet");
        let k = keep(&a, None);
        assert!(registry.is_mapped(id));
        let k2 = Arc::clone(&k);
        drop(k);
        assert!(registry.is_mapped(id), "a generation still keeps it");
        drop(k2);
        assert!(!registry.is_mapped(id));
        registry.release(id, a);
        assert_eq!(registry.slots.lock().unwrap().len(), 1);
        registry.release(id, b);
        assert!(registry.slots.lock().unwrap().is_empty());
    }
}
