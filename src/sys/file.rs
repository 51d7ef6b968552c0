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
