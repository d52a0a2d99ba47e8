//! A three-member etcd cluster that loses its leader (issue 15): killed while a lease is held,
//! killed while contenders race, cut off the network while a lease is held and contenders
//! wait. Every member and every client runs on a simulated host of its own
//! ([`crate::support::hosts`]); the clients name all three members (`etcd://m1,m2,m3`), so the
//! store's client must carry on through whichever members still answer. The bar is the fault
//! tests' one, judged by the history checker and the fenced resource: no two holders, tokens
//! only grow, a holder keeps its lease (its renewals reach the new leader) or is stopped before
//! the store's expiry, and nothing is stuck once the cluster has a leader again.
//!
//! Each scenario prints its timeline (`cargo test … -- --nocapture`): when the leader was lost,
//! the holder's renewals around it, when the next leader was seen, and when the next holder
//! acquired.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::etcd_cluster::EtcdCluster;
use crate::support::fenced::Fenced;
use crate::support::hosts::{Host, Network};
use crate::support::{Done, Running, alive, history, unique, wait_until};

const SECOND: Duration = Duration::from_secs(1);

/// The lease of the held-lease scenarios: renewed every second, so a failover of about a
/// second (see [`crate::support::etcd_cluster::ELECTION_MS`]) falls between two renewals or
/// costs one retry.
const TTL: &str = "3s";

/// Three members m1, m2, m3, client hosts a and b, and an observer host o that asks the
/// members who leads.
struct World {
    // First, so that the members are killed before their hosts go.
    cluster: EtcdCluster,
    a: Host,
    b: Host,
    url: String,
    dir: tempfile::TempDir,
    // Last: it kills whatever still runs on the hosts and removes them.
    _network: Network,
}

impl World {
    fn new() -> World {
        let mut network = Network::new();
        let members = ["m1", "m2", "m3"].map(|name| network.host(name));
        let (a, b, o) = (network.host("a"), network.host("b"), network.host("o"));
        let cluster = EtcdCluster::start(&members, &o);
        World {
            url: cluster.url(),
            cluster,
            a,
            b,
            dir: tempfile::tempdir().expect("temp dir"),
            _network: network,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `singleton run --name NAME --ttl TTL --json ARGS -- sh -c JOB` on `host`, recording its
    /// interval in `log` and writing to `fenced`.
    fn run(&self, host: &Host, name: &str, ttl: &str, args: &[&str], job: &Job) -> Running {
        self.command(host, name, ttl, args, job).spawn()
    }

    fn command(
        &self,
        host: &Host,
        name: &str,
        ttl: &str,
        args: &[&str],
        job: &Job,
    ) -> crate::support::Test {
        host.singleton()
            .store(&self.url)
            .env("LOG", &job.log)
            .env("RES", &job.fenced)
            .args(["run", "--name", name, "--ttl", ttl, "--json"])
            .args(args)
            .args(["--", "sh", "-c", &job.script])
    }
}

/// A job for the history checker and the fenced resource: it records its pid, then its start,
/// writes `writes` times 100 ms apart, and records its stop, also when it is told to stop
/// (SIGTERM, as the supervisor does when the lease is lost).
struct Job {
    script: String,
    log: PathBuf,
    pid_file: PathBuf,
    fenced: PathBuf,
}

impl Job {
    fn new(world: &World, fenced: &Fenced, tag: &str, writes: u32) -> Job {
        let (log, pid_file) = (
            world.path(&format!("{tag}.log")),
            world.path(&format!("{tag}.pid")),
        );
        let script = format!(
            r#"{fenced}
record() {{ printf '{{"event":"%s","pid":%s,"token":%s,"ns":%s}}\n' "$1" "$$" "$SINGLETON_TOKEN" "$(date +%s%N)" >> "$LOG"; }}
trap 'record stop; exit 143' TERM
echo $$ > {pid}.new && mv {pid}.new {pid}
record start
i=0; while [ $i -lt {writes} ]; do write_fenced; i=$((i+1)); sleep 0.1; done
record stop"#,
            fenced = Fenced::shell_function(),
            pid = pid_file.display(),
        );
        Job {
            script,
            log,
            pid_file,
            fenced: fenced.dir().to_owned(),
        }
    }

    /// Waits until the job runs and returns its pid.
    fn pid(&self, limit: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&self.pid_file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                started.elapsed() < limit,
                "the job did not start within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What happened when, relative to the first mark, printed in order when dropped (also when
/// the test fails), as the fault tests print theirs.
struct Timeline {
    fault: String,
    marks: Vec<(String, SystemTime)>,
}

impl Timeline {
    fn new(fault: impl Into<String>) -> Self {
        Timeline {
            fault: fault.into(),
            marks: Vec::new(),
        }
    }

    fn mark(&mut self, what: impl Into<String>, at: SystemTime) {
        self.marks.push((what.into(), at));
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        let Some((_, zero)) = self.marks.first().cloned() else {
            return;
        };
        self.marks.sort_by_key(|(_, at)| *at);
        let marks: Vec<String> = self
            .marks
            .iter()
            .map(|(what, at)| {
                let ms = match at.duration_since(zero) {
                    Ok(after) => after.as_secs_f64() * 1e3,
                    Err(before) => -before.duration().as_secs_f64() * 1e3,
                };
                format!("{what} t={ms:+.0} ms")
            })
            .collect();
        eprintln!("timeline: {}: {}", self.fault, marks.join(", "));
    }
}

fn time_of(event: &serde_json::Value) -> SystemTime {
    event["time"]
        .as_str()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .unwrap_or_else(|| panic!("no time: {event}"))
}

fn lease_time(lease: &serde_json::Value, field: &str) -> SystemTime {
    lease[field]
        .as_str()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .unwrap_or_else(|| panic!("no {field}: {lease}"))
}

fn events_of<'e>(done: &'e [serde_json::Value], kind: &str) -> Vec<&'e serde_json::Value> {
    done.iter().filter(|e| e["event"] == kind).collect()
}

fn locked_lease(done: &Done) -> serde_json::Value {
    done.events()
        .into_iter()
        .find(|e| e["event"] == "locked")
        .unwrap_or_else(|| panic!("no `locked` event: {}", done.stderr))["lease"]
        .clone()
}

fn at_ns(ns: u128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

/// Watches `job` from another thread; the returned handle says when it was seen dead (polled
/// every 5 ms), or `None` if it still ran after `limit`.
fn watch_death(job: i32, limit: Duration) -> std::thread::JoinHandle<Option<SystemTime>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < limit {
            if !alive(job) {
                return Some(SystemTime::now());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    })
}

/// The holder's side of a failover, from its `--json` events: it either kept its lease, with
/// renewals answered after the leader was lost (by the next leader), or was stopped, and then
/// its job was dead before the lease it last renewed could expire at the store. Marks the
/// timeline and returns the holder's token.
fn judge_holder(
    holder: &Done,
    lost_leader_at: SystemTime,
    job_died: Option<SystemTime>,
    timeline: &mut Timeline,
) -> u64 {
    let events = holder.events();
    let locked = locked_lease(holder);
    let token = locked["token"].as_u64().expect("token");
    let renewed = events_of(&events, "renewed");
    let before: Vec<_> = renewed
        .iter()
        .filter(|e| time_of(e) <= lost_leader_at)
        .collect();
    let after: Vec<_> = renewed
        .iter()
        .filter(|e| time_of(e) > lost_leader_at)
        .collect();
    if let Some(last) = before.last() {
        timeline.mark("holder's last renewal before", time_of(last));
    }
    if let Some(first) = after.first() {
        timeline.mark("holder's first renewal after", time_of(first));
    }
    let errors = events_of(&events, "error").len();
    eprintln!(
        "holder: exit {}, {} renewals before the fault, {} after, {errors} errors",
        holder.code,
        before.len(),
        after.len()
    );
    match holder.code {
        0 => {
            assert!(
                !after.is_empty(),
                "the holder kept its lease through the failover without renewing it: {}",
                holder.stderr
            );
        }
        76 => {
            let lost = events_of(&events, "lost");
            let lost = lost.first().expect("a `lost` event");
            timeline.mark("holder lost its lease", time_of(lost));
            // The store's expiry is at the earliest the last renewal's (or the acquisition's)
            // from the holder's side: sent + TTL, which the events report.
            let expires = renewed
                .iter()
                .rfind(|e| time_of(e) < time_of(lost))
                .map(|e| lease_time(&e["lease"], "expires"))
                .unwrap_or_else(|| lease_time(&locked, "expires"));
            timeline.mark("lease expired", expires);
            let died = job_died.expect("the job died");
            timeline.mark("job killed", died);
            assert!(
                died < expires,
                "the job died at {died:?}, after the lease expired at {expires:?}"
            );
        }
        code => panic!("the holder exited {code}: {}", holder.stderr),
    }
    token
}

/// Scenario 1: the leader is SIGKILLed while a lease is held on host a and a waiter on host b
/// waits.
#[test]
fn etcd_leader_killed_while_held() {
    let world = World::new();
    let name = unique("leader-killed");
    let fenced = Fenced::new(world.dir.path());
    let (job_a, job_b) = (
        Job::new(&world, &fenced, "a", 50),
        Job::new(&world, &fenced, "b", 5),
    );
    let holder = world.run(&world.a, &name, TTL, &[], &job_a);
    let job = job_a.pid(15 * SECOND);
    let waiter = world.run(
        &world.b,
        &name,
        TTL,
        &["--wait", "--timeout", "40s"],
        &job_b,
    );
    // The holder renews at least once and the waiter waits before the leader goes.
    std::thread::sleep(Duration::from_millis(1500));
    let leader = world.cluster.leader().expect("the cluster has a leader");
    let mut timeline = Timeline::new(format!(
        "etcd leader ({}) killed while held, lease {TTL}",
        world.cluster.members[leader].host.name()
    ));
    let death = watch_death(job, 30 * SECOND);
    let killed = world.cluster.kill(leader);
    timeline.mark("leader killed", killed);
    let (next, elected) = world.cluster.wait_for_new_leader(leader, 10 * SECOND);
    timeline.mark(
        format!(
            "new leader ({}) seen",
            world.cluster.members[next].host.name()
        ),
        elected,
    );

    let holder = holder.finish(30 * SECOND);
    let job_died = death.join().expect("watch the job");
    let old_token = judge_holder(&holder, killed, job_died, &mut timeline);
    let waiter = waiter.finish(40 * SECOND);
    assert_eq!(waiter.code, 0, "the waiter: {}", waiter.stderr);
    let next_lease = locked_lease(&waiter);
    timeline.mark("next holder", lease_time(&next_lease, "created"));
    let new_token = next_lease["token"].as_u64().expect("token");
    assert!(new_token > old_token, "token {new_token} after {old_token}");

    plain_runs(
        &world,
        &world.b,
        &format!("{name}-plain"),
        "with the old leader dead",
    );

    let intervals = history::check(history::read(&[job_a.log.clone(), job_b.log.clone()]));
    assert_eq!(intervals.len(), 2, "A and B each held once: {intervals:?}");
    timeline.mark("holder's job ended", at_ns(intervals[0].end_ns));
    fenced.check();
    eprintln!("overlaps: 0, tokens {old_token} then {new_token}");
}

/// Scenario 2: the leader is SIGKILLed while four contenders on two hosts race with `run
/// --wait` in a loop.
#[test]
fn etcd_leader_killed_while_contenders_race() {
    const RACE_TTL: &str = "2s";
    let world = World::new();
    let name = unique("leader-race");
    let fenced = Fenced::new(world.dir.path());
    let jobs: Vec<Job> = (0..4)
        .map(|i| Job::new(&world, &fenced, &format!("race-{i}"), 1))
        .collect();
    let logs: Vec<PathBuf> = jobs.iter().map(|job| job.log.clone()).collect();
    let stop = AtomicBool::new(false);
    let mut timeline = Timeline::new(format!(
        "etcd leader killed while 4 contenders race, lease {RACE_TTL}"
    ));
    let codes: Vec<Vec<(i32, String)>> = std::thread::scope(|scope| {
        let contenders: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let host = if i % 2 == 0 { &world.a } else { &world.b };
                let (world, name, stop) = (&world, &name, &stop);
                scope.spawn(move || {
                    let mut codes = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let done = world
                            .command(host, name, RACE_TTL, &["--wait", "--timeout", "30s"], job)
                            .output();
                        codes.push((done.code, done.stderr));
                    }
                    codes
                })
            })
            .collect();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(30 * SECOND, "6 acquisitions before the fault", || {
                starts(&logs).len() >= 6
            });
            let leader = world.cluster.leader().expect("the cluster has a leader");
            let killed = world.cluster.kill(leader);
            timeline.mark(
                format!(
                    "leader ({}) killed",
                    world.cluster.members[leader].host.name()
                ),
                killed,
            );
            let (next, elected) = world.cluster.wait_for_new_leader(leader, 10 * SECOND);
            timeline.mark(
                format!(
                    "new leader ({}) seen",
                    world.cluster.members[next].host.name()
                ),
                elected,
            );
            wait_until(30 * SECOND, "8 acquisitions after the fault", || {
                starts(&logs)
                    .iter()
                    .filter(|&&ns| at_ns(ns) > killed)
                    .count()
                    >= 8
            });
            if let Some(&first) = starts(&logs).iter().find(|&&ns| at_ns(ns) > killed) {
                timeline.mark("next holder", at_ns(first));
            }
            let before = starts(&logs)
                .iter()
                .filter(|&&ns| at_ns(ns) <= killed)
                .count();
            eprintln!("acquisitions before the kill: {before}");
        }));
        stop.store(true, Ordering::SeqCst);
        let codes = contenders
            .into_iter()
            .map(|contender| contender.join().expect("a contender"))
            .collect();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        codes
    });
    let intervals = history::check(history::read(&logs));
    fenced.check();
    let mut tally = std::collections::BTreeMap::new();
    for (code, _) in codes.iter().flatten() {
        *tally.entry(*code).or_insert(0) += 1;
    }
    eprintln!(
        "runs by exit code: {tally:?}; {} intervals, overlaps: 0, tokens strictly increasing",
        intervals.len()
    );
    for (code, stderr) in codes.iter().flatten() {
        // A waiter waits through the failover; a holder may lose its lease to it (76), which
        // is safe. A store error (69) would be a waiter that gave up on a cluster that answers.
        assert!(
            matches!(code, 0 | 76),
            "a contender exited {code}: {stderr}"
        );
    }
}

/// `etcd://m1,m2,m3` finds the members that answer: five runs in a row on `host` that do not
/// wait each acquire and release `name`, within a lease each (a member that does not answer
/// must cost neither a failure nor a connect timeout).
fn plain_runs(world: &World, host: &Host, name: &str, when: &str) {
    let ttl = humantime::parse_duration(TTL).expect("ttl");
    let mut took = Vec::new();
    for i in 0..5 {
        let done = host
            .singleton()
            .store(&world.url)
            .args(["run", "--name", name, "--ttl", TTL, "--", "true"])
            .output();
        assert_eq!(
            done.code,
            0,
            "run {i} on {} {when}: {}",
            host.name(),
            done.stderr
        );
        assert!(
            done.elapsed < ttl,
            "run {i} on {} {when} took {:?}: {}",
            host.name(),
            done.elapsed,
            done.stderr
        );
        took.push(done.elapsed.as_millis());
    }
    eprintln!("runs without --wait on {} {when}: {took:?} ms", host.name());
}

/// The start times of every job in `logs`.
fn starts(logs: &[PathBuf]) -> Vec<u128> {
    let mut found = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text
            .lines()
            .filter(|line| line.contains(r#""event":"start""#))
        {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(ns) = value["ns"].as_u64()
            {
                found.push(u128::from(ns));
            }
        }
    }
    found.sort();
    found
}

/// Scenario 3: the leader's host is cut off (packets vanish, no reset) while a lease is held on
/// host a and a waiter on each of a and b waits; the other two members elect a leader. Once
/// the cut is healed, a fresh run acquires at once.
#[test]
fn etcd_leader_partitioned_while_held() {
    let world = World::new();
    let name = unique("leader-cut");
    let fenced = Fenced::new(world.dir.path());
    let job_a = Job::new(&world, &fenced, "a", 50);
    let waiting: Vec<Job> = (0..2)
        .map(|i| Job::new(&world, &fenced, &format!("w{i}"), 10))
        .collect();
    let holder = world.run(&world.a, &name, TTL, &[], &job_a);
    let job = job_a.pid(15 * SECOND);
    let waiters: Vec<Running> = waiting
        .iter()
        .zip([&world.a, &world.b])
        .map(|(job, host)| world.run(host, &name, TTL, &["--wait", "--timeout", "40s"], job))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let leader = world.cluster.leader().expect("the cluster has a leader");
    let cut_host = world.cluster.members[leader].host.clone();
    let mut timeline = Timeline::new(format!(
        "etcd leader ({}) cut off while held, lease {TTL}",
        cut_host.name()
    ));
    let death = watch_death(job, 30 * SECOND);
    let cut = SystemTime::now();
    cut_host.cut();
    timeline.mark("leader cut off", cut);
    // Heal also when the test fails before it does, so that nothing waits on a dead link.
    struct Heal<'h>(&'h Host, bool);
    impl Drop for Heal<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.heal();
            }
        }
    }
    let mut heal = Heal(&cut_host, false);
    let (next, elected) = world.cluster.wait_for_new_leader(leader, 10 * SECOND);
    timeline.mark(
        format!(
            "new leader ({}) seen",
            world.cluster.members[next].host.name()
        ),
        elected,
    );

    plain_runs(
        &world,
        &world.b,
        &format!("{name}-plain"),
        "with the old leader cut off",
    );

    let holder = holder.finish(30 * SECOND);
    let job_died = death.join().expect("watch the job");
    let old_token = judge_holder(&holder, cut, job_died, &mut timeline);
    // The waiters take their turns while the old leader is still cut off; heal during them.
    wait_until(20 * SECOND, "a waiter holds", || {
        !starts(&[waiting[0].log.clone(), waiting[1].log.clone()]).is_empty()
    });
    let healed = SystemTime::now();
    cut_host.heal();
    heal.1 = true;
    timeline.mark("healed", healed);
    let mut tokens = vec![old_token];
    for (waiter, host) in waiters.into_iter().zip(["a", "b"]) {
        let waiter = waiter.finish(40 * SECOND);
        assert_eq!(waiter.code, 0, "the waiter on {host}: {}", waiter.stderr);
        let lease = locked_lease(&waiter);
        timeline.mark(
            format!("next holder (waiter on {host})"),
            lease_time(&lease, "created"),
        );
        tokens.push(lease["token"].as_u64().expect("token"));
    }
    let whole = world.cluster.wait_until_whole(20 * SECOND);
    timeline.mark(
        format!(
            "cluster whole, leader {}",
            world.cluster.members[whole].host.name()
        ),
        SystemTime::now(),
    );

    // Nothing stuck: a fresh run on either host acquires at once, well within a lease.
    for host in [&world.a, &world.b] {
        plain_runs(&world, host, &name, "after healing");
    }
    let mut logs = vec![job_a.log.clone()];
    logs.extend(waiting.iter().map(|job| job.log.clone()));
    let intervals = history::check(history::read(&logs));
    assert_eq!(intervals.len(), 3, "the holder and both waiters held once");
    timeline.mark("holder's job ended", at_ns(intervals[0].end_ns));
    fenced.check();
    let mut sorted = tokens.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        tokens.len(),
        "every holder has a token of its own: {tokens:?}"
    );
    eprintln!("overlaps: 0, tokens {tokens:?}");
}
