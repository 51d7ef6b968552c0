//! Criterion micro-benchmarks of the per-call costs behind P2 and P8, for
//! criterion's statistics and HTML plots (`target/criterion/report/`).
//! The side-by-side table of every target is `benches/peers`.
//!
//! ```text
//! cargo bench --bench micro
//! ```

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mmap_actor::{MappedFile, DEFAULT_CHANNEL_CAPACITY};
use tokio::sync::{mpsc, oneshot};

const LEN: u64 = 16 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime")
}

/// One 64 B update: ours, a bare mpsc + oneshot round trip of the same
/// shape, and mmap-io 1.1's synchronous `update_region`.
fn update_64(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let file = rt
        .block_on(MappedFile::create(dir.path().join("ours"), LEN))
        .expect("create");
    rt.block_on(file.prewarm(0, LEN)).expect("prewarm");
    let mm = mmap_io::MemoryMappedFile::create_rw(dir.path().join("mmap-io"), LEN)
        .expect("create mmap-io");
    mm.update_region(0, &vec![1u8; LEN as usize])
        .expect("prewarm mmap-io");

    type Msg = (u64, Bytes, oneshot::Sender<()>);
    let (tx, mut rx) = mpsc::channel::<Msg>(DEFAULT_CHANNEL_CAPACITY);
    rt.spawn(async move {
        while let Some((_off, _data, reply)) = rx.recv().await {
            let _ = reply.send(());
        }
    });

    let buf = [7u8; 64];
    let mut group = c.benchmark_group("update_64B");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("mmap-actor update", |b| {
        b.to_async(&rt).iter(|| async {
            file.update(4096, Bytes::copy_from_slice(&buf))
                .await
                .expect("update");
        });
    });
    group.bench_function("bare mpsc+oneshot round trip", |b| {
        b.to_async(&rt).iter(|| async {
            let (reply, answer) = oneshot::channel();
            tx.send((4096, Bytes::copy_from_slice(&buf), reply))
                .await
                .expect("send");
            answer.await.expect("answer");
        });
    });
    group.bench_function("mmap-io 1.1 update_region", |b| {
        b.iter(|| {
            mm.update_region(4096, black_box(&buf))
                .expect("update_region")
        });
    });
    group.finish();
    rt.block_on(file.close()).expect("close");
}

/// Taking and dropping a `Segment` of growing size: O(1) in the size.
fn segment_take(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let file = rt
        .block_on(MappedFile::create(dir.path().join("ours"), LEN))
        .expect("create");
    let mut group = c.benchmark_group("segment_take");
    group.measurement_time(Duration::from_secs(3));
    for kib in [4u64, 64, 1024, 8192] {
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{kib} KiB")),
            &kib,
            |b, &kib| {
                b.to_async(&rt).iter(|| async {
                    let seg = file.segment(0, kib * 1024).await.expect("segment");
                    black_box(seg.len());
                });
            },
        );
    }
    group.finish();
    rt.block_on(file.close()).expect("close");
}

criterion_group!(benches, update_64, segment_take);
criterion_main!(benches);
