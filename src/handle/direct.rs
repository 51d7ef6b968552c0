//! The direct path: small loads and updates copied by the calling task
//! through the gate (`sys/gate.rs`), without a round trip to the actor.

use bytes::Bytes;

use super::MappedFile;
use crate::error::{Error, Result};
use crate::sys::gate::Reading;
use crate::sys::Generation;

/// Loads and updates up to this many bytes are served by the calling task
/// itself, straight from the current mapping generation, whenever the
/// mapping has no live lease, no queued request and no resize in progress
/// (otherwise they go through the actor like everything else). The copy is
/// made with atomic byte accesses, so it costs about a nanosecond a byte:
/// past a few KiB the actor's `memcpy` is cheaper than the saved round trip.
pub const DIRECT_MAX: usize = 4096;

impl MappedFile {
    /// Enters the gate for one direct operation: `None` when the actor must
    /// serve the request instead (the gate is held).
    async fn enter_direct(&self) -> Option<Result<Reading<'_, Generation>>> {
        if self.is_closed() {
            return Some(Err(Error::Closed));
        }
        // Keep a task that loops on direct calls from starving its runtime.
        tokio::task::consume_budget().await;
        self.shared.current.enter().map(Ok)
    }

    /// A small load served by the calling task, if the gate is open.
    pub(super) async fn load_direct(&self, offset: u64, len: u64) -> Option<Result<Bytes>> {
        if len > DIRECT_MAX as u64 {
            return None;
        }
        let reading = match self.enter_direct().await? {
            Ok(reading) => reading,
            Err(err) => return Some(Err(err)),
        };
        let mut buf = vec![0u8; len as usize];
        let copied = reading.with(|generation, entered| {
            generation
                .read_direct(entered, offset, &mut buf)
                .then_some(())
                .ok_or(generation.len())
        });
        drop(reading);
        Some(
            copied
                .map(|()| Bytes::from(buf))
                .map_err(|file_len| Error::OutOfBounds {
                    offset,
                    len,
                    file_len,
                }),
        )
    }

    /// A small update served by the calling task, if the gate is open.
    pub(super) async fn update_direct(&self, offset: u64, data: &[u8]) -> Option<Result<()>> {
        // While a subscription covers these bytes, the actor must see the
        // update to report it.
        if data.len() > DIRECT_MAX
            || self.shared.write_through
            || self.shared.feed.watches(offset, data.len() as u64)
        {
            return None;
        }
        let reading = match self.enter_direct().await? {
            Ok(reading) => reading,
            Err(err) => return Some(Err(err)),
        };
        let copied = reading.with(|generation, entered| {
            generation
                .write_direct(entered, offset, data)
                .then_some(())
                .ok_or(generation.len())
        });
        Some(copied.map_err(|file_len| Error::OutOfBounds {
            offset,
            len: data.len() as u64,
            file_len,
        }))
    }
}
