//! Opening: [`OpenOptions::open`] and the [`MappedFile`] constructors.

use std::io;
use std::path::Path;

use super::MappedFile;
use crate::actor::MappingActor;
use crate::blocking;
use crate::disk;
use crate::error::{Error, Result};
use crate::options::OpenOptions;
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
    /// holds the lock.
    ///
    /// # Cancel safety
    ///
    /// The blocking open runs to completion on the blocking pool even if this
    /// future is dropped; a file it created is left on disk.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
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
        let path = path.as_ref().to_path_buf();
        let opts = self.clone();
        let opened = blocking::run("open", move || disk::open(&opts, path)).await?;
        Ok(MappedFile::pair(self, opened))
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
