//! Opening: [`OpenOptions::open`] and the [`MappedFile`] constructors.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::MappedFile;
use crate::actor::hints::advise_huge_pages;
use crate::actor::registry::{self, registry, Door, Slot};
use crate::actor::tally::Tally;
use crate::actor::{ActorParts, Attach, MappingActor};
use crate::blocking;
use crate::disk::{self, Probe};
use crate::error::{Error, Result};
use crate::options::OpenOptions;
use crate::request::ResizeKind;
use crate::sys::gate::Gate;
use crate::sys::Generation;
use crate::Mode;

impl OpenOptions {
    /// Opens the file and spawns its mapping actor on the current tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for an open, length, preallocation or map failure (with
    /// the path and the OS error: missing file, permission denied, a
    /// directory, no space); [`Error::ReadOnly`] when a length change or
    /// creation is asked of a read-only or copy-on-write mapping;
    /// [`Error::Locked`] when [`lock`](Self::lock) is set and another mapping
    /// holds the lock; [`Error::TooLarge`] for a length no file can have;
    /// [`Error::Unsupported`] for a FIFO, socket, device or `/proc` file;
    /// [`Error::NoRuntime`] outside a tokio runtime. A failed open leaves
    /// the file system as it found it: a file it was creating does not
    /// appear, an existing file keeps its length and contents.
    ///
    /// # Cancel safety
    ///
    /// The blocking open runs to completion on the blocking pool even if this
    /// future is dropped; a file it created is then left on disk.
    pub async fn open(&self, path: impl AsRef<Path>) -> Result<MappedFile> {
        let (file, actor) = self.open_unspawned(path).await?;
        tokio::spawn(actor.run());
        Ok(file)
    }

    /// Opens the file and returns the handle with its actor *not yet
    /// running*: spawn [`MappingActor::run`] wherever you like (another
    /// runtime, a `LocalSet`, a task you can abort in a test). Requests wait
    /// until it runs.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    ///
    /// # Cancel safety
    ///
    /// As [`open`](Self::open).
    pub async fn open_unspawned(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<(MappedFile, MappingActor)> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime { op: "open" });
        }
        disk::check_options(self)?;
        let path = path.as_ref().to_path_buf();
        let opts = self.clone();
        let probe = blocking::run("open", move || {
            // Read here, off the executor: the direct path asks for it
            // inside the gate (`sys::streaming::pays`).
            crate::sys::streaming::cache_size();
            disk::probe(&opts, path)
        })
        .await?;
        let id = probe.id;
        let registry = registry();
        let slot = registry.slot(id);
        let opened = self.open_probed(&slot, probe).await;
        registry.release(id, slot);
        let (file, actor, resize) = opened?;
        if let Some((new_len, reset)) = resize {
            // The file is mapped elsewhere in this process: its actor
            // changes the length, waiting for leases that the cut would
            // touch, as any resize does.
            let kind = if reset {
                ResizeKind::Reset
            } else {
                ResizeKind::Exact
            };
            file.resize_with(new_len, kind).await?;
        }
        Ok((file, actor))
    }

    /// Joins the actor that serves the probed file, or starts one. Returns
    /// the handle, its actor, and the length change the joined actor still
    /// has to make.
    pub(super) async fn open_probed(
        &self,
        slot: &Arc<Slot>,
        mut probe: Probe,
    ) -> Result<(MappedFile, MappingActor, Option<(u64, bool)>)> {
        let mut door = slot.door.lock().await;
        // Read before this open counts itself: a door is joined only while
        // the file behind it is still mapped (`Slot::is_mapped`).
        let mapped_elsewhere = slot.is_mapped();
        let keep = registry::keep(slot, probe.lock.take());
        if let Some(open_door) = door.as_ref().filter(|d| d.is_open() && mapped_elsewhere) {
            let resize = disk::wanted_len(self, &probe)?;
            let (file, open) = MappedFile::pair(
                self,
                &probe,
                keep,
                Arc::new(Generation::empty(false)),
                Arc::clone(&open_door.gate),
                Arc::clone(&open_door.tally),
                open_door.notices.clone(),
            );
            let (attached, answer) = oneshot::channel();
            let sent = open_door.attach.send(Attach {
                open,
                probe,
                attached,
            });
            // The actor may be about to stop: it takes the slot's lock
            // first, and sees this attachment.
            drop(door);
            if sent.is_err() {
                return Err(Error::Closed);
            }
            answer.await.map_err(|_| Error::Closed)??;
            return Ok((file, MappingActor::joined(), resize));
        }
        // Nothing else maps the file in this process: size and map it here.
        let opts = self.clone();
        let keep_for_map = Arc::clone(&keep);
        let (probe, generation) = blocking::run("open", move || {
            let mapped = disk::size_alone(&opts, &probe)
                .and_then(|len| disk::map(&probe, len, opts.mode, &keep_for_map));
            match mapped {
                Ok(generation) => {
                    // What this open created or added is holes.
                    let fresh = if probe.created { 0 } else { probe.len };
                    if opts.mode == crate::Mode::ReadWrite {
                        disk::fresh_bytes(&generation, fresh, generation.len());
                    }
                    // Later generations get it from the actor
                    // (`prepare_generation`).
                    if opts.huge_pages {
                        advise_huge_pages(&generation, &probe.path);
                    }
                    Ok((probe, generation))
                }
                Err(err) => {
                    // A file this open created must not outlive its failure.
                    disk::remove_created(&probe);
                    Err(err)
                }
            }
        })
        .await?;
        let gate = Gate::new();
        let tally = Arc::new(Tally::new());
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let (file, first) = MappedFile::pair(
            self,
            &probe,
            keep,
            Arc::new(generation),
            Arc::clone(&gate),
            Arc::clone(&tally),
            notices_tx.clone(),
        );
        let (attach_tx, attach_rx) = mpsc::unbounded_channel();
        *door = Some(Door {
            attach: attach_tx,
            gate: Arc::clone(&gate),
            notices: notices_tx.clone(),
            tally: Arc::clone(&tally),
        });
        let actor = MappingActor::new(ActorParts {
            id: probe.id,
            slot: Arc::clone(slot),
            attach_rx,
            notices_tx,
            notices_rx,
            gate,
            tally,
            first,
        });
        Ok((file, actor, None))
    }
}

impl MappedFile {
    /// Creates the file (or truncates an existing one) with `len` zero bytes
    /// and maps it read-write. The new length and the directory entry are
    /// synced before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with the path: the directory is missing or not
    /// writable, the path is a directory, the disk is full (`ENOSPC` from
    /// preallocation).
    ///
    /// # Cancel safety
    ///
    /// The open runs to completion on the blocking pool even if the future
    /// is dropped; the file may then exist.
    pub async fn create(path: impl AsRef<Path>, len: u64) -> Result<MappedFile> {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .len(len)
            .open(path)
            .await
    }

    /// Creates a new file of `len` zero bytes, failing if it exists.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create); an existing file gives [`Error::Io`] of
    /// kind `AlreadyExists`.
    ///
    /// # Cancel safety
    ///
    /// As [`create`](Self::create).
    pub async fn create_new(path: impl AsRef<Path>, len: u64) -> Result<MappedFile> {
        OpenOptions::new()
            .create_new(true)
            .len(len)
            .open(path)
            .await
    }

    /// Opens an existing file read-write (an empty file is fine).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with the path: missing file, permission denied, a
    /// directory.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves nothing behind but a closed descriptor.
    pub async fn open_rw(path: impl AsRef<Path>) -> Result<MappedFile> {
        OpenOptions::new().mode(Mode::ReadWrite).open(path).await
    }

    /// Opens an existing file read-only.
    ///
    /// # Errors
    ///
    /// As [`open_rw`](Self::open_rw).
    ///
    /// # Cancel safety
    ///
    /// As [`open_rw`](Self::open_rw).
    pub async fn open_ro(path: impl AsRef<Path>) -> Result<MappedFile> {
        OpenOptions::new().mode(Mode::ReadOnly).open(path).await
    }

    /// Opens an existing file copy-on-write: updates go to private pages and
    /// never reach the file.
    ///
    /// # Errors
    ///
    /// As [`open_rw`](Self::open_rw).
    ///
    /// # Cancel safety
    ///
    /// As [`open_rw`](Self::open_rw).
    pub async fn open_cow(path: impl AsRef<Path>) -> Result<MappedFile> {
        OpenOptions::new().mode(Mode::CopyOnWrite).open(path).await
    }

    /// Opens the file read-write, creating it with `len` zero bytes if it
    /// does not exist. An existing file keeps its length.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    ///
    /// # Cancel safety
    ///
    /// As [`create`](Self::create).
    pub async fn open_or_create(path: impl AsRef<Path>, len: u64) -> Result<MappedFile> {
        let path = path.as_ref();
        if disk::check_len(len).is_err() {
            // The length matters only if the file is made: an existing one
            // opens as it is.
            return match MappedFile::open_rw(path).await {
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    Err(Error::TooLarge {
                        len,
                        max: disk::MAX_LEN,
                    })
                }
                other => other,
            };
        }
        let mut opts = OpenOptions::new();
        opts.create(true);
        // The length applies to a created file only: `len` on the builder
        // would also resize an existing one.
        match opts.clone().create_new(true).len(len).open(path).await {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                opts.create(false).open(path).await
            }
            other => other,
        }
    }
}
