//! `Appender` and `AppendSink`: records reserved in arrival order from every
//! clone, growth in steps (and a failed grow that moves nothing), durable
//! appends covered by shared syncs, positions, leases at the cursor,
//! cancellation, bad input, and a crash child: every acknowledged durable
//! record survives SIGKILL and is never behind a hole.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::{child, Scratch, SplitMix};
use futures::{stream, SinkExt, StreamExt};
use mmap_actor::{ChangeKind, Error, MappedFile};

/// Hang detector only.
const PROMPT: Duration = Duration::from_secs(30);

async fn prompt<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// A self-checking record: `[len u32][task u32][index u32][sum u32]` then
/// `len` payload bytes derived from (task, index).
fn record(task: u32, index: u32, len: usize) -> Vec<u8> {
    let payload = SplitMix::bytes(u64::from(task) << 32 | u64::from(index), len);
    let sum = payload.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut out = Vec::with_capacity(16 + len);
    for v in [len as u32, task, index, sum] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&payload);
    out
}

/// Scans records from offset 0: returns `(offset, task, index)` of each
/// valid record, stopping at the first hole (a zero length) or garbage.
fn scan(bytes: &[u8]) -> Vec<(u64, u32, u32)> {
    let mut found = Vec::new();
    let mut at = 0usize;
    while at + 16 <= bytes.len() {
        let word =
            |i: usize| u32::from_le_bytes(bytes[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
        let (len, task, index) = (word(0) as usize, word(1), word(2));
        if len == 0 || at + 16 + len > bytes.len() {
            break;
        }
        if bytes[at..at + 16 + len] != record(task, index, len)[..] {
            break;
        }
        found.push((at as u64, task, index));
        at += 16 + len;
    }
    found
}

fn record_len(task: u32, index: u32) -> usize {
    1 + ((task as usize * 7 + index as usize * 13) % 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appender_clones_share_one_cursor_in_arrival_order() {
    let s = Scratch::new();
    let file = s.file("log", 0).await;
    let log = file.appender(0).grow_step(4096);
    let tasks = 16u32;
    let per_task = 200u32;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let log = log.clone();
        set.spawn(async move {
            let mut mine = Vec::new();
            for i in 0..per_task {
                let rec = record(task, i, record_len(task, i));
                let at = log.append(rec.clone()).await.expect("append");
                // Visible when append returns; position is past it.
                assert!(log.position() >= at + rec.len() as u64);
                mine.push((at, task, i));
            }
            mine
        });
    }
    let mut acked = Vec::new();
    while let Some(mine) = set.join_next().await {
        acked.extend(mine.unwrap());
    }
    acked.sort_unstable();
    let total: u64 = (0..tasks)
        .flat_map(|t| (0..per_task).map(move |i| 16 + record_len(t, i) as u64))
        .sum();
    assert_eq!(
        log.position(),
        total,
        "position is the end of what was appended"
    );
    assert_eq!(file.len() % 4096, 0, "grown in whole steps");
    assert!(
        file.len() >= total && file.len() < total + 4096,
        "len {}",
        file.len()
    );
    let found = scan(&file.load(0, file.len()).await.unwrap());
    assert_eq!(
        found, acked,
        "every record at its offset, back to back, no hole"
    );
    // Each task's records are in its own order.
    for task in 0..tasks {
        let mine: Vec<u32> = found.iter().filter(|r| r.1 == task).map(|r| r.2).collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "task {task} out of order"
        );
    }
    // Not durable: nothing moved the durable position.
    assert_eq!(log.durable_position(), 0);
    assert_eq!(log.flush().await.unwrap(), total);
    assert_eq!(log.durable_position(), total);
}

#[tokio::test]
async fn appender_vectored_parts_make_one_record() {
    let s = Scratch::new();
    let file = s.file("log", 100).await;
    let log = file.appender(10).grow_step(0);
    assert_eq!(
        log.append_vectored(&[b"head", b"", b"er:", b"body"])
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        log.append(Bytes::new()).await.unwrap(),
        21,
        "an empty record"
    );
    assert_eq!(log.append(b"!".to_vec()).await.unwrap(), 21);
    assert_eq!(&file.load(10, 12).await.unwrap()[..], b"header:body!");
    assert_eq!(log.position(), 22);
}

/// `grow_step(0)`: a fixed-size log; a record that does not fit fails and
/// moves nothing (the next that fits goes where the failed one would have).
#[tokio::test]
async fn appender_without_growth_fails_at_the_end_and_keeps_its_cursor() {
    let s = Scratch::new();
    let file = s.file("log", 100).await;
    let log = file.appender(0).grow_step(0);
    log.append(vec![1u8; 90]).await.unwrap();
    let err = log.append(vec![2u8; 11]).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfBounds {
                offset: 90,
                len: 11,
                file_len: 100
            }
        ),
        "{err:?}"
    );
    assert_eq!(log.position(), 90);
    assert_eq!(file.len(), 100);
    assert_eq!(log.append(vec![3u8; 10]).await.unwrap(), 90);
    assert_eq!(file.load(90, 10).await.unwrap()[..], [3u8; 10]);
}

/// Bad input: a cursor whose end overflows, a read-only mapping, a
/// copy-on-write mapping that would have to grow, a closed mapping.
#[tokio::test]
async fn appender_bad_input_is_typed() {
    let s = Scratch::new();
    let file = s.file("log", 4096).await;
    let log = file.appender(u64::MAX - 3);
    assert!(
        matches!(
            log.append(vec![0u8; 8]).await,
            Err(Error::OutOfBounds { .. })
        ),
        "an end past u64::MAX"
    );
    let huge = file.appender(1 << 63).grow_step(1);
    assert!(
        matches!(huge.append(vec![0u8; 8]).await, Err(Error::TooLarge { .. })),
        "growing past the largest file"
    );
    assert_eq!(file.len(), 4096);

    let path = s.path("ro");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let ro = MappedFile::open_ro(&path).await.unwrap();
    let err = ro.appender(0).append(b"x".to_vec()).await.unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    let mut sink = ro.appender(0).sink();
    assert!(matches!(
        sink.send(Bytes::from_static(b"x")).await,
        Err(Error::ReadOnly { .. })
    ));

    let cow = MappedFile::open_cow(&path).await.unwrap();
    let log = cow.appender(4000);
    assert_eq!(
        log.append(vec![9u8; 96]).await.unwrap(),
        4000,
        "fits: private pages"
    );
    let err = log.append(b"more".to_vec()).await.unwrap_err();
    assert!(
        matches!(err, Error::ReadOnly { .. }),
        "cow cannot grow: {err:?}"
    );
    assert_eq!(log.position(), 4096);

    file.close().await.unwrap();
    assert!(matches!(
        file.appender(0).append(b"x".to_vec()).await,
        Err(Error::Closed)
    ));
}

/// Durable appends from many tasks: each returns durable (the durable
/// position covers it), and they share syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appender_durable_appends_cover_their_records() {
    let s = Scratch::new();
    let file = s.file("log", 0).await;
    let log = file.appender(0).durable(true).grow_step(1 << 16);
    let mut watch = log.watch_position();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..8u32 {
        let log = log.clone();
        set.spawn(async move {
            for i in 0..20u32 {
                let rec = record(task, i, 100);
                let at = log.append(rec.clone()).await.unwrap();
                assert!(
                    log.durable_position() >= at + rec.len() as u64,
                    "returned before its record was durable"
                );
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    assert_eq!(log.durable_position(), log.position());
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), log.position());
}

/// A tailing reader follows `watch_position` and reads every record once
/// it is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appender_tailing_reader_follows_the_durable_position() {
    let s = Scratch::new();
    let file = s.file("log", 0).await;
    let log = file.appender(0).durable(true).grow_step(4096);
    let mut watch = log.watch_position();
    let reader_file = file.clone();
    let n = 100u32;
    let reader = tokio::spawn(async move {
        let mut read_to = 0u64;
        let mut seen = Vec::new();
        while seen.len() < n as usize {
            watch.changed().await.expect("the appender is alive");
            let durable = *watch.borrow_and_update();
            let bytes = reader_file.load(read_to, durable - read_to).await.unwrap();
            let found = scan(&bytes);
            let consumed: u64 = found
                .iter()
                .map(|&(_, t, i)| 16 + record_len(t, i) as u64)
                .sum();
            assert_eq!(
                consumed,
                durable - read_to,
                "a durable prefix ends on a record"
            );
            seen.extend(found.into_iter().map(|r| r.2));
            read_to = durable;
        }
        seen
    });
    for i in 0..n {
        log.append(record(0, i, record_len(0, i))).await.unwrap();
    }
    let seen = prompt("tailing reader", reader).await.unwrap();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
}

/// A lease at the cursor: the append waits in its place, later appends
/// queue behind it, and the records land in order once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appender_waits_for_a_lease_at_its_cursor_in_place() {
    let s = Scratch::new();
    let file = s.file("log", 1 << 16).await;
    let log = file.appender(0).grow_step(0);
    log.append(record(0, 0, 10)).await.unwrap();
    let held = file.segment(26, 10).await.unwrap();
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(record(0, 1, 10)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn({
        let log = log.clone();
        async move { log.append(record(0, 2, 10)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "appended under a lease"
    );
    assert_eq!(log.position(), 26);
    drop(held);
    assert_eq!(prompt("first", first).await.unwrap().unwrap(), 26);
    assert_eq!(prompt("second", second).await.unwrap().unwrap(), 52);
    let found = scan(&file.load(0, 78).await.unwrap());
    assert_eq!(found.iter().map(|r| r.2).collect::<Vec<_>>(), [0, 1, 2]);
}

/// Dropping append futures at random points: each record is appended
/// whole or not at all, and the log never has a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appender_dropped_appends_leave_no_hole() {
    let s = Scratch::new();
    let file = s.file("log", 0).await;
    let log = file.appender(0).grow_step(8192);
    let mut rng = SplitMix(7);
    let mut completed = HashSet::new();
    for i in 0..2000u32 {
        let rec = record(1, i, record_len(1, i));
        let mut fut = Box::pin(log.append(rec));
        let polls = rng.range(0, 40);
        let mut done = false;
        for _ in 0..polls {
            if let std::task::Poll::Ready(r) = futures::poll!(fut.as_mut()) {
                r.unwrap();
                done = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        if done {
            completed.insert(i);
        }
        // Dropped here if not done.
    }
    // Let everything sent settle.
    log.append(record(1, 9999, 5)).await.unwrap();
    let found = scan(&file.load(0, file.len()).await.unwrap());
    let bytes = file.load(0, file.len()).await.unwrap();
    let end = found.last().map(|&(at, ..)| {
        let len = u32::from_le_bytes(bytes[at as usize..at as usize + 4].try_into().unwrap());
        at + 16 + u64::from(len)
    });
    assert_eq!(
        end,
        Some(log.position()),
        "the scan reaches the cursor: no hole"
    );
    let present: HashSet<u32> = found.iter().map(|r| r.2).collect();
    for i in &completed {
        assert!(present.contains(i), "completed append {i} missing");
    }
    println!(
        "{} completed, {} appended in all (dropped ones may land)",
        completed.len(),
        found.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_sink_appends_records_in_order() {
    let s = Scratch::new();
    let file = s.file("log", 0).await;
    let log = file.appender(0).grow_step(1 << 16).durable(true);
    let mut sink = log.sink();
    let records: Vec<Bytes> = (0..5000u32)
        .map(|i| Bytes::from(record(2, i, record_len(2, i))))
        .collect();
    let total: u64 = records.iter().map(|r| r.len() as u64).sum();
    prompt(
        "send_all",
        sink.send_all(&mut stream::iter(records.into_iter().map(Ok))),
    )
    .await
    .unwrap();
    assert_eq!(log.position(), total);
    assert_eq!(
        log.durable_position(),
        total,
        "durable sink: durable when flushed"
    );
    sink.close().await.unwrap();
    let found = scan(&file.load(0, total).await.unwrap());
    assert_eq!(
        found.iter().map(|r| r.2).collect::<Vec<_>>(),
        (0..5000).collect::<Vec<_>>()
    );
    assert!(matches!(
        sink.send(Bytes::from_static(b"x")).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn appends_are_reported_to_subscriptions() {
    let s = Scratch::new();
    let file = s.file("log", 4096).await;
    let mut changes = file.subscribe_with_data(0..4096);
    let log = file.appender(0).grow_step(4096);
    log.append(b"one".to_vec()).await.unwrap();
    log.append(vec![5u8; 4096]).await.unwrap(); // grows the file first
    let a = changes.next().await.unwrap().unwrap();
    assert_eq!((a.offset(), a.len(), a.kind()), (0, 3, ChangeKind::Append));
    assert_eq!(&a.data().unwrap()[..], b"one");
    let grow = changes.next().await.unwrap().unwrap();
    assert_eq!(
        grow.kind(),
        ChangeKind::Resize {
            old_len: 4096,
            new_len: 8192
        }
    );
    let b = changes.next().await.unwrap().unwrap();
    assert_eq!(
        (b.offset(), b.len(), b.kind()),
        (3, 4096, ChangeKind::Append)
    );
    assert_eq!(b.data().unwrap().len(), 4093, "cut to the range");
}

// ---------------------------------------------------------------------
// Durable appends share syncs (strace -c).

const CHILD_ENV: &str = "MMAP_ACTOR_APPENDER_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child of appender_concurrent_durable_appends_share_syncs"]
async fn appender_child_concurrent_durable_appends() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let file = MappedFile::create(Path::new(&dir).join("log"), 1 << 20)
        .await
        .unwrap();
    let log = file.appender(0).durable(true);
    let mut set = tokio::task::JoinSet::new();
    for task in 0..32u32 {
        let log = log.clone();
        set.spawn(async move {
            for i in 0..10u32 {
                log.append(record(task, i, 100)).await.unwrap();
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    println!("APPENDED 320");
    std::mem::forget(file);
}

#[test]
fn appender_concurrent_durable_appends_share_syncs() {
    const NAME: &str = "appender_concurrent_durable_appends_share_syncs";
    if !common::have("strace") {
        return child::skip(NAME, "strace is not installed");
    }
    let s = Scratch::new();
    let summary = s.path("strace.txt");
    let (status, output) = common::rerun(
        "appender_child_concurrent_durable_appends",
        &[
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=fdatasync,fsync,msync",
            "-o",
            summary.to_str().unwrap(),
        ],
        &[(CHILD_ENV, s.dir.path().display().to_string())],
    );
    assert!(
        status.success() && output.contains("APPENDED 320"),
        "{output}"
    );
    let counts = common::strace_counts(&std::fs::read_to_string(&summary).unwrap());
    let syncs = counts.get("fdatasync").copied().unwrap_or(0);
    // Creation syncs once; 320 durable appends from 32 tasks need at
    // least 10 syncs (each task's appends follow one another) and share
    // them: far fewer than one each.
    assert!(syncs > 10, "durable appends without syncs: {counts:?}");
    assert!(
        syncs < 320 / 2,
        "durable appends do not share syncs: {counts:?}"
    );
    assert!(!counts.contains_key("msync"), "{counts:?}");
    println!("320 durable appends: {syncs} fdatasync calls");
}

// ---------------------------------------------------------------------
// A full disk: ENOSPC from append, the cursor stays, nothing straddles.

#[tokio::test]
#[ignore = "child of appender_on_a_full_disk_is_enospc_and_moves_nothing"]
async fn appender_child_full_disk() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mnt = Path::new(&dir).join("tmpfs");
    std::fs::create_dir_all(&mnt).unwrap();
    child::sh(&format!(
        "mount -t tmpfs -o size=1m tmpfs '{}'",
        mnt.display()
    ));
    let file = MappedFile::create(mnt.join("log"), 0).await.unwrap();
    let log = file.appender(0).grow_step(64 * 1024);
    let mut appended = 0u32;
    let err = loop {
        match log.append(record(3, appended, 1000)).await {
            Ok(_) => appended += 1,
            Err(err) => break err,
        }
        assert!(appended < 10_000, "a 1 MiB tmpfs never filled up");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err:?}");
    let position = log.position();
    let len = file.len();
    assert_eq!(position, u64::from(appended) * 1016, "the cursor stayed");
    // Again: the same error, nothing moves; records that fit still go in.
    assert!(log.append(record(3, appended, 1000)).await.is_err());
    assert_eq!((log.position(), file.len()), (position, len));
    let fits = (len - position).saturating_sub(16).min(100) as usize;
    if fits > 0 {
        assert_eq!(
            log.append(record(3, appended, fits)).await.unwrap(),
            position
        );
    }
    let found = scan(&file.load(0, file.len()).await.unwrap());
    assert_eq!(
        found.len() as u32,
        appended + u32::from(fits > 0),
        "no record straddles"
    );
    println!("SCENARIO-PASSED full_disk after {appended} records, len {len}");
}

#[test]
fn appender_on_a_full_disk_is_enospc_and_moves_nothing() {
    const NAME: &str = "appender_on_a_full_disk_is_enospc_and_moves_nothing";
    if let Some(why) = child::mount_namespace_unavailable() {
        return child::skip(NAME, &why);
    }
    let s = Scratch::new();
    let out = child::run(&mut child::wrapped(
        &["unshare", "-m", "--propagation", "private"],
        "appender_child_full_disk",
        CHILD_ENV,
        s.dir.path().display().to_string(),
    ));
    assert_eq!(
        child::signal(&out.status),
        None,
        "killed (SIGBUS?)\n{}",
        child::describe(&out)
    );
    child::assert_success(&out, "SCENARIO-PASSED full_disk");
}

// ---------------------------------------------------------------------
// Crash: every acknowledged durable record survives SIGKILL, never behind
// a hole.

const CRASH_CHILD: &str = "appender_crash_child_appends_until_killed";
const CRASH_TASKS: u32 = 8;

fn ack(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).expect("ack");
    out.flush().expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child of appender_crash_keeps_every_acknowledged_record"]
async fn appender_crash_child_appends_until_killed() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let file = MappedFile::create(&path, 0).await.expect("create");
    let log = file.appender(0).durable(true).grow_step(16 * 1024);
    ack("READY\n".into());
    let mut set = tokio::task::JoinSet::new();
    for task in 0..CRASH_TASKS {
        let log = log.clone();
        set.spawn(async move {
            for i in 0..100_000u32 {
                let at = log
                    .append(record(task, i, record_len(task, i)))
                    .await
                    .expect("append");
                ack(format!("ACK {task} {i} {at}\n"));
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
}

#[test]
fn appender_crash_keeps_every_acknowledged_record() {
    let runs: u64 = std::env::var("MMAP_ACTOR_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut total_acked = 0usize;
    for run in 0..runs {
        let s = Scratch::new();
        let path = s.path("log");
        let mut plan = SplitMix(run);
        let kill_after = plan.range(1, 400) as usize;
        let mut child = child::command(CRASH_CHILD, CHILD_ENV, path.display().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        let mut killed = false;
        let parse = |line: &str, acked: &mut Vec<(u64, u32, u32)>| {
            if let Some(at) = line.find("ACK ") {
                let f: Vec<u64> = line[at + 4..]
                    .split(' ')
                    .map(|v| v.parse().unwrap())
                    .collect();
                acked.push((f[2], f[0] as u32, f[1] as u32));
            }
        };
        for line in lines.by_ref() {
            parse(&line.unwrap(), &mut acked);
            if acked.len() >= kill_after {
                child.kill().unwrap();
                killed = true;
                break;
            }
        }
        for line in lines.map_while(Result::ok) {
            parse(&line, &mut acked);
        }
        let status = child.wait().unwrap();
        assert!(
            killed && child::signal(&status) == Some(child::SIGKILL),
            "run {run}: {status:?}"
        );
        let bytes = std::fs::read(&path).expect("the log exists");
        let found = scan(&bytes);
        let found_set: HashSet<(u64, u32, u32)> = found.iter().copied().collect();
        for rec in &acked {
            assert!(
                found_set.contains(rec),
                "run {run}: acknowledged record {rec:?} lost or behind a hole ({} found)",
                found.len()
            );
        }
        total_acked += acked.len();
    }
    println!("appender crash: {runs} SIGKILLed runs, {total_acked} acknowledged records, 0 lost");
}

/// `Appender` is `Clone + Send + Sync + 'static`, its futures are `Send`,
/// its sink `Send + Unpin + 'static`.
#[test]
fn appender_auto_traits() {
    fn send_sync_clone_static<T: Send + Sync + Clone + 'static>() {}
    send_sync_clone_static::<mmap_actor::Appender>();
    fn send_unpin_static<T: Send + Unpin + 'static>() {}
    send_unpin_static::<mmap_actor::AppendSink>();
    fn send_future<F: std::future::Future + Send>(_: F) {}
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures(log: mmap_actor::Appender) {
        send_future(log.append(vec![1u8]));
        send_future(log.append_vectored(&[b"a"]));
        send_future(log.flush());
    }
}
