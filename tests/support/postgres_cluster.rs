//! A PostgreSQL primary with a streaming standby, each on a simulated host of its own
//! ([`super::hosts`]), for the failover tests (issue 15): the primary is made with the same
//! `initdb` as the other test servers ([`postgres_server::init`]), the standby is a
//! `pg_basebackup` of it that streams the primary's WAL over the hosts' network, and
//! replication is synchronous or not as the test asks.
//!
//! The servers run as the `postgres` system user, switched to by `setpriv` inside the host
//! (entering a namespace needs root). The test process reaches them, for `psql` and
//! `pg_basebackup`, through their Unix sockets in their directories, which are not bound to
//! a network namespace; clients of the store run on hosts of their own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::hosts::Host;
use super::postgres_server::{self, INSTALL, PASSWORD, as_postgres, bin_dir, give, init};
use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_log};
use super::wait_until;

/// Who may log in: everybody from anywhere, by password, also for replication; over the
/// Unix socket without one.
const HBA: &str = "local all all trust
local replication all trust
host all all 0.0.0.0/0 scram-sha-256
host replication all 0.0.0.0/0 scram-sha-256
";

/// The standby's name for the primary (`application_name`, which `synchronous_standby_names`
/// lists).
const STANDBY_NAME: &str = "standby";

/// How the primary waits for its standby when it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names = 'standby'` and `synchronous_commit = on`: a commit returns
    /// once the standby has it on disk.
    Synchronous,
    /// No synchronous standby: a commit returns once the primary has it; the standby follows.
    Asynchronous,
}

/// One server of the cluster.
pub struct Node {
    pub host: Host,
    pub server: Server,
    /// Its directory: the data directory `data`, the Unix socket and `postgres.log`.
    home: PathBuf,
}

/// A primary and a standby streaming from it.
pub struct Cluster {
    pub primary: Node,
    pub standby: Node,
}

impl Cluster {
    /// Starts the primary on `primary`, copies it with `pg_basebackup`, starts the copy on
    /// `standby` as a standby, and waits until it streams (and, with
    /// [`Replication::Synchronous`], until the primary counts it as its synchronous standby).
    pub fn start(primary: &Host, standby: &Host, replication: Replication) -> Cluster {
        let user = postgres_server::postgres_user();
        assert!(user.is_some(), "the failover tests run as root");
        let dir = tempfile::tempdir().expect("temp dir");
        let data = init(dir.path(), user);
        std::fs::write(data.join("pg_hba.conf"), HBA).expect("write pg_hba.conf");
        let mut settings = vec!["synchronous_commit=on".to_owned()];
        if replication == Replication::Synchronous {
            settings.push(format!("synchronous_standby_names={STANDBY_NAME}"));
        }
        let primary = Node::start(primary, dir, settings, "ready to accept connections");

        let dir = tempfile::tempdir().expect("temp dir");
        give(dir.path(), user);
        let data = dir.path().join("data");
        let bin = bin_dir();
        let basebackup = require_binary("pg_basebackup", &[&bin.to_string_lossy()], INSTALL);
        let copied = as_postgres(Command::new(basebackup), user, dir.path())
            .arg("-h")
            .arg(&primary.home)
            .args(["-p", &primary.server.port.to_string(), "-U", "postgres"])
            .arg("-D")
            .arg(&data)
            .args(["-X", "stream", "-c", "fast", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_basebackup");
        assert!(
            copied.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&copied.stderr)
        );
        let signal = data.join("standby.signal");
        std::fs::write(&signal, "").expect("write standby.signal");
        give(&signal, user);
        // The standby streams over the network, so that cutting a host cuts replication.
        let conninfo = format!(
            "primary_conninfo=host={} port={} user=postgres password={PASSWORD} application_name={STANDBY_NAME}",
            primary.host.address(),
            primary.server.port
        );
        let standby = Node::start(
            standby,
            dir,
            vec![conninfo],
            "ready to accept read-only connections",
        );
        let cluster = Cluster { primary, standby };
        let wanted = match replication {
            Replication::Synchronous => "sync",
            Replication::Asynchronous => "async",
        };
        let query = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = '{wanted}'"
        );
        wait_until(
            Duration::from_secs(30),
            "the standby streams from the primary",
            || cluster.primary.psql(&query) == "1",
        );
        cluster
    }

    /// The store URL with both servers, primary first, and `query` (say
    /// `target_session_attrs=read-write`).
    pub fn url(&self, query: &str) -> String {
        let mut url = format!(
            "postgres://postgres:{PASSWORD}@{}:{},{}:{}/postgres",
            self.primary.host.address(),
            self.primary.server.port,
            self.standby.host.address(),
            self.standby.server.port
        );
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        url
    }

    /// Waits until the standby has replayed everything the primary has written.
    pub fn wait_caught_up(&self) {
        wait_until(Duration::from_secs(20), "the standby caught up", || {
            self.primary.psql(
                "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn = pg_current_wal_lsn()",
            ) == "1"
        });
    }

    /// The primary's machine dies: its host is cut off the network (its packets vanish, no
    /// reset reaches anybody) and every process of its server is SIGKILLed.
    pub fn kill_primary(&mut self) {
        self.primary.host.cut();
        self.primary.server.crash();
    }

    /// Promotes the standby (`pg_promote`, which returns once it is a primary).
    pub fn promote_standby(&self) {
        let promoted = self.standby.psql("SELECT pg_promote(true, 30)");
        assert_eq!(promoted, "t", "pg_promote");
        assert_eq!(self.standby.psql("SELECT pg_is_in_recovery()"), "f");
    }
}

impl Node {
    fn start(
        host: &Host,
        dir: tempfile::TempDir,
        settings: Vec<String>,
        ready: &'static str,
    ) -> Node {
        let (uid, gid) = postgres_server::postgres_user().expect("run as root");
        let bin = bin_dir();
        let postgres = require_binary("postgres", &[&bin.to_string_lossy()], INSTALL);
        let setpriv = require_binary(
            "setpriv",
            &["/usr/bin", "/bin"],
            "apt-get install util-linux",
        );
        let port = free_port();
        let home = dir.path().to_owned();
        let (host_for_launch, home_for_launch) = (host.clone(), home.clone());
        let server = Server::start(port, dir, move || {
            let home = &home_for_launch;
            let log = home.join("postgres.log");
            // A restarted server must not be taken for ready on its first start's word.
            let _ = std::fs::remove_file(&log);
            let log_file = std::fs::File::create(&log).expect("create the server log");
            let mut command = host_for_launch.command(&setpriv);
            command
                .current_dir(home)
                .env_remove("PGDATA")
                .args([format!("--reuid={uid}"), format!("--regid={gid}")])
                .args(["--clear-groups", "--"])
                .arg(&postgres)
                .arg("-D")
                .arg(home.join("data"))
                .args(["-h", &host_for_launch.address().to_string()])
                .args(["-p", &port.to_string()])
                .arg("-k")
                .arg(home)
                // Throwaway servers: no fsync (a killed primary is never started again), but
                // every commit is in the WAL, which is what the standby receives, before it
                // returns.
                .args(["-c", "fsync=off", "-c", "max_connections=100"])
                .args(["-c", "shared_buffers=16MB"])
                .args(settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            let mut child = spawn_tied(command).expect("start postgres");
            wait_for_log(&log, ready, &mut child, "postgres");
            child
        });
        Node {
            host: host.clone(),
            server,
            home,
        }
    }

    /// Runs `sql` with `psql` over the server's Unix socket and returns what it printed,
    /// trimmed (unaligned, tuples only); fails the test if psql fails.
    pub fn psql(&self, sql: &str) -> String {
        let bin = bin_dir();
        let psql = require_binary("psql", &[&bin.to_string_lossy()], INSTALL);
        let output = Command::new(psql)
            .arg("-h")
            .arg(&self.home)
            .args(["-p", &self.server.port.to_string(), "-U", "postgres"])
            .args([
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        Path::new(&self.home).join("postgres.log")
    }
}
