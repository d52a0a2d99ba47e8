//! A private PostgreSQL cluster (Debian's `postgresql` package) for the tests: `initdb` into a
//! temporary directory and `postgres` on a free loopback port, run as the `postgres` system
//! user because the server refuses to run as root. Started once per test run and shared.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_log};

const INSTALL: &str = "apt-get install postgresql (or scripts/install-test-deps)";

/// The superuser's password in the test cluster.
pub const PASSWORD: &str = "pg-secret-4711";

/// The shared server, started on first use.
pub struct Postgres {
    pub server: Server,
}

impl Postgres {
    /// `postgres://` URL of the test database, with the right password.
    pub fn url(&self) -> String {
        self.url_with(PASSWORD)
    }

    /// The URL without our options, for the driver itself.
    pub fn raw_url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.server.port
        )
    }

    /// The same URL with `password`. The connect timeout is generous: the test machine may be
    /// busy compiling.
    pub fn url_with(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres?connect_timeout=30s",
            self.server.port
        )
    }
}

/// The one server of this test run.
pub fn shared() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// `/usr/lib/postgresql/<newest version>/bin`, where Debian keeps the server binaries.
fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    match versions.into_iter().max() {
        Some(version) => PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")),
        None => PathBuf::from("/usr/lib/postgresql/missing/bin"),
    }
}

/// The `postgres` system user's uid and gid, when we are root and must switch to it.
fn postgres_user() -> Option<(u32, u32)> {
    // /proc/self belongs to the effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Some(ids.unwrap_or_else(|| panic!("no `postgres` system user; {INSTALL}")))
}

/// Hands `path` to the `postgres` user, if we switch to it.
fn give(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn as_postgres(mut command: Command, user: Option<(u32, u32)>, dir: &Path) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command.current_dir(dir).env_remove("PGDATA");
    command
}

/// A server of the caller's own, for tests that pause or kill it.
pub fn own() -> Postgres {
    start()
}

fn start() -> Postgres {
    let bin = bin_dir();
    let bin_str = bin.to_string_lossy().into_owned();
    let initdb = require_binary("initdb", &[&bin_str], INSTALL);
    let postgres = require_binary("postgres", &[&bin_str], INSTALL);
    let user = postgres_user();
    let dir = tempfile::tempdir().expect("temp dir");
    give(dir.path(), user);
    let data = dir.path().join("data");
    let pwfile = dir.path().join("pwfile");
    std::fs::write(&pwfile, PASSWORD).expect("write the password file");
    let init = as_postgres(Command::new(initdb), user, dir.path())
        .args([
            "--no-sync",
            "--no-instructions",
            "-U",
            "postgres",
            "-E",
            "UTF8",
        ])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .arg("-D")
        .arg(&data)
        .output()
        .expect("run initdb");
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let port = free_port();
    let home = dir.path().to_owned();
    let server = Server::start(port, dir, move || {
        let log = home.join("postgres.log");
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut command = as_postgres(Command::new(&postgres), user, &home);
        command
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .arg("-k")
            .arg(&home)
            // A throwaway cluster, small and quick: no fsync, but every commit is written to
            // the WAL before it returns, so a crash of the server loses no committed lease.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=on"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(["-c", "shared_buffers=16MB"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let mut child = spawn_tied(command).expect("start postgres");
        // The port opens before the server accepts sessions; its log says when it does.
        wait_for_log(&log, "ready to accept connections", &mut child, "postgres");
        child
    });
    Postgres { server }
}

impl super::servers::StoreServer for Postgres {
    fn store_url(&self) -> String {
        self.url()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}
