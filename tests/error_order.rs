//! Error precedence: when a call has several faults, the error names the
//! first of **mode, then alignment, then bounds**. A write (or atomic view,
//! or resize) on a read-only mapping is `ReadOnly` whatever its range; a
//! misaligned atomic view is `Misaligned` whatever its range (an
//! overflowing count included); only then is the range checked.
//!
//! One table: every call that takes an offset and a length (or count), fed
//! every combination of faults, on read-write, read-only and copy-on-write
//! mappings. The expected error is computed from the faults present.

mod common;

use std::future::Future;
use std::pin::Pin;

use common::expect::{check, misaligned, oob, Want};
use common::Scratch;
use mmap_actor::{MappedFile, Mode, Result};

const L: u64 = 4096;

type Outcome<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;
type Call = for<'a> fn(&'a MappedFile, u64, u64) -> Outcome<'a>;

/// What a call does with its bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Reads only: allowed in every mode.
    Read,
    /// Writes: refused on read-only mappings.
    Write,
    /// An atomic view of this width; `single` ignores the count.
    Atomic { width: u64, single: bool },
}

struct Row {
    name: &'static str,
    /// The `op` a `ReadOnly` error names.
    op: &'static str,
    kind: Kind,
    call: Call,
}

macro_rules! row {
    ($name:literal, $op:literal, $kind:expr, |$f:ident, $a:ident, $b:ident| $body:expr) => {{
        fn call<'a>($f: &'a MappedFile, $a: u64, $b: u64) -> Outcome<'a> {
            let _ = ($a, $b);
            Box::pin(async move { $body.await.map(drop) })
        }
        Row {
            name: $name,
            op: $op,
            kind: $kind,
            call: call as Call,
        }
    }};
}

/// An update carries its length in its data: lengths that cannot be
/// allocated are cut to `L + 1` (still out of bounds).
fn update_len(len: u64) -> u64 {
    len.min(L + 1)
}

fn rows() -> Vec<Row> {
    use Kind::*;
    let a32 = Atomic {
        width: 4,
        single: true,
    };
    let a64 = Atomic {
        width: 8,
        single: true,
    };
    let s32 = Atomic {
        width: 4,
        single: false,
    };
    let s64 = Atomic {
        width: 8,
        single: false,
    };
    vec![
        row!("load", "load", Read, |f, o, l| f.load(o, l)),
        row!("try_load", "load", Read, |f, o, l| f.try_load(o, l)),
        row!("segment", "segment", Read, |f, o, l| f.segment(o, l)),
        row!("try_segment", "segment", Read, |f, o, l| f
            .try_segment(o, l)),
        row!("prewarm", "prewarm", Read, |f, o, l| f.prewarm(o, l)),
        row!("flush_range", "flush_range", Read, |f, o, l| f
            .flush_range(o, l)),
        row!("update", "update", Write, |f, o, l| f
            .update(o, vec![1u8; update_len(l) as usize])),
        row!("try_update", "update", Write, |f, o, l| f
            .try_update(o, vec![1u8; update_len(l) as usize])),
        row!("modify", "modify", Write, |f, o, l| f
            .modify(o, l, |b| b.fill(2))),
        row!("segment_mut", "segment_mut", Write, |f, o, l| f
            .segment_mut(o, l)),
        row!("try_segment_mut", "segment_mut", Write, |f, o, l| f
            .try_segment_mut(o, l)),
        row!("atomic_u32", "atomic_u32", a32, |f, o, _n| f.atomic_u32(o)),
        row!("try_atomic_u32", "atomic_u32", a32, |f, o, _n| f
            .try_atomic_u32(o)),
        row!("atomic_u64", "atomic_u64", a64, |f, o, _n| f.atomic_u64(o)),
        row!("try_atomic_u64", "atomic_u64", a64, |f, o, _n| f
            .try_atomic_u64(o)),
        row!("atomic_u32_slice", "atomic_u32_slice", s32, |f, o, n| f
            .atomic_u32_slice(o, n)),
        row!(
            "try_atomic_u32_slice",
            "atomic_u32_slice",
            s32,
            |f, o, n| f.try_atomic_u32_slice(o, n)
        ),
        row!("atomic_u64_slice", "atomic_u64_slice", s64, |f, o, n| f
            .atomic_u64_slice(o, n)),
        row!(
            "try_atomic_u64_slice",
            "atomic_u64_slice",
            s64,
            |f, o, n| f.try_atomic_u64_slice(o, n)
        ),
    ]
}

/// `(offset, len or count)` inputs covering every combination of
/// misalignment (for 4 and 8 bytes) and bounds faults (past the end, end
/// overflowing, count overflowing).
fn inputs() -> Vec<(u64, u64)> {
    vec![
        // In bounds, aligned.
        (0, 1),
        (8, 2),
        (L - 8, 1),
        // In bounds, misaligned (for 4 and 8; for 8 only).
        (1, 1),
        (4, 1),
        (L - 7, 1),
        // Out of bounds, aligned.
        (L, 1),
        (L - 4, 2),
        (0, L + 1),
        (L + 8, 0),
        // Out of bounds, misaligned.
        (L + 1, 1),
        (L + 4, 1),
        (2, L),
        // The end overflows.
        (u64::MAX, 1),
        (u64::MAX - 7, 1),
        (u64::MAX - 3, 2),
        // The count (times the width) overflows.
        (1, u64::MAX),
        (2, u64::MAX),
        (8, u64::MAX),
        (0, u64::MAX / 4 + 1),
        (3, u64::MAX / 8 + 1),
    ]
}

/// The error (or `Ok`) `row` must give for `(offset, n)` on a mapping of
/// `L` bytes in `mode`: the first fault of mode, alignment, bounds.
fn expected(row: &Row, mode: Mode, offset: u64, n: u64) -> Want {
    let writes = !matches!(row.kind, Kind::Read);
    if writes && !mode.is_writable() {
        return Want::ReadOnly { op: row.op, mode };
    }
    let len = match row.kind {
        Kind::Atomic { width, single } => {
            if offset % width != 0 {
                return misaligned(offset, width);
            }
            if single {
                width
            } else {
                // An overflowing count is reported as u64::MAX.
                n.saturating_mul(width)
            }
        }
        Kind::Write if row.op == "update" => update_len(n),
        _ => n,
    };
    match offset.checked_add(len) {
        Some(end) if end <= L => Want::Ok,
        _ => oob(offset, len, L),
    }
}

/// Whether `got` is what `want` describes (as `common::expect::check`,
/// without panicking, so that the table reports every mismatch).
fn matches(got: &Result<()>, want: Want) -> bool {
    use mmap_actor::Error;
    match (got, want) {
        (Ok(()), Want::Ok) => true,
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
        _ => false,
    }
}

async fn table(file: &MappedFile) {
    let mode = file.mode();
    let mut wrong = Vec::new();
    let mut cases = 0;
    for row in rows() {
        for (offset, n) in inputs() {
            let want = expected(&row, mode, offset, n);
            let got = (row.call)(file, offset, n).await;
            cases += 1;
            if !matches(&got, want) {
                wrong.push(format!(
                    "{mode:?} {}({offset}, {n}): expected {want:?}, got {got:?}",
                    row.name
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases gave the wrong error:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Resizing is refused by mode before its length is looked at.
    if mode != Mode::ReadWrite {
        for new_len in [u64::MAX, 0, L, 2 * L] {
            let want = Want::ReadOnly { op: "resize", mode };
            check(
                &format!("{mode:?} resize({new_len})"),
                file.resize(new_len).await,
                want,
            );
            check(
                &format!("{mode:?} try_resize({new_len})"),
                file.try_resize(new_len).await,
                want,
            );
        }
    }
    assert_eq!(file.len(), L);
}

/// The reported case on its own: a misaligned offset with an overflowing
/// count is `Misaligned`.
#[tokio::test]
async fn error_order_misaligned_before_an_overflowing_count() {
    let scratch = Scratch::new();
    let file = scratch.file("rw", L).await;
    check(
        "atomic_u64_slice(1, u64::MAX)",
        file.atomic_u64_slice(1, u64::MAX).await,
        misaligned(1, 8),
    );
    check(
        "atomic_u32_slice(1, u64::MAX)",
        file.atomic_u32_slice(1, u64::MAX).await,
        misaligned(1, 4),
    );
}

/// The reported case on its own: on a read-only mapping, writes with an
/// out-of-bounds range are `ReadOnly`.
#[tokio::test]
async fn error_order_read_only_before_bounds() {
    let scratch = Scratch::new();
    let path = scratch.path("ro");
    std::fs::write(&path, vec![0u8; L as usize]).unwrap();
    let file = MappedFile::open_ro(&path).await.unwrap();
    let ro = |op| Want::ReadOnly {
        op,
        mode: Mode::ReadOnly,
    };
    check(
        "update(L, ..)",
        file.update(L, vec![1u8; 8]).await,
        ro("update"),
    );
    check(
        "segment_mut(L, 8)",
        file.segment_mut(L, 8).await,
        ro("segment_mut"),
    );
    check("atomic_u64(L)", file.atomic_u64(L).await, ro("atomic_u64"));
    check(
        "atomic_u64_slice(0, u64::MAX)",
        file.atomic_u64_slice(0, u64::MAX).await,
        ro("atomic_u64_slice"),
    );
    check(
        "atomic_u64_slice(1, u64::MAX)",
        file.atomic_u64_slice(1, u64::MAX).await,
        ro("atomic_u64_slice"),
    );
    check(
        "modify(u64::MAX, 1)",
        file.modify(u64::MAX, 1, |b| b.fill(1)).await,
        ro("modify"),
    );
}

#[tokio::test]
async fn error_order_table_on_a_read_write_mapping() {
    let scratch = Scratch::new();
    let file = scratch.file("rw", L).await;
    table(&file).await;
    file.close().await.unwrap();
}

#[tokio::test]
async fn error_order_table_on_a_read_only_mapping() {
    let scratch = Scratch::new();
    let path = scratch.path("ro");
    std::fs::write(&path, vec![0u8; L as usize]).unwrap();
    let file = MappedFile::open_ro(&path).await.unwrap();
    table(&file).await;
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; L as usize]);
}

#[tokio::test]
async fn error_order_table_on_a_copy_on_write_mapping() {
    let scratch = Scratch::new();
    let path = scratch.path("cow");
    std::fs::write(&path, vec![0u8; L as usize]).unwrap();
    let file = MappedFile::open_cow(&path).await.unwrap();
    table(&file).await;
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; L as usize]);
}
