//! Read-only, read-write and copy-on-write mappings behave as documented.

mod common;

use mmap_actor::{Error, MappedFile, Mode};

#[tokio::test]
async fn read_write_updates_reach_the_file() {
    let s = common::Scratch::new();
    let path = s.path("rw");
    let file = MappedFile::create(&path, 64).await.unwrap();
    assert_eq!(file.mode(), Mode::ReadWrite);
    file.update(3, &b"abc"[..]).await.unwrap();
    file.close().await.unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[3..6], b"abc");
    assert_eq!(on_disk.len(), 64);
}

#[tokio::test]
async fn read_only_refuses_every_write() {
    let s = common::Scratch::new();
    let path = s.path("ro");
    std::fs::write(&path, b"0123456789").unwrap();
    let file = MappedFile::open_ro(&path).await.unwrap();
    assert_eq!(file.mode(), Mode::ReadOnly);
    assert_eq!(&file.load(2, 3).await.unwrap()[..], b"234");
    let seg = file.segment(0, 10).await.unwrap();
    assert_eq!(&seg[..], b"0123456789");
    drop(seg);
    let read_only = |e: Error| {
        matches!(
            e,
            Error::ReadOnly {
                mode: Mode::ReadOnly,
                ..
            }
        )
    };
    assert!(read_only(file.update(0, &b"x"[..]).await.unwrap_err()));
    assert!(read_only(file.try_update(0, &b"x"[..]).await.unwrap_err()));
    assert!(read_only(file.modify(0, 1, |_| {}).await.unwrap_err()));
    assert!(read_only(file.resize(20).await.unwrap_err()));
    assert!(read_only(file.segment_mut(0, 1).await.unwrap_err()));
    assert!(read_only(file.atomic_u32(0).await.unwrap_err()));
    assert!(read_only(file.atomic_u64_slice(0, 1).await.unwrap_err()));
    // Flushing a read-only mapping is a successful no-op.
    file.flush().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
}

#[tokio::test]
async fn copy_on_write_is_private_to_the_mapping() {
    let s = common::Scratch::new();
    let path = s.path("cow");
    std::fs::write(&path, vec![b'.'; 8192]).unwrap();
    let file = MappedFile::open_cow(&path).await.unwrap();
    let other = MappedFile::open_ro(&path).await.unwrap();
    assert_eq!(file.mode(), Mode::CopyOnWrite);
    // Small (direct) and large (actor) updates, a lease and an atomic.
    file.update(0, &b"private"[..]).await.unwrap();
    file.update(100, vec![b'x'; 6000]).await.unwrap();
    {
        let mut w = file.segment_mut(7000, 4).await.unwrap();
        w.copy_from_slice(b"leas");
    }
    let counter = file.atomic_u64(8000).await.unwrap();
    counter.fetch_add(5, std::sync::atomic::Ordering::Relaxed);
    drop(counter);
    assert_eq!(&file.load(0, 7).await.unwrap()[..], b"private");
    assert_eq!(&file.load(7000, 4).await.unwrap()[..], b"leas");
    file.flush().await.unwrap();
    assert!(matches!(
        file.resize(16384).await,
        Err(Error::ReadOnly {
            mode: Mode::CopyOnWrite,
            ..
        })
    ));
    // Neither another mapping nor the file sees any of it.
    assert_eq!(&other.load(0, 7).await.unwrap()[..], b".......");
    file.close().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'.'; 8192]);
}

#[tokio::test]
async fn empty_files_open_in_every_mode_and_grow() {
    let s = common::Scratch::new();
    let path = s.path("empty");
    std::fs::write(&path, b"").unwrap();
    for mode in [Mode::ReadOnly, Mode::CopyOnWrite] {
        let file = MappedFile::options().mode(mode).open(&path).await.unwrap();
        assert!(file.is_empty());
        assert_eq!(file.load(0, 0).await.unwrap().len(), 0);
        assert!(matches!(
            file.load(0, 1).await,
            Err(Error::OutOfBounds {
                offset: 0,
                len: 1,
                file_len: 0
            })
        ));
        file.close().await.unwrap();
    }
    let file = MappedFile::open_rw(&path).await.unwrap();
    assert!(file.is_empty());
    file.update(0, Vec::new()).await.unwrap();
    file.flush().await.unwrap();
    file.resize(10).await.unwrap();
    file.update(5, &b"grown"[..]).await.unwrap();
    assert_eq!(&file.load(0, 10).await.unwrap()[..], b"\0\0\0\0\0grown");
    file.resize(0).await.unwrap();
    assert!(file.is_empty());
    file.close().await.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[tokio::test]
async fn open_variants() {
    let s = common::Scratch::new();
    let path = s.path("variants");
    let created = MappedFile::create_new(&path, 100).await.unwrap();
    created.update(0, &b"keep"[..]).await.unwrap();
    created.close().await.unwrap();
    let err = MappedFile::create_new(&path, 100).await.unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::AlreadyExists));
    // open_or_create keeps an existing file's length and bytes.
    let existing = MappedFile::open_or_create(&path, 5).await.unwrap();
    assert_eq!(existing.len(), 100);
    assert_eq!(&existing.load(0, 4).await.unwrap()[..], b"keep");
    existing.close().await.unwrap();
    let fresh = MappedFile::open_or_create(s.path("fresh"), 5)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 5);
    // create truncates.
    let again = MappedFile::create(&path, 8).await.unwrap();
    assert_eq!(&again.load(0, 8).await.unwrap()[..], &[0u8; 8]);
    // The builder: an explicit length resizes an existing file.
    let built = MappedFile::options().len(4096).open(&path).await.unwrap();
    assert_eq!(built.len(), 4096);
    assert_eq!(built.path(), path.as_path());
    assert!(matches!(
        MappedFile::options()
            .mode(Mode::ReadOnly)
            .create(true)
            .open(s.path("x"))
            .await,
        Err(Error::ReadOnly { .. })
    ));
}
