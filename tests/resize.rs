//! Growing and shrinking keep data, lengths and every handle consistent.

mod common;

use mmap_actor::{Error, MappedFile, DIRECT_MAX};

#[tokio::test]
async fn grow_keeps_data_and_zero_fills() {
    let s = common::Scratch::new();
    let path = s.path("grow");
    let file = MappedFile::create(&path, 4096).await.unwrap();
    file.update(4090, &b"tail of the old length"[..])
        .await
        .unwrap_err();
    file.update(4000, vec![9u8; 96]).await.unwrap();
    file.resize(3 << 20).await.unwrap();
    assert_eq!(file.len(), 3 << 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
    assert_eq!(&file.load(4000, 96).await.unwrap()[..], &[9u8; 96][..]);
    let fresh = file.load(4096, 1 << 20).await.unwrap();
    assert!(fresh.iter().all(|&b| b == 0));
    // The new tail is writable through both paths.
    file.update((3 << 20) - 8, &b"end!end!"[..]).await.unwrap();
    file.update(1 << 20, vec![5u8; DIRECT_MAX * 3])
        .await
        .unwrap();
    assert_eq!(&file.load((3 << 20) - 8, 8).await.unwrap()[..], b"end!end!");
    file.close().await.unwrap();
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(&disk[(3 << 20) - 8..], b"end!end!");
    assert_eq!(disk[1 << 20], 5);
}

#[tokio::test]
async fn shrink_cuts_the_tail_for_every_handle() {
    let s = common::Scratch::new();
    let path = s.path("shrink");
    let file = MappedFile::create(&path, 1 << 20).await.unwrap();
    let other = file.clone();
    file.update(100, &b"kept"[..]).await.unwrap();
    file.update(900_000, &b"cut"[..]).await.unwrap();
    other.resize(4096).await.unwrap();
    assert_eq!(file.len(), 4096);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    assert_eq!(&file.load(100, 4).await.unwrap()[..], b"kept");
    assert!(matches!(
        file.load(900_000, 3).await,
        Err(Error::OutOfBounds { file_len: 4096, .. })
    ));
    // Grow again: the cut bytes are gone, not resurrected.
    file.resize(1 << 20).await.unwrap();
    assert_eq!(&file.load(900_000, 3).await.unwrap()[..], &[0, 0, 0]);
}

#[tokio::test]
async fn resizes_interleaved_with_updates_from_many_tasks() {
    let s = common::Scratch::new();
    let file = s.file("interleaved", 64 * 1024).await;
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let f = file.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200u64 {
                // The first 16 KiB always exist: never out of bounds.
                f.update((t * 4096) + (i % 64) * 64, vec![t as u8 + 1; 64])
                    .await
                    .unwrap();
            }
        }));
    }
    let resizer = file.clone();
    tasks.push(tokio::spawn(async move {
        for i in 0..50u64 {
            resizer.resize(16 * 1024 + (i % 7) * 100_000).await.unwrap();
        }
    }));
    for t in tasks {
        t.await.unwrap();
    }
    for t in 0..4u64 {
        let bytes = file.load(t * 4096, 4096).await.unwrap();
        assert!(bytes.iter().all(|&b| b == t as u8 + 1), "task {t}");
    }
}

#[tokio::test]
async fn resize_to_the_same_length_is_a_no_op() {
    let s = common::Scratch::new();
    let file = s.file("same", 4096).await;
    file.update(0, &b"x"[..]).await.unwrap();
    file.resize(4096).await.unwrap();
    assert_eq!(file.len(), 4096);
    assert_eq!(&file.load(0, 1).await.unwrap()[..], b"x");
}
