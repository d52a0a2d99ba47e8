//! The last run on record and leases kept after their run (SPEC §10), through the real binary on
//! every store: `status` of a free name after a run, a failed run, a run killed by a signal and
//! a killed supervisor; `--hold-at-least`; `list --all`.

use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{SqliteStore, Test, unique, wait_until};

/// `status NAME --json`.
fn status(store: &str, name: &str) -> Value {
    let done = Test::new()
        .store(store)
        .args(["status", name, "--json"])
        .status(0);
    serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("status JSON: {e}: {done:?}"))
}

/// `run --name NAME ARGS… -- COMMAND…`, asserting its exit code.
fn run(store: &str, name: &str, options: &[&str], command: &[&str], code: i32) {
    Test::new()
        .store(store)
        .args(["run", "--name", name])
        .args(options)
        .arg_str("--")
        .args(command)
        .status(code);
}

fn time(value: &Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().unwrap_or_else(|| panic!("a time: {value}")))
        .unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// The last run in a `status` of a free name, checked against what every run has.
fn last_run_of_free(store: &str, name: &str) -> Value {
    let status = status(store, name);
    assert_eq!(status["held"], false, "{name:?} should be free: {status}");
    assert_eq!(status["lease"], Value::Null, "{status}");
    let run = status["last_run"].clone();
    assert_eq!(run["name"], name, "{status}");
    assert_eq!(
        run["holder"]["host"].as_str(),
        Some(host_name().as_str()),
        "{status}"
    );
    assert!(run["token"].as_u64().is_some(), "{status}");
    let started = time(&run["started"]);
    if !run["ended"].is_null() {
        assert!(time(&run["ended"]) >= started, "{status}");
    }
    run
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .expect("host name")
        .into_string()
        .expect("UTF-8 host name")
}

/// Runs that end every way, and what `status` then shows of the free name.
pub fn status_shows_every_ending(store: &str, ttl: &str) {
    let name = unique("last-run");
    assert_eq!(status(store, &name)["last_run"], Value::Null);

    run(store, &name, &[], &["true"], 0);
    let ok = last_run_of_free(store, &name);
    assert_eq!(
        (ok["outcome"].as_str(), ok["exit_code"].as_i64()),
        (Some("exit 0"), Some(0))
    );
    assert_eq!(ok["signal"], Value::Null);
    assert_eq!(ok["holder"]["label"], "true");
    assert!(!ok["ended"].is_null(), "a finished run has an end: {ok}");

    run(
        store,
        &name,
        &["--label", "failing"],
        &["sh", "-c", "exit 3"],
        3,
    );
    let failed = last_run_of_free(store, &name);
    assert_eq!(
        (failed["outcome"].as_str(), failed["exit_code"].as_i64()),
        (Some("exit 3"), Some(3)),
        "{failed}"
    );
    assert_eq!(failed["holder"]["label"], "failing");
    assert!(failed["token"].as_u64() > ok["token"].as_u64());

    run(store, &name, &[], &["sh", "-c", "kill -KILL $$"], 128 + 9);
    let killed = last_run_of_free(store, &name);
    assert_eq!(
        (killed["outcome"].as_str(), killed["signal"].as_i64()),
        (Some("signal 9"), Some(9)),
        "{killed}"
    );

    // A supervisor killed with SIGKILL says nothing: once its lease has expired, its run is
    // on record as unknown, with its own holder and token.
    let holder = Test::new()
        .store(store)
        .args(["run", "--name", &name, "--ttl", ttl, "--", "sleep", "60"])
        .spawn();
    let mut holder = holder;
    holder.wait_held(store, &name);
    let held = status(store, &name);
    holder.signal(Signal::SIGKILL);
    let ttl = humantime::parse_duration(ttl).expect("ttl");
    wait_until(
        ttl * 3 + Duration::from_secs(5),
        "the lease expires",
        || status(store, &name)["held"] == false,
    );
    let dead = last_run_of_free(store, &name);
    assert_eq!(dead["outcome"], "unknown", "{dead}");
    assert_eq!(dead["exit_code"], Value::Null);
    assert_eq!(dead["token"], held["lease"]["token"], "{dead}");
    assert_eq!(
        dead["holder"]["pid"].as_i64(),
        Some(i64::from(holder.pid()))
    );
    drop(holder);

    // The next run takes over and then is the last run.
    run(store, &name, &[], &["true"], 0);
    let next = last_run_of_free(store, &name);
    assert_eq!(next["outcome"], "exit 0");
    assert!(next["token"].as_u64() > dead["token"].as_u64());
}

/// `--hold-at-least`: the lease stays held after a short run, contenders meet the conflict
/// exit, `exists` and `status` see it, and once the hold is over the name is free again and
/// the run stays on record; `list --all` shows the free name with its last run.
pub fn a_run_holds_its_lease_at_least_as_asked(store: &str) {
    let name = unique("hold");
    let started = std::time::Instant::now();
    run(
        store,
        &name,
        &["--hold-at-least", "3s", "--label", "tick"],
        &["true"],
        0,
    );
    let kept = status(store, &name);
    assert_eq!(kept["held"], true, "held after its run: {kept}");
    assert_eq!(kept["held_after_run"], true, "{kept}");
    assert_eq!(kept["lease"]["token"], kept["last_run"]["token"], "{kept}");
    assert_eq!(kept["last_run"]["outcome"], "exit 0", "{kept}");
    assert!(
        time(&kept["lease"]["expires"]) > time(&kept["last_run"]["ended"]),
        "kept past the run's end: {kept}"
    );
    Test::new().store(store).args(["exists", &name]).status(0);
    run(store, &name, &["--conflict-exit", "0"], &["false"], 0);
    run(store, &name, &[], &["false"], 75);

    wait_until(Duration::from_secs(10), "the hold ends", || {
        status(store, &name)["held"] == false
    });
    // The acquisition came after `started`, so the hold cannot end sooner than 3 s after it;
    // and it ends by itself, at most a whole second late (etcd's leases count whole seconds).
    let held_for = started.elapsed();
    assert!(
        held_for >= Duration::from_secs(3) && held_for < Duration::from_secs(6),
        "kept for acquisition + 3 s, not {held_for:?}"
    );
    let after = last_run_of_free(store, &name);
    assert_eq!(
        after["outcome"], "exit 0",
        "the held run stays on record: {after}"
    );
    assert_eq!(after["token"], kept["lease"]["token"]);

    let all = Test::new()
        .store(store)
        .args(["list", "--all", "--json"])
        .status(0);
    let all: Value = serde_json::from_str(&all.stdout).expect("list JSON");
    let entry = all
        .as_array()
        .expect("an array")
        .iter()
        .find(|entry| entry["name"] == name)
        .unwrap_or_else(|| panic!("list --all shows the free name {name:?}: {all}"));
    assert_eq!(entry["held"], false);
    assert_eq!(entry["last_run"]["token"], after["token"]);
    let live = Test::new().store(store).args(["list", "--json"]).status(0);
    assert!(
        !live.stdout.contains(&name),
        "list shows live leases only: {}",
        live.stdout
    );

    // A run longer than the hold gives the lease back as it ends.
    run(
        store,
        &name,
        &["--hold-at-least", "100ms"],
        &["sleep", "0.3"],
        0,
    );
    assert_eq!(status(store, &name)["held"], false);
}

#[test]
fn sqlite_status_shows_every_ending() {
    let store = SqliteStore::new();
    status_shows_every_ending(&store.url, "1s");
}

#[test]
fn sqlite_runs_hold_their_lease_at_least_as_asked() {
    let store = SqliteStore::new();
    a_run_holds_its_lease_at_least_as_asked(&store.url);
}

macro_rules! on_store {
    ($feature:literal, $module:ident, $server:ident, $ttl:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            use crate::support::servers::StoreServer;
            use crate::support::$server as server;

            #[test]
            fn status_shows_every_ending() {
                super::status_shows_every_ending(&server::shared().store_url(), $ttl);
            }

            #[test]
            fn runs_hold_their_lease_at_least_as_asked() {
                super::a_run_holds_its_lease_at_least_as_asked(&server::shared().store_url());
            }
        }
    };
}

on_store!("postgres", postgres, postgres_server, "1s");
on_store!("mysql", mysql, mariadb_server, "1s");
on_store!("mongodb", mongodb, mongodb_server, "1s");
on_store!("redis", redis, redis_server, "1s");
on_store!("etcd", etcd, etcd_server, "2s");
