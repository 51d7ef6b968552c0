//! P5 (executor stall probe) and P6 (resize while a view is held).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mmap_actor::MappedFile;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::util::{current_thread, fmt_dur, fmt_ratio, remove, Config, Lateness, MIB};
use crate::{Met, Row};

const TICK: Duration = Duration::from_millis(1);

/// A task that sleeps 1 ms at a time on the current runtime and records
/// how late each wake-up is. A task that parks the runtime's thread shows
/// up as lateness here.
struct Ticker {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Vec<Duration>, Vec<Duration>)>,
}

/// What the ticker saw: how late it woke, and how much CPU its own thread
/// (the runtime's only thread) spent between two wake-ups. Lateness also
/// counts time the thread waited for a CPU (a busy machine); the CPU time
/// is what other tasks on the executor took.
struct Ticks {
    late: Lateness,
    busy: Lateness,
}

/// CPU time of the calling thread.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Ticker {
    fn start() -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut late = Vec::with_capacity(64 * 1024);
            let mut busy = Vec::with_capacity(64 * 1024);
            while !flag.load(Ordering::Relaxed) {
                let due = Instant::now() + TICK;
                let cpu = thread_cpu();
                tokio::time::sleep_until(due).await;
                late.push(Instant::now().saturating_duration_since(due));
                busy.push(thread_cpu().saturating_sub(cpu));
            }
            (late, busy)
        });
        Ticker { stop, task }
    }

    async fn stop(self) -> Ticks {
        self.stop.store(true, Ordering::Relaxed);
        let (late, busy) = self.task.await.expect("ticker");
        Ticks {
            late: Lateness::of(late),
            busy: Lateness::of(busy),
        }
    }
}

// ---------------------------------------------------------------- P5

async fn p5_ours(path: &Path, half: u64) -> (Ticks, Duration) {
    let ticker = Ticker::start();
    let start = Instant::now();
    let file = MappedFile::create(path, half).await.expect("create");
    let data = Bytes::from(vec![0x5Au8; MIB as usize]);
    for off in (0..half).step_by(MIB as usize) {
        file.update(off, data.clone()).await.expect("update");
    }
    file.flush().await.expect("flush");
    file.resize(2 * half).await.expect("grow");
    for off in (half..2 * half).step_by(MIB as usize) {
        file.update(off, data.clone()).await.expect("update");
    }
    file.flush().await.expect("flush");
    file.close().await.expect("close");
    // Dropping the last handle is part of the workload (it unmaps).
    drop(file);
    let elapsed = start.elapsed();
    let late = ticker.stop().await;
    remove(path);
    (late, elapsed)
}

/// mmap-io's blocking calls made from async code, as a tokio user would,
/// with a yield between calls (as if each chunk arrived from elsewhere):
/// the ticker gets the thread between calls, never during one.
async fn p5_mmap_io(path: &Path, half: u64) -> (Ticks, Duration) {
    let ticker = Ticker::start();
    let start = Instant::now();
    let mm = mmap_io::MemoryMappedFile::create_rw(path, half).expect("create_rw");
    let data = vec![0x5Au8; MIB as usize];
    for off in (0..half).step_by(MIB as usize) {
        mm.update_region(off, &data).expect("update_region");
        tokio::task::yield_now().await;
    }
    mm.flush().expect("flush");
    tokio::task::yield_now().await;
    mm.resize(2 * half).expect("resize");
    tokio::task::yield_now().await;
    for off in (half..2 * half).step_by(MIB as usize) {
        mm.update_region(off, &data).expect("update_region");
        tokio::task::yield_now().await;
    }
    mm.flush().expect("flush");
    drop(mm);
    let elapsed = start.elapsed();
    let late = ticker.stop().await;
    remove(path);
    (late, elapsed)
}

/// P5: lateness of a 1 ms ticker on a current-thread runtime while 256 MiB
/// of fresh 1 MiB updates, two flushes and a grow run on the same runtime.
pub(crate) fn p5(cfg: &Config) -> Vec<Row> {
    let total = cfg.pick(256, 64) * MIB;
    let rt = current_thread();
    let idle = rt.block_on(async {
        let ticker = Ticker::start();
        tokio::time::sleep(Duration::from_millis(500)).await;
        ticker.stop().await
    });
    let (ours, ours_time) = rt.block_on(p5_ours(&cfg.path("p5-ours"), total / 2));
    let (peer, peer_time) = rt.block_on(p5_mmap_io(&cfg.path("p5-mmap-io"), total / 2));
    let w = format!(
        "1 ms ticker lateness while {} MiB of fresh 1 MiB writes + 2 flushes + a grow run, current-thread",
        total / MIB
    );
    let ok = ours.late.max <= Duration::from_millis(5) && ours.late.p99 <= Duration::from_millis(1);
    let show = |t: &Ticks, time: Duration| {
        format!(
            "late: {}; executor CPU per tick: max {} / p99 {}; workload {}",
            t.late,
            fmt_dur(t.busy.max),
            fmt_dur(t.busy.p99),
            fmt_dur(time)
        )
    };
    vec![
        Row::new("P5", &w)
            .ours(show(&ours, ours_time))
            .peer(
                "mmap-io 1.1 sync calls from the task",
                show(&peer, peer_time),
            )
            .ratio(format!(
                "max late {}",
                fmt_ratio(ours.late.max.as_secs_f64() / peer.late.max.as_secs_f64())
            ))
            .target("ours late max ≤ 5 ms, p99 ≤ 1 ms", Met::from(ok)),
        Row::new(
            "P5",
            "same ticker, nothing else running (the timer's and the machine's noise floor)",
        )
        .ours(show(&idle, Duration::from_millis(500))),
    ]
}

// ---------------------------------------------------------------- P6

const P6_LEN: u64 = 16 * MIB;
const P6_HOLD: Duration = Duration::from_millis(50);

struct OursP6 {
    grows: Vec<Duration>,
    shrink: Duration,
    ticks: Ticks,
}

async fn p6_ours(path: &Path, grows: u64) -> OursP6 {
    let file = MappedFile::create(path, P6_LEN).await.expect("create");
    let view = file.atomic_u64(P6_LEN / 2).await.expect("atomic_u64");
    view.store(1, Ordering::Relaxed);
    let mut times = Vec::new();
    for i in 1..=grows {
        let start = Instant::now();
        file.resize(P6_LEN + i * MIB).await.expect("grow");
        times.push(start.elapsed());
        view.fetch_add(1, Ordering::Relaxed);
    }
    times.sort_unstable();

    // Shrink while another task holds a segment of the tail for 50 ms: the
    // shrink awaits its release while the ticker keeps running.
    let len = file.len();
    let tail = file.segment(len - 4096, 4096).await.expect("segment");
    let ticker = Ticker::start();
    let holder = tokio::spawn(async move {
        tokio::time::sleep(P6_HOLD).await;
        drop(tail);
    });
    let start = Instant::now();
    file.resize(P6_LEN - 4 * MIB).await.expect("shrink");
    let shrink = start.elapsed();
    let ticks = ticker.stop().await;
    holder.await.expect("holder");
    assert_eq!(view.load(Ordering::Relaxed), grows + 1);
    drop(view);
    file.close().await.expect("close");
    remove(path);
    OursP6 {
        grows: times,
        shrink,
        ticks,
    }
}

/// mmap-io 1.1: a grow with no view, then a grow while a view is held,
/// on a separate thread with a timeout (it blocks until the release).
/// Returns (grow without a view, Some(wait) if it blocked, time to finish
/// after the release).
fn p6_mmap_io(path: &Path) -> (Duration, Option<Duration>, Duration) {
    let mm = mmap_io::MemoryMappedFile::create_rw(path, P6_LEN).expect("create_rw");
    let start = std::time::Instant::now();
    mm.resize(P6_LEN + MIB).expect("grow");
    let free = start.elapsed();

    let view = mm.as_slice(P6_LEN / 2, 8).expect("as_slice");
    let other = mm.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let grower = std::thread::spawn(move || {
        other.resize(P6_LEN + 2 * MIB).expect("grow");
        let _ = tx.send(());
    });
    let timeout = Duration::from_millis(500);
    let blocked = match rx.recv_timeout(timeout) {
        Ok(()) => None,
        Err(_) => Some(timeout),
    };
    let released = std::time::Instant::now();
    drop(view);
    if blocked.is_some() {
        rx.recv().expect("grow after release");
    }
    let after = released.elapsed();
    grower.join().expect("grower");
    drop(mm);
    remove(path);
    (free, blocked, after)
}

/// P6: resize while another task holds a view.
pub(crate) fn p6(cfg: &Config) -> Vec<Row> {
    let grows = cfg.pick(20, 5);
    let rt = current_thread();
    let ours = rt.block_on(p6_ours(&cfg.path("p6-ours"), grows));
    let (free, blocked, after) = p6_mmap_io(&cfg.path("p6-mmap-io"));
    let median = ours.grows[ours.grows.len() / 2];
    let max = *ours.grows.last().expect("a grow");
    let theirs = match blocked {
        Some(t) => format!(
            "**blocks** its thread (> {}; done {} after the release); {} without a view",
            fmt_dur(t),
            fmt_dur(after),
            fmt_dur(free)
        ),
        None => format!("did not block; {} without a view", fmt_dur(free)),
    };
    // Awaited: it took at least as long as the hold. Other tasks ran: the
    // ticker kept waking during the wait (its lateness is P5's business).
    let shrink_ok = ours.shrink >= P6_HOLD.mul_f64(0.9) && ours.ticks.late.samples >= 10;
    vec![
        Row::new(
            "P6",
            format!("grow by 1 MiB with an `atomic_u64` held ({grows} grows, current-thread)"),
        )
        .ours(format!("median {} / max {}", fmt_dur(median), fmt_dur(max)))
        .peer("mmap-io 1.1 `resize` with an `as_slice` view held", theirs)
        .target(
            "< 1 ms (median)",
            Met::from(median < Duration::from_millis(1)),
        ),
        Row::new(
            "P6",
            "shrink cutting a `segment` another task holds for 50 ms; ticker on the same thread",
        )
        .ours(format!(
            "awaited {}; ticker during the wait: {}",
            fmt_dur(ours.shrink),
            ours.ticks.late
        ))
        .peer("mmap-io 1.1", "blocks its thread (as above)")
        .target(
            "awaits the release; ticker keeps ticking",
            Met::from(shrink_ok),
        ),
    ]
}
