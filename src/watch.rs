//! Change notifications for one file: [`watch`] and its stream, [`Watch`].
//!
//! # Implementation
//!
//! One process-wide `notify` watcher (one inotify instance and its thread)
//! serves every [`Watch`], so the number of watches is not bounded by the
//! per-user inotify instance limit (128 by default) and costs no thread
//! each. It is started by the first watch and stopped when the last one is
//! dropped.
//!
//! Each watched *file* (device and inode) has one entry: an `O_PATH`
//! descriptor of the file and one inotify watch, added through that
//! descriptor's `/proc/self/fd/N` name. That name is unique while the entry
//! lives (the descriptor stays open until its inotify watch is removed), so
//! it identifies the entry in notify's events, and the watch follows the
//! file across renames. The descriptor also lets the event thread `fstat`
//! the file: a removal shows as a change of the link count (`IN_ATTRIB`)
//! whose count is zero. The kernel's own removal event (`IN_DELETE_SELF`)
//! comes only once nobody has the file open or mapped, which for a mapped
//! file is too late.
//!
//! Two locks, never held together by the event thread: `control` serialises
//! the calls into notify (which wait for notify's thread), `routes` is the
//! table the event thread reads for each event. Nothing holds `routes` while
//! calling into notify, so the event thread never waits for a caller that
//! waits for it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::stream::{FusedStream, Stream};
use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Events buffered for one [`Watch`] before it lags (one slot is kept for
/// the lag report).
const CAPACITY: usize = 64;

/// A change to a watched file, reported by [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileEvent {
    /// The contents changed through `write(2)` (or `copy_file_range`,
    /// `fallocate`), or the file was truncated or extended. Stores through
    /// a memory mapping are *not* reported (see [`watch`]).
    Modified,
    /// Metadata changed: permissions, owner, timestamps, extended
    /// attributes, a new hard link.
    Metadata,
    /// The file was renamed or moved; it is still watched under its new
    /// name. `to` is where the kernel placed it when the event was handled
    /// (it may have moved again since), or `None` if that is unknown.
    Renamed {
        /// The file's new path, if known.
        to: Option<PathBuf>,
    },
    /// The file's last name is gone: it was removed, or another file was
    /// renamed over it. This is the stream's last item.
    Removed,
    /// The stream was not polled fast enough and events were dropped
    /// (they happened here, between the items before and after this one).
    /// `missed` is their number, or `None` when the kernel's own queue
    /// overflowed and the number is unknown.
    Lagged {
        /// How many events were dropped, if known.
        missed: Option<u64>,
    },
}

/// Watches the file at `path` for changes made by any process.
///
/// The returned [`Watch`] is a stream of [`FileEvent`]s for *this file*
/// (the inode the path names now): it follows the file across renames, and
/// ends after [`FileEvent::Removed`]. Only changes made after `watch`
/// returns are reported. It runs without a tokio runtime; setting it up
/// takes a few system calls and a hand-off to the watcher thread.
///
/// What the kernel reports (inotify): `write(2)` and friends, `truncate`,
/// `fallocate`, `chmod`, `chown`, `utime`, `rename`, `unlink`. **Stores
/// through a memory mapping are invisible to it**, whoever makes them:
/// another process's mapping, or this library's own
/// [`update`](crate::MappedFile::update), leases and atomic views (only
/// [`write_through`](crate::OpenOptions::write_through) updates, which use
/// `pwrite`, are seen).
///
/// A slow consumer loses events, never silently: up to 64 events are
/// buffered, then further events are dropped and counted, and the stream
/// yields [`FileEvent::Lagged`] in their place. [`FileEvent::Removed`] is
/// never dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// use futures::StreamExt;
/// use mmap_actor::FileEvent;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("watched");
/// std::fs::write(&path, b"one").unwrap();
/// let mut events = mmap_actor::watch(&path)?;
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(events.next().await.transpose()?, Some(FileEvent::Removed));
/// assert_eq!(events.next().await.transpose()?, None);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Io`] with the path when it cannot be opened (`NotFound`,
/// `PermissionDenied`) or names a directory (`EISDIR`); [`Error::Watch`]
/// when the watcher cannot be started or cannot watch the file (the
/// inotify instance or watch limits are reached, or the file is not
/// readable, which inotify requires).
pub fn watch(path: impl AsRef<Path>) -> Result<Watch> {
    let path = path.as_ref();
    let (outbox, inbox) = channel(CAPACITY);
    let key = HUB.subscribe(path, outbox)?;
    Ok(Watch {
        path: path.to_path_buf(),
        inbox,
        subscription: Some(Subscription { key }),
        stashed: None,
        done: false,
    })
}

/// A stream of the changes to one file; see [`watch`].
///
/// Items are `Result<FileEvent>`: an [`Error::Watch`] item reports an error
/// of the watcher (a failed read of the kernel's queue) and the stream goes
/// on. The stream ends after [`FileEvent::Removed`] and never ends
/// otherwise. Dropping it stops watching (and stops the watcher thread when
/// it was the last watch).
///
/// A watch holds an `O_PATH` descriptor of its file, so a removed file's
/// space is freed only once the stream has yielded `Removed` or been
/// dropped (as it is for any file still open or mapped).
///
/// # Cancel safety
///
/// `next()` is cancel safe: an event is taken from the buffer only by the
/// poll that returns it.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    inbox: Inbox,
    /// `None` once the stream has ended (or in unit tests).
    subscription: Option<Subscription>,
    /// An item to yield before reading the buffer again: a `Removed` that
    /// arrived while a lag report was queued.
    stashed: Option<FileEvent>,
    done: bool,
}

impl Watch {
    /// The path given to [`watch`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn yield_event(&mut self, event: FileEvent) -> Poll<Option<Result<FileEvent>>> {
        if event == FileEvent::Removed {
            self.done = true;
            // Release the inotify watch now rather than when dropped.
            self.subscription = None;
        }
        Poll::Ready(Some(Ok(event)))
    }
}

impl Stream for Watch {
    type Item = Result<FileEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(event) = self.stashed.take() {
            return self.yield_event(event);
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.inbox.rx.poll_recv(cx) {
            Poll::Ready(Some(Msg::Event(event))) => self.yield_event(event),
            Poll::Ready(Some(Msg::Error(source))) => Poll::Ready(Some(Err(Error::Watch {
                path: self.path.clone(),
                source,
            }))),
            Poll::Ready(Some(Msg::Lag)) => {
                let (missed, end) = self.inbox.take_lag();
                self.stashed = end;
                Poll::Ready(Some(Ok(FileEvent::Lagged {
                    missed: Some(missed),
                })))
            }
            // Every sender is gone: the watch was torn down without a
            // `Removed` (only possible if the hub lost the entry).
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl FusedStream for Watch {
    fn is_terminated(&self) -> bool {
        self.done && self.stashed.is_none()
    }
}

/// What travels from the event thread to one [`Watch`].
#[derive(Debug)]
enum Msg {
    Event(FileEvent),
    Error(notify::Error),
    /// Events were dropped after this point: the count is in [`Lag`].
    Lag,
}

/// Lag bookkeeping shared by an [`Outbox`] and its [`Inbox`].
#[derive(Debug, Default)]
struct Lag {
    /// A [`Msg::Lag`] is in the channel: every event until the consumer
    /// takes it is dropped and counted, so that it reports them in order.
    queued: bool,
    missed: u64,
    /// A `Removed` that arrived while the channel was full.
    end: Option<FileEvent>,
    /// `Removed` was sent or stashed: nothing more is delivered.
    ended: bool,
}

/// The event thread's end of one watch's channel.
#[derive(Debug)]
struct Outbox {
    tx: mpsc::Sender<Msg>,
    lag: Arc<Mutex<Lag>>,
}

/// The stream's end.
#[derive(Debug)]
struct Inbox {
    rx: mpsc::Receiver<Msg>,
    lag: Arc<Mutex<Lag>>,
}

fn channel(capacity: usize) -> (Outbox, Inbox) {
    // One slot more than ordinary events may use: a lag report or the final
    // `Removed` always fits.
    let (tx, rx) = mpsc::channel(capacity.max(1) + 1);
    let lag = Arc::new(Mutex::new(Lag::default()));
    (
        Outbox {
            tx,
            lag: Arc::clone(&lag),
        },
        Inbox { rx, lag },
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data
    // (counters and maps) is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outbox {
    /// Delivers without ever blocking: the event thread serves every watch.
    fn deliver(&self, msg: Msg) {
        let mut lag = lock(&self.lag);
        if lag.ended {
            return;
        }
        if matches!(msg, Msg::Event(FileEvent::Removed)) {
            lag.ended = true;
            if lag.queued {
                lag.end = Some(FileEvent::Removed);
            } else {
                // The reserved slot is free while no lag report is queued.
                let _ = self.tx.try_send(msg);
            }
            return;
        }
        if lag.queued {
            lag.missed += 1;
        } else if self.tx.capacity() >= 2 {
            let _ = self.tx.try_send(msg);
        } else {
            // Only the reserved slot is left: report the lag in it.
            let _ = self.tx.try_send(Msg::Lag);
            lag.queued = true;
            lag.missed = 1;
        }
    }
}

impl Inbox {
    /// The number of dropped events and a pending `Removed`, on receipt of
    /// the lag report.
    fn take_lag(&self) -> (u64, Option<FileEvent>) {
        let mut lag = lock(&self.lag);
        lag.queued = false;
        (std::mem::take(&mut lag.missed), lag.end.take())
    }
}

/// A [`Watch`]'s registration in the hub; dropping it unsubscribes.
#[derive(Debug)]
struct Subscription {
    key: Key,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        HUB.unsubscribe(self.key);
    }
}

/// A subscriber: the file (device, inode) and a number unique in the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    file: (u64, u64),
    id: u64,
}

/// The process-wide watcher; see the module docs.
struct Hub {
    control: Mutex<Control>,
    routes: Mutex<Routes>,
}

/// The watcher, while any file is watched.
struct Control {
    watcher: Option<RecommendedWatcher>,
    /// Disconnects when the thread of the watcher last stopped has
    /// released its handler, after closing its descriptors. A new watcher
    /// waits for it: notify does not join its thread on drop, and watches
    /// created and dropped in a loop would otherwise pile up stopping
    /// inotify instances until the per-user limit refuses new ones.
    stopping: Option<std::sync::mpsc::Receiver<()>>,
}

impl Control {
    fn watcher(&mut self, path: &Path) -> Result<&mut RecommendedWatcher> {
        if self.watcher.is_none() {
            if let Some(stopped) = self.stopping.take() {
                // Never sent to: returns when the old handler is dropped.
                let _ = stopped.recv();
            }
            let (alive, stopped) = std::sync::mpsc::sync_channel::<()>(0);
            self.stopping = Some(stopped);
            let handler = move |event| {
                let _alive = &alive;
                on_event(event);
            };
            let watcher =
                RecommendedWatcher::new(handler, notify::Config::default()).map_err(|source| {
                    Error::Watch {
                        path: path.to_path_buf(),
                        source,
                    }
                })?;
            self.watcher = Some(watcher);
        }
        Ok(self.watcher.as_mut().expect("just started"))
    }
}

static HUB: Hub = Hub {
    control: Mutex::new(Control {
        watcher: None,
        stopping: None,
    }),
    routes: Mutex::new(Routes {
        entries: Vec::new(),
        next_id: 0,
    }),
};

/// The watched files. A handful per process is typical; a linear scan of a
/// `Vec` keeps the static constructible without a lazy cell.
struct Routes {
    entries: Vec<Entry>,
    next_id: u64,
}

/// One watched file.
struct Entry {
    file: (u64, u64),
    /// `/proc/self/fd/N` of `fd`: the path notify knows this file by.
    alias: PathBuf,
    /// An `O_PATH` descriptor of the file: keeps `alias` unique and lets
    /// the event thread `fstat` the file.
    fd: File,
    subscribers: Vec<(u64, Outbox)>,
    /// The file's last link is gone; every subscriber got `Removed`.
    removed: bool,
}

impl Routes {
    fn entry_mut(&mut self, file: (u64, u64)) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.file == file)
    }
}

impl Hub {
    fn subscribe(&self, path: &Path, outbox: Outbox) -> Result<Key> {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let meta = fd.metadata().map_err(|e| Error::io("fstat", path, e))?;
        if meta.is_dir() {
            return Err(Error::io(
                "watch",
                path,
                std::io::Error::from_raw_os_error(libc::EISDIR),
            ));
        }
        let file = (meta.dev(), meta.ino());
        let mut control = lock(&self.control);
        {
            let mut routes = lock(&self.routes);
            let id = routes.next_id;
            routes.next_id += 1;
            if let Some(entry) = routes.entry_mut(file) {
                if entry.removed {
                    outbox.deliver(Msg::Event(FileEvent::Removed));
                }
                entry.subscribers.push((id, outbox));
                return Ok(Key { file, id });
            }
            drop(routes);
            let alias = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            let watcher = control.watcher(path)?;
            if let Err(source) = watcher.watch(&alias, RecursiveMode::NonRecursive) {
                self.stop_if_idle(&mut control);
                return Err(Error::Watch {
                    path: path.to_path_buf(),
                    source,
                });
            }
            // Events between the watch and this insertion find no entry and
            // are dropped: they happened before `watch` returned. A removal
            // among them must not be lost, so look at the link count once
            // the entry is in place (later removals are events).
            let mut routes = lock(&self.routes);
            let removed = fd.metadata().is_ok_and(|m| m.nlink() == 0);
            if removed {
                outbox.deliver(Msg::Event(FileEvent::Removed));
            }
            routes.entries.push(Entry {
                file,
                alias,
                fd,
                subscribers: vec![(id, outbox)],
                removed,
            });
            Ok(Key { file, id })
        }
    }

    fn unsubscribe(&self, key: Key) {
        let mut control = lock(&self.control);
        let gone = {
            let mut routes = lock(&self.routes);
            let Some(i) = routes.entries.iter().position(|e| e.file == key.file) else {
                return;
            };
            let entry = &mut routes.entries[i];
            entry.subscribers.retain(|(id, _)| *id != key.id);
            if !entry.subscribers.is_empty() {
                return;
            }
            routes.entries.swap_remove(i)
        };
        if let Some(watcher) = control.watcher.as_mut() {
            if let Err(err) = watcher.unwatch(&gone.alias) {
                tracing::debug!(path = %gone.alias.display(), %err, "inotify unwatch failed");
            }
        }
        // Closed only now: until the inotify watch is gone, no other file
        // may get this descriptor number (and so this alias).
        drop(gone);
        self.stop_if_idle(&mut control);
    }

    /// Stops the watcher thread when no file is watched.
    fn stop_if_idle(&self, control: &mut Control) {
        if lock(&self.routes).entries.is_empty() {
            control.watcher = None;
        }
    }
}

/// The watcher thread's handler: routes one notify event to the watches of
/// its file.
fn on_event(event: notify::Result<notify::Event>) {
    let mut routes = lock(&HUB.routes);
    let event = match event {
        Ok(event) => event,
        Err(err) => {
            for entry in &routes.entries {
                for (_, outbox) in &entry.subscribers {
                    outbox.deliver(Msg::Error(copy_notify_error(&err)));
                }
            }
            return;
        }
    };
    if event.need_rescan() {
        for entry in &routes.entries {
            for (_, outbox) in &entry.subscribers {
                outbox.deliver(Msg::Event(FileEvent::Lagged { missed: None }));
            }
        }
    }
    for path in &event.paths {
        let Some(entry) = routes.entries.iter_mut().find(|e| &e.alias == path) else {
            continue;
        };
        if entry.removed {
            continue;
        }
        let Some(file_event) = classify(&event.kind, &entry.fd) else {
            continue;
        };
        entry.removed = file_event == FileEvent::Removed;
        for (_, outbox) in &entry.subscribers {
            outbox.deliver(Msg::Event(file_event.clone()));
        }
    }
}

/// What a notify event means for the watched file, or `None` to ignore it
/// (opens and closes).
fn classify(kind: &EventKind, fd: &File) -> Option<FileEvent> {
    let unlinked = || fd.metadata().is_ok_and(|m| m.nlink() == 0);
    match kind {
        EventKind::Modify(ModifyKind::Metadata(_)) if unlinked() => Some(FileEvent::Removed),
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(FileEvent::Metadata),
        EventKind::Modify(ModifyKind::Name(_)) => Some(FileEvent::Renamed {
            to: current_path(fd),
        }),
        EventKind::Modify(_) => Some(FileEvent::Modified),
        EventKind::Remove(_) => Some(FileEvent::Removed),
        _ => None,
    }
}

/// Where the file behind `fd` is now, from `/proc/self/fd`.
fn current_path(fd: &File) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    if link.to_string_lossy().ends_with(" (deleted)") {
        None
    } else {
        Some(link)
    }
}

/// notify's error is not `Clone`; an error of the event thread goes to every
/// watch.
fn copy_notify_error(err: &notify::Error) -> notify::Error {
    use notify::ErrorKind;
    let copy = match &err.kind {
        ErrorKind::Generic(msg) => notify::Error::generic(msg),
        ErrorKind::Io(source) => notify::Error::io(crate::error::copy_io(source)),
        ErrorKind::PathNotFound => notify::Error::path_not_found(),
        ErrorKind::WatchNotFound => notify::Error::watch_not_found(),
        ErrorKind::InvalidConfig(config) => notify::Error::invalid_config(config),
        ErrorKind::MaxFilesWatch => notify::Error::new(ErrorKind::MaxFilesWatch),
    };
    copy.set_paths(err.paths.clone())
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;

    fn detached(capacity: usize) -> (Outbox, Watch) {
        let (outbox, inbox) = channel(capacity);
        let watch = Watch {
            path: PathBuf::from("test"),
            inbox,
            subscription: None,
            stashed: None,
            done: false,
        };
        (outbox, watch)
    }

    /// Everything the watch has buffered, without waiting.
    fn drain(watch: &mut Watch) -> Vec<FileEvent> {
        let mut out = Vec::new();
        while let Some(Some(item)) = watch.next().now_or_never() {
            out.push(item.unwrap());
        }
        out
    }

    #[test]
    fn a_slow_consumer_sees_a_lag_report_in_place_of_the_dropped_events() {
        let (outbox, mut watch) = detached(4);
        for _ in 0..10 {
            outbox.deliver(Msg::Event(FileEvent::Modified));
        }
        assert_eq!(
            drain(&mut watch),
            [
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Lagged { missed: Some(6) },
            ]
        );
        // Delivery resumes after the report, and counts start again.
        outbox.deliver(Msg::Event(FileEvent::Metadata));
        for _ in 0..5 {
            outbox.deliver(Msg::Event(FileEvent::Modified));
        }
        assert_eq!(
            drain(&mut watch),
            [
                FileEvent::Metadata,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Lagged { missed: Some(2) },
            ]
        );
        assert!(!watch.is_terminated());
    }

    #[test]
    fn removed_is_never_dropped_and_ends_the_stream() {
        // Full channel with a lag report queued: `Removed` waits behind it.
        let (outbox, mut watch) = detached(2);
        for _ in 0..5 {
            outbox.deliver(Msg::Event(FileEvent::Modified));
        }
        outbox.deliver(Msg::Event(FileEvent::Removed));
        outbox.deliver(Msg::Event(FileEvent::Modified));
        assert_eq!(
            drain(&mut watch),
            [
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Lagged { missed: Some(3) },
                FileEvent::Removed,
            ]
        );
        assert!(watch.is_terminated());
        assert!(watch.next().now_or_never().unwrap().is_none());

        // Full channel without a lag report: the reserved slot takes it.
        let (outbox, mut watch) = detached(2);
        outbox.deliver(Msg::Event(FileEvent::Modified));
        outbox.deliver(Msg::Event(FileEvent::Modified));
        outbox.deliver(Msg::Event(FileEvent::Removed));
        assert_eq!(
            drain(&mut watch),
            [FileEvent::Modified, FileEvent::Modified, FileEvent::Removed]
        );
        assert!(watch.next().now_or_never().unwrap().is_none());
    }

    #[test]
    fn errors_become_typed_items_and_the_stream_goes_on() {
        let (outbox, mut watch) = detached(4);
        outbox.deliver(Msg::Error(notify::Error::generic("boom")));
        outbox.deliver(Msg::Event(FileEvent::Modified));
        match watch.next().now_or_never() {
            Some(Some(Err(Error::Watch { path, source }))) => {
                assert_eq!(path, PathBuf::from("test"));
                assert!(source.to_string().contains("boom"), "{source}");
            }
            other => panic!("expected a watch error, got {other:?}"),
        }
        assert_eq!(drain(&mut watch), [FileEvent::Modified]);
    }

    #[test]
    fn notify_errors_are_copied_with_their_paths() {
        let err = notify::Error::io(std::io::Error::from_raw_os_error(libc::EIO))
            .add_path(PathBuf::from("/x"));
        let copy = copy_notify_error(&err);
        assert_eq!(copy.paths, [PathBuf::from("/x")]);
        assert!(
            matches!(&copy.kind, notify::ErrorKind::Io(e) if e.raw_os_error() == Some(libc::EIO))
        );
    }
}
