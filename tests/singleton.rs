//! The library API: events, renewal, loss, waiting and release, on the memory store.

use std::sync::Arc;
use std::time::Duration;

use singleton_process::{Error, Event, Holder, Lock, Options, Singleton, Store};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::support::unique;

async fn memory() -> Arc<dyn Store> {
    singleton_process::connect("memory:")
        .await
        .expect("memory store")
}

fn kinds(events: &mut broadcast::Receiver<Event>) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        assert!(!event.to_string().is_empty());
        kinds.push(event.kind());
    }
    kinds
}

fn locked(lock: Lock) -> singleton_process::LeaseGuard {
    match lock {
        Lock::Locked(guard) => guard,
        Lock::Conflict(lease) => panic!("expected to lock, but {lease}"),
    }
}

#[tokio::test]
async fn lock_conflict_and_release_emit_the_original_events() {
    let store = memory().await;
    let name = unique("events");
    let a = Singleton::new(&name, store.clone(), Options::default().label("job a")).unwrap();
    let b = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let (mut ea, mut eb) = (a.events(), b.events());

    let guard = locked(a.lock().await.unwrap());
    assert_eq!(kinds(&mut ea), ["locking", "locked"]);
    assert!(a.exists().await.unwrap());

    match b.lock().await.unwrap() {
        Lock::Conflict(lease) => {
            assert_eq!(lease.holder.label, "job a");
            assert_eq!(lease.token, guard.token());
        }
        Lock::Locked(_) => panic!("two holders"),
    }
    let conflict = {
        let mut last = None;
        while let Ok(event) = eb.try_recv() {
            last = Some(event);
        }
        last.expect("events")
    };
    assert_eq!(conflict.kind(), "conflict");
    assert!(conflict.to_string().contains("job a"), "{conflict}");

    assert!(guard.release().await.unwrap());
    assert_eq!(kinds(&mut ea), ["releasing", "released"]);
    assert!(!a.exists().await.unwrap());
}

#[tokio::test]
async fn singleton_release_gives_back_the_current_lease() {
    let store = memory().await;
    let s = Singleton::new(unique("release"), store, Options::default()).unwrap();
    assert!(!s.release().await.unwrap(), "nothing held yet");
    let guard = locked(s.lock().await.unwrap());
    assert!(s.release().await.unwrap());
    assert!(!s.exists().await.unwrap());
    assert!(!guard.release().await.unwrap(), "already released");
}

#[tokio::test]
async fn renewal_keeps_the_lease_past_its_length() {
    let store = memory().await;
    let name = unique("renew");
    let options = Options::default().lock_expire(Duration::from_secs(1));
    let a = Singleton::new(&name, store.clone(), options.clone()).unwrap();
    let mut events = a.events();
    let guard = locked(a.lock().await.unwrap());
    let first_token = guard.token();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!guard.is_lost());
    let b = Singleton::new(&name, store, options).unwrap();
    assert!(matches!(b.lock().await.unwrap(), Lock::Conflict(_)));
    assert!(kinds(&mut events).contains(&"renewed"));
    assert_eq!(guard.token(), first_token, "renewal keeps the token");
    guard.release().await.unwrap();
}

#[tokio::test]
async fn without_renewal_the_lease_is_lost_before_it_expires() {
    let store = memory().await;
    let s = Singleton::new(
        unique("norenew"),
        store,
        Options::default()
            .lock_expire(Duration::from_secs(1))
            .renew(false),
    )
    .unwrap();
    let mut events = s.events();
    let started = Instant::now();
    let guard = locked(s.lock().await.unwrap());
    let safe_until = guard.safe_until().expect("a deadline");
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost fires");
    let lost_after = started.elapsed();
    assert!(guard.is_lost());
    assert!(
        singleton_process::BootInstant::now() <= safe_until,
        "lost must fire before the safe deadline"
    );
    assert!(
        lost_after < Duration::from_secs(1),
        "lost after {lost_after:?}: too late"
    );
    assert!(kinds(&mut events).contains(&"lost"));
}

#[tokio::test]
async fn force_release_makes_the_holder_lose_at_its_next_renewal() {
    let store = memory().await;
    let name = unique("forced");
    let s = Singleton::new(
        &name,
        store.clone(),
        Options::default().lock_expire(Duration::from_secs(1)),
    )
    .unwrap();
    let guard = locked(s.lock().await.unwrap());
    let token = guard.lost_token();
    store.force_release(&name).await.unwrap().expect("was held");
    tokio::time::timeout(Duration::from_secs(2), token.cancelled())
        .await
        .expect("lost fires");
    assert!(guard.is_lost());
    assert!(
        !guard.release().await.unwrap(),
        "release reports the lease was not ours"
    );
}

#[tokio::test]
async fn lock_wait_waits_for_release_and_times_out() {
    let store = memory().await;
    let name = unique("wait");
    let a = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let b = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let mut eb = b.events();
    let guard = locked(a.lock().await.unwrap());

    let timed_out = b.lock_wait(Some(Duration::from_millis(300))).await.unwrap();
    assert!(matches!(timed_out, Lock::Conflict(_)));
    let seen = kinds(&mut eb);
    assert_eq!(seen.first(), Some(&"locking"));
    assert!(seen.contains(&"waiting"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"conflict"));

    let waiter = tokio::spawn(async move { b.lock_wait(None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = guard.token();
    guard.release().await.unwrap();
    let next = locked(
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    );
    assert!(next.token() > first);
    next.release().await.unwrap();
}

/// A waiter hears the release from the store instead of waiting for its next poll, which
/// here is at least 30 s away.
#[tokio::test]
async fn lock_wait_acquires_on_word_of_the_release_between_polls() {
    let store = memory().await;
    let name = unique("word");
    let a = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let slow_poll = Options::default().poll_interval(Duration::from_secs(60));
    let b = Singleton::new(&name, store.clone(), slow_poll).unwrap();
    let mut eb = b.events();
    let guard = locked(a.lock().await.unwrap());
    let waiter = tokio::spawn(async move { b.lock_wait(None).await });
    while kinds(&mut eb).iter().all(|kind| *kind != "waiting") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    guard.release().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter should acquire on word of the release, long before its next poll")
        .unwrap()
        .unwrap();
    locked(next).release().await.unwrap();
}

/// How many store requests a waiter on a name held throughout makes in `window`.
async fn requests_of_a_waiter(store: Arc<dyn Store>, window: Duration) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let name = unique("idle");
    let holder = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let guard = locked(holder.lock().await.unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let counted = Arc::new(singleton_process::store::Counted::new(
        store,
        Arc::clone(&requests),
    ));
    let waiter = Singleton::new(&name, counted, Options::default()).unwrap();
    let waiting = tokio::spawn(async move { waiter.lock_wait(None).await });
    tokio::time::sleep(window).await;
    waiting.abort();
    let made = requests.load(Ordering::Relaxed);
    guard.release().await.unwrap();
    made
}

/// Twenty waiters on one name, whose acquires take 2 ms to reach the store, each new holder
/// releasing after 100 ms and waiting again 50 ms later (so that the others wait at every
/// release): once they have seen each other, a release costs a few tries, not one per
/// waiter, since they hold back their tries at random and those told meanwhile that the name
/// was taken do not try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_to_many_waiters_costs_a_few_tries_not_one_each() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const WAITERS: u64 = 20;
    let store = memory().await;
    let name = unique("herd");
    let travelling = || Faulty {
        inner: Some(store.clone()),
        acquires_travel: Some(Duration::from_millis(2)),
        ..Faulty::default()
    };
    let requests = Arc::new(AtomicU64::new(0));
    let first = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let first = locked(first.lock().await.unwrap());
    let (handed, mut handoffs) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let counted = Arc::new(singleton_process::store::Counted::new(
            Arc::new(travelling()),
            Arc::clone(&requests),
        ));
        let waiter = Singleton::new(&name, counted, Options::default()).unwrap();
        let handed = handed.clone();
        waiters.spawn(async move {
            loop {
                let guard = locked(waiter.lock_wait(None).await.unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
                guard.release().await.unwrap();
                if handed.send(()).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.release().await.unwrap();
    // The first releases teach the waiters that they have rivals.
    for _ in 0..10 {
        handoffs.recv().await.unwrap();
    }
    let before = requests.load(Ordering::Relaxed);
    const MEASURED: u64 = 20;
    for _ in 0..MEASURED {
        handoffs.recv().await.unwrap();
    }
    let per_handoff = (requests.load(Ordering::Relaxed) - before) as f64 / MEASURED as f64;
    waiters.abort_all();
    // Each hand-off: the winner's try; the rejoining holder's try, listening and the try once
    // it listens; and the few tries that came before word of the acquire. Trying on every
    // release would be 20 more than the rejoining holder's.
    assert!(
        per_handoff < WAITERS as f64 / 2.0,
        "{per_handoff:.1} requests per hand-off among {WAITERS} waiters"
    );
}

/// A waiter that will hear of the release asks the store again only when the holder's lease
/// could have expired, or every 5 s for word that got lost: not every poll interval.
#[tokio::test]
async fn an_idle_waiter_that_listens_asks_only_every_few_seconds() {
    // A first try, listening set up, a try once listening (a release before it was unheard),
    // and none until 5 s after that.
    let made = requests_of_a_waiter(memory().await, Duration::from_secs(3)).await;
    assert!(
        (2..=4).contains(&made),
        "{made} requests in 3 s; polling every 100 ms would make 30"
    );
}

/// A waiter whose store cannot tell polls, less and less often, down to once a second.
#[tokio::test]
async fn an_idle_waiter_that_cannot_listen_backs_off_to_a_poll_a_second() {
    let deaf = Faulty {
        deaf: true,
        ..Faulty::new().await
    };
    let made = requests_of_a_waiter(Arc::new(deaf), Duration::from_secs(5)).await;
    // 100 ms growing by half each time to 1 s (±25 % jitter): about 11 in 5 s.
    assert!(
        (5..=16).contains(&made),
        "{made} requests in 5 s; polling every 100 ms would make 50, once a second 5"
    );
}

/// The memory store with faults to order: listening for releases that never starts (as when
/// the listening connection hangs), acquires that fail as in an outage, an acquire whose answer
/// never comes back although it took effect, and a store clock that jumps ahead.
#[derive(Debug, Default)]
struct Faulty {
    inner: Option<Arc<dyn Store>>,
    hang_watch: bool,
    /// Whether the store cannot tell waiters of a release, as MySQL and MongoDB cannot.
    deaf: bool,
    /// Acquires still to fail with a store error.
    failing_acquires: std::sync::atomic::AtomicUsize,
    /// Whether the next acquire takes effect in the store but never answers.
    swallow_next_acquire: std::sync::atomic::AtomicBool,
    /// How long acquires take to answer once they took effect.
    slow_acquires: Option<Duration>,
    /// How long acquires take to reach the store.
    acquires_travel: Option<Duration>,
    /// From the n-th renewal on, replies report the store's clock this far ahead.
    clock_jump: Option<(usize, Duration)>,
    renewals: std::sync::atomic::AtomicUsize,
}

impl Faulty {
    async fn new() -> Self {
        Faulty {
            inner: Some(memory().await),
            ..Faulty::default()
        }
    }

    fn store(&self) -> &dyn Store {
        self.inner.as_deref().expect("an inner store")
    }
}

#[async_trait::async_trait]
impl Store for Faulty {
    fn describe(&self) -> &str {
        self.store().describe()
    }
    async fn acquire(
        &self,
        name: &str,
        holder: &Holder,
        ttl: Option<Duration>,
    ) -> singleton_process::Result<singleton_process::Acquire> {
        use std::sync::atomic::Ordering;
        let failing = self.failing_acquires.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing_acquires.store(failing - 1, Ordering::SeqCst);
            return Err(Error::store(
                self.describe(),
                "acquire",
                "connection refused (a test outage)",
            ));
        }
        if let Some(travel) = self.acquires_travel {
            tokio::time::sleep(travel).await;
        }
        let acquired = self.store().acquire(name, holder, ttl).await;
        if self.swallow_next_acquire.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if let Some(slow) = self.slow_acquires {
            tokio::time::sleep(slow).await;
        }
        acquired
    }
    async fn renew(
        &self,
        lease: &singleton_process::Lease,
        ttl: Duration,
    ) -> singleton_process::Result<singleton_process::Lease> {
        let mut renewed = self.store().renew(lease, ttl).await?;
        let n = self
            .renewals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if let Some((from, ahead)) = self.clock_jump {
            if n >= from {
                renewed.expires = renewed.expires.map(|at| at + ahead);
            }
        }
        Ok(renewed)
    }
    async fn finish(
        &self,
        lease: &singleton_process::Lease,
        finish: &singleton_process::Finish,
    ) -> singleton_process::Result<singleton_process::Released> {
        self.store().finish(lease, finish).await
    }
    async fn last_run(
        &self,
        name: &str,
    ) -> singleton_process::Result<Option<singleton_process::LastRun>> {
        self.store().last_run(name).await
    }
    async fn last_runs(&self) -> singleton_process::Result<Vec<singleton_process::LastRun>> {
        self.store().last_runs().await
    }
    async fn inspect(
        &self,
        name: &str,
    ) -> singleton_process::Result<Option<singleton_process::Lease>> {
        self.store().inspect(name).await
    }
    async fn list(&self) -> singleton_process::Result<Vec<singleton_process::Lease>> {
        self.store().list().await
    }
    async fn force_release(
        &self,
        name: &str,
    ) -> singleton_process::Result<Option<singleton_process::Lease>> {
        self.store().force_release(name).await
    }
    async fn watch(
        &self,
        name: &str,
    ) -> singleton_process::Result<Option<singleton_process::Freed>> {
        if self.hang_watch {
            std::future::pending().await
        } else if self.deaf {
            Ok(None)
        } else {
            self.store().watch(name).await
        }
    }
    fn expiry_on_store_clock(&self) -> bool {
        self.clock_jump.is_some()
    }
}

/// A waiter whose store never starts telling it anything still polls, and times out on time.
#[tokio::test]
async fn lock_wait_polls_while_listening_hangs() {
    let store: Arc<dyn Store> = Arc::new(Faulty {
        hang_watch: true,
        ..Faulty::new().await
    });
    let name = unique("hanging-watch");
    let a = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let fast_poll = Options::default().poll_interval(Duration::from_millis(50));
    let b = Singleton::new(&name, store.clone(), fast_poll).unwrap();
    let guard = locked(a.lock().await.unwrap());
    let timed_out = tokio::time::timeout(
        Duration::from_secs(5),
        b.lock_wait(Some(Duration::from_millis(200))),
    )
    .await
    .expect("the wait timeout holds while listening hangs")
    .unwrap();
    assert!(matches!(timed_out, Lock::Conflict(_)));
    let waiter = tokio::spawn(async move { b.lock_wait(None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    guard.release().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("polling acquires the released name while listening hangs")
        .unwrap()
        .unwrap();
    locked(next).release().await.unwrap();
}

#[tokio::test]
async fn taking_over_an_expired_lease_emits_expired() {
    let store = memory().await;
    let name = unique("expired");
    store
        .acquire(
            &name,
            &Holder::current("crashed"),
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = Singleton::new(&name, store, Options::default()).unwrap();
    let mut events = s.events();
    let guard = locked(s.lock().await.unwrap());
    assert_eq!(kinds(&mut events), ["locking", "expired", "locked"]);
    guard.release().await.unwrap();
}

#[tokio::test]
async fn dropping_the_guard_releases() {
    let store = memory().await;
    let s = Singleton::new(unique("drop"), store, Options::default()).unwrap();
    drop(locked(s.lock().await.unwrap()));
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.exists().await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "the dropped guard's lease was not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_lagging_subscriber_never_blocks() {
    let store = memory().await;
    let s = Singleton::new(unique("lag"), store, Options::default()).unwrap();
    let mut never_read = s.events();
    for _ in 0..200 {
        locked(s.lock().await.unwrap()).release().await.unwrap();
    }
    assert!(matches!(
        never_read.try_recv(),
        Err(broadcast::error::TryRecvError::Lagged(_))
    ));
}

#[tokio::test]
async fn bad_names_and_options_are_refused() {
    let store = memory().await;
    for name in ["", "a\tb", &"x".repeat(256)] {
        let err = Singleton::new(name, store.clone(), Options::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    }
    let err = Singleton::new(
        "ok",
        store.clone(),
        Options::default().lock_expire(Duration::ZERO),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
    let forever = Singleton::new("forever", store, Options::default().lock_expire(None)).unwrap();
    let guard = locked(forever.lock().await.unwrap());
    assert_eq!(guard.safe_until(), None);
    assert_eq!(guard.lease().expires, None);
    guard.release().await.unwrap();
}

#[tokio::test]
async fn huge_durations_are_refused_and_never_panic() {
    let store = memory().await;
    let huge: [(&str, Options); 6] = [
        (
            "poll interval",
            Options::default().poll_interval(Duration::MAX),
        ),
        (
            "lease length",
            Options::default().lock_expire(Duration::MAX),
        ),
        (
            "renew interval",
            Options::default().renew_interval(Duration::MAX),
        ),
        (
            "safety margin",
            Options::default().safety_margin(Duration::MAX),
        ),
        ("grace period", Options::default().grace(Duration::MAX)),
        (
            "grace period",
            Options::default().lock_expire(None).grace(Duration::MAX),
        ),
    ];
    for (what, options) in huge {
        let err = Singleton::new("huge", store.clone(), options).unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { .. }), "{what}: {err}");
        assert!(err.to_string().contains(what), "{what}: {err}");
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
    let err = Singleton::new(
        "zero",
        store.clone(),
        Options::default().poll_interval(Duration::ZERO),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");

    // The longest accepted poll interval and wait timeout are fine for the clock arithmetic.
    let name = unique("huge");
    let holder = Singleton::new(&name, store.clone(), Options::default()).unwrap();
    let _guard = locked(holder.lock().await.unwrap());
    let waiter = Singleton::new(
        &name,
        store,
        Options::default().poll_interval(singleton_process::MAX_DURATION),
    )
    .unwrap();
    let gave_up = waiter
        .lock_wait(Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert!(matches!(gave_up, Lock::Conflict(_)));
    let err = waiter.lock_wait(Some(Duration::MAX)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}

/// A waiter keeps waiting through store errors, says so once, and acquires when the store
/// answers again.
#[tokio::test]
async fn lock_wait_waits_through_an_outage_and_reports_it_once() {
    let faulty = Faulty::new().await;
    faulty
        .failing_acquires
        .store(8, std::sync::atomic::Ordering::SeqCst);
    let store: Arc<dyn Store> = Arc::new(faulty);
    let s = Singleton::new(
        unique("outage"),
        store,
        Options::default().poll_interval(Duration::from_millis(10)),
    )
    .unwrap();
    let mut events = s.events();
    let guard = locked(
        tokio::time::timeout(Duration::from_secs(20), s.lock_wait(None))
            .await
            .expect("acquires once the store answers")
            .expect("no error ends the wait"),
    );
    let errors = kinds(&mut events)
        .into_iter()
        .filter(|kind| *kind == "error")
        .count();
    assert_eq!(errors, 1, "one error event per outage");
    guard.release().await.unwrap();
}

/// An acquire that reached the store but whose answer never came is abandoned after the
/// request timeout; the next try finds that lease in its own name, gives it back and acquires.
#[tokio::test]
async fn an_acquire_that_never_answers_is_abandoned_and_its_lease_given_back() {
    let faulty = Faulty::new().await;
    faulty
        .swallow_next_acquire
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let store: Arc<dyn Store> = Arc::new(faulty);
    let s = Singleton::new(
        unique("swallowed"),
        store,
        Options::default().lock_expire(Duration::from_secs(3)),
    )
    .unwrap();
    let started = Instant::now();
    let guard = locked(
        tokio::time::timeout(Duration::from_secs(10), s.lock())
            .await
            .expect("the acquire is bounded")
            .expect("the second try acquires"),
    );
    // The abandoned try took token 1, which was given back.
    assert_eq!(guard.token().0, 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    guard.release().await.unwrap();
}

/// A store clock that jumps ahead between two renewals ends the lease, as the store would end
/// it earlier than the holder counts on.
#[tokio::test]
async fn a_store_clock_that_jumps_ahead_loses_the_lease() {
    let faulty = Faulty {
        clock_jump: Some((2, Duration::from_secs(30))),
        ..Faulty::new().await
    };
    let store: Arc<dyn Store> = Arc::new(faulty);
    let s = Singleton::new(
        unique("jump"),
        store,
        Options::default().lock_expire(Duration::from_millis(900)),
    )
    .unwrap();
    let guard = locked(s.lock().await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("the jump is caught");
    assert_eq!(guard.loss(), Some(singleton_process::Loss::Gone));
}

/// An acquire answered after the moment its lease would already count as lost is not used: the
/// lease is given back and the caller told.
#[tokio::test]
async fn an_acquire_answered_too_late_is_given_back_and_not_used() {
    let faulty = Arc::new(Faulty {
        slow_acquires: Some(Duration::from_millis(1200)),
        ..Faulty::new().await
    });
    let store: Arc<dyn Store> = faulty.clone();
    let name = unique("too-late");
    // A long request timeout, so that the answer comes back rather than being abandoned.
    let s = Singleton::new(
        &name,
        store,
        Options::default()
            .lock_expire(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let err = s
        .lock()
        .await
        .expect_err("a lease answered too late is not handed out");
    assert!(err.to_string().contains("too late"), "{err}");
    assert_eq!(
        faulty.store().inspect(&name).await.unwrap(),
        None,
        "it was given back"
    );
}

#[tokio::test]
async fn finish_records_the_outcome_and_keeps_the_lease_for_the_hold() {
    use singleton_process::{Outcome, Released};
    let store = memory().await;
    let name = unique("finish");
    let options = Options::default().lock_expire(Duration::from_secs(30));
    let first = Singleton::new(name.clone(), store.clone(), options.clone()).unwrap();
    let second = Singleton::new(name.clone(), store.clone(), options).unwrap();
    let mut events = first.events();

    let guard = locked(first.lock().await.unwrap());
    let token = guard.token();
    assert_eq!(first.last_run().await.unwrap(), None);
    let kept = guard
        .finish(Outcome::Exit(3), Duration::from_millis(400))
        .await
        .unwrap();
    assert!(matches!(kept, Released::Kept { .. }), "{kept:?}");
    assert!(kinds(&mut events).contains(&"kept"));
    assert!(second.exists().await.unwrap(), "a kept lease is live");
    assert!(matches!(second.lock().await.unwrap(), Lock::Conflict(_)));
    let run = second.last_run().await.unwrap().expect("a last run");
    assert_eq!((run.token, run.outcome), (token, Outcome::Exit(3)));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let guard = locked(second.lock().await.unwrap());
    assert!(guard.token() > token, "fencing is unchanged by a hold");
    // A hold that is already over gives the lease back.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let released = guard
        .finish(Outcome::Signal(15), Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(released, Released::Released);
    let run = first.last_run().await.unwrap().expect("a last run");
    assert_eq!(run.outcome, Outcome::Signal(15));
    assert!(!first.exists().await.unwrap());
}

#[tokio::test]
async fn a_lost_lease_is_never_kept() {
    use singleton_process::{Outcome, Released};
    let store = memory().await;
    let name = unique("lost-hold");
    let singleton = Singleton::new(
        name.clone(),
        store.clone(),
        Options::default().lock_expire(Duration::from_secs(30)),
    )
    .unwrap();
    let guard = locked(singleton.lock().await.unwrap());
    let lease = store.force_release(&name).await.unwrap().expect("held");
    let released = guard
        .finish(Outcome::Lost, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(released, Released::NotHeld);
    assert!(!singleton.exists().await.unwrap());
    let run = singleton.last_run().await.unwrap().expect("a last run");
    assert_eq!((run.token, run.outcome), (lease.token, Outcome::Lost));
}
