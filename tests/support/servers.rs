//! Real store servers for the tests, on free loopback ports in temporary directories.
//!
//! Every server process is spawned with `PR_SET_PDEATHSIG`, from one thread that lives as long
//! as the test binary, so servers die with the test run even when a test fails or the run is
//! killed; a [`Server`] also kills its process when dropped. A missing server binary fails the
//! test with the command that installs it: network stores are never skipped silently.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` so that it is killed when the test binary exits.
pub fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
    let sender = {
        let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        spawner
            .get_or_insert_with(|| {
                // The parent-death signal fires when the spawning THREAD exits, so all spawns
                // go through this thread, which never does.
                let (tx, rx) = mpsc::channel::<SpawnRequest>();
                std::thread::spawn(move || {
                    for (mut command, reply) in rx {
                        let _ = reply.send(command.spawn());
                    }
                });
                tx
            })
            .clone()
    };
    let (reply, answer) = mpsc::channel();
    sender
        .send((command, reply))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// A port that was free a moment ago, for a server to listen on.
///
/// It comes from below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by
/// default), which the suite's hundreds of outgoing connections draw their local ports from:
/// a port the kernel handed out for `bind(0)` could be taken by one of them before the server
/// binds it. Ports are tried in turn from a random start, each checked by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOW + 1_000 {
        let span = ephemeral_low - LOW;
        let start = *START.get_or_init(|| fastrand::u32(0..span));
        for _ in 0..span {
            let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
                drop(listener);
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a loopback port")
}

/// The path of `binary` (searched on PATH and in `extra_dirs`), or a test failure saying how to
/// install it.
pub fn require_binary(binary: &str, extra_dirs: &[&str], install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{binary}` is not installed; the tests need a real server. Install it with: {install}")
        })
}

/// Waits until something accepts TCP connections on `port`, or panics after `limit`.
pub fn wait_for_port(port: u16, limit: Duration, server: &mut Child, what: &str) {
    wait_for_port_logged(port, limit, server, what, None);
}

/// [`wait_for_port`] for a server that writes `log`, which a panic shows.
pub fn wait_for_port_logged(
    port: u16,
    limit: Duration,
    server: &mut Child,
    what: &str,
    log: Option<&std::path::Path>,
) {
    let started = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.try_wait() {
            let text = log
                .map(|log| std::fs::read_to_string(log).unwrap_or_default())
                .unwrap_or_default();
            panic!("{what} exited with {status} before it listened on port {port}:\n{text}");
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not listen on port {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the server's `log` says `marker`, or panics (with the log) after a minute or
/// when the server exits.
pub fn wait_for_log(log: &std::path::Path, marker: &str, server: &mut Child, what: &str) {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(marker) {
            return;
        }
        if let Ok(Some(status)) = server.try_wait() {
            panic!("{what} exited with {status}:\n{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not start within a minute:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How to start a server: spawns it and waits until it serves, on the same port and data
/// every time, so that a test can crash the server and start it again.
pub type Launch = Box<dyn Fn() -> Child + Send + Sync>;

/// A running server process, killed on drop, with its temporary directory.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    launch: Launch,
}

impl Server {
    /// Starts a server with `launch` and keeps it to start the server again after a crash.
    pub fn start(
        port: u16,
        dir: tempfile::TempDir,
        launch: impl Fn() -> Child + Send + Sync + 'static,
    ) -> Server {
        let child = launch();
        Server {
            child,
            port,
            dir,
            launch: Box::new(launch),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every process of the server: PostgreSQL serves each connection from a process of its
    /// own.
    pub fn processes(&self) -> Vec<i32> {
        process_tree(self.pid())
    }

    /// Stops (SIGSTOP) the server and every process it started, as a long pause would; they
    /// run again when the returned guard is dropped, also when the test fails. Stops again
    /// until no new process appears (PostgreSQL may start a backend meanwhile); one that has
    /// exited meanwhile (a closed connection's backend) has nothing left to stop.
    pub fn pause(&self) -> Paused {
        let mut paused = Paused(Vec::new());
        loop {
            let new: Vec<i32> = self
                .processes()
                .into_iter()
                .filter(|pid| !paused.0.contains(pid))
                .collect();
            if new.is_empty() {
                return paused;
            }
            for pid in new {
                match kill(Pid::from_raw(pid), Signal::SIGSTOP) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => paused.0.push(pid),
                    Err(err) => panic!("stop the server's process {pid}: {err}"),
                }
            }
        }
    }

    /// SIGKILLs the server and every process it started, as a crash would, and waits until
    /// they are gone.
    pub fn crash(&mut self) {
        let all = self.processes();
        for &pid in &all {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        let started = Instant::now();
        while all.iter().any(|&pid| super::alive(pid)) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the crashed server's processes did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again, on the same port and data, after [`Server::crash`].
    pub fn restart(&mut self) {
        self.child = (self.launch)();
    }
}

/// A paused server's processes, continued (SIGCONT) when dropped.
pub struct Paused(Vec<i32>);

impl Drop for Paused {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(pid, comm, ppid, pgrp)` of every process, from /proc.
pub fn processes() -> Vec<(i32, String, i32, i32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if let (Some(ppid), Some(pgrp)) = (rest.get(1), rest.get(2)) {
            found.push((
                pid,
                comm,
                ppid.parse().unwrap_or(0),
                pgrp.parse().unwrap_or(0),
            ));
        }
    }
    found
}

/// `root` and all its descendants.
pub fn process_tree(root: i32) -> Vec<i32> {
    let all = processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            all.iter()
                .filter(|(_, _, ppid, _)| *ppid == parent)
                .map(|(pid, ..)| *pid),
        );
        i += 1;
    }
    tree
}

/// A test server of one store kind, with its store URL.
pub trait StoreServer {
    /// The URL of the store on this server.
    fn store_url(&self) -> String;
    /// The server's process.
    fn server(&mut self) -> &mut Server;
}
