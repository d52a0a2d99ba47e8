//! Processes that SIGKILL cannot stop, for the tests that show what happens then: the cgroup v1
//! freezer holds a frozen process until it is thawed, with the SIGKILL pending (a cgroup v2
//! freeze would let SIGKILL through). In life such a process is one stuck in the kernel, say on
//! a dead NFS server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A process frozen in a v1 freezer cgroup of its own; thawed, moved back and the cgroup
/// removed when dropped, also when the test fails.
pub struct Frozen {
    dir: PathBuf,
    pid: i32,
}

impl Frozen {
    /// Freezes `pid`. Fails the test if the host has no cgroup v1 freezer (hybrid hosts have
    /// one beside the v2 hierarchy; a pure-v2 host has none).
    pub fn new(pid: i32) -> Frozen {
        let root = freezer_root();
        let dir = root.join(format!("singleton-test-{pid}"));
        std::fs::create_dir_all(&dir).expect("create a freezer cgroup");
        let frozen = Frozen { dir, pid };
        std::fs::write(frozen.dir.join("cgroup.procs"), pid.to_string())
            .expect("move the process into the freezer cgroup");
        std::fs::write(frozen.dir.join("freezer.state"), "FROZEN").expect("freeze");
        let started = Instant::now();
        while std::fs::read_to_string(frozen.dir.join("freezer.state"))
            .map(|state| state.trim() != "FROZEN")
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the process did not freeze"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        if let Some(root) = self.dir.parent() {
            let _ = std::fs::write(root.join("cgroup.procs"), self.pid.to_string());
        }
        let started = Instant::now();
        while std::fs::remove_dir(&self.dir).is_err() && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Where the cgroup v1 freezer hierarchy is mounted.
fn freezer_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let mut rest = rest.split_whitespace();
            let (kind, options) = (rest.next()?, rest.nth(1)?);
            (kind == "cgroup" && options.split(',').any(|o| o == "freezer"))
                .then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .unwrap_or_else(|| {
            panic!(
                "these tests need the cgroup v1 freezer to hold a process that SIGKILL cannot stop; \
                 none is mounted (mount -t cgroup -o freezer freezer /sys/fs/cgroup/freezer)"
            )
        })
}
