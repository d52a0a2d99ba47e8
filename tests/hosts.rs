//! Many hosts (SPEC §12): the hosts harness itself, and cron fleets (SPEC §10, issue 14): the
//! same cron entry on several hosts runs once per tick with `--hold-at-least`, once per start
//! that finds the job not running without it, and `status` tells every host who ran last.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::hosts::{self, Host, Network};
use crate::support::redis_server::{self, RedisServer};
use crate::support::{Done, Running, Test, unique};

const SECOND: Duration = Duration::from_secs(1);

/// Whether a client on `client` gets an answer from the Redis server within two seconds.
fn reaches(client: &Host, redis: &RedisServer) -> bool {
    let server = redis.url.trim_start_matches("redis://");
    let (address, port) = server.split_once(':').expect("redis://ADDRESS:PORT");
    let output = client
        .command("timeout")
        .args(["2", "redis-cli", "-h", address, "-p", port, "ping"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).trim() == "PONG"
}

/// The names of the links in the namespace the tests run in.
fn own_links() -> Vec<String> {
    let output = hosts::ip_command()
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link show");
    let mut links: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(str::to_owned)
        .collect();
    links.sort();
    links
}

#[test]
fn harness_hosts_reach_each_other_until_cut_and_leave_nothing_behind() {
    let links_before = own_links();
    let mut network = Network::new();
    let s = network.host("s");
    let b = network.host("b");
    let prefix = network.prefix().to_owned();
    assert_ne!(s.address(), b.address());
    let mut stray = {
        let redis = redis_server::start_in(&s);
        assert!(reaches(&b, &redis), "b reaches Redis on s");

        let hostname = b.command("hostname").output().expect("hostname");
        assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "b");

        b.cut();
        assert!(!reaches(&b, &redis), "b is cut off");
        b.heal();
        assert!(reaches(&b, &redis), "b reaches Redis again once healed");
        // Not even the store's server is on the tests' own namespace.
        assert_eq!(
            own_links(),
            links_before,
            "the tests' namespace was changed"
        );

        // Left running on purpose: dropping the network must stop it.
        b.command("sleep").arg("600").spawn().expect("spawn sleep")
    };
    assert!(
        hosts::namespaces().iter().any(|ns| ns.starts_with(&prefix)),
        "the network's namespaces exist while it does"
    );
    drop(network);
    let stray = stray.wait().expect("wait for the stray process");
    assert_eq!(stray.signal(), Some(9), "killed with the network: {stray}");
    let left: Vec<String> = hosts::namespaces()
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_eq!(own_links(), links_before, "links left behind");
}

/// Three cron hosts a, b, c and a store host s running Redis; the job records each run as a line
/// `HOST TOKEN` in a file that every host sees.
struct Fleet {
    redis: RedisServer,
    hosts: Vec<Host>,
    runs: tempfile::TempDir,
    // Last, so that it is dropped last: it kills whatever still runs on the hosts.
    _network: Network,
}

impl Fleet {
    fn new() -> Fleet {
        let mut network = Network::new();
        let s = network.host("s");
        let hosts = ["a", "b", "c"].map(|name| network.host(name)).into();
        let redis = redis_server::start_in(&s);
        Fleet {
            redis,
            hosts,
            runs: tempfile::tempdir().expect("temp dir"),
            _network: network,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name() == name)
            .expect("a host of the fleet")
    }

    fn file(&self) -> std::path::PathBuf {
        self.runs.path().join("runs")
    }

    /// `singleton run --name NAME ARGS -- JOB` on `host`, where the 0.1 s job records its run.
    fn tick(&self, host: &Host, name: &str, args: &[&str]) -> Test {
        const JOB: &str = r#"echo "$(hostname) $SINGLETON_TOKEN" >> "$1"; sleep 0.1"#;
        host.singleton()
            .args(["--store", &self.redis.url, "run", "--name", name])
            .args(args)
            .args(["--", "sh", "-c", JOB, "sh"])
            .arg_str(self.file().to_str().expect("a UTF-8 path"))
    }

    /// The cron tick: a, b and c start the job at 0.0, 0.3 and 0.6 s. A start never comes
    /// before the one before it has exited: on a loaded machine a start may slip a little, but
    /// the question stays the one a fleet asks: does a tick run again once the job has ended?
    /// Returns each start, and the time of the first.
    fn fire(&self, name: &str, args: &[&str]) -> (Vec<Start>, Instant) {
        let started = Instant::now();
        let mut starts = Vec::new();
        let mut previous: Option<(&Host, Running)> = None;
        for (i, host) in self.hosts.iter().enumerate() {
            if let Some((host, running)) = previous.take() {
                starts.push(Start::finish(host, running));
            }
            let at = started + Duration::from_millis(300) * i as u32;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            previous = Some((host, self.tick(host, name, args).spawn()));
        }
        let (host, running) = previous.expect("three starts");
        starts.push(Start::finish(host, running));
        (starts, started)
    }

    /// The runs the job recorded, as `(host, token)` in order.
    fn runs(&self) -> Vec<(String, u64)> {
        read_runs(&self.file())
    }

    /// `singleton status --json NAME` on `host`.
    fn status(&self, host: &Host, name: &str) -> serde_json::Value {
        let done = host
            .singleton()
            .args(["--store", &self.redis.url, "status", "--json", name])
            .status(0);
        serde_json::from_str(&done.stdout).expect("status JSON")
    }

    /// Whether `singleton exists NAME` on `host` says the name is held.
    fn held(&self, host: &Host, name: &str) -> bool {
        let done = host
            .singleton()
            .args(["--store", &self.redis.url, "exists", name])
            .output();
        match done.code {
            0 => true,
            1 => false,
            code => panic!("exists failed with {code}: {}", done.stderr),
        }
    }
}

/// One host's start of the job, finished.
struct Start {
    host: String,
    done: Done,
    /// When its process was seen to have exited (soon after it did).
    exited: Instant,
}

impl Start {
    fn finish(host: &Host, running: Running) -> Start {
        Start {
            host: host.name().to_owned(),
            done: running.finish(20 * SECOND),
            exited: Instant::now(),
        }
    }
}

/// What each start printed, for failure messages.
fn show(starts: &[Start]) -> String {
    starts
        .iter()
        .map(|start| {
            format!(
                "{} exited {}:\n{}",
                start.host, start.done.code, start.done.stderr
            )
        })
        .collect()
}

fn read_runs(file: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (host, token) = line.split_once(' ').expect("HOST TOKEN");
            (host.to_owned(), token.parse().expect("a fencing token"))
        })
        .collect()
}

fn has_event(done: &Done, kind: &str) -> bool {
    done.events().iter().any(|event| event["event"] == kind)
}

/// Asserts that `status` shows a last run by `host` that exited 0.
fn assert_last_run(status: &serde_json::Value, host: &str) {
    let last_run = &status["last_run"];
    assert_eq!(last_run["holder"]["host"], host, "{status}");
    assert_eq!(last_run["outcome"], "exit 0", "{status}");
}

#[test]
fn cron_fleet_with_hold_at_least_runs_a_tick_once_and_the_next_tick_again() {
    let fleet = Fleet::new();
    let name = unique("tick");
    let tick = ["--hold-at-least", "5s", "--conflict-exit", "0", "--json"];
    let (starts, started) = fleet.fire(&name, &tick);

    let runs = fleet.runs();
    assert_eq!(
        runs.len(),
        1,
        "one run per tick: {runs:?}\n{}",
        show(&starts)
    );
    let (runner, first_token) = runs[0].clone();
    let mut runner_exited = None;
    for start in &starts {
        let (host, done) = (&start.host, &start.done);
        assert_eq!(done.code, 0, "{host}: {}", done.stderr);
        if *host == runner {
            assert!(has_event(done, "locked"), "{host}: {}", done.stderr);
            runner_exited = Some(start.exited);
        } else {
            // The conflict exit the fleet asked for, and the conflict said so.
            assert!(has_event(done, "conflict"), "{host}: {}", done.stderr);
            assert!(!has_event(done, "locked"), "{host}: {}", done.stderr);
        }
    }
    let runner_exited = runner_exited.expect("the runner is one of the fleet");
    let others: Vec<&Host> = fleet
        .hosts
        .iter()
        .filter(|host| host.name() != runner)
        .collect();

    // The job is long over, yet the tick's lease stands: the default conflict exit says so.
    let late = fleet.tick(others[0], &name, &[]).output();
    assert_eq!(
        late.code,
        75,
        "a start {:?} after the first is still in the tick; stderr:\n{}",
        started.elapsed(),
        late.stderr
    );
    assert_eq!(fleet.runs().len(), 1);

    // The lease comes free 5 s after its acquisition, which came after the first start and
    // before the runner exited; polling adds its own delay, hence the slack above.
    while fleet.held(others[0], &name) {
        assert!(
            runner_exited.elapsed() < 8 * SECOND,
            "still held {:?} after the runner exited",
            runner_exited.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let freed = started.elapsed();
    assert!(
        freed >= 5 * SECOND - Duration::from_millis(100),
        "free after {freed:?}, before the 5 s hold"
    );

    // The next tick runs, from another host, with a higher token.
    let next = fleet.tick(others[0], &name, &tick).status(0);
    assert!(has_event(&next, "locked"), "{}", next.stderr);
    let runs = fleet.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].0, others[0].name());
    assert!(runs[1].1 > first_token, "tokens only grow: {runs:?}");

    // Any host sees who ran last; the lease is still held, for the rest of the new tick.
    let status = fleet.status(others[1], &name);
    assert_last_run(&status, others[0].name());
    assert_eq!(
        status["lease"]["holder"]["host"],
        others[0].name(),
        "{status}"
    );
}

#[test]
fn cron_fleet_without_hold_runs_each_start_that_finds_the_job_ended() {
    let fleet = Fleet::new();
    let name = unique("tick");
    let (starts, _) = fleet.fire(&name, &["--json"]);

    for Start { host, done, .. } in &starts {
        assert_eq!(done.code, 0, "{host}: {}", done.stderr);
        assert!(has_event(done, "locked"), "{host}: {}", done.stderr);
    }
    let runs = fleet.runs();
    let hosts: Vec<&str> = runs.iter().map(|(host, _)| host.as_str()).collect();
    assert_eq!(hosts, ["a", "b", "c"], "one at a time, not once per tick");
    assert!(
        runs.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "tokens only grow: {runs:?}"
    );

    let status = fleet.status(fleet.host("a"), &name);
    assert_last_run(&status, "c");
    assert!(status["lease"].is_null(), "released at exit: {status}");
}
