//! [`Singleton`]: lock, release and inspect one named singleton, with events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::clock::{self, BootInstant};
use crate::error::{Error, Result};
use crate::event::{Event, Loss};
use crate::lease::{Held, LeaseGuard, Timing, check_duration};
use crate::store::{
    Acquire, Finish, Freed, Heard, Holder, LastRun, Lease, Outcome, Released, Store, bounded,
    validate_name,
};

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
    pub(crate) request_timeout: Option<Duration>,
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
            request_timeout: None,
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

    /// The shortest pause between [`Singleton::lock_wait`]'s tries (default 100 ms, with random
    /// jitter). Where the store tells waiters of a release ([`Store::watch`]: SQLite,
    /// PostgreSQL, Redis, etcd, `memory:`), the waiter tries again as soon as it hears, and
    /// otherwise only when the holder's lease could have expired, every 5 s at the latest.
    /// Where it cannot tell (MySQL, MongoDB), the waiter polls every poll interval at first,
    /// then less often, down to once a second.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How long one store request (acquire, renew, release, inspect, the set-up of listening
    /// for releases) may take before it is abandoned and, where the lease's deadline allows,
    /// sent again, which the store does on a fresh connection: a connection whose packets are
    /// silently dropped must not hang a renewal. Default: a third of the renew interval (a
    /// ninth of the lease length when renewal is off), at most [`MAX_REQUEST_TIMEOUT`]
    /// (5 s); an acquire may take up to the moment its lease would count as lost, at most 5 s.
    ///
    /// [`MAX_REQUEST_TIMEOUT`]: crate::MAX_REQUEST_TIMEOUT
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
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
/// It needs a tokio runtime with both the time and the I/O driver (`enable_all`, as
/// `#[tokio::main]` gives): lease deadlines are waited for on a `timerfd` of `CLOCK_BOOTTIME`.
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
    /// How long this singleton's waits hold back their tries after a release.
    stagger: Stagger,
}

/// How many events a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_BACKLOG: usize = 256;

/// The longest pause between a waiter's tries while the store cannot be reached.
const OUTAGE_PAUSE_MAX: Duration = Duration::from_secs(5);

/// How many times an inspection is sent before its failure is reported, and a release at least
/// (see [`RELEASE_PATIENCE`]).
const TRIES: u32 = 3;

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
                stagger: Stagger::default(),
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

    /// How long one store request may take (see [`Options::request_timeout`]).
    pub fn request_timeout(&self) -> Duration {
        self.inner.timing.request_timeout
    }

    /// Subscribes to this singleton's events. A subscriber that falls more than 256 events behind
    /// gets [`broadcast::error::RecvError::Lagged`] and skips ahead; it never slows lock handling.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Tries once to acquire the lease. Emits `locking`, then `locked` (and `expired` if an
    /// expired lease was taken over) or `conflict`.
    ///
    /// The acquire is bounded (see [`Options::request_timeout`]): a store that does not answer
    /// in time gives [`Error::Timeout`], and so does an answer that came back too late to be used
    /// (after the moment the new lease would already count as lost): that lease is given back.
    pub async fn lock(&self) -> Result<Lock> {
        self.inner.emit(Event::Locking {
            name: self.inner.name.clone(),
        });
        let holder = Holder::current(self.inner.label.clone());
        // An acquire that timed out is sent once more (on a fresh connection): should the first
        // have reached the store after all, the second finds its lease and gives it back.
        let outcome = match self.attempt(&holder).await {
            Err(Error::Timeout { .. }) => self.attempt(&holder).await,
            tried => tried,
        };
        let outcome = self.inner.observe(outcome)?;
        if let Lock::Conflict(held_by) = &outcome {
            self.inner.emit(Event::Conflict {
                name: self.inner.name.clone(),
                held_by: held_by.clone(),
            });
        }
        Ok(outcome)
    }

    /// Acquires the lease, waiting for the current holder to let go; gives up after `timeout`
    /// (`None`: wait for ever), also in the middle of a store request, and then returns
    /// [`Lock::Conflict`] with the last holder seen, or [`Error::Timeout`] (operation `wait`) if
    /// the store could not be reached to see one. Emits `waiting` when it starts waiting and
    /// whenever the holder changes.
    ///
    /// Where the store tells waiters of a release ([`Store::watch`]: SQLite, PostgreSQL, Redis,
    /// etcd, `memory:`), it tries again as soon as it hears, and otherwise only when the
    /// holder's lease could have expired (by the expiry the store reported, plus jitter) or,
    /// for word that got lost, every 5 s at the latest: an idle waiter costs the store a
    /// request every few seconds. Where the store cannot tell (MySQL, MongoDB), it polls,
    /// from every poll interval at first towards once a second. What it hears only makes it
    /// try again; it never grants anything.
    ///
    /// Where the store tells of releases and acquires (PostgreSQL, Redis, etcd, `memory:`), a
    /// waiter that has seen somebody else take the name knows it has rivals: after a release
    /// it waits a random pause before it tries, and does not try if told meanwhile that the
    /// name was taken. Its longest pause starts at 4 ms and adapts (0.25 ms to 250 ms): it
    /// grows when its try loses or the name goes within a few round trips of the release, and
    /// shrinks when it wins or the name goes late, so that about one try per release is lost
    /// however many wait: a release to 100 waiters costs a few requests, not 100. A waiter
    /// told that the name was taken asks again when the new lease could expire (by the expiry
    /// the store told, else after 5 s), and the `waiting` event for the new holder comes then.
    ///
    /// It waits through store outages: a failed try is reported once per outage (an `error`
    /// event) and tried again with backoff, up to every 5 s. Only what cannot get better ends
    /// the wait at once: invalid options, and credentials the store refuses
    /// ([`Error::Refused`]) before it has ever answered.
    pub async fn lock_wait(&self, timeout: Option<Duration>) -> Result<Lock> {
        let give_up = match timeout {
            Some(timeout) => Some(
                BootInstant::now()
                    .checked_add(check_duration("wait timeout", timeout)?)
                    .ok_or_else(|| Error::options("the wait timeout is too large"))?,
            ),
            None => None,
        };
        let until_give_up = || async move {
            match give_up {
                Some(at) => clock::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        self.inner.emit(Event::Locking {
            name: self.inner.name.clone(),
        });
        let holder = Holder::current(self.inner.label.clone());
        let mut last_seen: Option<Lease> = None;
        let mut word = Word::Unasked;
        let mut reached = false;
        let mut outage: Option<Duration> = None;
        let mut polls = Polls::new(self.inner.poll_interval);
        // When the release that the next try answers was heard, if it answers one: every
        // waiter heard it.
        let mut release_heard: Option<tokio::time::Instant> = None;
        loop {
            // Word that came before this try is answered by it: without this, every waiter
            // would wake once more for each commit of a hand-off it already lost.
            if let Word::Listening(freed) = &mut word {
                freed.forget_heard();
            }
            let sent = tokio::time::Instant::now();
            let tried = tokio::select! {
                tried = self.attempt(&holder) => tried,
                () = until_give_up() => {
                    // The abandoned acquire may still take effect: give back what it may leave.
                    tokio::spawn(Arc::clone(&self.inner).give_back_any(holder));
                    return self.gave_up(last_seen, timeout);
                }
            };
            // About how long word takes to go round.
            let round_trip = sent.elapsed();
            let pause = match tried {
                Ok(Lock::Conflict(held_by)) => {
                    if release_heard.is_some() {
                        self.inner.stagger.lost();
                    }
                    reached = true;
                    if outage.take().is_some() {
                        tracing::info!(name = %self.inner.name, "the store answers again");
                    }
                    word.start_if_due(&self.inner, BootInstant::now());
                    if last_seen.as_ref().map(|l| &l.holder.id) != Some(&held_by.holder.id) {
                        self.inner.emit(Event::Waiting {
                            name: self.inner.name.clone(),
                            held_by: held_by.clone(),
                        });
                    }
                    let pause = polls.after_conflict(&word, &held_by);
                    last_seen = Some(held_by);
                    pause
                }
                Ok(locked) => {
                    if release_heard.is_some() {
                        self.inner.stagger.won();
                    }
                    return Ok(locked);
                }
                Err(err) if ends_the_wait(&err, reached) => return self.inner.observe(Err(err)),
                Err(err) => {
                    let next = match outage {
                        None => {
                            self.inner.emit(Event::Error {
                                name: self.inner.name.clone(),
                                message: format!("{err}; still waiting, and trying again"),
                            });
                            self.inner.poll_interval
                        }
                        Some(last) => (last * 2).min(OUTAGE_PAUSE_MAX),
                    };
                    tracing::debug!(name = %self.inner.name, "store still failing: {err}");
                    outage = Some(next.max(self.inner.poll_interval));
                    next.mul_f64(0.5 + fastrand::f64())
                }
            };
            release_heard = None;
            let mut turn = tokio::time::Instant::now() + pause;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(turn) => break,
                    heard = word.next() => match heard {
                        Some(Heard::Taken { expires }) => {
                            let gap = release_heard.take().map(|at| at.elapsed());
                            self.inner.stagger.taken(gap, round_trip);
                            turn = tokio::time::Instant::now() + polls.until_expiry(expires);
                        }
                        Some(Heard::Freed) => {
                            release_heard.get_or_insert_with(tokio::time::Instant::now);
                            match self.inner.stagger.pause() {
                                // Timers fire on millisecond ticks: a shorter pause would
                                // cost a whole tick.
                                Some(pause) if pause >= TIMER_TICK => {
                                    turn = turn.min(tokio::time::Instant::now() + pause);
                                }
                                _ => break,
                            }
                        }
                        Some(Heard::Changed) | None => {
                            release_heard = None;
                            break;
                        }
                    },
                    () = until_give_up() => return self.gave_up(last_seen, timeout),
                }
            }
        }
    }

    /// What [`lock_wait`](Self::lock_wait) returns when its timeout runs out.
    fn gave_up(&self, last_seen: Option<Lease>, timeout: Option<Duration>) -> Result<Lock> {
        match last_seen {
            Some(held_by) => {
                self.inner.emit(Event::Conflict {
                    name: self.inner.name.clone(),
                    held_by: held_by.clone(),
                });
                Ok(Lock::Conflict(held_by))
            }
            None => self.inner.observe(Err(Error::Timeout {
                store: self.inner.store.describe().to_owned(),
                operation: "wait",
                after: timeout.unwrap_or_default(),
            })),
        }
    }

    /// One acquisition attempt for `holder`; emits `expired` and `locked`, not `conflict` or
    /// `error`.
    async fn attempt(&self, holder: &Holder) -> Result<Lock> {
        let inner = &self.inner;
        let timing = &inner.timing;
        // An abandoned try of ours may have reached the store after all: its lease is in our
        // name. It is given back and the acquire sent once more.
        for _ in 0..2 {
            // The safe deadline counts from before the request left: the store starts the lease
            // no earlier than this.
            let sent = BootInstant::now();
            let acquired = bounded(
                &*inner.store,
                "acquire",
                timing.acquire_timeout(),
                inner.store.acquire(&inner.name, holder, timing.ttl),
            )
            .await;
            let received = BootInstant::now();
            match acquired? {
                Acquire::Held(held_by) if held_by.holder.id == holder.id => {
                    inner.give_back(&held_by).await;
                }
                Acquire::Held(held_by) => return Ok(Lock::Conflict(held_by)),
                Acquire::Acquired { lease, .. } if timing.answered_too_late(sent, received) => {
                    // The lease may already count as lost by the time anyone could use it (the
                    // process stalled, or the reply crawled back): never start work with it.
                    inner.give_back(&lease).await;
                    let took = received.saturating_duration_since(sent);
                    return Err(Error::store(
                        inner.store.describe(),
                        "acquire",
                        format!(
                            "the store's answer came back {} after the request, too late to use the lease safely; it was given back",
                            humantime::format_duration(Duration::from_millis(
                                took.as_millis() as u64
                            ))
                        ),
                    ));
                }
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
                    let held = Held::start(inner, lease, sent, received);
                    *inner.current() = Some(Arc::clone(&held));
                    return Ok(Lock::Locked(LeaseGuard::new(Arc::clone(inner), held)));
                }
            }
        }
        Err(Error::store(
            inner.store.describe(),
            "acquire",
            "the store keeps reporting a lease of this very attempt; try again",
        ))
    }

    /// Releases the lease this singleton holds, if any (the original's `release()`). Returns
    /// whether a lease was given back; `false` when none was held or it had been lost.
    pub async fn release(&self) -> Result<bool> {
        let held = self.inner.current().take();
        match held {
            Some(held) => Ok(self
                .inner
                .finish(&held, Outcome::Released, Duration::ZERO)
                .await?
                != Released::NotHeld),
            None => Ok(false),
        }
    }

    /// Whether a live, unexpired lease on this name exists in the store (anyone's).
    pub async fn exists(&self) -> Result<bool> {
        Ok(self.inspect().await?.is_some())
    }

    /// The live lease on this name, if any. A lease kept after its run (`hold_at_least`)
    /// counts as live until it expires.
    pub async fn inspect(&self) -> Result<Option<Lease>> {
        self.inner
            .read("inspect", || self.inner.store.inspect(&self.inner.name))
            .await
    }

    /// This name's last run on record, if any: who ran, with which token, from when to when,
    /// and how it ended (see [`Store::last_run`]).
    pub async fn last_run(&self) -> Result<Option<LastRun>> {
        self.inner
            .read("last run", || self.inner.store.last_run(&self.inner.name))
            .await
    }
}

/// Whether a failed try ends a wait at once: what cannot get better by waiting.
fn ends_the_wait(err: &Error, reached: bool) -> bool {
    match err {
        Error::Store { .. } | Error::Timeout { .. } | Error::Lost { .. } => false,
        Error::Refused { .. } => !reached,
        _ => true,
    }
}

/// How long a waiter whose store stopped telling it (or could not start to) waits before it
/// asks again: the store may be restarting, and the waiter polls meanwhile.
const LISTEN_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// The longest a listening waiter goes without asking, in case word of a release got lost.
const LISTENING_POLL_MAX: Duration = Duration::from_secs(5);

/// The longest random pause before a try after a release, once a waiter has seen a rival.
const STAGGER_START: Duration = Duration::from_millis(4);

/// The resolution of tokio's timers.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// The bounds of that longest pause as it adapts to the number of rivals.
const STAGGER_MIN: Duration = Duration::from_micros(250);
const STAGGER_MAX: Duration = Duration::from_millis(250);

/// How long a waiter holds back its try after a release, when others wait for the name too:
/// long enough that the first try's acquire is told to the rest before they send theirs.
///
/// Each waiter keeps its own longest pause. It grows fourfold when the waiter's try after a
/// release finds the name taken (a request wasted) and halves when it wins, so at the balance
/// a waiter wastes a try half as often as it wins one: about half a wasted try per release,
/// shared among all waiters, whatever their number, with the first try about one transit
/// time after the release. Fourfold reaches the balance for hundreds of waiters within a few
/// releases. It is kept across waits, as a standby waits through many releases.
#[derive(Debug, Default)]
struct Stagger {
    /// Zero until a rival is seen: a lone waiter tries at once.
    longest: Mutex<Duration>,
}

impl Stagger {
    fn longest(&self) -> std::sync::MutexGuard<'_, Duration> {
        self.longest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pause before trying after a release, if this waiter knows of rivals.
    fn pause(&self) -> Option<Duration> {
        let longest = *self.longest();
        (!longest.is_zero()).then(|| longest.mul_f64(fastrand::f64()))
    }

    /// Somebody else took the name, `gap` after the release this waiter held back its try
    /// for (`None`: it was not waiting to try), where word takes about `round_trip` to go
    /// round. Tries that fall within a round trip of the first are wasted: if the name was
    /// taken within 3 round trips of the release, many wait and their tries bunch up, and
    /// the pause doubles; if it took more than 8, the pause could be shorter, and it halves.
    /// So the waiters that hold back, not only those whose tries lose, spread out, until the
    /// first try comes 2 to 7 round trips after the release.
    fn taken(&self, gap: Option<Duration>, round_trip: Duration) {
        let mut longest = self.longest();
        let seen = if longest.is_zero() {
            STAGGER_START
        } else {
            *longest
        };
        *longest = match gap {
            Some(gap) if gap < round_trip * 3 => (seen * 2).min(STAGGER_MAX),
            Some(gap) if gap > round_trip * 8 => (seen / 2).max(STAGGER_MIN),
            _ => seen,
        };
    }

    /// A try after a release found the name taken.
    fn lost(&self) {
        let mut longest = self.longest();
        *longest = (*longest * 4).clamp(STAGGER_START, STAGGER_MAX);
    }

    /// A try after a release took the name.
    fn won(&self) {
        let mut longest = self.longest();
        if !longest.is_zero() {
            *longest = (*longest / 2).max(STAGGER_MIN);
        }
    }
}

/// The slowest a waiter that hears nothing from its store polls, unless its poll interval is
/// slower still.
const DEAF_POLL_MAX: Duration = Duration::from_secs(1);

/// How often a waiter asks the store while the name is held.
struct Polls {
    /// The poll interval: the shortest pause, and the first while not listening.
    every: Duration,
    /// The next pause while not listening: it grows from `every` towards [`DEAF_POLL_MAX`].
    deaf: Duration,
}

impl Polls {
    fn new(every: Duration) -> Self {
        Polls { every, deaf: every }
    }

    /// The pause before the next try after the name was found held by `held_by`, unless word
    /// of a release comes first. Random jitter keeps many waiters from asking in lock step.
    fn after_conflict(&mut self, word: &Word, held_by: &Lease) -> Duration {
        match word {
            // A release will be heard: ask again when the lease could have run out (its
            // holder may have died), which a renewal then pushes back. The expiry is by the
            // store's clock, so a wall clock behind it only makes this waiter ask sooner, and
            // one ahead of it is bounded by the slow poll for lost word.
            Word::Listening(_) => self.until_expiry(held_by.expires),
            // Listening is being set up, and the try when it is ready comes at once.
            Word::Unasked | Word::Starting(_) => self.every.mul_f64(0.5 + fastrand::f64()),
            Word::Deaf(_) => {
                let pause = self.deaf;
                self.deaf = pause.mul_f64(1.5).min(DEAF_POLL_MAX.max(self.every));
                pause.mul_f64(0.75 + fastrand::f64() / 2.0)
            }
        }
    }

    /// The pause of a listening waiter: until a lease that expires at `expires` (`None`:
    /// unknown) could have run out, by our wall clock, and at most [`LISTENING_POLL_MAX`],
    /// plus jitter; also after word that somebody took the name, unless word of a release
    /// comes first.
    fn until_expiry(&self, expires: Option<SystemTime>) -> Duration {
        let until_expiry = expires
            .map_or(LISTENING_POLL_MAX, |at| {
                at.duration_since(SystemTime::now()).unwrap_or_default()
            })
            .min(LISTENING_POLL_MAX);
        until_expiry.max(self.every) + self.every.mul_f64(fastrand::f64())
    }
}

/// What a waiter hears from the store ([`Store::watch`]), besides its own polling.
enum Word {
    /// Not asked for yet: the name has not been found held.
    Unasked,
    /// Listening is being set up, in the background so that the waiter polls meanwhile.
    Starting(tokio_util::task::AbortOnDropHandle<Option<Freed>>),
    /// Listening.
    Listening(Freed),
    /// Polling only since then: the store cannot tell, listening failed, or its feed ended.
    Deaf(BootInstant),
}

impl Word {
    /// Starts listening if it has not been asked for yet, or if the last try or feed ended a
    /// while ago.
    fn start_if_due(&mut self, inner: &Arc<Inner>, now: BootInstant) {
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
        let limit = inner.timing.request_timeout;
        *self = Word::Starting(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            async move {
                bounded(&*store, "watch", limit, store.watch(&name))
                    .await
                    .unwrap_or_else(|err| {
                        tracing::debug!(%name, "waiting by polling only for now: {err}");
                        None
                    })
            },
        )));
    }

    /// Returns the next word heard, or `None` when the waiter should try again as it can
    /// hear nothing that came before: listening has just started (a release before that went
    /// unheard), or the feed has ended. Never returns while there is nothing to hear.
    /// Cancel-safe.
    async fn next(&mut self) -> Option<Heard> {
        match self {
            Word::Starting(starting) => {
                let freed = starting.await.ok().flatten();
                *self = freed.map_or(Word::Deaf(BootInstant::now()), Word::Listening);
                None
            }
            Word::Listening(freed) => {
                let heard = freed.next().await;
                if heard.is_none() {
                    *self = Word::Deaf(BootInstant::now());
                }
                heard
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

    /// A read of the store, bounded, sent again if it times out.
    async fn read<T, F: Future<Output = Result<T>>>(
        &self,
        operation: &'static str,
        request: impl Fn() -> F,
    ) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            let found = bounded(
                &*self.store,
                operation,
                self.timing.request_timeout,
                request(),
            )
            .await;
            match found {
                Err(Error::Timeout { .. }) if tries < TRIES => continue,
                found => return self.observe(found),
            }
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Held>>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives back the lease `holder` may hold after an acquire that was abandoned in flight, for
    /// which nobody waits any more (a lease that never expires would otherwise stay).
    async fn give_back_any(self: Arc<Self>, holder: Holder) {
        // Let the abandoned request arrive first, if it is going to.
        tokio::time::sleep(self.timing.request_timeout).await;
        let found = bounded(
            &*self.store,
            "inspect",
            self.timing.request_timeout,
            self.store.inspect(&self.name),
        )
        .await;
        if let Ok(Some(lease)) = found {
            if lease.holder.id == holder.id {
                self.give_back(&lease).await;
            }
        }
    }

    /// Gives back a lease of ours that must not be used (best effort, one bounded try: if it
    /// fails, the lease simply expires).
    async fn give_back(&self, lease: &Lease) {
        let released = bounded(
            &*self.store,
            "release",
            self.timing.request_timeout,
            self.store.release(lease),
        )
        .await;
        if let Err(err) = released {
            tracing::debug!(name = %self.name, "could not give back an unused lease: {err}");
        }
    }

    /// Ends the run on `held` once: stops its renewal, then gives the lease back or keeps it
    /// for what is left of `hold_at_least` (owner-checked), recording `outcome` as the last run.
    /// A try that fails or times out is sent again while the lease may still be ours, three
    /// times or for [`RELEASE_PATIENCE`], whichever is longer; every try asks the same, so a
    /// repeat of one that took effect changes nothing.
    pub(crate) async fn finish(
        &self,
        held: &Arc<Held>,
        outcome: Outcome,
        hold_at_least: Duration,
    ) -> Result<Released> {
        if !held.begin_release().await {
            return Ok(Released::NotHeld);
        }
        {
            let mut current = self.current();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, held)) {
                *current = None;
            }
        }
        let lease = held.lease();
        // A lost lease is never kept: it may be somebody else's already.
        let finish = Finish {
            outcome,
            hold: if held.is_lost() {
                None
            } else {
                held.hold(hold_at_least)
            },
        };
        self.emit(Event::Releasing {
            name: self.name.clone(),
            token: lease.token,
        });
        let mut tries = 0;
        let started = BootInstant::now();
        // Whether a try timed out: it may have given the lease back after all.
        let mut abandoned = false;
        let released = loop {
            tries += 1;
            let released = bounded(
                &*self.store,
                "release",
                self.timing.request_timeout,
                self.store.finish(&lease, &finish),
            )
            .await;
            let now = BootInstant::now();
            let worth_again = !held.is_lost()
                && held.safe_until().is_none_or(|safe| now < safe)
                && (tries < TRIES || now.saturating_duration_since(started) < RELEASE_PATIENCE);
            match released {
                Err(Error::Timeout { .. } | Error::Store { .. }) if worth_again => {
                    let err = released.unwrap_err();
                    abandoned |= matches!(err, Error::Timeout { .. });
                    self.emit(Event::Error {
                        name: self.name.clone(),
                        message: format!("{err}; trying again"),
                    });
                    tokio::time::sleep(RELEASE_RETRY * tries).await;
                }
                released => break released,
            }
        };
        match self.observe(released)? {
            // Not found after a try that timed out: that try most likely gave it back. (Only a
            // loss between the last renewal and this release would go unreported.)
            Released::NotHeld if abandoned => {
                tracing::info!(name = %self.name, "an earlier try of the release, which timed out, gave the lease back");
                self.emit(Event::Released {
                    name: self.name.clone(),
                    token: lease.token,
                });
                Ok(Released::Released)
            }
            Released::Released => {
                self.emit(Event::Released {
                    name: self.name.clone(),
                    token: lease.token,
                });
                Ok(Released::Released)
            }
            Released::Kept { expires } => {
                self.emit(Event::Kept {
                    lease: Lease { expires, ..lease },
                });
                Ok(Released::Kept { expires })
            }
            Released::NotHeld => {
                held.mark_lost(
                    self,
                    Loss::Gone,
                    "it was no longer ours when we released it".into(),
                );
                Ok(Released::NotHeld)
            }
        }
    }
}

/// The pause before a failed release is sent again, times the number of tries so far.
const RELEASE_RETRY: Duration = Duration::from_millis(50);

/// How long a release is sent again (at least [`TRIES`] times) while the lease may still be
/// ours: long enough for a replicated store to elect a new leader or fail over (etcd takes one
/// to two seconds with its default timings), so that a run whose job has finished does not
/// report a store error (and leave its lease to expire) for a failover it could wait out.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn held_until(expires: Option<SystemTime>) -> Lease {
        Lease {
            name: "job".into(),
            holder: Holder::current(String::new()),
            token: crate::FencingToken(1),
            created: SystemTime::now(),
            expires,
        }
    }

    #[test]
    fn the_stagger_starts_with_a_rival_and_grows_on_a_lost_try_and_halves_on_a_win() {
        let stagger = Stagger::default();
        stagger.won();
        assert_eq!(stagger.pause(), None, "a lone waiter tries at once");
        let round_trip = Duration::from_millis(1);
        stagger.taken(None, round_trip);
        assert_eq!(*stagger.longest(), STAGGER_START);
        assert!(stagger.pause().is_some_and(|pause| pause <= STAGGER_START));
        stagger.lost();
        assert_eq!(*stagger.longest(), STAGGER_START * 4);
        stagger.taken(None, round_trip);
        assert_eq!(
            *stagger.longest(),
            STAGGER_START * 4,
            "a rival seen while not holding back changes nothing"
        );
        for _ in 0..20 {
            stagger.lost();
        }
        assert_eq!(*stagger.longest(), STAGGER_MAX);
        stagger.won();
        assert_eq!(*stagger.longest(), STAGGER_MAX / 2);
        for _ in 0..20 {
            stagger.won();
        }
        assert_eq!(*stagger.longest(), STAGGER_MIN);
        stagger.lost();
        assert_eq!(*stagger.longest(), STAGGER_START);
        // A lost try without a rival seen (the first release of a herd) starts it too.
        let fresh = Stagger::default();
        fresh.lost();
        assert_eq!(*fresh.longest(), STAGGER_START);
    }

    #[test]
    fn a_waiter_that_held_back_spreads_out_when_the_name_went_within_a_few_round_trips() {
        let stagger = Stagger::default();
        let round_trip = Duration::from_millis(1);
        stagger.taken(Some(Duration::from_millis(2)), round_trip);
        assert_eq!(
            *stagger.longest(),
            STAGGER_START * 2,
            "taken soon: many wait"
        );
        stagger.taken(Some(Duration::from_millis(5)), round_trip);
        assert_eq!(*stagger.longest(), STAGGER_START * 2, "between: kept");
        stagger.taken(Some(Duration::from_millis(9)), round_trip);
        assert_eq!(
            *stagger.longest(),
            STAGGER_START,
            "taken late: could be shorter"
        );
        for _ in 0..20 {
            stagger.taken(Some(Duration::ZERO), round_trip);
        }
        assert_eq!(*stagger.longest(), STAGGER_MAX);
        for _ in 0..20 {
            stagger.taken(Some(Duration::from_secs(1)), round_trip);
        }
        assert_eq!(*stagger.longest(), STAGGER_MIN);
    }

    #[test]
    fn a_deaf_waiter_backs_off_from_the_poll_interval_to_a_second() {
        let mut polls = Polls::new(Duration::from_millis(100));
        let deaf = Word::Deaf(BootInstant::now());
        let lease = held_until(None);
        let pauses: Vec<Duration> = (0..12)
            .map(|_| polls.after_conflict(&deaf, &lease))
            .collect();
        assert!(pauses[0] <= Duration::from_millis(125), "{pauses:?}");
        assert!(
            pauses[8..]
                .iter()
                .all(|p| (Duration::from_millis(750)..=Duration::from_millis(1250)).contains(p)),
            "{pauses:?}"
        );
        let total: Duration = pauses.iter().sum();
        assert!(total < Duration::from_secs(12), "{pauses:?}");
        // A poll interval slower than the bound is kept.
        let mut slow = Polls::new(Duration::from_secs(3));
        for _ in 0..3 {
            assert!(slow.after_conflict(&deaf, &lease) >= Duration::from_millis(2250));
        }
    }

    #[test]
    fn a_listening_waiter_sleeps_until_the_lease_could_expire_or_five_seconds() {
        let (_heard, word) = Freed::channel();
        let listening = Word::Listening(Freed::new(word, ()));
        let every = Duration::from_millis(100);
        let mut polls = Polls::new(every);
        let soon = held_until(Some(SystemTime::now() + Duration::from_secs(2)));
        let pause = polls.after_conflict(&listening, &soon);
        assert!(
            (Duration::from_millis(1800)..=Duration::from_millis(2100)).contains(&pause),
            "{pause:?}"
        );
        for lease in [
            held_until(Some(SystemTime::now() + Duration::from_secs(60))),
            held_until(None),
        ] {
            let pause = polls.after_conflict(&listening, &lease);
            assert!(
                (LISTENING_POLL_MAX..=LISTENING_POLL_MAX + every).contains(&pause),
                "{pause:?}"
            );
        }
        // Expired by our clock (the store's may be behind): the poll interval, never zero.
        let past = held_until(Some(SystemTime::now() - Duration::from_secs(1)));
        let pause = polls.after_conflict(&listening, &past);
        assert!((every..=every * 2).contains(&pause), "{pause:?}");
    }
}
