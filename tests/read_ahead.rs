//! Bytes a mapping adds to its file (a created file, a grown end) are
//! holes: faulting them in must not run the file's read-ahead, which for
//! holes is no I/O but the zeroing of a large folio at a time inside one
//! fault (tens of milliseconds of an executor thread, docs/PERFORMANCE.md
//! P5). The library marks them `MADV_RANDOM`; the kernel shows it as the
//! `rr` flag of the mapping in `/proc/self/smaps`.

mod common;

use common::Scratch;
use mmap_actor::{Advice, MappedFile};

/// The `VmFlags` of every mapping of `path` in this process, with the
/// length of each.
fn flags_of(path: &std::path::Path) -> Vec<(u64, Vec<String>)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
    let name = path.to_str().expect("utf-8 path");
    let mut found = Vec::new();
    let mut current: Option<u64> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            current = line.ends_with(name).then(|| {
                let (a, b) = first.split_once('-').expect("range");
                u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap()
            });
        } else if let (Some(len), Some(flags)) = (current, line.strip_prefix("VmFlags:")) {
            found.push((len, flags.split_whitespace().map(str::to_string).collect()));
            current = None;
        }
    }
    found
}

fn random_bytes(path: &std::path::Path) -> u64 {
    flags_of(path)
        .iter()
        .filter(|(_, f)| f.iter().any(|x| x == "rr"))
        .map(|(len, _)| len)
        .sum()
}

#[tokio::test]
async fn read_ahead_is_off_for_fresh_bytes_only() {
    let s = Scratch::new();
    let path = s.path("fresh");
    let file = MappedFile::create(&path, 4 << 20).await.unwrap();
    assert_eq!(random_bytes(&path), 4 << 20, "a created file is all holes");
    file.update_from(0, &[7u8; 4096]).await.unwrap();
    file.close().await.unwrap();
    drop(file);

    // Reopened, its bytes are data: read-ahead stays on...
    let file = MappedFile::open_rw(&path).await.unwrap();
    assert!(!flags_of(&path).is_empty(), "the mapping is in smaps");
    assert_eq!(random_bytes(&path), 0, "existing bytes keep read-ahead");
    // ...and a grow marks only what it added.
    file.resize(6 << 20).await.unwrap();
    assert_eq!(random_bytes(&path), 2 << 20, "only the grown tail");
    // The user's advice wins.
    file.advise(0, 6 << 20, Advice::Normal).await.unwrap();
    assert_eq!(random_bytes(&path), 0);
    file.close().await.unwrap();
}
