//! `advise` and `schedule_flush`: every advice is accepted and changes no
//! byte (dirty bytes included); `DontNeed` is refused where it would
//! discard private bytes; each call issues the syscall it is for, on the
//! right pages (seen with `strace` in a child), and none where it is a
//! no-op.

mod common;

use std::path::PathBuf;

use common::{Scratch, SplitMix};
use mmap_actor::{Advice, Error, MappedFile, Mode};

const LEN: u64 = 256 * 1024;
const CHILD_ENV: &str = "MMAP_ACTOR_HINTS_DIR";

const ADVICES: [Advice; 5] = [
    Advice::Normal,
    Advice::Sequential,
    Advice::Random,
    Advice::WillNeed,
    Advice::DontNeed,
];

fn pattern() -> Vec<u8> {
    SplitMix::bytes(0xad51, LEN as usize)
}

async fn filled(scratch: &Scratch, name: &str) -> MappedFile {
    let file = scratch.file(name, LEN).await;
    file.update(0, pattern()).await.unwrap();
    file
}

#[tokio::test]
async fn every_advice_is_accepted_and_changes_no_byte() {
    let scratch = Scratch::new();
    let file = filled(&scratch, "advised").await;
    // Not flushed: DontNeed must keep dirty bytes (they stay in the page
    // cache).
    for advice in ADVICES {
        for (offset, len) in [
            (0, LEN),
            (1, 1),
            (4095, 2),
            (4097, 8191),
            (LEN - 1, 1),
            (LEN, 0),
        ] {
            file.advise(offset, len, advice)
                .await
                .unwrap_or_else(|e| panic!("advise({offset}, {len}, {advice:?}): {e:?}"));
        }
        assert_eq!(
            &file.load(0, LEN).await.unwrap()[..],
            &pattern()[..],
            "{advice:?} changed bytes"
        );
    }
    // Leases do not stop advice (it changes no byte), nor does advice stop
    // them.
    let seg = file.segment_mut(8192, 4096).await.unwrap();
    let counter = file.atomic_u64(64).await.unwrap();
    for advice in ADVICES {
        file.advise(0, LEN, advice).await.unwrap();
    }
    drop((seg, counter));
    assert_eq!(&file.load(0, LEN).await.unwrap()[..], &pattern()[..]);
}

#[tokio::test]
async fn dont_need_is_refused_where_it_would_discard_private_bytes() {
    let scratch = Scratch::new();
    let path = scratch.path("cow");
    std::fs::write(&path, pattern()).unwrap();

    let cow = MappedFile::open_cow(&path).await.unwrap();
    cow.update(0, vec![0xEE; 4096]).await.unwrap();
    match cow.advise(0, 4096, Advice::DontNeed).await {
        Err(Error::WouldDiscard { op, mapping }) => {
            assert_eq!(op, "advise(DontNeed)");
            assert_eq!(mapping, "a writable copy-on-write mapping");
        }
        other => panic!("DontNeed on copy-on-write: {other:?}"),
    }
    // The refusal comes before the range check (mode before bounds).
    assert!(matches!(
        cow.advise(LEN, 1, Advice::DontNeed).await,
        Err(Error::WouldDiscard { .. })
    ));
    for advice in &ADVICES[..4] {
        cow.advise(0, LEN, *advice).await.unwrap();
    }
    let bytes = cow.load(0, LEN).await.unwrap();
    assert!(
        bytes[..4096].iter().all(|b| *b == 0xEE),
        "private bytes lost"
    );
    assert_eq!(&bytes[4096..], &pattern()[4096..]);

    // A read-only copy-on-write mapping has no private bytes to lose.
    let read_only = MappedFile::options()
        .mode(Mode::CopyOnWrite)
        .cow_writable(false)
        .open(&path)
        .await
        .unwrap();
    read_only.advise(0, LEN, Advice::DontNeed).await.unwrap();
    assert_eq!(&read_only.load(0, LEN).await.unwrap()[..], &pattern()[..]);

    let anonymous = MappedFile::anonymous(LEN).await.unwrap();
    anonymous.update(0, pattern()).await.unwrap();
    match anonymous.advise(0, LEN, Advice::DontNeed).await {
        Err(Error::WouldDiscard { mapping, .. }) => assert_eq!(mapping, "an anonymous mapping"),
        other => panic!("DontNeed on an anonymous mapping: {other:?}"),
    }
    for advice in &ADVICES[..4] {
        anonymous.advise(0, LEN, *advice).await.unwrap();
    }
    assert_eq!(&anonymous.load(0, LEN).await.unwrap()[..], &pattern()[..]);

    // Read-only and read-write shared mappings take it.
    let ro = MappedFile::open_ro(&path).await.unwrap();
    ro.advise(0, LEN, Advice::DontNeed).await.unwrap();
    assert_eq!(&ro.load(0, LEN).await.unwrap()[..], &pattern()[..]);
}

#[tokio::test]
async fn dont_need_on_locked_pages_is_an_io_error() {
    let scratch = Scratch::new();
    let file = filled(&scratch, "locked").await;
    file.lock(0, 4096).await.unwrap();
    match file.advise(0, 4096, Advice::DontNeed).await {
        Err(err @ Error::Io { op: "madvise", .. }) => {
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL))
        }
        other => panic!("DontNeed on locked pages: {other:?}"),
    }
    file.unlock_all().await.unwrap();
    file.advise(0, 4096, Advice::DontNeed).await.unwrap();
}

fn child_dir() -> Option<PathBuf> {
    std::env::var_os(CHILD_ENV).map(Into::into)
}

/// Runs the child test `name` under `strace -f -y -e trace=<syscalls>` and
/// returns the lines of its log, or `None` (skipped) without strace.
fn traced(name: &str, syscalls: &str) -> Option<Vec<String>> {
    if !common::have("strace") {
        common::child::skip(name, "strace is not installed");
        return None;
    }
    let scratch = Scratch::new();
    let log = scratch.path("strace.log");
    let (status, output) = common::rerun(
        name,
        &[
            "strace",
            "-f",
            "-y",
            "-e",
            &format!("trace={syscalls}"),
            "-o",
            log.to_str().unwrap(),
        ],
        &[(CHILD_ENV, scratch.dir.path().display().to_string())],
    );
    assert!(
        status.success() && output.contains("child done"),
        "child failed: {output}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    Some(text.lines().map(str::to_string).collect())
}

/// The calls of `syscall` in an strace log that name `needle` (a path or
/// an advice), without the resumption halves of interrupted calls.
fn calls<'a>(lines: &'a [String], syscall: &str, needle: &str) -> Vec<&'a str> {
    lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains(&format!("{syscall}(")) && l.contains(needle))
        .filter(|l| !l.contains("resumed>"))
        .collect()
}

/// The address an strace line passes as the first argument.
fn address(line: &str) -> u64 {
    let args = &line[line.find('(').unwrap() + 1..];
    let first = args.split(',').next().unwrap().trim();
    u64::from_str_radix(first.trim_start_matches("0x"), 16).unwrap()
}

#[tokio::test]
#[ignore = "child of advise_issues_one_madvise_per_call_on_whole_pages"]
async fn child_advise() {
    let Some(dir) = child_dir() else { return };
    // Made outside the library: a file it creates has its fresh bytes
    // advised `Random` once (tests/read_ahead.rs), which would blur the
    // count below.
    std::fs::File::create(dir.join("f"))
        .and_then(|f| f.set_len(LEN))
        .unwrap();
    let file = MappedFile::open_rw(dir.join("f")).await.unwrap();
    // Markers the runtime and allocator never use.
    for _ in 0..5 {
        file.advise(0, LEN, Advice::Random).await.unwrap();
    }
    file.advise(4097, 4096, Advice::Sequential).await.unwrap();
    // No syscall: an empty range, a bad one, a refused advice.
    file.advise(100, 0, Advice::Sequential).await.unwrap();
    file.advise(LEN, 1, Advice::Sequential).await.unwrap_err();
    let cow = MappedFile::open_cow(dir.join("f")).await.unwrap();
    cow.advise(0, LEN, Advice::DontNeed).await.unwrap_err();
    println!("child done");
}

#[test]
fn advise_issues_one_madvise_per_call_on_whole_pages() {
    let Some(lines) = traced("child_advise", "madvise") else {
        return;
    };
    let random = calls(&lines, "madvise", "MADV_RANDOM");
    assert_eq!(random.len(), 5, "five advise(Random) calls: {random:#?}");
    for line in &random {
        assert!(line.contains(&format!(", {LEN}, MADV_RANDOM)")), "{line}");
        assert_eq!(address(line) % 4096, 0, "unaligned: {line}");
    }
    // 4097..8193 widened to the page at 4096: 4097 bytes from there.
    let sequential = calls(&lines, "madvise", "MADV_SEQUENTIAL");
    assert_eq!(sequential.len(), 1, "{sequential:#?}");
    assert!(
        sequential[0].contains(", 4097, MADV_SEQUENTIAL)"),
        "{}",
        sequential[0]
    );
    assert_eq!(address(sequential[0]) % 4096, 0);
    assert_eq!(
        address(sequential[0]) - address(random[0]),
        4096,
        "the advice starts at the page of offset 4097"
    );
}

#[tokio::test]
#[ignore = "child of schedule_flush_issues_sync_file_range_and_only_where_it_means_something"]
async fn child_schedule_flush() {
    let Some(dir) = child_dir() else { return };
    let path = dir.join("f");
    let file = MappedFile::create(&path, LEN).await.unwrap();
    file.update(0, pattern()).await.unwrap();
    file.schedule_flush().await.unwrap();
    file.schedule_flush_range(4096, 100).await.unwrap();
    // No syscall: empty and bad ranges, and mappings with nothing to write.
    file.schedule_flush_range(4096, 0).await.unwrap();
    file.schedule_flush_range(LEN, 1).await.unwrap_err();
    let ro = MappedFile::open_ro(&path).await.unwrap();
    ro.schedule_flush().await.unwrap();
    let cow = MappedFile::open_cow(&path).await.unwrap();
    cow.update(0, vec![1u8; 10]).await.unwrap();
    cow.schedule_flush().await.unwrap();
    cow.schedule_flush_range(0, 10).await.unwrap();
    let anonymous = MappedFile::anonymous(LEN).await.unwrap();
    anonymous.update(0, vec![1u8; 10]).await.unwrap();
    anonymous.schedule_flush().await.unwrap();
    anonymous.schedule_flush_range(0, 10).await.unwrap();
    println!("child done");
}

#[test]
fn schedule_flush_issues_sync_file_range_and_only_where_it_means_something() {
    let Some(lines) = traced(
        "child_schedule_flush",
        "sync_file_range,fdatasync,fsync,msync",
    ) else {
        return;
    };
    let all = calls(&lines, "sync_file_range", "");
    assert_eq!(all.len(), 2, "two calls on the read-write file: {all:#?}");
    assert!(
        all[0].contains(&format!(", 0, {LEN}, SYNC_FILE_RANGE_WRITE)")),
        "{}",
        all[0]
    );
    assert!(
        all[1].contains(", 4096, 100, SYNC_FILE_RANGE_WRITE)"),
        "{}",
        all[1]
    );
    for line in &all {
        assert!(line.contains("/f>"), "on the file: {line}");
    }
    // Not a durable flush: no sync of the data after the creation's two
    // (the length's fdatasync and the directory's fsync).
    let syncs = calls(&lines, "fdatasync", "");
    assert_eq!(syncs.len(), 1, "{syncs:#?}");
    assert!(calls(&lines, "msync", "").is_empty());
}
