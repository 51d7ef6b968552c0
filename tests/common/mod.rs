//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use mmap_actor::MappedFile;

/// A temporary directory and a path inside it; the directory is removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new read-write mapping of `len` bytes named `name`.
    pub async fn file(&self, name: &str, len: u64) -> MappedFile {
        MappedFile::create(self.path(name), len)
            .await
            .expect("create mapping")
    }
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
