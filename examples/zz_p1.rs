use mmap_actor::MappedFile;
use std::time::Instant;
fn main() {
    let threads: usize = std::env::var("THREADS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let path = "/work/zz_p1.bin";
        let len: u64 = std::env::args()
            .nth(2)
            .map(|s| s.parse().unwrap())
            .unwrap_or(64 << 20);
        std::fs::write(path, vec![1u8; len as usize]).unwrap();
        let file = MappedFile::open_rw(path).await.unwrap();
        let chunk = vec![1u8; 1 << 20];
        for off in (0..len).step_by(1 << 20) {
            let n = (len - off).min(1 << 20) as usize;
            file.update_from(off, &chunk[..n]).await.unwrap();
        }
        let mode = std::env::args().nth(1).unwrap_or("w".into());
        let mm_path = "/work/zz_p1_mm.bin";
        std::fs::write(mm_path, vec![1u8; len as usize]).unwrap();
        let mm = mmap_io::MemoryMappedFile::open_rw(mm_path).unwrap();
        for off in (0..len).step_by(1 << 20) {
            let n = (len - off).min(1 << 20) as usize;
            mm.update_region(off, &chunk[..n]).unwrap();
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut cur = String::new();
        for line in smaps.lines() {
            if line.contains("zz_p1") {
                cur = line.to_string();
                println!("{line}");
            }
            if !cur.is_empty()
                && (line.starts_with("FilePmdMapped")
                    || line.starts_with("Rss:")
                    || line.starts_with("KernelPageSize"))
            {
                println!("   {line}");
            }
            if line.starts_with("VmFlags") {
                cur.clear();
            }
        }
        for round in 0..5 {
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for t in 0..64u64 {
                let mm = mm.clone();
                let mode = mode.clone();
                set.spawn(async move {
                    let mut x = t.wrapping_mul(0x9E3779B97F4A7C15) | 1;
                    let mut buf = [t as u8; 64];
                    for _ in 0..20000 {
                        x ^= x >> 12;
                        x ^= x << 25;
                        x ^= x >> 27;
                        let off = (x.wrapping_mul(0x2545F4914F6CDD1D) % (len / 64)) * 64;
                        if mode != "w" {
                            mm.read_into(off, &mut buf).unwrap();
                        } else {
                            mm.update_region(off, &buf).unwrap();
                        }
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
            let theirs = 64.0 * 20000.0 / start.elapsed().as_secs_f64() / 1e6;
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for t in 0..64u64 {
                let file = file.clone();
                let mode = mode.clone();
                set.spawn(async move {
                    let mut x = t.wrapping_mul(0x9E3779B97F4A7C15) | 1;
                    let mut buf = [t as u8; 64];
                    let seg = if mode == "s" {
                        Some(file.segment(0, len).await.unwrap())
                    } else {
                        None
                    };
                    for _ in 0..20000 {
                        x ^= x >> 12;
                        x ^= x << 25;
                        x ^= x >> 27;
                        let off = (x.wrapping_mul(0x2545F4914F6CDD1D) % (len / 64)) * 64;
                        if let Some(seg) = &seg {
                            buf.copy_from_slice(&seg[off as usize..off as usize + 64]);
                            std::hint::black_box(&buf);
                            tokio::task::consume_budget().await;
                        } else if mode == "r" {
                            file.load_into(off, &mut buf).await.unwrap();
                        } else {
                            file.update_from(off, &buf).await.unwrap();
                        }
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
            let el = start.elapsed();
            let ours = 64.0 * 20000.0 / el.as_secs_f64() / 1e6;
            println!(
                "round {round}: ours {ours:.2} M op/s, mmap-io {theirs:.2} M op/s, ratio {:.2}",
                ours / theirs
            );
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut cur = String::new();
        for line in smaps.lines() {
            if line.contains(".bin") {
                cur = line.to_string();
                println!("{line}");
            }
            if !cur.is_empty() && (line.starts_with("FilePmdMapped") || line.starts_with("Rss:")) {
                println!("   {line}");
            }
            if line.starts_with("VmFlags") {
                cur.clear();
            }
        }
        file.close().await.unwrap();
        std::fs::remove_file(path).unwrap();
    });
}
