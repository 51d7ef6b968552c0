//! The actor's side of subscriptions: every write path the actor serves
//! reports its change here, after applying it (the feed itself is
//! `stream/feed.rs`).
//!
//! Write paths outside the actor report through the same feed: a
//! `SegmentMut` when dropped, and a large copy on the blocking pool when
//! done. The direct path reports nothing: while a subscription covers its
//! bytes it sends the update to the actor instead (`Feed::watches`).

use bytes::Bytes;

use super::{Actor, OpenId};
use crate::lease_table::Cleared;
use crate::stream::inbox::Draft;
use crate::stream::ChangeKind;

impl Actor {
    /// Reports a change of `len` bytes at `offset` made through open
    /// `index`; `data` is the new bytes of all of it, when the writer has
    /// them at hand (an update's payload: sharing it costs nothing). The
    /// one call every actor write path makes.
    pub(super) fn changed(
        &self,
        index: usize,
        offset: u64,
        len: u64,
        kind: ChangeKind,
        data: Option<&Bytes>,
    ) {
        let feed = &self.opens[index].shared.feed;
        if !feed.is_watched() {
            return;
        }
        let draft = match data.filter(|_| feed.wants_bytes()) {
            Some(bytes) => Draft::with_bytes(offset, kind, bytes),
            None => Draft::new(offset, len, kind),
        };
        feed.publish(vec![draft]);
    }

    /// Reports a change whose new bytes are in the mapping (a `modify`):
    /// the part data subscriptions want is copied out under the access the
    /// writer was cleared for.
    pub(super) fn changed_in_place(
        &self,
        index: usize,
        cleared: &Cleared,
        offset: u64,
        len: u64,
        kind: ChangeKind,
    ) {
        let open = &self.opens[index];
        let feed = &open.shared.feed;
        if !feed.is_watched() {
            return;
        }
        let data = feed.wanted_bytes(offset, len).map(|(from, to)| {
            let mut buf = vec![0u8; (to - from) as usize];
            open.current.read(cleared, from, &mut buf);
            (from, Bytes::from(buf))
        });
        feed.publish(vec![Draft::with_data(offset, len, kind, data)]);
    }

    /// The length of every open, before a resize (see [`resized`](Self::resized)).
    pub(super) fn lengths(&self) -> Vec<(OpenId, u64)> {
        self.opens.iter().map(|o| (o.id, o.current.len())).collect()
    }

    /// Reports a resize to the subscriptions of every open whose length
    /// changed since `before` was taken.
    pub(super) fn resized(&self, before: &[(OpenId, u64)]) {
        for &(id, old_len) in before {
            let Some(index) = self.index_of(id) else {
                continue;
            };
            let new_len = self.opens[index].current.len();
            if new_len != old_len {
                let (offset, len) = (old_len.min(new_len), old_len.abs_diff(new_len));
                let kind = ChangeKind::Resize { old_len, new_len };
                self.changed(index, offset, len, kind, None);
            }
        }
    }
}
