//! Expected outcomes of calls, compared variant and fields: `Error` is not
//! `PartialEq` (it holds an `io::Error`).

use std::fmt::Debug;

use mmap_actor::{Error, Mode, Result};

/// What a call must return.
#[derive(Clone, Copy, Debug)]
pub enum Want {
    Ok,
    OutOfBounds {
        offset: u64,
        len: u64,
        file_len: u64,
    },
    Misaligned {
        offset: u64,
        align: u64,
    },
    ReadOnly {
        op: &'static str,
        mode: Mode,
    },
    Closed,
    /// `Error::Io` with this `op` and OS error number.
    Io {
        op: &'static str,
        errno: i32,
    },
}

/// `Want::OutOfBounds` with its three numbers.
pub fn oob(offset: u64, len: u64, file_len: u64) -> Want {
    Want::OutOfBounds {
        offset,
        len,
        file_len,
    }
}

/// `Want::Misaligned`.
pub fn misaligned(offset: u64, align: u64) -> Want {
    Want::Misaligned { offset, align }
}

/// Asserts that `got` is what `want` describes, naming the call on failure.
pub fn check<T: Debug>(call: &str, got: Result<T>, want: Want) {
    let ok = match (&got, want) {
        (Ok(_), Want::Ok) => true,
        (
            Err(Error::OutOfBounds {
                offset,
                len,
                file_len,
            }),
            Want::OutOfBounds {
                offset: o,
                len: l,
                file_len: f,
            },
        ) => (*offset, *len, *file_len) == (o, l, f),
        (
            Err(Error::Misaligned { offset, align }),
            Want::Misaligned {
                offset: o,
                align: a,
            },
        ) => (*offset, *align) == (o, a),
        (Err(Error::ReadOnly { op, mode }), Want::ReadOnly { op: o, mode: m }) => {
            (*op, *mode) == (o, m)
        }
        (Err(Error::Closed), Want::Closed) => true,
        (Err(Error::Io { op, source, .. }), Want::Io { op: o, errno }) => {
            *op == o && source.raw_os_error() == Some(errno)
        }
        _ => false,
    };
    assert!(ok, "{call}: expected {want:?}, got {got:?}");
}
