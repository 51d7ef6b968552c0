//! Waiting on yourself, and readers behind writers.
//!
//! Item 9: a caller that holds a lease and awaits a request conflicting
//! with it waits (its own lease blocks it), and the actor logs a warning
//! ("... waits on a lease ...") — in a spawned task *and* in the body of a
//! `block_on` (a `#[tokio::test]` body, `main`), which is not a task. The
//! class: every kind of self-conflict (update, segment_mut, atomic views
//! of either width, modify, load and segment under an exclusive lease, a
//! shrink cutting the caller's own segment). A caller waiting on *another*
//! task's lease gets no such warning.
//!
//! Item 10: a reader that holds a lease and asks for the same bytes again
//! (`load`, `segment`; an atomic view of the same width) while a writer is
//! queued behind its first lease must be served: the writer waits for the
//! reader, so queueing the reader behind the writer deadlocks both. Writers
//! still do not starve: a *new* reader (a task holding nothing) queues
//! behind the writer.
//!
//! The warnings are captured with a `tracing_subscriber` fmt subscriber
//! writing into a buffer, set as this thread's default; the tests use a
//! current-thread runtime, so the actor logs on the same thread.

mod common;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Scratch;
use mmap_actor::{MappedFile, Result};
use tokio::sync::oneshot;

/// How long a self-waiting request is given: it must still be waiting.
const WAIT: Duration = Duration::from_millis(200);
/// Hang detector only.
const HANG: Duration = Duration::from_secs(10);
const WARNING: &str = "waits on a lease";
const L: u64 = 8192;

/// Log output captured from this thread's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Captures warnings logged on this thread while the guard lives.
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (captured, guard)
}

/// A lease the caller holds, kept for its `Drop`.
type Holding = Box<dyn Send>;

/// The self-conflicts: what the caller holds, and a request of its own
/// that conflicts with it.
const SELF_CONFLICTS: &[(&str, &str)] = &[
    ("segment", "update"),
    ("segment", "segment_mut"),
    ("segment", "atomic_u64"),
    ("segment", "modify"),
    ("segment of the tail", "shrink"),
    ("segment_mut", "load"),
    ("segment_mut", "segment"),
    ("segment_mut", "update"),
    ("atomic_u64", "atomic_u32"),
    ("atomic_u64", "update"),
    ("atomic_u32", "load"),
];

async fn hold(file: &MappedFile, what: &str) -> Holding {
    match what {
        "segment" => Box::new(file.segment(0, 8).await.unwrap()),
        "segment of the tail" => Box::new(file.segment(L - 8, 8).await.unwrap()),
        "segment_mut" => Box::new(file.segment_mut(0, 8).await.unwrap()),
        "atomic_u64" => Box::new(file.atomic_u64(0).await.unwrap()),
        "atomic_u32" => Box::new(file.atomic_u32(0).await.unwrap()),
        other => panic!("unknown lease {other}"),
    }
}

async fn request(file: &MappedFile, what: &str) -> Result<()> {
    match what {
        "update" => file.update(0, vec![9u8; 8]).await,
        "segment_mut" => file.segment_mut(0, 8).await.map(drop),
        "segment" => file.segment(0, 8).await.map(drop),
        "load" => file.load(0, 8).await.map(drop),
        "atomic_u64" => file.atomic_u64(0).await.map(drop),
        "atomic_u32" => file.atomic_u32(0).await.map(drop),
        "modify" => file.modify(0, 8, |b| b.fill(3)).await,
        "shrink" => file.resize(L / 2).await,
        other => panic!("unknown request {other}"),
    }
}

/// The caller holds `held` and awaits `wanted`: it must wait, and the
/// warning must be logged.
async fn self_wait(file: &MappedFile, captured: &Captured, held: &str, wanted: &str, shape: &str) {
    captured.clear();
    let lease = hold(file, held).await;
    let got = tokio::time::timeout(WAIT, request(file, wanted)).await;
    assert!(
        got.is_err(),
        "{shape}: {wanted} completed while the caller held a conflicting {held}: {got:?}"
    );
    let log = captured.text();
    drop(lease);
    assert!(
        log.contains(WARNING),
        "{shape}: holding a {held}, the caller waited on it for {wanted}, and no warning \
         containing {WARNING:?} was logged; the log:\n{log}"
    );
    // Nothing is left behind once the lease is gone.
    drop(
        tokio::time::timeout(HANG, file.try_segment_mut(0, 8))
            .await
            .expect("try_segment_mut hung")
            .expect("try_segment_mut after the lease"),
    );
}

/// The reported case: in the test body (a `block_on`, not a task).
#[tokio::test]
async fn self_wait_in_a_block_on_body_waits_and_warns() {
    let (captured, _guard) = capture();
    let scratch = Scratch::new();
    let file = scratch.file("body", L).await;
    self_wait(&file, &captured, "segment", "update", "block_on body").await;
}

#[tokio::test]
async fn self_wait_in_a_spawned_task_waits_and_warns() {
    let (captured, _guard) = capture();
    let scratch = Scratch::new();
    let file = scratch.file("task", L).await;
    let c = captured.clone();
    tokio::spawn(async move { self_wait(&file, &c, "segment", "update", "spawned task").await })
        .await
        .unwrap();
}

/// Every self-conflict, in the `block_on` body.
#[tokio::test]
async fn self_wait_every_conflict_in_a_block_on_body() {
    let (captured, _guard) = capture();
    let scratch = Scratch::new();
    let file = scratch.file("body", L).await;
    for (held, wanted) in SELF_CONFLICTS {
        self_wait(&file, &captured, held, wanted, "block_on body").await;
    }
    assert_eq!(file.len(), L, "an abandoned shrink was applied");
}

/// Every self-conflict, in a spawned task.
#[tokio::test]
async fn self_wait_every_conflict_in_a_spawned_task() {
    let (captured, _guard) = capture();
    let scratch = Scratch::new();
    let file = scratch.file("task", L).await;
    let c = captured.clone();
    tokio::spawn(async move {
        for (held, wanted) in SELF_CONFLICTS {
            self_wait(&file, &c, held, wanted, "spawned task").await;
        }
    })
    .await
    .unwrap();
}

/// A request waiting on *another* caller's lease is an ordinary wait: no
/// warning, and it completes once that lease goes.
#[tokio::test]
async fn self_wait_no_warning_when_waiting_on_another_caller() {
    let (captured, _guard) = capture();
    let scratch = Scratch::new();
    let file = scratch.file("other", L).await;
    // Held by a task, awaited by another task.
    let (held_tx, held_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let f = file.clone();
    let holder = tokio::spawn(async move {
        let seg = f.segment(0, 8).await.unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.await;
        drop(seg);
    });
    held_rx.await.unwrap();
    let f = file.clone();
    let waiter = tokio::spawn(async move { f.update(0, vec![1u8; 8]).await });
    tokio::time::sleep(WAIT).await;
    assert!(
        !waiter.is_finished(),
        "the update did not wait for the segment"
    );
    release_tx.send(()).unwrap();
    holder.await.unwrap();
    tokio::time::timeout(HANG, waiter)
        .await
        .expect("the waiter hung")
        .unwrap()
        .unwrap();
    // Held by the test body, awaited by a spawned task.
    let seg = file.segment(0, 8).await.unwrap();
    let f = file.clone();
    let waiter = tokio::spawn(async move { f.update(0, vec![2u8; 8]).await });
    tokio::time::sleep(WAIT).await;
    assert!(
        !waiter.is_finished(),
        "the update did not wait for the segment"
    );
    drop(seg);
    tokio::time::timeout(HANG, waiter)
        .await
        .expect("the waiter hung")
        .unwrap()
        .unwrap();
    let log = captured.text();
    assert!(
        !log.contains(WARNING),
        "a wait on another caller's lease was reported as a self-wait:\n{log}"
    );
}

/// Which bytes the reader holds, and how it reads them again.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// A `Segment` of 0..8; again: `load(0, 8)` and `segment(0, 8)`.
    Segment,
    /// An `atomic_u32(0)`; again: `atomic_u32(0)` and `atomic_u32_slice(0, 2)`.
    Atomic32,
}

/// A log of who was served, in order.
type Order = Arc<Mutex<Vec<&'static str>>>;

/// B: a writer of 0..8 that holds what it gets for a moment, then logs.
async fn writer(file: MappedFile, kind: &'static str, order: Order) -> Result<()> {
    match kind {
        "segment_mut" => {
            let seg = file.segment_mut(0, 8).await?;
            order.lock().unwrap().push("B");
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(seg);
        }
        "atomic_u64" => {
            let view = file.atomic_u64(0).await?;
            order.lock().unwrap().push("B");
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(view);
        }
        "segment" => {
            let seg = file.segment(0, 8).await?;
            order.lock().unwrap().push("B");
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(seg);
        }
        "load" => {
            file.load(0, 8).await?;
            order.lock().unwrap().push("B");
        }
        "update" => {
            file.update(0, vec![0xB0u8; 8]).await?;
            order.lock().unwrap().push("B");
        }
        "modify" => {
            file.modify(0, 8, |b| b.fill(0xB1)).await?;
            order.lock().unwrap().push("B");
        }
        other => panic!("unknown writer {other}"),
    }
    Ok(())
}

/// A holds a read lease; B (a writer of the same bytes) queues behind it;
/// C (a new reader holding nothing) queues behind B; A reads the bytes
/// again: A must be served. Then A lets go, and B is served before C.
async fn reader_behind_writer(reader: Reader, writer_kind: &'static str) {
    let scratch = Scratch::new();
    let file = scratch.file("rw", L).await;
    let what = format!("{reader:?} held, {writer_kind} queued");
    let order: Order = Arc::default();

    // A: holds its lease until told to read again, then until told to go.
    let (held_tx, held_rx) = oneshot::channel();
    let (again_tx, again_rx) = oneshot::channel::<()>();
    let (reread_tx, reread_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let f = file.clone();
    let a = tokio::spawn(async move {
        let first: Box<dyn Send> = match reader {
            Reader::Segment => Box::new(f.segment(0, 8).await.unwrap()),
            Reader::Atomic32 => Box::new(f.atomic_u32(0).await.unwrap()),
        };
        held_tx.send(()).unwrap();
        again_rx.await.unwrap();
        let again = tokio::time::timeout(HANG, async {
            let r: Result<(Box<dyn Send>, Box<dyn Send>)> = match reader {
                Reader::Segment => {
                    let bytes = f.load(0, 8).await?;
                    let seg = f.segment(0, 8).await?;
                    Ok((Box::new(bytes), Box::new(seg)))
                }
                Reader::Atomic32 => {
                    let one = f.atomic_u32(0).await?;
                    let two = f.atomic_u32_slice(0, 2).await?;
                    Ok((Box::new(one), Box::new(two)))
                }
            };
            r
        })
        .await;
        let (ok, keep) = match again {
            Ok(Ok(keep)) => (Ok(()), Some(keep)),
            Ok(Err(e)) => (Err(format!("failed: {e:?}")), None),
            Err(_) => (
                Err(format!(
                    "did not complete within {HANG:?}: deadlocked behind the queued writer"
                )),
                None,
            ),
        };
        reread_tx.send(ok).unwrap();
        let _ = go_rx.await;
        drop((first, keep));
    });
    held_rx.await.unwrap();

    let b = tokio::spawn(writer(file.clone(), writer_kind, Arc::clone(&order)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !b.is_finished(),
        "{what}: the writer was served while A held its lease"
    );

    let f = file.clone();
    let o = Arc::clone(&order);
    let c = tokio::spawn(async move {
        match reader {
            Reader::Segment => {
                let seg = f.segment(0, 8).await?;
                o.lock().unwrap().push("C");
                drop(seg);
            }
            Reader::Atomic32 => {
                let view = f.atomic_u32(0).await?;
                o.lock().unwrap().push("C");
                drop(view);
            }
        }
        Ok::<(), mmap_actor::Error>(())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    again_tx.send(()).unwrap();
    let reread = reread_rx.await.expect("A died");
    if let Err(why) = reread {
        // Let everyone finish before failing.
        let _ = go_tx.send(());
        let _ = tokio::time::timeout(HANG, a).await;
        panic!("{what}: A's second read of the bytes it holds {why}");
    }
    assert!(
        !b.is_finished(),
        "{what}: the writer was served while A held its leases"
    );
    assert!(
        order.lock().unwrap().is_empty(),
        "{what}: served while A held its leases: {:?}",
        order.lock().unwrap()
    );

    go_tx.send(()).unwrap();
    tokio::time::timeout(HANG, a)
        .await
        .expect("A hung")
        .unwrap();
    tokio::time::timeout(HANG, b)
        .await
        .unwrap_or_else(|_| panic!("{what}: the writer was never served"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: the writer failed: {e:?}"));
    tokio::time::timeout(HANG, c)
        .await
        .unwrap_or_else(|_| panic!("{what}: the new reader was never served"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: the new reader failed: {e:?}"));
    assert_eq!(
        *order.lock().unwrap(),
        ["B", "C"],
        "{what}: the writer must be served before the reader that came after it"
    );
}

#[tokio::test]
async fn self_wait_reader_is_not_queued_behind_a_writer_waiting_on_it() {
    reader_behind_writer(Reader::Segment, "segment_mut").await;
}

#[tokio::test]
async fn self_wait_reader_and_every_writer() {
    for w in ["segment_mut", "update", "modify", "atomic_u64"] {
        reader_behind_writer(Reader::Segment, w).await;
    }
}

#[tokio::test]
async fn self_wait_atomic_reader_is_not_queued_behind_a_writer_waiting_on_it() {
    reader_behind_writer(Reader::Atomic32, "segment_mut").await;
}

#[tokio::test]
async fn self_wait_atomic_reader_and_every_other_access() {
    for w in ["update", "atomic_u64", "load", "segment"] {
        reader_behind_writer(Reader::Atomic32, w).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_wait_reader_behind_writer_on_a_multi_thread_runtime() {
    reader_behind_writer(Reader::Segment, "segment_mut").await;
    reader_behind_writer(Reader::Atomic32, "segment_mut").await;
}

/// A holds a segment of the tail; a shrink cutting it is queued; A reads
/// the tail again: served. Once A lets go, the shrink completes.
#[tokio::test]
async fn self_wait_reader_is_not_queued_behind_a_shrink_waiting_on_it() {
    let scratch = Scratch::new();
    let file = scratch.file("shrink", L).await;
    let seg = file.segment(L - 8, 8).await.unwrap();
    let f = file.clone();
    let shrink = tokio::spawn(async move { f.resize(L / 2).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!shrink.is_finished(), "the shrink cut a live segment");
    let again = tokio::time::timeout(HANG, async {
        let bytes = file.load(L - 8, 8).await?;
        let seg = file.segment(L - 8, 8).await?;
        Ok::<_, mmap_actor::Error>((bytes, seg))
    })
    .await;
    let again = match again {
        Ok(Ok(again)) => again,
        Ok(Err(e)) => panic!("reading the held tail again failed: {e:?}"),
        Err(_) => {
            drop(seg);
            panic!("reading the held tail again deadlocked behind the queued shrink");
        }
    };
    assert!(!shrink.is_finished(), "the shrink cut a live segment");
    drop((seg, again));
    tokio::time::timeout(HANG, shrink)
        .await
        .expect("the shrink was never served")
        .unwrap()
        .unwrap();
    assert_eq!(file.len(), L / 2);
}

/// The same from the `block_on` body: it holds a segment, a spawned task
/// waits for an exclusive lease, and the body reads the bytes again.
#[tokio::test]
async fn self_wait_block_on_reader_is_not_queued_behind_a_writer_waiting_on_it() {
    let scratch = Scratch::new();
    let file = scratch.file("body", L).await;
    let seg = file.segment(0, 8).await.unwrap();
    let f = file.clone();
    let writer = tokio::spawn(async move { f.segment_mut(0, 8).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished());
    let again = tokio::time::timeout(HANG, async {
        let bytes = file.load(0, 8).await?;
        let seg = file.segment(0, 8).await?;
        Ok::<_, mmap_actor::Error>((bytes, seg))
    })
    .await;
    let again = match again {
        Ok(r) => r.expect("reading the held bytes again"),
        Err(_) => {
            drop(seg);
            panic!("the block_on body's second read deadlocked behind the queued writer");
        }
    };
    drop((seg, again));
    tokio::time::timeout(HANG, writer)
        .await
        .expect("the writer was never served")
        .unwrap()
        .unwrap();
    // The counter in an atomic view stays usable meanwhile.
    let v = file.atomic_u64(64).await.unwrap();
    v.fetch_add(1, Ordering::SeqCst);
}
