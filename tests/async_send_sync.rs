//! Auto traits of every public type and of the futures users await: leases
//! are `'static + Send + Sync`, handles are cheap `Clone + Send + Sync`, and
//! every call's future can be spawned on a multi-thread runtime.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64};

use mmap_actor::{
    Advice, AtomicView, Error, LoadInto, MappedFile, MappingActor, Mode, OpenOptions,
    PrewarmProgress, Progress, Segment, SegmentMut, Update, UpdateFrom,
};

fn send_sync_static<T: Send + Sync + 'static>() {}
fn send_future<F: Future + Send>(_: F) {}

#[test]
fn public_types_are_send_sync_and_static() {
    send_sync_static::<MappedFile>();
    send_sync_static::<Segment>();
    send_sync_static::<SegmentMut>();
    send_sync_static::<AtomicView<AtomicU32>>();
    send_sync_static::<AtomicView<AtomicU64>>();
    send_sync_static::<AtomicView<[AtomicU32]>>();
    send_sync_static::<AtomicView<[AtomicU64]>>();
    send_sync_static::<OpenOptions>();
    send_sync_static::<Mode>();
    send_sync_static::<Error>();
    send_sync_static::<Advice>();
    send_sync_static::<Progress>();
    fn send_static_stream<T: Send + Unpin + futures::Stream + 'static>() {}
    send_static_stream::<PrewarmProgress>();
    fn send_static<T: Send + 'static>() {}
    send_static::<MappingActor>();
    fn clone<T: Clone>() {}
    clone::<MappedFile>();
    // The hand-written futures of the direct path's calls.
    fn send_unpin_future<T: Send + Unpin + Future<Output = mmap_actor::Result<()>>>() {}
    send_unpin_future::<Update<'static>>();
    send_unpin_future::<UpdateFrom<'static>>();
    send_unpin_future::<LoadInto<'static>>();
}

/// Never run: it only has to compile.
#[allow(dead_code, clippy::let_underscore_future)]
fn futures_are_send(file: MappedFile, actor: MappingActor) {
    send_future(MappedFile::create("x", 1));
    send_future(MappedFile::open_rw("x"));
    send_future(OpenOptions::new().open("x"));
    send_future(file.load(0, 1));
    send_future(file.update(0, vec![1u8]));
    send_future(file.update_from(0, &[1u8]));
    let mut buf = [0u8; 1];
    send_future(file.load_into(0, &mut buf));
    send_future(file.modify(0, 1, |_| {}));
    send_future(file.flush());
    send_future(file.flush_range(0, 1));
    send_future(file.resize(1));
    send_future(file.prewarm(0, 1));
    send_future(file.segment(0, 1));
    send_future(file.segment_mut(0, 1));
    send_future(file.atomic_u64(0));
    send_future(file.atomic_u32_slice(0, 1));
    send_future(file.schedule_flush());
    send_future(file.schedule_flush_range(0, 1));
    send_future(file.advise(0, 1, Advice::Random));
    send_future(file.lock(0, 1));
    send_future(file.unlock(0, 1));
    send_future(file.lock_all());
    send_future(file.unlock_all());
    send_future(file.is_hugepage_backed());
    send_future(file.watch());
    send_future(MappedFile::anonymous(1));
    send_future(MappedFile::anonymous_huge(1));
    send_future(file.close());
    send_future(actor.run());
}
