//! Requests from one handle apply in the order they were sent; a completed
//! update is visible to every later load from any handle.

mod common;

use mmap_actor::DIRECT_MAX;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_updates_are_visible_from_every_handle() {
    let s = common::Scratch::new();
    let file = s.file("visible", 1 << 20).await;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let writer = file.clone();
        let reader = file.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let offset = (t * 500 + i) * 64;
                let value = (t << 32 | i).to_le_bytes();
                writer.update(offset, value.to_vec()).await.unwrap();
                // Another handle, straight after the await.
                assert_eq!(&reader.load(offset, 8).await.unwrap()[..], &value);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn joined_requests_from_one_handle_apply_in_send_order() {
    joined_requests_apply_in_send_order().await;
}

/// On a multi-thread runtime the large update is copied in place under
/// `block_in_place` instead of on the blocking pool: the order must hold too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_requests_apply_in_send_order_on_a_multi_thread_runtime() {
    joined_requests_apply_in_send_order().await;
}

async fn joined_requests_apply_in_send_order() {
    let s = common::Scratch::new();
    let file = s.file("order", 1 << 20).await;
    // A large update (served by the actor on the blocking pool) sent before
    // a small one (which could take the direct path) of the same bytes: the
    // small one must land last.
    for round in 0..20u8 {
        let big = vec![round; DIRECT_MAX * 8];
        let small = vec![round.wrapping_add(100); 16];
        let (a, b) = tokio::join!(file.update(0, big), file.update(64, small.clone()));
        a.unwrap();
        b.unwrap();
        assert_eq!(
            &file.load(64, 16).await.unwrap()[..],
            &small[..],
            "round {round}"
        );
        assert_eq!(file.load(0, 1).await.unwrap()[0], round);
    }
}

#[tokio::test]
async fn a_load_sent_after_an_update_sees_it() {
    let s = common::Scratch::new();
    let file = s.file("load-after", 1 << 20).await;
    for round in 0..20u8 {
        let data = vec![round; DIRECT_MAX * 4];
        let (u, l) = tokio::join!(file.update(1000, data), file.load(1000, 8));
        u.unwrap();
        assert_eq!(&l.unwrap()[..], &[round; 8]);
    }
}
