//! Failovers of a replicated Redis under a held lease (issue 15): a primary, one replica and
//! three Sentinels on simulated hosts of their own, and two clients on two more hosts that find
//! the primary through the Sentinels (`redis+sentinel://`). The primary is killed; the
//! Sentinels promote the replica.
//!
//! Redis replicates asynchronously, so an acquire the primary acknowledged may not have reached
//! the replica when the primary dies. To make that deterministic the primary's host drops what
//! it sends to the replica (a blackhole route) before the acquire. Without `?min_replicas=` the
//! lease vanishes in the failover and a second holder runs beside the first, with the same
//! fencing token: the danger the option exists for, asserted to happen. With `?min_replicas=1`
//! the unreplicated acquire is given back and reported as a store error, and a replicated lease
//! survives the failover (or its holder stops in time): never two holders.
//!
//! Each test prints its timeline (milliseconds from the start of the scenario).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::fenced::Fenced;
use crate::support::history::{self, Interval};
use crate::support::hosts::{Host, Network};
use singleton_process::{Acquire, Error, Holder};

use crate::support::redis_cluster::RedisCluster;
use crate::support::redis_server;
use crate::support::{Done, Test, unique};

const SECOND: Duration = Duration::from_secs(1);

/// The cluster and two client hosts. Fields drop in order: the cluster's processes, then the
/// network with whatever still runs on its hosts.
struct Rig {
    cluster: RedisCluster,
    a: Host,
    b: Host,
    dir: tempfile::TempDir,
    fenced: Fenced,
    timeline: Timeline,
    _network: Network,
}

fn rig() -> Rig {
    let mut network = Network::new();
    let primary = network.host("primary");
    let replica = network.host("replica");
    let s1 = network.host("sentinel1");
    let s2 = network.host("sentinel2");
    let s3 = network.host("sentinel3");
    let a = network.host("client-a");
    let b = network.host("client-b");
    let cluster = RedisCluster::start(&primary, &replica, [&s1, &s2, &s3], &a);
    let dir = tempfile::tempdir().expect("temp dir");
    let fenced = Fenced::new(dir.path());
    Rig {
        cluster,
        a,
        b,
        dir,
        fenced,
        timeline: Timeline::new(),
        _network: network,
    }
}

impl Rig {
    fn log(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.log"))
    }

    /// `singleton run` on `host` with the job below, its interval recorded in `log`.
    fn holder(
        &self,
        host: &Host,
        url: &str,
        name: &str,
        log: &Path,
        args: &[&str],
        seconds: u32,
    ) -> Test {
        host.singleton()
            .store(url)
            .env("LOG", log)
            .env("RES", self.fenced.dir())
            .args(["run", "--json", "--name", name])
            .args(args)
            .args(["--", "sh", "-c", &job(seconds)])
    }
}

/// A job that records its start, writes to the fenced resource every 200 ms for `seconds`, and
/// records its stop, also when it is stopped (SIGTERM) for a lost lease; once, also when the
/// SIGTERM comes as it ends on its own.
fn job(seconds: u32) -> String {
    format!(
        r#"{fenced}
rec() {{ printf '{{"event":"%s","pid":%s,"token":%s,"ns":%s}}\n' "$1" "$$" "$SINGLETON_TOKEN" "$(date +%s%N)" >> "$LOG"; }}
trap 'rec stop; exit 143' TERM
rec start
end=$(( $(date +%s) + {seconds} ))
while [ "$(date +%s)" -lt "$end" ]; do write_fenced; sleep 0.2; done
trap '' TERM
rec stop"#,
        fenced = Fenced::shell_function()
    )
}

/// The key of `name`'s lease under the default prefix.
fn lease_key(name: &str) -> String {
    format!("singleton:lease:{name}")
}

/// Waits (at most `limit`) until the job logging to `log` has started.
fn wait_started(log: &Path, limit: Duration) -> Instant {
    let started = Instant::now();
    loop {
        if std::fs::read_to_string(log).is_ok_and(|text| text.contains("\"start\"")) {
            return Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "{log:?}: the job did not start within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Milliseconds since the scenario began, for instants and for the jobs' nanosecond stamps.
struct Timeline {
    start: Instant,
    start_ns: u128,
    marks: Vec<(String, u128)>,
}

impl Timeline {
    fn new() -> Self {
        Timeline {
            start: Instant::now(),
            start_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos(),
            marks: Vec::new(),
        }
    }

    fn at(&mut self, what: impl Into<String>, at: Instant) {
        let ms = at.saturating_duration_since(self.start).as_millis();
        self.marks.push((what.into(), ms));
    }

    fn at_ns(&mut self, what: impl Into<String>, ns: u128) {
        self.marks
            .push((what.into(), ns.saturating_sub(self.start_ns) / 1_000_000));
    }

    fn print(&mut self, title: &str) {
        self.marks.sort_by_key(|(_, ms)| *ms);
        eprintln!("--- {title}");
        for (what, ms) in &self.marks {
            eprintln!("  {ms:>6} ms  {what}");
        }
    }
}

fn events(done: &Done, kind: &str) -> usize {
    done.events().iter().filter(|e| e["event"] == kind).count()
}

/// Without `?min_replicas=`: an acquire the replica never got vanishes when the primary dies,
/// and a second client acquires the name while the first still runs its job, with the same
/// token (the new primary's counter never saw the first one's). The test asserts that this
/// happens: it documents the danger.
#[test]
fn without_min_replicas_an_unreplicated_acquire_vanishes_in_a_failover_and_two_hold() {
    let mut rig = rig();
    let name = unique("failover");
    let url = rig.cluster.url("");
    let (log_a, log_b) = (rig.log("a"), rig.log("b"));

    rig.cluster.stall_replication();
    rig.timeline
        .at("replication to the replica stalled", Instant::now());
    // A long lease: its holder renews only after 10 s, long after the failover, so nothing
    // tells it meanwhile that its lease is gone.
    let a = rig
        .holder(&rig.a, &url, &name, &log_a, &["--ttl", "30s"], 20)
        .spawn();
    let a_started = wait_started(&log_a, 10 * SECOND);
    rig.timeline.at("A acquired (job started)", a_started);
    assert!(
        !rig.cluster.replica_has(&lease_key(&name)),
        "the replica must lag behind the acquire"
    );

    rig.cluster.kill_primary();
    rig.timeline.at("primary killed", Instant::now());
    let promoted = rig.cluster.wait_for_promotion(30 * SECOND);
    rig.timeline
        .at("replica promoted, Sentinels name it", promoted);
    rig.cluster.resume_replication();
    assert!(
        !rig.cluster.replica_has(&lease_key(&name)),
        "the new primary has A's lease after all"
    );

    let b = rig
        .holder(&rig.b, &url, &name, &log_b, &["--ttl", "30s"], 2)
        .spawn();
    let b_started = wait_started(&log_b, 20 * SECOND);
    rig.timeline
        .at("B acquired on the new primary (job started)", b_started);
    let b = b.finish(30 * SECOND);
    assert_eq!(b.code, 0, "B: {}", b.stderr);
    let a = a.finish(40 * SECOND);
    rig.timeline
        .at(format!("A exited {}", a.code), Instant::now());
    assert_eq!(
        a.code, 76,
        "A learns at its renewal that its lease is gone: {}",
        a.stderr
    );

    let intervals = history::read(&[log_a.clone(), log_b.clone()]);
    let find = |log: &Path| -> Interval {
        history::read(&[log.to_owned()])
            .pop()
            .unwrap_or_else(|| panic!("{log:?}: no interval"))
    };
    let (ia, ib) = (find(&log_a), find(&log_b));
    rig.timeline
        .at_ns(format!("A's job stopped (token {})", ia.token), ia.end_ns);
    rig.timeline
        .at_ns(format!("B's job stopped (token {})", ib.token), ib.end_ns);
    let overlap_ms = ia
        .end_ns
        .min(ib.end_ns)
        .saturating_sub(ib.start_ns.max(ia.start_ns))
        / 1_000_000;
    let same_token_writes = rig
        .fenced
        .writes()
        .iter()
        .filter(|w| w.accepted && w.token == ia.token)
        .count();
    rig.timeline.print(&format!(
        "without ?min_replicas: two holders for {overlap_ms} ms, both with token {} ({same_token_writes} writes with it accepted by the fenced resource)",
        ia.token
    ));
    assert_eq!(intervals.len(), 2);
    assert!(
        ib.start_ns < ia.end_ns,
        "the danger did not show: B started after A stopped: {ia:?} {ib:?}"
    );
    assert_eq!(
        ia.token, ib.token,
        "the new primary's counter never saw A's token, so B gets it again"
    );
}

/// With `?min_replicas=1`: the same unreplicated acquire is given back and reported as a store
/// error (exit 69; the job never starts), so the failover loses nothing that anyone holds; the
/// next client acquires on the new primary once it has a replica again.
#[test]
fn with_min_replicas_an_unreplicated_acquire_is_given_back_and_never_held() {
    let mut rig = rig();
    let name = unique("failover");
    let url = rig.cluster.url("min_replicas=1");
    let (log_a, log_b) = (rig.log("a"), rig.log("b"));

    rig.cluster.stall_replication();
    rig.timeline
        .at("replication to the replica stalled", Instant::now());
    let a = rig
        .holder(&rig.a, &url, &name, &log_a, &["--ttl", "15s"], 20)
        .output();
    rig.timeline
        .at(format!("A exited {}", a.code), Instant::now());
    assert_eq!(
        a.code, 69,
        "A must not hold an unreplicated lease: {}",
        a.stderr
    );
    eprintln!("A: {}", a.stderr.trim());
    assert!(
        a.stderr.contains("only 0 of the 1 replicas") && a.stderr.contains("given back"),
        "{}",
        a.stderr
    );
    assert!(!log_a.exists(), "A's job ran");
    assert_eq!(
        rig.cluster.on_primary(&["EXISTS", &lease_key(&name)]),
        "0",
        "A's lease was not given back on the primary"
    );

    rig.cluster.kill_primary();
    rig.timeline.at("primary killed", Instant::now());
    let promoted = rig.cluster.wait_for_promotion(30 * SECOND);
    rig.timeline
        .at("replica promoted, Sentinels name it", promoted);
    rig.cluster.resume_replication();
    rig.cluster.restart_old_primary_as_replica();
    rig.timeline
        .at("old primary back, as a replica", Instant::now());

    let b = rig
        .holder(
            &rig.b,
            &url,
            &name,
            &log_b,
            &["--ttl", "15s", "--wait", "--timeout", "30s"],
            2,
        )
        .spawn();
    let b_started = wait_started(&log_b, 30 * SECOND);
    rig.timeline
        .at("B acquired on the new primary (job started)", b_started);
    let b = b.finish(30 * SECOND);
    rig.timeline
        .at(format!("B exited {}", b.code), Instant::now());
    assert_eq!(b.code, 0, "B: {}", b.stderr);

    let intervals = history::check(history::read(&[log_a, log_b]));
    rig.timeline
        .print("with ?min_replicas=1, an unreplicated acquire");
    assert_eq!(intervals.len(), 1, "B alone held the lease: {intervals:?}");
    rig.fenced.check();
}

/// With `?min_replicas=1`: a lease the replica has survives the failover. Its holder's
/// renewals fail while there is no primary with a replica, then succeed on the new primary
/// once the old one is back as its replica; should that take too long, the holder stops its
/// job in time. A waiter on another host gets the name only after the first holder is done,
/// with a higher token: no failover makes two holders.
#[test]
fn with_min_replicas_a_replicated_lease_survives_a_failover_and_never_two_hold() {
    let mut rig = rig();
    let name = unique("failover");
    let url = rig.cluster.url("min_replicas=1");
    let (log_a, log_b) = (rig.log("a"), rig.log("b"));

    let a = rig
        .holder(&rig.a, &url, &name, &log_a, &["--ttl", "15s"], 14)
        .spawn();
    let a_started = wait_started(&log_a, 10 * SECOND);
    rig.timeline.at("A acquired (job started)", a_started);
    assert!(
        rig.cluster.replica_has(&lease_key(&name)),
        "an acquire with ?min_replicas=1 is on the replica when the holder starts"
    );

    std::thread::sleep(SECOND);
    rig.cluster.kill_primary();
    rig.timeline.at("primary killed", Instant::now());
    let promoted = rig.cluster.wait_for_promotion(30 * SECOND);
    rig.timeline
        .at("replica promoted, Sentinels name it", promoted);
    assert!(
        rig.cluster.replica_has(&lease_key(&name)),
        "the new primary lost A's lease"
    );
    let b = rig
        .holder(
            &rig.b,
            &url,
            &name,
            &log_b,
            &["--ttl", "15s", "--wait", "--timeout", "45s"],
            2,
        )
        .spawn();
    rig.timeline.at("B starts waiting", Instant::now());
    rig.cluster.restart_old_primary_as_replica();
    rig.timeline
        .at("old primary back, as a replica", Instant::now());

    let a = a.finish(40 * SECOND);
    rig.timeline
        .at(format!("A exited {}", a.code), Instant::now());
    for line in a.stderr.lines().filter(|line| line.contains("\"error\"")) {
        eprintln!("A: {line}");
    }
    let fate = match a.code {
        0 => "A kept its lease through the failover",
        76 => "A lost its lease and stopped in time",
        _ => panic!("A: {}", a.stderr),
    };
    let b_started = wait_started(&log_b, 30 * SECOND);
    rig.timeline.at("B acquired (job started)", b_started);
    let b = b.finish(30 * SECOND);
    rig.timeline
        .at(format!("B exited {}", b.code), Instant::now());
    assert_eq!(b.code, 0, "B: {}", b.stderr);

    let intervals = history::check(history::read(&[log_a, log_b]));
    for interval in &intervals {
        rig.timeline.at_ns(
            format!("a job with token {} stopped", interval.token),
            interval.end_ns,
        );
    }
    rig.timeline.print(&format!(
        "with ?min_replicas=1, a replicated lease: {fate}; A's renewal errors: {}, renewals: {}",
        events(&a, "error"),
        events(&a, "renewed")
    ));
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    rig.fenced.check();
}

/// A failover while the old primary stays up (`SENTINEL FAILOVER`): the replica is promoted
/// at once, but the Sentinels turn the old primary into its replica only some seconds later, and
/// until then it still takes writes. The holder's renewals there reach no replica, so they do
/// not count; the holder asks the Sentinels again, follows them to the new primary, and either
/// renews there once the old primary has become its replica or stops its job in time. A waiter
/// gets the name only after that: never two holders.
#[test]
fn a_holder_follows_a_manual_failover_and_never_two_hold() {
    let mut rig = rig();
    let name = unique("failover");
    let url = rig.cluster.url("min_replicas=1");
    let (log_a, log_b) = (rig.log("a"), rig.log("b"));

    let a = rig
        .holder(&rig.a, &url, &name, &log_a, &["--ttl", "15s"], 14)
        .spawn();
    let a_started = wait_started(&log_a, 10 * SECOND);
    rig.timeline.at("A acquired (job started)", a_started);
    std::thread::sleep(SECOND);
    rig.cluster.manual_failover();
    rig.timeline.at("SENTINEL FAILOVER", Instant::now());
    let promoted = rig.cluster.wait_for_promotion(30 * SECOND);
    rig.timeline
        .at("replica promoted, Sentinels name it", promoted);
    let b = rig
        .holder(
            &rig.b,
            &url,
            &name,
            &log_b,
            &["--ttl", "15s", "--wait", "--timeout", "60s"],
            1,
        )
        .spawn();
    rig.timeline.at("B starts waiting", Instant::now());
    let demoted = Instant::now();
    while rig.cluster.on_primary(&["ROLE"]).lines().next() != Some("slave") {
        assert!(
            demoted.elapsed() < 30 * SECOND,
            "the old primary was never turned into a replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rig.timeline.at(
        "old primary turned into a replica by the Sentinels",
        Instant::now(),
    );
    let a = a.finish(40 * SECOND);
    rig.timeline
        .at(format!("A exited {}", a.code), Instant::now());
    for line in a.stderr.lines().filter(|line| line.contains("\"error\"")) {
        eprintln!("A: {line}");
    }
    let fate = match a.code {
        0 => "A kept its lease through the failover",
        76 => "A lost its lease and stopped in time",
        _ => panic!("A: {}", a.stderr),
    };
    let b_started = wait_started(&log_b, 40 * SECOND);
    rig.timeline.at("B acquired (job started)", b_started);
    let b = b.finish(30 * SECOND);
    assert_eq!(b.code, 0, "B: {}", b.stderr);
    let intervals = history::check(history::read(&[log_a, log_b]));
    for interval in &intervals {
        rig.timeline.at_ns(
            format!("a job with token {} stopped", interval.token),
            interval.end_ns,
        );
    }
    rig.timeline.print(&format!(
        "a manual failover under a held lease: {fate}; A renewed {} times, {} renewal errors",
        events(&a, "renewed"),
        events(&a, "error")
    ));
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    rig.fenced.check();
}

#[test]
fn min_replicas_must_be_a_number_of_replicas() {
    for value in ["two", "-1", "1.5", "101", ""] {
        let done = Test::new()
            .store(&format!(
                "redis://:pw-secret@127.0.0.1:1?min_replicas={value}"
            ))
            .args(["status", "x"])
            .output();
        done.assert_one_line_failure(64, "pw-secret", &["?min_replicas=", "e.g. 1"]);
    }
}

#[test]
fn sentinel_urls_are_checked_and_their_passwords_masked() {
    let done = Test::new()
        .store("redis+sentinel://u:pw-secret@127.0.0.1:1")
        .args(["status", "x"])
        .output();
    done.assert_one_line_failure(64, "pw-secret", &["u:***@", "name the primary"]);
    let done = Test::new()
        .store("redis+sentinel://u:pw-secret@127.0.0.1:1/mymaster?sentinel_password=s-secret&connect_timeout=2s")
        .args(["status", "x"])
        .output();
    let line = done.assert_one_line_failure(
        69,
        "pw-secret",
        &["no Sentinel named a primary", "127.0.0.1:1"],
    );
    assert!(!line.contains("s-secret"), "{line}");
}

/// Without a replica, `?min_replicas=1` refuses every acquire and gives its lease back, and a
/// renewal that no replica confirms fails; with a replica in sync, the whole conformance suite
/// passes through the `WAIT` path (holds included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_refuses_leases_that_no_replica_confirms() {
    let alone = redis_server::own();
    let url = format!("{}?min_replicas=1", alone.url);
    let strict = singleton_process::connect(&url).await.expect("connect");
    let plain = singleton_process::connect(&alone.url)
        .await
        .expect("connect");
    let name = unique("replicas");
    let ttl = Some(Duration::from_secs(10));
    let started = Instant::now();
    let refused = strict
        .acquire(&name, &Holder::current("strict"), ttl)
        .await
        .expect_err("an acquire no replica confirmed");
    eprintln!("{refused} (after {:?})", started.elapsed());
    assert!(matches!(refused, Error::Store { .. }), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains("only 0 of the 1 replicas") && text.contains("given back"),
        "{text}"
    );
    assert!(
        plain.inspect(&name).await.expect("inspect").is_none(),
        "the refused lease was not given back"
    );
    // The counter kept the token it handed out: the next lease's is higher.
    let Acquire::Acquired { lease, .. } = plain
        .acquire(&name, &Holder::current("plain"), ttl)
        .await
        .expect("acquire")
    else {
        panic!("the name is free");
    };
    assert_eq!(lease.token.0, 2, "{lease:?}");
    let failed = strict
        .renew(&lease, Duration::from_secs(10))
        .await
        .expect_err("a renewal no replica confirmed");
    assert!(
        matches!(&failed, Error::Store { .. }) && failed.to_string().contains("does not count"),
        "{failed:?}"
    );

    let replica =
        redis_server::own_with(&["--replicaof", "127.0.0.1", &alone.server.port.to_string()]);
    let replicated = singleton_process::connect(&url).await.expect("connect");
    // The replica is in sync once a write is confirmed.
    let mut tries = 0;
    while replicated
        .acquire(&unique("sync"), &Holder::current("x"), ttl)
        .await
        .is_err()
    {
        tries += 1;
        assert!(tries < 100, "the replica never confirmed a write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    singleton_process::conformance::Suite::new(replicated)
        .run_all()
        .await;
    drop(replica);
}
