//! Ending: `close()` of one open, the final flush of an open that ends
//! (closed, or all its handles dropped), and the actor's own end once no
//! open and no lease is left.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::registry::registry;
use super::{publish, Actor, Open};
use crate::blocking;
use crate::disk;
use crate::error::Error;
use crate::request::Reply;
use crate::sys::Generation;
use crate::Mode;

impl Actor {
    /// Starts closing open `index`: its later requests fail with `Closed`,
    /// and so do the queued ones; `reply` is answered once its final flush
    /// is done ([`finish_opens`](Self::finish_opens)).
    pub(super) fn close(&mut self, index: usize, reply: Reply<()>) {
        let open = &mut self.opens[index];
        open.close_reply = Some(reply);
        open.shared.closed.store(true, Ordering::Release);
        // Dropping each envelope drops its hold.
        for envelope in open.close_channel() {
            envelope.request.fail(Error::Closed);
        }
        let id = open.id;
        for waiting in self.table.drain_waiting(|p| p.is_from(id)) {
            waiting.fail(Error::Closed);
        }
        self.sync_hold();
    }

    /// Ends every open that is closing or orphaned and has no flush left.
    pub(super) async fn finish_opens(&mut self) {
        while let Some(index) = self.opens.iter().position(|open| {
            let id = open.id;
            open.is_ending() && !self.commit.waits(|(from, _)| *from == id)
        }) {
            let open = self.opens.remove(index);
            for waiting in self.table.drain_waiting(|p| p.is_from(open.id)) {
                waiting.fail(Error::Closed);
            }
            super::hints::unlock_on_close(&open).await;
            finish(&self.gate, open).await;
            self.sync_hold();
        }
    }

    /// The actor's end, once nothing is left to serve: under the slot's
    /// lock, an open that arrived meanwhile is taken in (`false`: keep
    /// running); otherwise the door closes, so nothing can attach any more.
    pub(super) async fn stop_if_unused(&mut self) -> bool {
        let slot = Arc::clone(&self.slot);
        let mut door = slot.door.lock().await;
        if let Ok(attach) = self.attach_rx.try_recv() {
            drop(door);
            self.attach(attach).await;
            return false;
        }
        self.attach_rx.close();
        // Unless a new open already replaced it with its own actor's (this
        // file had nothing mapped any more: `Slot::is_mapped`).
        if door
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(&d.gate, &self.gate))
        {
            *door = None;
        }
        drop(door);
        tracing::debug!("no open and no lease left; the actor stops");
        registry().release(self.id, slot);
        true
    }
}

/// The end of one open: stop its direct operations, make its data durable
/// one last time, let go of its mapping and descriptor, then answer its
/// `close()` (if that is why). The actor's descriptor and the generation
/// are dropped on the blocking pool before the answer, so once `close()`
/// returns the `flock` is held only while leases still map the file, and
/// the file stays open only while leases map it or handles of the open
/// remain (each keeps the open's descriptor, for `AsFd`).
async fn finish(gate: &Arc<crate::sys::gate::Gate>, open: Open) {
    open.shared.closed.store(true, Ordering::Release);
    open.shared.feed.end();
    // Direct operations fail once `closed` is set; swapping the generation
    // they use for an empty one waits for those in flight, so that only
    // leases keep the file mapped.
    let published = publish(gate, &open, Arc::new(Generation::empty(false))).await;
    let Open {
        shared,
        file,
        keep,
        current,
        close_reply,
        ..
    } = open;
    // A read-write open poisoned before now fails its close.
    let read_write = shared.mode == Mode::ReadWrite;
    let poisoned = shared.poisoned().filter(|_| read_write);
    let sync = read_write && poisoned.is_none();
    let path = shared.path.clone();
    let result = blocking::run("close", move || {
        let result = if sync {
            disk::sync_data(&file, &path)
        } else {
            Ok(())
        };
        drop((published, current, keep, file));
        result
    })
    .await;
    let result = match (result, poisoned) {
        (Ok(()), Some(err)) => Err(err),
        (Ok(()), None) => Ok(()),
        (Err(err), _) => {
            shared.poison(&err);
            Err(err)
        }
    };
    match (close_reply, result) {
        (Some(reply), result) => {
            let _ = reply.send(result);
        }
        (None, Ok(())) => tracing::debug!("final flush done"),
        (None, Err(err)) => tracing::error!(%err, "final flush failed; nobody is left to tell"),
    }
}
