//! Partitions (SPEC §12, issue 15): the store's server on a host of its own, the contenders on
//! other hosts, and one host's packets made to vanish (nftables drops: no reset, nobody is told)
//! or its link flapping. The bar is §4's: a cut-off holder's job is dead before its lease ends by
//! the store's clock, nobody acquires before then, tokens only grow, no two jobs overlap, no run
//! hangs beyond the documented bounds, and nothing is stuck after healing.
//!
//! Each scenario runs unchanged on every network store, on a network and server of its own; the
//! history checker and the fenced resource judge the outcome. Every run prints its times
//! (`timeline: …` lines, shown with `cargo test -- --nocapture`).

// The scenarios run on the network stores; built without any, only the harness test uses this.
#![cfg_attr(
    not(any(
        feature = "postgres",
        feature = "mysql",
        feature = "redis",
        feature = "etcd",
        feature = "mongodb"
    )),
    allow(dead_code)
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::fenced::Fenced;
use crate::support::history;
use crate::support::hosts::{Direction, Host, Network};
use crate::support::servers::StoreServer;
use crate::support::{alive, bin, json_lines, unique, wait_until};

const SECOND: Duration = Duration::from_secs(1);

/// What a loaded machine (2 cores, the rest of the suite beside) may add to a bound that the
/// product documents, for starting processes and polling.
const SLACK: Duration = Duration::from_secs(2);

/// The lease of the cut-off holder scenario. Both holders must keep their leases while the
/// machine is loaded (2 cores and the rest of the suite): with 2 s, a renewal may have only
/// 220 ms, and A may lose its lease (safely, but uselessly for the test) before it is cut off.
const CUT_OFF_TTL: &str = "3s";

/// The store's server on host `s`, and client hosts of the test's naming.
pub struct World {
    url: String,
    clients: Vec<Host>,
    dir: tempfile::TempDir,
    _server: Box<dyn StoreServer + Send + Sync>,
    // Last, so that it is dropped last: it kills whatever still runs on the hosts.
    _network: Network,
}

impl World {
    /// A network with host `s`, on which `start` starts the store's server, and `clients`.
    pub fn new(
        clients: &[&str],
        start: impl FnOnce(&Host) -> Box<dyn StoreServer + Send + Sync>,
    ) -> World {
        let mut network = Network::new();
        let s = network.host("s");
        let clients = clients.iter().map(|name| network.host(name)).collect();
        let server = start(&s);
        World {
            url: server.store_url(),
            clients,
            dir: tempfile::tempdir().expect("temp dir"),
            _server: server,
            _network: network,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.clients
            .iter()
            .find(|host| host.name() == name)
            .unwrap_or_else(|| panic!("no client host {name:?}"))
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `singleton --store URL ARGS` on `host` in the background, with `env`; its stderr (with
    /// `--json`, its events) goes to a file that can be read while it runs.
    fn spawn(&self, host: &Host, args: &[&str], env: &[(&str, &Path)]) -> Run {
        let stderr = self.path(&format!("{}.stderr", unique(host.name())));
        let mut command = host.command(bin());
        command
            .env_remove("SINGLETON_STORE")
            .args(["--store", &self.url])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (key, value) in env {
            command.env(key, value);
        }
        Run {
            child: command.spawn().expect("spawn singleton"),
            stderr,
            exited: None,
        }
    }

    /// `singleton status --json NAME` on `host`.
    fn status(&self, host: &Host, name: &str) -> Value {
        let done = host
            .singleton()
            .args(["--store", &self.url, "status", "--json", name])
            .status(0);
        serde_json::from_str(&done.stdout).expect("status JSON")
    }

    /// The store kind, for the record.
    fn kind(&self) -> &str {
        self.url.split("://").next().unwrap_or(&self.url)
    }
}

/// A `singleton` running on a host; SIGKILLed on drop if it still runs.
struct Run {
    child: Child,
    stderr: PathBuf,
    /// The exit code and when the exit was first seen.
    exited: Option<(i32, SystemTime)>,
}

impl Run {
    /// What it printed so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The events it printed so far (whole lines only: the last may be half written).
    fn events(&self) -> Vec<Value> {
        let text = self.stderr();
        let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
        json_lines(whole)
    }

    fn event(&self, kind: &str) -> Option<Value> {
        self.events()
            .into_iter()
            .find(|event| event["event"] == kind)
    }

    /// Whether it has exited (noting when that was first seen).
    fn poll(&mut self) -> bool {
        if self.exited.is_none() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                self.exited = Some((code, SystemTime::now()));
            }
        }
        self.exited.is_some()
    }

    /// Panics with what it printed if it has exited: it should still be running.
    fn still_running(&mut self, who: &str) {
        if self.poll() {
            panic!(
                "{who} exited with {:?} too early:\n{}",
                self.exited,
                self.stderr()
            );
        }
    }

    /// Waits (at most `limit`) until it exits; its exit code and when it exited.
    fn finish(&mut self, limit: Duration) -> (i32, SystemTime) {
        let started = Instant::now();
        while !self.poll() {
            assert!(
                started.elapsed() < limit,
                "singleton did not finish within {limit:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.exited.expect("exited")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What happened when, relative to the first mark, in the order it happened; printed when
/// dropped, so that a run documents its times, also when it fails.
struct Timeline {
    what: String,
    marks: Vec<(String, SystemTime)>,
}

impl Timeline {
    fn new(what: String) -> Self {
        Timeline {
            what,
            marks: Vec::new(),
        }
    }

    fn mark(&mut self, what: &str, at: SystemTime) {
        self.marks.push((what.to_owned(), at));
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        let Some(zero) = self.marks.iter().map(|(_, at)| *at).min() else {
            return;
        };
        self.marks.sort_by_key(|(_, at)| *at);
        let marks: Vec<String> = self
            .marks
            .iter()
            .map(|(what, at)| {
                let ms = at.duration_since(zero).unwrap_or_default().as_secs_f64() * 1e3;
                format!("{what} t={ms:.0} ms")
            })
            .collect();
        eprintln!("timeline: {}: {}", self.what, marks.join(", "));
    }
}

fn ttl_of(ttl: &str) -> Duration {
    humantime::parse_duration(ttl).expect("a lease length")
}

/// A time field of a lease (`created`, `expires`) as JSON shows it.
fn lease_time(lease: &Value, field: &str) -> Option<SystemTime> {
    lease[field]
        .as_str()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
}

fn ns_of(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).expect("clock").as_nanos()
}

fn at_ns(ns: u128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

fn sleep_until(at: SystemTime) {
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
}

/// The lease of a run's `locked` event.
fn locked_lease(run: &Run) -> Value {
    run.event("locked")
        .unwrap_or_else(|| panic!("no `locked` event:\n{}", run.stderr()))["lease"]
        .clone()
}

/// A job that records its pid in `pid_file` and then writes to the fenced resource every 100 ms
/// until `until` exists (for a minute at most).
fn writing_job(pid_file: &Path, until: &Path) -> String {
    format!(
        "{}; echo $$ > {}; i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do write_fenced; i=$((i+1)); sleep 0.1; done",
        Fenced::shell_function(),
        pid_file.display(),
        until.display()
    )
}

fn read_pid(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// Closes the intervals in a contender's history `log` that a job stopped with its lost lease
/// left open (it recorded its start, not its stop), at `ended`: a time by which the job was
/// certainly gone.
fn close_open_intervals(log: &Path, ended: SystemTime) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let key = (
            value["pid"].as_u64().expect("pid"),
            value["token"].as_u64().expect("token"),
        );
        if value["event"] == "start" {
            open.push(key);
        } else {
            open.retain(|k| *k != key);
        }
    }
    let now = ns_of(ended);
    let closing: String = open
        .iter()
        .map(|(pid, token)| {
            format!("{{\"event\":\"stop\",\"pid\":{pid},\"token\":{token},\"ns\":{now}}}\n")
        })
        .collect();
    if !closing.is_empty() {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .and_then(|mut file| file.write_all(closing.as_bytes()))
            .expect("close the open intervals");
    }
}

/// Holder A's host is cut off (its packets vanish both ways) for longer than the lease while B
/// waits on another host: A's job is dead before the lease ends by the store's clock (as last
/// seen from B, or as A's last renewal reported it, whichever is later); B acquires after that
/// with a higher token; A never writes to the fenced resource with its old token after B
/// acquired; once healed, A's supervisor exits 76, and nothing of A's (a release retransmitted
/// after healing, say) touches B's lease: it is still there, with B's token, and B gives it back
/// itself.
pub fn holder_cut_off_past_the_ttl(world: &World, ttl: &str) {
    let length = ttl_of(ttl);
    let (a, b) = (world.host("a"), world.host("b"));
    let name = unique("cutoff");
    let fenced = Fenced::new(world.dir.path());
    let env = [("RES", fenced.dir())];
    let (a_pid, b_pid) = (world.path("a.pid"), world.path("b.pid"));
    let (never, b_done) = (world.path("never"), world.path("b.done"));
    let run = |job: &str| {
        [
            "run",
            "--name",
            name.as_str(),
            "--ttl",
            ttl,
            "--json",
            "--",
            "sh",
            "-c",
            job,
        ]
        .map(str::to_owned)
    };
    let mut holder = world.spawn(
        a,
        &run(&writing_job(&a_pid, &never))
            .each_ref()
            .map(String::as_str),
        &env,
    );
    wait_until(30 * SECOND, "A's job writes", || {
        holder.still_running("A");
        std::fs::read_to_string(&a_pid).is_ok_and(|pid| pid.ends_with('\n'))
            && !fenced.writes().is_empty()
    });
    let job = read_pid(&a_pid);
    let a_token = locked_lease(&holder)["token"].as_u64().expect("token");
    let mut waiter = world.spawn(
        b,
        &[
            "run",
            "--name",
            &name,
            "--ttl",
            ttl,
            "--wait",
            "--timeout",
            "30s",
            "--json",
            "--",
            "sh",
            "-c",
            &writing_job(&b_pid, &b_done),
        ],
        &env,
    );
    wait_until(30 * SECOND, "B waits", || {
        waiter.still_running("B");
        waiter.event("waiting").is_some()
    });

    let mut timeline = Timeline::new(format!(
        "holder cut off past the lease ({}), lease {ttl}",
        world.kind()
    ));
    a.drop_all();
    let cut = SystemTime::now();
    timeline.mark("A cut off", cut);
    // The lease as the cut-off holder left it, from B: a renewal that reached the store before
    // the cut shows. etcd reports whole seconds left, rounded down; A's last renewal reported an
    // expiry of its own, never later than the store's.
    let status = world.status(b, &name);
    assert_eq!(
        status["lease"]["token"],
        a_token,
        "A no longer held the lease when it was cut off: {status}\n{}",
        holder.stderr()
    );
    let reported = lease_time(&status["lease"], "expires").expect("an expiry");
    let renewed = holder
        .events()
        .iter()
        .filter(|event| event["event"] == "locked" || event["event"] == "renewed")
        .filter_map(|event| lease_time(&event["lease"], "expires"))
        .max();
    let expires = renewed.map_or(reported, |renewed| renewed.max(reported));
    timeline.mark("lease expired", expires);

    wait_until(length * 3 + 10 * SECOND, "A's job was killed", || {
        holder.poll();
        !alive(job)
    });
    let killed = SystemTime::now();
    timeline.mark("A's job killed", killed);
    assert!(
        killed < expires,
        "A's job was still running {:?} after its lease expired",
        killed.duration_since(expires).unwrap_or_default()
    );

    wait_until(30 * SECOND, "B acquires", || {
        holder.poll();
        waiter.still_running("B");
        waiter.event("locked").is_some()
    });
    let b_token = locked_lease(&waiter)["token"].as_u64().expect("token");
    // When B acquired, as the store recorded it: the `locked` event of some stores shows the
    // time B sent its acquire, which may be before the store took it up.
    let status = world.status(b, &name);
    assert_eq!(
        status["lease"]["token"], b_token,
        "B holds the lease: {status}"
    );
    let acquired = lease_time(&status["lease"], "created").expect("a creation time");
    timeline.mark("B acquired", acquired);
    assert!(
        acquired >= expires,
        "B acquired {:?} before A's lease expired",
        expires.duration_since(acquired).unwrap_or_default()
    );
    assert!(b_token > a_token, "token {b_token} after {a_token}");
    wait_until(10 * SECOND, "B's job writes", || {
        fenced.writes().iter().any(|write| write.token == b_token)
    });

    // Cut off for longer than the lease, then back.
    sleep_until(cut + length + Duration::from_millis(500));
    a.heal();
    let healed = SystemTime::now();
    timeline.mark("A healed", healed);
    let (code, exited) = holder.finish(30 * SECOND);
    timeline.mark("A exited", exited);
    if let Some(at) = holder
        .event("lost")
        .and_then(|lost| lease_time(&lost, "time"))
    {
        timeline.mark("A reported lost", at);
    }
    assert_eq!(code, 76, "A reports its lease lost:\n{}", holder.stderr());

    // What A's kernel still had to send when its sockets went (TCP retransmits, at growing
    // intervals) has arrived a few seconds after healing, or never will.
    sleep_until(healed + 3 * SECOND);
    let status = world.status(a, &name);
    assert_eq!(
        status["lease"]["token"], b_token,
        "B's lease is untouched by A: {status}"
    );
    assert_eq!(status["lease"]["holder"]["host"], "b", "{status}");
    std::fs::write(&b_done, "").expect("end B's job");
    let (code, released) = waiter.finish(30 * SECOND);
    timeline.mark("B released", released);
    assert_eq!(code, 0, "B gives its own lease back:\n{}", waiter.stderr());

    let writes = fenced.check();
    let late: Vec<_> = writes
        .iter()
        .filter(|write| write.token == a_token && at_ns(write.ns) >= acquired)
        .collect();
    assert!(late.is_empty(), "A wrote after B acquired: {late:?}");
    if let Some(last) = writes.iter().rfind(|write| write.token == a_token) {
        timeline.mark("A's last write", at_ns(last.ns));
    }
}

/// Packets vanish in the middle of an acquire and of a release; neither run hangs past the
/// documented bounds (Options::request_timeout: an acquire try lasts at most until its lease
/// would count as lost, at most 5 s, and `lock` sends it twice; a waiter tries again with
/// backoff, up to every 5 s; a release is tried while the lease may still be ours), nobody holds
/// twice, and after healing a run from another host acquires within a lease length:
///
/// 1. A one-shot `run` on A, whose packets vanish both ways the moment it says it is acquiring.
/// 2. A waiter on A whose answers vanish just before the holder B gives the lease up (B's job
///    drops them as its last act): A's next acquire reaches the store and may be granted, but A
///    never hears so. The lease it left is A's own, unknown to A, until it expires or A, healed,
///    finds it.
/// 3. A's job drops its own packets as its last act, so that its release goes into the void.
pub fn packets_dropped_mid_acquire_and_release(world: &World, ttl: &str) {
    let length = ttl_of(ttl);
    let (a, b) = (world.host("a"), world.host("b"));
    let name = unique("midway");
    let log = |run: &str| world.path(&format!("{run}.log"));
    let job = history::recording_script(Duration::from_millis(200));
    let run = |job: &str, wait: bool| {
        let mut args = vec!["run", "--name", &name, "--ttl", ttl, "--json"];
        if wait {
            args.extend(["--wait", "--timeout", "30s"]);
        }
        args.extend(["--", "sh", "-c", job]);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let spawn = |host: &Host, args: &[String], log: &Path| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        world.spawn(host, &args, &[("LOG", log)])
    };
    // Options::request_timeout: the lease minus 1% and the 200 ms safety margin, minus the grace
    // of a fifth, at most 5 s.
    let acquire_try =
        (length.mul_f64(0.99) - Duration::from_millis(200) - length / 5).min(5 * SECOND);
    // A run from another host, after healing: acquires within a lease length.
    let next = |log: &Path, after: SystemTime, timeline: &mut Timeline| -> u64 {
        let mut next = spawn(b, &run(&job, true), log);
        let (code, _) = next.finish(40 * SECOND);
        assert_eq!(code, 0, "{}", next.stderr());
        let lease = locked_lease(&next);
        let acquired = lease_time(&lease, "created").expect("a creation time");
        timeline.mark("B acquired", acquired);
        let waited = acquired.duration_since(after).unwrap_or_default();
        assert!(
            waited <= length + SLACK,
            "B acquired only {waited:?} after healing, later than a lease length"
        );
        lease["token"].as_u64().expect("token")
    };
    // The time a job wrote to `file` with `date +%s%N`.
    let written = |file: &Path, run: &Run| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|ns| ns.trim().parse().ok())
            .map(at_ns)
            .unwrap_or_else(|| panic!("the job did not drop the packets:\n{}", run.stderr()))
    };

    // 1. A one-shot acquire.
    let mut timeline = Timeline::new(format!(
        "packets dropped mid-acquire, one try ({}), lease {ttl}",
        world.kind()
    ));
    let mut acquiring = spawn(a, &run(&job, false), &log("a1"));
    wait_until(30 * SECOND, "A sends its acquire", || {
        acquiring.still_running("A");
        acquiring.event("locking").is_some()
    });
    a.drop_all();
    let dropped = SystemTime::now();
    timeline.mark("A's packets dropped", dropped);
    let heal_at = dropped + 3 * SECOND;
    while SystemTime::now() < heal_at && !acquiring.poll() {
        std::thread::sleep(Duration::from_millis(10));
    }
    sleep_until(heal_at);
    a.heal();
    let healed = SystemTime::now();
    timeline.mark("A healed", healed);
    // Two tries, and if the first answer came in time, the job and a release that ends by the
    // lease's safe deadline.
    let bound = 2 * acquire_try + length + SLACK;
    let (code, exited) = acquiring.finish(bound + 10 * SECOND);
    timeline.mark(&format!("A exited {code}"), exited);
    let took = exited.duration_since(dropped).unwrap_or_default();
    assert!(
        took <= bound,
        "A ran {took:?} after its packets were dropped, longer than {bound:?}:\n{}",
        acquiring.stderr()
    );
    // 69 if the store could not be reached in time; 0 or 76 if the answer came back before the
    // drop and the job ran (and its release was or was not confirmed).
    assert!(
        matches!(code, 0 | 69 | 76),
        "exit {code}:\n{}",
        acquiring.stderr()
    );
    next(&log("b1"), healed, &mut timeline);
    drop(timeline);

    // 2. A waiter's answers vanish just before the lease comes free.
    let mut timeline = Timeline::new(format!(
        "answers dropped mid-acquire, waiting ({}), lease {ttl}",
        world.kind()
    ));
    let (go, dropped_file) = (world.path("go"), world.path("dropped-2"));
    let holder_job = format!(
        "{start}; while [ ! -e {go} ]; do sleep 0.05; done; {stop}; {drop}; date +%s%N > {dropped}",
        start = record("start"),
        stop = record("stop"),
        go = go.display(),
        drop = a.drop_command(Direction::Incoming),
        dropped = dropped_file.display(),
    );
    let mut holder = spawn(b, &run(&holder_job, false), &log("b2"));
    wait_until(30 * SECOND, "B holds the lease", || {
        holder.still_running("B");
        holder.event("locked").is_some()
    });
    let b_token = locked_lease(&holder)["token"].as_u64().expect("token");
    let mut waiter = spawn(a, &run(&job, true), &log("a2"));
    wait_until(30 * SECOND, "A waits", || {
        waiter.still_running("A");
        waiter.event("waiting").is_some()
    });
    std::fs::write(&go, "").expect("end B's job");
    let (code, released) = holder.finish(30 * SECOND);
    assert_eq!(code, 0, "{}", holder.stderr());
    let dropped = written(&dropped_file, &holder);
    timeline.mark("A's answers dropped", dropped);
    timeline.mark("B released", released);
    // Whether A's next acquire was granted, unheard: the store shows A holding.
    std::thread::sleep(Duration::from_millis(300));
    let status = world.status(b, &name);
    let ghost = status["lease"]["holder"]["host"] == "a";
    timeline.mark(
        if ghost {
            "a lease granted to A, unheard by A"
        } else {
            "no lease granted to A"
        },
        SystemTime::now(),
    );
    sleep_until(dropped + 3 * SECOND);
    a.heal();
    let healed = SystemTime::now();
    timeline.mark("A healed", healed);
    // The waiter's next try after healing comes within its longest pause (5 s); a lease of its
    // own that it never heard of may stand for a lease length before that.
    let bound = 5 * SECOND + length + acquire_try + SLACK;
    let (code, exited) = waiter.finish(bound + 10 * SECOND);
    timeline.mark(&format!("A exited {code}"), exited);
    assert_eq!(code, 0, "A acquires once healed:\n{}", waiter.stderr());
    let lease = locked_lease(&waiter);
    let acquired = lease_time(&lease, "created").expect("a creation time");
    timeline.mark("A acquired", acquired);
    let waited = exited.duration_since(healed).unwrap_or_default();
    assert!(
        waited <= bound,
        "A ran {waited:?} after healing, longer than {bound:?}:\n{}",
        waiter.stderr()
    );
    assert!(lease["token"].as_u64().expect("token") > b_token);
    next(&log("b3"), exited, &mut timeline);
    drop(timeline);

    // 3. The release.
    let mut timeline = Timeline::new(format!(
        "packets dropped mid-release ({}), lease {ttl}",
        world.kind()
    ));
    let dropped_file = world.path("dropped-3");
    let last_act = format!(
        "{job}; {}; date +%s%N > {}",
        a.drop_command(Direction::Both),
        dropped_file.display()
    );
    let mut releasing = spawn(a, &run(&last_act, false), &log("a3"));
    let (code, exited) = releasing.finish(30 * SECOND);
    let dropped = written(&dropped_file, &releasing);
    timeline.mark("A's packets dropped (job ends)", dropped);
    timeline.mark(&format!("A exited {code}"), exited);
    // A release is tried until the lease's safe deadline, before its expiry.
    let bound = length + SLACK;
    let took = exited.duration_since(dropped).unwrap_or_default();
    assert!(
        took <= bound,
        "A ran {took:?} after its packets were dropped, longer than {bound:?}:\n{}",
        releasing.stderr()
    );
    // The release cannot have reached the store: the run does not claim it did.
    assert!(
        matches!(code, 69 | 76),
        "exit {code} though the release went into the void:\n{}",
        releasing.stderr()
    );
    // Healed once the lease left in the store has expired by itself.
    sleep_until(dropped + length + Duration::from_millis(500));
    a.heal();
    let healed = SystemTime::now();
    timeline.mark("A healed", healed);
    next(&log("b4"), healed, &mut timeline);

    let logs: Vec<PathBuf> = ["a1", "b1", "b2", "a2", "b3", "a3", "b4"]
        .iter()
        .map(|run| log(run))
        .collect();
    let intervals = history::check(history::read(&logs));
    assert!(intervals.len() >= 6, "jobs: {intervals:?}");
}

/// A line of `sh` that records `event` (`start` or `stop`) of the job's interval in `$LOG`, as
/// [`history::recording_script`] does.
fn record(event: &str) -> String {
    format!(
        r#"printf '{{"event":"{event}","pid":%s,"token":%s,"ns":%s}}\n' "$$" "$SINGLETON_TOKEN" "$(date +%s%N)" >> "$LOG""#
    )
}

/// 8 contenders, 2 on each of 4 hosts, loop `run --wait` with a job that records its interval,
/// while host a's link flaps for 10 s: down (cut at the switch, or every packet dropped, in
/// turns) and up every 200–400 ms. The jobs on host a hold the lease for a lease length, so that
/// they must renew it through the flaps (and are stopped when they cannot), while the others'
/// take 30 ms and their contenders are ready to take over at once. No two jobs overlap and
/// tokens strictly increase.
pub fn a_flapping_link_never_makes_two_holders(world: &World, ttl: &str) {
    let name = unique("flap");
    let flapping = world.host("a");
    let long = history::recording_script(ttl_of(ttl));
    let short = history::recording_script(Duration::from_millis(30));
    let contenders: Vec<(&Host, PathBuf)> = world
        .clients
        .iter()
        .flat_map(|host| {
            (0..2).map(move |i| (host, world.path(&format!("flap-{}-{i}.log", host.name()))))
        })
        .collect();
    assert_eq!(contenders.len(), 8);
    let stop = AtomicBool::new(false);
    let codes: Mutex<Vec<(String, i32)>> = Mutex::new(Vec::new());
    let flaps = std::thread::scope(|scope| {
        // Whatever happens here, the contenders stop.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = Stop(&stop);
        for (host, log) in &contenders {
            let script = if host.name() == flapping.name() {
                &long
            } else {
                &short
            };
            let (name, stop, codes) = (&name, &stop, &codes);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut run = world.spawn(
                        host,
                        &[
                            "run",
                            "--name",
                            name,
                            "--ttl",
                            ttl,
                            "--wait",
                            "--timeout",
                            "60s",
                            "--json",
                            "--",
                            "sh",
                            "-c",
                            script,
                        ],
                        &[("LOG", log)],
                    );
                    let (code, exited) = run.finish(90 * SECOND);
                    // A job stopped for a lost lease writes no `stop`: it ends when the
                    // supervisor signals its group (`terminating`: SIGTERM, which the job's
                    // `sh` and `sleep` die of; `killing`: SIGKILL), noted just before the
                    // signal goes out, else when the supervisor says `exited` (once every
                    // process of the job is gone, which a loaded machine reports late). Times
                    // are shown in whole milliseconds.
                    let gone = ["terminating", "killing", "exited"]
                        .iter()
                        .filter_map(|kind| run.event(kind))
                        .filter_map(|event| lease_time(&event, "time"))
                        .min()
                        .map_or(exited, |at| at + Duration::from_millis(1));
                    close_open_intervals(log, gone);
                    // 76: the lease was lost under the job, which was stopped; 69: the release
                    // could not reach the store (the lease then expires by itself).
                    assert!(
                        matches!(code, 0 | 69 | 76),
                        "exit {code} on {}:\n{}",
                        host.name(),
                        run.stderr()
                    );
                    codes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((host.name().to_owned(), code));
                }
            });
        }
        let started = Instant::now();
        let mut flaps = 0;
        while started.elapsed() < 10 * SECOND {
            if flaps % 2 == 0 {
                flapping.cut();
            } else {
                flapping.drop_all();
            }
            std::thread::sleep(Duration::from_millis(fastrand::u64(200..=400)));
            flapping.heal();
            std::thread::sleep(Duration::from_millis(fastrand::u64(200..=400)));
            flaps += 1;
        }
        flaps
    });
    let logs: Vec<PathBuf> = contenders.iter().map(|(_, log)| log.clone()).collect();
    let intervals = history::check(history::read(&logs));
    let codes = codes.into_inner().unwrap_or_else(|e| e.into_inner());
    let on_flapping: usize = contenders
        .iter()
        .filter(|(host, _)| host.name() == flapping.name())
        .map(|(_, log)| history::read(std::slice::from_ref(log)).len())
        .sum();
    let count = |code: i32| codes.iter().filter(|(_, c)| *c == code).count();
    eprintln!(
        "flapping link ({}), lease {ttl}: {flaps} flaps in 10 s, 8 contenders on 4 hosts, {} jobs \
         ({on_flapping} on the flapping host), {} runs exited 76 (lease lost), {} exited 69 \
         (release unconfirmed), 0 overlaps, tokens strictly increasing",
        world.kind(),
        intervals.len(),
        count(76),
        count(69)
    );
    assert!(
        intervals.len() >= 8,
        "only {} jobs ran in 10 s",
        intervals.len()
    );
}

/// The harness's drops: packets vanish (a connection times out, it is not refused), in the
/// direction asked for, only on the host's link (not its loopback), and healing ends them.
#[test]
fn harness_drops_make_packets_vanish_in_the_direction_asked() {
    let mut network = Network::new();
    let s = network.host("s");
    let b = network.host("b");
    let address = s.address();
    // A listening socket of the test's own in s's namespace: the kernel completes handshakes
    // into its backlog, nothing needs to accept.
    let listener = s.enter(|| std::net::TcpListener::bind((address, 0)).expect("listen on s"));
    let port = listener.local_addr().expect("address").port();
    let connect = |from: &Host| {
        from.enter(|| {
            std::net::TcpStream::connect_timeout(&(address, port).into(), SECOND)
                .map(drop)
                .map_err(|err| err.kind())
        })
    };
    // The half-open connections on s: a handshake whose SYN arrived, whose SYN-ACK did not.
    let half_open = || {
        let output = s
            .command("ss")
            .args(["-Htn", "state", "syn-recv"])
            .output()
            .expect("run ss");
        String::from_utf8_lossy(&output.stdout).contains(&b.address().to_string())
    };
    assert_eq!(connect(&b), Ok(()));

    b.drop_outgoing();
    assert_eq!(connect(&b), Err(std::io::ErrorKind::TimedOut));
    assert!(!half_open(), "b's SYN left b");
    b.heal();
    assert_eq!(connect(&b), Ok(()));

    b.drop_incoming();
    assert_eq!(connect(&b), Err(std::io::ErrorKind::TimedOut));
    assert!(half_open(), "b's SYN reached s, s's answer did not reach b");
    b.heal();
    assert_eq!(connect(&b), Ok(()));

    s.drop_all();
    assert_eq!(connect(&b), Err(std::io::ErrorKind::TimedOut));
    assert_eq!(connect(&s), Ok(()), "s still reaches itself");
    s.heal();
    b.cut();
    b.drop_all();
    b.heal();
    assert_eq!(connect(&b), Ok(()), "one heal ends both kinds of partition");
    drop(listener);
}

/// The scenarios on every network store built in, each on a network and server of its own.
macro_rules! on_store {
    ($feature:literal, $module:ident, $server:ident, $flap_ttl:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;
            use crate::support::$server as server;

            fn world(clients: &[&str]) -> World {
                World::new(clients, |host| -> Box<dyn StoreServer + Send + Sync> {
                    Box::new(server::start_in(host))
                })
            }

            #[test]
            fn holder_cut_off_past_the_ttl() {
                super::holder_cut_off_past_the_ttl(&world(&["a", "b"]), CUT_OFF_TTL);
            }

            #[test]
            fn packets_dropped_mid_acquire_and_release() {
                super::packets_dropped_mid_acquire_and_release(&world(&["a", "b"]), "2s");
            }

            #[test]
            fn a_flapping_link_never_makes_two_holders() {
                super::a_flapping_link_never_makes_two_holders(
                    &world(&["a", "b", "c", "d"]),
                    $flap_ttl,
                );
            }
        }
    };
}

on_store!("postgres", postgres, postgres_server, "1s");
on_store!("mysql", mysql, mariadb_server, "1s");
on_store!("mongodb", mongodb, mongodb_server, "1s");
on_store!("redis", redis, redis_server, "1s");
on_store!("etcd", etcd, etcd_server, "2s");
