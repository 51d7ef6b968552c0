//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use mmap_actor::MappedFile;

/// A temporary directory and a path inside it; the directory is removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new read-write mapping of `len` bytes named `name`.
    pub async fn file(&self, name: &str, len: u64) -> MappedFile {
        MappedFile::create(self.path(name), len)
            .await
            .expect("create mapping")
    }
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Child processes for the fault tests: the test binary re-executes itself
/// to run one `#[ignore]`d child test, so that whatever can kill a process
/// (SIGKILL, SIGBUS, a fault injector, a mount namespace) kills the child.
pub mod child {
    use std::ffi::OsStr;
    use std::path::Path;
    use std::process::{Command, ExitStatus, Output};

    /// SIGKILL's number on Linux.
    pub const SIGKILL: i32 = 9;
    /// SIGBUS's number on Linux.
    pub const SIGBUS: i32 = 7;
    /// SIGXFSZ's number on Linux.
    pub const SIGXFSZ: i32 = 25;

    /// The arguments that make the test binary run exactly the test `name`,
    /// even though it is `#[ignore]`d, with its output uncaptured.
    pub fn test_args(name: &str) -> Vec<String> {
        vec![
            "--exact".into(),
            name.into(),
            "--include-ignored".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ]
    }

    /// The one builder of child commands: the test binary running exactly
    /// the child test `name`, through `wrapper` if it is not empty (a fault
    /// injector, a namespace or a limit, e.g. `["strace", "-f", ...]`),
    /// with `envs` set (a child test does nothing without its variable).
    pub fn build<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        wrapper: &[&str],
        name: &str,
        envs: impl IntoIterator<Item = (K, V)>,
    ) -> Command {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(&exe),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&exe);
                cmd
            }
        };
        cmd.args(test_args(name)).envs(envs);
        cmd
    }

    /// A command running the child test `name` of this test binary, with
    /// `env_key=env_value` set.
    pub fn command(name: &str, env_key: &str, env_value: impl AsRef<OsStr>) -> Command {
        build(&[], name, [(env_key, env_value)])
    }

    /// A command running the child test `name` through `wrapper`.
    pub fn wrapped(
        wrapper: &[&str],
        name: &str,
        env_key: &str,
        env_value: impl AsRef<OsStr>,
    ) -> Command {
        build(wrapper, name, [(env_key, env_value)])
    }

    /// The signal that killed the process, if one did.
    pub fn signal(status: &ExitStatus) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        status.signal()
    }

    /// Runs `cmd` to completion, capturing both streams.
    pub fn run(cmd: &mut Command) -> Output {
        cmd.stdin(std::process::Stdio::null())
            .output()
            .expect("spawn child process")
    }

    /// Both output streams of a child, for failure messages.
    pub fn describe(out: &Output) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Asserts that the child exited with status 0 and printed `marker` (so
    /// that a filtered-out or missing child test cannot pass for one that
    /// ran).
    pub fn assert_success(out: &Output, marker: &str) {
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(marker),
            "child failed or did not print {marker:?}\n{}",
            describe(out)
        );
    }

    /// Prints why a fault test did not run. The test then passes: the
    /// environment, not the library, lacks what it needs.
    pub fn skip(test: &str, reason: &str) {
        println!("SKIPPED {test}: {reason}");
        eprintln!("SKIPPED {test}: {reason}");
    }

    /// Whether this process may create private mount namespaces (`unshare
    /// -m`, as root): `None` if so, else why not.
    pub fn mount_namespace_unavailable() -> Option<String> {
        if !super::have("unshare") || !super::have("mount") {
            return Some("unshare or mount is not installed".into());
        }
        let ok = Command::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            None
        } else {
            Some("cannot create a private mount namespace (`unshare -m` needs root)".into())
        }
    }

    /// Whether loop devices can be used: `None` if so, else why not.
    pub fn loop_devices_unavailable() -> Option<String> {
        if let Some(why) = mount_namespace_unavailable() {
            return Some(why);
        }
        for tool in ["losetup", "mkfs.ext4", "umount"] {
            if !super::have(tool) {
                return Some(format!("{tool} is not installed"));
            }
        }
        if !Path::new("/dev/loop-control").exists() {
            return Some("/dev/loop-control does not exist".into());
        }
        let free = Command::new("losetup")
            .arg("-f")
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if free {
            None
        } else {
            Some("`losetup -f` finds no free loop device".into())
        }
    }

    /// Runs a shell command (inside a child's private namespace), panicking
    /// with its output when it fails.
    pub fn sh(script: &str) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("spawn sh");
        assert!(
            out.status.success(),
            "`{script}` failed\n{}",
            describe(&out)
        );
    }
}

/// A small seeded generator (SplitMix64): the fault tests replay a child's
/// schedule from its seed, so they need the same numbers in both processes.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// `len` bytes derived from `seed` only.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut rng = SplitMix(seed);
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Re-runs the ignored test `name` of the current test binary in a child
/// process, with `env` set, optionally under a wrapper command (`strace`,
/// `unshare`, ...). Returns the child's exit status and combined output.
pub fn rerun(
    name: &str,
    wrapper: &[&str],
    env: &[(&str, String)],
) -> (std::process::ExitStatus, String) {
    let out = child::run(&mut child::build(
        wrapper,
        name,
        env.iter().map(|(k, v)| (*k, v.as_str())),
    ));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Runs `scenario` of the child test `child_test` (its directory a fresh
/// scratch dir) under `strace -f -c -e trace=<trace>` and returns the call
/// counts, or `None` (skipped with a printed reason) without strace.
#[allow(dead_code)]
pub fn strace_scenario(
    test: &str,
    trace: &str,
    child_test: &str,
    child_env: &str,
    scenario: &str,
) -> Option<std::collections::HashMap<String, u64>> {
    if !have("strace") {
        child::skip(test, "strace is not installed");
        return None;
    }
    let s = Scratch::new();
    let summary = s.path("strace.txt");
    let summary_arg = summary.display().to_string();
    let trace_arg = format!("trace={trace}");
    let out = child::run(&mut child::wrapped(
        &["strace", "-f", "-c", "-o", &summary_arg, "-e", &trace_arg],
        child_test,
        child_env,
        format!("{scenario}:{}", s.path("data").display()),
    ));
    child::assert_success(&out, &format!("SCENARIO-PASSED {scenario}"));
    Some(strace_counts(&std::fs::read_to_string(&summary).unwrap()))
}

/// Calls of each syscall in an `strace -c` summary file.
pub fn strace_counts(summary: &str) -> std::collections::HashMap<String, u64> {
    let mut counts = std::collections::HashMap::new();
    for line in summary.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if cols.len() >= 5 && cols[0].parse::<f64>().is_ok() {
            let name = cols[cols.len() - 1].to_string();
            if let Ok(calls) = cols[3].parse::<u64>() {
                counts.insert(name, calls);
            }
        }
    }
    counts
}

/// Expected outcomes for the bad-input tables.
pub mod expect;
