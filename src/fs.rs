//! Durable file operations that know about this process's mappings:
//! [`copy`], [`rename`] and [`remove`].
//!
//! Each runs on tokio's blocking pool and returns only once its result is
//! durable: the data is synced (`fdatasync`) and so is every directory
//! whose entries changed (`fsync`), so that the outcome survives power
//! loss, not only a crash of this process. Operations that would pull a
//! file out from under one of this process's mappings (removing it,
//! replacing it by a rename, truncating it as a copy's destination) are
//! refused with [`Error::Mapped`]: the mapping would go on showing a file
//! that no longer has a name, or raise `SIGBUS` past a truncated end.
//!
//! The mapped check is made when the call runs: a mapping opened by another
//! task while the call is under way is not excluded.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::actor::registry::{registry, FileId};
use crate::error::{Error, Result};

/// Copies the contents (and permission bits) of the regular file `src` to
/// `dst`, creating or truncating `dst`, and returns the number of bytes
/// copied. When it returns `Ok`, the copy is durable: `dst` was synced
/// (`fdatasync`) and so was its directory (`fsync`).
///
/// The copy uses `copy_file_range` where the file system supports it (a
/// reflink on btrfs or XFS), else a read/write loop.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a"), b"hello").unwrap();
/// let n = mmap_actor::fs::copy(dir.path().join("a"), dir.path().join("b")).await?;
/// assert_eq!(n, 5);
/// assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"hello");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Io`] naming the operation and the path it failed on: `"open"`
/// of `src` (missing, permission denied) or of `dst` (missing directory,
/// permission denied, a directory); `"copy"` with `src` when `src` is a
/// directory (`EISDIR`) or not a regular file (`EINVAL`), or with `dst`
/// when it is the same file as `src` (`InvalidInput`) or reading or
/// writing failed (`ENOSPC`, `EIO`); `"fchmod"`, `"fdatasync"` of `dst`;
/// `"fsync"` of its directory. [`Error::Mapped`] when `dst` is a file this
/// process has mapped. [`Error::Panicked`] if the blocking task was lost.
///
/// # Cancel safety
///
/// Not cancel safe: the copy runs to completion on the blocking pool even
/// if the future is dropped, and its outcome is then unknown (`dst` may be
/// complete, partial or not synced).
pub async fn copy(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<u64> {
    let (src, dst) = (src.as_ref().to_path_buf(), dst.as_ref().to_path_buf());
    blocking("copy", move || copy_blocking(&src, &dst)).await
}

/// Renames `from` to `to` (replacing `to` if it exists, as `rename(2)`
/// does) and makes the rename durable: the directory of `to`, and that of
/// `from` when it differs, are synced (`fsync`) before this returns `Ok`.
///
/// Renaming a mapped file is fine (its mappings follow it); replacing a
/// mapped file is refused.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("tmp"), b"new state").unwrap();
/// mmap_actor::fs::rename(dir.path().join("tmp"), dir.path().join("state")).await?;
/// assert_eq!(std::fs::read(dir.path().join("state")).unwrap(), b"new state");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Io`] with op `"rename"` and `from` (missing, permission
/// denied, across file systems: `EXDEV`), or `"fsync"` and the directory.
/// [`Error::Mapped`] when `to` names a file this process has mapped.
/// [`Error::Panicked`] if the blocking task was lost.
///
/// # Cancel safety
///
/// Not cancel safe: the rename runs to completion even if the future is
/// dropped, and whether it was synced is then unknown.
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
    let (from, to) = (from.as_ref().to_path_buf(), to.as_ref().to_path_buf());
    blocking("rename", move || rename_blocking(&from, &to)).await
}

/// Removes the file `path` durably (its directory is synced before this
/// returns `Ok`), unless this process has it mapped.
///
/// A symbolic link is removed itself, whatever it points to.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("old");
/// std::fs::write(&path, b"x").unwrap();
/// mmap_actor::fs::remove(&path).await?;
/// assert!(!path.exists());
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Mapped`] when this process has the file mapped (nothing is
/// removed). [`Error::Io`] with op `"remove"` and the path (missing,
/// permission denied, a directory: `EISDIR`), or `"fsync"` and the
/// directory. [`Error::Panicked`] if the blocking task was lost.
///
/// # Cancel safety
///
/// Not cancel safe: the removal runs to completion even if the future is
/// dropped.
pub async fn remove(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref().to_path_buf();
    blocking("remove", move || remove_blocking(&path)).await
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Panicked { op })?
}

fn copy_blocking(src: &Path, dst: &Path) -> Result<u64> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
    // refused below); it changes nothing for regular files.
    let mut from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(src)
        .map_err(|e| Error::io("open", src, e))?;
    let meta = from.metadata().map_err(|e| Error::io("fstat", src, e))?;
    if meta.is_dir() {
        return Err(Error::io("copy", src, errno(libc::EISDIR)));
    }
    if !meta.is_file() {
        return Err(Error::io("copy", src, errno(libc::EINVAL)));
    }
    if let Ok(existing) = std::fs::metadata(dst) {
        let file = (existing.dev(), existing.ino());
        if file == (meta.dev(), meta.ino()) {
            // Truncating the destination would destroy the source.
            let same = io::Error::new(
                io::ErrorKind::InvalidInput,
                "source and destination are the same file",
            );
            return Err(Error::io("copy", dst, same));
        }
        if mapped(&existing) {
            return Err(Error::Mapped {
                op: "copy",
                path: dst.to_path_buf(),
            });
        }
    }
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(|e| Error::io("open", dst, e))?;
    let copied = io::copy(&mut from, &mut to).map_err(|e| Error::io("copy", dst, e))?;
    to.set_permissions(meta.permissions())
        .map_err(|e| Error::io("fchmod", dst, e))?;
    to.sync_data().map_err(|e| Error::io("fdatasync", dst, e))?;
    sync_dir(parent(dst))?;
    Ok(copied)
}

fn rename_blocking(from: &Path, to: &Path) -> Result<()> {
    // The entry `to` names itself (a symbolic link is replaced, not its
    // target).
    if let Ok(existing) = std::fs::symlink_metadata(to) {
        if mapped(&existing) {
            return Err(Error::Mapped {
                op: "rename",
                path: to.to_path_buf(),
            });
        }
    }
    std::fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
    sync_dir(parent(to))?;
    if parent(from) != parent(to) {
        sync_dir(parent(from))?;
    }
    Ok(())
}

fn remove_blocking(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("remove", path, e))?;
    if mapped(&meta) {
        return Err(Error::Mapped {
            op: "remove",
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
    sync_dir(parent(path))
}

/// The directory holding `path`'s entry (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes the entries of `dir` durable.
fn sync_dir(dir: PathBuf) -> Result<()> {
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", &dir, e))
}

/// Whether this process maps the file `meta` describes.
fn mapped(meta: &std::fs::Metadata) -> bool {
    registry().is_mapped(FileId::of(meta))
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file mapped by this process for the scope of a test (a real
    /// mapping: the registry's count is what `remove` asks).
    struct Mapped(crate::MappedFile);

    impl Mapped {
        async fn new(path: &Path) -> Mapped {
            Mapped(crate::MappedFile::open_ro(path).await.unwrap())
        }

        async fn close(self) {
            self.0.close().await.unwrap();
        }
    }

    fn assert_mapped<T: std::fmt::Debug>(got: Result<T>, want_op: &str, want_path: &Path) {
        match got {
            Err(Error::Mapped { op, path }) => {
                assert_eq!(op, want_op);
                assert_eq!(path, want_path);
            }
            other => panic!("expected Error::Mapped for {want_op}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn remove_is_refused_while_the_file_is_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        std::fs::write(&path, b"keep me").unwrap();
        let mapped = Mapped::new(&path).await;
        let err = remove(&path).await;
        assert_mapped(err, "remove", &path);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        // The error says what was refused and why.
        let text = remove(&path).await.unwrap_err().to_string();
        assert!(text.contains("remove") && text.contains("mapped"), "{text}");
        mapped.close().await;
        remove(&path).await.unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_symlink_to_a_mapped_file_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        std::fs::write(&path, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let _mapped = Mapped::new(&path).await;
        assert_mapped(remove(&path).await, "remove", &path);
        remove(&link).await.unwrap();
        assert!(path.exists() && !link.exists());
    }

    #[tokio::test]
    async fn replacing_a_mapped_file_is_refused_moving_it_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mapped_path = dir.path().join("mapped");
        let other = dir.path().join("other");
        std::fs::write(&mapped_path, b"mapped").unwrap();
        std::fs::write(&other, b"other").unwrap();
        let _mapped = Mapped::new(&mapped_path).await;

        assert_mapped(rename(&other, &mapped_path).await, "rename", &mapped_path);
        assert_mapped(copy(&other, &mapped_path).await, "copy", &mapped_path);
        assert_eq!(std::fs::read(&mapped_path).unwrap(), b"mapped");
        assert_eq!(std::fs::read(&other).unwrap(), b"other");

        // Copying *from* a mapped file and moving it are fine.
        let copied = dir.path().join("copied");
        assert_eq!(copy(&mapped_path, &copied).await.unwrap(), 6);
        let moved = dir.path().join("moved");
        rename(&mapped_path, &moved).await.unwrap();
        assert_eq!(std::fs::read(&moved).unwrap(), b"mapped");
    }

    #[tokio::test]
    async fn copying_a_file_onto_itself_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"precious").unwrap();
        let link = dir.path().join("alias");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        for dst in [&path, &link] {
            match copy(&path, dst).await {
                Err(err @ Error::Io { op: "copy", .. }) => {
                    assert_eq!(err.io_kind(), Some(io::ErrorKind::InvalidInput))
                }
                other => panic!("copy onto itself: {other:?}"),
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn a_fifo_source_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            println!("skipped: mkfifo is not available");
            return;
        }
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            copy(&fifo, dir.path().join("out")),
        )
        .await
        .expect("copy from a FIFO hung");
        match got {
            Err(err @ Error::Io { op: "copy", .. }) => {
                assert_eq!(err.raw_os_error(), Some(libc::EINVAL))
            }
            other => panic!("copy from a FIFO: {other:?}"),
        }
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn parents_of_bare_and_nested_names() {
        assert_eq!(parent(Path::new("f")), PathBuf::from("."));
        assert_eq!(parent(Path::new("a/f")), PathBuf::from("a"));
        assert_eq!(parent(Path::new("/f")), PathBuf::from("/"));
    }
}
