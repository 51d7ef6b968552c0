//! Serving an admitted request: inline for small copies, on the blocking
//! pool under a temporary lease for large copies, `pwrite` and prefaulting.

use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use super::flush::Plan;
use super::leases::{Access, Footprint};
use super::{MappingActor, INLINE_COPY_MAX};
use crate::error::{Error, Result};
use crate::lease::{Grant, Release};
use crate::region::{self, Span};
use crate::request::{Reply, Request};
use crate::sys::Region;
use crate::Mode;

impl MappingActor {
    /// Runs an admitted request that needs no `await` (everything but a
    /// resize or a close). The actor has drained the direct path.
    pub(super) fn execute_inline(&mut self, request: Request, task: Option<tokio::task::Id>) {
        let file_len = self.map.len();
        match request {
            Request::Load { offset, len, reply } => {
                let span = match region::check(offset, len, file_len) {
                    Ok(span) => span,
                    Err(err) => return drop(reply.send(Err(err))),
                };
                if span.len() > INLINE_COPY_MAX as u64 {
                    self.on_blocking_pool(read(span), task, reply, |grant| {
                        Ok(Bytes::copy_from_slice(grant.region.bytes()))
                    });
                    return;
                }
                let cleared = self
                    .table
                    .clear(&read(span))
                    .expect("admitted request is clear");
                let mut buf = vec![0u8; span.len() as usize];
                self.map.read(&cleared, offset, &mut buf);
                let _ = reply.send(Ok(Bytes::from(buf)));
            }
            Request::Update {
                offset,
                data,
                reply,
            } => {
                let span = match region::check(offset, data.len() as u64, file_len) {
                    Ok(span) => span,
                    Err(err) => return drop(reply.send(Err(err))),
                };
                if self.shared.write_through {
                    // `pwrite` through the page cache the mapping shares;
                    // the temporary lease keeps the request order.
                    let file = Arc::clone(&self.file);
                    let path = self.shared.path.clone();
                    self.on_blocking_pool(write(span), task, reply, move |_| {
                        file.write_all_at(&data, offset)
                            .map_err(|e| Error::io("pwrite", &path, e))
                    });
                } else if data.len() > INLINE_COPY_MAX && multi_thread() {
                    // On a multi-thread runtime the actor copies in place,
                    // having handed its worker's other tasks to another
                    // thread (`block_in_place`): one hand-off fewer than the
                    // blocking pool, and no executor thread is held.
                    let cleared = self
                        .table
                        .clear(&write(span))
                        .expect("admitted request is clear");
                    tokio::task::block_in_place(|| self.map.write(&cleared, offset, &data));
                    let _ = reply.send(Ok(()));
                } else if data.len() > INLINE_COPY_MAX {
                    self.on_blocking_pool(write(span), task, reply, move |grant| {
                        grant.region.bytes_mut().copy_from_slice(&data);
                        Ok(())
                    });
                } else {
                    let cleared = self
                        .table
                        .clear(&write(span))
                        .expect("admitted request is clear");
                    self.map.write(&cleared, offset, &data);
                    let _ = reply.send(Ok(()));
                }
            }
            Request::Modify {
                offset,
                len,
                f,
                reply,
            } => {
                let result = region::check(offset, len, file_len).and_then(|span| {
                    let cleared = self
                        .table
                        .clear(&write(span))
                        .expect("admitted request is clear");
                    self.map
                        .with_mut(&cleared, offset, span.len() as usize, |bytes| {
                            catch_unwind(AssertUnwindSafe(|| f(bytes)))
                        })
                        .map_err(|_| Error::Panicked { op: "modify" })
                });
                let _ = reply.send(result);
            }
            Request::Lease {
                offset,
                len,
                kind,
                reply,
                ..
            } => {
                let result = region::check(offset, len, file_len).and_then(|span| {
                    self.grant(
                        Footprint {
                            span,
                            access: Access::from(kind),
                        },
                        task,
                    )
                });
                // If the caller is gone, the grant drops here and releases.
                let _ = reply.send(result);
            }
            Request::Populate { offset, len, reply } => {
                let span = match region::check(offset, len, file_len) {
                    Ok(span) => span,
                    Err(err) => return drop(reply.send(Err(err))),
                };
                let path = self.shared.path.clone();
                self.on_blocking_pool(read(span), task, reply, move |grant| {
                    grant
                        .region
                        .mapping()
                        .populate(offset, len)
                        .map_err(|e| Error::io("madvise", &path, e))
                });
            }
            Request::Flush { range, reply } => self.flush_request(range, reply),
            Request::Resize { reply, .. } | Request::Close { reply } => {
                // Served in `execute`; unreachable, but answer rather than hang.
                let _ = reply.send(Err(Error::Panicked { op: "dispatch" }));
            }
        }
    }

    /// Queues a flush for the group commit (or answers it at once: a
    /// mapping that never writes the file, an empty range, a poisoned file).
    fn flush_request(&mut self, range: Option<(u64, u64)>, reply: Reply<()>) {
        let plan = match range {
            None => Plan::Full,
            Some((offset, len)) => match region::check(offset, len, self.map.len()) {
                Ok(span) => Plan::Range(span),
                Err(err) => {
                    let _ = reply.send(Err(err));
                    return;
                }
            },
        };
        if self.shared.mode != Mode::ReadWrite {
            let _ = reply.send(Ok(()));
            return;
        }
        if let Plan::Range(span) = plan {
            if span.len() == 0 {
                let _ = reply.send(Ok(()));
                return;
            }
        }
        if let Some(err) = self.shared.poisoned() {
            let _ = reply.send(Err(err));
            return;
        }
        self.flush.push(plan, reply);
    }

    /// Runs `work` on the blocking pool under a temporary lease of `fp`,
    /// then releases the lease and answers from there. Later requests for
    /// the same bytes wait for the release, so the order of requests holds
    /// although the actor goes on serving others meanwhile.
    fn on_blocking_pool<T: Send + 'static>(
        &mut self,
        fp: Footprint,
        task: Option<tokio::task::Id>,
        reply: Reply<T>,
        work: impl FnOnce(&mut Grant) -> Result<T> + Send + 'static,
    ) {
        match self.grant(fp, task) {
            Ok(mut grant) => {
                tokio::task::spawn_blocking(move || {
                    let result = work(&mut grant);
                    drop(grant);
                    let _ = reply.send(result);
                });
            }
            Err(err) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    /// Registers a lease on the current generation.
    pub(super) fn grant(&mut self, fp: Footprint, task: Option<tokio::task::Id>) -> Result<Grant> {
        let Some(ticket) = self.table.register(fp, task) else {
            return Err(Error::Conflict {
                op: "lease",
                offset: fp.span.start,
                len: fp.span.len(),
            });
        };
        let release = Release::new(ticket.id(), self.release_tx.clone());
        match Region::new(Arc::clone(&self.map), &ticket) {
            Some(region) => Ok(Grant {
                region,
                offset: fp.span.start,
                _release: release,
            }),
            None => {
                // Dropping `release` unregisters the ticket.
                drop(release);
                Err(Error::OutOfBounds {
                    offset: fp.span.start,
                    len: fp.span.len(),
                    file_len: self.map.len(),
                })
            }
        }
    }
}

/// Whether the actor runs on a multi-thread runtime, where
/// `block_in_place` is allowed.
fn multi_thread() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

fn read(span: Span) -> Footprint {
    Footprint {
        span,
        access: Access::Read,
    }
}

fn write(span: Span) -> Footprint {
    Footprint {
        span,
        access: Access::Write,
    }
}
