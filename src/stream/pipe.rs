//! The state machine both sinks share: a buffer of accepted items, batches
//! of them sent to the actor one after the other, and a bound on the bytes
//! held.
//!
//! # Implementation notes
//!
//! - **Sending** is sequential: one batch is being sent (waiting for room
//!   in the actor's channel) at a time, so batches reach the actor in the
//!   order they were cut. Once sent, a batch waits for its answer while the
//!   next is cut and sent: up to `max_batches` are answered in order. The
//!   actor keeps them in order too (see `actor/batch.rs`).
//! - **Batch size** adapts: a batch is cut at once when nothing is in
//!   flight (low latency), otherwise once a full batch (`Launch::FULL`, or
//!   the in-flight bound if lower) has piled up, or on a flush; so batches
//!   grow when the actor is busy. A sink that applies batches itself
//!   (`Launch::gathers`: an update sink whose bytes are watched) gathers a
//!   full batch even when idle, since it publishes a batch at once.
//! - **Bounded memory**: `poll_ready` is pending while the items buffered
//!   and in flight cost `max_in_flight` or more (an item costs its bytes
//!   plus its slot); a single item larger than the bound is accepted when
//!   nothing else is held.
//! - **Failure** is sticky: the failed item's error is returned once, by
//!   whichever of `poll_ready`, `poll_flush` or `poll_close` sees it; what
//!   is buffered behind it is dropped unapplied, the batches in flight
//!   behind it are abandoned (the actor refuses them), and every later call
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
    /// Cut a batch without waiting once this much is buffered.
    const FULL: usize;

    /// What an item counts against the in-flight bound.
    fn cost(item: &Self::Item) -> usize;

    /// Whether the batch that `buffer` starts with must go alone, after
    /// every batch before it is answered (it is not kept in order by the
    /// actor).
    fn alone(buffer: &VecDeque<Self::Item>) -> bool;

    /// Cut a batch once this much is buffered when nothing is in flight
    /// and the sink [`gathers`](Self::gathers).
    const GATHER: usize = 0;

    /// Whether a batch should be gathered to `GATHER` even when nothing is
    /// in flight: the sink applies batches itself, and a larger one costs
    /// less per item (a sink publishing its changes to subscriptions).
    fn gathers(&self) -> bool {
        false
    }

    /// Takes the next batch off the front of `buffer` (at least one item)
    /// and starts sending it; `idle`: no earlier batch is in flight.
    fn launch(&mut self, buffer: &mut VecDeque<Self::Item>, idle: bool) -> Launched<Self::Failure>;

    /// The error the sink reports for a failure, `applied` items into its
    /// life.
    fn error(applied: u64, failure: Self::Failure) -> Error;
}

/// A batch's answer, once it was sent.
pub(crate) type Landing<F> = BoxFuture<'static, Landed<F>>;

/// A batch being sent.
pub(crate) struct Launched<F> {
    /// Resolves once the batch is in the actor's channel, to its answer.
    pub(crate) sent: BoxFuture<'static, Landing<F>>,
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
    /// The batch being sent, and its cost.
    sending: Option<(BoxFuture<'static, Landing<L::Failure>>, usize)>,
    /// Batches sent, oldest first, and their costs.
    answers: VecDeque<(Landing<L::Failure>, usize)>,
    in_flight: usize,
    max_in_flight: usize,
    max_batches: usize,
    /// Items applied since the sink was made.
    applied: u64,
    state: State,
}

impl<L: Launch> Pipe<L> {
    pub(crate) fn new(
        launch: L,
        max_in_flight: usize,
        max_batches: usize,
        refused: Option<Error>,
    ) -> Pipe<L> {
        Pipe {
            launch,
            buffer: VecDeque::new(),
            buffered: 0,
            sending: None,
            answers: VecDeque::new(),
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
            max_batches: max_batches.max(1),
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

    pub(crate) fn launcher_mut(&mut self) -> &mut L {
        &mut self.launch
    }

    /// Items applied so far.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// What is held: buffered and in flight (what the bound limits).
    pub(crate) fn held(&self) -> usize {
        self.buffered + self.in_flight
    }

    fn is_idle(&self) -> bool {
        self.sending.is_none() && self.answers.is_empty()
    }

    /// The sticky state: an unreported failure is returned now (and the
    /// sink is closed); a closed sink refuses everything.
    #[inline]
    fn check(&mut self) -> Result<()> {
        if let State::Open = self.state {
            return Ok(());
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Open => {
                self.state = State::Open;
                Ok(())
            }
            State::Failed(err) => Err(err),
            State::Closed => Err(Error::Closed),
        }
    }

    /// Records a failure (reported by the caller now): what is buffered is
    /// dropped unapplied, and the batches in flight are abandoned.
    pub(crate) fn fail(&mut self, err: Error) -> Error {
        self.state = State::Closed;
        self.buffer.clear();
        self.buffered = 0;
        self.sending = None;
        self.answers.clear();
        self.in_flight = 0;
        err
    }

    /// Takes in the answers that came, in order, sends batches while items
    /// wait (see the module docs for when), and returns once nothing more
    /// can be done now (every pending step has registered its waker).
    /// `flushing`: cut a batch of whatever is buffered.
    fn poll_progress(&mut self, cx: &mut Context<'_>, flushing: bool) -> Result<()> {
        loop {
            self.check()?;
            while let Some((landing, cost)) = self.answers.front_mut() {
                let Poll::Ready(landed) = landing.as_mut().poll(cx) else {
                    break;
                };
                self.in_flight -= *cost;
                self.answers.pop_front();
                let before = self.applied;
                self.applied += landed.applied;
                if let Some(failure) = landed.failed {
                    let err = L::error(before + landed.applied, failure);
                    tracing::debug!(%err, "sink item failed; the sink is closed");
                    return Err(self.fail(err));
                }
            }
            if let Some((sending, cost)) = self.sending.as_mut() {
                let Poll::Ready(landing) = sending.as_mut().poll(cx) else {
                    return Ok(());
                };
                let cost = *cost;
                self.sending = None;
                self.answers.push_back((landing, cost));
                continue;
            }
            // A full batch: `FULL`, or what the bound lets in (a gathering
            // sink must cut what `poll_ready` waits on).
            let full = self.buffered >= L::FULL.min(self.max_in_flight);
            let gathered = self.buffered >= L::GATHER.min(self.max_in_flight);
            let idle = self.answers.is_empty();
            let cut = !self.buffer.is_empty()
                && self.answers.len() < self.max_batches
                && ((idle && (flushing || gathered || !self.launch.gathers()))
                    || (!L::alone(&self.buffer) && (flushing || full)));
            if !cut {
                return Ok(());
            }
            let launched = self.launch.launch(&mut self.buffer, idle);
            self.buffered = self.buffered.saturating_sub(launched.cost);
            self.in_flight += launched.cost;
            self.sending = Some((launched.sent, launched.cost));
        }
    }

    /// `Sink::poll_ready`: room for one more item.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Nothing held: nothing to make progress on (the common case of a
        // sink whose items are stored at once).
        if self.buffer.is_empty() && self.is_idle() {
            self.check()?;
            return Poll::Ready(Ok(()));
        }
        self.poll_progress(cx, false)?;
        let held = self.held();
        if held < self.max_in_flight || held == 0 {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Whether an item may be applied at once by the sink itself, ahead of
    /// nothing: the sink is open (a failure not yet reported is returned,
    /// as `start_send` would) and nothing it accepted is buffered or in
    /// flight, so applying it now keeps the order.
    pub(crate) fn may_apply_now(&mut self) -> Result<bool> {
        self.check()?;
        Ok(self.buffer.is_empty() && self.is_idle())
    }

    /// Counts an item the sink applied itself (`may_apply_now`).
    pub(crate) fn applied_now(&mut self) {
        self.applied += 1;
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
        self.poll_progress(cx, true)?;
        if self.buffer.is_empty() && self.is_idle() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
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
            .field(
                "batches_in_flight",
                &(self.answers.len() + usize::from(self.sending.is_some())),
            )
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

/// A batch whose sending is the whole call (an `update`, an append): it is
/// answered once sent.
// Sending resolves to the answer's future on purpose (two steps).
#[allow(clippy::async_yields_async)]
pub(crate) fn whole<F: Send + 'static>(
    call: impl Future<Output = Landed<F>> + Send + 'static,
) -> BoxFuture<'static, Landing<F>> {
    Box::pin(async move {
        let landed = call.await;
        Box::pin(std::future::ready(landed)) as Landing<F>
    })
}
