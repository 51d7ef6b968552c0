//! Shared helpers: configuration, runtimes, file preparation, statistics,
//! formatting and `/proc` readings.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * KIB;
pub(crate) const TIB: u64 = 1024 * 1024 * MIB;

/// What the whole run was asked for.
pub(crate) struct Config {
    /// `MMAP_ACTOR_BENCH_QUICK=1`: a smoke run with small sizes.
    pub(crate) quick: bool,
    /// Where the bench files live (on a real file system: `fdatasync` on
    /// tmpfs costs nothing and would flatter every durable workload).
    pub(crate) dir: PathBuf,
}

impl Config {
    /// `full` in a normal run, `quick` in a smoke run.
    pub(crate) fn pick(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// xorshift64*: a reproducible stream of offsets, cheap enough not to
/// show in a 64-byte update.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub(crate) fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("build a multi-thread runtime")
}

pub(crate) fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime")
}

/// Writes `len` bytes of a non-zero pattern to a new file at `path` and
/// makes them durable, so that every library starts from the same
/// allocated, clean, cached file.
pub(crate) fn prefill(path: &Path, len: u64) {
    let mut file = File::create(path).expect("create a bench file");
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB);
        file.write_all(&chunk[..n as usize]).expect("prefill");
        left -= n;
    }
    file.sync_all().expect("sync the prefilled file");
}

pub(crate) fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// XOR of the little-endian `u64` words of `bytes` (a trailing partial
/// word is ignored): the scan of P8, the same function for every peer.
pub(crate) fn xor_words(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).fold(0u64, |acc, word| {
        acc ^ u64::from_le_bytes(word.try_into().expect("an 8-byte chunk"))
    })
}

/// Per-operation rate.
pub(crate) fn rate(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

pub(crate) fn fmt_ops(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M op/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k op/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0} op/s")
    }
}

pub(crate) fn fmt_bps(bytes_per_sec: f64) -> String {
    let gib = (1u64 << 30) as f64;
    if bytes_per_sec >= gib {
        format!("{:.2} GiB/s", bytes_per_sec / gib)
    } else {
        format!("{:.0} MiB/s", bytes_per_sec / MIB as f64)
    }
}

pub(crate) fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns >= 10_000_000 {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else if ns >= 10_000 {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else if ns >= 1_000 {
        format!("{:.2} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{ns} ns")
    }
}

pub(crate) fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Nanoseconds per operation.
pub(crate) fn per_op(elapsed: Duration, ops: u64) -> Duration {
    Duration::from_secs_f64(elapsed.as_secs_f64() / ops as f64)
}

/// Max and p99 of a set of lateness samples.
pub(crate) struct Lateness {
    pub(crate) samples: usize,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

impl Lateness {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Lateness {
        samples.sort_unstable();
        let n = samples.len();
        let p99 = if n == 0 {
            Duration::ZERO
        } else {
            samples[((n - 1) as f64 * 0.99).round() as usize]
        };
        Lateness {
            samples: n,
            p99,
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Lateness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max {} / p99 {} ({} ticks)",
            fmt_dur(self.max),
            fmt_dur(self.p99),
            self.samples
        )
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `RssAnon`, `RssFile`).
pub(crate) fn proc_status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in clock ticks.
pub(crate) fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the parenthesised command name: state is field 3, so
    // utime (14) and stime (15) are the 12th and 13th after it.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// Clock ticks per second, for [`cpu_ticks`].
#[allow(unsafe_code)]
pub(crate) fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf reads a configuration value and has no
    // preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100).max(1)
}

/// Raises the soft limit on open files to at least `want` (up to the hard
/// limit): each mapping keeps its file open.
#[allow(unsafe_code)]
pub(crate) fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= want {
        return;
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: `lim` is a valid `rlimit` read by the call only.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}
