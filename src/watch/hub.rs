//! The process-wide watcher behind every [`Watch`](super::Watch).
//!
//! One process-wide `notify` watcher (one inotify instance and its thread)
//! serves every watch, so the number of watches is not bounded by the
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
use std::sync::Mutex;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::{lock, FileEvent, Msg, Outbox};
use crate::error::{Error, Result};

/// A watch's registration in the hub; dropping it unsubscribes.
#[derive(Debug)]
pub(super) struct Subscription {
    key: Key,
}

/// Registers `outbox` for the changes of the file at `path`.
pub(super) fn subscribe(path: &Path, outbox: Outbox) -> Result<Subscription> {
    HUB.subscribe(path, outbox).map(|key| Subscription { key })
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
    use super::*;

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
