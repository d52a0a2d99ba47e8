//! A three-member etcd cluster on simulated hosts (issue 15): each member runs on a host of its
//! own ([`super::hosts`]), on the host's address, ports 2379 (clients) and 2380 (peers), with
//! short raft timings so that a lost leader is replaced within about a second. Clients run on
//! other hosts with [`EtcdCluster::url`], which names every member.
//!
//! Which member leads is read from the members themselves: each answers etcd's maintenance
//! status (`/v3/maintenance/status` on its gRPC gateway, the JSON form of `etcdctl endpoint
//! status`) with its own id and its leader's. Debian packages no `etcdctl` with the server, and
//! the tests' own process cannot reach the hosts' addresses, so `curl` asks, on an observer
//! host.
//!
//! Cleaning up: each member is SIGKILLed when the cluster is dropped (and tied to the test
//! binary's life, see [`spawn_tied`]); the [`super::hosts::Network`] then removes the hosts.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::hosts::Host;
use super::servers::{require_binary, spawn_tied};

/// Raft's heartbeat and election timeout, in milliseconds. etcd's defaults (100, 1000) make a
/// failover take 1–2 s; these halve it and still leave the loaded test machine's members room
/// to answer heartbeats in time (an election without a fault would spoil the scenarios).
pub const HEARTBEAT_MS: u32 = 50;
pub const ELECTION_MS: u32 = 500;

/// Pre-vote (raft's PreVote, etcd's `--pre-vote`, on by default since 3.5 but off in Debian's
/// 3.4): a member that was cut off does not bump the term while it is away, so that when it
/// comes back it does not depose the leader the others elected meanwhile. Without it, healing
/// a cut costs the cluster another election, and requests that fall into it time out (a
/// run's release that does, three times, fails with exit 69 after its job has succeeded; the
/// lease then runs out by itself).
pub const PRE_VOTE: bool = true;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// One member: its host, its process (`None` once killed) and its directory.
pub struct Member {
    pub host: Host,
    /// etcd's member id, read from its status once the cluster is up.
    pub id: u64,
    child: Mutex<Option<Child>>,
    dir: tempfile::TempDir,
}

impl Member {
    /// `http://ADDRESS:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.host.address())
    }

    /// Its log (etcd's stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }
}

/// What one member says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub member: u64,
    /// Its leader's id; 0 while it knows of none.
    pub leader: u64,
    pub term: u64,
}

/// The members, in the order of the hosts they were started on, and the host that asks them.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    observer: Host,
}

impl EtcdCluster {
    /// Starts one member on each of `hosts` and waits until they agree on a leader. `observer`
    /// is a host (not a member's) from which their status is asked.
    pub fn start(hosts: &[Host], observer: &Host) -> EtcdCluster {
        let binary = require_binary("etcd", &[], "apt-get install etcd-server");
        require_binary("curl", &[], "apt-get install curl");
        let initial = hosts
            .iter()
            .map(|host| format!("{}=http://{}:{PEER_PORT}", host.name(), host.address()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("singleton-{}", super::unique("cluster"));
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            observer: observer.clone(),
        };
        for host in hosts {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
            let client = format!("http://{}:{CLIENT_PORT}", host.address());
            let peer = format!("http://{}:{PEER_PORT}", host.address());
            let mut command = host.command(&binary);
            command
                .args(["--name", host.name()])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .arg(format!("--heartbeat-interval={HEARTBEAT_MS}"))
                .arg(format!("--election-timeout={ELECTION_MS}"))
                // etcd's default since 3.5; see PRE_VOTE.
                .arg(format!("--pre-vote={PRE_VOTE}"))
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            // Pushed at once: should a later member fail to start, drop kills this one.
            cluster.members.push(Member {
                host: host.clone(),
                id: 0,
                child: Mutex::new(Some(spawn_tied(command).expect("start etcd"))),
                dir,
            });
        }
        cluster.wait_until_up(Duration::from_secs(30));
        cluster
    }

    /// `etcd://M1:2379,M2:2379,M3:2379?allow_unsafe_version=true` (Debian's etcd 3.4 predates
    /// etcd's lease fixes; see [`super::etcd_server::EtcdServer::url`]).
    pub fn url(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|member| format!("{}:{CLIENT_PORT}", member.host.address()))
            .collect();
        format!("etcd://{}?allow_unsafe_version=true", members.join(","))
    }

    /// Waits until every member answers and all name the same leader; records their ids.
    fn wait_until_up(&mut self, limit: Duration) {
        let started = Instant::now();
        loop {
            let statuses: Vec<Option<Status>> =
                (0..self.members.len()).map(|i| self.status(i)).collect();
            let leaders: Vec<u64> = statuses.iter().flatten().map(|s| s.leader).collect();
            if leaders.len() == self.members.len()
                && leaders[0] != 0
                && leaders.iter().all(|&leader| leader == leaders[0])
            {
                for (member, status) in self.members.iter_mut().zip(statuses) {
                    member.id = status.expect("answered").member;
                }
                return;
            }
            for member in &self.members {
                if !member.is_running() {
                    panic!(
                        "etcd on {} exited while the cluster started:\n{}",
                        member.host.name(),
                        member.log()
                    );
                }
            }
            if started.elapsed() > limit {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {}:\n{}", m.host.name(), m.log()))
                    .collect();
                panic!(
                    "the etcd cluster had no agreed leader within {limit:?} ({statuses:?}):\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Member `i`'s status, asked from the observer host; `None` if it does not answer within
    /// a quarter of a second (killed, or cut off).
    pub fn status(&self, i: usize) -> Option<Status> {
        let url = format!("{}/v3/maintenance/status", self.members[i].client_url());
        let output = self
            .observer
            .command("curl")
            .args(["-s", "--max-time", "0.25", "-X", "POST", "-d", "{}", &url])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("run curl");
        if !output.status.success() {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        // The gateway writes 64-bit integers as strings.
        let number = |value: &serde_json::Value| {
            value
                .as_u64()
                .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
        };
        Some(Status {
            member: number(&value["header"]["member_id"])?,
            leader: number(&value["leader"]).unwrap_or(0),
            term: number(&value["raftTerm"]).unwrap_or(0),
        })
    }

    /// The member that leads, by the word of the answering members of the highest term (at
    /// least two must agree, a majority of three); `None` while they do not.
    pub fn leader(&self) -> Option<usize> {
        let statuses: Vec<Status> = std::thread::scope(|scope| {
            let asking: Vec<_> = (0..self.members.len())
                .map(|i| scope.spawn(move || self.status(i)))
                .collect();
            asking
                .into_iter()
                .filter_map(|asked| asked.join().expect("ask a member"))
                .collect()
        });
        let term = statuses.iter().map(|s| s.term).max()?;
        let said: Vec<u64> = statuses
            .iter()
            .filter(|s| s.term == term && s.leader != 0)
            .map(|s| s.leader)
            .collect();
        let leader = *said.first()?;
        if said.len() < 2 || said.iter().any(|&other| other != leader) {
            return None;
        }
        self.members.iter().position(|member| member.id == leader)
    }

    /// Waits until a member other than `old` leads, and returns it with when it was first
    /// seen leading (polled every 50 ms or so, each poll a few ms).
    pub fn wait_for_new_leader(&self, old: usize, limit: Duration) -> (usize, SystemTime) {
        let started = Instant::now();
        loop {
            if let Some(leader) = self.leader().filter(|&leader| leader != old) {
                return (leader, SystemTime::now());
            }
            assert!(
                started.elapsed() < limit,
                "no new leader within {limit:?} after losing {}",
                self.members[old].host.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every member answers again and all name one leader, say after a heal.
    pub fn wait_until_whole(&self, limit: Duration) -> usize {
        let started = Instant::now();
        loop {
            let statuses: Vec<Option<Status>> =
                (0..self.members.len()).map(|i| self.status(i)).collect();
            let leaders: Vec<u64> = statuses.iter().flatten().map(|s| s.leader).collect();
            if leaders.len() == self.members.len()
                && leaders[0] != 0
                && leaders.iter().all(|&leader| leader == leaders[0])
                && let Some(i) = self.members.iter().position(|m| m.id == leaders[0])
            {
                return i;
            }
            assert!(
                started.elapsed() < limit,
                "the cluster was not whole again within {limit:?}: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs member `i`'s etcd, as a crash would, and waits until it is gone; returns when
    /// the signal was sent.
    pub fn kill(&self, i: usize) -> SystemTime {
        let mut child = lock(&self.members[i].child)
            .take()
            .expect("a running member");
        let at = SystemTime::now();
        child.kill().expect("kill etcd");
        child.wait().expect("wait for etcd");
        at
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &self.members {
            if let Some(mut child) = lock(&member.child).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
