//! [`Singleton`]: lock, release and inspect one named singleton, with events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::lease::{Held, LeaseGuard, Timing, check_duration};
use crate::store::{Acquire, Freed, Holder, Lease, Released, Store, validate_name};

/// How a [`Singleton`] holds its lease.
///
/// Every duration is at most [`MAX_DURATION`](crate::MAX_DURATION) (a year): [`Singleton::new`]
/// refuses longer ones, and zero where it cannot work, with [`Error::InvalidOptions`].
///
/// ```
/// use std::time::Duration;
/// use singleton_process::Options;
///
/// // A 30 s lease, renewed every 10 s (a third of its length, the default).
/// let renewing = Options::default().lock_expire(Duration::from_secs(30));
/// // The original package's behaviour: a fixed lease that is never renewed.
/// let fixed = Options::default().lock_expire(Duration::from_secs(60)).renew(false);
/// // A lease that never expires: only a release (or an operator) frees it.
/// let forever = Options::default().lock_expire(None);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) lock_expire: Option<Duration>,
    pub(crate) renew: bool,
    pub(crate) renew_interval: Option<Duration>,
    pub(crate) safety_margin: Duration,
    pub(crate) grace: Option<Duration>,
    pub(crate) poll_interval: Duration,
    pub(crate) label: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lock_expire: Some(Duration::from_secs(15)),
            renew: true,
            renew_interval: None,
            safety_margin: Duration::from_millis(200),
            grace: None,
            poll_interval: Duration::from_millis(100),
            label: String::new(),
        }
    }
}

impl Options {
    /// The lease length (default 15 s); `None` for a lease that never expires and is never renewed.
    pub fn lock_expire(mut self, ttl: impl Into<Option<Duration>>) -> Self {
        self.lock_expire = ttl.into();
        self
    }

    /// Whether the lease is renewed in the background (default on). Off gives the original's fixed
    /// lease: it runs out after its length, and that is reported as [`Event::Lost`].
    pub fn renew(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// How often the lease is renewed (default: a third of its length).
    pub fn renew_interval(mut self, every: Duration) -> Self {
        self.renew_interval = Some(every);
        self
    }

    /// Time kept in hand before the store's expiry for delays this host cannot measure, such as
    /// a killed process taking time to die (default 200 ms).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// How long before the safe deadline [`Event::Lost`] fires, so the holder has time to stop
    /// (default: a fifth of the lease length). The CLI sends SIGTERM at `lost` and SIGKILL at the
    /// safe deadline.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// How often [`Singleton::lock_wait`] retries (default 100 ms, with random jitter). Where the
    /// store tells waiters of a release ([`Store::watch`]: SQLite, PostgreSQL, Redis, etcd,
    /// `memory:`), the waiter also tries again as soon as it hears.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// A label stored with the lease, shown by `status` and in conflict messages.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

/// The outcome of [`Singleton::lock`].
#[derive(Debug)]
#[must_use = "a Locked guard releases the lease as soon as it is dropped"]
pub enum Lock {
    /// The lease is ours while the guard lives.
    Locked(LeaseGuard),
    /// Somebody else holds it: their lease (holder, created, expires).
    Conflict(Lease),
}

/// One named singleton on one store: the original package's `Singleton`.
///
/// ```
/// use singleton_process::{Lock, Options, Singleton};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> singleton_process::Result<()> {
/// let store = singleton_process::connect("memory:").await?;
/// let nightly = Singleton::new("nightly", store.clone(), Options::default())?;
/// match nightly.lock().await? {
///     Lock::Locked(guard) => {
///         // Pass the fencing token to whatever the job writes to.
///         println!("running with token {}", guard.token());
///         tokio::select! {
///             _ = async { /* the job */ } => {}
///             _ = guard.lost() => eprintln!("lease lost, stopping"),
///         }
///         guard.release().await?;
///     }
///     Lock::Conflict(lease) => println!("already running: {lease}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Singleton {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) timing: Timing,
    label: String,
    poll_interval: Duration,
    events: broadcast::Sender<Event>,
    /// The lease this singleton holds right now, for [`Singleton::release`].
    current: Mutex<Option<Arc<Held>>>,
}

/// How many events a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_BACKLOG: usize = 256;

impl Singleton {
    /// A singleton called `name` (1..=255 bytes of UTF-8, no control characters) on `store`.
    /// Fails if the name or the options are invalid.
    pub fn new(name: impl Into<String>, store: Arc<dyn Store>, options: Options) -> Result<Self> {
        let name = name.into();
        validate_name(&name)?;
        let timing = Timing::new(&options)?;
        if check_duration("poll interval", options.poll_interval)?.is_zero() {
            return Err(Error::options(
                "the poll interval must be greater than zero",
            ));
        }
        Ok(Singleton {
            inner: Arc::new(Inner {
                name,
                store,
                timing,
                label: options.label,
                poll_interval: options.poll_interval,
                events: broadcast::channel(EVENT_BACKLOG).0,
                current: Mutex::new(None),
            }),
        })
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The store it uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// How long before the safe deadline [`Event::Lost`] fires (see [`Options::grace`]).
    pub fn grace(&self) -> Duration {
        self.inner.timing.grace
    }

    /// Subscribes to this singleton's events. A subscriber that falls more than 256 events behind
    /// gets [`broadcast::error::RecvError::Lagged`] and skips ahead; it never slows lock handling.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Tries once to acquire the lease. Emits `locking`, then `locked` (and `expired` if an
    /// expired lease was taken over) or `conflict`.
    pub async fn lock(&self) -> Result<Lock> {
        self.inner.emit(Event::Locking {
            name: self.inner.name.clone(),
        });
        let outcome = self.attempt().await?;
        if let Lock::Conflict(held_by) = &outcome {
            self.inner.emit(Event::Conflict {
                name: self.inner.name.clone(),
                held_by: held_by.clone(),
            });
        }
        Ok(outcome)
    }

    /// Acquires the lease, waiting for the current holder to let go; gives up after `timeout`
    /// (`None`: wait for ever) and then returns [`Lock::Conflict`] with the last holder seen.
    /// Emits `waiting` when it starts waiting and whenever the holder changes.
    ///
    /// It retries every poll interval and, where the store tells waiters of a release
    /// ([`Store::watch`]), as soon as it hears; what it hears only makes it try again, it
    /// never grants anything.
    pub async fn lock_wait(&self, timeout: Option<Duration>) -> Result<Lock> {
        let give_up = match timeout {
            Some(timeout) => Some(
                Instant::now()
                    .checked_add(timeout)
                    .ok_or_else(|| Error::options("the wait timeout is too large"))?,
            ),
            None => None,
        };
        self.inner.emit(Event::Locking {
            name: self.inner.name.clone(),
        });
        let mut waiting_for: Option<String> = None;
        let mut word = Word::Unasked;
        loop {
            let held_by = match self.attempt().await? {
                Lock::Conflict(held_by) => held_by,
                locked => return Ok(locked),
            };
            let now = Instant::now();
            if give_up.is_some_and(|give_up| give_up <= now) {
                self.inner.emit(Event::Conflict {
                    name: self.inner.name.clone(),
                    held_by: held_by.clone(),
                });
                return Ok(Lock::Conflict(held_by));
            }
            word.start_if_due(&self.inner, now);
            if waiting_for.as_deref() != Some(held_by.holder.id.as_str()) {
                waiting_for = Some(held_by.holder.id.clone());
                self.inner.emit(Event::Waiting {
                    name: self.inner.name.clone(),
                    held_by,
                });
            }
            // Jitter keeps many waiters from polling in lock step.
            let pause = self.inner.poll_interval.mul_f64(0.5 + fastrand::f64());
            let wake = now + pause;
            tokio::select! {
                () = tokio::time::sleep_until(give_up.map_or(wake, |give_up| wake.min(give_up))) => {}
                () = word.next() => {}
            }
        }
    }

    /// One acquisition attempt; emits `expired` and `locked`, not `conflict`.
    async fn attempt(&self) -> Result<Lock> {
        let inner = &self.inner;
        let holder = Holder::current(inner.label.clone());
        // The safe deadline counts from before the request left: the store starts the lease
        // no earlier than this.
        let sent = Instant::now();
        let acquired = inner
            .store
            .acquire(&inner.name, &holder, inner.timing.ttl)
            .await;
        match inner.observe(acquired)? {
            Acquire::Held(held_by) => Ok(Lock::Conflict(held_by)),
            Acquire::Acquired { lease, took_over } => {
                if let Some(previous) = took_over {
                    inner.emit(Event::Expired {
                        name: inner.name.clone(),
                        previous,
                    });
                }
                inner.emit(Event::Locked {
                    lease: lease.clone(),
                });
                let held = Held::start(inner, lease, sent);
                *inner.current() = Some(Arc::clone(&held));
                Ok(Lock::Locked(LeaseGuard::new(Arc::clone(inner), held)))
            }
        }
    }

    /// Releases the lease this singleton holds, if any (the original's `release()`). Returns
    /// whether a lease was given back; `false` when none was held or it had been lost.
    pub async fn release(&self) -> Result<bool> {
        let held = self.inner.current().take();
        match held {
            Some(held) => self.inner.release(&held).await,
            None => Ok(false),
        }
    }

    /// Whether a live, unexpired lease on this name exists in the store (anyone's).
    pub async fn exists(&self) -> Result<bool> {
        let found = self.inner.store.inspect(&self.inner.name).await;
        Ok(self.inner.observe(found)?.is_some())
    }

    /// The live lease on this name, if any.
    pub async fn inspect(&self) -> Result<Option<Lease>> {
        let found = self.inner.store.inspect(&self.inner.name).await;
        self.inner.observe(found)
    }
}

/// How long a waiter whose store stopped telling it (or could not start to) waits before it
/// asks again: the store may be restarting, and the waiter polls meanwhile.
const LISTEN_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// What a waiter hears from the store ([`Store::watch`]), besides its own polling.
enum Word {
    /// Not asked for yet: the name has not been found held.
    Unasked,
    /// Listening is being set up, in the background so that the waiter polls meanwhile.
    Starting(tokio_util::task::AbortOnDropHandle<Option<Freed>>),
    /// Listening.
    Listening(Freed),
    /// Polling only since then: the store cannot tell, listening failed, or its feed ended.
    Deaf(Instant),
}

impl Word {
    /// Starts listening if it has not been asked for yet, or if the last try or feed ended a
    /// while ago.
    fn start_if_due(&mut self, inner: &Arc<Inner>, now: Instant) {
        let due = match self {
            Word::Unasked => true,
            Word::Deaf(since) => now.saturating_duration_since(*since) >= LISTEN_AGAIN_AFTER,
            Word::Starting(_) | Word::Listening(_) => false,
        };
        if !due {
            return;
        }
        let store = Arc::clone(&inner.store);
        let name = inner.name.clone();
        *self = Word::Starting(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            async move {
                store.watch(&name).await.unwrap_or_else(|err| {
                    tracing::debug!(%name, "waiting by polling only for now: {err}");
                    None
                })
            },
        )));
    }

    /// Returns when the waiter should try again: on word that the name was freed, as soon as
    /// listening has started (a release before that went unheard), or when the feed ends.
    /// Never returns while there is nothing to hear. Cancel-safe.
    async fn next(&mut self) {
        match self {
            Word::Starting(starting) => {
                let freed = starting.await.ok().flatten();
                *self = freed.map_or(Word::Deaf(Instant::now()), Word::Listening);
            }
            Word::Listening(freed) => {
                if !freed.next().await {
                    *self = Word::Deaf(Instant::now());
                }
            }
            Word::Unasked | Word::Deaf(_) => std::future::pending().await,
        }
    }
}

impl Inner {
    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::Lost { .. } | Event::Error { .. } => {
                tracing::warn!(name = %self.name, kind = event.kind(), "{event}")
            }
            Event::Renewed { .. } => {
                tracing::debug!(name = %self.name, kind = event.kind(), "{event}")
            }
            _ => tracing::info!(name = %self.name, kind = event.kind(), "{event}"),
        }
        // No subscriber is fine; a full channel drops the oldest event, it never blocks.
        let _ = self.events.send(event);
    }

    /// Emits an `error` event for a failed store call and passes the result on.
    pub(crate) fn observe<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            self.emit(Event::Error {
                name: self.name.clone(),
                message: err.to_string(),
            });
        }
        result
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Held>>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Releases `held` once: stops its renewal, then gives the lease back (owner-checked).
    pub(crate) async fn release(&self, held: &Arc<Held>) -> Result<bool> {
        if !held.begin_release().await {
            return Ok(false);
        }
        {
            let mut current = self.current();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, held)) {
                *current = None;
            }
        }
        let lease = held.lease();
        self.emit(Event::Releasing {
            name: self.name.clone(),
            token: lease.token,
        });
        let released = self.store.release(&lease).await;
        match self.observe(released)? {
            Released::Released => {
                self.emit(Event::Released {
                    name: self.name.clone(),
                    token: lease.token,
                });
                Ok(true)
            }
            Released::NotHeld => {
                held.mark_lost(self, "it was no longer ours when we released it".into());
                Ok(false)
            }
        }
    }
}
