//! Shared test helpers: running the real `singleton` binary, temporary stores, the history
//! checker, server processes and simulated hosts.

#![allow(dead_code)]

pub mod certs;
#[cfg(feature = "etcd")]
pub mod etcd_cluster;
pub mod etcd_server;
pub mod fenced;
pub mod freezer;
pub mod fuse;
pub mod history;
pub mod hosts;
pub mod mariadb_server;
#[cfg(feature = "mongodb")]
pub mod mongodb_server;
#[cfg(feature = "postgres")]
pub mod postgres_cluster;
pub mod postgres_server;
pub mod proxy;
#[cfg(feature = "redis")]
pub mod redis_cluster;
pub mod redis_server;
pub mod servers;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The `singleton` binary under test.
/// `SINGLETON_TEST_BIN` runs the suite against another build, say an installed one or an older
/// commit's, to see which tests it fails.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SINGLETON_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_singleton").to_owned())
    })
}

/// A SQLite store in a fresh temporary directory, removed on drop.
pub struct SqliteStore {
    pub dir: TempDir,
    pub url: String,
}

impl SqliteStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/locks.db", dir.path().display());
        SqliteStore { dir, url }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// A builder for one invocation of the binary, in the style of `just`'s test harness.
pub struct Test {
    command: Command,
}

impl Test {
    pub fn new() -> Self {
        Test::program(bin())
    }

    /// Runs `program` instead of the binary, say one that runs the binary as another user.
    pub fn program(program: &str) -> Self {
        Test::command(Command::new(program))
    }

    /// Runs `command`, say one that runs the binary on a simulated host
    /// ([`hosts::Host::singleton`]).
    pub fn command(mut command: Command) -> Self {
        command.env_remove("SINGLETON_STORE");
        Test { command }
    }

    /// Sets `--store`'s environment default.
    pub fn store(mut self, url: &str) -> Self {
        self.command.env("SINGLETON_STORE", url);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn arg_str(mut self, arg: &str) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Runs to completion with no stdin.
    pub fn output(mut self) -> Done {
        let started = Instant::now();
        let output = self
            .command
            .stdin(Stdio::null())
            .output()
            .expect("run singleton");
        Done::new(output, started.elapsed())
    }

    /// Runs and asserts the exit code.
    pub fn status(self, code: i32) -> Done {
        let done = self.output();
        assert_eq!(
            done.code, code,
            "unexpected exit code; stderr:\n{}",
            done.stderr
        );
        done
    }

    /// Starts in the background; the child is killed when the handle drops.
    pub fn spawn(mut self) -> Running {
        let child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn singleton");
        Running { child: Some(child) }
    }
}

/// A finished invocation.
#[derive(Debug)]
pub struct Done {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Done {
    fn new(output: Output, elapsed: Duration) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let code = output
            .status
            .code()
            .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(0));
        Done {
            code,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }

    /// The JSON event lines printed with `--json`.
    pub fn events(&self) -> Vec<serde_json::Value> {
        json_lines(&self.stderr)
    }

    /// Asserts that stderr is exactly one line and returns it.
    pub fn one_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        lines[0]
    }

    /// Asserts how the CLI fails on a store it cannot use (exit 69) or a URL it will not take
    /// (64): exit `code`, and one stderr line `singleton: …` that contains each of `words`,
    /// with `secret` (a password) shown nowhere, on stderr or stdout. Returns the line.
    pub fn assert_one_line_failure(&self, code: i32, secret: &str, words: &[&str]) -> &str {
        assert_eq!(
            self.code, code,
            "unexpected exit code; stderr:\n{}",
            self.stderr
        );
        let line = self.one_line();
        eprintln!("{line}");
        assert!(line.starts_with("singleton: "), "{line}");
        for words in words {
            assert!(line.contains(words), "{words:?} missing from: {line}");
        }
        for output in [&self.stdout, &self.stderr] {
            assert!(!output.contains(secret), "the password leaked: {output}");
        }
        line
    }
}

/// `singleton run --wait --timeout 60s` on `store` where waiting cannot help (a TLS or login
/// failure): asserts that it gives up within `within`, long before the minute (waiting it out
/// would end with 124), with the one-line failure that [`Done::assert_one_line_failure`]
/// checks: exit 69, each of `words`, and no `secret`.
pub fn assert_waiter_gives_up(store: &str, within: Duration, secret: &str, words: &[&str]) {
    let done = Test::new()
        .store(store)
        .args([
            "run",
            "--wait",
            "--timeout",
            "60s",
            "--name",
            &unique("wait"),
        ])
        .args(["--", "true"])
        .output();
    done.assert_one_line_failure(69, secret, words);
    assert!(
        done.elapsed < within,
        "gave up only after {:?}: {}",
        done.elapsed,
        done.stderr
    );
}

/// The JSON objects among `text`'s lines (the command's own stderr lines are skipped).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// A background invocation, killed (SIGKILL) on drop if still running.
pub struct Running {
    child: Option<std::process::Child>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Waits for the process to end (at most `limit`) and collects its output.
    pub fn finish(mut self, limit: Duration) -> Done {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                let output = child.wait_with_output().expect("output");
                panic!(
                    "singleton did not finish within {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child.wait_with_output().expect("output");
        Done::new(output, started.elapsed())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    /// Waits until `name` is held in `store`; on time-out shows what this process printed.
    pub fn wait_held(&mut self, store: &str, name: &str) {
        let started = Instant::now();
        while !held(store, name) {
            let child = self.child.as_mut().expect("running");
            let exited = child.try_wait().expect("try_wait");
            if exited.is_some() || started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let output = self
                    .child
                    .take()
                    .unwrap()
                    .wait_with_output()
                    .expect("output");
                panic!(
                    "{name:?} not held after {:?} ({exited:?}); stderr:\n{}",
                    started.elapsed(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` names a live process (zombies count as dead).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Whether `singleton exists NAME` says the name is held.
pub fn held(store: &str, name: &str) -> bool {
    let done = Test::new().store(store).args(["exists", name]).output();
    match done.code {
        0 => true,
        1 => false,
        code => panic!("exists failed with {code}: {}", done.stderr),
    }
}

/// `singleton status NAME --json` for a held name, and the lease's reported expiry.
pub fn held_status(store: &str, name: &str) -> (serde_json::Value, std::time::SystemTime) {
    let done = Test::new()
        .store(store)
        .args(["status", name, "--json"])
        .status(0);
    let status: serde_json::Value = serde_json::from_str(&done.stdout).expect("status JSON");
    let expires = status["lease"]["expires"]
        .as_str()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .unwrap_or_else(|| panic!("{name:?} is not held with an expiry: {status}"));
    (status, expires)
}

/// A unique name for one test.
pub fn unique(prefix: &str) -> String {
    singleton_process::conformance::unique(prefix)
}

/// The directory of a cgroup v2 path (as /proc/PID/cgroup shows it), under the cgroup2 mount.
pub fn cgroup2_dir(path: &str) -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            (rest.split_whitespace().next()? == "cgroup2")
                .then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .expect("a cgroup2 mount");
    mount.join(path.trim_start_matches('/'))
}
