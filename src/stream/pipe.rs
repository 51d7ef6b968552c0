//! The state machine both sinks share: a buffer of accepted items, at most
//! one batch of them in flight to the actor, and a bound on the bytes held.
//!
//! # Implementation notes
//!
//! - **One batch in flight.** The next batch is sent when the previous one
//!   is answered, so nothing of one sink can overtake the rest of a batch
//!   that waits for a lease, and a failing item stops everything after it.
//!   While a batch travels, accepted items pile up in the buffer, so batches
//!   grow by themselves when the actor is busy and stay small (low latency)
//!   when it is not.
//! - **Bounded memory.** `poll_ready` is pending while the items buffered
//!   and in flight cost `max_in_flight` or more (an item costs its bytes
//!   plus its slot); a single item larger than the bound is accepted when
//!   nothing else is held.
//! - **Failure** is sticky: the failed item's error is returned once, by
//!   whichever of `poll_ready`, `poll_flush` or `poll_close` sees it; the
//!   items buffered behind it are dropped unapplied, and every later call
//!   fails with `Error::Closed`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use crate::error::{Error, Result};

/// How a sink sends its items.
pub(crate) trait Launch: Unpin {
    type Item: Unpin;
    /// What a failed batch says about the item that failed.
    type Failure: Send + 'static;

    /// What an item counts against the in-flight bound.
    fn cost(item: &Self::Item) -> usize;

    /// Takes the next batch off the front of `buffer` (at least one item)
    /// and starts sending it.
    fn launch(&mut self, buffer: &mut VecDeque<Self::Item>) -> Launched<Self::Failure>;

    /// The error the sink reports for a failure, `applied` items into its
    /// life.
    fn error(applied: u64, failure: Self::Failure) -> Error;
}

/// A batch on its way.
pub(crate) struct Launched<F> {
    pub(crate) landed: BoxFuture<'static, Landed<F>>,
    /// What its items cost.
    pub(crate) cost: usize,
}

/// A batch answered.
pub(crate) struct Landed<F> {
    /// Items of the batch applied (from its first).
    pub(crate) applied: u64,
    pub(crate) failed: Option<F>,
}

enum State {
    Open,
    /// Failed; the error not reported yet.
    Failed(Error),
    /// Failed and reported, or closed.
    Closed,
}

/// The shared part of a sink.
pub(crate) struct Pipe<L: Launch> {
    launch: L,
    buffer: VecDeque<L::Item>,
    buffered: usize,
    in_flight: Option<Launched<L::Failure>>,
    max_in_flight: usize,
    /// Items applied since the sink was made.
    applied: u64,
    state: State,
}

impl<L: Launch> Pipe<L> {
    pub(crate) fn new(launch: L, max_in_flight: usize, refused: Option<Error>) -> Pipe<L> {
        Pipe {
            launch,
            buffer: VecDeque::new(),
            buffered: 0,
            in_flight: None,
            max_in_flight: max_in_flight.max(1),
            applied: 0,
            state: refused.map_or(State::Open, State::Failed),
        }
    }

    pub(crate) fn set_max_in_flight(&mut self, bytes: usize) {
        self.max_in_flight = bytes.max(1);
    }

    pub(crate) fn launcher(&self) -> &L {
        &self.launch
    }

    /// Items applied so far.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// The items held: buffered and in flight (what the bound limits).
    pub(crate) fn held(&self) -> usize {
        self.buffered + self.in_flight.as_ref().map_or(0, |f| f.cost)
    }

    /// The sticky state: an unreported failure is returned now (and the
    /// sink is closed); a closed sink refuses everything.
    fn check(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Open => {
                self.state = State::Open;
                Ok(())
            }
            State::Failed(err) => Err(err),
            State::Closed => Err(Error::Closed),
        }
    }

    /// Records a failure (reported by the caller now); what is buffered is
    /// dropped unapplied.
    pub(crate) fn fail(&mut self, err: Error) -> Error {
        self.state = State::Closed;
        self.buffer.clear();
        self.buffered = 0;
        self.in_flight = None;
        err
    }

    /// Drives the batch in flight and sends the next one while items wait:
    /// returns once a batch is in flight and pending (its waker is
    /// registered) or nothing is left to send.
    fn poll_progress(&mut self, cx: &mut Context<'_>) -> Result<()> {
        loop {
            self.check()?;
            if let Some(flight) = self.in_flight.as_mut() {
                let Poll::Ready(landed) = flight.landed.as_mut().poll(cx) else {
                    return Ok(());
                };
                self.in_flight = None;
                let before = self.applied;
                self.applied += landed.applied;
                if let Some(failure) = landed.failed {
                    let err = L::error(before + landed.applied, failure);
                    tracing::debug!(%err, "sink item failed; the sink is closed");
                    return Err(self.fail(err));
                }
            }
            if self.buffer.is_empty() {
                return Ok(());
            }
            let launched = self.launch.launch(&mut self.buffer);
            self.buffered = self.buffered.saturating_sub(launched.cost);
            self.in_flight = Some(launched);
        }
    }

    /// `Sink::poll_ready`: room for one more item.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_progress(cx)?;
        let held = self.held();
        if held < self.max_in_flight || held == 0 {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// `Sink::start_send`.
    pub(crate) fn start_send(&mut self, item: L::Item) -> Result<()> {
        self.check()?;
        self.buffered += L::cost(&item);
        self.buffer.push_back(item);
        Ok(())
    }

    /// Every accepted item sent and answered.
    pub(crate) fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_progress(cx)?;
        if self.in_flight.is_some() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// Marks the sink closed (after a successful flush).
    pub(crate) fn close(&mut self) {
        self.state = State::Closed;
    }

    /// Whether the sink was closed (or failed and reported it).
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("buffered", &self.buffer.len())
            .field("in_flight", &self.in_flight.is_some())
            .field("held_bytes", &self.held())
            .field("max_in_flight", &self.max_in_flight)
            .field("applied", &self.applied)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Polls a pinned boxed future in place (for the sinks' extra steps).
pub(crate) fn poll_boxed<T>(fut: &mut BoxFuture<'static, T>, cx: &mut Context<'_>) -> Poll<T> {
    Pin::new(fut).poll(cx)
}
