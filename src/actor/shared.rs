//! [`Shared`]: the facts about one mapping that every handle reads without
//! a round trip, written only by its actor.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use super::tally::Tally;
use super::write_method::{Method, WriteMethod};
use crate::disk::Probe;
use crate::error::Error;
use crate::lease_table::Notice;
use crate::stream::feed::Feed;
use crate::sys::gate::{Gate, GateCell};
use crate::sys::Generation;
use crate::Mode;

/// Facts every handle can read without a round trip to the actor. The
/// actor is their one writer (handles only read them), which is why this
/// type lives beside it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    pub(crate) mode: Mode,
    /// Whether writes are allowed: the mode allows them, and a
    /// copy-on-write open was not made read-only
    /// (`OpenOptions::cow_writable(false)`).
    pub(crate) writable: bool,
    /// The open's descriptor (`AsFd for MappedFile`); for an anonymous
    /// mapping, its memory file.
    pub(crate) file: Arc<File>,
    /// An anonymous mapping: no file on any file system behind it.
    pub(crate) anonymous: bool,
    /// Length of the current generation; written by the actor once a
    /// resize is complete.
    pub(crate) len: AtomicU64,
    /// Set when the actor starts closing (and when it stops): calls fail
    /// fast with `Closed`.
    pub(crate) closed: AtomicBool,
    /// The kind of the first failed sync; once set, flushes fail.
    poisoned: OnceLock<io::ErrorKind>,
    /// This open's serial number among the file's opens: a sync that
    /// fails poisons the opens made before it (`CallerSync::poison_all`).
    serial: u64,
    /// The current generation, for small loads and updates served by the
    /// calling task while the actor has nothing that could conflict (the
    /// direct path, `sys/gate.rs`).
    pub(crate) current: GateCell<Generation>,
    /// How small updates reach the page cache (`actor/write_method.rs`).
    pub(crate) method: Method,

    /// What was written to the file and flushed (every open of the file
    /// shares it).
    pub(crate) tally: Arc<Tally>,
    /// The actor's notices: a handle whose caller stops waiting for a
    /// request says so, so that nothing it queued is left behind.
    pub(crate) notices: mpsc::UnboundedSender<Notice>,
    /// The mapping's subscriptions (`stream/feed.rs`).
    pub(crate) feed: Feed,
}

impl Shared {
    pub(crate) fn new(
        probe: &Probe,
        mode: Mode,
        generation: Arc<Generation>,
        write_through: bool,
        gate: Arc<Gate>,
        tally: Arc<Tally>,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> Shared {
        // Copy-on-write opens must store (a `pwrite` would reach the file);
        // read-only ones never update.
        let method = match (mode, write_through) {
            (Mode::ReadWrite, true) => Method::new(WriteMethod::Pwrite, true),
            (Mode::ReadWrite, false) => Method::new(WriteMethod::Store, false),
            _ => Method::new(WriteMethod::Store, true),
        };
        Shared {
            path: probe.path.clone(),
            mode,
            method,
            writable: mode.is_writable() && (mode != Mode::CopyOnWrite || probe.cow_writable),
            file: Arc::clone(&probe.file),
            anonymous: probe.anonymous.is_some(),
            len: AtomicU64::new(generation.len()),
            closed: AtomicBool::new(false),
            poisoned: OnceLock::new(),
            serial: tally.sync.new_open(),
            current: GateCell::new(gate, generation),
            tally,
            notices,
            feed: Feed::default(),
        }
    }

    /// The gate of the direct path.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        self.current.gate()
    }

    /// Whether `close()` was called or the actor stopped.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The error every flush gets once a sync has failed, if one has.
    pub(crate) fn poisoned(&self) -> Option<Error> {
        self.poisoned_kind().map(|kind| Error::Poisoned {
            path: self.path.clone(),
            kind,
        })
    }

    fn poisoned_kind(&self) -> Option<io::ErrorKind> {
        if let Some(&kind) = self.poisoned.get() {
            return Some(kind);
        }
        // A caller-led sync of the file failed after this open was made.
        if self.mode == Mode::ReadWrite {
            return self.tally.sync.poisoned(self.serial);
        }
        None
    }

    /// Whether a sync has failed.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned_kind().is_some()
    }

    /// Records a failed sync: every later flush fails until reopened.
    pub(crate) fn poison(&self, err: &Error) {
        let _ = self
            .poisoned
            .set(err.io_kind().unwrap_or(io::ErrorKind::Other));
    }
}
