//! Huge pages: `OpenOptions::huge_pages` advises `MADV_HUGEPAGE` once for
//! every generation of every open that asked (the first map, a joining
//! open, each resize; counted with strace), and `is_hugepage_backed`
//! agrees with what `/proc/self/smaps` says about this file's mappings.

mod common;

use std::path::Path;

use common::Scratch;
use mmap_actor::MappedFile;

const MIB: u64 = 1024 * 1024;
const CHILD_ENV: &str = "MMAP_ACTOR_HUGE_PAGES_DIR";

/// Whether any mapping of `path` in this process has huge-page backing,
/// read straight from `/proc/self/smaps`.
fn smaps_says_huge(path: &Path) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let mut inside = false;
    let mut huge = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.trim_end().ends_with(name);
            continue;
        }
        if !inside {
            continue;
        }
        for field in ["AnonHugePages:", "FilePmdMapped:", "ShmemPmdMapped:"] {
            if let Some(rest) = line.strip_prefix(field) {
                let kib: u64 = rest.split_whitespace().next().unwrap().parse().unwrap();
                huge |= kib > 0;
            }
        }
    }
    huge
}

/// A file of `len` bytes written with `write(2)` and synced, so that its
/// pages are in the page cache (in large folios where the file system
/// does that).
fn written(scratch: &Scratch, name: &str, len: u64) -> std::path::PathBuf {
    let path = scratch.path(name);
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, data).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    path
}

#[tokio::test]
async fn is_hugepage_backed_agrees_with_smaps() {
    let scratch = Scratch::new();
    for (name, huge_pages) in [("advised", true), ("plain", false)] {
        let path = written(&scratch, name, 32 * MIB);
        let file = MappedFile::options()
            .huge_pages(huge_pages)
            .open(&path)
            .await
            .unwrap();
        file.prewarm(0, file.len()).await.unwrap();
        let ours = file.is_hugepage_backed().await.unwrap();
        let smaps = smaps_says_huge(&path);
        println!("{name}: is_hugepage_backed {ours}, smaps {smaps}");
        assert_eq!(ours, smaps, "{name}");
        // Still true after a grow, for the new generation.
        file.resize(64 * MIB).await.unwrap();
        file.prewarm(0, file.len()).await.unwrap();
        assert_eq!(
            file.is_hugepage_backed().await.unwrap(),
            smaps_says_huge(&path),
            "{name} after a grow"
        );
    }
}

#[tokio::test]
async fn mappings_smaller_than_a_huge_page_are_never_backed_by_one() {
    let scratch = Scratch::new();
    for len in [0, 4096, MIB] {
        let path = written(&scratch, &format!("small-{len}"), len);
        let file = MappedFile::options()
            .huge_pages(true)
            .open(&path)
            .await
            .unwrap();
        file.prewarm(0, len).await.unwrap();
        assert!(!file.is_hugepage_backed().await.unwrap(), "{len} bytes");
    }
    let anonymous = MappedFile::anonymous(4096).await.unwrap();
    assert!(!anonymous.is_hugepage_backed().await.unwrap());
}

#[tokio::test]
#[ignore = "child of every_generation_of_every_open_that_asks_is_advised_once"]
async fn child_huge_pages() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let path = Path::new(&dir).join("f");
    let huge = || {
        let mut opts = MappedFile::options();
        opts.huge_pages(true);
        opts
    };
    let a = huge().create(true).len(4 * MIB).open(&path).await.unwrap();
    let b = huge().open(&path).await.unwrap(); // joins a's actor
    let c = MappedFile::open_rw(&path).await.unwrap(); // did not ask
    a.resize(8 * MIB).await.unwrap();
    c.resize(16 * MIB).await.unwrap();
    assert_eq!(b.len(), 16 * MIB);
    println!("child done");
}

#[test]
fn every_generation_of_every_open_that_asks_is_advised_once() {
    if !common::have("strace") {
        common::child::skip("every_generation_of_every_open_that_asks", "no strace");
        return;
    }
    let scratch = Scratch::new();
    let log = scratch.path("strace.log");
    let (status, output) = common::rerun(
        "child_huge_pages",
        &[
            "strace",
            "-f",
            "-e",
            "trace=madvise",
            "-o",
            log.to_str().unwrap(),
        ],
        &[(CHILD_ENV, scratch.dir.path().display().to_string())],
    );
    assert!(
        status.success() && output.contains("child done"),
        "{output}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lengths: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("MADV_HUGEPAGE") && !l.contains("resumed>"))
        .map(|l| {
            let len = l.split(',').nth(1).unwrap().trim();
            len.parse().unwrap()
        })
        .collect();
    lengths.sort_unstable();
    // a and b (not c): at 4 MiB (a's map, b's join), 8 MiB and 16 MiB.
    assert_eq!(
        lengths,
        [4, 4, 8, 8, 16, 16].map(|m| m * MIB).to_vec(),
        "MADV_HUGEPAGE calls by length"
    );
}
