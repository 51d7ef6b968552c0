//! The actor's side of the group commit: starting a batch's sync on the
//! blocking pool, and answering its flushes.

use std::sync::Arc;

use super::group_commit::Plan;
use super::{Actor, OpenId};
use crate::blocking;
use crate::error::{copy_io, Error, Result};
use crate::request::Reply;
use crate::Mode;

/// A flush waiting for a sync: the open that asked, and its reply (none
/// for a flush a policy made).
pub(super) type Flusher = (OpenId, Option<Reply<()>>);

impl Actor {
    /// Starts the next group-commit sync if none runs and flushes wait.
    pub(super) fn start_sync(&mut self) {
        if self.syncing.is_some() {
            return;
        }
        let Some(plan) = self.commit.begin() else {
            return;
        };
        // What this sync covers: everything written before it begins.
        self.sync_covers = self.tally.total(&self.gate);
        // Every flush comes from a read-write open that stays served until
        // its flushes are answered.
        let (first, _) = self.commit.first_current().expect("a batch has a flush");
        let Some(index) = self.index_of(*first) else {
            self.synced(Err(Error::Closed));
            return;
        };
        let open = &self.opens[index];
        let file = Arc::clone(&open.file);
        let path = open.shared.path.clone();
        let generation = match plan {
            Plan::Range(id, _) => self
                .index_of(id)
                .map(|i| Arc::clone(&self.opens[i].current)),
            Plan::Full => None,
        };
        self.syncing = Some(blocking::start("sync", move || {
            let synced = match (plan, generation) {
                (Plan::Range(_, range), Some(generation)) => {
                    generation.sync_range(range.start, range.len())
                }
                _ => file.sync_data(),
            };
            synced.map_err(|e| Error::io("sync", &path, e))
        }));
    }

    /// Answers the flushes the finished sync served. A failed sync poisons
    /// every read-write open of the file: they all may have lost data.
    pub(super) fn synced(&mut self, result: Result<()>) {
        self.syncing = None;
        let waiters = self.commit.end();
        if let Err(err) = &result {
            tracing::error!(%err, waiters = waiters.len(), "sync failed; the mapping is poisoned");
            for open in self.opens.iter().filter(|o| o.mode() == Mode::ReadWrite) {
                open.shared.poison(err);
            }
        } else {
            tracing::debug!(waiters = waiters.len(), "sync done");
            self.tally.flushed_up_to(self.sync_covers);
        }
        for (id, reply) in waiters {
            let Some(reply) = reply else {
                if let Err(err) = &result {
                    tracing::error!(%err, "a policy flush failed");
                }
                continue;
            };
            // A sync that failed meanwhile (a resize's) reported a
            // write-back error this one's success does not cover.
            let poisoned = self
                .index_of(id)
                .and_then(|i| self.opens[i].shared.poisoned());
            let answer = match (&result, poisoned) {
                (Err(err), _) => Err(copy_err(err)),
                (Ok(()), Some(err)) => Err(err),
                (Ok(()), None) => Ok(()),
            };
            let _ = reply.send(answer);
        }
    }
}

/// Waits for the running sync; pending forever when none runs (the loop
/// guards this branch with `syncing.is_some()`).
pub(super) async fn done(syncing: &mut Option<blocking::Task<()>>) -> Result<()> {
    match syncing.as_mut() {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// A copy of a sync's error for one more of the flushes it served (`Error`
/// is not `Clone`: the `io::Error` inside is copied by its code).
pub(super) fn copy_err(err: &Error) -> Error {
    match err {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: copy_io(source),
        },
        Error::Panicked { op } => Error::Panicked { op },
        _ => Error::Closed,
    }
}
