//! P9–P11: durable appends, update sinks, subscriptions.

use std::io::SeekFrom;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::{stream, SinkExt, StreamExt};
use mmap_actor::{Error, MappedFile};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio::task::JoinSet;

use crate::util::{fmt_ops, fmt_ratio, multi_thread, prefill, rate, remove, Config, Rng, MIB};
use crate::{Met, Row};

async fn join_all(mut set: JoinSet<()>) {
    while let Some(done) = set.join_next().await {
        done.expect("a bench task panicked");
    }
}

/// Interleaved rounds per workload; each peer keeps its best.
const ROUNDS: u32 = 5;

// ---------------------------------------------------------------- P9

const P9_TASKS: u64 = 32;
const P9_RECORD: usize = 128;

fn p9_record(task: u64, i: u64) -> Vec<u8> {
    let mut rec = vec![task as u8; P9_RECORD];
    rec[..8].copy_from_slice(&i.to_le_bytes());
    rec
}

/// 32 tasks share one durable appender; each append is durable before the
/// task appends again.
async fn p9_ours(path: PathBuf, per_task: u64, write_through: bool) -> f64 {
    remove(&path);
    let file = MappedFile::options()
        .create(true)
        .write_through(write_through)
        .open(&path)
        .await
        .expect("create ours");
    let log = file.appender(0).durable(true);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P9_TASKS {
        let log = log.clone();
        set.spawn(async move {
            for i in 0..per_task {
                log.append(p9_record(t, i)).await.expect("append");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    assert_eq!(
        log.durable_position(),
        P9_TASKS * per_task * P9_RECORD as u64
    );
    file.close().await.expect("close");
    remove(&path);
    rate(P9_TASKS * per_task, elapsed)
}

/// The classic: a mutex-guarded cursor, then `pwrite` + `fdatasync` of the
/// record on the blocking pool.
async fn p9_pwrite(path: PathBuf, per_task: u64) -> f64 {
    remove(&path);
    let file = Arc::new(std::fs::File::create(&path).expect("create pwrite"));
    let cursor = Arc::new(Mutex::new(0u64));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P9_TASKS {
        let (file, cursor) = (Arc::clone(&file), Arc::clone(&cursor));
        set.spawn(async move {
            for i in 0..per_task {
                let rec = p9_record(t, i);
                let at = {
                    let mut c = cursor.lock().expect("cursor");
                    let at = *c;
                    *c += rec.len() as u64;
                    at
                };
                let file = Arc::clone(&file);
                tokio::task::spawn_blocking(move || {
                    file.write_all_at(&rec, at)?;
                    file.sync_data()
                })
                .await
                .expect("spawn_blocking")
                .expect("pwrite + fdatasync");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    remove(&path);
    rate(P9_TASKS * per_task, elapsed)
}

/// `tokio::fs::File` opened with `O_APPEND` by each task, `sync_data` after
/// each record.
async fn p9_tokio_fs(path: PathBuf, per_task: u64) -> f64 {
    remove(&path);
    std::fs::File::create(&path).expect("create tokio::fs");
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P9_TASKS {
        let path = path.clone();
        set.spawn(async move {
            let mut f = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await
                .expect("open O_APPEND");
            for i in 0..per_task {
                f.write_all(&p9_record(t, i)).await.expect("write_all");
                f.sync_data().await.expect("sync_data");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    remove(&path);
    rate(P9_TASKS * per_task, elapsed)
}

/// P9: durable 128 B appends from 32 tasks sharing one log.
pub(crate) fn p9(cfg: &Config) -> Vec<Row> {
    let per_task = cfg.pick(100, 10);
    let rt = multi_thread(2);
    let (mut ours, mut wt, mut pwrite, mut fs) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..ROUNDS {
        ours = ours.max(rt.block_on(p9_ours(cfg.path("p9-ours"), per_task, false)));
        wt = wt.max(rt.block_on(p9_ours(cfg.path("p9-ours-wt"), per_task, true)));
        pwrite = pwrite.max(rt.block_on(p9_pwrite(cfg.path("p9-pwrite"), per_task)));
        fs = fs.max(rt.block_on(p9_tokio_fs(cfg.path("p9-tokio-fs"), per_task)));
    }
    let w = format!(
        "durable 128 B appends, 32 tasks × {per_task} sharing one `Appender` (each durable before the next), 2 workers (speed-up = ours/peer records/s)"
    );
    vec![
        Row::new("P9", &w)
            .ours(fmt_ops(ours))
            .peer(
                "spawn_blocking pwrite + fdatasync, Mutex-guarded cursor",
                fmt_ops(pwrite),
            )
            .ratio(fmt_ratio(ours / pwrite))
            .target("≥ 3×", Met::from(ours / pwrite >= 3.0)),
        Row::new("P9", &w)
            .ours(fmt_ops(ours))
            .peer(
                "tokio::fs O_APPEND write_all + sync_data per record",
                fmt_ops(fs),
            )
            .ratio(fmt_ratio(ours / fs))
            .target("≥ 1.5×", Met::from(ours / fs >= 1.5)),
        Row::new("P9", &w)
            .ours(fmt_ops(ours))
            .peer(
                "ours with `write_through(true)` (pwrite per record)",
                fmt_ops(wt),
            )
            .ratio(fmt_ratio(ours / wt)),
    ]
}

// ---------------------------------------------------------------- P10

const P10_LEN: u64 = 64 * MIB;

/// Random offsets aligned to `size` in the file, the same for every peer.
fn p10_offset(rng: &mut Rng, size: usize) -> u64 {
    rng.below(P10_LEN / size as u64) * size as u64
}

fn p10_item(rng: &mut Rng, i: u64, buf: &mut [u8]) -> (u64, Bytes) {
    buf[..8].copy_from_slice(&i.to_le_bytes());
    (p10_offset(rng, buf.len()), Bytes::copy_from_slice(buf))
}

async fn p10_file(path: &std::path::Path) -> MappedFile {
    prefill(path, P10_LEN);
    let file = MappedFile::open_rw(path).await.expect("open ours");
    // Write-fault every page once, as P1 does: steady-state overwrites.
    let chunk = Bytes::from(vec![1u8; MIB as usize]);
    for off in (0..P10_LEN).step_by(MIB as usize) {
        file.update(off, chunk.clone()).await.expect("prefault");
    }
    file
}

async fn p10_sink(path: PathBuf, n: u64, size: usize, max_in_flight: Option<usize>) -> f64 {
    let file = p10_file(&path).await;
    let mut sink = file.update_sink();
    if let Some(bytes) = max_in_flight {
        sink = sink.max_in_flight(bytes);
    }
    let mut rng = Rng::new(10);
    let mut buf = vec![7u8; size];
    let start = Instant::now();
    let mut items = stream::iter(0..n).map(|i| Ok::<_, Error>(p10_item(&mut rng, i, &mut buf)));
    sink.send_all(&mut items).await.expect("send_all");
    let elapsed = start.elapsed();
    assert_eq!(sink.applied(), n);
    file.close().await.expect("close");
    remove(&path);
    rate(n, elapsed)
}

async fn p10_update(path: PathBuf, n: u64, size: usize) -> f64 {
    let file = p10_file(&path).await;
    let mut rng = Rng::new(10);
    let mut buf = vec![7u8; size];
    let start = Instant::now();
    for i in 0..n {
        let (off, data) = p10_item(&mut rng, i, &mut buf);
        file.update(off, data).await.expect("update");
    }
    let elapsed = start.elapsed();
    file.close().await.expect("close");
    remove(&path);
    rate(n, elapsed)
}

async fn p10_tokio_fs(path: PathBuf, n: u64, size: usize) -> f64 {
    prefill(&path, P10_LEN);
    let f = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .await
        .expect("open tokio::fs");
    let mut w = BufWriter::new(f);
    let mut rng = Rng::new(10);
    let mut buf = vec![7u8; size];
    let start = Instant::now();
    for i in 0..n {
        let (off, data) = p10_item(&mut rng, i, &mut buf);
        w.seek(SeekFrom::Start(off)).await.expect("seek");
        w.write_all(&data).await.expect("write_all");
    }
    w.flush().await.expect("flush");
    let elapsed = start.elapsed();
    remove(&path);
    rate(n, elapsed)
}

/// P10: `send_all` through one `UpdateSink`, against one awaited `update`
/// per item and `tokio::fs` with a `BufWriter` and seeks.
pub(crate) fn p10(cfg: &Config) -> Vec<Row> {
    let rt = multi_thread(2);
    let mut rows = Vec::new();
    for (size, n, fs_n, want_update) in [
        (
            64usize,
            cfg.pick(1_000_000, 100_000),
            cfg.pick(20_000, 5_000),
            1.0,
        ),
        (
            4096,
            cfg.pick(100_000, 10_000),
            cfg.pick(20_000, 5_000),
            3.0,
        ),
    ] {
        let (mut ours, mut upd, mut fs) = (0f64, 0f64, 0f64);
        let mut bounds = [(256 * 1024usize, 0f64), (4 * MIB as usize, 0f64)];
        for _ in 0..ROUNDS {
            ours = ours.max(rt.block_on(p10_sink(cfg.path("p10-ours"), n, size, None)));
            upd = upd.max(rt.block_on(p10_update(cfg.path("p10-update"), n, size)));
            fs = fs.max(rt.block_on(p10_tokio_fs(cfg.path("p10-fs"), fs_n, size)));
            for (bound, best) in &mut bounds {
                let r = rt.block_on(p10_sink(cfg.path("p10-bound"), n, size, Some(*bound)));
                *best = best.max(r);
            }
        }
        let w = format!(
            "`send_all` of {n} × {size} B random updates through one `UpdateSink`, 64 MiB file, 2 workers (speed-up = ours/peer items/s)"
        );
        rows.push(
            Row::new("P10", &w)
                .ours(fmt_ops(ours))
                .peer("one awaited `update` per item, one task", fmt_ops(upd))
                .ratio(fmt_ratio(ours / upd))
                .target(
                    format!("≥ {want_update:.1}×"),
                    Met::from(ours / upd >= want_update),
                ),
        );
        rows.push(
            Row::new("P10", &w)
                .ours(fmt_ops(ours))
                .peer(
                    format!("tokio::fs BufWriter, seek + write_all per item ({fs_n} items)"),
                    fmt_ops(fs),
                )
                .ratio(fmt_ratio(ours / fs))
                .target("≥ 1.5×", Met::from(ours / fs >= 1.5)),
        );
        for (bound, best) in bounds {
            rows.push(
                Row::new("P10", &w)
                    .ours(fmt_ops(ours))
                    .peer(
                        format!("ours with `max_in_flight({} KiB)`", bound / 1024),
                        fmt_ops(best),
                    )
                    .ratio(fmt_ratio(ours / best)),
            );
        }
    }
    rows
}

// ---------------------------------------------------------------- P11

/// One writer streams `n` updates of `size` bytes through a sink over the
/// first 16 MiB while `subs` subscriptions of that range count what they
/// see. Returns the writer's rate; panics if a subscriber missed a change
/// without a `Lagged` for it.
async fn p11_run(path: PathBuf, n: u64, size: usize, subs: usize) -> (f64, u64) {
    let file = p10_file(&path).await;
    let range = 16 * MIB;
    let mut readers = JoinSet::new();
    for _ in 0..subs {
        let mut sub = file.subscribe(0..range);
        readers.spawn(async move {
            let (mut seen, mut missed) = (0u64, 0u64);
            while let Some(item) = sub.next().await {
                match item {
                    Ok(_) => seen += 1,
                    Err(Error::Lagged { missed: m }) => missed += m,
                    Err(e) => panic!("subscription error {e}"),
                }
            }
            (seen, missed)
        });
    }
    let mut sink = file.update_sink();
    let mut rng = Rng::new(11);
    let mut buf = vec![3u8; size];
    let start = Instant::now();
    let mut items = stream::iter(0..n).map(|i| {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let off = rng.below(range / size as u64) * size as u64;
        Ok::<_, Error>((off, Bytes::copy_from_slice(&buf)))
    });
    sink.send_all(&mut items).await.expect("send_all");
    let elapsed = start.elapsed();
    file.close().await.expect("close");
    let mut lagged = 0;
    while let Some(done) = readers.join_next().await {
        let (seen, missed) = done.expect("reader");
        assert_eq!(seen + missed, n, "a subscriber missed changes silently");
        lagged += missed;
    }
    remove(&path);
    (rate(n, elapsed), lagged)
}

/// P11: the writer's speed with 0, 1 and 16 subscribers on its range.
pub(crate) fn p11(cfg: &Config) -> Vec<Row> {
    let rt = multi_thread(2);
    let mut rows = Vec::new();
    for (size, n) in [
        (4096usize, cfg.pick(100_000, 10_000)),
        (64, cfg.pick(500_000, 50_000)),
    ] {
        let mut best = [(0f64, 0u64); 3];
        for _ in 0..ROUNDS {
            for (k, subs) in [0usize, 1, 16].into_iter().enumerate() {
                let (r, lagged) = rt.block_on(p11_run(cfg.path("p11"), n, size, subs));
                if r > best[k].0 {
                    best[k] = (r, lagged);
                }
            }
        }
        let w = format!(
            "one writer: `send_all` of {n} × {size} B updates through an `UpdateSink` over 16 MiB, subscribers on that range counting every change, 2 workers (ratio = writer speed with / without subscribers)"
        );
        let base = best[0].0;
        for (k, subs, want) in [(1usize, 1usize, None), (2, 16, Some(0.7))] {
            let (r, lagged) = best[k];
            let mut row = Row::new("P11", &w)
                .ours(format!("{} with {subs}", fmt_ops(r)))
                .peer(
                    format!(
                        "ours without subscribers (lagged in all: {lagged} changes, each reported)"
                    ),
                    fmt_ops(base),
                )
                .ratio(fmt_ratio(r / base));
            if let (Some(want), true) = (want, size == 4096) {
                row = row.target(format!("≥ {want}×"), Met::from(r / base >= want));
            }
            rows.push(row);
        }
    }
    rows
}

// ---------------------------------------------------------------- P1S

const P1S_LEN: u64 = 64 * MIB;
const P1S_TASKS: u64 = 64;
/// The subscription watches the last MiB; the updates go everywhere else.
const P1S_WATCHED: u64 = P1S_LEN - MIB;

/// P1's loop (64 tasks, 64 B random updates) over the first 63 MiB, with or
/// without a subscription of the last MiB.
async fn p1s_run(path: PathBuf, per_task: u64, subscribed: bool) -> f64 {
    let file = p10_file(&path).await;
    let sub = subscribed.then(|| file.subscribe(P1S_WATCHED..P1S_LEN));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..P1S_TASKS {
        let file = file.clone();
        set.spawn(async move {
            let mut rng = Rng::new(t);
            let mut buf = [t as u8; 64];
            for i in 0..per_task {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                let off = rng.below(P1S_WATCHED / 64) * 64;
                file.update(off, Bytes::copy_from_slice(&buf))
                    .await
                    .expect("update");
            }
        });
    }
    join_all(set).await;
    let elapsed = start.elapsed();
    drop(sub);
    file.close().await.expect("close");
    remove(&path);
    rate(P1S_TASKS * per_task, elapsed)
}

/// P1 with one subscription on a disjoint range: the small updates keep
/// going direct.
pub(crate) fn p1s(cfg: &Config) -> Vec<Row> {
    let per_task = cfg.pick(2_000, 200);
    let rt = multi_thread(2);
    let (mut plain, mut subscribed) = (0f64, 0f64);
    for _ in 0..5 {
        plain = plain.max(rt.block_on(p1s_run(cfg.path("p1s"), per_task, false)));
        subscribed = subscribed.max(rt.block_on(p1s_run(cfg.path("p1s"), per_task, true)));
    }
    let w = format!(
        "P1 (64 B random updates, 64 tasks × {per_task}, 2 workers) over the first 63 MiB, one subscription of the last MiB (ratio = with / without)"
    );
    vec![Row::new("P1S", &w)
        .ours(fmt_ops(subscribed))
        .peer("the same loop without the subscription", fmt_ops(plain))
        .ratio(fmt_ratio(subscribed / plain))
        .target("≥ 0.8×", Met::from(subscribed / plain >= 0.8))]
}
