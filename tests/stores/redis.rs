#![cfg(feature = "redis")]

use std::time::{Duration, Instant, SystemTime};

use singleton_process::conformance::Suite;
use singleton_process::{Acquire, Error, Finish, Hold, Holder, Outcome, Released, Store};

use super::kv;
use crate::support::proxy::Proxy;
use crate::support::redis_server::{self, PASSWORD};
use crate::support::{Test, history, servers, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    Suite::new(store).run_all().await;
}

#[tokio::test]
async fn redis_store_tells_waiters() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    let suite = Suite::new(store);
    suite.watchers_hear_releases().await;
    suite.watchers_hear_acquires().await;
}

#[test]
fn twelve_processes_five_rounds_on_redis_never_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    history::race(&redis_server::shared().url, dir.path(), 12, 5);
}

#[tokio::test]
async fn list_reads_only_this_prefix_and_parses_keys_strictly() {
    let url = &redis_server::shared().url;
    kv::list_reads_keys_strictly(
        &kv::with_fresh_prefix(url, ':'),
        &kv::with_fresh_prefix(url, ':'),
    )
    .await;
}

#[tokio::test]
async fn renewing_an_expired_lease_is_lost() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    let name = unique("expired");
    let Acquire::Acquired { lease, .. } = store
        .acquire(
            &name,
            &Holder::current("t"),
            Some(Duration::from_millis(100)),
        )
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    let err = store
        .renew(&lease, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
    assert!(store.inspect(&name).await.expect("inspect").is_none());
}

#[test]
fn the_right_password_works_and_a_wrong_one_is_one_masked_line() {
    let server = redis_server::with_password();
    Test::new()
        .store(&server.url)
        .args(["exists", &unique("pw")])
        .status(1);

    let wrong = server.url.replace(PASSWORD, "not-the-Password");
    let done = Test::new().store(&wrong).args(["exists", "x"]).output();
    done.assert_one_line_failure(
        69,
        "not-the-Password",
        &["redis://:***@127.0.0.1", "connect"],
    );

    let none = format!("redis://127.0.0.1:{}", server.server.port);
    let done = Test::new().store(&none).args(["exists", "x"]).output();
    done.assert_one_line_failure(69, PASSWORD, &["redis://127.0.0.1", "connect"]);
}

#[test]
fn an_unreachable_server_is_one_line_within_the_connect_timeout() {
    let url = format!(
        "redis://:pw-123@127.0.0.1:{}?connect_timeout=2s",
        servers::free_port()
    );
    let started = Instant::now();
    let done = Test::new().store(&url).args(["exists", "x"]).output();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    done.assert_one_line_failure(69, "pw-123", &["redis://:***@127.0.0.1", "connect"]);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in [
        "redis://h?connect_timeout=forever",
        "redis://h:notaport",
        // TLS files on a plaintext URL: never quietly plaintext.
        "redis://h?cacert=/etc/ssl/ca.pem",
        "rediss://h?cert=/c.pem",
    ] {
        let err = singleton_process::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
}

#[tokio::test]
async fn an_abandoned_request_does_not_hang_the_next() {
    let server = redis_server::shared();
    let proxy = Proxy::start(server.server.port);
    let url = proxy.route(&server.url, server.server.port);
    super::frozen::abandoned_requests_do_not_hang_the_next(&url, &server.url, &proxy).await;
}

/// A wrong password, a missing one and a user whom an ACL keeps from our keys are each
/// [`Error::Refused`], which a waiter does not wait through.
#[tokio::test]
async fn refused_logins_and_access_are_refused() {
    let server = redis_server::with_password();
    let port = server.server.port;
    for url in [
        server.url.replace(PASSWORD, "not-the-Password"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        let err = singleton_process::connect(&url).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    operation: "connect",
                    ..
                }
            ),
            "{url}: {err:?}"
        );
    }
    // A user who may log in and run every command, but only on other keys.
    let admin = redis::Client::open(server.url.as_str()).expect("client");
    let mut admin = admin
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let user = unique("outsider");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">outsider-pw")
        .arg("~other:*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let store = singleton_process::connect(&format!("redis://{user}:outsider-pw@127.0.0.1:{port}"))
        .await
        .expect("the user may log in");
    let err = store
        .acquire(
            &unique("acl"),
            &Holder::current("t"),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                operation: "acquire",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A store of its own under a fresh prefix, the prefix, and a plain connection to its server
/// to lay keys out by hand.
async fn store_with_own_keys(
    label: &str,
) -> (
    std::sync::Arc<dyn Store>,
    String,
    redis::aio::MultiplexedConnection,
) {
    let url = &redis_server::shared().url;
    let prefix = format!("{}:", unique(label));
    let store = singleton_process::connect(&format!("{url}?prefix={prefix}"))
        .await
        .expect("connect");
    let raw = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    (store, prefix, raw)
}

/// A lease record as every version writes it: token, holder id, pid, host, label, created
/// (ms), each `<length>:<bytes>`.
fn lease_record(token: u64, holder: &Holder, created_ms: u64) -> String {
    [
        token.to_string(),
        holder.id.clone(),
        holder.pid.to_string(),
        holder.host.clone(),
        holder.label.clone(),
        created_ms.to_string(),
    ]
    .iter()
    .map(|field| format!("{}:{field}", field.len()))
    .collect()
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Keys written by the version before last runs were kept (a fence hash with only `token`,
/// `last` and `expires`) keep working: a live lease stays held and can be finished by its
/// holder, and an expired one reads as an unknown run and is recorded when taken over.
#[tokio::test]
async fn keys_of_the_version_before_last_runs_keep_working() {
    let (store, prefix, mut raw) = store_with_own_keys("old").await;
    let now_ms = unix_ms(SystemTime::now());
    let (old, gone) = (Holder::current("old"), Holder::current("gone"));
    let live = lease_record(7, &old, now_ms);
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}lease:live"))
        .arg(&live)
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("HSET")
        .arg(format!("{prefix}fence:live"))
        .arg("token")
        .arg(7)
        .arg("last")
        .arg(&live)
        .arg("expires")
        .arg(now_ms + 60_000)
        .ignore()
        // Expired: its lease key is gone, the copy stays.
        .cmd("HSET")
        .arg(format!("{prefix}fence:expired"))
        .arg("token")
        .arg(4)
        .arg("last")
        .arg(lease_record(4, &gone, now_ms - 20_000))
        .arg("expires")
        .arg(now_ms - 5_000)
        .ignore()
        // Released: only the counter is left.
        .cmd("HSET")
        .arg(format!("{prefix}fence:released"))
        .arg("token")
        .arg(3)
        .ignore()
        .query_async(&mut raw)
        .await
        .expect("write the old layout");

    assert!(store.last_run("live").await.expect("last_run").is_none());
    assert!(
        store
            .last_run("released")
            .await
            .expect("last_run")
            .is_none()
    );
    let unknown = store
        .last_run("expired")
        .await
        .expect("last_run")
        .expect("an expired lease reads as an unknown run");
    assert_eq!(
        (unknown.token.0, &unknown.holder, unknown.outcome),
        (4, &gone, Outcome::Unknown)
    );
    assert_eq!(unknown.ended.map(unix_ms), Some(now_ms - 5_000));
    let runs: Vec<_> = store
        .last_runs()
        .await
        .expect("last_runs")
        .into_iter()
        .map(|run| run.name)
        .collect();
    assert_eq!(runs, ["expired"]);

    let lease = match store
        .acquire(
            "live",
            &Holder::current("new"),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("acquire")
    {
        Acquire::Held(lease) => lease,
        other => panic!("the old lease must still hold, got {other:?}"),
    };
    assert_eq!((lease.token.0, &lease.holder), (7, &old));
    assert_eq!(
        store
            .finish(&lease, &Finish::release(Outcome::Exit(0)))
            .await
            .expect("finish"),
        Released::Released
    );
    let run = store
        .last_run("live")
        .await
        .expect("last_run")
        .expect("run");
    assert_eq!((run.token.0, run.outcome), (7, Outcome::Exit(0)));
    let Acquire::Acquired { lease: next, .. } = store
        .acquire(
            "live",
            &Holder::current("new"),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("acquire")
    else {
        panic!("the finished name must be free");
    };
    assert_eq!(next.token.0, 8, "the counter goes on");
    store.release(&next).await.expect("release");

    let Acquire::Acquired { took_over, .. } = store
        .acquire(
            "expired",
            &Holder::current("new"),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("acquire")
    else {
        panic!("an expired lease must be taken over");
    };
    assert_eq!(took_over.map(|l| l.token.0), Some(4));
    assert_eq!(
        store.last_run("expired").await.expect("last_run"),
        Some(unknown),
        "the taken-over lease stays on record as unknown"
    );
}

/// A kept lease expires at its acquisition plus the hold by the server's clock (not at
/// `remaining` from now), and reports that expiry.
#[tokio::test]
async fn a_kept_lease_expires_at_acquisition_plus_the_hold() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    let name = unique("kept-at");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(60)))
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    let hold = Hold {
        after_acquisition: Duration::from_secs(30),
        remaining: Duration::from_secs(1),
    };
    let released = store
        .finish(
            &lease,
            &Finish {
                outcome: Outcome::Exit(0),
                hold: Some(hold),
            },
        )
        .await
        .expect("finish");
    let at = lease.created + Duration::from_secs(30);
    assert_eq!(released, Released::Kept { expires: Some(at) });
    let kept = store.inspect(&name).await.expect("inspect").expect("kept");
    let kept_until = kept.expires.expect("a kept lease expires");
    let off = kept_until
        .duration_since(at)
        .unwrap_or_else(|early| early.duration());
    assert!(
        off < Duration::from_millis(50),
        "kept until {kept_until:?}, expected {at:?}"
    );
    store.force_release(&name).await.expect("force_release");
    assert_eq!(
        store
            .last_run(&name)
            .await
            .expect("last_run")
            .map(|run| run.outcome),
        Some(Outcome::Exit(0)),
        "force-releasing a kept lease keeps its finished run"
    );
}

/// A force-release finds nothing to free on a lease that expired, and leaves it reading as an
/// unknown run that ended at its expiry.
#[tokio::test]
async fn force_releasing_an_expired_lease_keeps_its_unknown_run() {
    let store = singleton_process::connect(&redis_server::shared().url)
        .await
        .expect("connect");
    let name = unique("forced-expired");
    let Acquire::Acquired { lease, .. } = store
        .acquire(
            &name,
            &Holder::current("t"),
            Some(Duration::from_millis(100)),
        )
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store.force_release(&name).await.expect("force").is_none());
    let run = store.last_run(&name).await.expect("last_run").expect("run");
    assert_eq!((run.token, run.outcome), (lease.token, Outcome::Unknown));
    assert_eq!(run.ended, lease.expires);
}

/// A last run on record that this version cannot read is a clear error, not a panic or a
/// wrong answer.
#[tokio::test]
async fn a_last_run_that_does_not_parse_is_a_store_error() {
    let (store, prefix, mut raw) = store_with_own_keys("bad-run").await;
    let record = lease_record(2, &Holder::current("t"), unix_ms(SystemTime::now()));
    for (name, run, ended, outcome) in [
        ("outcome", record.as_str(), "", "running"),
        ("ended", record.as_str(), "soon", "exit 0"),
        ("record", "3:abc", "", "exit 0"),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}fence:{name}"))
            .arg("token")
            .arg(2)
            .arg("run")
            .arg(run)
            .arg("ended")
            .arg(ended)
            .arg("outcome")
            .arg(outcome)
            .query_async(&mut raw)
            .await
            .expect("HSET");
        let err = store.last_run(name).await.unwrap_err();
        assert!(matches!(err, Error::Store { .. }), "{name}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("the last run of {name:?}")) && !text.contains('\n'),
            "{text}"
        );
    }
    assert!(matches!(
        store.last_runs().await.unwrap_err(),
        Error::Store { .. }
    ));
}

/// A finish leaves the `last` copy equal to the run it records (the version before deleted
/// it): the name reads as that finished run, the next acquire takes it over from nobody and
/// counts on, and a name finished by the version before (no copy) reads and acquires the
/// same way.
#[tokio::test]
async fn a_finished_name_reads_the_same_with_its_copy_left_or_deleted() {
    let (store, prefix, mut raw) = store_with_own_keys("finished").await;
    let holder = Holder::current("t");
    let lease = match store
        .acquire("ours", &holder, Some(Duration::from_secs(60)))
        .await
        .expect("acquire")
    {
        Acquire::Acquired { lease, took_over } => {
            assert_eq!(took_over, None);
            lease
        }
        other => panic!("ours should be free, got {other:?}"),
    };
    assert_eq!(
        store
            .finish(&lease, &Finish::release(Outcome::Exit(3)))
            .await
            .expect("finish"),
        Released::Released
    );
    let (last, run, token): (Option<String>, Option<String>, String) = redis::cmd("HMGET")
        .arg(format!("{prefix}fence:ours"))
        .arg(&["last", "run", "token"])
        .query_async(&mut raw)
        .await
        .expect("HMGET");
    assert_eq!(last, run, "the copy is the run on record");
    assert_eq!(token, lease.token.0.to_string());
    assert_eq!(
        store
            .finish(&lease, &Finish::release(Outcome::Exit(3)))
            .await
            .expect("finish"),
        Released::NotHeld,
        "a finished lease is not finished twice"
    );

    // The version before: the copy deleted, the run on record.
    let now_ms = unix_ms(SystemTime::now());
    let before = lease_record(5, &holder, now_ms - 1_000);
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}fence:theirs"))
        .arg("token")
        .arg(5)
        .arg("run")
        .arg(&before)
        .arg("ended")
        .arg(now_ms)
        .arg("outcome")
        .arg("exit 3")
        .query_async(&mut raw)
        .await
        .expect("write the layout of the version before");

    for (name, token) in [("ours", lease.token.0), ("theirs", 5)] {
        let run = store.last_run(name).await.expect("last_run").expect("run");
        assert_eq!(
            (run.token.0, run.outcome),
            (token, Outcome::Exit(3)),
            "{name}"
        );
        assert_eq!(
            store.last_runs().await.expect("last_runs").len(),
            2,
            "{name}: no unknown runs"
        );
        match store
            .acquire(
                name,
                &Holder::current("next"),
                Some(Duration::from_secs(60)),
            )
            .await
            .expect("acquire")
        {
            Acquire::Acquired {
                lease: next,
                took_over,
            } => {
                assert_eq!(
                    took_over, None,
                    "{name}: a finished lease is not taken over"
                );
                assert_eq!(next.token.0, token + 1, "{name}: the counter goes on");
                store.release(&next).await.expect("release");
            }
            other => panic!("{name} should be free, got {other:?}"),
        }
        let run = store.last_run(name).await.expect("last_run").expect("run");
        assert_eq!((run.token.0, run.outcome), (token + 1, Outcome::Released));
    }
}
