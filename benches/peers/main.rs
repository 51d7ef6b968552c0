//! Side-by-side benchmarks of `mmap-actor` against its peers, one workload
//! per performance target (P1–P11, listed in docs/PERFORMANCE.md), and
//! per-call rows for the hint calls and flush policies (H1–H3, `hints.rs`).
//!
//! Every workload runs our crate and its peers in the same process, one
//! after the other, on the same files and sizes, and prints one table row
//! per (workload, peer) with the ratio and the target. Whole-process
//! measures (P7: resident memory per mapping) run in a child process per
//! library, re-executing this binary.
//!
//! ```text
//! cargo bench --bench peers                      # everything (a few minutes)
//! MMAP_ACTOR_BENCH_QUICK=1 cargo bench --bench peers   # smoke run, small sizes
//! cargo bench --bench peers -- P1 P5             # only some workloads
//! ```
//!
//! `MMAP_ACTOR_BENCH_DIR` picks the directory for the bench files (default:
//! the system temp dir). It must be a real file system: on tmpfs
//! `fdatasync` is free and the durable workloads mean nothing.

mod chart;
mod durable;
mod hints;
mod latency;
mod reads;
mod scale;
mod small;
mod streams;
mod throughput;
mod util;

use std::time::Instant;

use util::Config;

/// Whether a row meets its target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Met {
    Yes,
    No,
    /// A reference row (the raw floor, a non-durable peer): no target.
    Info,
}

impl Met {
    pub(crate) fn from(ok: bool) -> Met {
        if ok {
            Met::Yes
        } else {
            Met::No
        }
    }
}

/// One line of the results table.
pub(crate) struct Row {
    pub(crate) id: &'static str,
    pub(crate) workload: String,
    pub(crate) ours: String,
    pub(crate) peer: String,
    pub(crate) theirs: String,
    /// Ours relative to the peer, with its direction spelled out in
    /// `target` (a speed-up for throughput, a time ratio for latency).
    pub(crate) ratio: String,
    pub(crate) target: String,
    pub(crate) met: Met,
}

impl Row {
    pub(crate) fn new(id: &'static str, workload: impl Into<String>) -> Row {
        Row {
            id,
            workload: workload.into(),
            ours: String::new(),
            peer: String::new(),
            theirs: String::new(),
            ratio: "–".into(),
            target: "–".into(),
            met: Met::Info,
        }
    }

    pub(crate) fn ours(mut self, ours: impl Into<String>) -> Row {
        self.ours = ours.into();
        self
    }

    pub(crate) fn peer(mut self, peer: impl Into<String>, theirs: impl Into<String>) -> Row {
        self.peer = peer.into();
        self.theirs = theirs.into();
        self
    }

    pub(crate) fn ratio(mut self, ratio: impl Into<String>) -> Row {
        self.ratio = ratio.into();
        self
    }

    pub(crate) fn target(mut self, target: impl Into<String>, met: Met) -> Row {
        self.target = target.into();
        self.met = met;
        self
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| id | workload | ours | peer | peer's result | ratio | target | met? |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Met::Yes => "yes",
            Met::No => "**no**",
            Met::Info => "–",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.id, r.workload, r.ours, r.peer, r.theirs, r.ratio, r.target, met
        );
    }
    let missed: Vec<String> = rows
        .iter()
        .filter(|r| r.met == Met::No)
        .map(|r| {
            if r.peer.is_empty() {
                r.id.to_string()
            } else {
                format!("{} vs {}", r.id, r.peer)
            }
        })
        .collect();
    println!();
    if missed.is_empty() {
        println!("every target met");
    } else {
        println!("targets missed: {}", missed.join(", "));
    }
}

type Workload = fn(&Config) -> Vec<Row>;

const WORKLOADS: [(&str, Workload); 16] = [
    ("P1", small::p1),
    ("P2", throughput::p2),
    ("P3", throughput::p3),
    ("P4", durable::p4),
    ("P4B", durable::p4b),
    ("P5", latency::p5),
    ("P6", latency::p6),
    ("P7", scale::p7),
    ("P8", reads::p8),
    ("P1S", streams::p1s),
    ("P9", streams::p9),
    ("P10", streams::p10),
    ("P11", streams::p11),
    ("H1", hints::h1),
    ("H2", hints::h2),
    ("H3", hints::h3),
];

/// Counts the syncs the group commits start (their "sync started" debug
/// events, the only events of their modules but a failed sync's) for
/// P4b's appends per sync.
struct SyncCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SyncCounter {
    fn on_event(
        &self,
        _event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        durable::SYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn count_syncs() {
    use tracing_subscriber::prelude::*;
    let only_syncs = tracing_subscriber::filter::Targets::new()
        .with_target("mmap_actor::actor::group_commit", tracing::Level::DEBUG)
        .with_target("mmap_actor::actor::caller_sync", tracing::Level::DEBUG);
    let _ = tracing_subscriber::registry()
        .with(SyncCounter.with_filter(only_syncs))
        .try_init();
}

fn main() {
    count_syncs();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == scale::CHILD_FLAG) {
        scale::child(&args[i + 1..]);
        return;
    }
    // `cargo bench` passes `--bench`; anything else not starting with `-`
    // selects workloads by id.
    let wanted: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.to_uppercase())
        .collect();
    let quick = std::env::var("MMAP_ACTOR_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let base = std::env::var_os("MMAP_ACTOR_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("mmap-actor-bench")
        .tempdir_in(&base)
        .expect("create the bench directory");
    let cfg = Config {
        quick,
        dir: dir.path().to_path_buf(),
    };
    eprintln!(
        "mmap-actor peers bench: {} mode, files in {}",
        if quick { "quick" } else { "full" },
        cfg.dir.display()
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for (id, run) in WORKLOADS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == id) {
            continue;
        }
        let t = Instant::now();
        eprintln!("{id} ...");
        rows.extend(run(&cfg));
        eprintln!("{id} done in {:.1} s", t.elapsed().as_secs_f64());
    }
    print_table(&rows);
    chart::write(&rows);
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
