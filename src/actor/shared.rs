//! [`Shared`]: the facts about one mapping that every handle reads without
//! a round trip, written only by its actor.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

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
    /// Length of the current generation; written by the actor once a
    /// resize is complete.
    pub(crate) len: AtomicU64,
    /// Set when the actor starts closing (and when it stops): calls fail
    /// fast with `Closed`.
    pub(crate) closed: AtomicBool,
    /// The kind of the first failed sync; once set, flushes fail.
    poisoned: OnceLock<io::ErrorKind>,
    /// The current generation, for small loads and updates served by the
    /// calling task while the actor has nothing that could conflict (the
    /// direct path, `sys/gate.rs`).
    pub(crate) current: GateCell<Generation>,
    /// Updates go through `pwrite` (`OpenOptions::write_through`), so never
    /// by the direct path.
    pub(crate) write_through: bool,
    /// The actor's notices: a handle whose caller stops waiting for a
    /// request says so, so that nothing it queued is left behind.
    pub(crate) notices: mpsc::UnboundedSender<Notice>,
    /// The mapping's subscriptions (`stream/feed.rs`).
    pub(crate) feed: Feed,
}

impl Shared {
    pub(crate) fn new(
        path: PathBuf,
        mode: Mode,
        generation: Arc<Generation>,
        write_through: bool,
        gate: Arc<Gate>,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> Shared {
        Shared {
            path,
            mode,
            write_through: write_through && mode == Mode::ReadWrite,
            len: AtomicU64::new(generation.len()),
            closed: AtomicBool::new(false),
            poisoned: OnceLock::new(),
            current: GateCell::new(gate, generation),
            notices,
            feed: Feed::default(),
        }
    }

    /// The gate of the direct path.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        self.current.gate()
    }

    /// Whether `close()` was called or the actor stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The error every flush gets once a sync has failed, if one has.
    pub(crate) fn poisoned(&self) -> Option<Error> {
        self.poisoned.get().map(|&kind| Error::Poisoned {
            path: self.path.clone(),
            kind,
        })
    }

    /// Whether a sync has failed.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.get().is_some()
    }

    /// Records a failed sync: every later flush fails until reopened.
    pub(crate) fn poison(&self, err: &Error) {
        let _ = self
            .poisoned
            .set(err.io_kind().unwrap_or(io::ErrorKind::Other));
    }
}
