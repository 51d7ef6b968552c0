//! Power loss for the streaming writers: every record a durable appender
//! acknowledged, and every item a durable update sink flushed, is in a copy
//! of the disk taken at that moment.
//!
//! As in `power_loss.rs`: a child process in a private mount namespace
//! loop-mounts a fresh ext4 image and copies the image file while it is
//! mounted and being written (the copy is what the disk held at that
//! moment), then mounts the copy on its own loop device (the journal is
//! replayed, as after a power cut) and reads it there, never through the
//! page cache that was written.
//!
//! - **Appender**: eight tasks append durable, self-checking records to one
//!   log and keep appending while the image is copied. Every record
//!   acknowledged before the copy started must be in the copy, whole, with
//!   no hole before it (the scan from offset 0 reaches it).
//! - **Durable sink**: a sink sends a seeded stream of updates and flushes
//!   (one `fdatasync`); more items follow unflushed while the image is
//!   copied. The copy holds every flushed item (checked against a model).
//!
//! Skips (with a printed reason) where loop devices or mount namespaces are
//! unavailable.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{child, SplitMix};
use futures::{stream, SinkExt};
use mmap_actor::MappedFile;

const CHILD_ENV: &str = "MMAP_ACTOR_STREAM_POWER_DIR";
const CHILD_TEST: &str = "stream_power_loss_child";
const TASKS: u32 = 8;
const SINK_LEN: u64 = 1 << 20;

fn record(task: u32, index: u32) -> Vec<u8> {
    let len = 16 + (task as usize * 31 + index as usize * 7) % 300;
    let payload = SplitMix::bytes(u64::from(task) << 32 | u64::from(index), len);
    let mut out = Vec::with_capacity(12 + len);
    for v in [len as u32, task, index] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&payload);
    out
}

/// Whole records from offset 0 up to the first hole: `(offset, task, index)`.
fn scan(bytes: &[u8]) -> Vec<(u64, u32, u32)> {
    let mut found = Vec::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let word =
            |i: usize| u32::from_le_bytes(bytes[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
        let (len, task, index) = (word(0) as usize, word(1), word(2));
        if len == 0
            || at + 12 + len > bytes.len()
            || bytes[at..at + 12 + len] != record(task, index)[..]
        {
            break;
        }
        found.push((at as u64, task, index));
        at += 12 + len;
    }
    found
}

fn mount(image: &Path, mnt: &Path) {
    std::fs::create_dir_all(mnt).expect("mount point");
    child::sh(&format!(
        "mount -o loop '{}' '{}'",
        image.display(),
        mnt.display()
    ));
}

fn copy_image(dir: &Path, name: &str) {
    child::sh(&format!(
        "cp --sparse=always '{}' '{}'",
        dir.join("fs.img").display(),
        dir.join(name).display()
    ));
}

async fn appender_phase(dir: &Path, mnt: &Path) -> (usize, usize) {
    let file = MappedFile::create(mnt.join("log"), 0)
        .await
        .expect("create log");
    let log = file.appender(0).durable(true).grow_step(64 * 1024);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (log, acked, stop) = (log.clone(), Arc::clone(&acked), Arc::clone(&stop));
        tasks.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let at = log.append(record(task, i)).await.expect("append");
                acked.lock().unwrap().push((at, task, i));
                i += 1;
            }
        });
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Acknowledged before the copy starts: must be in it. The appends go
    // on while it is taken.
    let before: Vec<(u64, u32, u32)> = acked.lock().unwrap().clone();
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || copy_image(&d, "log.img"))
        .await
        .unwrap();
    // Control: records acknowledged after the copy cannot be in it, so the
    // check below can tell an old copy from a new one.
    let copied = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < copied + 50 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let total = acked.lock().unwrap().len();
    file.close().await.expect("close log");

    let copy_mnt = dir.join("log-copy");
    mount(&dir.join("log.img"), &copy_mnt);
    let bytes = std::fs::read(copy_mnt.join("log")).expect("the log in the copy");
    let found = scan(&bytes);
    let found_set: std::collections::HashSet<_> = found.iter().copied().collect();
    for rec in &before {
        assert!(
            found_set.contains(rec),
            "acknowledged record {rec:?} is not in the copy (or is behind a hole): {} found",
            found.len()
        );
    }
    assert!(
        found.len() < total,
        "the copy holds records appended after it was taken"
    );
    child::sh(&format!("umount '{}'", copy_mnt.display()));
    (before.len(), found.len())
}

async fn sink_phase(dir: &Path, mnt: &Path) -> usize {
    let file = MappedFile::create(mnt.join("data"), SINK_LEN)
        .await
        .expect("create data");
    let mut rng = SplitMix(77);
    let mut items = Vec::new();
    for _ in 0..20_000 {
        let len = rng.range(1, 200);
        let off = rng.range(0, SINK_LEN - len);
        items.push((
            off,
            Bytes::from(SplitMix::bytes(rng.next_u64(), len as usize)),
        ));
    }
    let mut model = vec![0u8; SINK_LEN as usize];
    for (off, data) in &items {
        model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    let mut sink = file.update_sink().durable(true);
    sink.send_all(&mut stream::iter(items.clone().into_iter().map(Ok)))
        .await
        .expect("send_all (ends with a durable flush)");
    // Applied, not flushed: may or may not be in the copy.
    let mut sink2 = file.update_sink();
    for i in 0..2000u64 {
        sink2
            .feed((i * 8, Bytes::from(vec![0xEE; 8])))
            .await
            .unwrap();
    }
    sink2.flush().await.unwrap();
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || copy_image(&d, "data.img"))
        .await
        .unwrap();
    file.close().await.expect("close data");

    let copy_mnt = dir.join("data-copy");
    mount(&dir.join("data.img"), &copy_mnt);
    let found = std::fs::read(copy_mnt.join("data")).expect("the data file in the copy");
    assert_eq!(found.len() as u64, SINK_LEN);
    let mut lost = 0;
    for (i, (&got, &want)) in found.iter().zip(&model).enumerate() {
        // The unflushed sink wrote 0xEE over [0, 16000).
        if got != want && !(i < 16_000 && got == 0xEE) {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "flushed sink items are missing from the copy");
    child::sh(&format!("umount '{}'", copy_mnt.display()));
    items.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of stream_power_loss_acknowledged_records_and_flushed_items_survive"]
async fn stream_power_loss_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let mnt = dir.join("mnt");
    mount(&dir.join("fs.img"), &mnt);
    let (acked, found) = appender_phase(dir, &mnt).await;
    let items = sink_phase(dir, &mnt).await;
    println!(
        "VERIFIED appender: {acked} acknowledged records before the copy, {found} in it, 0 lost; \
         durable sink: {items} flushed items, 0 lost"
    );
}

#[test]
fn stream_power_loss_acknowledged_records_and_flushed_items_survive() {
    const NAME: &str = "stream_power_loss_acknowledged_records_and_flushed_items_survive";
    if let Some(why) = child::loop_devices_unavailable() {
        return child::skip(NAME, &why);
    }
    let scratch = common::Scratch::new();
    let image = scratch.path("fs.img");
    let made = Command::new("truncate")
        .args(["-s", "64M"])
        .arg(&image)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .is_ok_and(|s| s.success());
    if !made {
        return child::skip(NAME, "could not make an ext4 image");
    }
    let out = child::run(&mut child::wrapped(
        &["unshare", "-m", "--propagation", "private"],
        CHILD_TEST,
        CHILD_ENV,
        scratch.dir.path().display().to_string(),
    ));
    child::assert_success(&out, "VERIFIED");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = stdout.lines().find(|l| l.contains("VERIFIED")) {
        println!("stream power loss: {}", line.trim());
    }
}
