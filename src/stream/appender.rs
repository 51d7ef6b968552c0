//! [`Appender`]: records appended at a cursor the actor owns, and
//! [`AppendSink`], the same as a [`Sink`].

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Sink;
use tokio::sync::watch;

use super::pipe::{whole, Landed, Launch, Launched, Pipe};
use crate::actor::append::{Appended, Cursor};
use crate::error::{Error, Result};
use crate::MappedFile;

/// How much an [`Appender`] grows the file by default when a record would
/// pass its end.
pub const DEFAULT_GROW_STEP: u64 = 1 << 20;

/// A batch of an [`AppendSink`] carries at most this many bytes of records.
const BATCH_MAX: usize = crate::INLINE_COPY_MAX;

impl MappedFile {
    /// A new appender whose cursor starts at `start`; see [`Appender`].
    ///
    /// Each call makes a new cursor (two appenders made this way write over
    /// each other); clone the appender to share one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let file = mmap_actor::MappedFile::create(dir.path().join("log"), 0).await?;
    /// let log = file.appender(0).grow_step(64 * 1024).durable(true);
    /// let at = log.append(b"first record".to_vec()).await?; // durable when it returns
    /// assert_eq!(at, 0);
    /// let at = log.append_vectored(&[b"head", b"er+payload"]).await?;
    /// assert_eq!(at, 12);
    /// assert_eq!(log.position(), 26);          // what was appended
    /// assert_eq!(log.durable_position(), 26);  // what is durable
    /// assert_eq!(file.len(), 64 * 1024);       // what is allocated
    /// assert_eq!(&file.load(12, 14).await?[..], b"header+payload");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// None here; appends report theirs (see [`Appender::append`]).
    ///
    /// # Cancel safety
    ///
    /// Not async.
    pub fn appender(&self, start: u64) -> Appender {
        Appender {
            file: self.clone(),
            cursor: Cursor::new(start),
            grow_step: DEFAULT_GROW_STEP,
            durable: false,
        }
    }
}

/// Appends records at a cursor owned by the mapping's actor, for logs;
/// made by [`MappedFile::appender`].
///
/// - **Order**: every clone shares the cursor. Each append reserves the
///   next bytes at the cursor in the order the actor receives the calls,
///   from every clone, and returns the record's offset.
/// - **Growth**: a record that would pass the end of the file grows it first,
///   by whole [`grow_step`](Self::grow_step)s (default
///   [`DEFAULT_GROW_STEP`]), as [`resize`](MappedFile::resize) does: blocks
///   are reserved before the length changes, so a full disk is an
///   [`Error::Io`] (`ENOSPC`) from `append`, never a `SIGBUS` (unless the
///   file was opened with [`preallocate(false)`](crate::OpenOptions::preallocate)).
///   A failed append leaves the cursor where it was, and no record
///   straddles a failed grow.
/// - **Durability**: with [`durable(true)`](Self::durable), `append` returns
///   once the record *and every record before it* are durable, so an
///   acknowledged record is never behind a hole after a crash. Concurrent
///   appends share one `fdatasync` (group commit, with every other flush of
///   the file).
/// - **Positions**: [`position`](Self::position) is the end of what was
///   appended (written, visible), distinct from the file's
///   [`len`](MappedFile::len) (what is allocated);
///   [`durable_position`](Self::durable_position) is the end of what is
///   known durable (moved by durable appends and by [`flush`](Self::flush)),
///   and [`watch_position`](Self::watch_position) a receiver of it, for a
///   tailing reader.
/// - **Writing**: records of up to [`INLINE_COPY_MAX`](crate::INLINE_COPY_MAX)
///   bytes are copied into the mapping by the actor; larger ones on the
///   blocking pool.
/// - **Leases**: if a lease covers the bytes at the cursor, the append
///   waits for it in its place (the cursor's later appends wait behind).
///
/// `Clone`, `Send`, `Sync`. It holds its [`MappedFile`] (and so keeps the
/// mapping open).
#[derive(Clone)]
pub struct Appender {
    file: MappedFile,
    cursor: Arc<Cursor>,
    grow_step: u64,
    durable: bool,
}

impl Appender {
    /// Grow the file by whole steps of `step` bytes when a record would
    /// pass its end (default [`DEFAULT_GROW_STEP`]). With 0 the file never
    /// grows: such an append fails with [`Error::OutOfBounds`].
    pub fn grow_step(mut self, step: u64) -> Appender {
        self.grow_step = step;
        self
    }

    /// With `true`, each append returns once it and every record before it
    /// are durable (default `false`: appended records are in the page cache
    /// and survive a crash of this process, not power loss).
    pub fn durable(mut self, durable: bool) -> Appender {
        self.durable = durable;
        self
    }

    /// Appends `record` at the cursor; returns its offset.
    ///
    /// An empty record writes nothing and returns the cursor's offset.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`] on a read-only mapping (and when a
    /// copy-on-write one would have to grow); [`Error::Io`] when growing
    /// fails (`ENOSPC`, `EFBIG`) or, if durable, the sync fails (the
    /// mapping is then poisoned, and later durable appends fail with
    /// [`Error::Poisoned`]); [`Error::OutOfBounds`] when the record does not
    /// fit and [`grow_step`](Self::grow_step) is 0, or its end would pass
    /// `u64::MAX`; [`Error::TooLarge`] when the file would grow past the
    /// largest length a file can have; [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the record may or may not be appended. If
    /// the actor had reserved its place, it is written there in full (the
    /// log never gets a hole) and, if durable, made durable by the next
    /// sync; [`durable_position`](Self::durable_position) then moves past it
    /// with the next durable append or [`flush`](Self::flush).
    pub async fn append(&self, record: impl Into<Bytes>) -> Result<u64> {
        self.append_records(vec![record.into()]).await
    }

    /// Appends the concatenation of `parts` as one record (a header and a
    /// payload, say) without the caller joining them; returns its offset.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    ///
    /// # Cancel safety
    ///
    /// As [`append`](Self::append).
    pub async fn append_vectored(&self, parts: &[&[u8]]) -> Result<u64> {
        let mut record = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            record.extend_from_slice(part);
        }
        self.append(record.freeze()).await
    }

    async fn append_records(&self, records: Vec<Bytes>) -> Result<u64> {
        let mode = self.file.mode();
        if !mode.is_writable() {
            return Err(Error::ReadOnly { op: "append", mode });
        }
        let appended = (self.file)
            .append_records(&self.cursor, records, self.grow_step, self.durable)
            .await?;
        settle(&self.cursor, appended).await
    }

    /// The records as a [`Sink`] of [`Bytes`], each appended as one record,
    /// in batches; see [`AppendSink`].
    pub fn sink(&self) -> AppendSink {
        let mode = self.file.mode();
        let refused = (!mode.is_writable()).then_some(Error::ReadOnly {
            op: "append_sink",
            mode,
        });
        AppendSink {
            pipe: Pipe::new(
                Appends {
                    appender: self.clone(),
                },
                super::sink::DEFAULT_MAX_IN_FLIGHT,
                // One batch at a time: a failed append must stop the next.
                1,
                refused,
            ),
        }
    }

    /// The end of what was appended through this cursor (by every clone):
    /// records whose append returned are before it.
    pub fn position(&self) -> u64 {
        self.cursor.position()
    }

    /// The end of what is known durable: every record before it survives
    /// power loss.
    pub fn durable_position(&self) -> u64 {
        self.cursor.durable_position()
    }

    /// A receiver of [`durable_position`](Self::durable_position), for a
    /// reader that tails the log: it changes when more records are durable.
    pub fn watch_position(&self) -> watch::Receiver<u64> {
        self.cursor.watch()
    }

    /// Makes every record appended before this call durable (a flush of the
    /// file, shared with concurrent ones) and returns the new
    /// [`durable_position`](Self::durable_position).
    ///
    /// # Errors
    ///
    /// As [`MappedFile::flush`].
    ///
    /// # Cancel safety
    ///
    /// As [`MappedFile::flush`].
    pub async fn flush(&self) -> Result<u64> {
        let position = self.cursor.position();
        self.file.flush().await?;
        self.cursor.durable_to(position);
        Ok(self.cursor.durable_position())
    }

    /// The mapping it appends to.
    pub fn file(&self) -> &MappedFile {
        &self.file
    }
}

/// Waits for the sync of a durable append and records what it made
/// durable; returns the offset of its first record.
async fn settle(cursor: &Cursor, appended: Appended) -> Result<u64> {
    if let Some(synced) = appended.synced {
        synced.await.map_err(|_| Error::Closed)??;
        cursor.durable_to(appended.end);
    }
    Ok(appended.offset)
}

impl fmt::Debug for Appender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Appender")
            .field("position", &self.position())
            .field("durable_position", &self.durable_position())
            .field("grow_step", &self.grow_step)
            .field("durable", &self.durable)
            .finish()
    }
}

/// An [`Appender`] as a [`Sink`] of records; made by [`Appender::sink`].
///
/// Each item is one record. Records are appended in the order they were
/// sent, in batches (one request per batch, one batch in flight), with the
/// appender's growth and durability: a flush (and the end of `send` and
/// `send_all`) completes once every record sent is appended and, for a
/// durable appender, durable. At most
/// [`DEFAULT_MAX_IN_FLIGHT`](crate::stream::DEFAULT_MAX_IN_FLIGHT) bytes
/// are held at once ([`max_in_flight`](Self::max_in_flight)).
///
/// A failed append (a full disk) is returned by the next `poll_ready`,
/// `poll_flush` or `poll_close` as [`append`](Appender::append) returns it;
/// the records before it are appended, none after it, and the sink is
/// closed (later calls fail with [`Error::Closed`]).
///
/// # Cancel safety
///
/// As [`UpdateSink`](crate::UpdateSink): a dropped `send` future either had
/// not handed over its record or had (and the sink keeps it); dropping the
/// sink drops the records it buffers, and the batch in flight may or may
/// not be appended (whole: the actor writes every record it reserved).
pub struct AppendSink {
    pipe: Pipe<Appends>,
}

impl AppendSink {
    /// The most bytes the sink holds at once, buffered and in flight
    /// (0 means 1: one record at a time).
    pub fn max_in_flight(mut self, bytes: usize) -> AppendSink {
        self.pipe.set_max_in_flight(bytes);
        self
    }

    /// The appender it appends through.
    pub fn appender(&self) -> &Appender {
        &self.pipe.launcher().appender
    }
}

impl Sink<Bytes> for AppendSink {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.pipe.poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        self.pipe.start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.pipe.poll_sent(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.pipe.is_closed() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.pipe.poll_sent(cx))?;
        self.pipe.close();
        Poll::Ready(Ok(()))
    }
}

impl fmt::Debug for AppendSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pipe.debug("AppendSink", f)
    }
}

struct Appends {
    appender: Appender,
}

impl Launch for Appends {
    type Item = Bytes;
    type Failure = Error;

    const FULL: usize = BATCH_MAX;

    fn cost(item: &Bytes) -> usize {
        item.len() + std::mem::size_of::<Bytes>()
    }

    fn alone(_buffer: &VecDeque<Bytes>) -> bool {
        true
    }

    fn launch(&mut self, buffer: &mut VecDeque<Bytes>, _idle: bool) -> Launched<Error> {
        let mut records = Vec::new();
        let mut cost = 0;
        let mut bytes = 0;
        while let Some(next) = buffer.front() {
            if !records.is_empty() && bytes + next.len() > BATCH_MAX {
                break;
            }
            bytes += next.len();
            cost += Self::cost(next);
            records.extend(buffer.pop_front());
        }
        let count = records.len() as u64;
        let a = self.appender.clone();
        let sent = whole(async move {
            let appended = (a.file)
                .append_records(&a.cursor, records, a.grow_step, a.durable)
                .await;
            match appended {
                Ok(appended) => match settle(&a.cursor, appended).await {
                    Ok(_) => Landed {
                        applied: count,
                        failed: None,
                    },
                    // Appended, but the sync failed.
                    Err(err) => Landed {
                        applied: count,
                        failed: Some(err),
                    },
                },
                Err(err) => Landed {
                    applied: 0,
                    failed: Some(err),
                },
            }
        });
        Launched { sent, cost }
    }

    fn error(_applied: u64, err: Error) -> Error {
        err
    }
}
