//! The streaming surface: a mapping as a stream of leases, and as tokio
//! I/O objects.
//!
//! - [`chunks`](crate::MappedFile::chunks) and
//!   [`chunks_mut`](crate::MappedFile::chunks_mut) walk a range as a
//!   [`Stream`](futures::Stream) of [`Segment`](crate::Segment)s or
//!   [`SegmentMut`](crate::SegmentMut)s of at most `chunk_len` bytes ([`Chunks`],
//!   [`ChunksMut`]), one lease at a time: the next chunk is requested only
//!   when the consumer polls for it, so a chunk not yet yielded holds no
//!   lease. Zero-copy; a chunk, while alive, excludes conflicting access to
//!   its bytes like any lease.
//! - [`reader`](crate::MappedFile::reader) is a tokio `AsyncRead +
//!   AsyncBufRead + AsyncSeek` ([`Reader`]) and
//!   [`writer`](crate::MappedFile::writer) a tokio `AsyncWrite + AsyncSeek`
//!   ([`Writer`]). Both behave like [`std::io::Cursor`]`<&mut [u8]>` over
//!   the file, so `tokio::io::copy`, `tokio_util::codec::FramedRead` and
//!   the `AsyncReadExt` / `AsyncWriteExt` helpers work on a mapping. They
//!   copy, with [`load`](crate::MappedFile::load) and
//!   [`update`](crate::MappedFile::update), rather than lease: they never
//!   hold a lease between calls and never make another task wait for them.
//!
//! - [`update_sink`](crate::MappedFile::update_sink) is a
//!   [`Sink`](futures::Sink) of `(offset, bytes)` updates ([`UpdateSink`]),
//!   applied in order, in batches (one request per batch), with a bound on
//!   the bytes in flight; the file always holds a prefix of what was sent.
//! - [`appender`](crate::MappedFile::appender) appends records at a cursor
//!   the actor owns ([`Appender`], and [`AppendSink`] as a `Sink`), growing
//!   the file in steps, durable by group commit if asked.
//! - [`subscribe`](crate::MappedFile::subscribe) streams the changes of a
//!   range ([`Subscription`] of [`Change`]s), from every write path, in the
//!   order they were applied; a subscriber that falls behind gets
//!   [`Error::Lagged`], never a silent gap.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::TryStreamExt;
//! use tokio::io::AsyncWriteExt;
//! # let dir = tempfile::tempdir().unwrap();
//! let src = mmap_actor::MappedFile::create(dir.path().join("src"), 100_000).await?;
//! let dst = mmap_actor::MappedFile::create(dir.path().join("dst"), 0).await?;
//! src.update(0, vec![9u8; 100_000]).await?;
//!
//! // Copy one mapping into another, growing it as needed.
//! let mut writer = dst.writer(0).growing(64 * 1024);
//! tokio::io::copy(&mut src.reader(0), &mut writer).await?; // flushes at the end
//! assert_eq!(dst.load(0, 100_000).await?, src.load(0, 100_000).await?);
//!
//! // Scan it through leases, 16 KiB at a time, without copying.
//! let mut nines = 0;
//! let mut chunks = dst.chunks(..100_000, 16 * 1024);
//! while let Some(chunk) = chunks.try_next().await? {
//!     nines += chunk.iter().filter(|&&b| b == 9).count();
//! }
//! assert_eq!(nines, 100_000);
//! # Ok(()) }
//! ```
//!
//! # Errors as `io::Error`
//!
//! The I/O traits speak [`io::Error`]. A crate [`Error`] becomes one whose
//! [`kind`](io::Error::kind) fits the condition and whose
//! [`get_ref`](io::Error::get_ref) is the original [`Error`]:
//!
//! | [`Error`] | [`io::ErrorKind`] |
//! |---|---|
//! | `OutOfBounds`, `Misaligned`, `InvalidArgument`, `ReversedRange` | `InvalidInput` |
//! | `ReadOnly` | `PermissionDenied` |
//! | `Conflict`, `Locked` | `WouldBlock` |
//! | `Closed` | `BrokenPipe` |
//! | `Poisoned`, `Io` | the kind of the operating system's error |
//! | `Panicked`, `Lagged` | `Other` |
//! | `SinkItem` | the kind of its cause |

use std::io;

use crate::error::Error;

mod appender;
mod chunks;
pub(crate) mod feed;
pub(crate) mod inbox;
mod pipe;
mod reader;
mod sink;
mod subscribe;
mod updates;
mod writer;

pub use appender::{AppendSink, Appender, DEFAULT_GROW_STEP};
pub use chunks::{Chunks, ChunksMut};
pub use inbox::SUBSCRIPTION_CAPACITY;
pub use reader::Reader;
pub use sink::{UpdateSink, DEFAULT_MAX_IN_FLIGHT};
pub use subscribe::{Change, ChangeKind, Subscription};
pub use writer::Writer;

/// The [`io::Error`] for a crate error, keeping the error itself as its
/// inner error (`From<Error> for io::Error`; the module docs list the
/// kinds).
pub(crate) fn io_error(err: Error) -> io::Error {
    io::Error::from(err)
}

/// The position a seek from `pos` in a file of `len` bytes goes to, as
/// [`std::io::Cursor`] computes it: any position from 0 to `u64::MAX`,
/// including past the end of the file.
///
/// # Errors
///
/// `InvalidInput` for a position before 0 or past `u64::MAX`.
pub(crate) fn seek_target(pos: u64, len: u64, seek: io::SeekFrom) -> io::Result<u64> {
    let target = match seek {
        io::SeekFrom::Start(n) => return Ok(n),
        io::SeekFrom::End(delta) => i128::from(len) + i128::from(delta),
        io::SeekFrom::Current(delta) => i128::from(pos) + i128::from(delta),
    };
    u64::try_from(target).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid seek to {target}, a negative or overflowing position"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use io::SeekFrom::{Current, End, Start};

    #[test]
    fn seek_targets_follow_cursor() {
        assert_eq!(seek_target(5, 100, Start(7)).unwrap(), 7);
        assert_eq!(seek_target(5, 100, Start(u64::MAX)).unwrap(), u64::MAX);
        assert_eq!(seek_target(5, 100, End(-10)).unwrap(), 90);
        assert_eq!(seek_target(5, 100, End(10)).unwrap(), 110);
        assert_eq!(seek_target(5, 100, Current(-5)).unwrap(), 0);
        assert_eq!(seek_target(5, 100, Current(1000)).unwrap(), 1005);
        for bad in [Current(-6), End(-101), Current(i64::MIN)] {
            let err = seek_target(5, 100, bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(seek_target(u64::MAX, 0, Current(1)).is_err());
        assert_eq!(seek_target(u64::MAX, 0, Current(0)).unwrap(), u64::MAX);
    }

    #[test]
    fn io_errors_keep_the_crate_error() {
        let err = io_error(Error::Closed);
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<Error>()),
            Some(Error::Closed)
        ));
        let err = io_error(Error::Io {
            op: "fallocate",
            path: "f".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        });
        let enospc = io::Error::from_raw_os_error(libc::ENOSPC).kind();
        assert_eq!(err.kind(), enospc);
    }
}
