//! The edges of the promise (SPEC §13), through the real binary: processes that leave the
//! command's process group, processes that cannot be killed, a store that says the lease is
//! gone, an acquire answered too late, waits through outages and timeouts mid-request.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::servers::StoreServer;
use crate::support::{SqliteStore, Test, alive, held, held_status, unique, wait_until};

const SECOND: Duration = Duration::from_secs(1);

/// A process the command starts in the background: it ignores SIGTERM and notes every 20 ms that
/// it still runs, until SIGKILL. Killed on drop if it is still there.
struct Stubborn {
    script: PathBuf,
    pid_file: PathBuf,
    alive_file: PathBuf,
}

impl Stubborn {
    fn new(dir: &Path, tag: &str) -> Self {
        let stubborn = Stubborn {
            script: dir.join(format!("{tag}.sh")),
            pid_file: dir.join(format!("{tag}.pid")),
            alive_file: dir.join(format!("{tag}.alive")),
        };
        let (pid, alive) = (stubborn.pid_file.display(), stubborn.alive_file.display());
        std::fs::write(
            &stubborn.script,
            format!(
                "exec >/dev/null 2>&1 </dev/null\n\
                 trap '' TERM\n\
                 echo $$ > {pid}.tmp && mv {pid}.tmp {pid}\n\
                 while :; do date +%s%N > {alive}.tmp && mv {alive}.tmp {alive}; sleep 0.02; done\n"
            ),
        )
        .expect("write the script");
        stubborn
    }

    /// A shell command that starts it in a session of its own (it leaves the process group),
    /// waits until it runs, then does `then`.
    fn escaping(&self, then: &str) -> String {
        format!(
            "setsid sh {} & while [ ! -s {} ]; do sleep 0.01; done; {then}",
            self.script.display(),
            self.pid_file.display()
        )
    }

    /// The same, but staying in the command's process group.
    fn staying(&self, then: &str) -> String {
        format!(
            "sh {} & while [ ! -s {} ]; do sleep 0.01; done; {then}",
            self.script.display(),
            self.pid_file.display()
        )
    }

    fn pid(&self) -> i32 {
        wait_until(10 * SECOND, "the background process runs", || {
            std::fs::read_to_string(&self.pid_file).is_ok_and(|s| s.ends_with('\n'))
        });
        std::fs::read_to_string(&self.pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid")
    }

    /// When it last said it was alive (ns since the epoch).
    fn last_alive(&self) -> u128 {
        std::fs::read_to_string(&self.alive_file)
            .expect("alive file")
            .trim()
            .parse()
            .expect("ns")
    }
}

impl Drop for Stubborn {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn read_ns(file: &Path) -> u128 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .expect("ns")
}

/// `sh -c 'setsid … & exit 0'`: the run ends only once the escaped process is gone, and the
/// next holder starts after that.
#[test]
fn a_process_that_leaves_the_group_is_stopped_before_the_next_holder_starts() {
    let store = SqliteStore::new();
    let name = unique("setsid");
    let stubborn = Stubborn::new(store.dir.path(), "escaped");
    let holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--ttl", "3s", "--grace", "300ms"])
        .args(["--", "sh", "-c", &stubborn.escaping("exit 0")])
        .spawn();
    let next = store.path("next");
    let pid = stubborn.pid();
    let waiter = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--wait", "--timeout", "20s", "--"])
        .args(["sh", "-c", &format!("date +%s%N > {}", next.display())])
        .spawn();
    let holder = holder.finish(20 * SECOND);
    assert_eq!(holder.code, 0, "{}", holder.stderr);
    assert!(
        !alive(pid),
        "the escaped process {pid} still runs after its run ended"
    );
    let waiter = waiter.finish(20 * SECOND);
    assert_eq!(waiter.code, 0, "{}", waiter.stderr);
    let (last_alive, started) = (stubborn.last_alive(), read_ns(&next));
    assert!(
        started > last_alive,
        "the next holder started {} ms before the escaped process stopped",
        (last_alive - started) / 1_000_000
    );
}

/// A lost lease (here: not renewed, so it runs out) stops a process that left the group, before
/// the store's expiry.
#[test]
fn a_process_that_left_the_group_dies_before_a_lost_lease_expires() {
    let store = SqliteStore::new();
    let name = unique("escaped-lost");
    let stubborn = Stubborn::new(store.dir.path(), "escaped");
    let holder = Test::new()
        .store(&store.url)
        .args([
            "run",
            "--name",
            &name,
            "--ttl",
            "2s",
            "--no-renew",
            "--json",
        ])
        .args(["--", "sh", "-c", &stubborn.escaping("sleep 60")])
        .spawn();
    let pid = stubborn.pid();
    let (_, expires) = held_status(&store.url, &name);
    wait_until(10 * SECOND, "the escaped process is killed", || !alive(pid));
    let died = SystemTime::now();
    assert!(
        died < expires,
        "the escaped process died {:?} after the lease expired",
        died.duration_since(expires).unwrap_or_default()
    );
    let holder = holder.finish(20 * SECOND);
    assert_eq!(holder.code, 76, "{}", holder.stderr);
}

/// A supervisor killed with SIGKILL: its watchdog kills the command's whole cgroup, escaped
/// processes included, and removes the cgroup.
#[test]
fn the_watchdog_of_a_killed_supervisor_stops_processes_that_left_the_group() {
    let store = SqliteStore::new();
    let name = unique("escaped-kill9");
    let stubborn = Stubborn::new(store.dir.path(), "escaped");
    let mut holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--ttl", "5s", "--json"])
        .args(["--", "sh", "-c", &stubborn.escaping("sleep 60")])
        .spawn();
    let pid = stubborn.pid();
    holder.wait_held(&store.url, &name);
    let supervisor = holder.pid();
    let cgroup = cgroup_of(pid).expect("the escaped process is in the command's cgroup");
    assert!(
        cgroup.contains(&format!("/singleton-{supervisor}-")),
        "{cgroup}"
    );
    holder.signal(Signal::SIGKILL);
    wait_until(2 * SECOND, "the watchdog kills the escaped process", || {
        !alive(pid)
    });
    let dir = crate::support::cgroup2_dir(&cgroup);
    wait_until(5 * SECOND, "the watchdog removes the cgroup", || {
        !dir.exists()
    });
}

/// The cgroup v2 path (as in /proc/PID/cgroup) of a process.
fn cgroup_of(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("0::").map(str::to_owned))
}

/// Without the right to make a cgroup, `auto` falls back to the process group and says so with
/// -v; `--kill-mode cgroup` refuses to run.
#[test]
fn without_a_cgroup_the_process_group_is_used_and_said_so() {
    let store = SqliteStore::new();
    let dir = store.dir.path();
    // Nobody may write the store, and nothing else.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let as_nobody = |args: &[&str]| {
        Test::program("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args([crate::support::bin()])
            .args(["run", "--store", &store.url, "--name", &unique("nobody")])
            .args(args)
            .output()
    };
    let auto = as_nobody(&["-v", "--", "true"]);
    assert_eq!(auto.code, 0, "{}", auto.stderr);
    assert!(
        auto.stderr
            .contains("it is contained by its process group only"),
        "{}",
        auto.stderr
    );
    let json = as_nobody(&["--json", "--", "true"]);
    let notes: Vec<_> = json
        .events()
        .into_iter()
        .filter(|e| e["event"] == "containment")
        .collect();
    assert_eq!(notes.len(), 1, "{}", json.stderr);
    assert_eq!(notes[0]["kill_mode"], "group");
    let quiet = as_nobody(&["--", "true"]);
    assert_eq!(
        quiet.stderr, "",
        "the fallback is said only with -v or --json"
    );
    let strict = as_nobody(&["--kill-mode", "cgroup", "--", "true"]);
    assert_eq!(strict.code, 64, "{}", strict.stderr);
    assert!(
        strict.one_line().contains("--kill-mode cgroup"),
        "{}",
        strict.stderr
    );
}

/// A leftover process that SIGKILL cannot stop (frozen here; in life, stuck in the kernel) keeps
/// the lease from being given back: the run exits 76 and the lease expires by itself.
fn a_leftover_that_cannot_die_keeps_the_lease(kill_mode: &str) {
    let store = SqliteStore::new();
    let name = unique("stuck");
    let stubborn = Stubborn::new(store.dir.path(), "stuck");
    let go = store.path("go");
    let exit_on_go = format!(
        "while [ ! -f {} ]; do sleep 0.02; done; exit 0",
        go.display()
    );
    let job = match kill_mode {
        "group" => stubborn.staying(&exit_on_go),
        _ => stubborn.escaping(&exit_on_go),
    };
    let holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--ttl", "3s", "--grace", "300ms"])
        .args(["--kill-mode", kill_mode, "--json", "--", "sh", "-c", &job])
        .spawn();
    let pid = stubborn.pid();
    let frozen = crate::support::freezer::Frozen::new(pid);
    std::fs::write(&go, "").expect("go");
    let done = holder.finish(20 * SECOND);
    assert_eq!(done.code, 76, "{}", done.stderr);
    assert!(
        done.stderr.contains("the lease is not given back"),
        "{}",
        done.stderr
    );
    assert!(
        done.events().iter().all(|e| e["event"] != "released"),
        "{}",
        done.stderr
    );
    if !held(&store.url, &name) {
        let status = Test::new()
            .store(&store.url)
            .args(["status", &name, "--json"])
            .output();
        panic!(
            "the lease was given back (now {:?}): {}\n{}",
            SystemTime::now(),
            status.stdout,
            done.stderr
        );
    }
    drop(frozen);
    wait_until(10 * SECOND, "the thawed process dies", || !alive(pid));
    wait_until(10 * SECOND, "the lease expires", || {
        !held(&store.url, &name)
    });
}

#[test]
fn a_leftover_in_the_cgroup_that_cannot_die_keeps_the_lease() {
    a_leftover_that_cannot_die_keeps_the_lease("cgroup");
}

#[test]
fn a_leftover_in_the_group_that_cannot_die_keeps_the_lease() {
    a_leftover_that_cannot_die_keeps_the_lease("group");
}

/// When the store says the lease is gone (here: force-released), the command gets SIGKILL at
/// most a second after SIGTERM, not the whole grace period.
#[test]
fn a_lease_the_store_says_is_gone_stops_the_command_within_a_second() {
    let store = SqliteStore::new();
    let name = unique("gone");
    let stubborn = Stubborn::new(store.dir.path(), "job");
    let mut holder = Test::new()
        .store(&store.url)
        .args([
            "run", "--name", &name, "--ttl", "10s", "--grace", "4s", "--json",
        ])
        .args(["--", "sh"])
        .args([&stubborn.script])
        .spawn();
    let pid = stubborn.pid();
    holder.wait_held(&store.url, &name);
    force_release(&store.url, &name);
    wait_until(10 * SECOND, "the command is killed", || !alive(pid));
    let died = SystemTime::now();
    let done = holder.finish(10 * SECOND);
    assert_eq!(done.code, 76, "{}", done.stderr);
    let (lost, lost_at) = lost_event(&done);
    assert_eq!(lost["loss"], "gone", "{lost}");
    let took = died.duration_since(lost_at).unwrap_or_default();
    assert!(
        took < Duration::from_millis(1500),
        "the command died {took:?} after the loss, with a 4 s grace period"
    );
}

fn force_release(store: &str, name: &str) {
    Test::new()
        .store(store)
        .args(["release", name, "--force"])
        .status(0);
}

/// A run's `lost` event and when it was printed.
fn lost_event(done: &crate::support::Done) -> (serde_json::Value, SystemTime) {
    let lost = done
        .events()
        .into_iter()
        .find(|e| e["event"] == "lost")
        .unwrap_or_else(|| panic!("no lost event: {}", done.stderr));
    let at = humantime::parse_rfc3339(lost["time"].as_str().expect("time")).expect("time");
    (lost, at)
}

/// A release that finds the lease gone (force-released while the command ran) exits 76, not the
/// command's own code.
#[test]
fn a_run_whose_release_finds_the_lease_gone_exits_76() {
    let store = SqliteStore::new();
    let name = unique("gone-at-release");
    let go = store.path("go");
    let mut holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--ttl", "30s", "--"])
        .args([
            "sh",
            "-c",
            &format!("while [ ! -f {} ]; do sleep 0.02; done", go.display()),
        ])
        .spawn();
    holder.wait_held(&store.url, &name);
    force_release(&store.url, &name);
    std::fs::write(&go, "").expect("go");
    let done = holder.finish(10 * SECOND);
    assert_eq!(done.code, 76, "{}", done.stderr);
    assert!(done.stderr.contains("no longer ours"), "{}", done.stderr);
}

/// An acquire whose answer comes back after the moment its lease would count as lost (here the
/// supervisor was stopped while the request waited for a row lock) is not used: the command
/// never runs with it.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_answered_too_late_is_not_used() {
    use crate::support::postgres_server;
    let server = postgres_server::shared();
    let url = server.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let name = unique("late");
    // The row must exist for the lock to hold the acquire back.
    Test::new()
        .store(&url)
        .args(["run", "--name", &name, "--", "true"])
        .status(0);
    let (client, connection) = tokio_postgres::connect(&server.raw_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .execute(
            "SELECT 1 FROM singleton_locks WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .expect("lock the row");
    let ran = dir.path().join("ran");
    let holder = Test::new()
        .store(&url)
        .args(["run", "--name", &name, "--ttl", "3s", "--json", "--"])
        .args([
            "sh",
            "-c",
            &format!("echo $SINGLETON_TOKEN > {}", ran.display()),
        ])
        .spawn();
    // The acquire waits for the row lock. (Seen from a connection of its own: a transaction
    // sees pg_stat_activity as it was when it first looked.)
    let (watcher, connection) = tokio_postgres::connect(&server.raw_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let blocked = || async {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%singleton_locks%'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0)
            > 0
    };
    let started = Instant::now();
    while !blocked().await {
        if started.elapsed() > 10 * SECOND {
            let done = holder.finish(10 * SECOND);
            panic!("the acquire never waited for the row lock: {}", done.stderr);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.signal(Signal::SIGSTOP);
    // The server now grants the lease, and its 3 s run out while the supervisor is stopped.
    client.batch_execute("COMMIT").await.expect("commit");
    // The token the stopped supervisor's acquire was granted.
    async fn token(client: &tokio_postgres::Client, name: &str) -> i64 {
        client
            .query_one(
                "SELECT token FROM singleton_locks WHERE name = $1",
                &[&name],
            )
            .await
            .expect("the row")
            .get::<_, i64>(0)
    }
    let before = token(&watcher, &name).await;
    let started = Instant::now();
    let late = loop {
        let now = token(&watcher, &name).await;
        if now > before || started.elapsed() > SECOND {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    holder.signal(Signal::SIGCONT);
    let done = tokio::task::spawn_blocking(move || holder.finish(20 * SECOND))
        .await
        .expect("finish");
    eprintln!(
        "an acquire answered too late: exit {}; {}",
        done.code, done.stderr
    );
    // Either the late answer is refused (exit 69), or the acquire that timed out is sent again
    // and gets a lease of its own: the command never runs with the late one.
    match std::fs::read_to_string(&ran) {
        Ok(used) => {
            let used: i64 = used.trim().parse().expect("a token");
            assert!(
                used > late,
                "the command ran with token {used}, answered too late"
            );
            assert_eq!(done.code, 0, "{}", done.stderr);
        }
        Err(_) => assert_eq!(done.code, 69, "{}", done.stderr),
    }
}

/// A run of `name` whose command sleeps, once it holds the lease.
fn holding(url: &str, name: &str, ttl: &str) -> crate::support::Running {
    let mut holder = Test::new()
        .store(url)
        .args(["run", "--name", name, "--ttl", ttl, "--", "sleep", "60"])
        .spawn();
    holder.wait_held(url, name);
    holder
}

/// `run --wait --timeout TIMEOUT --json -- true` of `name`.
fn waiting(url: &str, name: &str, timeout: &str) -> Test {
    Test::new()
        .store(url)
        .args([
            "run",
            "--name",
            name,
            "--wait",
            "--timeout",
            timeout,
            "--json",
        ])
        .args(["--", "true"])
}

/// `--wait --timeout` runs out in the middle of a request to a server that stopped answering.
#[cfg(feature = "redis")]
#[test]
fn a_wait_times_out_in_the_middle_of_a_request() {
    let mut server = crate::support::redis_server::own();
    let url = server.store_url();
    let name = unique("midrequest");
    let holder = holding(&url, &name, "30s");
    let waiter = waiting(&url, &name, "3s").spawn();
    // Let it connect and find the name held, then freeze the server under it.
    std::thread::sleep(SECOND);
    let paused = server.server().pause();
    let started = Instant::now();
    let done = waiter.finish(20 * SECOND);
    let took = started.elapsed();
    drop(paused);
    assert_eq!(done.code, 124, "{}", done.stderr);
    assert!(
        took < 3 * SECOND,
        "gave up {took:?} after the pause, with a 3 s timeout"
    );
    drop(holder);
}

/// A `--wait` started while the server is down (longer than the request and connect timeouts)
/// waits, says so once, and runs its command once the server is back.
#[cfg(feature = "redis")]
#[test]
fn a_wait_started_during_an_outage_runs_once_the_server_is_back() {
    let mut server = crate::support::redis_server::own();
    let url = server.store_url();
    let name = unique("outage-wait");
    server.server().crash();
    let waiter = Test::new()
        .store(&url)
        .args(["run", "--name", &name, "--wait", "--timeout", "60s", "--"])
        .args(["sh", "-c", "echo ran"])
        .spawn();
    std::thread::sleep(7 * SECOND);
    server.server().restart();
    let done = waiter.finish(30 * SECOND);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(done.stdout.trim(), "ran");
    assert_eq!(
        done.stderr.matches("still waiting").count(),
        1,
        "the outage is reported once: {}",
        done.stderr
    );
}

/// The same for a server that stops answering (paused) while a waiter waits.
#[cfg(feature = "postgres")]
#[test]
fn a_wait_goes_on_through_a_paused_server() {
    let mut server = crate::support::postgres_server::own();
    let url = server.store_url();
    let name = unique("paused-wait");
    let holder = holding(&url, &name, "2s");
    let waiter = waiting(&url, &name, "60s").spawn();
    std::thread::sleep(SECOND);
    let paused = server.server().pause();
    // Longer than the waiter's request timeout and the holder's lease: the holder stops.
    std::thread::sleep(4 * SECOND);
    drop(paused);
    let holder = holder.finish(30 * SECOND);
    assert_eq!(holder.code, 76, "{}", holder.stderr);
    let done = waiter.finish(30 * SECOND);
    assert_eq!(done.code, 0, "{}", done.stderr);
}

/// The store's connection stops passing packets while a command runs (a proxy between them
/// freezes every connection it carries; new ones pass): renewals that hang are abandoned and
/// sent again on a fresh connection, and the command keeps its lease.
fn a_frozen_connection_does_not_cost_the_lease(url: &str, server_port: u16) {
    let proxy = crate::support::proxy::Proxy::start(server_port);
    let through_proxy = proxy.route(url, server_port);
    let name = unique("frozen");
    let mut holder = Test::new()
        .store(&through_proxy)
        .args([
            "run", "--name", &name, "--ttl", "6s", "--json", "--", "sleep", "9",
        ])
        .spawn();
    holder.wait_held(url, &name);
    std::thread::sleep(Duration::from_millis(300));
    assert!(proxy.freeze() > 0, "no connection to freeze");
    let frozen_at = SystemTime::now();
    let done = holder.finish(30 * SECOND);
    assert_eq!(done.code, 0, "{}", done.stderr);
    let renewed_after = done
        .events()
        .into_iter()
        .filter(|e| e["event"] == "renewed")
        .filter_map(|e| humantime::parse_rfc3339(e["time"].as_str()?).ok())
        .filter(|at| *at > frozen_at)
        .count();
    assert!(
        renewed_after >= 2,
        "renewed {renewed_after} times after the freeze: {}",
        done.stderr
    );
}

#[cfg(feature = "postgres")]
#[test]
fn a_frozen_postgres_connection_does_not_cost_the_lease() {
    let server = crate::support::postgres_server::shared();
    a_frozen_connection_does_not_cost_the_lease(&server.url(), server.server.port);
}

#[cfg(feature = "mysql")]
#[test]
fn a_frozen_mysql_connection_does_not_cost_the_lease() {
    let server = crate::support::mariadb_server::shared();
    a_frozen_connection_does_not_cost_the_lease(&server.url(), server.server.port);
}

#[cfg(feature = "redis")]
#[test]
fn a_frozen_redis_connection_does_not_cost_the_lease() {
    let server = crate::support::redis_server::shared();
    a_frozen_connection_does_not_cost_the_lease(&server.url, server.server.port);
}

#[cfg(feature = "etcd")]
#[test]
fn a_frozen_etcd_connection_does_not_cost_the_lease() {
    let server = crate::support::etcd_server::shared();
    a_frozen_connection_does_not_cost_the_lease(&server.url, server.server.port);
}

#[cfg(feature = "mongodb")]
#[test]
fn a_frozen_mongodb_connection_does_not_cost_the_lease() {
    let server = crate::support::mongodb_server::shared();
    // Straight to the one server: the proxy does not rewrite what the server says of its hosts.
    a_frozen_connection_does_not_cost_the_lease(
        &server.url_with("directConnection=true"),
        server.server.port,
    );
}

/// The lease is lost while the command's leftovers are being waited for (the command itself has
/// exited): they get SIGKILL at most a second later too, not when the grace period ends.
#[test]
fn leftovers_of_a_lease_that_is_gone_are_killed_within_a_second() {
    let store = SqliteStore::new();
    let name = unique("gone-leftovers");
    let stubborn = Stubborn::new(store.dir.path(), "left");
    let go = store.path("go");
    let job = stubborn.staying(&format!(
        "while [ ! -f {} ]; do sleep 0.02; done; exit 0",
        go.display()
    ));
    let mut holder = Test::new()
        .store(&store.url)
        .args(["run", "--name", &name, "--ttl", "15s", "--grace", "5s"])
        .args(["--kill-mode", "group", "--json", "--", "sh", "-c", &job])
        .spawn();
    let pid = stubborn.pid();
    holder.wait_held(&store.url, &name);
    // The command exits (its leftover ignores SIGTERM and gets 5 s), then the lease is taken
    // away; the renewal at 5 s finds that out.
    std::thread::sleep(Duration::from_millis(3500));
    std::fs::write(&go, "").expect("go");
    std::thread::sleep(Duration::from_millis(500));
    force_release(&store.url, &name);
    wait_until(15 * SECOND, "the leftover is killed", || !alive(pid));
    let died = SystemTime::now();
    let done = holder.finish(10 * SECOND);
    assert_eq!(done.code, 76, "{}", done.stderr);
    let (_, lost_at) = lost_event(&done);
    let took = died.duration_since(lost_at).unwrap_or_default();
    assert!(
        took < Duration::from_millis(1500),
        "the leftover died {took:?} after the loss: {}",
        done.stderr
    );
}

/// As a container's first process (PID 1), orphans of the command come to the supervisor: it
/// reaps them, and their zombies do not count as processes still running.
#[test]
fn as_pid_1_the_orphans_of_the_command_are_reaped() {
    let store = SqliteStore::new();
    let name = unique("pid1");
    let done = Test::program("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .args([crate::support::bin()])
        .args(["run", "--store", &store.url, "--name", &name, "--ttl", "6s"])
        .args(["--", "sh", "-c", "sleep 0.3 & exit 0"])
        .output();
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(
        done.elapsed < 3 * SECOND,
        "took {:?}: {}",
        done.elapsed,
        done.stderr
    );
    assert!(!held(&store.url, &name), "the lease was not given back");
}
