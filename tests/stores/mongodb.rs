//! The MongoDB store against SecantusDB, a MongoDB-wire-compatible server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, Collation, CollationStrength};
use singleton_process::conformance::Suite;
use singleton_process::store::mongodb::{MongoStore, OPERATION_TIMEOUT};
use singleton_process::store::{Finish, Hold, Outcome};
use singleton_process::{Acquire, Error, FencingToken, Holder, Released, Store};

use crate::support::mongodb_server::{self, DATABASE, PASSWORD, USER};
use crate::support::proxy::Proxy;
use crate::support::{Test, history, servers, unique};

/// `singleton`'s exit codes for a usage error and a store error.
const USAGE: i32 = 64;
const STORE: i32 = 69;

async fn connect(url: &str) -> Arc<dyn Store> {
    singleton_process::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_store_conforms() {
    let store = connect(&mongodb_server::shared().url).await;
    Suite::new(store).run_all().await;
}

#[test]
fn twelve_processes_five_rounds_on_mongodb_never_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    history::race(&mongodb_server::shared().url, dir.path(), 12, 5);
}

/// Acquire (won or held), renew, release, a finish that keeps the lease, force-release and the
/// reads of the last run each send exactly one command, seen by the driver's command monitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_command() {
    let server = mongodb_server::shared();
    let commands = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut options = ClientOptions::parse(&server.url).await.expect("options");
    let seen = Arc::clone(&commands);
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            seen.lock().unwrap().push(started.command_name);
        }
    }));
    let store = MongoStore::with_options(options, DATABASE, "singletons", OPERATION_TIMEOUT)
        .await
        .expect("connect");
    let take = || std::mem::take(&mut *commands.lock().unwrap());
    take();

    let name = unique("round-trips");
    let ttl = Some(Duration::from_secs(30));
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("a"), ttl)
        .await
        .unwrap()
    else {
        panic!("{name} should be free");
    };
    assert_eq!(take(), ["findAndModify"], "a winning acquire");
    let Acquire::Held(seen) = store
        .acquire(&name, &Holder::current("b"), ttl)
        .await
        .unwrap()
    else {
        panic!("{name} should be held");
    };
    assert_eq!(seen.holder.id, lease.holder.id);
    assert_eq!(
        take(),
        ["findAndModify"],
        "a conflicting acquire, holder included"
    );
    store
        .renew(&lease, Duration::from_secs(30))
        .await
        .expect("renew");
    assert_eq!(take(), ["findAndModify"], "a renew");
    assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
    assert_eq!(take(), ["findAndModify"], "a release");
    assert!(store.last_run(&name).await.unwrap().is_some());
    assert_eq!(take(), ["aggregate"], "a read of the last run");
    assert!(!store.last_runs().await.unwrap().is_empty());
    assert_eq!(take(), ["aggregate"], "a read of every last run");

    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("c"), ttl)
        .await
        .unwrap()
    else {
        panic!("{name} should be free again");
    };
    take();
    let hold = Finish {
        outcome: Outcome::Exit(0),
        hold: Some(Hold {
            after_acquisition: Duration::from_secs(30),
            remaining: Duration::from_secs(30),
        }),
    };
    let kept = store.finish(&lease, &hold).await.unwrap();
    assert!(matches!(kept, Released::Kept { .. }), "{kept:?}");
    assert_eq!(take(), ["findAndModify"], "a finish that keeps the lease");
    assert!(store.force_release(&name).await.unwrap().is_some());
    assert_eq!(take(), ["findAndModify"], "a force-release");
}

/// Labels, hosts and names that look like field paths or operators are stored as data.
#[tokio::test]
async fn dollar_values_are_data() {
    let store = connect(&mongodb_server::shared().url).await;
    let name = format!("$name.{}", unique("dollar"));
    let mut holder = Holder::current("$label");
    holder.host = "$$ROOT".into();
    let Acquire::Acquired { lease, .. } = store.acquire(&name, &holder, None).await.unwrap() else {
        panic!("{name} should be free");
    };
    assert_eq!(lease.holder, holder);
    let held = store.inspect(&name).await.unwrap().expect("held");
    assert_eq!((held.name.as_str(), &held.holder), (name.as_str(), &holder));
    assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
    let run = store.last_run(&name).await.unwrap().expect("a last run");
    assert_eq!((run.name.as_str(), &run.holder), (name.as_str(), &holder));
}

/// A store on a collection of its own, and that collection through the driver, to write
/// documents by hand.
async fn own_collection(prefix: &str) -> (Arc<dyn Store>, mongodb::Collection<Document>) {
    let server = mongodb_server::shared();
    let collection = unique(prefix);
    let client = mongodb::Client::with_uri_str(&server.url)
        .await
        .expect("client");
    let documents = client.database(DATABASE).collection(&collection);
    let store = connect(&server.url_with(&format!("collection={collection}"))).await;
    (store, documents)
}

/// `at` plus `ms` milliseconds.
fn later(at: DateTime, ms: i64) -> DateTime {
    DateTime::from_millis(at.timestamp_millis() + ms)
}

/// A lease document as the previous version of the store wrote it: no last run on record.
fn old_document(
    name: &str,
    token: i64,
    holder: Option<&Holder>,
    created: DateTime,
    expires: Option<DateTime>,
) -> Document {
    let holder = holder.map_or(Bson::Null, |holder| {
        doc! {
            "id": &holder.id,
            "host": &holder.host,
            "pid": i64::from(holder.pid),
            "label": &holder.label,
        }
        .into()
    });
    doc! {
        "_id": name,
        "token": token,
        "holder": holder,
        "created": created,
        "expires": expires.map_or(Bson::Null, Bson::DateTime),
        "previous": Bson::Null,
    }
}

/// Documents written by the previous version (no `run` field) mean "no last run" and keep
/// working: a live lease is finished by its holder, an expired one reads as an unknown run and
/// is taken over, a free one is acquired again; the tokens go on from where they were.
#[tokio::test]
async fn documents_of_the_previous_version_keep_working() {
    let (store, documents) = own_collection("old-layout").await;
    let (live, expired, free) = ("live", "expired", "free");
    let old = Holder::current("the previous version");
    let now = DateTime::now();
    documents
        .insert_many([
            old_document(live, 4, Some(&old), now, Some(later(now, 60_000))),
            old_document(
                expired,
                2,
                Some(&old),
                later(now, -60_000),
                Some(later(now, -30_000)),
            ),
            old_document(free, 9, None, later(now, -60_000), None),
        ])
        .await
        .expect("insert documents of the previous version");
    let ttl = Some(Duration::from_secs(30));
    let new = Holder::current("the new version");

    // The live lease: still held, no last run until its holder finishes it.
    let lease = store
        .inspect(live)
        .await
        .unwrap()
        .expect("the old lease is live");
    assert_eq!((lease.token, &lease.holder), (FencingToken(4), &old));
    assert_eq!(store.last_run(live).await.unwrap(), None);
    let held = store.acquire(live, &new, ttl).await.unwrap();
    assert!(matches!(held, Acquire::Held(_)), "{held:?}");
    assert_eq!(
        store
            .finish(&lease, &Finish::release(Outcome::Exit(3)))
            .await
            .unwrap(),
        Released::Released
    );
    let run = store
        .last_run(live)
        .await
        .unwrap()
        .expect("the finished run");
    assert_eq!(
        (run.token, &run.holder, run.outcome, run.started),
        (FencingToken(4), &old, Outcome::Exit(3), lease.created)
    );
    let Acquire::Acquired { lease: next, .. } = store.acquire(live, &new, ttl).await.unwrap()
    else {
        panic!("{live} should be free");
    };
    assert_eq!(next.token, FencingToken(5));

    // The expired lease reads as an unknown run, ended at its expiry, and is taken over.
    let run = store
        .last_run(expired)
        .await
        .unwrap()
        .expect("an unknown run");
    assert_eq!(
        (run.token, &run.holder, run.outcome, run.ended),
        (
            FencingToken(2),
            &old,
            Outcome::Unknown,
            Some(later(now, -30_000).to_system_time())
        )
    );
    let Acquire::Acquired {
        lease: taken,
        took_over,
    } = store.acquire(expired, &new, ttl).await.unwrap()
    else {
        panic!("{expired} should be free");
    };
    assert_eq!(taken.token, FencingToken(3));
    assert_eq!(took_over.map(|lease| lease.token), Some(FencingToken(2)));
    assert_eq!(store.last_run(expired).await.unwrap(), Some(run));

    // The free name has no last run, and its counter goes on.
    assert_eq!(store.last_run(free).await.unwrap(), None);
    let Acquire::Acquired { lease: again, .. } = store.acquire(free, &new, ttl).await.unwrap()
    else {
        panic!("{free} should be free");
    };
    assert_eq!(again.token, FencingToken(10));
    assert_eq!(
        store
            .finish(&again, &Finish::release(Outcome::Signal(15)))
            .await
            .unwrap(),
        Released::Released
    );

    let runs: Vec<_> = store
        .last_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|run| (run.name, run.token, run.outcome))
        .collect();
    assert_eq!(
        runs,
        [
            (expired.to_owned(), FencingToken(2), Outcome::Unknown),
            (free.to_owned(), FencingToken(10), Outcome::Signal(15)),
            (live.to_owned(), FencingToken(4), Outcome::Exit(3)),
        ]
    );
}

/// A kept lease expires at its acquisition plus the hold, to the millisecond, as the reply
/// says; force-releasing it leaves its finished run on record as it was.
#[tokio::test]
async fn a_kept_lease_expires_at_its_acquisition_plus_the_hold() {
    let store = connect(&mongodb_server::shared().url).await;
    let name = unique("kept-expiry");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("a"), Some(Duration::from_secs(30)))
        .await
        .unwrap()
    else {
        panic!("{name} should be free");
    };
    let hold = Hold {
        after_acquisition: Duration::from_secs(90),
        remaining: Duration::from_secs(89),
    };
    let finish = Finish {
        outcome: Outcome::Exit(0),
        hold: Some(hold),
    };
    let expires = Some(lease.created + hold.after_acquisition);
    assert_eq!(
        store.finish(&lease, &finish).await.unwrap(),
        Released::Kept { expires }
    );
    let kept = store.inspect(&name).await.unwrap().expect("kept");
    assert_eq!((kept.token, kept.expires), (lease.token, expires));
    // Sent again (say, after a timeout), it keeps the lease the same.
    assert_eq!(
        store.finish(&lease, &finish).await.unwrap(),
        Released::Kept { expires }
    );
    let removed = store.force_release(&name).await.unwrap().expect("removed");
    assert_eq!(removed.token, lease.token);
    let run = store
        .last_run(&name)
        .await
        .unwrap()
        .expect("the finished run");
    assert_eq!((run.token, run.outcome), (lease.token, Outcome::Exit(0)));
    assert_eq!(
        store
            .finish(&lease, &Finish::release(Outcome::Exit(1)))
            .await
            .unwrap(),
        Released::NotHeld,
        "a finished run takes no second outcome"
    );
    assert_eq!(
        store.last_run(&name).await.unwrap().map(|run| run.outcome),
        Some(Outcome::Exit(0))
    );
}

/// A run on record that does not read (an outcome no version wrote, a field of the wrong type)
/// is a one-line store error naming the lock, and the name can still be acquired.
#[tokio::test]
async fn a_bad_run_on_record_is_a_store_error() {
    let (store, documents) = own_collection("bad-run").await;
    let holder = Holder::current("a");
    let now = DateTime::now();
    let mut odd_outcome = old_document("odd-outcome", 3, None, now, None);
    odd_outcome.insert(
        "run",
        doc! {
            "holder": { "id": &holder.id, "host": &holder.host, "pid": 1_i64, "label": "" },
            "token": 3_i64,
            "started": now,
            "ended": now,
            "outcome": "exploded",
            "lease": "released",
        },
    );
    let mut garbled = old_document("garbled", 3, None, now, None);
    garbled.insert("run", "not a run");
    documents
        .insert_many([odd_outcome, garbled])
        .await
        .expect("insert");
    for (name, says) in [("odd-outcome", "\"exploded\""), ("garbled", "malformed")] {
        let err = store.last_run(name).await.unwrap_err();
        assert!(matches!(err, Error::Store { .. }), "{err:?}");
        let line = err.to_string();
        assert!(line.contains(says) && line.contains(name), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let Acquire::Acquired { lease, .. } = store
            .acquire(name, &holder, Some(Duration::from_secs(30)))
            .await
            .unwrap()
        else {
            panic!("{name} should be free");
        };
        assert_eq!(lease.token, FencingToken(4));
        assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
        let run = store.last_run(name).await.unwrap().expect("a good run now");
        assert_eq!((run.token, run.outcome), (lease.token, Outcome::Released));
    }
}

/// Names compare byte for byte, so a collection whose collation would merge `Job` and `job`
/// is refused at connect.
#[tokio::test]
async fn a_case_insensitive_collection_is_refused() {
    let server = mongodb_server::shared();
    let collection = unique("ci");
    let client = mongodb::Client::with_uri_str(&server.url)
        .await
        .expect("client");
    client
        .database(DATABASE)
        .create_collection(&collection)
        .collation(
            Collation::builder()
                .locale("en")
                .strength(CollationStrength::Secondary)
                .build(),
        )
        .await
        .expect("create a case-insensitive collection");
    let url = server.url_with(&format!("collection={collection}"));
    let err = singleton_process::connect(&url).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                operation: "connect",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("collation"), "{err}");
}

/// A server that stops answering mid-hold (here: SIGSTOP) makes each call fail after
/// `timeoutMS` instead of hanging.
#[tokio::test]
async fn a_silent_server_times_out() {
    let server = mongodb_server::own();
    let store = connect(&server.url_with("timeoutMS=500")).await;
    let name = unique("silent");
    let Acquire::Acquired { lease, .. } = store
        .acquire(&name, &Holder::current("a"), Some(Duration::from_secs(30)))
        .await
        .unwrap()
    else {
        panic!("{name} should be free");
    };
    let paused = server.server.pause();
    let started = Instant::now();
    let outcome = store.renew(&lease, Duration::from_secs(30)).await;
    let elapsed = started.elapsed();
    drop(paused);
    match outcome {
        Err(Error::Timeout {
            operation: "renew",
            after,
            ..
        }) => {
            assert_eq!(after, Duration::from_millis(500))
        }
        other => panic!("expected a renew timeout, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    store
        .renew(&lease, Duration::from_secs(30))
        .await
        .expect("renew once it answers again");
    assert_eq!(store.release(&lease).await.unwrap(), Released::Released);
}

#[test]
fn right_credentials_work() {
    let server = mongodb_server::with_auth();
    let name = unique("auth");
    Test::new()
        .store(&server.url)
        .args(["run", "--name", &name, "--", "true"])
        .status(0);
    Test::new()
        .store(&server.url)
        .args(["exists", &name])
        .status(1);
}

#[test]
fn a_wrong_password_is_one_line_without_the_password() {
    let server = mongodb_server::with_auth();
    let wrong = "wrong-Xk4-password";
    let url = server.url.replace(PASSWORD, wrong);
    let done = Test::new().store(&url).args(["exists", "x"]).status(STORE);
    let line = done.one_line();
    let masked = format!("mongodb://{USER}:***@127.0.0.1:{}/", server.server.port);
    assert!(line.contains(&masked), "{line}");
    assert!(line.contains("authentication failed"), "{line}");
    assert!(!line.contains(wrong) && !line.contains(PASSWORD), "{line}");
}

#[test]
fn an_unreachable_host_fails_within_the_connect_timeout() {
    let port = servers::free_port();
    let url = format!("mongodb://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}");
    let started = Instant::now();
    let done = Test::new().store(&url).args(["exists", "x"]).status(STORE);
    let elapsed = started.elapsed();
    let line = done.one_line();
    assert!(
        elapsed < Duration::from_secs(9),
        "took {elapsed:?}; the connect timeout is 5 s"
    );
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("connect failed"), "{line}");
    assert!(!line.contains(PASSWORD), "{line}");
}

#[test]
fn bad_urls_are_one_line_usage_errors() {
    for (url, says) in [
        ("mongodb://u:pw-secret@127.0.0.1:1", "name the database"),
        ("mongodb://u:pw-secret@127.0.0.1:1/", "name the database"),
        ("mongodb://u:pw-secret@127.0.0.1:1/db?collection=a$b", "'$'"),
        ("mongodb://u:pw-secret@127.0.0.1:1/db?collection=", "empty"),
        (
            "mongodb://u:pw-secret@127.0.0.1:1/db?timeoutMS=soon",
            "timeoutMS",
        ),
        (
            "mongodb://u:pw-secret@127.0.0.1:1/db?bogusOption=1",
            "bogusoption",
        ),
        ("mongodb://u:pw-secret@127.0.0.1:notaport/db", "port"),
    ] {
        let done = Test::new().store(url).args(["exists", "x"]).status(USAGE);
        let line = done.one_line();
        assert!(line.contains(says), "{url}: {line}");
        assert!(line.contains("u:***@"), "{url}: {line}");
        assert!(!line.contains("pw-secret"), "{url}: {line}");
    }
}

#[tokio::test]
async fn an_abandoned_request_does_not_hang_the_next() {
    let server = mongodb_server::shared();
    let proxy = Proxy::start(server.server.port);
    // Straight to the one server, as the proxy does not rewrite what it says about its hosts.
    let url = proxy.route(
        &server.url_with("directConnection=true"),
        server.server.port,
    );
    super::frozen::abandoned_requests_do_not_hang_the_next(&url, &server.url, &proxy).await;
}

/// A wrong password is [`Error::Refused`], which a waiter does not wait through.
#[tokio::test]
async fn a_wrong_password_is_refused() {
    let server = mongodb_server::with_auth();
    let url = server.url.replace(PASSWORD, "wrong-Xk4-password");
    let err = singleton_process::connect(&url).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
}
