//! How an update sink sends what it does not store itself: batches (one
//! request each, kept in order by the sink's line in the actor), large
//! items alone, and, while many subscriptions watch, gathered small items
//! stored and published by the sink's task (`MappedFile::update_published`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;

use super::feed::Feed;
use super::inbox::SUBSCRIPTION_CAPACITY;
use super::pipe::{whole, Landed, Landing, Launch, Launched};
use super::sink::{BATCH_MAX, GATHER, ITEM_COST};
use crate::actor::batch::Line;
use crate::error::Error;
use crate::{MappedFile, INLINE_COPY_MAX};

/// How an update sink sends: batches, and large items alone.
pub(super) struct Updates {
    file: MappedFile,
    /// Keeps the sink's batches in order in the actor.
    line: Arc<Line>,
    /// Subscriptions to wake for changes this sink published itself, and
    /// how many changes it published since it last woke them.
    wake: Vec<Waker>,
    unwoken: usize,
}

/// A sink that publishes its changes itself wakes the subscriptions it
/// reached once per this many changes (and on a flush, and when dropped),
/// not per batch: a wake-up from a thread outside the runtime costs a
/// futex call, several microseconds on a virtual machine. Well below the
/// subscriptions' capacity, so that a reader that keeps up never lags for
/// it.
const WAKE_AFTER: usize = SUBSCRIPTION_CAPACITY / 4;

impl Updates {
    pub(super) fn new(file: MappedFile) -> Updates {
        Updates {
            file,
            line: Arc::new(Line::default()),
            wake: Vec::new(),
            unwoken: 0,
        }
    }

    pub(super) fn wake_subscribers(&mut self) {
        self.unwoken = 0;
        if !self.wake.is_empty() {
            Feed::wake(std::mem::take(&mut self.wake));
        }
    }
}

impl Drop for Updates {
    fn drop(&mut self) {
        self.wake_subscribers();
    }
}

impl Launch for Updates {
    type Item = (u64, Bytes);
    /// The failed item's offset and the cause.
    type Failure = (u64, Error);

    const FULL: usize = BATCH_MAX;

    fn cost(item: &(u64, Bytes)) -> usize {
        item.1.len() + ITEM_COST
    }

    fn alone(buffer: &VecDeque<(u64, Bytes)>) -> bool {
        buffer
            .front()
            .is_some_and(|(_, data)| data.len() > INLINE_COPY_MAX)
    }

    const GATHER: usize = GATHER;

    fn gathers(&self) -> bool {
        self.file.publishes_directly()
    }

    // Sending resolves to the answer's future on purpose (two steps).
    #[allow(clippy::async_yields_async)]
    fn launch(
        &mut self,
        buffer: &mut VecDeque<(u64, Bytes)>,
        idle: bool,
    ) -> Launched<Self::Failure> {
        let file = self.file.clone();
        let (offset, data) = buffer.pop_front().expect("a batch of at least one item");
        let mut cost = data.len() + ITEM_COST;
        if data.len() > INLINE_COPY_MAX {
            let sent = whole(async move {
                match file.update(offset, data).await {
                    Ok(()) => Landed {
                        applied: 1,
                        failed: None,
                    },
                    Err(err) => Landed {
                        applied: 0,
                        failed: Some((offset, err)),
                    },
                }
            });
            return Launched { sent, cost };
        }
        let mut items = vec![(offset, data)];
        while let Some(next) = buffer.front() {
            let c = Self::cost(next);
            if next.1.len() > INLINE_COPY_MAX || cost + c > BATCH_MAX {
                break;
            }
            cost += c;
            items.extend(buffer.pop_front());
        }
        // Watched bytes: stored here and published by this task, a gate
        // entry at a time, while nothing of this sink is on its way to the
        // actor (which would otherwise be overtaken); the actor gets what
        // is left (the gate closed, an item it must refuse).
        let mut direct = 0;
        while idle && direct < items.len() {
            match self.file.update_published(&items[direct..], &mut self.wake) {
                0 => break,
                n => direct += n,
            }
        }
        self.unwoken += direct;
        if self.unwoken >= WAKE_AFTER || direct < items.len() {
            self.wake_subscribers();
        }
        if direct == items.len() {
            drop(items);
            let landed = Landed {
                applied: direct as u64,
                failed: None,
            };
            let landing: Landing<Self::Failure> = Box::pin(std::future::ready(landed));
            let sent = Box::pin(std::future::ready(landing));
            return Launched { sent, cost };
        }
        items.drain(..direct);
        let direct = direct as u64;
        let line = Arc::downgrade(&self.line);
        let first = items[0].0;
        let sent = Box::pin(async move {
            let landing: Landing<Self::Failure> = match file.send_batch(items, line).await {
                Ok(answer) => Box::pin(async move {
                    match answer.await {
                        Ok(done) => {
                            // Freed here, on the task that allocated them.
                            drop(done.items);
                            Landed {
                                applied: direct + done.applied as u64,
                                failed: done.failed,
                            }
                        }
                        // The request itself failed (closed, panicked):
                        // report it at the batch's first item.
                        Err(err) => Landed {
                            applied: direct,
                            failed: Some((first, err)),
                        },
                    }
                }),
                Err(err) => Box::pin(std::future::ready(Landed {
                    applied: direct,
                    failed: Some((first, err)),
                })),
            };
            landing
        });
        Launched { sent, cost }
    }

    fn error(applied: u64, (offset, source): Self::Failure) -> Error {
        Error::SinkItem {
            offset,
            applied,
            source: Box::new(source),
        }
    }
}
