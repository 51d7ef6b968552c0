//! The files this process has mapped, by (device, inode), so that
//! [`crate::fs::remove`] can refuse to pull a file out from under its
//! mapping.
//!
//! The count per file is the number of live mappings of it (any mode):
//! the core registers a file when it maps it and unregisters it when the
//! mapping's last generation is unmapped.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Live mappings per (device, inode). A `HashMap` cannot be built in a
/// `static` initialiser, hence the `Option`.
static MAPPED: Mutex<Option<HashMap<(u64, u64), usize>>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut HashMap<(u64, u64), usize>) -> R) -> R {
    // A panic cannot leave the map half-updated (each update is one
    // call), so a poisoned lock still holds consistent counts.
    let mut guard = MAPPED.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// Whether this process has the file `(dev, ino)` mapped now.
pub(crate) fn is_mapped(dev: u64, ino: u64) -> bool {
    with(|map| map.contains_key(&(dev, ino)))
}

/// Records one more mapping of `(dev, ino)`.
#[cfg_attr(not(test), allow(dead_code))] // called by the core once wired
pub(crate) fn register(dev: u64, ino: u64) {
    with(|map| *map.entry((dev, ino)).or_insert(0) += 1);
}

/// Records that one mapping of `(dev, ino)` is gone. Unregistering a file
/// that is not registered does nothing.
#[cfg_attr(not(test), allow(dead_code))] // called by the core once wired
pub(crate) fn unregister(dev: u64, ino: u64) {
    with(|map| {
        if let Some(count) = map.get_mut(&(dev, ino)) {
            *count -= 1;
            if *count == 0 {
                map.remove(&(dev, ino));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_mappings_per_file() {
        // Numbers no real file in the other unit tests uses.
        let (dev, ino) = (u64::MAX, u64::MAX - 1);
        assert!(!is_mapped(dev, ino));
        register(dev, ino);
        register(dev, ino);
        assert!(is_mapped(dev, ino));
        assert!(!is_mapped(dev, ino - 1));
        unregister(dev, ino);
        assert!(is_mapped(dev, ino));
        unregister(dev, ino);
        assert!(!is_mapped(dev, ino));
        unregister(dev, ino);
        assert!(!is_mapped(dev, ino));
    }
}
