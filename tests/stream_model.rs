//! A model-based property test of the streaming writers against a
//! `Vec<u8>`: random sequences of updates, modifies, exclusive segments,
//! update-sink batches (with a failing item now and then) and appends. After
//! each sequence the file equals the model, and a data subscription made at
//! the start, replayed change by change onto zeros, equals it too: every
//! change was reported, in order, with its bytes. Half the cases add four
//! more subscriptions (sinks then publish their own items), which must see
//! the same changes.

mod common;

use bytes::Bytes;
use common::{Scratch, SplitMix};
use futures::{stream, FutureExt, SinkExt, StreamExt};
use mmap_actor::{ChangeKind, Error, MappedFile};
use proptest::prelude::*;

const LEN: u64 = 16 * 1024;
/// Appends start here and grow the file in steps of `STEP`.
const LOG_AT: u64 = 12 * 1024;
const STEP: u64 = 2048;

#[derive(Clone, Debug)]
enum Op {
    Update {
        off: u64,
        len: u64,
        seed: u64,
    },
    Modify {
        off: u64,
        len: u64,
        xor: u8,
    },
    SegmentMut {
        off: u64,
        len: u64,
        seed: u64,
    },
    /// Items of a sink batch; `bad` makes the item at that index fail.
    Sink {
        items: Vec<(u64, u64, u64)>,
        bad: Option<usize>,
    },
    Append {
        len: u64,
        seed: u64,
    },
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..LEN, 1u64..600).prop_map(|(off, len)| {
        let len = len.min(LEN - off).max(1);
        (off.min(LEN - len), len)
    })
}

/// A sink item's range: up to 1,500 bytes, so that with four or more
/// subscriptions both ways a sink publishes its own items are taken
/// (gathered below 1 KiB, stored at once with their changes held above).
fn item_range() -> impl Strategy<Value = (u64, u64)> {
    (0..LEN, 1u64..1500).prop_map(|(off, len)| {
        let len = len.min(LEN - off).max(1);
        (off.min(LEN - len), len)
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (range(), any::<u64>()).prop_map(|((off, len), seed)| Op::Update { off, len, seed }),
        2 => (range(), 1u8..).prop_map(|((off, len), xor)| Op::Modify { off, len, xor }),
        2 => (range(), any::<u64>()).prop_map(|((off, len), seed)| Op::SegmentMut { off, len, seed }),
        3 => (prop::collection::vec((item_range(), any::<u64>()), 1..40), prop::option::weighted(0.15, 0usize..40))
            .prop_map(|(items, bad)| Op::Sink {
                bad: bad.filter(|b| *b < items.len()),
                items: items.into_iter().map(|((o, l), s)| (o, l, s)).collect(),
            }),
        3 => (1u64..700, any::<u64>()).prop_map(|(len, seed)| Op::Append { len, seed }),
    ]
}

fn put(model: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[off as usize..end].copy_from_slice(data);
}

async fn run(ops: Vec<Op>, crowd: bool) -> Result<(), TestCaseError> {
    let s = Scratch::new();
    let file: MappedFile = MappedFile::create(s.path("f"), LEN).await.unwrap();
    let mut changes = file.subscribe_with_data(..);
    // Four more subscriptions of everything: sinks then store and publish
    // their items themselves; each must see what the data one sees.
    let mut crowd: Vec<_> = (0..if crowd { 4 } else { 0 })
        .map(|_| file.subscribe(..))
        .collect();
    let log = file.appender(LOG_AT).grow_step(STEP);
    let mut model = vec![0u8; LEN as usize];
    let mut file_len = LEN;
    let mut next_append = LOG_AT;
    for op in ops {
        match op {
            Op::Update { off, len, seed } => {
                let data = SplitMix::bytes(seed, len as usize);
                file.update(off, data.clone()).await.unwrap();
                put(&mut model, off, &data);
            }
            Op::Modify { off, len, xor } => {
                file.modify(off, len, move |b| b.iter_mut().for_each(|x| *x ^= xor))
                    .await
                    .unwrap();
                for b in &mut model[off as usize..(off + len) as usize] {
                    *b ^= xor;
                }
            }
            Op::SegmentMut { off, len, seed } => {
                let data = SplitMix::bytes(seed, len as usize);
                let mut seg = file.segment_mut(off, len).await.unwrap();
                seg.copy_from_slice(&data);
                drop(seg);
                put(&mut model, off, &data);
            }
            Op::Sink { items, bad } => {
                let mut sink = file.update_sink();
                let items: Vec<(u64, Bytes)> = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, (o, l, seed))| {
                        let o = if Some(i) == bad { file_len } else { o };
                        (o, Bytes::from(SplitMix::bytes(seed, l as usize)))
                    })
                    .collect();
                let sent = sink
                    .send_all(&mut stream::iter(items.clone().into_iter().map(Ok)))
                    .await;
                let applied = match (sent, bad) {
                    (Ok(()), None) => items.len(),
                    (
                        Err(Error::SinkItem {
                            applied, offset, ..
                        }),
                        Some(b),
                    ) => {
                        prop_assert_eq!(applied as usize, b);
                        prop_assert_eq!(offset, file_len);
                        b
                    }
                    (other, _) => return Err(TestCaseError::fail(format!("sink: {other:?}"))),
                };
                for (o, data) in &items[..applied] {
                    put(&mut model, *o, data);
                }
            }
            Op::Append { len, seed } => {
                let data = SplitMix::bytes(seed, len as usize);
                let at = log.append(data.clone()).await.unwrap();
                prop_assert_eq!(at, next_append);
                next_append += len;
                while file_len < next_append {
                    file_len += STEP;
                }
                put(&mut model, at, &data);
            }
        }
    }
    model.resize(file_len as usize, 0);
    prop_assert_eq!(file.len(), file_len);
    prop_assert_eq!(&file.load(0, file_len).await.unwrap()[..], &model[..]);

    // Replay the subscription (its range is the first LEN bytes).
    let mut shadow = vec![0u8; LEN as usize];
    let mut last_seq = None;
    let mut seen = Vec::new();
    while let Some(item) = changes.next().now_or_never().flatten() {
        let change = item.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(last_seq < Some(change.seq()));
        last_seq = Some(change.seq());
        seen.push((change.seq(), change.offset(), change.len(), change.kind()));
        if let ChangeKind::Resize { .. } = change.kind() {
            continue;
        }
        let data = change.data().expect("a data subscription");
        let at = change.data_offset().unwrap() as usize;
        shadow[at..at + data.len()].copy_from_slice(data);
    }
    prop_assert_eq!(&shadow[..], &model[..LEN as usize]);
    for sub in &mut crowd {
        let mut theirs = Vec::new();
        while let Some(item) = sub.next().now_or_never().flatten() {
            let c = item.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            theirs.push((c.seq(), c.offset(), c.len(), c.kind()));
        }
        prop_assert_eq!(&theirs, &seen);
    }
    file.close().await.unwrap();
    Ok(())
}

proptest! {
    // `PROPTEST_CASES` sets the number of cases (default 48).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]
    #[test]
    fn stream_model_file_and_subscription_match_a_vec(
        ops in prop::collection::vec(op(), 1..60),
        crowd in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops, crowd))?;
    }
}
