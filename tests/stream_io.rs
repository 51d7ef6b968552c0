//! `reader` and `writer`: tokio I/O traits over a mapping, with the
//! semantics of `std::io::Cursor<&mut [u8]>`; copies, codecs, seeking,
//! the end of the file, growth, flush, cancellation and bad input.

mod common;

use std::io::{self, SeekFrom};
use std::time::Duration;

use futures::StreamExt;
use mmap_actor::{Error, MappedFile, Reader, Writer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LinesCodec};

use common::Scratch;

/// Longer than anything here needs: only a hang trips it.
const HANG: Duration = Duration::from_secs(10);

fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A read-write file of `len` bytes, byte `i` being `i % 251`.
async fn patterned(scratch: &Scratch, name: &str, len: u64) -> MappedFile {
    let file = scratch.file(name, len).await;
    file.update(0, pattern(len)).await.expect("fill");
    file
}

/// A file holding exactly `text`.
async fn text_file(scratch: &Scratch, name: &str, text: &str) -> MappedFile {
    let file = scratch.file(name, text.len() as u64).await;
    file.update(0, text.as_bytes().to_vec()).await.unwrap();
    file
}

/// The crate error inside an `io::Error` made by the stream module.
fn inner(err: &io::Error) -> &Error {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("no crate error inside {err:?}"))
}

async fn hang_guard<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG, f).await.expect("hangs")
}

#[test]
fn io_objects_are_send_and_unpin() {
    fn check<T: Send + Unpin + 'static>() {}
    check::<Reader>();
    check::<Writer>();
}

// ---------------------------------------------------------------- reader

#[tokio::test]
async fn copy_from_a_reader_equals_the_file() {
    let scratch = Scratch::new();
    let len = 300_001;
    let file = patterned(&scratch, "f", len).await;
    let mut out = Vec::new();
    let n = hang_guard(tokio::io::copy(&mut file.reader(0), &mut out))
        .await
        .unwrap();
    assert_eq!(n, len);
    assert_eq!(out, pattern(len));
}

#[tokio::test]
async fn read_to_end_from_an_offset() {
    let scratch = Scratch::new();
    let len = 200_000;
    let file = patterned(&scratch, "f", len).await;
    let mut out = Vec::new();
    let n = file.reader(1000).read_to_end(&mut out).await.unwrap();
    assert_eq!(n, len as usize - 1000);
    assert_eq!(out, &pattern(len)[1000..]);
}

#[tokio::test]
async fn seek_then_read() {
    let scratch = Scratch::new();
    let len = 100_000;
    let file = patterned(&scratch, "f", len).await;
    let data = pattern(len);
    let mut reader = file.reader(0);
    let mut buf = [0u8; 100];
    // Fill the buffer first, so the seek has to discard it.
    reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf[..], &data[..100]);
    assert_eq!(reader.seek(SeekFrom::Start(70_000)).await.unwrap(), 70_000);
    reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf[..], &data[70_000..70_100]);
    assert_eq!(reader.stream_position().await.unwrap(), 70_100);
    assert_eq!(reader.seek(SeekFrom::Current(-50)).await.unwrap(), 70_050);
    reader.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf[..], &data[70_050..70_150]);
    assert_eq!(reader.seek(SeekFrom::End(-10)).await.unwrap(), len - 10);
    let mut tail = Vec::new();
    reader.read_to_end(&mut tail).await.unwrap();
    assert_eq!(tail, &data[len as usize - 10..]);
}

#[tokio::test]
async fn a_read_at_or_past_the_end_returns_nothing() {
    let scratch = Scratch::new();
    let file = patterned(&scratch, "f", 4096).await;
    let mut buf = [0u8; 16];
    for at in [4096, 4097, 1 << 40, u64::MAX] {
        assert_eq!(file.reader(at).read(&mut buf).await.unwrap(), 0, "at {at}");
    }
    let mut reader = file.reader(4090);
    assert_eq!(reader.read(&mut buf).await.unwrap(), 6);
    assert_eq!(reader.read(&mut buf).await.unwrap(), 0);
    assert_eq!(reader.seek(SeekFrom::End(100)).await.unwrap(), 4196);
    assert_eq!(reader.read(&mut buf).await.unwrap(), 0);
    // The end moves with the file.
    file.resize(8192).await.unwrap();
    file.update(4196, vec![9u8; 4]).await.unwrap();
    assert_eq!(reader.read(&mut buf).await.unwrap(), 16);
    assert_eq!(&buf[..4], &[9; 4]);
    // An empty file.
    let empty = scratch.file("empty", 0).await;
    assert_eq!(empty.reader(0).read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn a_shrink_under_a_reader_is_the_end_not_an_error() {
    let scratch = Scratch::new();
    let file = patterned(&scratch, "f", 100_000).await;
    let mut reader = file.reader(50_000);
    file.resize(40_000).await.unwrap();
    let mut out = Vec::new();
    assert_eq!(reader.read_to_end(&mut out).await.unwrap(), 0);
}

#[tokio::test]
async fn framed_read_decodes_lines() {
    let scratch = Scratch::new();
    let lines: Vec<String> = (0..5000).map(|i| format!("line number {i}")).collect();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let file = text_file(&scratch, "lines", &text).await;
    let decoded: Vec<String> = hang_guard(
        FramedRead::new(file.reader(0), LinesCodec::new())
            .map(|line| line.unwrap())
            .collect(),
    )
    .await;
    assert_eq!(decoded, lines);
}

#[tokio::test]
async fn buf_read_lines_and_no_lease_between_calls() {
    let scratch = Scratch::new();
    let file = text_file(&scratch, "lines", "alpha\nbeta\n\ngamma").await;
    let mut lines = file.reader(0).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("alpha"));
    // The reader has buffered the whole file, and holds no lease of it.
    let exclusive = file.try_segment_mut(0, 10).await.unwrap();
    drop(exclusive);
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("beta"));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some(""));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("gamma"));
    assert_eq!(lines.next_line().await.unwrap(), None);
}

#[tokio::test]
async fn a_reader_on_a_closed_mapping_fails() {
    let scratch = Scratch::new();
    let file = patterned(&scratch, "f", 4096).await;
    file.close().await.unwrap();
    let mut buf = [0u8; 16];
    let err = file.reader(0).read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert!(matches!(inner(&err), Error::Closed));
}

// ---------------------------------------------------------------- writer

#[tokio::test]
async fn copy_between_two_mappings() {
    let scratch = Scratch::new();
    let len = 500_000;
    let a = patterned(&scratch, "a", len).await;
    let b = scratch.file("b", len).await;
    let mut writer = b.writer(0);
    let n = hang_guard(tokio::io::copy(&mut a.reader(0), &mut writer))
        .await
        .unwrap();
    assert_eq!(n, len);
    assert_eq!(b.load(0, len).await.unwrap(), pattern(len));
    // The writer stopped exactly at the end.
    assert_eq!(writer.stream_position().await.unwrap(), len);
    assert_eq!(writer.write(b"x").await.unwrap(), 0);
}

#[tokio::test]
async fn write_all_past_the_end_writes_what_fits_then_fails() {
    let scratch = Scratch::new();
    let file = scratch.file("f", 100_000).await;
    let data = vec![7u8; 200_000];
    let mut writer = file.writer(90_000);
    let err = writer.write_all(&data).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    writer.flush().await.unwrap();
    assert_eq!(writer.stream_position().await.unwrap(), 100_000);
    let loaded = file.load(0, 100_000).await.unwrap();
    assert!(loaded[..90_000].iter().all(|&b| b == 0));
    assert!(loaded[90_000..].iter().all(|&b| b == 7));
    assert_eq!(file.len(), 100_000);
    // Writing past the end writes nothing.
    let mut writer = file.writer(100_001);
    assert_eq!(writer.write(b"abc").await.unwrap(), 0);
    assert_eq!(file.len(), 100_000);
}

#[tokio::test]
async fn a_growing_writer_grows_the_file() {
    let scratch = Scratch::new();
    let file = scratch.file("f", 0).await;
    let data = pattern(3 << 20);
    let mut writer = file.writer(0).growing(1 << 20);
    hang_guard(writer.write_all(&data)).await.unwrap();
    writer.flush().await.unwrap();
    assert_eq!(file.len(), 3 << 20);
    assert_eq!(file.load(0, 3 << 20).await.unwrap(), data);

    // Past the end after a seek: the gap is zeros, the file grows by at
    // least the step.
    let mut writer = file.writer(0).growing(1000);
    writer.seek(SeekFrom::End(10)).await.unwrap();
    writer.write_all(b"tail").await.unwrap();
    writer.flush().await.unwrap();
    let end = 3u64 << 20;
    assert_eq!(file.len(), end + 1000);
    assert_eq!(
        &file.load(end, 14).await.unwrap()[..],
        b"\0\0\0\0\0\0\0\0\0\0tail"
    );

    // A write straddling the end fills the file, then grows it.
    let mut writer = file.writer(end + 998).growing(0);
    writer.write_all(b"straddle").await.unwrap();
    writer.flush().await.unwrap();
    assert_eq!(file.len(), end + 1006);
    assert_eq!(&file.load(end + 998, 8).await.unwrap()[..], b"straddle");
}

#[tokio::test]
async fn seek_table() {
    use SeekFrom::{Current, End, Start};
    let scratch = Scratch::new();
    let len = 1000u64;
    let file = patterned(&scratch, "f", len).await;
    // (position before, seek, position after or None for InvalidInput)
    let table: &[(u64, SeekFrom, Option<u64>)] = &[
        (0, Start(0), Some(0)),
        (0, Start(500), Some(500)),
        (0, Start(5000), Some(5000)),
        (0, Start(u64::MAX), Some(u64::MAX)),
        (300, Current(0), Some(300)),
        (300, Current(-300), Some(0)),
        (300, Current(-301), None),
        (300, Current(700), Some(1000)),
        (300, Current(i64::MIN), None),
        (300, End(0), Some(len)),
        (300, End(-1000), Some(0)),
        (300, End(-1001), None),
        (300, End(24), Some(len + 24)),
        (u64::MAX, Current(1), None),
        (u64::MAX - 5, Current(5), Some(u64::MAX)),
    ];
    for &(before, seek, after) in table {
        let mut reader = file.reader(before);
        let mut writer = file.writer(before);
        let mut cursor = io::Cursor::new(vec![0u8; len as usize]);
        cursor.set_position(before);
        let std_result = io::Seek::seek(&mut cursor, seek);
        for (name, result, pos) in [
            (
                "reader",
                reader.seek(seek).await,
                reader.stream_position().await.unwrap(),
            ),
            (
                "writer",
                writer.seek(seek).await,
                writer.stream_position().await.unwrap(),
            ),
        ] {
            match after {
                Some(after) => {
                    assert_eq!(result.unwrap(), after, "{name} {before} {seek:?}");
                    assert_eq!(pos, after);
                }
                None => {
                    let err = result.unwrap_err();
                    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name} {seek:?}");
                    assert_eq!(pos, before, "{name}: a failed seek moved");
                }
            }
            // The same as a std Cursor over a slice of the file's length.
            assert_eq!(
                std_result.as_ref().ok(),
                after.as_ref(),
                "{name} {before} {seek:?} differs from Cursor"
            );
        }
    }
    // `End` is relative to the length at the time of the seek.
    let mut reader = file.reader(0);
    file.resize(2000).await.unwrap();
    assert_eq!(reader.seek(End(-1)).await.unwrap(), 1999);
}

#[tokio::test]
async fn seek_overflow_is_invalid_input() {
    let scratch = Scratch::new();
    let file = scratch.file("f", 100).await;
    let mut writer = file.writer(0);
    let mut reader = file.reader(0);
    let first = 10 + i64::MAX as u64;
    assert_eq!(writer.seek(SeekFrom::Start(10)).await.unwrap(), 10);
    assert_eq!(
        writer.seek(SeekFrom::Current(i64::MAX)).await.unwrap(),
        first
    );
    let err = writer.seek(SeekFrom::Current(i64::MAX)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(writer.stream_position().await.unwrap(), first);
    // Writing there writes nothing (not growing) and does not panic.
    assert_eq!(writer.write(b"x").await.unwrap(), 0);

    assert_eq!(reader.seek(SeekFrom::Start(10)).await.unwrap(), 10);
    assert_eq!(
        reader.seek(SeekFrom::Current(i64::MAX)).await.unwrap(),
        first
    );
    let err = reader.seek(SeekFrom::Current(i64::MAX)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let mut buf = [0u8; 4];
    assert_eq!(reader.read(&mut buf).await.unwrap(), 0);

    // Before 0.
    for seek in [SeekFrom::Current(-1), SeekFrom::End(-101)] {
        let err = file.writer(0).seek(seek).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = file.reader(0).seek(seek).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    // A growing write whose end would pass u64::MAX.
    let mut growing = file.writer(u64::MAX - 1).growing(1);
    let err = growing.write(b"abcd").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(matches!(inner(&err), Error::OutOfBounds { .. }));
    assert_eq!(file.len(), 100);
}

/// A write is accepted while its update waits; flush waits until it is
/// applied, and then a load sees it.
#[tokio::test]
async fn flush_makes_writes_visible() {
    let scratch = Scratch::new();
    let file = scratch.file("f", 1 << 20).await;
    let blocker = file.segment_mut(0, 1).await.unwrap();
    let mut writer = file.writer(0);
    // Accepted at once, although its bytes are leased.
    let n = hang_guard(writer.write(&[5u8; 8192])).await.unwrap();
    assert_eq!(n, 8192);
    let mut flush = tokio::spawn(async move {
        writer.flush().await.unwrap();
        writer
    });
    let waited = tokio::time::timeout(Duration::from_millis(50), &mut flush).await;
    assert!(
        waited.is_err(),
        "flush returned before the write was applied"
    );
    drop(blocker);
    let mut writer = hang_guard(flush).await.unwrap();
    assert!(file.load(0, 8192).await.unwrap().iter().all(|&b| b == 5));

    let data = pattern(200_000);
    writer.write_all(&data).await.unwrap();
    writer.flush().await.unwrap();
    assert_eq!(file.load(8192, 200_000).await.unwrap(), data);
    writer.shutdown().await.unwrap();
}

/// A failed update is reported by the next call, and the position moves
/// back to the start of the failed write.
#[tokio::test]
async fn a_failed_write_is_reported_and_rewinds() {
    let scratch = Scratch::new();
    let file = scratch.file("f", 1 << 20).await;
    let mut writer = file.writer(4096);
    writer.write_all(&[1u8; 100]).await.unwrap();
    writer.flush().await.unwrap();
    let blocker = file.segment_mut(4196, 1).await.unwrap();
    assert_eq!(writer.write(&[2u8; 8192]).await.unwrap(), 8192);
    // Closing answers the waiting update with `Closed`.
    hang_guard(file.close()).await.unwrap();
    let err = hang_guard(writer.flush()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert!(matches!(inner(&err), Error::Closed));
    assert_eq!(writer.stream_position().await.unwrap(), 4196);
    // Later writes fail at once, without moving.
    let err = writer.write(&[3u8; 10]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(writer.stream_position().await.unwrap(), 4196);
    drop(blocker);
}

/// Timeouts around `write_all`: the file always holds the bytes up to the
/// writer's position (once the write in flight is applied) and nothing
/// past it; the writer stays usable and finishes the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_all_leaves_a_prefix() {
    let scratch = Scratch::new();
    let len: u64 = 4 << 20;
    let file = scratch.file("f", len).await;
    // Never 0, so every byte is either old (0) or new.
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();

    // A deterministic interruption: a lease at 2 MiB stops the writer there.
    let blocker = file.segment_mut(2 << 20, 1).await.unwrap();
    let mut writer = file.writer(0);
    let interrupted =
        tokio::time::timeout(Duration::from_millis(200), writer.write_all(&data)).await;
    assert!(interrupted.is_err(), "write_all passed a leased byte");
    // Everything before the blocked write is applied.
    let before = file.load(0, 2 << 20).await.unwrap();
    assert_eq!(&before[..], &data[..2 << 20]);
    drop(blocker);
    let mut done = hang_guard(writer.stream_position()).await.unwrap() as usize;
    assert!(done > 2 << 20, "the blocked write was accepted");
    check_prefix(&file, &data, done).await;

    // Interruptions after 1, 2, 3, ... yields of this task: each round
    // drops `write_all` at a different point of its progress.
    let mut rounds = 0;
    let mut writer = file.writer(0);
    let data: Vec<u8> = data.iter().map(|b| b.wrapping_add(100).max(1)).collect();
    let file_now = file.load(0, len).await.unwrap();
    done = 0;
    while done < len as usize {
        tokio::select! {
            biased;
            _ = writer.write_all(&data[done..]) => {}
            _ = yields(rounds + 1) => {}
        }
        // Before the write in flight settles: every byte old or new, the
        // new ones a prefix of what was accepted.
        let seen = file.load(0, len).await.unwrap();
        let first_old = (0..len as usize)
            .find(|&i| seen[i] != data[i])
            .unwrap_or(len as usize);
        assert!(
            seen[first_old..]
                .iter()
                .zip(&file_now[first_old..])
                .all(|(s, old)| s == old),
            "a byte past the written prefix changed"
        );
        let settled = hang_guard(writer.stream_position()).await.unwrap() as usize;
        assert!(first_old <= settled && settled >= done);
        done = settled;
        let expected: Vec<u8> = data[..done]
            .iter()
            .chain(&file_now[done..])
            .copied()
            .collect();
        assert!(
            file.load(0, len).await.unwrap() == expected,
            "after settling, the file is not exactly the prefix up to {done}"
        );
        rounds += 1;
        // Each round accepts at least one write of up to 64 KiB.
        assert!(rounds <= 64, "no progress");
    }
    writer.flush().await.unwrap();
    assert_eq!(file.load(0, len).await.unwrap(), data);
}

async fn yields(n: u32) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

async fn check_prefix(file: &MappedFile, data: &[u8], done: usize) {
    let now = file.load(0, data.len() as u64).await.unwrap();
    assert_eq!(&now[..done], &data[..done], "the prefix is not written");
    assert!(
        now[done..].iter().all(|&b| b == 0),
        "bytes past the position {done} were written"
    );
}

// ------------------------------------------------------------ bad input

#[tokio::test]
async fn a_writer_on_a_read_only_mapping_fails_cleanly() {
    let scratch = Scratch::new();
    patterned(&scratch, "f", 4096).await.close().await.unwrap();
    let file = MappedFile::open_ro(scratch.path("f")).await.unwrap();
    let mut writer = file.writer(0);
    let err = writer.write(b"x").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(matches!(inner(&err), Error::ReadOnly { .. }));
    let err = writer.write_all(&[1u8; 10_000]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    let err = file
        .writer(0)
        .growing(1 << 20)
        .write(b"x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    writer.flush().await.unwrap();
    assert_eq!(writer.stream_position().await.unwrap(), 0);
    assert_eq!(file.load(0, 4096).await.unwrap(), pattern(4096));
}

#[tokio::test]
async fn a_growing_writer_on_a_copy_on_write_mapping_stops_at_the_end() {
    let scratch = Scratch::new();
    scratch.file("f", 100).await.close().await.unwrap();
    let file = MappedFile::open_cow(scratch.path("f")).await.unwrap();
    let mut writer = file.writer(96).growing(1 << 20);
    let err = writer.write_all(b"abcdefgh").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(matches!(inner(&err), Error::ReadOnly { op: "resize", .. }));
    writer.flush().await.unwrap();
    assert_eq!(&file.load(96, 4).await.unwrap()[..], b"abcd");
    assert_eq!(file.len(), 100);
}
