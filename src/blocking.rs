//! The one way this crate runs blocking work: on tokio's blocking pool,
//! with a panic or a cancelled task reported as [`Error::Panicked`] naming
//! the operation.
//!
//! Every syscall that can wait for a device (`fdatasync`, `msync`,
//! `fallocate`, `ftruncate`, `mmap`, `munmap` of a large mapping,
//! `madvise(POPULATE)`) goes through here, so that no executor thread is
//! ever held by one.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::task::{JoinError, JoinHandle};

use crate::error::{Error, Result};

/// Runs `f` on the blocking pool and awaits its result.
///
/// # Cancel safety
///
/// Dropping the future does not stop `f`: it runs to completion and its
/// result is dropped.
pub(crate) async fn run<T, F>(op: &'static str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    start(op, f).await
}

/// Starts `f` on the blocking pool; the returned task resolves to its
/// result. For work whose completion the caller polls alongside other
/// events (the group commit's sync).
pub(crate) fn start<T, F>(op: &'static str, f: F) -> Task<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    Task {
        op,
        handle: tokio::task::spawn_blocking(f),
    }
}

/// Runs `f` on the blocking pool without waiting for it: for work whose
/// outcome nobody needs (unmapping a retired generation) or that answers
/// for itself (a copy that sends its own reply).
pub(crate) fn detach<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    drop(tokio::task::spawn_blocking(f));
}

/// Blocking work in flight; see [`start`].
#[derive(Debug)]
pub(crate) struct Task<T> {
    op: &'static str,
    handle: JoinHandle<Result<T>>,
}

impl<T> Future for Task<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let op = self.op;
        let joined = ready!(Pin::new(&mut self.handle).poll(cx));
        Poll::Ready(joined_result(op, joined))
    }
}

/// The one mapping of a join error: the work panicked (or its runtime shut
/// down under it), so `op` failed without an I/O error to report.
fn joined_result<T>(
    op: &'static str,
    joined: std::result::Result<Result<T>, JoinError>,
) -> Result<T> {
    match joined {
        Ok(result) => result,
        Err(join) => {
            tracing::error!(op, %join, "blocking work did not complete");
            Err(Error::Panicked { op })
        }
    }
}
