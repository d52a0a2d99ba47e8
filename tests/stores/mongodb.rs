//! The MongoDB store against SecantusDB, a MongoDB-wire-compatible server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, Collation, CollationStrength};
use singleton_process::conformance::Suite;
use singleton_process::store::mongodb::{MongoStore, OPERATION_TIMEOUT};
use singleton_process::{Acquire, Error, Holder, Released, Store};

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

/// Acquire (won or held), renew and release each send exactly one command, seen by the
/// driver's command monitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_renew_and_release_are_one_command_each() {
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
    assert_eq!(take(), ["update"], "a release");
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
