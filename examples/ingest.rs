//! Streams updates into a mapping through an `UpdateSink` while a
//! subscription counts the changes, then checks the file with a reader.
//!
//! ```text
//! cargo run --release --example ingest                # 300,000 updates of 64 B
//! cargo run --release --example ingest -- 2000000 256 # 2 M updates of 256 B
//! ```
//!
//! Prints the producer's throughput and what the subscriber saw (every
//! change, or an explicit `Lagged` count for those it fell behind on); a
//! progress bar shows a long run on a terminal.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{stream, SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use mmap_actor::{Error, MappedFile};
use tokio::io::AsyncReadExt;

/// The value item `i` writes: its index, repeated.
fn item(i: u64, size: usize, slots: u64) -> (u64, Bytes) {
    let slot = i % slots;
    let mut data = vec![0u8; size];
    for word in data.chunks_mut(8) {
        let n = word.len();
        word.copy_from_slice(&i.to_le_bytes()[..n]);
    }
    (slot * size as u64, Bytes::from(data))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(300_000), |a| a.parse())?;
    let size: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    if size < 8 {
        return Err("items must be at least 8 bytes".into());
    }
    // A 16 MiB file: later items overwrite earlier ones in the same slot.
    let len = (16u64 << 20) / size as u64 * size as u64;
    let slots = len / size as u64;
    let dir = tempfile::tempdir()?;
    let file = MappedFile::create(dir.path().join("ingest.bin"), len).await?;

    // The subscriber counts changes until the mapping closes.
    let mut changes = file.subscribe(..);
    let counter = tokio::spawn(async move {
        let (mut seen, mut missed) = (0u64, 0u64);
        while let Some(item) = changes.next().await {
            match item {
                Ok(_) => seen += 1,
                Err(Error::Lagged { missed: m }) => missed += m,
                Err(e) => return Err(e),
            }
        }
        Ok((seen, missed))
    });

    let bar = ProgressBar::new(count).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} updates ({per_sec}, {eta} left)",
    )?);
    let mut sink = file.update_sink();
    let started = Instant::now();
    let progress = bar.clone();
    let mut items = stream::iter(0..count).map(move |i| {
        if i % 4096 == 0 {
            progress.set_position(i);
        }
        Ok::<_, Error>(item(i, size, slots))
    });
    sink.send_all(&mut items).await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    sink.close().await?;

    // Check every slot with a reader: it holds the last item written to it.
    let mut reader = file.reader(0);
    let mut slot = vec![0u8; size];
    let mut checked = 0u64;
    for s in 0..slots.min(count) {
        reader.read_exact(&mut slot).await?;
        let last = s + (count - 1 - s) / slots * slots;
        let (_, want) = item(last, size, slots);
        assert_eq!(&slot[..], &want[..], "slot {s} does not hold item {last}");
        checked += 1;
    }
    file.close().await?;
    let (seen, missed) = counter.await??;
    assert_eq!(
        seen + missed,
        count,
        "every change seen or reported as lagged"
    );

    let secs = elapsed
        .as_secs_f64()
        .max(Duration::from_nanos(1).as_secs_f64());
    println!(
        "{count} updates of {size} B in {:.3} s: {:.2} M updates/s, {:.0} MiB/s",
        secs,
        count as f64 / secs / 1e6,
        (count * size as u64) as f64 / secs / (1u64 << 20) as f64
    );
    println!("subscriber: {seen} changes seen, {missed} reported as lagged");
    println!("reader: {checked} slots checked, each holds the last update sent to it");
    Ok(())
}
