//! Group commit: one sync on the blocking pool serves every flush that was
//! asked for before it started.
//!
//! A flush that arrives while a sync is in flight cannot be served by it
//! (updates acknowledged just before that flush may have missed it), so it
//! joins the *next* batch, which starts as soon as the current sync ends.
//! N concurrent flushers therefore cost at most two syncs, usually one.

use std::fs::File;
use std::io;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::region::Span;
use crate::request::Reply;
use crate::sys::Mapping;

/// What one sync covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `fdatasync` of the file: every dirty page and the length.
    Full,
    /// `msync(MS_SYNC)` of this range of the current generation.
    Range(Span),
}

impl Plan {
    fn merge(self, other: Plan) -> Plan {
        match (self, other) {
            (Plan::Range(a), Plan::Range(b)) => Plan::Range(Span {
                start: a.start.min(b.start),
                end: a.end.max(b.end),
            }),
            _ => Plan::Full,
        }
    }
}

/// The group-commit state of one mapping.
#[derive(Default)]
pub(crate) struct GroupCommit {
    in_flight: Option<JoinHandle<io::Result<()>>>,
    /// Flushes served by the sync in flight.
    current: Vec<Reply<()>>,
    /// Flushes that arrived after it started.
    next: Vec<Reply<()>>,
    next_plan: Option<Plan>,
    /// Syncs issued so far (for tracing).
    syncs: u64,
}

impl GroupCommit {
    /// Adds a flush to the next batch.
    pub(crate) fn push(&mut self, plan: Plan, reply: Reply<()>) {
        self.next.push(reply);
        self.next_plan = Some(match self.next_plan {
            Some(p) => p.merge(plan),
            None => plan,
        });
    }

    /// Whether a sync is running.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether flushes are queued for the next sync.
    pub(crate) fn has_next(&self) -> bool {
        !self.next.is_empty()
    }

    /// Starts the next sync on the blocking pool if none is running and
    /// flushes are waiting.
    pub(crate) fn start(&mut self, file: &Arc<File>, map: &Arc<Mapping>) {
        if self.in_flight.is_some() || self.next.is_empty() {
            return;
        }
        let plan = self.next_plan.take().unwrap_or(Plan::Full);
        self.current = std::mem::take(&mut self.next);
        self.syncs += 1;
        tracing::debug!(
            waiters = self.current.len(),
            ?plan,
            sync = self.syncs,
            "sync started"
        );
        let file = Arc::clone(file);
        let map = Arc::clone(map);
        self.in_flight = Some(tokio::task::spawn_blocking(move || match plan {
            Plan::Full => file.sync_data(),
            Plan::Range(span) => map.sync_range(span.start, span.len()),
        }));
    }

    /// Waits for the sync in flight; pending forever when none is (callers
    /// guard with [`busy`](Self::busy)).
    pub(crate) async fn finished(&mut self) -> (io::Result<()>, Vec<Reply<()>>) {
        let result = match self.in_flight.as_mut() {
            Some(handle) => match handle.await {
                Ok(result) => result,
                Err(join) => Err(io::Error::other(format!("sync task failed: {join}"))),
            },
            None => std::future::pending().await,
        };
        self.in_flight = None;
        (result, std::mem::take(&mut self.current))
    }

    /// Takes the queued flushes that have not started (to fail them).
    pub(crate) fn take_next(&mut self) -> Vec<Reply<()>> {
        self.next_plan = None;
        std::mem::take(&mut self.next)
    }
}
