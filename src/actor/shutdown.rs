//! Closing: `close()` stops the serving, the loop finishes the flushes in
//! flight, and [`MappingActor::stop`] makes the data durable one last time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{publish, MappingActor};
use crate::blocking;
use crate::disk;
use crate::error::Error;
use crate::request::Reply;
use crate::sys::Generation;
use crate::Mode;

impl MappingActor {
    /// Starts closing: later requests fail with `Closed`, and so do the
    /// queued ones; `reply` is answered by `stop`, after the final flush.
    pub(super) fn close(&mut self, reply: Reply<()>) {
        self.close_reply = Some(reply);
        self.sync_hold();
        self.shared.closed.store(true, Ordering::Release);
        self.rx.close();
        // Dropping each envelope drops its hold.
        while let Ok(envelope) = self.rx.try_recv() {
            envelope.request.fail(Error::Closed);
        }
        for waiting in self.table.drain_waiting() {
            waiting.payload.fail(Error::Closed);
        }
    }

    /// The end: stop direct operations, make the data durable one last
    /// time, let go of the mapping and the file, then answer `close()` (if
    /// that is why). The file and the actor's generation are dropped on the
    /// blocking pool before the answer, so once `close()` returns the file
    /// stays open (and its `flock` held) only while leases still map it.
    pub(super) async fn stop(self) {
        self.shared.closed.store(true, Ordering::Release);
        // Direct operations fail once `closed` is set; swapping the
        // generation they use for an empty one waits for those in flight,
        // so that only leases keep the file mapped.
        let published = publish(&self.shared, Arc::new(Generation::empty(false))).await;
        // A read-write mapping poisoned before now fails its close.
        let poisoned = self
            .shared
            .poisoned()
            .filter(|_| self.shared.mode == Mode::ReadWrite);
        let sync = self.shared.mode == Mode::ReadWrite && poisoned.is_none();
        let file = self.file;
        let lock = self.lock;
        let generation = self.current;
        let path = self.shared.path.clone();
        let result = blocking::run("close", move || {
            let result = if sync {
                disk::sync_data(&file, &path)
            } else {
                Ok(())
            };
            drop((published, generation, lock, file));
            result
        })
        .await;
        let result = match (result, poisoned) {
            (Ok(()), Some(err)) => Err(err),
            (Ok(()), None) => Ok(()),
            (Err(err), _) => {
                self.shared.poison(&err);
                Err(err)
            }
        };
        match (self.close_reply, result) {
            (Some(reply), result) => {
                let _ = reply.send(result);
            }
            (None, Ok(())) => tracing::debug!("final flush done"),
            (None, Err(err)) => tracing::error!(%err, "final flush failed; nobody is left to tell"),
        }
    }
}
