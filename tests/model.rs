//! Model-based property test: random sequences of operations through
//! several clones of one handle, each checked against a `Vec<u8>` model of
//! the file after every step; at the end the file is closed, reopened and
//! compared with the model as a whole.
//!
//! 64 cases by default; `MMAP_ACTOR_MODEL_CASES=10000` for a long run.

mod common;

use std::sync::atomic::Ordering;

use common::Scratch;
use mmap_actor::{Error, MappedFile, Result, DIRECT_MAX, INLINE_COPY_MAX};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

/// Largest length a resize asks for: big enough for copies past
/// `INLINE_COPY_MAX` (the actor's blocking path).
const MAX_LEN: u64 = INLINE_COPY_MAX as u64 + 16 * 1024;
/// Handles (clones) the operations are spread over.
const HANDLES: usize = 3;

/// A position or length: mostly a fraction of what is valid at the time the
/// operation runs, sometimes an absolute number (often out of range).
#[derive(Clone, Copy, Debug)]
enum At {
    Frac(u16),
    Abs(u64),
}

impl At {
    /// An offset in a file of `len` bytes.
    fn offset(self, len: u64) -> u64 {
        match self {
            At::Frac(f) => (u128::from(len) * u128::from(f) / u128::from(u16::MAX)) as u64,
            At::Abs(a) => a,
        }
    }

    /// A length starting at `offset` in a file of `len` bytes.
    fn len(self, offset: u64, len: u64) -> u64 {
        match self {
            At::Frac(f) => {
                let room = len.saturating_sub(offset);
                (u128::from(room) * u128::from(f) / u128::from(u16::MAX)) as u64
            }
            At::Abs(a) => a,
        }
    }
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        12 => any::<u16>().prop_map(At::Frac),
        // Small pieces, so that several fit side by side.
        4 => (0u64..64).prop_map(At::Abs),
        2 => (0..MAX_LEN + 64).prop_map(At::Abs),
        1 => prop_oneof![
            Just(u64::MAX),
            (u64::MAX - 16..=u64::MAX),
            any::<u64>(),
        ]
        .prop_map(At::Abs),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Update {
        h: usize,
        off: At,
        len: At,
        seed: u8,
    },
    Load {
        h: usize,
        off: At,
        len: At,
    },
    /// `update_from`, `update_vectored` (the data in `parts` pieces) or
    /// `zero` (`parts == 0`).
    UpdateFrom {
        h: usize,
        off: At,
        len: At,
        seed: u8,
        parts: u8,
    },
    LoadInto {
        h: usize,
        off: At,
        len: At,
    },
    GrowTo {
        h: usize,
        min_len: u64,
    },
    Resize {
        h: usize,
        new_len: u64,
    },
    Flush {
        h: usize,
    },
    FlushRange {
        h: usize,
        off: At,
        len: At,
    },
    Prewarm {
        h: usize,
        off: At,
        len: At,
    },
    Segment {
        h: usize,
        off: At,
        len: At,
    },
    SegmentMut {
        h: usize,
        off: At,
        len: At,
        seed: u8,
    },
    Modify {
        h: usize,
        off: At,
        len: At,
        xor: u8,
    },
    AtomicU64 {
        h: usize,
        off: At,
        aligned: bool,
        add: u64,
    },
    AtomicU32 {
        h: usize,
        off: At,
        aligned: bool,
        add: u32,
    },
    /// Hold a segment through handle `h` while handle `other` tries
    /// conflicting and compatible requests with the `try_` calls.
    HoldAndTry {
        h: usize,
        off: At,
        len: At,
        other: usize,
        toff: At,
        tlen: At,
        shrink: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..HANDLES;
    prop_oneof![
        6 => (h.clone(), at(), at(), any::<u8>()).prop_map(|(h, off, len, seed)| Op::Update { h, off, len, seed }),
        3 => (h.clone(), at(), at()).prop_map(|(h, off, len)| Op::Load { h, off, len }),
        4 => (h.clone(), at(), at(), any::<u8>(), 0u8..4).prop_map(|(h, off, len, seed, parts)| Op::UpdateFrom { h, off, len, seed, parts }),
        3 => (h.clone(), at(), at()).prop_map(|(h, off, len)| Op::LoadInto { h, off, len }),
        1 => (h.clone(), prop_oneof![0..=MAX_LEN, 0u64..256]).prop_map(|(h, min_len)| Op::GrowTo { h, min_len }),
        3 => (h.clone(), prop_oneof![0..=MAX_LEN, 0u64..256]).prop_map(|(h, new_len)| Op::Resize { h, new_len }),
        1 => h.clone().prop_map(|h| Op::Flush { h }),
        1 => (h.clone(), at(), at()).prop_map(|(h, off, len)| Op::FlushRange { h, off, len }),
        1 => (h.clone(), at(), at()).prop_map(|(h, off, len)| Op::Prewarm { h, off, len }),
        3 => (h.clone(), at(), at()).prop_map(|(h, off, len)| Op::Segment { h, off, len }),
        3 => (h.clone(), at(), at(), any::<u8>()).prop_map(|(h, off, len, seed)| Op::SegmentMut { h, off, len, seed }),
        2 => (h.clone(), at(), at(), any::<u8>()).prop_map(|(h, off, len, xor)| Op::Modify { h, off, len, xor }),
        3 => (h.clone(), at(), prop::bool::weighted(0.9), any::<u64>()).prop_map(|(h, off, aligned, add)| Op::AtomicU64 { h, off, aligned, add }),
        2 => (h.clone(), at(), prop::bool::weighted(0.9), any::<u32>()).prop_map(|(h, off, aligned, add)| Op::AtomicU32 { h, off, aligned, add }),
        3 => (h.clone(), at(), at(), h.clone(), at(), at(), 0..=MAX_LEN).prop_map(|(h, off, len, other, toff, tlen, shrink)| Op::HoldAndTry { h, off, len, other, toff, tlen, shrink }),
    ]
}

/// Bytes of a write: a pattern that differs from position to position.
fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) | 1)
        .collect()
}

/// What the model says about a range: `Ok(start..end)` or the fields of
/// the `OutOfBounds` error.
fn range(
    off: u64,
    len: u64,
    file_len: u64,
) -> std::result::Result<std::ops::Range<usize>, (u64, u64, u64)> {
    match off.checked_add(len) {
        Some(end) if end <= file_len => Ok(off as usize..end as usize),
        _ => Err((off, len, file_len)),
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Checks an outcome against the model's expectation for a range request.
fn expect_range<T: std::fmt::Debug>(
    what: &str,
    got: Result<T>,
    want: &std::result::Result<std::ops::Range<usize>, (u64, u64, u64)>,
) -> std::result::Result<Option<T>, TestCaseError> {
    match (got, want) {
        (Ok(v), Ok(_)) => Ok(Some(v)),
        (
            Err(Error::OutOfBounds {
                offset,
                len,
                file_len,
            }),
            Err(fields),
        ) if (offset, len, file_len) == *fields => Ok(None),
        (got, want) => Err(fail(format!("{what}: model expects {want:?}, got {got:?}"))),
    }
}

/// Whether two non-empty ranges share a byte.
fn overlap(a: &std::ops::Range<usize>, b: &std::ops::Range<usize>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

async fn step(
    files: &[MappedFile],
    model: &mut Vec<u8>,
    op: &Op,
) -> std::result::Result<(), TestCaseError> {
    let file_len = model.len() as u64;
    match *op {
        Op::Update { h, off, len, seed } => {
            let off = off.offset(file_len);
            // Lengths that cannot be allocated are cut to one past the
            // largest file: still out of range.
            let len = len.len(off, file_len).min(MAX_LEN + 1);
            let data = pattern(seed, len);
            let want = range(off, len, file_len);
            if expect_range("update", files[h].update(off, data.clone()).await, &want)?.is_some() {
                model[want.unwrap()].copy_from_slice(&data);
            }
        }
        Op::Load { h, off, len } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len);
            let want = range(off, len, file_len);
            if let Some(bytes) = expect_range("load", files[h].load(off, len).await, &want)? {
                prop_assert_eq!(&bytes[..], &model[want.unwrap()], "load({}, {})", off, len);
            }
        }
        Op::UpdateFrom {
            h,
            off,
            len,
            seed,
            parts,
        } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len).min(MAX_LEN + 1);
            let want = range(off, len, file_len);
            let data = if parts == 0 {
                vec![0u8; len as usize]
            } else {
                pattern(seed, len)
            };
            let got = match parts {
                0 => files[h].zero(off, len).await,
                1 => files[h].update_from(off, &data).await,
                n => {
                    // Split into `n` pieces (some possibly empty).
                    let cut = |k: usize| data.len() * k / n as usize;
                    let pieces: Vec<&[u8]> =
                        (0..n as usize).map(|k| &data[cut(k)..cut(k + 1)]).collect();
                    files[h].update_vectored(off, &pieces).await
                }
            };
            if expect_range("update_from/vectored/zero", got, &want)?.is_some() {
                model[want.unwrap()].copy_from_slice(&data);
            }
        }
        Op::LoadInto { h, off, len } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len).min(MAX_LEN + 1);
            let want = range(off, len, file_len);
            let mut buf = vec![0xEEu8; len as usize];
            let got = files[h].load_into(off, &mut buf).await;
            if expect_range("load_into", got, &want)?.is_some() {
                prop_assert_eq!(
                    &buf[..],
                    &model[want.unwrap()],
                    "load_into({}, {})",
                    off,
                    len
                );
            }
        }
        Op::GrowTo { h, min_len } => {
            files[h]
                .grow_to(min_len)
                .await
                .map_err(|e| fail(format!("grow_to({min_len}): {e:?}")))?;
            if (min_len as usize) > model.len() {
                model.resize(min_len as usize, 0);
            }
        }
        Op::Resize { h, new_len } => {
            files[h]
                .resize(new_len)
                .await
                .map_err(|e| fail(format!("resize({new_len}): {e:?}")))?;
            model.resize(new_len as usize, 0);
        }
        Op::Flush { h } => {
            files[h]
                .flush()
                .await
                .map_err(|e| fail(format!("flush: {e:?}")))?;
        }
        Op::FlushRange { h, off, len } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len);
            expect_range(
                "flush_range",
                files[h].flush_range(off, len).await,
                &range(off, len, file_len),
            )?;
        }
        Op::Prewarm { h, off, len } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len);
            expect_range(
                "prewarm",
                files[h].prewarm(off, len).await,
                &range(off, len, file_len),
            )?;
        }
        Op::Segment { h, off, len } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len);
            let want = range(off, len, file_len);
            if let Some(seg) = expect_range("segment", files[h].segment(off, len).await, &want)? {
                let r = want.unwrap();
                prop_assert_eq!(seg.offset(), off);
                prop_assert_eq!(&seg[..], &model[r.clone()], "segment({}, {})", off, len);
                // Reads of the same bytes through another handle do not
                // wait for the segment.
                let other = &files[(h + 1) % HANDLES];
                let bytes = other
                    .load(off, len)
                    .await
                    .map_err(|e| fail(format!("load under segment: {e:?}")))?;
                prop_assert_eq!(&bytes[..], &model[r.clone()]);
                // As `Bytes`, without a copy, still the same contents.
                let bytes = seg.into_bytes();
                prop_assert_eq!(&bytes[..], &model[r]);
            }
        }
        Op::SegmentMut { h, off, len, seed } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len);
            let want = range(off, len, file_len);
            if let Some(mut seg) =
                expect_range("segment_mut", files[h].segment_mut(off, len).await, &want)?
            {
                let r = want.unwrap();
                prop_assert_eq!(&seg[..], &model[r.clone()], "segment_mut({}, {})", off, len);
                let data = pattern(seed, len);
                seg.copy_from_slice(&data);
                drop(seg);
                model[r].copy_from_slice(&data);
            }
        }
        Op::Modify { h, off, len, xor } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len);
            let want = range(off, len, file_len);
            let got = files[h]
                .modify(off, len, move |bytes| {
                    bytes.iter_mut().for_each(|b| *b ^= xor)
                })
                .await;
            if expect_range("modify", got, &want)?.is_some() {
                model[want.unwrap()].iter_mut().for_each(|b| *b ^= xor);
            }
        }
        Op::AtomicU64 {
            h,
            off,
            aligned,
            add,
        } => {
            let raw = off.offset(file_len);
            let off = if aligned { raw & !7 } else { raw };
            let got = files[h].atomic_u64(off).await;
            if off % 8 != 0 {
                prop_assert!(
                    matches!(got, Err(Error::Misaligned { offset, align: 8 }) if offset == off),
                    "atomic_u64({}): {:?}",
                    off,
                    got
                );
                return Ok(());
            }
            let want = range(off, 8, file_len);
            if let Some(view) = expect_range("atomic_u64", got, &want)? {
                let r = want.unwrap();
                let before = u64::from_le_bytes(model[r.clone()].try_into().unwrap());
                prop_assert_eq!(
                    view.fetch_add(add, Ordering::SeqCst),
                    before,
                    "atomic_u64({})",
                    off
                );
                drop(view);
                model[r].copy_from_slice(&before.wrapping_add(add).to_le_bytes());
            }
        }
        Op::AtomicU32 {
            h,
            off,
            aligned,
            add,
        } => {
            let raw = off.offset(file_len);
            let off = if aligned { raw & !3 } else { raw };
            let got = files[h].atomic_u32(off).await;
            if off % 4 != 0 {
                prop_assert!(
                    matches!(got, Err(Error::Misaligned { offset, align: 4 }) if offset == off),
                    "atomic_u32({}): {:?}",
                    off,
                    got
                );
                return Ok(());
            }
            let want = range(off, 4, file_len);
            if let Some(view) = expect_range("atomic_u32", got, &want)? {
                let r = want.unwrap();
                let before = u32::from_le_bytes(model[r.clone()].try_into().unwrap());
                prop_assert_eq!(
                    view.fetch_add(add, Ordering::SeqCst),
                    before,
                    "atomic_u32({})",
                    off
                );
                drop(view);
                model[r].copy_from_slice(&before.wrapping_add(add).to_le_bytes());
            }
        }
        Op::HoldAndTry {
            h,
            off,
            len,
            other,
            toff,
            tlen,
            shrink,
        } => {
            let off = off.offset(file_len);
            let len = len.len(off, file_len);
            let Ok(held) = range(off, len, file_len) else {
                return Ok(());
            };
            let seg = files[h]
                .segment(off, len)
                .await
                .map_err(|e| fail(format!("segment: {e:?}")))?;
            let other = &files[other];
            let toff = toff.offset(file_len);
            let tlen = tlen.len(toff, file_len).min(MAX_LEN + 1);
            let want = range(toff, tlen, file_len);
            let what = format!("segment({off}, {len}) held, then ({toff}, {tlen})");
            // The actor checks a request's bounds when it runs it (a queued
            // resize may come first), so a request whose bytes are leased
            // waits, or with `try_` is refused with `Conflict`, even when
            // it will turn out to be out of range. Only an overflowing
            // range is refused at once.
            let span = toff
                .checked_add(tlen)
                .map(|end| toff as usize..end.min(usize::MAX as u64) as usize);
            match &want {
                _ if span.as_ref().is_some_and(|t| overlap(&held, t)) => {
                    // Writes wait for the segment: the `try_` twins refuse.
                    let got = other.try_update(toff, pattern(1, tlen)).await;
                    prop_assert!(
                        matches!(got, Err(Error::Conflict { offset, len, .. }) if offset == toff && len == tlen),
                        "{}: try_update gave {:?}",
                        what,
                        got
                    );
                    let got = other.try_segment_mut(toff, tlen).await;
                    prop_assert!(
                        matches!(got, Err(Error::Conflict { offset, len, .. }) if offset == toff && len == tlen),
                        "{}: try_segment_mut gave {:?}",
                        what,
                        got
                    );
                    // Reads coexist with it.
                    if let Some(seg) =
                        expect_range(&what, other.try_segment(toff, tlen).await, &want)?
                    {
                        prop_assert_eq!(&seg[..], &model[want.clone().unwrap()]);
                    }
                }
                _ => {
                    // Disjoint, empty or out of range: no conflict.
                    let data = pattern(2, tlen);
                    if expect_range(
                        "try_update beside a segment",
                        other.try_update(toff, data.clone()).await,
                        &want,
                    )?
                    .is_some()
                    {
                        model[want.clone().unwrap()].copy_from_slice(&data);
                    }
                    if let Some(seg) = expect_range(
                        "try_segment_mut beside a segment",
                        other.try_segment_mut(toff, tlen).await,
                        &want,
                    )? {
                        prop_assert_eq!(&seg[..], &model[want.unwrap()]);
                    }
                }
            }
            // A shrink that would cut the segment is refused; one that
            // leaves it whole (or a grow) goes ahead under it.
            let got = other.try_resize(shrink).await;
            if shrink < file_len && (shrink as usize) < held.end && !held.is_empty() {
                prop_assert!(
                    matches!(got, Err(Error::Conflict { .. })),
                    "{}: try_resize({}) gave {:?}",
                    what,
                    shrink,
                    got
                );
            } else {
                got.map_err(|e| fail(format!("{what}: try_resize({shrink}): {e:?}")))?;
                model.resize(shrink as usize, 0);
            }
            // The segment still shows the model's bytes (an empty one may
            // now lie past the end).
            let expected = if held.is_empty() {
                &[][..]
            } else {
                &model[held]
            };
            prop_assert_eq!(&seg[..], expected, "{}: segment contents", what);
        }
    }
    Ok(())
}

async fn run_case(ops: Vec<Op>, initial: u64) -> std::result::Result<(), TestCaseError> {
    let scratch = Scratch::new();
    let path = scratch.path("model.bin");
    let first = MappedFile::create(&path, initial)
        .await
        .map_err(|e| fail(format!("create: {e:?}")))?;
    let files: Vec<MappedFile> = (0..HANDLES).map(|_| first.clone()).collect();
    drop(first);
    let mut model = vec![0u8; initial as usize];
    for (i, op) in ops.iter().enumerate() {
        step(&files, &mut model, op)
            .await
            .map_err(|e| fail(format!("step {i} {op:?}: {e}")))?;
        // After every step, every handle agrees with the model.
        for file in &files {
            prop_assert_eq!(file.len(), model.len() as u64, "length after step {}", i);
        }
        let all = files[i % HANDLES]
            .load(0, model.len() as u64)
            .await
            .map_err(|e| fail(format!("load all after step {i}: {e:?}")))?;
        prop_assert!(
            all[..] == model[..],
            "contents differ from the model after step {} {:?}",
            i,
            op
        );
    }
    files[ops.len() % HANDLES]
        .close()
        .await
        .map_err(|e| fail(format!("close: {e:?}")))?;
    for file in &files {
        prop_assert!(file.is_closed());
    }
    drop(files);
    let reopened = MappedFile::open_rw(&path)
        .await
        .map_err(|e| fail(format!("reopen: {e:?}")))?;
    prop_assert_eq!(reopened.len(), model.len() as u64);
    let all = reopened
        .load(0, model.len() as u64)
        .await
        .map_err(|e| fail(format!("{e:?}")))?;
    prop_assert!(all[..] == model[..], "reopened file differs from the model");
    reopened.close().await.map_err(|e| fail(format!("{e:?}")))?;
    let on_disk = std::fs::read(&path).map_err(|e| fail(format!("{e}")))?;
    prop_assert!(
        on_disk == model,
        "file read with read(2) differs from the model"
    );
    Ok(())
}

fn cases() -> u32 {
    std::env::var("MMAP_ACTOR_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
fn operations_match_a_vec_model() {
    let config = Config {
        cases: cases(),
        ..Config::default()
    };
    let strategy = (
        prop::collection::vec(op(), 1..40),
        prop_oneof![Just(0u64), 0..=4 * DIRECT_MAX as u64, 0..=MAX_LEN],
    );
    proptest!(config, |((ops, initial) in strategy)| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(ops, initial))?;
    });
}
