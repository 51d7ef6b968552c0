//! File syscalls that `std` does not offer: `posix_fallocate`, `flock`, and
//! the `fsync` of a directory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// `posix_fallocate(fd, offset, len)`: reserves blocks so that later writes
/// through the mapping cannot fail for lack of space (no `SIGBUS`).
pub(crate) fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: plain syscall on a descriptor `file` keeps open.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            // File systems without fallocate support: the tail stays sparse
            // (the documented residual risk of `preallocate(false)`).
            libc::EOPNOTSUPP => return Ok(()),
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Links an `O_TMPFILE` file into place at `target` (`linkat` through
/// `/proc/self/fd`, the documented way that needs no privilege). Fails with
/// `AlreadyExists` when `target` exists: a creation that looks atomic to
/// every other opener.
pub(crate) fn link_tmpfile(file: &File, target: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let source = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(io::Error::other)?;
    let target = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: both paths are NUL-terminated C strings that live across the
    // call; `linkat` reads them and touches no other memory.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            source.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clears `O_NONBLOCK`, which the open set so that opening a FIFO could not
/// hang: once the file is known to be a regular file, it is a plain one.
pub(crate) fn clear_nonblock(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor `file` keeps open.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kind of pseudo file system `file` lives on, if it is one whose
/// files have no meaningful length (`/proc`, `/sys`, `debugfs`, ...).
pub(crate) fn pseudo_fs(file: &File) -> io::Result<Option<&'static str>> {
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `fstatfs` writes a `statfs` into the buffer, which is large
    // enough and lives across the call; a plain syscall on a descriptor
    // `file` keeps open.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstatfs` succeeded, so it initialised the buffer.
    let f_type = u64::try_from(unsafe { stat.assume_init() }.f_type).unwrap_or(0);
    Ok(match f_type {
        0x9fa0 => Some("a procfs file"),
        0x6265_6572 => Some("a sysfs file"),
        0x6462_6720 => Some("a debugfs file"),
        0x7472_6163 => Some("a tracefs file"),
        0x0027_e0eb | 0x6367_7270 => Some("a cgroup file"),
        0x7363_6673 => Some("a securityfs file"),
        0x6265_6570 => Some("a configfs file"),
        _ => None,
    })
}

/// `fsync` of a directory, so that a new entry in it survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An advisory lock (`flock`) on the whole file, released when dropped.
///
/// Every generation mapped while it is held keeps an `Arc` of it, so the
/// lock lives exactly as long as anything in this process maps the file
/// through it: the actor's current generation, and every lease's. It is
/// released explicitly (`LOCK_UN`) rather than left to the kernel, which
/// would keep it while any copy of the open file description lives (a
/// child process forked meanwhile keeps our mappings until it execs).
#[derive(Debug)]
pub(crate) struct FileLock {
    file: Arc<File>,
}

impl FileLock {
    /// Takes the lock without waiting: `Ok(None)` when another open file
    /// description holds a conflicting one.
    pub(crate) fn try_new(file: Arc<File>, exclusive: bool) -> io::Result<Option<FileLock>> {
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        } | libc::LOCK_NB;
        loop {
            // SAFETY: plain syscall on a descriptor `file` keeps open.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Some(FileLock { file }));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Ok(None),
                _ => return Err(err),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: plain syscall on a descriptor `self.file` keeps open.
        let rc = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
        if rc != 0 {
            tracing::warn!(err = %io::Error::last_os_error(), "could not release the advisory lock");
        }
    }
}
