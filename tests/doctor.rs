//! `singleton doctor` (SPEC §14) through the real binary: against deliberately unsafe servers
//! of each kind it reports `fail` or `warn` with the fix, against safe ones `ok`; exit 1 only
//! when a check fails, 69 when the store cannot be reached.

use serde_json::Value;

use crate::support::Test;

/// `doctor --json` on `store`: the exit code and the report.
fn doctor(store: &str) -> (i32, Value) {
    let done = Test::new().store(store).args(["doctor", "--json"]).output();
    let report = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("doctor --json printed no report ({e}): {done:?}"));
    (done.code, report)
}

/// The check called `name` in `report`.
fn check<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {report}"))
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

/// Asserts that check `name` has `status`, that its `found` says each of `found`, and that it
/// has a fix exactly when it is not ok; returns it.
fn assert_check<'r>(report: &'r Value, name: &str, status: &str, found: &[&str]) -> &'r Value {
    let check = check(report, name);
    assert_eq!(check["status"], status, "{name}: {check}");
    let text = check["found"].as_str().unwrap_or_default();
    for part in found {
        assert!(text.contains(part), "{name}: {part:?} not in {check}");
    }
    assert!(
        !check["why"].as_str().unwrap_or_default().is_empty(),
        "{check}"
    );
    if status == "ok" {
        assert!(check["fix"].is_null(), "an ok check has no fix: {check}");
    } else {
        assert!(
            !check["fix"].as_str().unwrap_or_default().is_empty(),
            "a {status} check says what to do: {check}"
        );
    }
    check
}

/// Asserts that every check of `report` is ok, the report too, and doctor exited 0; all but
/// the round trip, which depends on how busy this machine is (see [`assert_shared_checks`]).
fn assert_all_ok(code: i32, report: &Value) {
    for check in report["checks"].as_array().expect("checks") {
        if check["name"] != "round-trip" {
            assert_eq!(check["status"], "ok", "{check}");
        }
    }
    let round_trip = &check(report, "round-trip")["status"];
    assert_eq!(report["status"], *round_trip, "{report}");
    assert_eq!(code, if round_trip == "fail" { 1 } else { 0 }, "{report}");
}

/// The checks every store shares come last. The round trip's status depends on how busy this
/// machine is (a read slower than 333 ms warns), so only what it measured is checked.
fn assert_shared_checks(report: &Value) {
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names[names.len() - 2..],
        ["clock-offset", "round-trip"],
        "{report}"
    );
    let round_trip = check(report, "round-trip");
    let found = round_trip["found"].as_str().unwrap_or_default();
    assert!(
        found.contains("median") && found.contains("or more have room"),
        "{round_trip}"
    );
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use crate::support::SqliteStore;
    use crate::support::fuse::FuseMount;

    /// A file on a local disk: every check ok, exit 0; the human output is one line per check
    /// and a summary.
    #[test]
    fn a_local_file_is_ok() {
        let store = SqliteStore::new();
        let (code, report) = doctor(&store.url);
        assert_all_ok(code, &report);
        assert_check(&report, "file-system", "ok", &["local file system"]);
        assert_check(&report, "journal_mode", "ok", &["wal"]);
        assert_check(&report, "clock-offset", "ok", &["not applicable"]);
        assert_shared_checks(&report);

        let done = Test::new().store(&store.url).arg_str("doctor").output();
        let lines: Vec<&str> = done.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            report["checks"].as_array().unwrap().len() + 1,
            "{}",
            done.stdout
        );
        for line in &lines[..lines.len() - 1] {
            if !line.contains(" round-trip: ") {
                assert!(line.starts_with("ok   "), "{line}");
            }
            assert!(line.contains(" — "), "{line}");
        }
        if report["status"] == "ok" {
            assert_eq!(done.code, 0, "{done:?}");
            assert!(
                lines[lines.len() - 1].ends_with(": 0 fail, 0 warn, 6 ok"),
                "{}",
                done.stdout
            );
        }
    }

    /// A FUSE mount (bindfs may mirror a network directory) fails, and says how to move off it
    /// or accept it; accepted with ?allow_network_fs=true, it is a warning.
    #[test]
    fn a_fuse_mount_fails_and_an_accepted_one_warns() {
        let mount = FuseMount::new();
        let db = mount.point.path().join("locks.db");
        let (code, report) = doctor(&format!("sqlite://{}", db.display()));
        assert_eq!(code, 1, "{report}");
        assert_eq!(report["status"], "fail", "{report}");
        let fs = assert_check(
            &report,
            "file-system",
            "fail",
            &["FUSE (fuse", "singleton run refuses it"],
        );
        let fix = fs["fix"].as_str().unwrap();
        assert!(fix.contains("postgres://"), "{fs}");
        assert!(fix.contains("?allow_network_fs=true"), "{fs}");

        let (code, report) = doctor(&format!("sqlite://{}?allow_network_fs=true", db.display()));
        assert_eq!(code, 0, "{report}");
        assert_check(
            &report,
            "file-system",
            "warn",
            &["FUSE (fuse", "?allow_network_fs=true"],
        );

        // Human output: the failure on one line with its fix, exit 1.
        let done = Test::new()
            .store(&format!("sqlite://{}", db.display()))
            .arg_str("doctor")
            .output();
        assert_eq!(done.code, 1, "{done:?}");
        let line = done
            .stdout
            .lines()
            .find(|line| line.starts_with("fail file-system: "))
            .unwrap_or_else(|| panic!("no failed file-system line: {}", done.stdout));
        assert!(line.contains("; fix: "), "{line}");
    }

    /// A file in memory (tmpfs) is gone after a reboot, and its fencing counters with it.
    #[test]
    fn a_file_on_tmpfs_warns() {
        let dir = tempfile::tempdir_in("/dev/shm").expect("a temp dir in /dev/shm (tmpfs)");
        let (code, report) = doctor(&format!("sqlite://{}/locks.db", dir.path().display()));
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["status"], "warn", "{report}");
        assert_check(&report, "file-system", "warn", &["tmpfs"]);
    }

    /// A directory anybody may write to, without the sticky bit: anybody may replace the
    /// database. A file in a home directory used as root: other users' jobs use their own.
    #[test]
    fn a_world_writable_directory_and_a_home_file_as_root_warn() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let url = format!("sqlite://{}/locks.db", home.path().display());
        let done = Test::new()
            .store(&url)
            .env("HOME", home.path())
            .args(["doctor", "--json"])
            .output();
        let report: Value = serde_json::from_str(&done.stdout).expect("a report");
        assert_eq!(done.code, 0, "{report}");
        assert_check(&report, "directory", "warn", &["mode 0777"]);
        let root = std::fs::metadata("/proc/self")
            .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
            .unwrap_or(false);
        if root {
            assert_check(&report, "shared-by", "warn", &["home directory", "as root"]);
        } else {
            assert_check(&report, "shared-by", "ok", &[]);
        }
    }

    /// Doctor needs a store: the in-process one is refused as usage (64), and a file that
    /// cannot be opened is a store error (69), each one line on stderr.
    #[test]
    fn no_store_no_report() {
        let done = Test::new().store("memory:").arg_str("doctor").output();
        assert_eq!(done.code, 64, "{done:?}");
        assert!(done.stdout.is_empty(), "{done:?}");
        done.one_line();
        let done = Test::new()
            .store("sqlite:///nonexistent-dir-for-doctor/locks.db")
            .arg_str("doctor")
            .output();
        assert_eq!(done.code, 69, "{done:?}");
        assert!(done.stdout.is_empty(), "{done:?}");
        done.one_line();
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::support::postgres_server;

    /// The shared test server runs without fsync and full-page writes: doctor fails it on
    /// fsync and warns on full_page_writes, each with the fix; the rest is as it should be.
    #[test]
    fn fsync_off_fails() {
        let (code, report) = doctor(&postgres_server::shared().url());
        assert_eq!(code, 1, "{report}");
        assert_eq!(report["status"], "fail", "{report}");
        let fsync = assert_check(&report, "fsync", "fail", &["off"]);
        assert!(
            fsync["fix"].as_str().unwrap().contains("fsync = on"),
            "{fsync}"
        );
        assert_check(&report, "full_page_writes", "warn", &["off"]);
        assert_check(&report, "synchronous_commit", "ok", &["on"]);
        assert_check(&report, "role", "ok", &["primary"]);
        assert_check(&report, "listen", "ok", &["hears NOTIFY"]);
        assert_check(&report, "table", "ok", &["\"C\""]);
        assert_check(&report, "clock-offset", "ok", &["the store's clock is"]);
        assert_shared_checks(&report);
    }

    /// A server with fsync, full-page writes and synchronous commits on: every check ok.
    #[test]
    fn a_durable_server_is_ok() {
        let server = postgres_server::own_with(&["fsync=on", "full_page_writes=on"]);
        let (code, report) = doctor(&server.url());
        assert_all_ok(code, &report);
        assert_check(&report, "fsync", "ok", &["on"]);
        assert_check(&report, "replication", "ok", &["0 standby connections"]);
    }

    /// synchronous_commit off for the store's user loses acknowledged acquires in a crash.
    #[test]
    fn synchronous_commit_off_fails() {
        let server = postgres_server::own_with(&["synchronous_commit=off"]);
        let (code, report) = doctor(&server.url());
        assert_eq!(code, 1, "{report}");
        assert_check(&report, "synchronous_commit", "fail", &["off"]);
    }

    /// A lease table whose name column has a case-insensitive (nondeterministic) collation
    /// takes `Job` and `job` for one name: it fails, with the ALTER that fixes it.
    #[tokio::test]
    async fn a_case_insensitive_name_fails() {
        let server = postgres_server::shared();
        let table = crate::support::unique("ci").replace('-', "_");
        let (client, connection) =
            tokio_postgres::connect(&server.raw_url(), tokio_postgres::NoTls)
                .await
                .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE COLLATION IF NOT EXISTS doctor_ci
                     (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
                 CREATE TABLE \"{table}\" (
                     name text COLLATE doctor_ci PRIMARY KEY, token bigint NOT NULL,
                     holder_id text, host text NOT NULL, pid bigint NOT NULL,
                     label text NOT NULL, created timestamptz NOT NULL, expires_at timestamptz,
                     run_token bigint, run_holder_id text, run_host text, run_pid bigint,
                     run_label text, run_started timestamptz, run_ended timestamptz,
                     run_outcome text)"
            ))
            .await
            .expect("create the table");
        let url = format!("{}&table={table}", server.url());
        let done = Test::new().store(&url).args(["doctor", "--json"]).output();
        let report: Value = serde_json::from_str(&done.stdout)
            .unwrap_or_else(|e| panic!("a report ({e}): {done:?}"));
        let table_check = assert_check(&report, "table", "fail", &["doctor_ci"]);
        assert!(
            table_check["fix"]
                .as_str()
                .unwrap()
                .contains("COLLATE \"C\""),
            "{table_check}"
        );
        assert_eq!(done.code, 1, "{report}");
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use mysql_async::prelude::Queryable;

    use super::*;
    use crate::support::mariadb_server;

    /// The shared test server flushes its redo log once a second
    /// (innodb_flush_log_at_trx_commit=2): a warning with the fix, and exit 0.
    #[test]
    fn a_redo_log_flushed_each_second_warns() {
        let (code, report) = doctor(&mariadb_server::shared().url());
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["status"], "warn", "{report}");
        let redo = assert_check(&report, "innodb_flush_log_at_trx_commit", "warn", &["2"]);
        assert!(
            redo["fix"]
                .as_str()
                .unwrap()
                .contains("innodb_flush_log_at_trx_commit = 1"),
            "{redo}"
        );
        assert_check(&report, "sync_binlog", "ok", &["binary log off"]);
        assert_check(&report, "table", "ok", &["engine InnoDB", "varbinary(255)"]);
        assert_check(&report, "version", "ok", &["MariaDB"]);
        assert_check(&report, "clock-offset", "ok", &["the store's clock is"]);
        assert_shared_checks(&report);
    }

    /// A server that flushes every commit is ok throughout; once its redo log is flushed
    /// only once a second by the server itself (0) and it is made read-only, both fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_server_is_ok_until_it_is_not() {
        let server = mariadb_server::own_with(&["--innodb-flush-log-at-trx-commit=1"]);
        let url = server.url();
        let (code, report) = tokio::task::spawn_blocking(move || doctor(&url))
            .await
            .unwrap();
        assert_all_ok(code, &report);
        assert_check(&report, "read_only", "ok", &["read_only OFF"]);

        let mut conn = mysql_async::Conn::from_url(server.raw_url())
            .await
            .expect("connect");
        conn.query_drop("SET GLOBAL innodb_flush_log_at_trx_commit = 0, read_only = 1")
            .await
            .expect("SET GLOBAL");
        let url = server.url();
        let (code, report) = tokio::task::spawn_blocking(move || doctor(&url))
            .await
            .unwrap();
        assert_eq!(code, 1, "{report}");
        assert_check(&report, "innodb_flush_log_at_trx_commit", "fail", &["0"]);
        assert_check(&report, "read_only", "fail", &["read_only ON"]);
        conn.disconnect().await.ok();
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::support::redis_server;

    /// An evicting policy and no append-only file: both fail, with the CONFIG SET that fixes
    /// them.
    #[test]
    fn allkeys_lru_without_aof_fails() {
        let server =
            redis_server::own_with(&["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"]);
        let (code, report) = doctor(&server.url);
        assert_eq!(code, 1, "{report}");
        let eviction = assert_check(&report, "maxmemory-policy", "fail", &["allkeys-lru"]);
        assert!(
            eviction["fix"]
                .as_str()
                .unwrap()
                .contains("maxmemory-policy noeviction"),
            "{eviction}"
        );
        let aof = assert_check(&report, "appendonly", "fail", &["appendonly no"]);
        assert!(
            aof["fix"].as_str().unwrap().contains("appendonly yes"),
            "{aof}"
        );
        assert_check(&report, "replication", "ok", &["role master"]);
        assert_check(&report, "cluster", "ok", &["standalone"]);
        assert_shared_checks(&report);
    }

    /// noeviction and an append-only file synced at every write: every check ok. Asking for a
    /// replica that is not there (?min_replicas=1) fails.
    #[test]
    fn a_durable_server_is_ok_and_missing_replicas_fail() {
        let server = redis_server::own_with(&["--appendfsync", "always"]);
        let (code, report) = doctor(&server.url);
        assert_all_ok(code, &report);
        assert_check(&report, "maxmemory-policy", "ok", &["noeviction"]);
        assert_check(&report, "appendonly", "ok", &["appendfsync always"]);

        let (code, report) = doctor(&format!("{}?min_replicas=1", server.url));
        assert_eq!(code, 1, "{report}");
        assert_check(
            &report,
            "replication",
            "fail",
            &["0 connected replicas", "?min_replicas=1"],
        );
    }

    /// volatile-* evicts keys with a TTL, which every live lease is; appendfsync everysec
    /// loses the last second in a host crash.
    #[test]
    fn volatile_eviction_fails_and_everysec_warns() {
        let server = redis_server::own_with(&["--maxmemory-policy", "volatile-ttl"]);
        let (code, report) = doctor(&server.url);
        assert_eq!(code, 1, "{report}");
        assert_check(&report, "maxmemory-policy", "fail", &["volatile-ttl"]);
        assert_check(&report, "appendonly", "warn", &["appendfsync everysec"]);
    }

    /// A server that cannot be reached: exit 69, one line, no report.
    #[test]
    fn an_unreachable_server_is_a_store_error() {
        let port = crate::support::servers::free_port();
        let done = Test::new()
            .store(&format!("redis://127.0.0.1:{port}"))
            .arg_str("doctor")
            .output();
        assert_eq!(done.code, 69, "{done:?}");
        assert!(done.stdout.is_empty(), "{done:?}");
        done.one_line();
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use crate::support::etcd_server;

    /// Debian's etcd (3.4.23) predates the lease fixes: accepted by the test URL
    /// (?allow_unsafe_version=true), a warning; without it, a failure, as `run` refuses it.
    /// One member, healthy, and no login asked for.
    #[test]
    fn the_test_server_is_one_member_with_known_lease_bugs() {
        let server = etcd_server::shared();
        let (code, report) = doctor(&server.url);
        assert_eq!(code, 0, "{report}");
        assert_check(
            &report,
            "version",
            "warn",
            &["3.4.23", "?allow_unsafe_version=true"],
        );
        assert_check(
            &report,
            "members",
            "ok",
            &["1 member, tolerating 0 failures"],
        );
        assert_check(
            &report,
            "health",
            "ok",
            &["1 of 1 members answered", "one leader"],
        );
        assert_check(&report, "auth", "warn", &["disabled"]);
        assert_check(&report, "clock-offset", "ok", &["not applicable"]);
        assert_shared_checks(&report);

        let (code, report) = doctor(&format!("etcd://{}", server.address));
        assert_eq!(code, 1, "{report}");
        let version = assert_check(
            &report,
            "version",
            "fail",
            &["3.4.23", "singleton run refuses it"],
        );
        assert!(
            version["why"].as_str().unwrap().contains("15247"),
            "{version}"
        );
    }

    /// A cluster that asks clients to log in: auth is ok.
    #[test]
    fn a_cluster_with_logins_is_ok_on_auth() {
        let server = etcd_server::tls_with_login();
        let url = format!(
            "etcds://{}:{}@{}?allow_unsafe_version=true&cacert={}&prefix={}",
            etcd_server::USER,
            etcd_server::USER_PASSWORD,
            server.address,
            etcd_server::path(&crate::support::certs::shared().ca),
            etcd_server::USER_PREFIX,
        );
        let (_, report) = doctor(&url);
        assert_check(&report, "auth", "ok", &["enabled", "this URL does"]);
    }
}

#[cfg(feature = "mongodb")]
mod mongodb {
    use super::*;
    use crate::support::mongodb_server;

    /// SecantusDB presents itself as a one-member replica set. The shared server keeps its
    /// data in memory: journaling fails (every counter restarts with the server); the store's
    /// own write concern (majority, journaled) is ok.
    #[test]
    fn an_in_memory_server_fails_on_journaling() {
        let (code, report) = doctor(&mongodb_server::shared().url);
        assert_eq!(code, 1, "{report}");
        assert_check(&report, "topology", "ok", &["1 member", "primary"]);
        assert_check(&report, "write-concern", "ok", &["w: majority", "j: true"]);
        assert_check(&report, "journaling", "fail", &["in memory"]);
        assert_check(&report, "clock-offset", "ok", &["the store's clock is"]);
        assert_shared_checks(&report);
    }

    /// A server with its data on disk passes; a URL that asks for unjournaled writes fails.
    #[test]
    fn a_persistent_server_is_ok_and_unjournaled_writes_fail() {
        let server = mongodb_server::own();
        let (code, report) = doctor(&server.url);
        assert_all_ok(code, &report);
        assert_check(&report, "journaling", "ok", &["persistent"]);

        let (code, report) = doctor(&server.url_with("journal=false"));
        assert_eq!(code, 1, "{report}");
        assert_check(&report, "write-concern", "fail", &["j: false"]);
    }
}
