//! Every range is checked with overflow-free arithmetic against the file's
//! length, on both the direct path and the actor path.

mod common;

use mmap_actor::{Error, MappedFile, DIRECT_MAX};
use proptest::prelude::*;

fn exact(offset: u64, len: u64, file_len: u64) -> bool {
    (offset as u128) + (len as u128) <= file_len as u128
}

fn check(result: Result<(), Error>, offset: u64, len: u64, file_len: u64) {
    if exact(offset, len, file_len) {
        assert!(result.is_ok(), "{offset}+{len} in {file_len}: {result:?}");
    } else {
        match result {
            Err(Error::OutOfBounds {
                offset: o,
                len: l,
                file_len: f,
            }) => assert_eq!((o, l, f), (offset, len, file_len)),
            other => panic!("{offset}+{len} in {file_len}: expected OutOfBounds, got {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn loads_updates_and_leases_match_the_exact_predicate(
        cases in proptest::collection::vec(
            (prop_oneof![0u64..12_000, Just(u64::MAX), Just(u64::MAX - 3), Just(10_000)],
             prop_oneof![0u64..(2 * DIRECT_MAX as u64), Just(u64::MAX), Just(1)]),
            1..24)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = common::Scratch::new();
            let file_len = 10_000u64;
            let file = s.file("bounds", file_len).await;
            for (offset, len) in cases {
                check(file.load(offset, len).await.map(|b| assert_eq!(b.len() as u64, len)), offset, len, file_len);
                check(file.segment(offset, len).await.map(|_| ()), offset, len, file_len);
                check(file.flush_range(offset, len).await, offset, len, file_len);
                if len <= 3 * DIRECT_MAX as u64 {
                    let data = vec![7u8; len as usize];
                    check(file.update_from(offset, &data).await, offset, len, file_len);
                    check(file.try_update_from(offset, &data).await, offset, len, file_len);
                    let (a, b) = data.split_at(data.len() / 2);
                    check(file.update_vectored(offset, &[a, b]).await, offset, len, file_len);
                    check(file.zero(offset, len).await, offset, len, file_len);
                    let mut buf = vec![0u8; len as usize];
                    check(file.load_into(offset, &mut buf).await, offset, len, file_len);
                    check(file.try_load_into(offset, &mut buf).await, offset, len, file_len);
                    check(file.update(offset, data.clone()).await, offset, len, file_len);
                    check(file.try_update(offset, data).await, offset, len, file_len);
                    check(file.segment_mut(offset, len).await.map(|_| ()), offset, len, file_len);
                    check(file.modify(offset, len, |_| {}).await, offset, len, file_len);
                }
            }
            file.close().await.unwrap();
        });
    }
}

#[tokio::test]
async fn zero_length_ranges_are_valid_up_to_the_end() {
    let s = common::Scratch::new();
    let file = s.file("zero", 100).await;
    for offset in [0, 50, 100] {
        assert!(file.load(offset, 0).await.unwrap().is_empty());
        file.update(offset, Vec::new()).await.unwrap();
        assert!(file.segment(offset, 0).await.unwrap().is_empty());
        file.flush_range(offset, 0).await.unwrap();
    }
    assert!(matches!(
        file.load(101, 0).await,
        Err(Error::OutOfBounds {
            offset: 101,
            len: 0,
            file_len: 100
        })
    ));
    assert!(matches!(
        file.update(101, Vec::new()).await,
        Err(Error::OutOfBounds {
            offset: 101,
            len: 0,
            file_len: 100
        })
    ));
}

#[tokio::test]
async fn atomic_views_check_alignment_and_overflow() {
    let s = common::Scratch::new();
    let file = s.file("atomics", 64).await;
    assert!(matches!(
        file.atomic_u64(4).await,
        Err(Error::Misaligned {
            offset: 4,
            align: 8
        })
    ));
    assert!(matches!(
        file.atomic_u32(2).await,
        Err(Error::Misaligned {
            offset: 2,
            align: 4
        })
    ));
    assert!(matches!(
        file.atomic_u64(64).await,
        Err(Error::OutOfBounds {
            offset: 64,
            len: 8,
            file_len: 64
        })
    ));
    assert!(matches!(
        file.atomic_u64_slice(0, u64::MAX).await,
        Err(Error::OutOfBounds { offset: 0, .. })
    ));
    assert!(matches!(
        file.atomic_u32_slice(u64::MAX - 3, 2).await,
        Err(Error::OutOfBounds { .. })
    ));
    assert_eq!(file.atomic_u64_slice(8, 7).await.unwrap().len(), 7);
    assert!(file.atomic_u32_slice(64, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bound_checked_before_a_shrink_is_checked_again_after_it() {
    // The length is read by the actor (or under the direct-path gate), never
    // from a stale copy: after a shrink, the old tail is out of bounds.
    let s = common::Scratch::new();
    let file = s.file("stale", 8192).await;
    let other = file.clone();
    other.resize(4096).await.unwrap();
    for len in [1u64, 16, DIRECT_MAX as u64 + 1] {
        assert!(matches!(
            file.update(4095, vec![1u8; len as usize + 1]).await,
            Err(Error::OutOfBounds { file_len: 4096, .. })
        ));
        assert!(matches!(
            file.load(4095, len + 1).await,
            Err(Error::OutOfBounds { file_len: 4096, .. })
        ));
    }
    let _ = MappedFile::clone(&file);
}
