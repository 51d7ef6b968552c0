//! [`Reader`]: the file as a tokio `AsyncRead + AsyncBufRead + AsyncSeek`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncSeek, ReadBuf};

use super::{io_error, seek_target};
use crate::error::{Error, Result};
use crate::MappedFile;

/// How many bytes one fill of a [`Reader`]'s buffer loads: the largest copy
/// the actor makes inline ([`INLINE_COPY_MAX`](crate::INLINE_COPY_MAX)),
/// so that a fill costs one round trip and no blocking-pool hand-off.
const BUFFER_LEN: u64 = crate::INLINE_COPY_MAX as u64;

impl MappedFile {
    /// A tokio [`AsyncRead`], [`AsyncBufRead`] and [`AsyncSeek`] over the
    /// file, starting at `offset`; see [`Reader`].
    ///
    /// `offset` may be past the end of the file: reads there return 0
    /// bytes, as they do for a [`std::io::Cursor`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let text = b"first line\nsecond line\n";
    /// let file = mmap_actor::MappedFile::create(dir.path().join("r"), text.len() as u64).await?;
    /// file.update(0, &text[..]).await?;
    ///
    /// let mut lines = file.reader(0).lines();
    /// assert_eq!(lines.next_line().await?.as_deref(), Some("first line"));
    ///
    /// let mut reader = file.reader(0);
    /// reader.seek(std::io::SeekFrom::End(-5)).await?;
    /// let mut tail = String::new();
    /// reader.read_to_string(&mut tail).await?;
    /// assert_eq!(tail, "line\n");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// None here; reads and seeks report theirs (see [`Reader`]).
    ///
    /// # Cancel safety
    ///
    /// Reads and seeks are cancel safe (see [`Reader`]).
    pub fn reader(&self, offset: u64) -> Reader {
        Reader {
            file: self.clone(),
            pos: offset,
            buf: Bytes::new(),
            loading: None,
        }
    }
}

/// The file as a tokio [`AsyncRead`] + [`AsyncBufRead`] + [`AsyncSeek`],
/// with the semantics of a [`std::io::Cursor`] over its bytes; made by
/// [`MappedFile::reader`].
///
/// - **End of file** is the file's length when a read needs more bytes: a
///   read at or past it returns 0 bytes; if the file grows, later reads
///   see the new bytes.
/// - **Buffering**: it fills an internal buffer of up to 64 KiB with one
///   [`load`](MappedFile::load), i.e. it *copies*, so it never holds a
///   lease between calls and never makes a writer wait for it. Bytes
///   already buffered are not reloaded: what it returns may be up to one
///   buffer older than the file. A seek discards the buffer, so reading
///   after a seek sees the file as it is then.
/// - **Seeking**: to any position from 0 to `u64::MAX`; `SeekFrom::End`
///   is relative to the file's length at the time of the seek.
///
/// It is `Send` and `Unpin`.
///
/// # Errors
///
/// A read fails with the [`io::Error`] of a failed load (see the
/// [module docs](crate::stream) for the kinds): `BrokenPipe` once the
/// mapping is closed. A file shrinking under the reader is not an error:
/// reads past the new end return 0 bytes. A seek to a position before 0
/// or past `u64::MAX` fails with `InvalidInput` and leaves the position
/// unchanged.
///
/// # Cancel safety
///
/// Cancel safe. A load that a dropped read future started stays in the
/// reader and the next read carries on with it; a seek abandons it.
pub struct Reader {
    file: MappedFile,
    /// Offset in the file of the next byte to hand out: the first byte of
    /// `buf`.
    pos: u64,
    /// Loaded bytes starting at `pos`, not yet consumed.
    buf: Bytes,
    /// The load of the bytes at `pos`, started by a poll that found `buf`
    /// empty.
    loading: Option<BoxFuture<'static, Result<Bytes>>>,
}

/// Loads up to [`BUFFER_LEN`] bytes at `pos`: none at or past the end.
///
/// A file shrinking between the length check and the load is not an
/// error: the load is retried against the new length.
async fn fill(file: MappedFile, pos: u64) -> Result<Bytes> {
    loop {
        let len = file.len();
        if pos >= len {
            return Ok(Bytes::new());
        }
        let want = BUFFER_LEN.min(len - pos);
        match file.load(pos, want).await {
            // Retried only when the file really is shorter now, so this
            // loops at most once per concurrent shrink.
            Err(Error::OutOfBounds { .. }) if file.len() < pos + want => continue,
            other => return other,
        }
    }
}

impl AsyncBufRead for Reader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let me = self.get_mut();
        if me.buf.is_empty() {
            // The end of the file needs no round trip.
            if me.loading.is_none() && me.pos >= me.file.len() {
                return Poll::Ready(Ok(&[]));
            }
            let loading = me
                .loading
                .get_or_insert_with(|| Box::pin(fill(me.file.clone(), me.pos)));
            let loaded = ready!(loading.as_mut().poll(cx));
            me.loading = None;
            me.buf = loaded.map_err(io_error)?;
        }
        Poll::Ready(Ok(&me.buf))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let me = self.get_mut();
        let amt = amt.min(me.buf.len());
        me.buf.advance(amt);
        me.pos += amt as u64;
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(dst.remaining());
        dst.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for Reader {
    fn start_seek(self: Pin<&mut Self>, seek: io::SeekFrom) -> io::Result<()> {
        let me = self.get_mut();
        me.pos = seek_target(me.pos, me.file.len(), seek)?;
        me.buf.clear();
        me.loading = None;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.file.path())
            .field("pos", &self.pos)
            .field("buffered", &self.buf.len())
            .field("loading", &self.loading.is_some())
            .finish()
    }
}
