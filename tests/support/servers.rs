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
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
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
    let started = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.try_wait() {
            panic!("{what} exited with {status} before it listened on port {port}");
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not listen on port {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running server process, killed on drop, with its temporary directory.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
