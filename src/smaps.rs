//! A parser for `/proc/self/smaps`: how much of an address range is backed
//! by huge pages (`MappedFile::is_hugepage_backed`).
//!
//! The format (proc(5)): one header line per VMA,
//! `start-end perms offset dev inode [path]` with `start` and `end` in
//! hexadecimal, followed by `Name:   value kB` field lines. The parser
//! is pure and total: it never panics, and lines it does not understand
//! are skipped.

/// Huge-page backing of the VMAs that overlap a range, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HugeBacking {
    /// `AnonHugePages`: anonymous (or copy-on-write private) memory in
    /// transparent huge pages.
    pub(crate) anon_huge: u64,
    /// `FilePmdMapped`: file pages mapped with PMD (huge) entries.
    pub(crate) file_pmd_mapped: u64,
    /// `ShmemPmdMapped`: shared memory (tmpfs, shmem) mapped with PMD entries.
    pub(crate) shmem_pmd_mapped: u64,
    /// `Shared_Hugetlb` + `Private_Hugetlb`: hugetlbfs pages mapped.
    pub(crate) hugetlb: u64,
}

impl HugeBacking {
    /// Whether any of the range's VMAs has huge-page backing.
    pub(crate) fn any(&self) -> bool {
        self.anon_huge != 0
            || self.file_pmd_mapped != 0
            || self.shmem_pmd_mapped != 0
            || self.hugetlb != 0
    }
}

/// Sums the huge-page fields of every VMA in `smaps` whose address range
/// overlaps `[start, end)`. Whole VMAs count: the kernel does not say where
/// in a VMA its huge pages are. An empty range overlaps nothing.
pub(crate) fn huge_backing(smaps: &str, start: usize, end: usize) -> HugeBacking {
    let mut total = HugeBacking::default();
    // Whether the VMA whose fields we are reading overlaps the range;
    // fields before the first header belong to no VMA.
    let mut inside = false;
    for line in smaps.lines() {
        if let Some(range) = header(line) {
            inside = start < end
                && range.is_some_and(|(vma_start, vma_end)| vma_start < end && start < vma_end);
            continue;
        }
        if !inside {
            continue;
        }
        let Some((name, kib)) = field(line) else {
            continue;
        };
        let slot = match name {
            "AnonHugePages" => &mut total.anon_huge,
            "FilePmdMapped" => &mut total.file_pmd_mapped,
            "ShmemPmdMapped" => &mut total.shmem_pmd_mapped,
            "Shared_Hugetlb" | "Private_Hugetlb" => &mut total.hugetlb,
            _ => continue,
        };
        *slot = slot.saturating_add(kib.saturating_mul(1024));
    }
    total
}

/// Whether `line` is a VMA header (its first word is a range
/// `start-end`; field names never contain `-`), and if so the range it
/// covers: `None` for a malformed or backwards range, which then overlaps
/// nothing.
fn header(line: &str) -> Option<Option<(usize, usize)>> {
    let first = line.split_ascii_whitespace().next()?;
    let (start, end) = first.split_once('-').filter(|_| !first.ends_with(':'))?;
    let range = match (
        usize::from_str_radix(start, 16),
        usize::from_str_radix(end, 16),
    ) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end)),
        _ => None,
    };
    Some(range)
}

/// A `Name:   value kB` field line.
fn field(line: &str) -> Option<(&str, u64)> {
    let (name, rest) = line.split_once(':')?;
    let mut words = rest.split_ascii_whitespace();
    let value = words.next()?.parse::<u64>().ok()?;
    (words.next() == Some("kB") && words.next().is_none()).then_some((name.trim(), value))
}

/// The text of `/proc/self/smaps`. A blocking read of a kernel-generated
/// file (the kernel walks every page table of the process): call it from
/// the blocking pool.
pub(crate) fn read_self() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/smaps")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four VMAs as a 6.x kernel prints them: a file mapping backed by a
    /// huge page, a THP-backed anonymous heap, a shmem mapping and an
    /// ordinary library mapping.
    const SAMPLE: &str = "\
7f0000000000-7f0000400000 rw-s 00000000 08:01 1234                       /data/file.bin
Size:               4096 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                2048 kB
Pss:                2048 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:      2048 kB
Private_Dirty:         0 kB
Referenced:         2048 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:      2048 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:    1
VmFlags: rd wr sh mr mw me ms sd
7f0000400000-7f0000c00000 rw-p 00000000 00:00 0                          [heap]
Size:               8192 kB
Rss:                4096 kB
AnonHugePages:      4096 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
THPeligible:    1
VmFlags: rd wr mr mw me ac sd
7f0000c00000-7f0001000000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
Size:               4096 kB
AnonHugePages:         0 kB
ShmemPmdMapped:     2048 kB
FilePmdMapped:         0 kB
VmFlags: rd wr sh mr mw me ms sd
7f0001000000-7f0001021000 r-xp 00000000 08:01 42                         /usr/lib/libc.so.6
Size:                132 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
VmFlags: rd ex mr mw me sd
";

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_range_inside_one_vma_gets_that_vma() {
        let got = huge_backing(SAMPLE, 0x7f00_0010_0000, 0x7f00_0020_0000);
        assert_eq!(
            got,
            HugeBacking {
                anon_huge: 0,
                file_pmd_mapped: 2 * MIB,
                shmem_pmd_mapped: 0,
                hugetlb: 0
            }
        );
        assert!(got.any());
    }

    #[test]
    fn partial_overlaps_count_every_vma_they_touch() {
        // From the end of the file mapping into the shmem mapping.
        let got = huge_backing(SAMPLE, 0x7f00_003f_f000, 0x7f00_0c00_1000);
        assert_eq!(
            got,
            HugeBacking {
                anon_huge: 4 * MIB,
                file_pmd_mapped: 2 * MIB,
                shmem_pmd_mapped: 2 * MIB,
                hugetlb: 0
            }
        );
    }

    #[test]
    fn ranges_are_half_open() {
        // Ends exactly where the heap starts: the heap is not included.
        let got = huge_backing(SAMPLE, 0x7f00_0000_0000, 0x7f00_0040_0000);
        assert_eq!(got.anon_huge, 0);
        assert_eq!(got.file_pmd_mapped, 2 * MIB);
        // Starts exactly where the heap ends: only the shmem mapping.
        let got = huge_backing(SAMPLE, 0x7f00_00c0_0000, 0x7f00_00c0_1000);
        assert_eq!(
            got,
            HugeBacking {
                shmem_pmd_mapped: 2 * MIB,
                ..HugeBacking::default()
            }
        );
    }

    #[test]
    fn unrelated_empty_and_reversed_ranges_get_nothing() {
        let none = HugeBacking::default();
        assert_eq!(
            huge_backing(SAMPLE, 0x7f00_0100_0000, 0x7f00_0102_1000),
            none
        );
        assert_eq!(huge_backing(SAMPLE, 0x1000, 0x2000), none);
        assert_eq!(
            huge_backing(SAMPLE, 0x7f00_0010_0000, 0x7f00_0010_0000),
            none
        );
        assert_eq!(
            huge_backing(SAMPLE, 0x7f00_0020_0000, 0x7f00_0010_0000),
            none
        );
        assert_eq!(huge_backing("", 0, usize::MAX), none);
        assert!(!none.any());
    }

    #[test]
    fn the_whole_address_space_sums_every_vma() {
        let got = huge_backing(SAMPLE, 0, usize::MAX);
        assert_eq!(
            got,
            HugeBacking {
                anon_huge: 4 * MIB,
                file_pmd_mapped: 2 * MIB,
                shmem_pmd_mapped: 2 * MIB,
                hugetlb: 0
            }
        );
    }

    #[test]
    fn missing_fields_count_as_zero() {
        // An older kernel without FilePmdMapped/ShmemPmdMapped.
        let old = "\
00400000-00600000 r--p 00000000 08:01 7 /bin/x
Size:               2048 kB
AnonHugePages:      2048 kB
VmFlags: rd mr mw me
00600000-00800000 rw-p 00000000 00:00 0
Size:               2048 kB
";
        let got = huge_backing(old, 0, usize::MAX);
        assert_eq!(
            got,
            HugeBacking {
                anon_huge: 2 * MIB,
                ..HugeBacking::default()
            }
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        const VMA: &str = "00001000-00003000 rw-p 00000000 00:00 0\n";
        let cases: &[(&str, u64)] = &[
            ("AnonHugePages:      8 kB", 8),
            ("AnonHugePages:   banana kB", 0),
            ("AnonHugePages:      -4 kB", 0),
            ("AnonHugePages:       4 MB", 0),
            ("AnonHugePages        4 kB", 0),
            ("AnonHugePages:   4 kB more", 0),
            ("AnonHugePages:", 0),
            ("AnonHugePages: kB", 0),
            (":", 0),
            ("", 0),
            ("\u{0}\u{ffff}:: kB", 0),
            ("AnonHugePages:  99999999999999999999999 kB", 0),
        ];
        for (line, kib) in cases {
            let text = format!("{VMA}{line}\n");
            let got = huge_backing(&text, 0x1000, 0x2000).anon_huge;
            assert_eq!(got, kib * 1024, "line {line:?}");
        }
        // Fields before any header belong to no VMA.
        let orphan = "AnonHugePages:      8 kB\n";
        assert_eq!(huge_backing(orphan, 0, usize::MAX).anon_huge, 0);
        // A malformed header (not hex, backwards, half a range) starts a
        // VMA that overlaps nothing: its fields are not added to the VMA
        // before it.
        for bad in [
            "zzzz-00002000 rw-p 00000000 00:00 0",
            "00005000-00004000 rw-p 00000000 00:00 0",
            "00001000- rw-p 00000000 00:00 0",
            "-",
        ] {
            let text = format!("{VMA}AnonHugePages: 8 kB\n{bad}\nAnonHugePages: 16 kB\n");
            let got = huge_backing(&text, 0, usize::MAX).anon_huge;
            assert_eq!(got, 8 * 1024, "header {bad:?}");
        }
    }

    #[test]
    fn hugetlb_pages_count() {
        let text = "\
7f0000000000-7f0000400000 rw-s 00000000 00:0f 3                          /memfd:anonymous (deleted)
Size:               4096 kB
KernelPageSize:     2048 kB
AnonHugePages:         0 kB
Shared_Hugetlb:     2048 kB
Private_Hugetlb:    2048 kB
";
        let got = huge_backing(text, 0x7f00_0000_0000, 0x7f00_0000_1000);
        assert_eq!(
            got,
            HugeBacking {
                hugetlb: 4 * MIB,
                ..HugeBacking::default()
            }
        );
        assert!(got.any());
    }

    #[test]
    fn huge_values_saturate() {
        let text = format!(
            "0-ffff rw-p 0 0:0 0\nAnonHugePages: {} kB\nAnonHugePages: {} kB\n",
            u64::MAX,
            u64::MAX
        );
        assert_eq!(huge_backing(&text, 0, 1).anon_huge, u64::MAX);
    }

    #[test]
    fn this_process_can_be_read_and_parsed() {
        let text = read_self().expect("read /proc/self/smaps");
        assert!(
            text.lines().any(|l| matches!(header(l), Some(Some(_)))),
            "no VMA headers"
        );
        // Any answer will do; it must not panic on the real format.
        let _ = huge_backing(&text, 0, usize::MAX);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        /// Lines that look like smaps lines, with random parts.
        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                (any::<usize>(), any::<usize>())
                    .prop_map(|(a, b)| format!("{a:x}-{b:x} rw-p 00000000 00:00 0")),
                (
                    prop::sample::select(vec![
                        "AnonHugePages",
                        "FilePmdMapped",
                        "ShmemPmdMapped",
                        "Rss"
                    ]),
                    any::<u64>()
                )
                    .prop_map(|(n, v)| format!("{n}: {v} kB")),
                "[ -~]{0,40}",
                any::<String>(),
            ]
        }

        proptest! {
            #[test]
            fn random_text_never_panics(text in any::<String>(), a in any::<usize>(), b in any::<usize>()) {
                let _ = huge_backing(&text, a, b);
            }

            #[test]
            fn smaps_like_text_never_panics_and_sums_within_the_whole(
                lines in prop::collection::vec(line(), 0..40),
                a in any::<usize>(),
                b in any::<usize>(),
            ) {
                let text = lines.join("\n");
                let part = huge_backing(&text, a, b);
                let whole = huge_backing(&text, 0, usize::MAX);
                // A range sees a subset of the VMAs the whole space sees.
                prop_assert!(part.anon_huge <= whole.anon_huge);
                prop_assert!(part.file_pmd_mapped <= whole.file_pmd_mapped);
                prop_assert!(part.shmem_pmd_mapped <= whole.shmem_pmd_mapped);
            }
        }
    }
}
