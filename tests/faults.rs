//! Fault injection through the real binary: a holder whose whole machine stalls past its lease,
//! and contenders whose supervisors are killed at random. Each scenario takes a store URL so that
//! it runs unchanged on every store; the history checker and the fenced resource judge the
//! outcome.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::support::fenced::Fenced;
use crate::support::servers::{Server, processes};
use crate::support::{SqliteStore, Test, history, unique, wait_until};

const SECOND: Duration = Duration::from_secs(1);

/// The lease of the stalled-holder scenario. B's acquisition must leave it time to work even on
/// a loaded machine, where one SQLite commit can take most of a second; with a shorter lease B
/// may (safely, but uselessly for the test) lose its own lease at once.
const STALL_TTL: &str = "3s";

/// The supervisor's watchdog: its child that runs our binary's code in a group of its own.
fn watchdog_of(supervisor: i32, job_group: i32) -> i32 {
    processes()
        .into_iter()
        .find(|(pid, comm, ppid, pgrp)| {
            *ppid == supervisor
                && *pgrp == *pid
                && *pgrp != job_group
                && comm.starts_with("singleton")
        })
        .map(|(pid, ..)| pid)
        .expect("the supervisor's watchdog")
}

fn read_pid(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// A job that records its pid, then writes to the fenced resource every 100 ms, `writes` times.
fn writing_job(pid_file: &Path, writes: u32) -> String {
    format!(
        "{}; echo $$ > {}; i=0; while [ $i -lt {writes} ]; do write_fenced; i=$((i+1)); sleep 0.1; done",
        Fenced::shell_function(),
        pid_file.display()
    )
}

/// The whole of holder A's machine stalls (supervisor, watchdog and job stopped) for longer than
/// its lease; B acquires meanwhile and writes with a higher token. When A's job runs again before
/// its supervisor can stop it, the fenced resource rejects its stale writes; A's supervisor then
/// reports the lease lost.
pub fn stalled_holder_is_fenced(store: &str, ttl: &str, dir: &Path) {
    let name = unique("stalled");
    let fenced = Fenced::new(dir);
    let (a_pid, b_pid) = (dir.join("a.pid"), dir.join("b.pid"));
    let a = Test::new()
        .store(store)
        .env("RES", fenced.dir())
        .args([
            "run", "--name", &name, "--ttl", ttl, "--json", "--", "sh", "-c",
        ])
        .args([writing_job(&a_pid, 100)])
        .spawn();
    wait_until(10 * SECOND, "A's job runs", || {
        a_pid.exists() && !fenced.writes().is_empty()
    });
    let job = read_pid(&a_pid);
    let watchdog = watchdog_of(a.pid(), job);

    // The machine stalls: nothing of A runs.
    let mut timeline = Timeline::new(format!("Stalled holder ({}), lease {ttl}", kind(store)));
    a.signal(Signal::SIGSTOP);
    kill(Pid::from_raw(watchdog), Signal::SIGSTOP).expect("stop the watchdog");
    killpg(Pid::from_raw(job), Signal::SIGSTOP).expect("stop the job");
    let stalled_at = Instant::now();
    timeline.mark("holder stalled", SystemTime::now());
    // The lease as the stalled holder left it (a lower bound if a renewal was on its way).
    let (_, expires) = crate::support::held_status(store, &name);
    timeline.mark("lease expired", expires);

    // B takes over once A's lease has expired by the store's clock, and writes.
    let b = Test::new()
        .store(store)
        .env("RES", fenced.dir())
        .args([
            "run",
            "--name",
            &name,
            "--ttl",
            ttl,
            "--wait",
            "--timeout",
            "30s",
            "--json",
        ])
        .args(["--", "sh", "-c"])
        .args([writing_job(&b_pid, 5)])
        .status(0);
    let acquired = acquired_at(&locked_lease(&b));
    timeline.mark("next holder", acquired);
    assert!(acquired >= expires, "B acquired before A's lease expired");
    assert!(stalled_at.elapsed() < 30 * SECOND);

    // A's job wakes first, as a process may after a pause, and tries to write with its old token.
    killpg(Pid::from_raw(job), Signal::SIGCONT).expect("continue the job");
    timeline.mark("stalled job resumed", SystemTime::now());
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(watchdog), Signal::SIGCONT).expect("continue the watchdog");
    a.signal(Signal::SIGCONT);
    let a = a.finish(10 * SECOND);
    assert_eq!(a.code, 76, "A must report the lease lost: {}", a.stderr);
    if let Some(lost) = a.events().iter().find(|e| e["event"] == "lost") {
        let at = lost["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        timeline.mark("stalled holder reported lost", at.expect("event time"));
    }

    let writes = fenced.check();
    let tokens: Vec<u64> = writes
        .iter()
        .filter(|w| w.accepted)
        .map(|w| w.token)
        .collect();
    let (first, last) = (tokens[0], *tokens.last().expect("writes"));
    assert!(last > first, "B's writes carry a higher token: {tokens:?}");
    let rejected = writes.iter().find(|w| !w.accepted && w.token == first);
    let rejected = rejected
        .unwrap_or_else(|| panic!("A's job wrote after waking and was rejected: {writes:?}"));
    timeline.mark(
        "stale write rejected",
        std::time::UNIX_EPOCH + Duration::from_nanos(rejected.ns as u64),
    );
}

/// How a test takes the store's server away while a lease is held.
#[derive(Clone, Copy, Debug)]
pub enum Outage {
    /// SIGSTOP of every server process, then SIGCONT: the server freezes, as in a long pause.
    Paused,
    /// SIGKILL of every server process, then a restart on the same data and port: a crash.
    Crashed,
}

/// The store's server is down while a lease is held, for longer than the lease: the holder's
/// job must be dead before the lease ends by the store's clock, and once the server is back a
/// waiter acquires with a higher token (after a crash, this also shows that the store kept its
/// data: a lost token counter would start again from the bottom).
pub fn server_down_past_the_lease(
    store: &str,
    server: &mut Server,
    outage: Outage,
    ttl: &str,
    dir: &Path,
) {
    let name = unique("outage");
    // The lease lasts at least `ttl` from when the holder sent its acquire, which is after this.
    let spawned = SystemTime::now();
    let (holder, job) = hold(store, &name, ttl, dir);
    let (status, reported) = crate::support::held_status(store, &name);
    // Both are lower bounds of the store's real expiry; etcd reports its lease's remaining time
    // in whole seconds, rounded down, so its reported expiry can be early.
    let expires = reported.max(spawned + humantime::parse_duration(ttl).expect("ttl"));

    let mut timeline = Timeline::new(format!("{outage:?} server ({}), lease {ttl}", kind(store)));
    let resume = match outage {
        Outage::Paused => Some(server.pause()),
        Outage::Crashed => {
            server.crash();
            None
        }
    };
    timeline.mark("server down", SystemTime::now());
    job_dies_before(job, expires, &mut timeline);
    // Let the lease run out by the store's clock before the server answers again.
    while SystemTime::now() < expires + Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(20));
    }
    match resume {
        Some(resume) => drop(resume),
        None => server.restart(),
    }
    timeline.mark("server back", SystemTime::now());

    let waiter = waiter(store, &name, ttl).status(0);
    let next = locked_lease(&waiter);
    timeline.mark("next holder", acquired_at(&next));
    let token = next["token"].as_u64().expect("token");
    let old = status["lease"]["token"].as_u64().expect("token");
    assert!(token > old, "token {token} after {old}");
    let holder = holder.finish(30 * SECOND);
    assert_eq!(
        holder.code, 76,
        "the holder reports the lease lost: {}",
        holder.stderr
    );
}

/// The supervisor of a holder is SIGKILLed while a waiter waits: the watchdog kills the job at
/// once, nobody acquires before the dead holder's lease expires, and the waiter acquires within
/// the lease's TTL and one renew interval (a third of the TTL) of the kill.
pub fn supervisor_killed(store: &str, ttl: &str, dir: &Path) {
    let name = unique("sigkill");
    let (holder, job) = hold(store, &name, ttl, dir);
    let waiter = waiter(store, &name, ttl).spawn();
    // Long enough for the waiter to start and for the holder to renew at least once.
    std::thread::sleep(Duration::from_millis(1500));

    let mut timeline = Timeline::new(format!(
        "SIGKILL of the supervisor ({}), lease {ttl}",
        kind(store)
    ));
    let killed = SystemTime::now();
    holder.signal(Signal::SIGKILL);
    timeline.mark("supervisor killed", killed);
    // The lease as the dead holder left it (a lower bound if a renewal was still on its way).
    let (status, expires) = crate::support::held_status(store, &name);
    job_dies_before(job, expires, &mut timeline);

    let waiter = waiter.finish(40 * SECOND);
    assert_eq!(waiter.code, 0, "{}", waiter.stderr);
    let next = locked_lease(&waiter);
    let acquired = acquired_at(&next);
    timeline.mark("next holder", acquired);
    assert!(
        acquired >= expires,
        "the waiter acquired at {acquired:?}, before the lease expired at {expires:?}"
    );
    let ttl = humantime::parse_duration(ttl).expect("ttl");
    let bound = killed + ttl + ttl / 3;
    assert!(
        acquired <= bound,
        "the waiter acquired {:?} after the kill, later than TTL + one renew interval",
        acquired.duration_since(killed).unwrap_or_default()
    );
    assert!(next["token"].as_u64() > status["lease"]["token"].as_u64());
    drop(holder);
}

/// Starts a holder of `name` whose job sleeps, and returns it with its job's pid once the job
/// runs.
fn hold(store: &str, name: &str, ttl: &str, dir: &Path) -> (crate::support::Running, i32) {
    let pid_file = dir.join(format!("{name}.pid"));
    let holder = Test::new()
        .store(store)
        .args([
            "run", "--name", name, "--ttl", ttl, "--json", "--", "sh", "-c",
        ])
        .args([format!("echo $$ > {}; exec sleep 60", pid_file.display())])
        .spawn();
    wait_until(10 * SECOND, "the job runs", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    (holder, read_pid(&pid_file))
}

/// `singleton run --wait` on `name` with a job that does nothing.
fn waiter(store: &str, name: &str, ttl: &str) -> Test {
    Test::new()
        .store(store)
        .args(["run", "--name", name, "--ttl", ttl, "--json"])
        .args(["--wait", "--timeout", "30s", "--", "true"])
}

/// Waits until `job` has died and asserts that it died before the lease expired.
fn job_dies_before(job: i32, expires: SystemTime, timeline: &mut Timeline) {
    wait_until(30 * SECOND, "the job was killed", || {
        !crate::support::alive(job)
    });
    let died = SystemTime::now();
    timeline.mark("job killed", died);
    timeline.mark("lease expired", expires);
    assert!(
        died < expires,
        "the job died at {died:?}, after the lease expired at {expires:?}"
    );
}

/// The lease of a run's `locked` event.
fn locked_lease(done: &crate::support::Done) -> serde_json::Value {
    done.events()
        .into_iter()
        .find(|e| e["event"] == "locked")
        .unwrap_or_else(|| panic!("no `locked` event: {}", done.stderr))["lease"]
        .clone()
}

/// When a lease was acquired, by the store's clock.
fn acquired_at(lease: &serde_json::Value) -> SystemTime {
    lease["created"]
        .as_str()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .unwrap_or_else(|| panic!("no creation time: {lease}"))
}

/// The store kind of a URL, for the record.
fn kind(store: &str) -> &str {
    store.split("://").next().unwrap_or(store)
}

/// What happened when during a fault, relative to its first mark, in the order it happened;
/// printed when dropped (shown with `cargo test -- --nocapture`), so that a run documents its
/// timings, also when it fails.
pub(crate) struct Timeline {
    fault: String,
    marks: Vec<(&'static str, SystemTime)>,
}

impl Timeline {
    pub(crate) fn new(fault: String) -> Self {
        Timeline {
            fault,
            marks: Vec::new(),
        }
    }

    pub(crate) fn mark(&mut self, what: &'static str, at: SystemTime) {
        self.marks.push((what, at));
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        let Some(&(_, zero)) = self.marks.first() else {
            return;
        };
        self.marks.sort_by_key(|&(_, at)| at);
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

/// `contenders` loops of `singleton run --wait` on one name until `acquisitions` jobs have run;
/// some supervisors are SIGKILLed while their job runs. Killed holders' jobs must die with them
/// and nobody may acquire before their leases expire: no two jobs' intervals overlap, tokens only
/// grow, and the fenced resource accepted no stale write.
pub fn random_kills(store: &str, ttl: &str, dir: &Path, contenders: usize, acquisitions: usize) {
    let name = unique("kills");
    let fenced = Fenced::new(dir);
    let script = format!(
        "{}; {}; write_fenced; sleep 0.03; write_fenced",
        Fenced::shell_function(),
        history::recording_script(Duration::from_millis(30))
    );
    let lease = humantime::parse_duration(ttl).expect("a lease");
    let started = std::sync::atomic::AtomicUsize::new(0);
    let kills = std::sync::atomic::AtomicUsize::new(0);
    let slowest_death = std::sync::atomic::AtomicU64::new(0);
    let lost = std::sync::atomic::AtomicUsize::new(0);
    let logs: Vec<PathBuf> = (0..contenders)
        .map(|i| dir.join(format!("kills-{i}.log")))
        .collect();
    std::thread::scope(|scope| {
        for log in &logs {
            let (name, script, started, fenced) = (&name, &script, &started, &fenced);
            let (kills, slowest_death, lost) = (&kills, &slowest_death, &lost);
            scope.spawn(move || {
                while started.load(std::sync::atomic::Ordering::SeqCst) < acquisitions {
                    let running = Test::new()
                        .store(store)
                        .env("LOG", log)
                        .env("RES", fenced.dir())
                        .args([
                            "run",
                            "--name",
                            name,
                            "--ttl",
                            ttl,
                            "--wait",
                            "--timeout",
                            "60s",
                        ])
                        .args(["--", "sh", "-c", script])
                        .spawn();
                    if fastrand::u8(0..5) == 0 {
                        // Kill this one while (or before) its job runs. Its job must die with
                        // it, well before the lease could pass to anyone else.
                        std::thread::sleep(Duration::from_millis(fastrand::u64(0..60)));
                        running.signal(Signal::SIGKILL);
                        let took = wait_until_gone(log, lease);
                        assert!(
                            took < lease,
                            "{log:?}: a job ran on for {took:?} after its supervisor was \
                             SIGKILLed, with a lease of {ttl}"
                        );
                        slowest_death.fetch_max(
                            took.as_micros() as u64,
                            std::sync::atomic::Ordering::SeqCst,
                        );
                        kills.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        append(&ended(log), &format!("{}\n", now_ns()));
                        drop(running);
                    } else {
                        let done = running.finish(90 * SECOND);
                        // Whatever it ran has ended by now, also a job stopped unfinished (76).
                        append(&ended(log), &format!("{}\n", now_ns()));
                        // 76: on a loaded machine a renewal can miss its deadline; the job was
                        // then stopped, which is the safe outcome, and the history shows it.
                        // 69 after the job: its release did not get through before the lease's
                        // safe deadline, so the lease was left to expire; the history still
                        // judges the run.
                        let release_failed = done.code == 69 && done.stderr.contains("release");
                        // 124: sixteen contenders on a loaded machine; waiting is not fair, and
                        // one that waited out its timeout simply starts again.
                        assert!(
                            matches!(done.code, 0 | 76 | 124) || release_failed,
                            "exit {}: {}",
                            done.code,
                            done.stderr
                                .lines()
                                .filter(|l| !l.contains("waiting for"))
                                .collect::<Vec<_>>()
                                .join("\n")
                        );
                        if done.code == 0 {
                            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        if done.code == 76 {
                            lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    let intervals: Vec<history::Interval> = logs.iter().flat_map(|log| intervals_of(log)).collect();
    let checked = history::check(intervals);
    assert!(checked.len() >= acquisitions, "{} jobs ran", checked.len());
    let writes = fenced.check();
    eprintln!(
        "random kills ({}), lease {ttl}: {contenders} contenders, {} jobs, {} supervisors \
         SIGKILLed (their processes gone within {:?} at most), {} runs that lost their lease, \
         0 overlaps, tokens increasing, {} fenced writes, {} rejected",
        kind(store),
        checked.len(),
        kills.into_inner(),
        Duration::from_micros(slowest_death.into_inner()),
        lost.into_inner(),
        writes.len(),
        writes.iter().filter(|w| !w.accepted).count()
    );
}

/// Where a contender notes when each of its runs had ended, all its processes gone.
fn ended(log: &Path) -> PathBuf {
    log.with_extension("ended")
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// Waits until no live process carries `LOG=log` in its environment: the SIGKILLed supervisor
/// of a contender and anything it started, its job included, are gone. How long that took;
/// gives up after `limit`.
fn wait_until_gone(log: &Path, limit: Duration) -> Duration {
    let mut mark = b"LOG=".to_vec();
    mark.extend_from_slice(log.as_os_str().as_encoded_bytes());
    mark.push(0);
    let started = Instant::now();
    let carries = |environ: &[u8]| environ.split_inclusive(|&b| b == 0).any(|var| var == mark);
    loop {
        let alive = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
            .filter(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<i32>().is_ok())
            })
            .any(|entry| {
                // A zombie's environment reads empty.
                std::fs::read(entry.path().join("environ")).is_ok_and(|environ| carries(&environ))
            });
        if !alive || started.elapsed() >= limit {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One contender's job intervals. A job that was stopped before it finished (its supervisor
/// SIGKILLed, or its lease lost) has a start and no stop; it is taken to hold the lease until its
/// run was seen to have ended.
fn intervals_of(log: &Path) -> Vec<history::Interval> {
    let mut events: Vec<(u128, Option<(&'static str, u64)>)> = Vec::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("log line");
        let ns = v["ns"].to_string().parse().expect("ns");
        let token = v["token"].as_u64().expect("token");
        let kind = if v["event"] == "start" {
            "start"
        } else {
            "stop"
        };
        events.push((ns, Some((kind, token))));
    }
    let ends = std::fs::read_to_string(ended(log)).unwrap_or_default();
    events.extend(ends.lines().map(|ns| (ns.parse().expect("end time"), None)));
    events.sort_by_key(|(ns, _)| *ns);
    let mut intervals = Vec::new();
    let mut open: Option<(u64, u128)> = None;
    for (ns, event) in events {
        match event {
            Some(("start", token)) => {
                assert!(open.is_none(), "{log:?}: a job started while another ran");
                open = Some((token, ns));
            }
            Some((_, token)) => {
                let Some((started, start_ns)) = open.take() else {
                    panic!("{log:?}: job {token} outlived its run");
                };
                assert_eq!(started, token, "{log:?}");
                intervals.push(history::Interval {
                    pid: 0,
                    token,
                    start_ns,
                    end_ns: ns,
                });
            }
            // The end of a run whose job never started, or finished, closes nothing.
            None => {
                if let Some((token, start_ns)) = open.take() {
                    intervals.push(history::Interval {
                        pid: 0,
                        token,
                        start_ns,
                        end_ns: ns,
                    });
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "{log:?}: a job neither stopped nor ended with its run"
    );
    intervals
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("append");
}

#[test]
fn a_stalled_holder_on_sqlite_is_fenced() {
    let store = SqliteStore::new();
    stalled_holder_is_fenced(&store.url, STALL_TTL, store.dir.path());
}

#[test]
fn random_supervisor_kills_on_sqlite_never_overlap() {
    let store = SqliteStore::new();
    random_kills(&store.url, "1s", store.dir.path(), 16, 50);
}

#[test]
fn a_killed_supervisor_on_sqlite_hands_over_after_the_lease() {
    let store = SqliteStore::new();
    supervisor_killed(&store.url, "2s", store.dir.path());
}

/// The same scenarios on every network store built in: the shared test server for the first
/// three, and a server of the test's own for those that pause or crash it.
macro_rules! on_store {
    ($feature:literal, $module:ident, $server:ident, $ttl:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;
            use crate::support::servers::StoreServer;
            use crate::support::$server as server;

            #[test]
            fn a_stalled_holder_is_fenced() {
                let dir = tempfile::tempdir().expect("temp dir");
                stalled_holder_is_fenced(&server::shared().store_url(), STALL_TTL, dir.path());
            }

            #[test]
            fn random_supervisor_kills_never_overlap() {
                let dir = tempfile::tempdir().expect("temp dir");
                random_kills(&server::shared().store_url(), $ttl, dir.path(), 16, 50);
            }

            #[test]
            fn a_killed_supervisor_hands_over_after_the_lease() {
                let dir = tempfile::tempdir().expect("temp dir");
                supervisor_killed(&server::shared().store_url(), "3s", dir.path());
            }

            #[test]
            fn a_paused_server_stops_the_holder_in_time() {
                let mut own = server::own();
                let dir = tempfile::tempdir().expect("temp dir");
                let url = own.store_url();
                server_down_past_the_lease(&url, own.server(), Outage::Paused, "2s", dir.path());
            }

            #[test]
            fn a_crashed_server_stops_the_holder_in_time_and_keeps_its_data() {
                let mut own = server::own();
                let dir = tempfile::tempdir().expect("temp dir");
                let url = own.store_url();
                server_down_past_the_lease(&url, own.server(), Outage::Crashed, "2s", dir.path());
            }
        }
    };
}

on_store!("postgres", postgres, postgres_server, "1s");
on_store!("mysql", mysql, mariadb_server, "1s");
on_store!("mongodb", mongodb, mongodb_server, "1s");
on_store!("redis", redis, redis_server, "1s");
on_store!("etcd", etcd, etcd_server, "2s");
