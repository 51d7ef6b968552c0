//! Zero-length views: every call that can produce an empty view or copy —
//! segments, exclusive segments, zero-count atomic slices, loads, updates,
//! `modify`, `flush_range`, `prewarm` of length 0 — at offset 0, at an
//! aligned offset inside the file and at `len()`, on empty and non-empty
//! files in every mode, before and after resizes (to 0 and back up, to a
//! length that is not a multiple of 8).
//!
//! Each returns `Ok` or its documented error (mode, then alignment, then
//! bounds), and a zero-count atomic slice is aligned for its element type
//! even when the mapping has no bytes at all: a misaligned `&[AtomicU64]`,
//! even an empty one, is undefined behaviour, and the library's debug
//! assertions catch it. These tests are meant to run in a debug build (the
//! default for `cargo test`), where those assertions are on.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::expect::{check, misaligned, oob, Want};
use common::Scratch;
use mmap_actor::{AtomicView, MappedFile, Mode};

/// Hang detector only.
const HANG: Duration = Duration::from_secs(10);

/// Address and length of a `[AtomicU64]` view. Dereferencing runs the
/// library's alignment assertion: a panic there is reported as the failure.
fn u64s(view: &AtomicView<[AtomicU64]>, what: &str) -> (usize, usize) {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let atomics: &[AtomicU64] = view;
        (atomics.as_ptr() as usize, atomics.len())
    }))
    .unwrap_or_else(|_| panic!("{what}: dereferencing the [AtomicU64] view panicked"))
}

/// As [`u64s`], for `[AtomicU32]`.
fn u32s(view: &AtomicView<[AtomicU32]>, what: &str) -> (usize, usize) {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let atomics: &[AtomicU32] = view;
        (atomics.as_ptr() as usize, atomics.len())
    }))
    .unwrap_or_else(|_| panic!("{what}: dereferencing the [AtomicU32] view panicked"))
}

fn assert_empty_u64s(view: &AtomicView<[AtomicU64]>, offset: u64, what: &str) {
    let (addr, len) = u64s(view, what);
    assert_eq!(len, 0, "{what}: a zero-count slice has elements");
    assert_eq!(
        addr % 8,
        0,
        "{what}: empty [AtomicU64] at {addr:#x} is misaligned"
    );
    assert_eq!(view.offset(), offset, "{what}: offset");
}

fn assert_empty_u32s(view: &AtomicView<[AtomicU32]>, offset: u64, what: &str) {
    let (addr, len) = u32s(view, what);
    assert_eq!(len, 0, "{what}: a zero-count slice has elements");
    assert_eq!(
        addr % 4,
        0,
        "{what}: empty [AtomicU32] at {addr:#x} is misaligned"
    );
    assert_eq!(view.offset(), offset, "{what}: offset");
}

/// The outcome a zero-count atomic slice of width `w` at `offset` must
/// have on `file`: mode, then alignment, then bounds.
fn atomic_want(file: &MappedFile, op: &'static str, offset: u64, w: u64) -> Want {
    if !file.mode().is_writable() {
        Want::ReadOnly {
            op,
            mode: file.mode(),
        }
    } else if offset % w != 0 {
        misaligned(offset, w)
    } else if offset > file.len() {
        oob(offset, 0, file.len())
    } else {
        Want::Ok
    }
}

/// Every zero-length call at `offset` (inside the file or at its end): all
/// succeed, or fail with the documented error, and produce empty, aligned
/// views.
async fn zero_length_at(file: &MappedFile, offset: u64, when: &str) {
    let writable = file.mode().is_writable();
    let at = |call: &str| {
        format!(
            "{when}: {call}({offset}, 0) on a {:?} mapping of {} bytes",
            file.mode(),
            file.len()
        )
    };

    let seg = file
        .segment(offset, 0)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:?}", at("segment")));
    assert!(seg.is_empty(), "{}", at("segment"));
    assert_eq!(seg.offset(), offset, "{}", at("segment"));
    assert!(seg.into_bytes().is_empty(), "{}", at("segment into_bytes"));
    check(
        &at("try_segment"),
        file.try_segment(offset, 0).await,
        Want::Ok,
    );

    match file.load(offset, 0).await {
        Ok(bytes) => assert!(bytes.is_empty(), "{}", at("load")),
        Err(e) => panic!("{}: {e:?}", at("load")),
    }
    check(&at("try_load"), file.try_load(offset, 0).await, Want::Ok);
    check(
        &at("flush_range"),
        file.flush_range(offset, 0).await,
        Want::Ok,
    );
    check(&at("prewarm"), file.prewarm(offset, 0).await, Want::Ok);

    if writable {
        let mut seg = file
            .segment_mut(offset, 0)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", at("segment_mut")));
        assert!(seg.is_empty(), "{}", at("segment_mut"));
        seg.fill(0xFF);
        drop(seg);
        check(
            &at("try_segment_mut"),
            file.try_segment_mut(offset, 0).await,
            Want::Ok,
        );
        check(
            &at("update"),
            file.update(offset, Vec::new()).await,
            Want::Ok,
        );
        check(
            &at("try_update"),
            file.try_update(offset, Vec::new()).await,
            Want::Ok,
        );
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let record = Arc::clone(&seen);
        check(
            &at("modify"),
            file.modify(offset, 0, move |b| record.store(b.len(), Ordering::SeqCst))
                .await,
            Want::Ok,
        );
        assert_eq!(seen.load(Ordering::SeqCst), 0, "{}: closure", at("modify"));
    } else {
        let ro = |op| Want::ReadOnly {
            op,
            mode: file.mode(),
        };
        check(
            &at("segment_mut"),
            file.segment_mut(offset, 0).await,
            ro("segment_mut"),
        );
        check(
            &at("update"),
            file.update(offset, Vec::new()).await,
            ro("update"),
        );
    }

    // Zero-count atomic slices.
    let want = atomic_want(file, "atomic_u64_slice", offset, 8);
    let got = file.atomic_u64_slice(offset, 0).await;
    if let Ok(view) = &got {
        assert_empty_u64s(view, offset, &at("atomic_u64_slice"));
    }
    check(&at("atomic_u64_slice"), got, want);
    let got = file.try_atomic_u64_slice(offset, 0).await;
    if let Ok(view) = &got {
        assert_empty_u64s(view, offset, &at("try_atomic_u64_slice"));
    }
    check(&at("try_atomic_u64_slice"), got, want);

    let want = atomic_want(file, "atomic_u32_slice", offset, 4);
    let got = file.atomic_u32_slice(offset, 0).await;
    if let Ok(view) = &got {
        assert_empty_u32s(view, offset, &at("atomic_u32_slice"));
    }
    check(&at("atomic_u32_slice"), got, want);
    let got = file.try_atomic_u32_slice(offset, 0).await;
    if let Ok(view) = &got {
        assert_empty_u32s(view, offset, &at("try_atomic_u32_slice"));
    }
    check(&at("try_atomic_u32_slice"), got, want);
}

/// The zero-length battery at 0, at 8 (when inside), at `len()`, and the
/// bounds just past the end.
async fn battery(file: &MappedFile, when: &str) {
    let len = file.len();
    let mut offsets = vec![0, len];
    if len >= 8 {
        offsets.push(8);
    }
    if len >= 16 {
        // An aligned offset in the middle.
        offsets.push((len / 2) & !7);
    }
    offsets.sort_unstable();
    offsets.dedup();
    for offset in offsets {
        zero_length_at(file, offset, when).await;
    }
    // Zero length one byte (and one element) past the end is out of bounds.
    let past = |call: &str, o: u64| format!("{when}: {call}({o}, 0) past the end of {len} bytes");
    check(
        &past("load", len + 1),
        file.load(len + 1, 0).await,
        oob(len + 1, 0, len),
    );
    check(
        &past("segment", len + 1),
        file.segment(len + 1, 0).await,
        oob(len + 1, 0, len),
    );
    let beyond = (len + 8) & !7;
    check(
        &past("atomic_u64_slice", beyond),
        file.atomic_u64_slice(beyond, 0).await,
        atomic_want(file, "atomic_u64_slice", beyond, 8),
    );
    check(
        &past("atomic_u32_slice", beyond),
        file.atomic_u32_slice(beyond, 0).await,
        atomic_want(file, "atomic_u32_slice", beyond, 4),
    );
    if file.mode().is_writable() {
        check(
            &past("segment_mut", len + 1),
            file.segment_mut(len + 1, 0).await,
            oob(len + 1, 0, len),
        );
        check(
            &past("update", len + 1),
            file.update(len + 1, Vec::new()).await,
            oob(len + 1, 0, len),
        );
    }
}

/// The exact case: `atomic_u64_slice(0, 0)` on a mapping of zero bytes.
#[tokio::test]
async fn zero_count_atomic_slices_of_an_empty_mapping_are_aligned() {
    let scratch = Scratch::new();
    let file = scratch.file("empty", 0).await;
    let view = file
        .atomic_u64_slice(0, 0)
        .await
        .expect("atomic_u64_slice(0, 0)");
    assert_empty_u64s(&view, 0, "atomic_u64_slice(0, 0) of an empty file");
    let view32 = file
        .atomic_u32_slice(0, 0)
        .await
        .expect("atomic_u32_slice(0, 0)");
    assert_empty_u32s(&view32, 0, "atomic_u32_slice(0, 0) of an empty file");
    drop((view, view32));

    // And after a shrink to zero.
    let file = scratch.file("shrunk", 4096).await;
    file.resize(0).await.expect("resize(0)");
    assert!(file.is_empty());
    let view = file
        .atomic_u64_slice(0, 0)
        .await
        .expect("atomic_u64_slice(0, 0)");
    assert_empty_u64s(&view, 0, "atomic_u64_slice(0, 0) after resize(0)");
    let view32 = file
        .atomic_u32_slice(0, 0)
        .await
        .expect("atomic_u32_slice(0, 0)");
    assert_empty_u32s(&view32, 0, "atomic_u32_slice(0, 0) after resize(0)");
}

/// The battery on one read-write mapping through a sequence of resizes:
/// empty, 8 bytes, a page, a length that is not a multiple of 8, back to
/// empty, and up again.
#[tokio::test]
async fn zero_length_calls_through_resizes() {
    let scratch = Scratch::new();
    let file = scratch.file("resized", 0).await;
    battery(&file, "created empty").await;
    for new_len in [8u64, 4096, 4100, 4, 0, 24, 0, 65536] {
        file.resize(new_len)
            .await
            .unwrap_or_else(|e| panic!("resize({new_len}): {e:?}"));
        assert_eq!(file.len(), new_len);
        battery(&file, &format!("after resize({new_len})")).await;
    }
    file.close().await.unwrap();
}

async fn opened(path: &Path, mode: Mode) -> MappedFile {
    MappedFile::options()
        .mode(mode)
        .open(path)
        .await
        .unwrap_or_else(|e| panic!("open {mode:?}: {e:?}"))
}

/// An existing empty file and a non-empty one, in every mode and through
/// `open_or_create`.
#[tokio::test]
async fn zero_length_calls_in_every_mode() {
    let scratch = Scratch::new();
    let empty = scratch.path("empty");
    std::fs::write(&empty, b"").unwrap();
    let full = scratch.path("full");
    std::fs::write(&full, vec![0x3Cu8; 4100]).unwrap();
    for mode in [Mode::ReadWrite, Mode::ReadOnly, Mode::CopyOnWrite] {
        for path in [&empty, &full] {
            let file = opened(path, mode).await;
            battery(&file, &format!("{mode:?} open of {}", path.display())).await;
            file.close().await.unwrap();
        }
    }
    let file = MappedFile::open_or_create(&empty, 0).await.unwrap();
    battery(&file, "open_or_create(empty, 0)").await;
    let file = MappedFile::open_or_create(scratch.path("new"), 0)
        .await
        .unwrap();
    battery(&file, "open_or_create(missing, 0)").await;
    // Zero-length calls changed no byte.
    assert_eq!(std::fs::read(&full).unwrap(), vec![0x3Cu8; 4100]);
}

/// Zero-length views taken on one generation stay empty and aligned across
/// grows and shrinks, and never hold up a shrink (they cover no byte).
#[tokio::test]
async fn zero_length_views_survive_resizes_and_never_block_a_shrink() {
    let scratch = Scratch::new();
    let file = scratch.file("held", 0).await;
    let on_empty = file
        .atomic_u64_slice(0, 0)
        .await
        .expect("on the empty mapping");
    let on_empty32 = file
        .atomic_u32_slice(0, 0)
        .await
        .expect("on the empty mapping");
    let seg_empty = file.segment(0, 0).await.expect("segment(0, 0)");
    file.resize(4096).await.unwrap();
    let at_end = file.atomic_u64_slice(4096, 0).await.expect("at len()");
    let seg_end = file.segment(4096, 0).await.expect("segment(len, 0)");
    let mut_end = file
        .segment_mut(4096, 0)
        .await
        .expect("segment_mut(len, 0)");
    let mid = file.atomic_u64_slice(8, 0).await.expect("at 8");
    // A shrink to zero overlaps none of them.
    tokio::time::timeout(HANG, file.resize(0))
        .await
        .expect("a shrink waited for zero-length views")
        .unwrap();
    tokio::time::timeout(HANG, file.resize(64))
        .await
        .expect("a grow hung")
        .unwrap();
    assert_empty_u64s(&on_empty, 0, "view of the empty generation after resizes");
    assert_empty_u32s(&on_empty32, 0, "view of the empty generation after resizes");
    assert_empty_u64s(&at_end, 4096, "view at the old end after the shrink");
    assert_empty_u64s(&mid, 8, "view at 8 after resizes");
    assert!(seg_empty.is_empty() && seg_end.is_empty() && mut_end.is_empty());
    // The file is usable with all of them alive.
    file.update(0, vec![1u8; 64]).await.unwrap();
    assert_eq!(file.load(0, 64).await.unwrap()[..], [1u8; 64]);
    drop((
        on_empty, on_empty32, seg_empty, at_end, seg_end, mut_end, mid,
    ));
    file.close().await.unwrap();
}

/// A zero-length lease inside a range held exclusively neither waits nor
/// makes others wait, and atomics of both widths can be empty side by side.
#[tokio::test]
async fn zero_length_views_inside_held_ranges() {
    let scratch = Scratch::new();
    let file = scratch.file("inside", 4096).await;
    let held = file.segment_mut(0, 64).await.unwrap();
    let inside = tokio::time::timeout(HANG, async {
        (
            file.atomic_u64_slice(8, 0)
                .await
                .expect("u64s inside a held range"),
            file.atomic_u32_slice(8, 0)
                .await
                .expect("u32s inside a held range"),
            file.segment(16, 0)
                .await
                .expect("segment inside a held range"),
            file.load(32, 0).await.expect("load inside a held range"),
        )
    })
    .await
    .expect("a zero-length request waited on a lease");
    assert_empty_u64s(&inside.0, 8, "u64s inside a held range");
    assert_empty_u32s(&inside.1, 8, "u32s inside a held range");
    drop(held);
    // Nothing real is held: the whole file can be taken at once.
    drop(file.try_segment_mut(0, 4096).await.expect("whole file"));
    drop(inside);
}
