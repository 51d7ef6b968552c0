//! The direct path: small loads and updates copied by the calling task
//! through the gate (`sys::gate`), without a round trip to the actor.

use bytes::Bytes;

use super::MappedFile;
use crate::error::{Error, Result};
use crate::sys::gate::Gate;
use crate::sys::Mapping;

/// Loads and updates up to this many bytes are served by the calling task
/// itself, straight from the current mapping generation, whenever the
/// mapping has no live lease, no queued request and no resize in progress
/// (otherwise they go through the actor like everything else). The copy is
/// made with atomic byte accesses, so it costs about a nanosecond a byte:
/// past a few KiB the actor's `memcpy` is cheaper than the saved round trip.
pub const DIRECT_MAX: usize = 4096;

/// Releases a handle's hold on the direct path if the request carrying it
/// was never handed to the actor.
pub(super) struct HoldGuard<'a> {
    pub(super) gate: &'a Gate<Mapping>,
    pub(super) armed: bool,
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.gate.unhold();
        }
    }
}

impl MappedFile {
    /// A small load served by the calling task, if the gate is open.
    pub(super) async fn load_direct(&self, offset: u64, len: u64) -> Option<Result<Bytes>> {
        if len > DIRECT_MAX as u64 {
            return None;
        }
        if self.is_closed() {
            return Some(Err(Error::Closed));
        }
        // Keep a task that loops on direct calls from starving its runtime.
        tokio::task::consume_budget().await;
        let entered = self.shared.gate.enter()?;
        let mut buf = vec![0u8; len as usize];
        let result = entered.with(|map| {
            if map.read_direct(&entered, offset, &mut buf) {
                Ok(())
            } else {
                Err(Error::OutOfBounds {
                    offset,
                    len,
                    file_len: map.len(),
                })
            }
        });
        drop(entered);
        Some(result.map(|()| Bytes::from(buf)))
    }

    /// A small update served by the calling task, if the gate is open.
    pub(super) async fn update_direct(&self, offset: u64, data: &[u8]) -> Option<Result<()>> {
        if data.len() > DIRECT_MAX || self.shared.write_through {
            return None;
        }
        if self.is_closed() {
            return Some(Err(Error::Closed));
        }
        tokio::task::consume_budget().await;
        let entered = self.shared.gate.enter()?;
        let result = entered.with(|map| {
            if map.write_direct(&entered, offset, data) {
                Ok(())
            } else {
                Err(Error::OutOfBounds {
                    offset,
                    len: data.len() as u64,
                    file_len: map.len(),
                })
            }
        });
        Some(result)
    }
}
