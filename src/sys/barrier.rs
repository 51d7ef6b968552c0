//! The process-wide memory barrier (`membarrier(2)`) that lets the gate's
//! direct operations run without a single locked instruction.
//!
//! The gate's protocol needs, on each side, a store followed by a load that
//! the processor must not reorder (a direct operation: "I am in", then "is
//! anyone holding?"; a holder: "I hold", then "is anyone in?"). The usual
//! way is a full barrier on both sides, which on x86 is a `lock`-prefixed
//! instruction per entry and per exit of a direct operation. That costs more
//! than its cycles: it waits for every earlier load and store of the thread
//! to finish, so a loop of direct calls cannot overlap one call's cache miss
//! with the next call's.
//!
//! The two sides are far from equal, though: direct operations run millions
//! of times a second, holders a few thousand at most. `membarrier`'s
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED` runs a full barrier on every processor
//! that is running a thread of this process (and a context switch is one
//! for the others), so a holder that calls it after its store may pair with
//! direct operations that only keep the *compiler* from reordering their
//! store and load. This is the asymmetric form of the same protocol, the one
//! user-space RCU implementations use.
//!
//! The process registers once (`MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`,
//! Linux 4.14). Where the kernel lacks it, or a seccomp filter refuses it,
//! [`asymmetric`] says so and the gate keeps the symmetric form.

use std::sync::OnceLock;

/// `membarrier(2)` commands (`linux/membarrier.h`; `libc` lacks them).
const CMD_QUERY: libc::c_long = 0;
const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

fn membarrier(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: `membarrier` takes two integers (command and flags, plus a
    // CPU id for one command not used here) and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    }
}

/// Whether this process may use [`heavy`]: registers it on the first call
/// (one syscall pair, then a cached answer).
pub(crate) fn asymmetric() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        if std::env::var_os("MMAP_ACTOR_SYMMETRIC_GATE").is_some() {
            return false;
        }
        let commands = membarrier(CMD_QUERY);
        commands >= 0
            && commands & CMD_PRIVATE_EXPEDITED != 0
            && membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    })
}

/// A full memory barrier on every thread of this process that is running
/// now. Only after [`asymmetric`] returned `true`.
///
/// # Panics
///
/// If the kernel refuses the barrier after accepting the registration,
/// which it documents it does not do: going on would let a holder miss a
/// direct operation in flight.
pub(crate) fn heavy() {
    let rc = membarrier(CMD_PRIVATE_EXPEDITED);
    assert!(
        rc == 0,
        "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after registration: {}",
        std::io::Error::last_os_error()
    );
}
