//! The requests behind the streaming types of `crate::stream`: a sink's
//! batch of updates and an appender's records. The types themselves live
//! there; this is their one door to the actor.

use std::sync::Arc;

use bytes::Bytes;

use super::{request_span, MappedFile};
use crate::actor::append::{AppendRequest, Appended, Cursor};
use crate::actor::batch::{Batch, BatchDone};
use crate::actor::shared::Shared;
use crate::error::Result;
use crate::request::{Inline, OnConflict, Request};

impl MappedFile {
    /// The facts the actor shares with handles (its feed of changes).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Applies `items` in order, in one request.
    pub(crate) async fn apply_batch(&self, items: Vec<(u64, Bytes)>) -> Result<BatchDone> {
        let first = items.first().map_or(0, |(offset, _)| *offset);
        self.call(
            "update_sink",
            OnConflict::Wait,
            request_span("update_sink", first, items.len() as u64),
            |reply| Request::Inline(Inline::Batch(Batch::new(items, reply))),
        )
        .await
    }

    /// Appends `records` back to back at `cursor`, in one request.
    pub(crate) async fn append_records(
        &self,
        cursor: &Arc<Cursor>,
        records: Vec<Bytes>,
        grow_step: u64,
        durable: bool,
    ) -> Result<Appended> {
        let len: u64 = records.iter().map(|r| r.len() as u64).sum();
        let cursor = Arc::clone(cursor);
        self.call(
            "append",
            OnConflict::Wait,
            request_span("append", cursor.position(), len),
            |reply| {
                Request::Append(AppendRequest::new(
                    cursor, records, grow_step, durable, reply,
                ))
            },
        )
        .await
    }
}
