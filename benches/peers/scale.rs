//! P7: many open mappings (resident memory, open rate, idle CPU) and a
//! 1 TiB sparse file.
//!
//! Resident memory is a whole-process measure, and memory freed by one
//! library would be reused by the next, so each library opens its mappings
//! in a child process (this binary, re-executed with [`CHILD_FLAG`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mmap_actor::{MappedFile, Mode};

use crate::util::{
    cpu_ticks, current_thread, fmt_dur, multi_thread, proc_status_kib, raise_nofile, remove,
    ticks_per_sec, Config, KIB, TIB,
};
use crate::{Met, Row};

/// Re-executes this binary as one P7 child: `CHILD_FLAG who dir count`.
pub(crate) const CHILD_FLAG: &str = "--p7-child";

const SMALL: u64 = 4 * KIB;
const IDLE: Duration = Duration::from_secs(1);

fn small_path(dir: &Path, i: u64) -> PathBuf {
    dir.join(format!("m{i:05}"))
}

/// What one child measured.
struct Measured {
    /// Growth of VmRSS minus growth of RssFile (the mapped pages), KiB.
    rss_kib: u64,
    /// Growth of RssFile, KiB (pages of the mapped files and of code).
    file_kib: u64,
    open: Duration,
    idle_cpu: Duration,
}

/// Memory readings before the opens.
struct Before {
    rss: u64,
    file: u64,
}

fn before() -> Before {
    Before {
        rss: proc_status_kib("VmRSS"),
        file: proc_status_kib("RssFile"),
    }
}

fn measure(before: &Before, open: Duration, idle_cpu: Duration) -> Measured {
    let rss = proc_status_kib("VmRSS");
    let file = proc_status_kib("RssFile");
    let file_kib = file.saturating_sub(before.file);
    Measured {
        rss_kib: rss.saturating_sub(before.rss).saturating_sub(file_kib),
        file_kib,
        open,
        idle_cpu,
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec() as f64)
}

/// Runs in the child: opens `count` mappings with one library, keeps them
/// open and idle for a second, prints the measures as `key=value`.
pub(crate) fn child(args: &[String]) {
    let [who, dir, count] = args else {
        panic!("usage: {CHILD_FLAG} WHO DIR COUNT");
    };
    let dir = Path::new(dir);
    let count: u64 = count.parse().expect("count");
    raise_nofile(count + 512);
    let m = match who.as_str() {
        "ours" => {
            let rt = multi_thread(2);
            rt.block_on(async {
                let b = before();
                let start = Instant::now();
                let mut files = Vec::with_capacity(count as usize);
                for i in 0..count {
                    files.push(
                        MappedFile::open_rw(small_path(dir, i))
                            .await
                            .expect("open ours"),
                    );
                }
                let open = start.elapsed();
                let cpu = cpu_ticks();
                tokio::time::sleep(IDLE).await;
                let idle = ticks_to_duration(cpu_ticks() - cpu);
                let m = measure(&b, open, idle);
                drop(files);
                m
            })
        }
        "mmap-io" => {
            let b = before();
            let start = Instant::now();
            let files: Vec<_> = (0..count)
                .map(|i| {
                    mmap_io::MemoryMappedFile::open_rw(small_path(dir, i)).expect("open mmap-io")
                })
                .collect();
            let open = start.elapsed();
            let cpu = cpu_ticks();
            std::thread::sleep(IDLE);
            let m = measure(&b, open, ticks_to_duration(cpu_ticks() - cpu));
            drop(files);
            m
        }
        "memmap2" => {
            let b = before();
            let start = Instant::now();
            let maps: Vec<_> = (0..count).map(|i| map_raw(&small_path(dir, i))).collect();
            let open = start.elapsed();
            let cpu = cpu_ticks();
            std::thread::sleep(IDLE);
            let m = measure(&b, open, ticks_to_duration(cpu_ticks() - cpu));
            drop(maps);
            m
        }
        other => panic!("unknown P7 child {other}"),
    };
    println!(
        "rss_kib={} file_kib={} open_ns={} idle_cpu_ns={}",
        m.rss_kib,
        m.file_kib,
        m.open.as_nanos(),
        m.idle_cpu.as_nanos()
    );
}

#[allow(unsafe_code)]
fn map_raw(path: &Path) -> (std::fs::File, memmap2::MmapMut) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open memmap2");
    // SAFETY: the bench owns this file; nothing truncates it while mapped.
    let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map memmap2");
    (file, map)
}

fn run_child(who: &str, dir: &Path, count: u64) -> Measured {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(who)
        .arg(dir)
        .arg(count.to_string())
        .output()
        .expect("run a P7 child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "P7 child {who} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> u64 {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("P7 child {who} printed no {key}: {stdout}"))
    };
    Measured {
        rss_kib: field("rss_kib"),
        file_kib: field("file_kib"),
        open: Duration::from_nanos(field("open_ns")),
        idle_cpu: Duration::from_nanos(field("idle_cpu_ns")),
    }
}

/// The 1 TiB sparse file: create, write 4 KiB at its end, flush, close,
/// reopen, read back. Returns a description of each step's time.
async fn sparse_ours(path: &Path) -> (String, bool) {
    let len = TIB;
    let block = vec![0xC3u8; 4096];
    let t = Instant::now();
    let file = MappedFile::options()
        .mode(Mode::ReadWrite)
        .create(true)
        .truncate(true)
        .len(len)
        .preallocate(false)
        .open(path)
        .await
        .expect("create 1 TiB");
    let create = t.elapsed();
    let t = Instant::now();
    file.update(len - 4096, block.clone())
        .await
        .expect("update");
    let update = t.elapsed();
    let t = Instant::now();
    file.flush().await.expect("flush");
    let flush = t.elapsed();
    file.close().await.expect("close");
    let t = Instant::now();
    let file = MappedFile::open_rw(path).await.expect("reopen");
    let reopen = t.elapsed();
    let back = file.load(len - 4096, 4096).await.expect("load");
    let ok = back[..] == block[..] && file.len() == len;
    file.close().await.expect("close");
    let allocated = std::fs::metadata(path).map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.blocks() * 512
    });
    remove(path);
    (
        format!(
            "create {} / update {} / flush {} / reopen {}; read back {}; {} KiB allocated",
            fmt_dur(create),
            fmt_dur(update),
            fmt_dur(flush),
            fmt_dur(reopen),
            if ok { "ok" } else { "WRONG" },
            allocated / KIB
        ),
        ok,
    )
}

fn sparse_mmap_io(path: &Path) -> String {
    let len = TIB;
    let block = vec![0xC3u8; 4096];
    let t = Instant::now();
    let mm = mmap_io::MemoryMappedFile::create_rw(path, len).expect("create 1 TiB");
    let create = t.elapsed();
    let t = Instant::now();
    mm.update_region(len - 4096, &block).expect("update");
    let update = t.elapsed();
    let t = Instant::now();
    mm.flush().expect("flush");
    let flush = t.elapsed();
    drop(mm);
    let t = Instant::now();
    let mm = mmap_io::MemoryMappedFile::open_rw(path).expect("reopen");
    let reopen = t.elapsed();
    let ok = mm.as_slice(len - 4096, 4096).expect("as_slice")[..] == block[..];
    drop(mm);
    remove(path);
    format!(
        "create {} / update {} / flush {} / reopen {}; read back {}",
        fmt_dur(create),
        fmt_dur(update),
        fmt_dur(flush),
        fmt_dur(reopen),
        if ok { "ok" } else { "WRONG" }
    )
}

pub(crate) fn p7(cfg: &Config) -> Vec<Row> {
    let count = cfg.pick(10_000, 1_000);
    let dir = cfg.path("p7");
    std::fs::create_dir_all(&dir).expect("p7 dir");
    let zeros = vec![0u8; SMALL as usize];
    for i in 0..count {
        std::fs::write(small_path(&dir, i), &zeros).expect("create a small file");
    }
    let ours = run_child("ours", &dir, count);
    let mmap_io = run_child("mmap-io", &dir, count);
    let raw = run_child("memmap2", &dir, count);
    std::fs::remove_dir_all(&dir).expect("remove p7 files");

    let per = |m: &Measured| m.rss_kib as f64 / count as f64;
    let rate = |m: &Measured| count as f64 / m.open.as_secs_f64();
    let show = |m: &Measured| {
        format!(
            "{:.1} KiB/mapping RSS ({} KiB file pages in all); {:.0} opens/s; idle CPU {} over 1 s",
            per(m),
            m.file_kib,
            rate(m),
            fmt_dur(m.idle_cpu)
        )
    };
    let w = format!("{count} open 4 KiB mappings, each with its actor (ours); 2-worker runtime");
    let ok = per(&ours) <= 16.0 && ours.idle_cpu <= Duration::from_millis(10);

    let rt = current_thread();
    let (sparse, sparse_ok) = rt.block_on(sparse_ours(&cfg.path("p7-sparse-ours")));
    let sparse_peer = sparse_mmap_io(&cfg.path("p7-sparse-mmap-io"));
    vec![
        Row::new("P7", &w)
            .ours(show(&ours))
            .peer("mmap-io 1.1 `open_rw` (no task)", show(&mmap_io))
            .ratio(format!("RSS {:.1}×", per(&ours) / per(&mmap_io).max(0.01)))
            .target("≤ 16 KiB RSS each, no idle CPU", Met::from(ok)),
        Row::new("P7", &w)
            .ours(show(&ours))
            .peer("memmap2 `MmapMut::map_mut` (floor)", show(&raw))
            .ratio(format!("RSS {:.1}×", per(&ours) / per(&raw).max(0.01))),
        Row::new(
            "P7",
            "1 TiB sparse file (preallocate(false)): create, write 4 KiB at the end, flush, reopen, load",
        )
        .ours(sparse)
        .peer("mmap-io 1.1", sparse_peer)
        .target("works", Met::from(sparse_ok)),
    ]
}
