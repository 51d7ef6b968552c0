//! [`Writer`]: the file as a tokio `AsyncWrite + AsyncSeek`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::{AsyncSeek, AsyncWrite};

use super::{io_error, seek_target};
use crate::error::{Error, Result};
use crate::{MappedFile, Mode};

/// The most one write accepts: the largest update the actor copies inline
/// ([`INLINE_COPY_MAX`](crate::INLINE_COPY_MAX)). A larger write is
/// accepted in several steps; this bounds the copy the caller's task makes
/// of each step and keeps every update off the blocking pool.
const WRITE_MAX: usize = crate::INLINE_COPY_MAX;

impl MappedFile {
    /// A tokio [`AsyncWrite`] and [`AsyncSeek`] over the file, starting at
    /// `offset`; see [`Writer`]. It stops at the end of the file, unless
    /// made [`growing`](Writer::growing).
    ///
    /// `offset` may be past the end of the file: writes there return 0
    /// bytes (`write_all` fails with `WriteZero`) unless the writer grows.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncWriteExt;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("w"), 8).await?;
    /// let mut writer = file.writer(2);
    /// writer.write_all(b"abc").await?;
    /// writer.flush().await?; // applied: visible to every load (not durable)
    /// assert_eq!(&file.load(0, 8).await?[..], b"\0\0abc\0\0\0");
    ///
    /// // A non-growing writer stops at the end of the file.
    /// let err = writer.write_all(b"0123456789").await.unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::WriteZero);
    /// writer.flush().await?;
    /// assert_eq!(&file.load(0, 8).await?[..], b"\0\0abc012");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// None here; writes report theirs (see [`Writer`]).
    ///
    /// # Cancel safety
    ///
    /// A dropped write future has not accepted its bytes; see [`Writer`]
    /// for what a dropped writer leaves behind.
    pub fn writer(&self, offset: u64) -> Writer {
        Writer {
            file: self.clone(),
            pos: offset,
            grow_step: None,
            in_flight: None,
        }
    }
}

/// The file as a tokio [`AsyncWrite`] + [`AsyncSeek`], with the semantics
/// of a [`std::io::Cursor`]`<&mut [u8]>` over its bytes; made by
/// [`MappedFile::writer`].
///
/// - **Writes** are [`update`](MappedFile::update)s, applied one at a time
///   in order. A write of up to 64 KiB is accepted at once (larger ones
///   partly, as `AsyncWrite` allows); its update may still be running when
///   the write returns, and the next write, flush, shutdown or seek first
///   waits for it. So writes are applied in the order they were accepted,
///   and the file holds every accepted write except at most the last.
/// - **Flush** ([`poll_flush`](AsyncWrite::poll_flush), and
///   [`poll_shutdown`](AsyncWrite::poll_shutdown), which is the same) waits
///   until every accepted write is applied: visible to every load from any
///   handle, and in the page cache (it survives a crash of this process).
///   It is **not** durable against power loss: call
///   [`MappedFile::flush`] for that.
/// - **End of file**: a write that reaches the end writes what fits; the
///   next returns `Ok(0)`, so `write_all` fails with
///   [`WriteZero`](io::ErrorKind::WriteZero). A [`growing`](Self::growing)
///   writer resizes the file instead.
/// - **Seeking**: to any position from 0 to `u64::MAX`, past the end
///   included; `SeekFrom::End` is relative to the file's length at the time
///   of the seek.
///
/// It is `Send` and `Unpin`. Flush before dropping it: a write whose
/// update is still running when the writer is dropped may or may not be
/// applied (as [`update`](MappedFile::update) is when its future is
/// dropped), and its error, if any, is lost.
///
/// # Errors
///
/// [`io::Error`]s, with the crate [`Error`] inside (see the
/// [module docs](crate::stream) for the kinds):
///
/// - a write on a read-only mapping, or a growing write at the end of a
///   copy-on-write mapping (which cannot be resized), fails at once with
///   `PermissionDenied`;
/// - a failed update (the file shrank under the writer, the mapping was
///   closed: `BrokenPipe`, a growth found the disk full) is reported by the
///   call that waits for it: the write itself if its update finished at
///   once, else the next write, flush, shutdown or seek. The position then
///   moves back to the start of the failed write, so that it is the end of
///   what the writer applied; the writer stays usable;
/// - a seek to before 0 or past `u64::MAX` fails with `InvalidInput` and
///   leaves the position unchanged; a growing write whose end would pass
///   `u64::MAX` fails with `InvalidInput`.
///
/// # Cancel safety
///
/// Cancel safe, in the sense of `AsyncWrite`: a write future dropped
/// before it returns has not accepted its bytes (it was waiting for the
/// previous update), and the update of an accepted write stays in the
/// writer, which carries on with it. So after a `write_all` is dropped
/// midway, the file holds exactly the bytes up to the writer's position
/// once it is flushed (each write whole), and writing on from that position
/// completes the data.
pub struct Writer {
    file: MappedFile,
    /// Offset in the file of the next accepted byte. Includes the write in
    /// flight; moves back to its start if it fails.
    pos: u64,
    /// Grow the file by at least this much when a write passes its end
    /// (`None`: stop at the end).
    grow_step: Option<u64>,
    /// The one accepted write not yet known to be applied.
    in_flight: Option<InFlight>,
}

/// An accepted write whose update is running.
struct InFlight {
    /// Where it writes: the position to go back to if it fails.
    offset: u64,
    update: BoxFuture<'static, Result<()>>,
}

impl Writer {
    /// Makes the writer grow the file, instead of stopping at its end, by
    /// at least `step` bytes at a time. A write that would pass the end
    /// writes what fits; the next one, at the end (or a write past it after
    /// a seek), first [`resize`](MappedFile::resize)s the file to the larger
    /// of its length plus `step` and the end of that write. A `step` of 0
    /// grows it to exactly what each write needs (a resize, with its sync,
    /// per write: pick a step that amortises it).
    ///
    /// The file is left at the grown length (the last step may not be
    /// filled); resize it back when done if that matters. A resize sets an
    /// absolute length, so two writers growing one file at once may
    /// undo each other's growth; grow a file from one writer at a time.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncWriteExt;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("g"), 0).await?;
    /// let mut writer = file.writer(0).growing(1 << 20);
    /// writer.write_all(&vec![1u8; 1_500_000]).await?;
    /// writer.flush().await?;
    /// assert_eq!(file.len(), 2 << 20); // two steps of 1 MiB
    /// assert_eq!(file.load(1_499_999, 2).await?[..], [1, 0]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// None here. A write that needs to grow a copy-on-write mapping fails
    /// with `PermissionDenied`; a failed resize (a full disk:
    /// `StorageFull`) is reported as a failed update (see [`Writer`]).
    pub fn growing(mut self, step: u64) -> Writer {
        self.grow_step = Some(step);
        self
    }

    /// Waits for the write in flight, if any; on its failure moves the
    /// position back to its start and returns the error.
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(in_flight) = &mut self.in_flight else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(in_flight.update.as_mut().poll(cx));
        let offset = in_flight.offset;
        self.in_flight = None;
        Poll::Ready(result.map_err(|err| {
            self.pos = offset;
            io_error(err)
        }))
    }

    /// How much of a `want`-byte write at the position goes in now, and
    /// the length to grow the file to first, if it must grow.
    ///
    /// What fits before the end goes in first, without growing; a write
    /// at or past the end grows the file if the writer grows.
    fn plan(&self, want: u64) -> Result<(u64, Option<u64>)> {
        let len = self.file.len();
        let fits = len.saturating_sub(self.pos).min(want);
        let step = match self.grow_step {
            Some(step) if fits == 0 => step,
            _ => return Ok((fits, None)),
        };
        if self.file.mode() != Mode::ReadWrite {
            return Err(Error::ReadOnly {
                op: "resize",
                mode: self.file.mode(),
            });
        }
        let end = self.pos.checked_add(want).ok_or(Error::OutOfBounds {
            offset: self.pos,
            len: want,
            file_len: len,
        })?;
        Ok((want, Some(len.saturating_add(step).max(end))))
    }
}

/// Applies one accepted write: grows the file first if `grow_to` says so
/// and it is still shorter (another handle may have grown it meanwhile).
async fn apply(file: MappedFile, offset: u64, data: Bytes, grow_to: Option<u64>) -> Result<()> {
    if let Some(new_len) = grow_to {
        if file.len() < new_len {
            file.resize(new_len).await?;
        }
    }
    file.update(offset, data).await
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_settle(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !me.file.mode().is_writable() {
            return Poll::Ready(Err(io_error(Error::ReadOnly {
                op: "write",
                mode: me.file.mode(),
            })));
        }
        let want = buf.len().min(WRITE_MAX);
        let (n, grow_to) = me.plan(want as u64).map_err(io_error)?;
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        // `n <= want <= WRITE_MAX`, so it fits in a usize.
        let n = n as usize;
        let offset = me.pos;
        let data = Bytes::copy_from_slice(&buf[..n]);
        let mut update: BoxFuture<'static, Result<()>> =
            Box::pin(apply(me.file.clone(), offset, data, grow_to));
        // A small update usually completes on its first poll (the direct
        // path): then nothing stays in flight, and its error is this
        // write's.
        match update.as_mut().poll(cx) {
            Poll::Ready(Err(err)) => return Poll::Ready(Err(io_error(err))),
            Poll::Ready(Ok(())) => {}
            Poll::Pending => me.in_flight = Some(InFlight { offset, update }),
        }
        me.pos = offset + n as u64;
        Poll::Ready(Ok(n))
    }

    /// Waits until every accepted write is applied (visible to every load);
    /// does not make them durable, see [`MappedFile::flush`].
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_settle(cx)
    }

    /// As [`poll_flush`](Self::poll_flush): there is nothing to close.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncSeek for Writer {
    /// Moves the position. Fails with an error of kind `Other` while a
    /// write is in flight: call [`poll_complete`](Self::poll_complete)
    /// first (`AsyncSeekExt::seek` does).
    fn start_seek(self: Pin<&mut Self>, seek: io::SeekFrom) -> io::Result<()> {
        let me = self.get_mut();
        if me.in_flight.is_some() {
            return Err(io::Error::other(
                "a write is still being applied: call poll_complete before start_seek",
            ));
        }
        me.pos = seek_target(me.pos, me.file.len(), seek)?;
        Ok(())
    }

    /// Waits for the write in flight, then returns the position.
    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let me = self.get_mut();
        ready!(me.poll_settle(cx))?;
        Poll::Ready(Ok(me.pos))
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.file.path())
            .field("pos", &self.pos)
            .field("grow_step", &self.grow_step)
            .field("in_flight", &self.in_flight.is_some())
            .finish()
    }
}
