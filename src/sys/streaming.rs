//! Stores that bypass the processor's caches, for large copies into mapped
//! memory.
//!
//! A plain copy (`memcpy`, or a loop of word stores) into a line that is not
//! in the cache first reads the line from memory ("read for ownership"),
//! then overwrites it: for a large update into a file bigger than the cache,
//! every byte crosses the memory bus twice. Non-temporal stores (`movnti` on
//! x86-64) write whole lines through write-combining buffers without reading
//! them. Measured on the reference machine (`docs/PERFORMANCE.md`, P3), 1 MiB
//! copies over a 64 MiB mapping: 12 GiB/s against 7.4 for `memcpy` and 6 for
//! relaxed atomic word stores; but into a mapping small enough to stay in the
//! cache they are slower (14 against 30 GiB/s for 64 KiB copies over 1 MiB),
//! since the line must then leave the cache. Callers use them for updates of
//! at least a mebibyte ([`crate::handle`]'s large path), whose bytes are not
//! going to be read back from the cache soon.
//!
//! Update sinks' items of at least [`ITEM_FROM`] bytes take them too when
//! the mapping is larger than the processor's last-level cache
//! ([`cache_size`]), wherever they are stored (the sink's own runs, its
//! held items, the actor's batches): random items into such a mapping miss
//! the cache nearly every time, and a stream of updates is not read back
//! soon (`docs/PERFORMANCE.md`, P10, P11). Each run or batch takes one
//! [`fence`].
//!
//! On other architectures the same functions copy with plain (or relaxed
//! atomic) stores.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

/// The smallest sink item stored past the cache (in a mapping larger than
/// the cache): measured on 4 KiB items into random places of a 64 MiB
/// mapping, 1.2-1.3x a plain store's rate; over 1 to 16 MiB mappings, which
/// the cache holds, 0.7x to 1.0x.
pub(crate) const ITEM_FROM: usize = 1024;

/// When the size of the last-level cache cannot be read.
const CACHE_GUESS: usize = 32 << 20;

/// Whether an item of `item_len` bytes into a mapping of `mapping_len`
/// bytes is stored past the cache: at least [`ITEM_FROM`] bytes, into a
/// mapping larger than the last-level cache ([`cache_size`]).
#[inline]
pub(crate) fn pays(mapping_len: u64, item_len: usize) -> bool {
    item_len >= ITEM_FROM && mapping_len > cache_size() as u64
}

/// The size of the processor's last-level cache (as Linux reports it for
/// CPU 0; 32 MiB when it does not): stores into random places of a mapping
/// larger than that mostly miss the cache. The first call reads `sysfs`;
/// every open makes it on the blocking pool (`MappedFile::open_unspawned`,
/// the anonymous maps' probe), so later calls, inside the gate or on an
/// executor thread, are a load.
pub(crate) fn cache_size() -> usize {
    static CACHE: OnceLock<usize> = OnceLock::new();
    *CACHE.get_or_init(|| last_level_cache().unwrap_or(CACHE_GUESS))
}

/// The largest cache `sysfs` lists for CPU 0, in bytes.
fn last_level_cache() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|entry| {
        let size = std::fs::read_to_string(entry.ok()?.path().join("size")).ok()?;
        parse_size(size.trim())
    })
    .max()
}

/// `sysfs` cache sizes: `48K`, `1280K`, `49152K`, `32M`.
fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let n: usize = digits.parse().ok()?;
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Stores `src` into `words`, word by word, as relaxed atomic stores that
/// bypass the cache where the processor has them; `src.len()` must be
/// `8 * words.len()`. When this returns, the stores are ordered before every
/// later store of this thread (as relaxed stores are before a release).
/// (The callers take [`store_words_unfenced`] and one [`fence`] for many.)
#[cfg(test)]
pub(crate) fn store_words(words: &[AtomicU64], src: &[u8]) {
    store_words_unfenced(words, src);
    fence();
}

/// Orders this thread's earlier stores past the cache before its later
/// stores (`sfence`; nothing where the stores are plain relaxed ones).
/// Costly while such stores are pending (about 120-150 ns after a 4 KiB
/// item, measured), so a run of items takes one at its end.
#[inline]
pub(crate) fn fence() {
    // SAFETY: `sfence` only orders this thread's earlier stores before its
    // later ones; it touches no memory.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("sfence", options(nostack, preserves_flags))
    };
}

/// Stores `src` into `words` as `store_words` does (the test-only form
/// with its fence), without the closing [`fence`]: the caller must run one
/// before anything that publishes the stores (leaving the gate).
pub(crate) fn store_words_unfenced(words: &[AtomicU64], src: &[u8]) {
    assert_eq!(src.len(), words.len() * 8, "one word of source per word");
    #[cfg(target_arch = "x86_64")]
    {
        let n = words.len();
        let dst = words.as_ptr().cast::<u64>().cast_mut();
        let from = src.as_ptr().cast::<u64>();
        // Single words up to the first 64-byte line, then whole lines: a
        // line's eight stores in one step fill one write-combining buffer
        // at once (with four a step, 1 MiB copies ran at half the speed).
        let lead = dst.align_offset(64).min(n);
        for (word, bytes) in words[..lead].iter().zip(src.chunks_exact(8)) {
            store_one(word, bytes);
        }
        let mut i = lead;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, and `src` holds `8 * n` bytes, so these
            // eight unaligned reads are inside it.
            let v = unsafe { from.wrapping_add(i).cast::<[u64; 8]>().read_unaligned() };
            // SAFETY: `dst + i .. dst + i + 8` are eight of `words`, each an
            // aligned `AtomicU64` we may store to through `&` (interior
            // mutability). `movnti` of an aligned quadword is a single-copy
            // atomic 8-byte store on x86-64, so each is exactly the relaxed
            // atomic store `AtomicU64::store` would make: racing with other
            // relaxed accesses of the same words (the direct path's) is
            // defined, a reader sees the old or the new word. Non-temporal
            // stores are weakly ordered; the caller's `fence` restores the
            // order it relies on.
            unsafe {
                std::arch::asm!(
                    "movnti [{d}], {a}",
                    "movnti [{d} + 8], {b}",
                    "movnti [{d} + 16], {c}",
                    "movnti [{d} + 24], {e}",
                    "movnti [{d} + 32], {f}",
                    "movnti [{d} + 40], {g}",
                    "movnti [{d} + 48], {h}",
                    "movnti [{d} + 56], {k}",
                    d = in(reg) dst.wrapping_add(i),
                    a = in(reg) v[0],
                    b = in(reg) v[1],
                    c = in(reg) v[2],
                    e = in(reg) v[3],
                    f = in(reg) v[4],
                    g = in(reg) v[5],
                    h = in(reg) v[6],
                    k = in(reg) v[7],
                    options(nostack, preserves_flags),
                );
            }
            i += 8;
        }
        for (word, bytes) in words[i..].iter().zip(src[i * 8..].chunks_exact(8)) {
            store_one(word, bytes);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (word, bytes) in words.iter().zip(src.chunks_exact(8)) {
        let whole: [u8; 8] = bytes.try_into().expect("eight bytes");
        word.store(
            u64::from_ne_bytes(whole),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// One relaxed atomic store of the eight `bytes` into `word`, past the
/// cache (`movnti`); ordered by the caller's `sfence`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn store_one(word: &AtomicU64, bytes: &[u8]) {
    let v = u64::from_ne_bytes(bytes.try_into().expect("eight bytes"));
    // SAFETY: `word` is an aligned `AtomicU64` we may store to through `&`;
    // `movnti` of an aligned quadword is the single-copy atomic store
    // `AtomicU64::store(_, Relaxed)` would make (see `store_words`).
    unsafe {
        std::arch::asm!(
            "movnti [{d}], {a}",
            d = in(reg) word.as_ptr(),
            a = in(reg) v,
            options(nostack, preserves_flags),
        );
    }
}

/// Copies `src` into `dst` (of the same length) with stores that bypass
/// the cache where the processor has them; a plain copy elsewhere.
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    copy_unfenced(dst, src);
    fence();
}

/// [`copy`] without its closing [`fence`]: the caller runs one before the
/// bytes may be seen by another thread (a batch of copies takes one).
pub(crate) fn copy_unfenced(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy between slices of one length");
    // The bytes before the first aligned word and after the last go the
    // plain way; the words between as non-temporal stores.
    let head = dst.as_ptr().align_offset(8).min(dst.len());
    let body = (dst.len() - head) / 8 * 8;
    let (dst_head, rest) = dst.split_at_mut(head);
    let (dst_body, dst_tail) = rest.split_at_mut(body);
    dst_head.copy_from_slice(&src[..head]);
    dst_tail.copy_from_slice(&src[head + body..]);
    if body == 0 {
        return;
    }
    // SAFETY: `dst_body` is not empty, so it starts 8-aligned
    // (`align_offset`), and it holds a multiple of 8 bytes: it is `body / 8`
    // aligned `u64`s, and `AtomicU64` has `u64`'s size and alignment; the `&mut` borrow is exclusive, so
    // viewing it as atomics for the length of this call lets nothing else
    // see it either way.
    let words =
        unsafe { std::slice::from_raw_parts(dst_body.as_mut_ptr().cast::<AtomicU64>(), body / 8) };
    store_words_unfenced(words, &src[head..head + body]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("49152K"), Some(48 << 20));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
        // The machine's own answer, whatever it is, is a plausible size.
        let llc = last_level_cache().unwrap_or(CACHE_GUESS);
        assert!((1 << 10..=1 << 34).contains(&llc), "{llc}");
        assert_eq!(cache_size(), llc);
    }

    #[test]
    fn copies_every_alignment_and_length() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..9 {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 64, 100, 250] {
                let mut buf = vec![0xEEu8; 300];
                copy(&mut buf[start..start + len], &src[..len]);
                assert_eq!(
                    &buf[start..start + len],
                    &src[..len],
                    "start {start} len {len}"
                );
                assert!(buf[..start].iter().all(|&b| b == 0xEE), "before {start}");
                assert!(
                    buf[start + len..].iter().all(|&b| b == 0xEE),
                    "after {start}+{len}"
                );
            }
        }
    }

    #[test]
    fn stores_words_in_order_from_every_word_of_a_line() {
        let src: Vec<u8> = (0..40 * 8).map(|i| (i * 5 + 1) as u8).collect();
        for skip in 0..8 {
            for n in [0, 1, 7, 8, 9, 17, 31] {
                let words: Vec<AtomicU64> = (0..40).map(|_| AtomicU64::new(7)).collect();
                store_words(&words[skip..skip + n], &src[..n * 8]);
                for (i, w) in words.iter().enumerate() {
                    let want = if (skip..skip + n).contains(&i) {
                        let j = i - skip;
                        u64::from_ne_bytes(src[j * 8..j * 8 + 8].try_into().unwrap())
                    } else {
                        7
                    };
                    assert_eq!(
                        w.load(Ordering::Relaxed),
                        want,
                        "skip {skip} n {n} word {i}"
                    );
                }
            }
        }
    }
}
