mod common;
use std::sync::atomic::Ordering;
#[tokio::test]
async fn smoke() {
    let s = common::Scratch::new();
    let f = s.file("a", 1 << 20).await;
    f.update(100, b"hello".to_vec()).await.unwrap();
    assert_eq!(&f.load(100, 5).await.unwrap()[..], b"hello");
    f.flush().await.unwrap();
    let big = vec![7u8; 200_000];
    f.update(0, big.clone()).await.unwrap();
    assert_eq!(&f.load(0, 200_000).await.unwrap()[..], &big[..]);
    let a = f.atomic_u64(64).await.unwrap();
    a.fetch_add(3, Ordering::Relaxed);
    f.resize(4 << 20).await.unwrap();
    assert_eq!(f.len(), 4 << 20);
    let f2 = f.clone();
    let shrink = tokio::spawn(async move { f2.resize(32).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!shrink.is_finished());
    assert_eq!(a.load(Ordering::Relaxed), 0x0707070707070707 + 3);
    drop(a);
    shrink.await.unwrap().unwrap();
    assert_eq!(f.len(), 32);
    f.close().await.unwrap();
    assert!(matches!(f.load(0, 1).await, Err(mmap_actor::Error::Closed)));
}
