//! Process crash: nothing acknowledged is lost when the process dies.
//!
//! A child process (this test binary re-executing itself) streams a seeded
//! schedule of updates, modifies, exclusive-segment writes, atomic
//! increments, flushes and resizes through one mapping, printing an
//! acknowledgement line as each one completes, while a second task bumps an
//! atomic counter and acknowledges every value. The parent kills it with
//! SIGKILL at a seeded moment, reopens the file and replays the schedule:
//! every acknowledged byte, the acknowledged length and the acknowledged
//! counter must be in the file. Only the one operation that was in flight
//! when the signal landed may be present or absent (byte by byte).
//!
//! Writes through a `MAP_SHARED` mapping live in the page cache, so they
//! survive a process crash without any flush; the length after a resize
//! must be there too.
//!
//! `MMAP_ACTOR_CRASH_RUNS` sets the number of runs (default 50) and
//! `MMAP_ACTOR_CRASH_SEED` the first seed (run `i` uses seed + i).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{child, SplitMix};
use mmap_actor::MappedFile;

/// Carries `<seed>:<path>` to the child.
const CHILD_ENV: &str = "MMAP_ACTOR_CRASH_CHILD";
const CHILD_TEST: &str = "crash_child_streams_acknowledged_operations";

/// Length of the file when the child creates it.
const INITIAL_LEN: u64 = 64 * 1024;
/// Resizes stay within these bounds.
const MIN_LEN: u64 = 8 * 1024;
const MAX_LEN: u64 = 512 * 1024;
/// Bytes `[0, RESERVED)` belong to the counter task; the schedule never
/// touches them.
const RESERVED: u64 = 64;
/// The child stops on its own after this many operations; the parent always
/// kills it long before (reaching it is a test failure).
const MAX_OPS: u64 = 100_000;

/// One step of the schedule.
#[derive(Clone, Copy, Debug)]
enum Op {
    Update { offset: u64, len: u64, seed: u64 },
    Modify { offset: u64, len: u64, xor: u8 },
    SegmentMut { offset: u64, len: u64, seed: u64 },
    Increment { offset: u64 },
    Flush,
    FlushRange { offset: u64, len: u64 },
    Resize { new_len: u64 },
}

/// The seeded schedule; child and parent generate the same one.
struct Schedule {
    rng: SplitMix,
    len: u64,
}

impl Schedule {
    fn new(seed: u64) -> Schedule {
        Schedule {
            rng: SplitMix(seed),
            len: INITIAL_LEN,
        }
    }

    /// A range inside `[RESERVED, len)` of at most `max` bytes.
    fn range(&mut self, max: u64) -> (u64, u64) {
        let room = self.len - RESERVED;
        let len = self.rng.range(1, max.min(room) + 1);
        let offset = self.rng.range(RESERVED, self.len - len + 1);
        (offset, len)
    }

    fn next_op(&mut self) -> Op {
        let pick = self.rng.range(0, 100);
        let op = match pick {
            0..=44 => {
                let max = match self.rng.range(0, 50) {
                    0 => 100 * 1024,
                    1..=5 => 8192,
                    _ => 256,
                };
                let (offset, len) = self.range(max);
                Op::Update {
                    offset,
                    len,
                    seed: self.rng.next_u64(),
                }
            }
            45..=52 => {
                let (offset, len) = self.range(4096);
                Op::Modify {
                    offset,
                    len,
                    xor: self.rng.range(1, 256) as u8,
                }
            }
            53..=60 => {
                let (offset, len) = self.range(4096);
                Op::SegmentMut {
                    offset,
                    len,
                    seed: self.rng.next_u64(),
                }
            }
            61..=75 => {
                let slots = (self.len - RESERVED) / 8;
                Op::Increment {
                    offset: RESERVED + 8 * self.rng.range(0, slots),
                }
            }
            76..=83 => Op::Flush,
            84..=87 => {
                let (offset, len) = self.range(self.len);
                Op::FlushRange { offset, len }
            }
            _ => Op::Resize {
                new_len: self.rng.range(MIN_LEN, MAX_LEN + 1),
            },
        };
        if let Op::Resize { new_len } = op {
            self.len = new_len;
        }
        op
    }
}

/// Applies `op` to the model of the file (without the counter bytes).
fn apply(model: &mut Vec<u8>, op: Op) {
    match op {
        Op::Update { offset, len, seed } | Op::SegmentMut { offset, len, seed } => {
            let (o, l) = (offset as usize, len as usize);
            model[o..o + l].copy_from_slice(&SplitMix::bytes(seed, l));
        }
        Op::Modify { offset, len, xor } => {
            for b in &mut model[offset as usize..(offset + len) as usize] {
                *b ^= xor;
            }
        }
        Op::Increment { offset } => {
            let o = offset as usize;
            let v = u64::from_le_bytes(model[o..o + 8].try_into().unwrap());
            model[o..o + 8].copy_from_slice(&v.wrapping_add(1).to_le_bytes());
        }
        Op::Flush | Op::FlushRange { .. } => {}
        Op::Resize { new_len } => model.resize(new_len as usize, 0),
    }
}

/// Prints one acknowledgement as a single write, so that a line is either
/// wholly in the pipe or not at all.
fn ack(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .expect("write acknowledgement");
    out.flush().expect("flush acknowledgement");
}

async fn perform(file: &MappedFile, op: Op) {
    match op {
        // The three update calls, by the seed: owned bytes, a borrowed
        // slice, two borrowed pieces. With the schedule's frequent flushes,
        // small ones are written with pwrite much of the time.
        Op::Update { offset, len, seed } => {
            let data = SplitMix::bytes(seed, len as usize);
            match seed % 3 {
                0 => file.update(offset, data).await,
                1 => file.update_from(offset, &data).await,
                _ => {
                    let (a, b) = data.split_at(data.len() / 2);
                    file.update_vectored(offset, &[a, b]).await
                }
            }
            .expect("update")
        }
        Op::Modify { offset, len, xor } => file
            .modify(offset, len, move |bytes| {
                for b in bytes {
                    *b ^= xor;
                }
            })
            .await
            .expect("modify"),
        Op::SegmentMut { offset, len, seed } => {
            let mut seg = file.segment_mut(offset, len).await.expect("segment_mut");
            seg.copy_from_slice(&SplitMix::bytes(seed, len as usize));
        }
        Op::Increment { offset } => {
            let view = file.atomic_u64(offset).await.expect("atomic_u64");
            view.fetch_add(1, Ordering::SeqCst);
        }
        Op::Flush => file.flush().await.expect("flush"),
        Op::FlushRange { offset, len } => file.flush_range(offset, len).await.expect("flush_range"),
        Op::Resize { new_len } => file.resize(new_len).await.expect("resize"),
    }
}

/// The child: runs the schedule until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of crash_sigkill_loses_no_acknowledged_write"]
async fn crash_child_streams_acknowledged_operations() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (seed, path) = arg.split_once(':').expect("seed:path");
    let seed: u64 = seed.parse().expect("seed");
    let file = MappedFile::create(path, INITIAL_LEN).await.expect("create");
    ack("READY\n".into());

    let counter_file = file.clone();
    tokio::spawn(async move {
        loop {
            let view = counter_file.atomic_u64(0).await.expect("counter view");
            let old = view.fetch_add(1, Ordering::SeqCst);
            drop(view);
            ack(format!("ACK C {}\n", old + 1));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let mut schedule = Schedule::new(seed);
    for i in 0..MAX_OPS {
        let op = schedule.next_op();
        perform(&file, op).await;
        ack(format!("ACK P {i}\n"));
    }
    ack("DONE\n".into());
}

/// What the parent learned from one killed child.
struct Outcome {
    ops: u64,
    counter: u64,
    bytes: u64,
}

/// One seeded run: spawn, kill, reopen, compare. Panics with the seed on
/// any loss.
fn crash_run(seed: u64, rt: &tokio::runtime::Runtime) -> Outcome {
    let scratch = common::Scratch::new();
    let path = scratch.path("crash.bin");
    let stderr_path = scratch.path("child.stderr");
    let mut plan = SplitMix(seed ^ 0xC0FF_EE00_D15E_A5E5);
    // Kill after this many schedule acknowledgements, then maybe wait a
    // little longer so that the signal also lands between acknowledgements.
    let kill_after = plan.range(1, 300);
    let extra_wait = match plan.range(0, 3) {
        0 => None,
        1 => Some(Duration::from_micros(plan.range(0, 500))),
        _ => Some(Duration::from_micros(plan.range(500, 5000))),
    };

    let mut child = child::command(CHILD_TEST, CHILD_ENV, format!("{seed}:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn crash child");
    let mut lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();

    let mut ready = false;
    let mut ops = 0u64;
    let mut counter = 0u64;
    let mut killed = false;
    let record = |line: &str, ready: &mut bool, ops: &mut u64, counter: &mut u64| {
        // The test harness prints `test NAME ... ` before the child's first
        // line, without a newline.
        let line = match line.find("ACK ").or_else(|| line.find("READY")) {
            Some(at) => &line[at..],
            None => return,
        };
        if line == "READY" {
            *ready = true;
        } else if let Some(i) = line.strip_prefix("ACK P ") {
            let i: u64 = i.parse().expect("op index");
            assert_eq!(i, *ops, "seed {seed}: acknowledgements out of order");
            *ops += 1;
        } else if let Some(v) = line.strip_prefix("ACK C ") {
            let v: u64 = v.parse().expect("counter value");
            assert!(v > *counter, "seed {seed}: counter went backwards");
            *counter = v;
        }
    };
    for line in lines.by_ref() {
        let line = line.expect("read child stdout");
        record(&line, &mut ready, &mut ops, &mut counter);
        if ops >= kill_after {
            if let Some(wait) = extra_wait {
                std::thread::sleep(wait);
            }
            child.kill().expect("SIGKILL the child");
            killed = true;
            break;
        }
    }
    // Acknowledgements printed before the signal landed are still in the
    // pipe: they count too.
    for line in lines {
        match line {
            Ok(line) => record(&line, &mut ready, &mut ops, &mut counter),
            Err(_) => break,
        }
    }
    let status = child.wait().expect("wait for child");
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        killed && child::signal(&status) == Some(child::SIGKILL),
        "seed {seed}: the child was not killed by SIGKILL (status {status:?}, {ops} ops acknowledged)\n{stderr}"
    );
    assert!(
        ready,
        "seed {seed}: the child never created the file\n{stderr}"
    );

    // Replay the schedule: `before` has every acknowledged operation,
    // `after` also the one that may have been in flight.
    let mut schedule = Schedule::new(seed);
    let mut before = vec![0u8; INITIAL_LEN as usize];
    for _ in 0..ops {
        let op = schedule.next_op();
        apply(&mut before, op);
    }
    let mut after = before.clone();
    apply(&mut after, schedule.next_op());

    let on_disk = std::fs::metadata(&path).expect("file exists").len();
    let (len, content) = rt.block_on(async {
        let file = MappedFile::open_rw(&path)
            .await
            .expect("reopen after crash");
        let content = file.load(0, file.len()).await.expect("load everything");
        (file.len(), content)
    });
    assert_eq!(
        len, on_disk,
        "seed {seed}: mapping length differs from the file's"
    );
    assert!(
        len == before.len() as u64 || len == after.len() as u64,
        "seed {seed}: length {len} after {ops} acknowledged ops, expected {} (or {} if the op in flight landed)",
        before.len(),
        after.len()
    );
    let expected = |model: &[u8], i: usize| model.get(i).copied().unwrap_or(0);
    for (i, &b) in content.iter().enumerate().skip(RESERVED as usize) {
        assert!(
            b == expected(&before, i) || b == expected(&after, i),
            "seed {seed}: byte {i} is {b:#04x}, acknowledged {:#04x} ({ops} ops acknowledged)",
            expected(&before, i)
        );
    }
    let found = u64::from_le_bytes(content[..8].try_into().unwrap());
    assert!(
        found == counter || found == counter + 1,
        "seed {seed}: counter is {found}, last acknowledged value {counter}"
    );
    Outcome {
        ops,
        counter,
        bytes: len,
    }
}

#[test]
fn crash_sigkill_loses_no_acknowledged_write() {
    let runs: u64 = std::env::var("MMAP_ACTOR_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let base: u64 = std::env::var("MMAP_ACTOR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6d6d_6170);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut ops, mut increments, mut bytes) = (0, 0, 0);
    for run in 0..runs {
        let seed = base + run;
        let outcome = crash_run(seed, &rt);
        ops += outcome.ops;
        increments += outcome.counter;
        bytes += outcome.bytes;
    }
    println!(
        "crash: {runs} SIGKILLed runs (seeds {base}..{}), {ops} acknowledged operations, \
         {increments} acknowledged counter increments, {bytes} bytes compared, 0 lost",
        base + runs
    );
}
