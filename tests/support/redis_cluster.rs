//! A replicated Redis on simulated hosts for the failover tests (issue 15): a primary, one
//! replica and three Sentinels, each on a host of its own. The Sentinels watch the primary as
//! [`SERVICE`] with a quorum of two and call it down after a second without an answer, so a
//! failover takes a few seconds.
//!
//! The test process cannot reach the hosts' addresses: every question to a server goes through
//! `redis-cli` on the `probe` host given to [`RedisCluster::start`].

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::hosts::Host;
use super::redis_server::{self, RedisServer};
use super::servers::{Server, free_port, require_binary, spawn_tied, wait_for_log};

/// The name under which the Sentinels monitor the primary.
pub const SERVICE: &str = "mymaster";

/// How long the Sentinels wait for an answer before they call a server down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// One Sentinel process on its host.
pub struct Sentinel {
    pub host: Host,
    pub server: Server,
}

/// The primary, its replica and the Sentinels; every process dies on drop (and with the
/// [`super::hosts::Network`]).
pub struct RedisCluster {
    pub primary_host: Host,
    pub primary: RedisServer,
    pub replica_host: Host,
    pub replica: RedisServer,
    pub sentinels: Vec<Sentinel>,
    probe: Host,
}

impl RedisCluster {
    /// Starts the primary on `primary_host`, a replica of it on `replica_host` and a Sentinel
    /// on each of `sentinel_hosts`, and waits until the replica is in sync and every Sentinel
    /// knows the replica and the other Sentinels.
    pub fn start(
        primary_host: &Host,
        replica_host: &Host,
        sentinel_hosts: [&Host; 3],
        probe: &Host,
    ) -> RedisCluster {
        require_binary("redis-cli", &[], "apt-get install redis-tools");
        // A full sync starts at once, not after the default 5 s wait for more replicas.
        let sync_now = ["--repl-diskless-sync-delay", "0"];
        let primary = redis_server::start_in_with(primary_host, &sync_now);
        let primary_address = primary_host.address().to_string();
        let primary_port = primary.server.port.to_string();
        let replica = redis_server::start_in_with(
            replica_host,
            &[
                &sync_now[..],
                &["--replicaof", &primary_address, &primary_port][..],
            ]
            .concat(),
        );
        let sentinels = sentinel_hosts
            .iter()
            .map(|host| start_sentinel(host, primary_host.address(), primary.server.port))
            .collect();
        let cluster = RedisCluster {
            primary_host: primary_host.clone(),
            primary,
            replica_host: replica_host.clone(),
            replica,
            sentinels,
            probe: probe.clone(),
        };
        cluster.wait_in_sync();
        let started = Instant::now();
        for sentinel in &cluster.sentinels {
            loop {
                let fields = cluster.sentinel_fields(sentinel);
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                if field("num-other-sentinels").as_deref() == Some("2")
                    && field("num-slaves").as_deref() == Some("1")
                {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "Sentinel on {} does not know the others and the replica after 30 s: {fields:?}",
                    sentinel.host.name()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// `redis+sentinel://s1:P,s2:P,s3:P/mymaster`, with `?query` unless it is empty.
    pub fn url(&self, query: &str) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{}:{}", s.host.address(), s.server.port))
            .collect();
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("redis+sentinel://{}/{SERVICE}{query}", hosts.join(","))
    }

    /// `redis-cli -h ADDRESS -p PORT ARGS…` on the probe host: its output, trimmed.
    pub fn cli(&self, address: Ipv4Addr, port: u16, args: &[&str]) -> String {
        let output = self
            .probe
            .command("timeout")
            .args([
                "2",
                "redis-cli",
                "-h",
                &address.to_string(),
                "-p",
                &port.to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// `redis-cli` ARGS against the (original) replica.
    pub fn on_replica(&self, args: &[&str]) -> String {
        self.cli(self.replica_host.address(), self.replica.server.port, args)
    }

    /// `redis-cli` ARGS against the original primary.
    pub fn on_primary(&self, args: &[&str]) -> String {
        self.cli(self.primary_host.address(), self.primary.server.port, args)
    }

    /// Waits (at most 20 s) until the replica has a live link to the primary and has caught up
    /// with the primary's replication offset.
    pub fn wait_in_sync(&self) {
        let started = Instant::now();
        loop {
            let replica = self.on_replica(&["INFO", "replication"]);
            let primary = self.on_primary(&["INFO", "replication"]);
            let offset = |info: &str, key: &str| {
                info.lines()
                    .find_map(|line| line.trim().strip_prefix(key))
                    .map(str::to_owned)
            };
            if replica.contains("master_link_status:up")
                && offset(&replica, "slave_repl_offset:").is_some()
                && offset(&replica, "slave_repl_offset:") == offset(&primary, "master_repl_offset:")
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the replica is not in sync after 20 s:\n{replica}\n--- primary:\n{primary}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The fields of `SENTINEL master mymaster` as one Sentinel reports them.
    fn sentinel_fields(&self, sentinel: &Sentinel) -> Vec<(String, String)> {
        let text = self.cli(
            sentinel.host.address(),
            sentinel.server.port,
            &["SENTINEL", "master", SERVICE],
        );
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect()
    }

    /// Makes the replica lag, deterministically: the primary's host drops everything it sends
    /// to the replica (a blackhole route), so writes from now on stay on the primary; its
    /// TCP buffers the replication stream and retries, and a primary killed meanwhile takes
    /// the unsent part with it. The Sentinels still see both servers.
    pub fn stall_replication(&self) {
        self.route("add");
    }

    /// Ends [`stall_replication`](Self::stall_replication).
    pub fn resume_replication(&self) {
        self.route("del");
    }

    fn route(&self, action: &str) {
        let target = format!("{}/32", self.replica_host.address());
        let output = self
            .primary_host
            .command(super::hosts::ip_command().get_program())
            .args(["route", action, "blackhole", &target])
            .stdin(Stdio::null())
            .output()
            .expect("run ip route");
        assert!(
            output.status.success(),
            "ip route {action} blackhole {target}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills the primary (SIGKILL), as a crash of its machine's Redis would.
    pub fn kill_primary(&mut self) {
        self.primary.server.crash();
    }

    /// Waits (at most `limit`) until the original replica answers as the primary, and the
    /// Sentinels that answer name it; returns when.
    pub fn wait_for_promotion(&self, limit: Duration) -> Instant {
        let started = Instant::now();
        let replica = self.replica_host.address().to_string();
        loop {
            let promoted = self.on_replica(&["ROLE"]).lines().next() == Some("master");
            let named = self.sentinels.iter().all(|sentinel| {
                let answer = self.cli(
                    sentinel.host.address(),
                    sentinel.server.port,
                    &["SENTINEL", "get-master-addr-by-name", SERVICE],
                );
                answer.lines().next() == Some(replica.as_str())
            });
            if promoted && named {
                return Instant::now();
            }
            assert!(
                started.elapsed() < limit,
                "the replica was not promoted within {limit:?}; replica ROLE: {}",
                self.on_replica(&["ROLE"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks the first Sentinel for a failover while the primary is up (`SENTINEL FAILOVER`):
    /// the replica is promoted and the old primary turned into its replica.
    pub fn manual_failover(&self) {
        let sentinel = &self.sentinels[0];
        let answer = self.cli(
            sentinel.host.address(),
            sentinel.server.port,
            &["SENTINEL", "FAILOVER", SERVICE],
        );
        assert_eq!(answer, "OK", "SENTINEL FAILOVER");
    }

    /// Starts the old primary again (same port, its own data) and makes it a replica of the
    /// promoted one at once, as the Sentinels would after a while (they wait some seconds
    /// before they convert a returning primary).
    pub fn restart_old_primary_as_replica(&mut self) {
        self.primary.server.restart();
        let address = self.replica_host.address().to_string();
        let port = self.replica.server.port.to_string();
        let answer = self.on_primary(&["REPLICAOF", &address, &port]);
        assert!(answer.starts_with("OK"), "REPLICAOF: {answer}");
    }

    /// Whether `key` exists on the original replica.
    pub fn replica_has(&self, key: &str) -> bool {
        self.on_replica(&["EXISTS", key]) == "1"
    }
}

/// Starts a Sentinel on `host` that monitors the primary at `address:port`.
fn start_sentinel(host: &Host, address: Ipv4Addr, port: u16) -> Sentinel {
    let binary = require_binary("redis-server", &[], "apt-get install redis-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let own_port = free_port();
    let data = dir.path().to_owned();
    let config = data.join("sentinel.conf");
    // Sentinel rewrites its configuration file as it learns, so it must be writable.
    std::fs::write(
        &config,
        format!(
            "bind {bind}\nport {own_port}\nprotected-mode no\ndaemonize no\ndir {dir}\n\
             logfile {dir}/sentinel.log\n\
             sentinel monitor {SERVICE} {address} {port} 2\n\
             sentinel down-after-milliseconds {SERVICE} {down}\n\
             sentinel failover-timeout {SERVICE} 3000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            bind = host.address(),
            dir = data.display(),
            down = DOWN_AFTER.as_millis(),
        ),
    )
    .expect("write sentinel.conf");
    let host_for_launch = host.clone();
    let server = Server::start(own_port, dir, move || {
        let log = data.join("sentinel.log");
        let _ = std::fs::remove_file(&log);
        let mut command: Command = host_for_launch.command(&binary);
        command
            .arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn_tied(command).expect("start redis-server --sentinel");
        wait_for_log(&log, "+monitor master", &mut child, "redis-sentinel");
        child
    });
    Sentinel {
        host: host.clone(),
        server,
    }
}
