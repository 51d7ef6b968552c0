//! Updates written with `pwrite` (`OpenOptions::write_through`, and by
//! default once updates are flushed often) stay ordered and visible through
//! the mapping, and a flush after small scattered updates writes about what
//! changed (no whole-folio write-back).

mod common;

use mmap_actor::{MappedFile, Mode};

async fn open(path: &std::path::Path) -> MappedFile {
    MappedFile::options()
        .write_through(true)
        .open(path)
        .await
        .unwrap()
}

/// A file written sequentially, as a log or a bulk load would: the kernel
/// caches such a file in large folios.
fn prefill(path: &std::path::Path, len: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for _ in 0..len / chunk.len() {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

/// The disk-write measurement below is device-wide: keep this file's other
/// tests from writing while it runs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn updates_are_visible_and_ordered() {
    let _serial = SERIAL.lock().await;
    let s = common::Scratch::new();
    let path = s.path("wt");
    prefill(&path, 4 << 20);
    let file = open(&path).await;
    let seg_before = file.load(100, 4).await.unwrap();
    file.update(100, &b"abcd"[..]).await.unwrap();
    assert_ne!(seg_before, file.load(100, 4).await.unwrap());
    assert_eq!(&file.load(100, 4).await.unwrap()[..], b"abcd");
    // Concurrent overlapping updates from one handle land in send order.
    let (a, b) = tokio::join!(
        file.update(0, vec![1u8; 8192]),
        file.update(4096, vec![2u8; 16])
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(&file.segment(4096, 16).await.unwrap()[..], &[2u8; 16]);
    assert_eq!(file.load(4095, 1).await.unwrap()[0], 1);
    // A lease still excludes a write-through update.
    let held = file.segment(200, 10).await.unwrap();
    assert!(file.try_update(205, vec![0u8; 2]).await.is_err());
    drop(held);
    file.try_update(205, vec![0u8; 2]).await.unwrap();
    file.close().await.unwrap();
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(
        &disk[100..104],
        &[1u8; 4],
        "the later 8 KiB update covers it"
    );
    assert_eq!(&disk[205..207], &[0u8; 2]);
    assert_eq!(disk[4096], 2);
}

#[tokio::test]
async fn copy_on_write_ignores_write_through() {
    let _serial = SERIAL.lock().await;
    let s = common::Scratch::new();
    let path = s.path("cow");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let file = MappedFile::options()
        .mode(Mode::CopyOnWrite)
        .write_through(true)
        .open(&path)
        .await
        .unwrap();
    file.update(0, &b"private"[..]).await.unwrap();
    assert_eq!(&file.load(0, 7).await.unwrap()[..], b"private");
    file.close().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 8192]);
}

/// Bytes written to the block device holding `path`, from
/// `/sys/dev/block/MAJ:MIN/stat` (what reaches the disk, not what was
/// dirtied), or `None` where the file is not on a block device.
fn device_bytes_written(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc_major(dev), libc_minor(dev));
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

#[tokio::test]
async fn a_flush_writes_about_what_changed() {
    let _serial = SERIAL.lock().await;
    let s = common::Scratch::new();
    let path = s.path("amplification");
    prefill(&path, 32 << 20);
    if device_bytes_written(&path).is_none() {
        println!("skipped: the test directory is not on a block device");
        return;
    }
    let file = open(&path).await;
    // Read it all through the mapping, as a scan would: the kernel now holds
    // it in large folios, where a store through the mapping would dirty (and
    // a flush write) a whole folio.
    file.prewarm(0, 32 << 20).await.unwrap();
    // The device counter is machine-wide: other writers can only add to it,
    // so the least of three rounds is the closest to our own writes.
    let mut least = u64::MAX;
    for round in 0..3u64 {
        let before = device_bytes_written(&path).unwrap();
        for i in 0..32u64 {
            let offset = ((round * 32 + i) * 7919 % 8192) * 4096;
            file.update(offset, vec![i as u8; 4096]).await.unwrap();
            file.flush().await.unwrap();
        }
        least = least.min(device_bytes_written(&path).unwrap() - before);
    }
    // 32 updates of 4 KiB: 128 KiB of data plus metadata, not 32 whole
    // folios (stores through the mapping write 32 MiB here).
    assert!(
        least < 8 << 20,
        "{least} bytes reached the disk for 128 KiB of updates"
    );
    file.close().await.unwrap();
}

/// 32 durable 4 KiB updates per round on a file the kernel holds in large
/// folios: the device bytes of one round, the least of three.
async fn durable_round_bytes(
    file: &MappedFile,
    path: &std::path::Path,
    through_lease: bool,
) -> u64 {
    let mut least = u64::MAX;
    for round in 0..3u64 {
        let before = device_bytes_written(path).unwrap();
        for i in 0..32u64 {
            let offset = ((round * 32 + i) * 7919 % 8192) * 4096;
            if through_lease {
                // A store through the mapping, as the control.
                file.segment_mut(offset, 4096).await.unwrap().fill(i as u8);
            } else {
                file.update_from(offset, &[i as u8; 4096]).await.unwrap();
            }
            file.flush().await.unwrap();
        }
        least = least.min(device_bytes_written(path).unwrap() - before);
    }
    least
}

#[tokio::test]
async fn default_options_flush_about_what_changed() {
    let _serial = SERIAL.lock().await;
    let s = common::Scratch::new();
    let path = s.path("default");
    prefill(&path, 32 << 20);
    if device_bytes_written(&path).is_none() {
        println!("skipped: the test directory is not on a block device");
        return;
    }
    let file = MappedFile::open_rw(&path).await.unwrap();
    file.prewarm(0, 32 << 20).await.unwrap();
    let ours = durable_round_bytes(&file, &path, false).await;
    // The control: the same pattern stored through the mapping (a lease),
    // which dirties whole folios. It shows the measurement can tell.
    let stores = durable_round_bytes(&file, &path, true).await;
    println!("device bytes per 32 durable 4 KiB updates: default {ours}, stores {stores}");
    assert!(
        ours < 8 << 20,
        "{ours} bytes reached the disk for 128 KiB of updates with default options"
    );
    assert!(
        stores > 4 * ours,
        "stores wrote {stores} bytes, default options {ours}: the control does not show amplification"
    );
    file.close().await.unwrap();
}
