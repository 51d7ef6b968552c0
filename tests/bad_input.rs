//! The bad-input table: every call on a mapping, fed out-of-range,
//! overflowing (`u64::MAX`), zero-length, misaligned and wrong-mode input,
//! or called after `close()`, returns the documented typed error (variant
//! *and* fields) and never panics; the mapping keeps working afterwards.
//! Bad paths, empty files and permission denied are in `bad_paths.rs`.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::expect::{check, misaligned, oob, Want};
use common::Scratch;
use mmap_actor::{Error, MappedFile, Mode, Result};

const L: u64 = 4096;

/// One call under test, its result reduced to `Result<()>`.
type Outcome<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;
type Call = for<'a> fn(&'a MappedFile, u64, u64) -> Outcome<'a>;

/// A named row of a call table: `call!("load", |f, offset, len| f.load(offset, len))`.
macro_rules! call {
    ($name:literal, |$f:ident, $a:ident, $b:ident| $body:expr) => {{
        fn call<'a>($f: &'a MappedFile, $a: u64, $b: u64) -> Outcome<'a> {
            let _ = ($a, $b);
            Box::pin(async move { $body.await.map(drop) })
        }
        ($name, call as Call)
    }};
}

/// Calls taking `(offset, len)` that only read.
fn read_calls() -> Vec<(&'static str, Call)> {
    vec![
        call!("load", |f, o, l| f.load(o, l)),
        call!("try_load", |f, o, l| f.try_load(o, l)),
        call!("segment", |f, o, l| f.segment(o, l)),
        call!("try_segment", |f, o, l| f.try_segment(o, l)),
        call!("prewarm", |f, o, l| f.prewarm(o, l)),
    ]
}

/// Calls taking `(offset, len)` that write (an update carries its length
/// in its data: fed only lengths that can be allocated).
fn write_calls() -> Vec<(&'static str, Call)> {
    vec![
        call!("segment_mut", |f, o, l| f.segment_mut(o, l)),
        call!("try_segment_mut", |f, o, l| f.try_segment_mut(o, l)),
        call!("modify", |f, o, l| f.modify(o, l, |b| b.fill(0xA5))),
        call!("update", |f, o, l| f
            .update(o, vec![0xA5u8; l.min(L + 1) as usize])),
        call!("try_update", |f, o, l| f
            .try_update(o, vec![0xA5u8; l.min(L + 1) as usize])),
    ]
}

/// The ranges every range-taking call is fed, with whether they are valid
/// for a file of `L` bytes.
fn ranges() -> Vec<(u64, u64, bool)> {
    vec![
        (0, 0, true),
        (0, L, true),
        (L, 0, true),
        (L - 1, 1, true),
        (L + 1, 0, false),
        (L, 1, false),
        (L - 1, 2, false),
        (0, L + 1, false),
        (u64::MAX, 0, false),
        (u64::MAX, 1, false),
        (1, u64::MAX, false),
        (u64::MAX, u64::MAX, false),
        // The end is exactly 2^64: overflows by one.
        (L / 2, u64::MAX - L / 2 + 1, false),
        (u64::MAX - 10, 11, false),
    ]
}

/// Feeds `calls` every range of [`ranges`] on `file` (of `L` bytes).
async fn range_table(file: &MappedFile, calls: &[(&'static str, Call)]) {
    for (offset, len, valid) in ranges() {
        for (name, call) in calls {
            // Updates of unallocatable lengths are left out.
            if name.ends_with("update") && len > L + 1 {
                continue;
            }
            let want = if valid { Want::Ok } else { oob(offset, len, L) };
            check(
                &format!("{name}({offset}, {len})"),
                call(file, offset, len).await,
                want,
            );
        }
    }
}

/// Valid ranges give exactly the bytes asked for.
async fn valid_lengths(file: &MappedFile, writable: bool) {
    for (offset, len, _) in ranges().into_iter().filter(|r| r.2) {
        assert_eq!(file.load(offset, len).await.unwrap().len() as u64, len);
        assert_eq!(file.segment(offset, len).await.unwrap().len() as u64, len);
        if writable {
            assert_eq!(
                file.segment_mut(offset, len).await.unwrap().len() as u64,
                len
            );
            let seen = Arc::new(AtomicU64::new(u64::MAX));
            let record = Arc::clone(&seen);
            file.modify(offset, len, move |b| {
                record.store(b.len() as u64, Ordering::SeqCst)
            })
            .await
            .unwrap();
            assert_eq!(
                seen.load(Ordering::SeqCst),
                len,
                "modify({offset}, {len}) closure"
            );
        }
    }
    // The closure of a refused modify never runs.
    let ran = Arc::new(AtomicU64::new(0));
    let record = Arc::clone(&ran);
    if writable {
        let got = file.modify(L, 1, move |_| {
            record.fetch_add(1, Ordering::SeqCst);
        });
        check("modify(L, 1)", got.await, oob(L, 1, L));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}

/// Atomic calls: `(offset, count)`; the single views ignore `count`.
fn atomic_calls(width: u64) -> Vec<(&'static str, Call)> {
    if width == 4 {
        vec![
            call!("atomic_u32", |f, o, _n| f.atomic_u32(o)),
            call!("try_atomic_u32", |f, o, _n| f.try_atomic_u32(o)),
        ]
    } else {
        vec![
            call!("atomic_u64", |f, o, _n| f.atomic_u64(o)),
            call!("try_atomic_u64", |f, o, _n| f.try_atomic_u64(o)),
        ]
    }
}

fn atomic_slice_calls(width: u64) -> Vec<(&'static str, Call)> {
    if width == 4 {
        vec![
            call!("atomic_u32_slice", |f, o, n| f.atomic_u32_slice(o, n)),
            call!("try_atomic_u32_slice", |f, o, n| f
                .try_atomic_u32_slice(o, n)),
        ]
    } else {
        vec![
            call!("atomic_u64_slice", |f, o, n| f.atomic_u64_slice(o, n)),
            call!("try_atomic_u64_slice", |f, o, n| f
                .try_atomic_u64_slice(o, n)),
        ]
    }
}

/// Every atomic call with aligned, misaligned, out-of-range and overflowing
/// offsets and counts on a mapping of `L` bytes.
async fn atomic_table(file: &MappedFile) {
    for w in [4u64, 8] {
        // A multiple of `w` whose end overflows.
        let top = u64::MAX - (w - 1);
        let singles = [
            (0, Want::Ok),
            (L - w, Want::Ok),
            (w / 2, misaligned(w / 2, w)),
            (L - w + 1, misaligned(L - w + 1, w)),
            // Alignment is checked before bounds.
            (L + w / 2, misaligned(L + w / 2, w)),
            (u64::MAX, misaligned(u64::MAX, w)),
            (L, oob(L, w, L)),
            (L + w, oob(L + w, w, L)),
            (top, oob(top, w, L)),
        ];
        for (offset, want) in singles {
            for (name, call) in atomic_calls(w) {
                check(
                    &format!("{name}({offset})"),
                    call(file, offset, 0).await,
                    want,
                );
            }
        }
        let slices = [
            (0, L / w, Want::Ok),
            (0, 0, Want::Ok),
            (L, 0, Want::Ok),
            (0, L / w + 1, oob(0, L + w, L)),
            (w, L / w, oob(w, L, L)),
            (w / 2, 1, misaligned(w / 2, w)),
            // `count * width` overflows: the length is reported as u64::MAX.
            (0, u64::MAX, oob(0, u64::MAX, L)),
            (0, u64::MAX / w + 1, oob(0, u64::MAX, L)),
            (top, 1, oob(top, w, L)),
        ];
        for (offset, count, want) in slices {
            for (name, call) in atomic_slice_calls(w) {
                check(
                    &format!("{name}({offset}, {count})"),
                    call(file, offset, count).await,
                    want,
                );
            }
        }
    }
    // Slices have the asked number of elements.
    assert_eq!(
        file.atomic_u32_slice(0, L / 4).await.unwrap().len() as u64,
        L / 4
    );
    assert_eq!(file.atomic_u64_slice(8, 3).await.unwrap().len(), 3);
    assert_eq!(file.atomic_u64_slice(L, 0).await.unwrap().len(), 0);
}

#[tokio::test]
async fn ranges_and_atomics_on_a_read_write_mapping() {
    let scratch = Scratch::new();
    let file = scratch.file("rw", L).await;
    range_table(&file, &read_calls()).await;
    range_table(&file, &write_calls()).await;
    range_table(
        &file,
        &[call!("flush_range", |f, o, l| f.flush_range(o, l))],
    )
    .await;
    atomic_table(&file).await;
    valid_lengths(&file, true).await;
    // Refusals changed nothing: the valid writes put 0xA5 over the whole
    // file (`(0, L)`), and the length is the same.
    assert_eq!(file.len(), L);
    let bytes = file.load(0, L).await.unwrap();
    assert!(
        bytes.iter().all(|&b| b == 0xA5),
        "content changed by a refused call"
    );
    file.close().await.unwrap();
    assert_eq!(std::fs::metadata(scratch.path("rw")).unwrap().len(), L);
}

#[tokio::test]
async fn ranges_and_atomics_on_a_copy_on_write_mapping() {
    let scratch = Scratch::new();
    let path = scratch.path("cow");
    std::fs::write(&path, vec![7u8; L as usize]).unwrap();
    let file = MappedFile::open_cow(&path).await.unwrap();
    range_table(&file, &read_calls()).await;
    range_table(&file, &write_calls()).await;
    atomic_table(&file).await;
    valid_lengths(&file, true).await;
    // Private writes are visible through the mapping, never in the file.
    assert!(file.load(0, L).await.unwrap().iter().all(|&b| b == 0xA5));
    file.flush().await.unwrap();
    file.close().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; L as usize]);
}

#[tokio::test]
async fn ranges_on_a_read_only_mapping() {
    let scratch = Scratch::new();
    let path = scratch.path("ro");
    std::fs::write(&path, vec![3u8; L as usize]).unwrap();
    let file = MappedFile::open_ro(&path).await.unwrap();
    range_table(&file, &read_calls()).await;
    valid_lengths(&file, false).await;
    assert!(file.load(0, L).await.unwrap().iter().all(|&b| b == 3));
}

/// `flush_range` is documented to fail with `OutOfBounds` (besides the
/// errors of `flush`, which is an `Ok` no-op on read-only and copy-on-write
/// mappings): the range is checked in every mode.
#[tokio::test]
async fn flush_range_checks_bounds_in_every_mode() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    std::fs::write(&path, vec![0u8; L as usize]).unwrap();
    for file in [
        MappedFile::open_ro(&path).await.unwrap(),
        MappedFile::open_cow(&path).await.unwrap(),
    ] {
        range_table(
            &file,
            &[call!("flush_range", |f, o, l| f.flush_range(o, l))],
        )
        .await;
    }
}

/// Every writing call on a read-only mapping, and resizing a copy-on-write
/// one, is refused with `ReadOnly` naming the operation and the mode.
#[tokio::test]
async fn wrong_mode_is_refused() {
    let scratch = Scratch::new();
    let path = scratch.path("data");
    std::fs::write(&path, vec![1u8; L as usize]).unwrap();

    // (call, the `op` it must name); arguments are in range.
    let writers = vec![
        (
            call!("update", |f, o, _l| f.update(o, vec![9u8; 4])),
            "update",
        ),
        (
            call!("try_update", |f, o, _l| f.try_update(o, vec![9u8; 4])),
            "update",
        ),
        (
            call!("modify", |f, o, l| f.modify(o, l, |b| b.fill(9))),
            "modify",
        ),
        (call!("resize grow", |f, _o, _l| f.resize(2 * L)), "resize"),
        (call!("resize shrink", |f, _o, _l| f.resize(8)), "resize"),
        (
            call!("try_resize", |f, _o, _l| f.try_resize(2 * L)),
            "resize",
        ),
        (
            call!("segment_mut", |f, o, l| f.segment_mut(o, l)),
            "segment_mut",
        ),
        (
            call!("try_segment_mut", |f, o, l| f.try_segment_mut(o, l)),
            "segment_mut",
        ),
        (
            call!("atomic_u32", |f, o, _l| f.atomic_u32(o)),
            "atomic_u32",
        ),
        (
            call!("try_atomic_u32", |f, o, _l| f.try_atomic_u32(o)),
            "atomic_u32",
        ),
        (
            call!("atomic_u64", |f, o, _l| f.atomic_u64(o)),
            "atomic_u64",
        ),
        (
            call!("try_atomic_u64", |f, o, _l| f.try_atomic_u64(o)),
            "atomic_u64",
        ),
        (
            call!("atomic_u32_slice", |f, o, _l| f.atomic_u32_slice(o, 2)),
            "atomic_u32_slice",
        ),
        (
            call!("try_atomic_u32_slice", |f, o, _l| f
                .try_atomic_u32_slice(o, 2)),
            "atomic_u32_slice",
        ),
        (
            call!("atomic_u64_slice", |f, o, _l| f.atomic_u64_slice(o, 2)),
            "atomic_u64_slice",
        ),
        (
            call!("try_atomic_u64_slice", |f, o, _l| f
                .try_atomic_u64_slice(o, 2)),
            "atomic_u64_slice",
        ),
    ];
    let allowed = vec![
        call!("flush", |f, _o, _l| f.flush()),
        call!("flush_range", |f, o, l| f.flush_range(o, l)),
        call!("load", |f, o, l| f.load(o, l)),
        call!("segment", |f, o, l| f.segment(o, l)),
        call!("prewarm", |f, o, l| f.prewarm(o, l)),
    ];
    let ro = MappedFile::open_ro(&path).await.unwrap();
    assert_eq!(ro.mode(), Mode::ReadOnly);
    for ((name, call), op) in &writers {
        let want = Want::ReadOnly {
            op,
            mode: Mode::ReadOnly,
        };
        check(&format!("read-only {name}"), call(&ro, 16, 8).await, want);
    }
    for (name, call) in &allowed {
        check(
            &format!("read-only {name}"),
            call(&ro, 16, 8).await,
            Want::Ok,
        );
    }
    assert_eq!(ro.len(), L);
    ro.close().await.unwrap();

    let cow = MappedFile::open_cow(&path).await.unwrap();
    for ((name, call), op) in &writers {
        let want = if *op == "resize" {
            Want::ReadOnly {
                op,
                mode: Mode::CopyOnWrite,
            }
        } else {
            Want::Ok
        };
        check(
            &format!("copy-on-write {name}"),
            call(&cow, 16, 8).await,
            want,
        );
    }
    for (name, call) in &allowed {
        check(
            &format!("copy-on-write {name}"),
            call(&cow, 16, 8).await,
            Want::Ok,
        );
    }
    assert_eq!(cow.len(), L);
    cow.close().await.unwrap();
    // Nothing reached the file.
    assert_eq!(std::fs::read(&path).unwrap(), vec![1u8; L as usize]);

    // Builder options that write are refused for read-only and
    // copy-on-write opens, before anything touches the file.
    for mode in [Mode::ReadOnly, Mode::CopyOnWrite] {
        let refused = Want::ReadOnly {
            op: "create or truncate",
            mode,
        };
        let mut opts = MappedFile::options();
        opts.mode(mode);
        check(
            "create",
            opts.clone().create(true).open(&path).await,
            refused,
        );
        let never = scratch.path("never");
        check(
            "create_new",
            opts.clone().create_new(true).open(&never).await,
            refused,
        );
        check(
            "truncate",
            opts.clone().truncate(true).open(&path).await,
            refused,
        );
        let want = Want::ReadOnly {
            op: "set length",
            mode,
        };
        check("len", opts.clone().len(2 * L).open(&path).await, want);
        // Asking for the length the file already has changes nothing.
        check("same len", opts.clone().len(L).open(&path).await, Want::Ok);
    }
    assert!(!scratch.path("never").exists());
    assert_eq!(std::fs::read(&path).unwrap(), vec![1u8; L as usize]);
}

/// After `close()`, every call on every handle fails with `Closed`.
#[tokio::test]
async fn closed_mapping_refuses_everything() {
    let scratch = Scratch::new();
    let file = scratch.file("closed", L).await;
    let clone = file.clone();
    file.close().await.unwrap();
    let calls = [
        read_calls(),
        write_calls(),
        atomic_calls(4),
        atomic_calls(8),
        atomic_slice_calls(4),
        atomic_slice_calls(8),
        vec![
            call!("flush", |f, _o, _l| f.flush()),
            call!("flush_range", |f, o, l| f.flush_range(o, l)),
            call!("resize", |f, _o, _l| f.resize(2 * L)),
            call!("try_resize", |f, _o, _l| f.try_resize(8)),
            call!("close", |f, _o, _l| f.close()),
        ],
    ]
    .concat();
    for h in [&file, &clone] {
        assert!(h.is_closed());
        for (name, call) in &calls {
            check(
                &format!("{name} after close"),
                call(h, 8, 8).await,
                Want::Closed,
            );
        }
    }
    // Out-of-range input to a closed mapping is still an error, of either
    // kind, and never a panic.
    assert!(file.load(u64::MAX, u64::MAX).await.is_err());

    let ro = MappedFile::open_ro(scratch.path("closed")).await.unwrap();
    ro.close().await.unwrap();
    check(
        "read-only flush after close",
        ro.flush().await,
        Want::Closed,
    );
    check(
        "read-only load after close",
        ro.load(0, 1).await,
        Want::Closed,
    );
}

/// A channel capacity of zero is raised to one; the mapping works.
#[tokio::test]
async fn zero_channel_capacity_is_usable() {
    let scratch = Scratch::new();
    let file = MappedFile::options()
        .create(true)
        .len(L)
        .channel_capacity(0)
        .open(scratch.path("cap"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let f = file.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..16u64 {
                f.update(i * 64 + j, vec![i as u8 + 1]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..8u64 {
        assert_eq!(file.load(i * 64, 16).await.unwrap()[..], [i as u8 + 1; 16]);
    }
    file.close().await.unwrap();
}

/// A zero-length range touches no bytes, so no lease conflicts with it:
/// requests for one inside a held exclusive range do not wait.
#[tokio::test]
async fn zero_length_requests_never_conflict() {
    let scratch = Scratch::new();
    let file = scratch.file("zero", L).await;
    let held = file.segment_mut(0, 16).await.unwrap();
    for offset in [0, 8, 16] {
        check(
            &format!("try_load({offset}, 0)"),
            file.try_load(offset, 0).await,
            Want::Ok,
        );
        check(
            &format!("try_segment({offset}, 0)"),
            file.try_segment(offset, 0).await,
            Want::Ok,
        );
        check(
            &format!("try_segment_mut({offset}, 0)"),
            file.try_segment_mut(offset, 0).await,
            Want::Ok,
        );
        check(
            &format!("try_update({offset}, [])"),
            file.try_update(offset, Vec::new()).await,
            Want::Ok,
        );
        check(
            &format!("try_atomic_u64_slice({offset}, 0)"),
            file.try_atomic_u64_slice(offset, 0).await,
            Want::Ok,
        );
    }
    drop(held);
    file.close().await.unwrap();
}

/// A refused `try_` call names the call that was refused.
#[tokio::test]
async fn conflict_names_the_refused_call() {
    let scratch = Scratch::new();
    let file = scratch.file("conflict", L).await;
    let held = file.segment_mut(0, 64).await.unwrap();
    let conflict = |op| (op, 8u64, 8u64);
    let name = |got: Result<()>| match got {
        Err(Error::Conflict { op, offset, len }) => Some((op, offset, len)),
        _ => None,
    };
    assert_eq!(
        name(file.try_update(8, vec![0u8; 8]).await),
        Some(conflict("update"))
    );
    assert_eq!(
        name(file.try_load(8, 8).await.map(drop)),
        Some(conflict("load"))
    );
    assert_eq!(
        name(file.try_segment(8, 8).await.map(drop)),
        Some(conflict("segment"))
    );
    assert_eq!(
        name(file.try_segment_mut(8, 8).await.map(drop)),
        Some(conflict("segment_mut"))
    );
    assert_eq!(
        name(file.try_atomic_u64(8).await.map(drop)),
        Some(conflict("atomic_u64"))
    );
    drop(held);
}
