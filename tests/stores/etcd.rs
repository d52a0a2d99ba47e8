#![cfg(feature = "etcd")]

use std::time::{Duration, Instant, SystemTime};

use singleton_process::conformance::Suite;
use singleton_process::{
    Acquire, Error, FencingToken, Finish, Hold, Holder, LastRun, Outcome, Released,
};

use super::kv;
use crate::support::etcd_server;
use crate::support::proxy::Proxy;
use crate::support::{Test, history, servers, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    conforms(&etcd_server::shared().url).await;
}

/// Runs the whole conformance suite on the store at `url`, with etcd's shortest lease.
pub(super) async fn conforms(url: &str) {
    let store = singleton_process::connect(url).await.expect("connect");
    Suite::new(store)
        .short_ttl(Duration::from_secs(2))
        .run_all()
        .await;
}

#[tokio::test]
async fn etcd_store_tells_waiters() {
    let store = singleton_process::connect(&etcd_server::shared().url)
        .await
        .expect("connect");
    let suite = Suite::new(store);
    suite.watchers_hear_releases().await;
    suite.watchers_hear_acquires().await;
}

#[test]
fn twelve_processes_five_rounds_on_etcd_never_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    history::race(&etcd_server::shared().url, dir.path(), 12, 5);
}

#[tokio::test]
async fn list_reads_only_this_prefix_and_parses_keys_strictly() {
    let url = &etcd_server::shared().url;
    kv::list_reads_keys_strictly(
        &kv::with_fresh_prefix(url, '/'),
        &kv::with_fresh_prefix(url, '/'),
    )
    .await;
}

#[tokio::test]
async fn a_ttl_below_two_seconds_is_a_clear_error() {
    let url = &etcd_server::shared().url;
    let store = singleton_process::connect(url).await.expect("connect");
    let name = unique("short");
    let err = store
        .acquire(
            &name,
            &Holder::current("t"),
            Some(Duration::from_millis(1500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
    assert!(
        err.to_string().contains("etcd leases last at least 2s"),
        "{err}"
    );
    // 2.1 s is rounded up to a 3 s etcd lease, and works.
    let Acquire::Acquired { lease, .. } = store
        .acquire(
            &name,
            &Holder::current("t"),
            Some(Duration::from_millis(2100)),
        )
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    store.release(&lease).await.expect("release");

    let done = Test::new()
        .store(url)
        .args(["run", "--ttl", "1s", "--name", &name, "--", "true"])
        .output();
    assert_eq!(done.code, 64, "{}", done.stderr);
    assert!(
        done.one_line().contains("etcd leases last at least 2s"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn renewing_an_expired_lease_is_lost() {
    let store = singleton_process::connect(&etcd_server::shared().url)
        .await
        .expect("connect");
    let name = unique("expired");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(2)))
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let err = store
        .renew(&lease, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
}

#[test]
fn an_unreachable_endpoint_is_one_line_within_the_connect_timeout() {
    let url = format!(
        "etcd://user:pw-123@127.0.0.1:{}?connect_timeout=2s",
        servers::free_port()
    );
    let started = Instant::now();
    let done = Test::new().store(&url).args(["exists", "x"]).output();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    done.assert_one_line_failure(69, "pw-123", &["etcd://user:***@127.0.0.1", "connect"]);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in [
        "etcd://",
        "etcd://h:1/path",
        "etcd://h:1?bogus=1",
        "etcd://h:1?connect_timeout=0s",
        "etcd://h:1?allow_unsafe_version=yes",
        "etcd://h:1?allow_unsafe_version",
    ] {
        let err = singleton_process::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
}

/// The version of the installed `etcd`, as `etcd --version` prints it.
fn installed_etcd_version() -> String {
    let out = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .expect("etcd --version (apt-get install etcd-server)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("etcd Version: "))
        .unwrap_or_else(|| panic!("no version in `etcd --version`: {text}"))
        .trim()
        .to_owned()
}

/// Debian's etcd 3.4.23 predates the fixes of etcd issue 15247 and PR 20590: the real binary
/// refuses it with one line and exit 69, and works with the explicit override.
#[test]
fn a_server_with_known_lease_bugs_is_refused_unless_allowed() {
    let address = &etcd_server::shared().address;
    let version = installed_etcd_version();
    let name = unique("old");
    let done = Test::new()
        .store(&format!("etcd://{address}"))
        .args(["status", &name])
        .output();
    assert_eq!(done.code, 69, "{}", done.stderr);
    let line = done.one_line();
    for part in [
        &format!(
            "etcd://{address}: connect failed: etcd {version} at {address} has known lease bugs"
        ),
        "etcd issue 15247",
        "etcd PR 20590",
        "3.4.38+, 3.5.23+ or 3.6.5+",
        "?allow_unsafe_version=true",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }

    Test::new()
        .store(&format!("etcd://{address}?allow_unsafe_version=true"))
        .args(["status", &name])
        .status(0);
}

/// With several endpoints each is asked on its own client (the shared one would ask whichever
/// member its balancer picks), and an old member is refused there too.
#[tokio::test]
async fn every_member_named_in_the_url_is_checked() {
    let address = &etcd_server::shared().address;
    let url = format!("etcd://{address},{address}");
    let err = singleton_process::connect(&url).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            Error::Store {
                operation: "connect",
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains(&format!("at {address} has known lease bugs")),
        "{message}"
    );
    let store = singleton_process::connect(&format!("{url}?allow_unsafe_version=true"))
        .await
        .expect("the override connects");
    assert_eq!(store.inspect(&unique("any")).await.expect("inspect"), None);
}

#[tokio::test]
async fn an_abandoned_request_does_not_hang_the_next() {
    let server = etcd_server::shared();
    let proxy = Proxy::start(server.server.port);
    let url = proxy.route(&server.url, server.server.port);
    super::frozen::abandoned_requests_do_not_hang_the_next(&url, &server.url, &proxy).await;
}

/// With authentication on: the right password works, a wrong one and a user without any role
/// are [`Error::Refused`].
#[tokio::test]
async fn refused_logins_and_access_are_refused() {
    use etcd_server::{NOBODY, Options, ROOT_PASSWORD, USER_PASSWORD};

    let server = etcd_server::own_with(Options {
        login: true,
        ..Options::default()
    });
    let url = |user: &str, password: &str| {
        format!(
            "etcd://{user}:{password}@{}?allow_unsafe_version=true",
            server.address
        )
    };
    let store = singleton_process::connect(&url("root", ROOT_PASSWORD))
        .await
        .expect("the right password works");
    let name = unique("auth");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(5)))
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    store.release(&lease).await.expect("release");
    for (user, password) in [("root", "wrong-pw"), (NOBODY, USER_PASSWORD)] {
        let err = singleton_process::connect(&url(user, password))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    operation: "connect",
                    ..
                }
            ),
            "{user}: {err:?}"
        );
    }
}

/// A raw client of the shared server, to write keys as another version of the store did.
async fn raw_client() -> etcd_client::Client {
    etcd_client::Client::connect([etcd_server::shared().address.as_str()], None)
        .await
        .expect("connect a raw etcd client")
}

/// A length-prefixed record, as the store writes its values.
fn record(fields: &[&str]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|field| format!("{}:{field}", field.len()).into_bytes())
        .collect()
}

/// The info record of the previous version (which this one still writes): holder id, pid,
/// host, label, created (Unix ms), granted TTL (s).
fn old_info(holder: &Holder, created: SystemTime, granted_secs: u64) -> Vec<u8> {
    let ms = created
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        .to_string();
    record(&[
        &holder.id,
        &holder.pid.to_string(),
        &holder.host,
        &holder.label,
        &ms,
        &granted_secs.to_string(),
    ])
}

/// A store of the previous version kept a lease key and an info key per name, no last run:
/// a live lease it wrote is seen, conflicts and finishes; a lease of it that expired reads
/// as an unknown run, which the next acquire keeps on record.
#[tokio::test]
async fn keys_of_the_previous_version_keep_working() {
    use etcd_client::{PutOptions, Txn, TxnOp};

    let url = kv::with_fresh_prefix(&etcd_server::shared().url, '/');
    let prefix = url.rsplit_once("prefix=").expect("a prefix").1.to_owned();
    let mut raw = raw_client().await;

    // A live lease, as the previous version's acquire wrote it.
    let (live, old) = (unique("old-live"), Holder::current("old version"));
    let created = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let granted = raw.lease_grant(30, None).await.expect("grant").id();
    let written = raw
        .txn(Txn::new().and_then([
            TxnOp::put(
                format!("{prefix}lease/{live}"),
                old.id.as_bytes(),
                Some(PutOptions::new().with_lease(granted)),
            ),
            TxnOp::put(
                format!("{prefix}info/{live}"),
                old_info(&old, created, 30),
                None,
            ),
        ]))
        .await
        .expect("write the old layout");
    let token = FencingToken(written.header().expect("a header").revision() as u64);

    let store = singleton_process::connect(&url).await.expect("connect");
    let lease = store
        .inspect(&live)
        .await
        .expect("inspect")
        .expect("the old lease is seen");
    assert_eq!(
        (lease.token, &lease.holder, lease.created),
        (token, &old, created)
    );
    assert_eq!(store.last_run(&live).await.expect("last run"), None);
    let listed = store.list().await.expect("list");
    let expires = listed
        .iter()
        .find(|listed| listed.name == live)
        .and_then(|listed| listed.expires)
        .expect("list asks etcd for the expiry of a lease that has no record of it");
    assert!(
        expires <= SystemTime::now() + Duration::from_secs(31),
        "{expires:?}"
    );
    assert!(matches!(
        store
            .acquire(&live, &Holder::current("new"), Some(Duration::from_secs(5)))
            .await
            .expect("acquire"),
        Acquire::Held(held) if held.token == token
    ));
    assert_eq!(
        store
            .finish(&lease, &Finish::release(Outcome::Exit(4)))
            .await
            .expect("finish"),
        Released::Released
    );
    let run = store
        .last_run(&live)
        .await
        .expect("last run")
        .expect("the finished run is on record");
    assert_eq!(
        (run.token, &run.holder, run.started, run.outcome),
        (token, &old, created, Outcome::Exit(4))
    );
    assert!(store.inspect(&live).await.expect("inspect").is_none());

    // An old lease that expired left its info key alone.
    let (dead, gone) = (unique("old-dead"), Holder::current("old, dead"));
    let written = raw
        .put(
            format!("{prefix}info/{dead}"),
            old_info(&gone, created, 2),
            None,
        )
        .await
        .expect("write the old layout");
    let token = FencingToken(written.header().expect("a header").revision() as u64);
    let unknown = |run: Option<LastRun>| {
        let run = run.expect("the expired run is on record");
        assert_eq!(
            (run.token, &run.holder, run.started, run.ended, run.outcome),
            (token, &gone, created, None, Outcome::Unknown)
        );
    };
    unknown(store.last_run(&dead).await.expect("last run"));
    let Acquire::Acquired { lease, took_over } = store
        .acquire(&dead, &Holder::current("new"), Some(Duration::from_secs(5)))
        .await
        .expect("acquire")
    else {
        panic!("{dead} should be free");
    };
    let previous = took_over.expect("the expired lease is reported");
    assert_eq!((previous.token, &previous.holder), (token, &gone));
    unknown(store.last_run(&dead).await.expect("last run"));
    let runs = store.last_runs().await.expect("last runs");
    assert_eq!(
        runs.iter().map(|run| run.name.as_str()).collect::<Vec<_>>(),
        [dead.as_str(), live.as_str()],
        "in name order"
    );
    store.release(&lease).await.expect("release");
}

/// A last-run record that does not parse is a clear store error, never a panic; the next
/// finish writes a good one.
#[tokio::test]
async fn an_unreadable_last_run_is_a_clear_error() {
    let url = kv::with_fresh_prefix(&etcd_server::shared().url, '/');
    let prefix = url.rsplit_once("prefix=").expect("a prefix").1.to_owned();
    let name = unique("bad-run");
    let holder = Holder::current("t");
    let mut raw = raw_client().await;
    let mut bad = record(&["7", &holder.id, "1", "h", "", "1700000000000", ""]);
    bad.extend(record(&["running"]));
    raw.put(format!("{prefix}last/{name}"), bad, None)
        .await
        .expect("write a bad record");

    let store = singleton_process::connect(&url).await.expect("connect");
    for err in [
        store.last_run(&name).await.unwrap_err(),
        store.last_runs().await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Store { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "{name:?}: its last-run record is unreadable: unknown outcome \"running\""
            )),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }
    let lease = super::must_acquire(&*store, &name).await;
    store
        .finish(&lease, &Finish::release(Outcome::Signal(15)))
        .await
        .expect("finish");
    let run = store
        .last_run(&name)
        .await
        .expect("last run")
        .expect("a run");
    assert_eq!((run.token, run.outcome), (lease.token, Outcome::Signal(15)));
}

/// When holder after holder dies, the last run on record is the latest of them, also while
/// the next holder runs.
#[tokio::test]
async fn the_latest_of_several_dead_runs_is_on_record() {
    let store = singleton_process::connect(&etcd_server::shared().url)
        .await
        .expect("connect");
    let name = unique("dying");
    let short = Some(Duration::from_secs(2));
    let mut dead = Vec::new();
    for holder in ["a", "b"] {
        match store
            .acquire(&name, &Holder::current(holder), short)
            .await
            .expect("acquire")
        {
            Acquire::Acquired { lease, .. } => dead.push(lease),
            Acquire::Held(other) => panic!("{name} should be free, but is {other}"),
        }
        tokio::time::sleep(Duration::from_millis(3100)).await;
    }
    let next = super::must_acquire(&*store, &name).await;
    let run = store
        .last_run(&name)
        .await
        .expect("last run")
        .expect("a run");
    assert_eq!(
        (run.token, &run.holder, run.outcome),
        (dead[1].token, &dead[1].holder, Outcome::Unknown)
    );
    store.release(&next).await.expect("release");
}

/// etcd has no clock to tell: a kept lease expires a whole number of seconds (what is left of
/// the hold, rounded up, and no less than etcd's shortest lease) after the finish, by the
/// finishing client's clock.
#[tokio::test]
async fn a_kept_lease_expires_whole_seconds_after_the_finish() {
    let store = singleton_process::connect(&etcd_server::shared().url)
        .await
        .expect("connect");
    for (remaining, secs) in [
        (Duration::from_millis(3500), 4),
        (Duration::from_millis(300), 2),
    ] {
        let name = unique("kept-secs");
        let lease = super::must_acquire(&*store, &name).await;
        let before = SystemTime::now();
        let hold = Hold {
            after_acquisition: remaining,
            remaining,
        };
        let Released::Kept {
            expires: Some(expires),
        } = store
            .finish(
                &lease,
                &Finish {
                    outcome: Outcome::Exit(0),
                    hold: Some(hold),
                },
            )
            .await
            .expect("finish")
        else {
            panic!("the lease must be kept");
        };
        let after = SystemTime::now();
        let secs = Duration::from_secs(secs);
        assert!(
            expires >= before + secs && expires <= after + secs,
            "{remaining:?} kept until {}, not {secs:?} after the finish",
            humantime::format_rfc3339_millis(expires)
        );
        let kept = store.inspect(&name).await.expect("inspect").expect("kept");
        assert_eq!((kept.token, &kept.holder), (lease.token, &lease.holder));
        let left = kept.expires.expect("an expiry");
        assert!(left <= after + secs + Duration::from_secs(1), "{kept}");
        assert!(
            matches!(
                store.renew(&lease, Duration::from_secs(60)).await,
                Err(Error::Lost { .. })
            ),
            "a kept lease is not renewed"
        );
    }
}

/// `list` reads each lease's expiry from the record that its holder writes at the acquisition,
/// at every renewal (in the background) and at a finish that keeps the lease, in the one read
/// of all keys; it asks etcd instead when the record belongs to another lease (another etcd
/// lease, or an earlier key of the name).
#[tokio::test]
async fn list_reads_the_expiries_that_holders_record() {
    use etcd_client::PutOptions;

    let url = kv::with_fresh_prefix(&etcd_server::shared().url, '/');
    let prefix = url.rsplit_once("prefix=").expect("a prefix").1.to_owned();
    let store = singleton_process::connect(&url).await.expect("connect");
    let listed = |name: String| {
        let store = store.clone();
        async move {
            let leases = store.list().await.expect("list");
            let lease = leases.into_iter().find(|lease| lease.name == name);
            lease
                .and_then(|lease| lease.expires)
                .expect("listed, with an expiry")
        }
    };
    let to_ms = |at: SystemTime| {
        at.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis()
    };
    let ttl = Duration::from_secs(30);

    let name = unique("recorded");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("t"), Some(ttl))
        .await
        .expect("acquire")
    else {
        panic!("{name} should be free");
    };
    let acquired = lease.expires.expect("an expiry");
    assert_eq!(to_ms(listed(name.clone()).await), to_ms(acquired));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = store.renew(&lease, ttl).await.expect("renew");
    let renewed = renewed.expires.expect("an expiry");
    assert!(renewed > acquired + Duration::from_secs(1));
    // The renewal writes its record in the background.
    let mut shown = listed(name.clone()).await;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    while to_ms(shown) != to_ms(renewed) && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
        shown = listed(name.clone()).await;
    }
    assert_eq!(
        to_ms(shown),
        to_ms(renewed),
        "list shows the renewal's expiry"
    );

    // Records that are not this lease's: on another etcd lease, then a later key on its own.
    let mut raw = raw_client().await;
    let key = format!("{prefix}expires/{name}");
    let far = SystemTime::now() + Duration::from_secs(3600);
    let far_record = record(&[&to_ms(far).to_string()]);
    let ours = raw
        .get(format!("{prefix}lease/{name}"), None)
        .await
        .expect("get")
        .kvs()[0]
        .lease();
    let other = raw.lease_grant(60, None).await.expect("grant").id();
    let before = SystemTime::now();
    // Overwritten on another etcd lease (the key's create revision stays the lease key's),
    // then deleted and written again on the lease key's etcd lease (a create revision of its
    // own).
    for (stale, delete_first) in [(other, false), (ours, true)] {
        if delete_first {
            raw.delete(key.clone(), None).await.expect("delete");
        }
        raw.put(
            key.clone(),
            far_record.clone(),
            Some(PutOptions::new().with_lease(stale)),
        )
        .await
        .expect("put");
        let expires = listed(name.clone()).await;
        assert!(
            expires <= SystemTime::now() + ttl && expires + Duration::from_secs(2) >= before + ttl,
            "a record on etcd lease {stale} that is not the lease's own was believed: {expires:?}"
        );
    }
    store.release(&lease).await.expect("release");
    assert!(
        raw.get(key.clone(), None)
            .await
            .expect("get")
            .kvs()
            .is_empty(),
        "a release deletes the record"
    );

    // A finish that keeps the lease records the kept lease's expiry.
    let lease = super::must_acquire(&*store, &name).await;
    let hold = Hold {
        after_acquisition: Duration::from_secs(5),
        remaining: Duration::from_secs(5),
    };
    let finish = Finish {
        outcome: Outcome::Exit(0),
        hold: Some(hold),
    };
    let Released::Kept {
        expires: Some(kept),
    } = store.finish(&lease, &finish).await.expect("finish")
    else {
        panic!("the lease must be kept");
    };
    assert_eq!(to_ms(listed(name.clone()).await), to_ms(kept));
    store.force_release(&name).await.expect("force-release");
    assert!(
        raw.get(key, None).await.expect("get").kvs().is_empty(),
        "a force-release deletes the record"
    );
}

/// A holder that finishes after its lease expired, before anybody took the name over, still
/// finishes its run: the run is on record with its outcome, the name is free (a hold keeps
/// nothing), and the next acquire has nothing to take over.
#[tokio::test]
async fn a_run_finished_after_its_lease_expired_is_on_record() {
    let store = singleton_process::connect(&etcd_server::shared().url)
        .await
        .expect("connect");
    let hold = Hold {
        after_acquisition: Duration::from_secs(30),
        remaining: Duration::from_secs(30),
    };
    for (hold, outcome) in [(None, Outcome::Lost), (Some(hold), Outcome::Exit(0))] {
        let name = unique("late");
        let Acquire::Acquired { lease, .. } = store
            .acquire(&name, &Holder::current("t"), Some(Duration::from_secs(2)))
            .await
            .expect("acquire")
        else {
            panic!("{name} should be free");
        };
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert_eq!(
            store
                .finish(&lease, &Finish { outcome, hold })
                .await
                .expect("finish"),
            Released::Released
        );
        let run = store
            .last_run(&name)
            .await
            .expect("last run")
            .expect("a run");
        assert_eq!((run.token, run.outcome), (lease.token, outcome));
        assert!(run.ended.is_some());
        assert!(store.inspect(&name).await.expect("inspect").is_none());
        let Acquire::Acquired {
            lease: next,
            took_over,
        } = store
            .acquire(
                &name,
                &Holder::current("next"),
                Some(Duration::from_secs(5)),
            )
            .await
            .expect("acquire")
        else {
            panic!("{name} should be free");
        };
        assert_eq!(took_over, None, "the finished run is no lease to take over");
        let run = store
            .last_run(&name)
            .await
            .expect("last run")
            .expect("a run");
        assert_eq!((run.token, run.outcome), (lease.token, outcome));
        store.release(&next).await.expect("release");
    }
}
