//! The guard of a held lease: background renewal and lost-lease detection.
//!
//! # The safe deadline
//! Just before an acquire or renew request is sent we note `sent` on the boot clock
//! ([`BootInstant`], `CLOCK_BOOTTIME`: it keeps counting while the host is suspended, as the
//! store's clock does). The store starts the lease when it processes the request, which is
//! later, so by the store's clock the lease lasts at least until `sent + ttl`. Our clock may run
//! slower than the store's by up to [`CLOCK_RATE_TOLERANCE`], and some delays cannot be measured
//! at all (a killed process taking time to die), hence a safety margin:
//!
//! ```text
//! safe_until = sent + ttl × (1 − 1%) − safety_margin
//! lost_at    = safe_until − grace
//! ```
//!
//! The lease is renewed every `renew_interval`; a failed renewal is retried with backoff, and a
//! renewal that takes longer than the request timeout is abandoned and sent again (the store
//! then uses a fresh connection). If no renewal has succeeded by `lost_at`, [`Event::Lost`]
//! fires ([`Loss::Unconfirmed`]) and [`LeaseGuard::lost`] completes, leaving `grace` for the
//! holder to stop before anybody else can acquire. When the store itself says the lease is no
//! longer ours, it is lost at once ([`Loss::Gone`]). The wall clock is never used for any of this.
//!
//! # The store's clock
//! Where a store reports its own clock in its replies ([`Store::expiry_on_store_clock`]), each
//! renewal also checks that the store's clock did not run ahead of ours by more than the rate
//! tolerance: a store host whose wall clock stepped forward (or a failover to a server whose
//! clock is ahead) ends leases early, before the deadline this holder counts on. Such a lease is
//! treated as lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{self, BootInstant};
use crate::error::{Error, Result};
use crate::event::{Event, Loss};
use crate::singleton::{Inner, Options};
use crate::store::{FencingToken, Hold, Holder, Lease, Outcome, Released, Store, bounded};

/// How much slower this host's monotonic clock may run than the store's clock, as a fraction.
/// Real clocks drift by parts per million; 1% leaves a wide allowance.
pub const CLOCK_RATE_TOLERANCE: f64 = 0.01;

/// The longest lease, wait or grace period accepted (a year); longer ones are almost surely typos.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest a store request may take by default before it is abandoned and tried again on a
/// fresh connection (see [`Options::request_timeout`]).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the store's clock may gain on ours beyond the rate tolerance between two replies:
/// stores report times in milliseconds at best.
const STORE_CLOCK_SLACK: Duration = Duration::from_millis(50);

/// Refuses a duration over [`MAX_DURATION`], which would overflow the clock arithmetic done
/// with it, with one line naming `what` it is.
pub(crate) fn check_duration(what: &str, value: Duration) -> Result<Duration> {
    if value > MAX_DURATION {
        return Err(Error::options(format!(
            "the {what} must be at most a year, not {}",
            humantime::format_duration(value)
        )));
    }
    Ok(value)
}

/// Lease timing derived from [`Options`], checked once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// `None`: the lease never expires.
    pub(crate) ttl: Option<Duration>,
    /// `None`: no renewal.
    renew_every: Option<Duration>,
    pub(crate) grace: Duration,
    /// From `sent` to the safe deadline.
    safe_for: Duration,
    /// How long one renew, release, inspect or watch set-up may take.
    pub(crate) request_timeout: Duration,
}

impl Timing {
    pub(crate) fn new(options: &Options) -> Result<Self> {
        if let Some(timeout) = options.request_timeout {
            if timeout.is_zero() {
                return Err(Error::options(
                    "the request timeout must be greater than zero",
                ));
            }
            check_duration("request timeout", timeout)?;
        }
        // Checked also for a lease that never expires, where they are unused: a year or more is
        // a mistake either way.
        for (what, value) in [
            ("lease length", options.lock_expire),
            ("renew interval", options.renew_interval),
            ("safety margin", Some(options.safety_margin)),
            ("grace period", options.grace),
        ] {
            if let Some(value) = value {
                check_duration(what, value)?;
            }
        }
        let Some(ttl) = options.lock_expire else {
            return Ok(Timing {
                ttl: None,
                renew_every: None,
                grace: Duration::ZERO,
                safe_for: Duration::MAX,
                request_timeout: options.request_timeout.unwrap_or(MAX_REQUEST_TIMEOUT),
            });
        };
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if ttl.is_zero() {
            return Err(Error::options("the lease length must be greater than zero"));
        }
        let renew_every = options
            .renew
            .then(|| options.renew_interval.unwrap_or(ttl / 3));
        if renew_every.is_some_and(|every| every.is_zero() || every >= ttl) {
            return Err(Error::options(format!(
                "the renew interval must be greater than zero and shorter than the lease ({})",
                show(ttl)
            )));
        }
        let grace = options.grace.unwrap_or(ttl / 5);
        let safe_for = ttl
            .mul_f64(1.0 - CLOCK_RATE_TOLERANCE)
            .checked_sub(options.safety_margin)
            .unwrap_or_default();
        let lost_after = safe_for.checked_sub(grace).unwrap_or_default();
        // A renewal must have time to be sent, answered and retried once before `lost`.
        let needed = renew_every.map_or(Duration::from_millis(1), |every| every + every / 2);
        if lost_after < needed {
            let renewal = match renew_every {
                Some(every) => format!(", renewal every {} (plus time for a retry)", show(every)),
                None => String::new(),
            };
            return Err(Error::options(format!(
                "a lease of {} leaves no time to work with: minus 1% clock tolerance, a safety margin of {} and a grace period of {}{renewal}, nothing is left; use a longer lease or a shorter grace period",
                show(ttl),
                show(options.safety_margin),
                show(grace),
            )));
        }
        // A third of the renew interval leaves time for two more tries before `lost`.
        let request_timeout = options
            .request_timeout
            .unwrap_or_else(|| (renew_every.unwrap_or(ttl / 3) / 3).min(MAX_REQUEST_TIMEOUT));
        Ok(Timing {
            ttl: Some(ttl),
            renew_every,
            grace,
            safe_for,
            request_timeout,
        })
    }

    pub(crate) fn safe_until(&self, sent: BootInstant) -> Option<BootInstant> {
        self.ttl?;
        sent.checked_add(self.safe_for)
    }

    fn lost_at(&self, sent: BootInstant) -> Option<BootInstant> {
        self.safe_until(sent).map(|safe| safe - self.grace)
    }

    /// How long one acquire may take: an answer after `lost_at` could not be used anyway, so
    /// up to that (at most [`MAX_REQUEST_TIMEOUT`], unless the request timeout is longer).
    pub(crate) fn acquire_timeout(&self) -> Duration {
        let useful = self.ttl.map_or(MAX_REQUEST_TIMEOUT, |_| {
            self.safe_for.saturating_sub(self.grace)
        });
        useful
            .min(MAX_REQUEST_TIMEOUT)
            .max(self.request_timeout)
            .max(Duration::from_millis(1))
    }

    /// Whether an acquire sent at `sent` and answered at `received` came back too late to be
    /// used: at or after the moment its lease would already count as lost.
    pub(crate) fn answered_too_late(&self, sent: BootInstant, received: BootInstant) -> bool {
        self.lost_at(sent)
            .is_some_and(|lost_at| received >= lost_at)
    }
}

/// The state of one acquisition, shared by its guard, its singleton and its renewal task.
#[derive(Debug)]
pub(crate) struct Held {
    lease: Mutex<Lease>,
    safe_until: watch::Sender<Option<BootInstant>>,
    lost: CancellationToken,
    loss: OnceLock<Loss>,
    stop: CancellationToken,
    releasing: AtomicBool,
    keeper: Mutex<Option<JoinHandle<()>>>,
    /// When the acquire's answer arrived: the store took the lease no later than this.
    received: BootInstant,
}

impl Held {
    /// Starts holding `lease`, acquired with a request sent at `sent` and answered at
    /// `received`, and spawns its keeper.
    pub(crate) fn start(
        inner: &Arc<Inner>,
        lease: Lease,
        sent: BootInstant,
        received: BootInstant,
    ) -> Arc<Held> {
        let held = Arc::new(Held {
            lease: Mutex::new(lease),
            safe_until: watch::Sender::new(inner.timing.safe_until(sent)),
            lost: CancellationToken::new(),
            loss: OnceLock::new(),
            stop: CancellationToken::new(),
            releasing: AtomicBool::new(false),
            keeper: Mutex::new(None),
            received,
        });
        if inner.timing.ttl.is_some() {
            let task = tokio::spawn(keep(Arc::clone(inner), Arc::clone(&held), sent, received));
            *lock(&held.keeper) = Some(task);
        }
        held
    }

    pub(crate) fn lease(&self) -> Lease {
        lock(&self.lease).clone()
    }

    pub(crate) fn safe_until(&self) -> Option<BootInstant> {
        *self.safe_until.borrow()
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// What is left of a hold of `at_least` from the acquisition, by this host's measure (never
    /// less than by the store's); `None` once it is over.
    pub(crate) fn hold(&self, at_least: Duration) -> Option<Hold> {
        let elapsed = BootInstant::now().saturating_duration_since(self.received);
        let remaining = at_least.saturating_sub(elapsed);
        (!remaining.is_zero()).then_some(Hold {
            after_acquisition: at_least,
            remaining,
        })
    }

    /// Marks the start of the release; returns `false` if it had already begun. Stops the keeper
    /// and waits for it, so that no renewal runs during or after the release.
    pub(crate) async fn begin_release(&self) -> bool {
        if self.releasing.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.stop.cancel();
        let keeper = lock(&self.keeper).take();
        if let Some(keeper) = keeper {
            let _ = keeper.await;
        }
        true
    }

    pub(crate) fn mark_lost(&self, inner: &Inner, loss: Loss, reason: String) {
        if self.loss.set(loss).is_err() {
            return;
        }
        self.lost.cancel();
        let lease = self.lease();
        inner.emit(Event::Lost {
            name: lease.name,
            token: lease.token,
            loss,
            reason,
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Shortest pause before retrying a failed renewal.
const RETRY_MIN: Duration = Duration::from_millis(50);

/// Declares the lease lost if its keeper ends other than by being stopped (a panic, say), so
/// that nobody goes on believing a lease that nothing renews or watches.
struct KeeperAlive<'a> {
    inner: &'a Inner,
    held: &'a Held,
}

impl Drop for KeeperAlive<'_> {
    fn drop(&mut self) {
        if !self.held.stop.is_cancelled() {
            self.held.mark_lost(
                self.inner,
                Loss::Unconfirmed,
                "the task that renews the lease stopped".into(),
            );
        }
    }
}

/// The keeper of one lease: renews it on schedule and declares it lost at `lost_at`.
async fn keep(inner: Arc<Inner>, held: Arc<Held>, sent: BootInstant, received: BootInstant) {
    let _alive = KeeperAlive {
        inner: &inner,
        held: &held,
    };
    let timing = inner.timing;
    let (Some(ttl), Some(mut lost_at)) = (timing.ttl, timing.lost_at(sent)) else {
        return;
    };
    let mut store_clock = StoreClock::new(&*inner.store, ttl);
    store_clock.check(&held.lease(), sent, received);
    let mut next_renewal = timing.renew_every.and_then(|every| sent.checked_add(every));
    let mut retry_pause = RETRY_MIN;
    loop {
        let renewal_due = async {
            match next_renewal {
                Some(at) => clock::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = held.stop.cancelled() => return,
            _ = clock::sleep_until(lost_at) => {
                let reason = match timing.renew_every {
                    Some(_) => "no renewal succeeded before the safe deadline",
                    None => "the lease ran out (renewal is off)",
                };
                held.mark_lost(&inner, Loss::Unconfirmed, reason.into());
                return;
            }
            _ = renewal_due => {}
        }

        let sent = BootInstant::now();
        let lease = held.lease();
        let renewing = bounded(
            &*inner.store,
            "renew",
            timing.request_timeout,
            inner.store.renew(&lease, ttl),
        );
        let renewed = tokio::select! {
            biased;
            _ = held.stop.cancelled() => return,
            _ = clock::sleep_until(lost_at) => {
                held.mark_lost(
                    &inner,
                    Loss::Unconfirmed,
                    "the store did not answer the renewal before the safe deadline".into(),
                );
                return;
            }
            renewed = renewing => renewed,
        };
        let received = BootInstant::now();
        match renewed {
            Ok(lease) => {
                if let Some(ahead) = store_clock.check(&lease, sent, received) {
                    held.mark_lost(
                        &inner,
                        Loss::Gone,
                        format!(
                            "the store's clock ran {} ahead of this host's since the last renewal, so its leases end earlier than this host can tell",
                            humantime::format_duration(round_ms(ahead))
                        ),
                    );
                    return;
                }
                if let Some(at) = timing.lost_at(sent) {
                    lost_at = at;
                }
                held.safe_until.send_replace(timing.safe_until(sent));
                *lock(&held.lease) = lease.clone();
                next_renewal = timing.renew_every.and_then(|every| sent.checked_add(every));
                retry_pause = RETRY_MIN;
                inner.emit(Event::Renewed { lease });
            }
            Err(Error::Lost { reason, .. }) => {
                held.mark_lost(&inner, Loss::Gone, reason);
                return;
            }
            Err(err) => {
                // An abandoned request is tried again at once: the store sends it on a fresh
                // connection. Other failures back off.
                let pause = match err {
                    Error::Timeout { .. } => RETRY_MIN,
                    _ => retry_pause,
                };
                inner.emit(Event::Error {
                    name: inner.name.clone(),
                    message: format!("{err}; retrying in {}", humantime::format_duration(pause)),
                });
                next_renewal = BootInstant::now().checked_add(pause);
                let cap = timing.renew_every.unwrap_or(retry_pause) / 2;
                retry_pause = (retry_pause * 2).min(cap.max(RETRY_MIN));
            }
        }
    }
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().min(u64::MAX as u128) as u64)
}

/// Follows the store's clock through the expiries it reports, where they are read off its own
/// clock ([`Store::expiry_on_store_clock`]), to catch it running ahead of ours.
struct StoreClock {
    ttl: Option<Duration>,
    /// The store's time at the last reply, and when we sent its request.
    last: Option<(SystemTime, BootInstant)>,
}

impl StoreClock {
    fn new(store: &dyn Store, ttl: Duration) -> Self {
        StoreClock {
            ttl: store.expiry_on_store_clock().then_some(ttl),
            last: None,
        }
    }

    /// Notes the store's time in `lease`, the reply to a request sent at `sent` and answered at
    /// `received`; returns how far the store's clock ran ahead of ours since the last reply,
    /// if it did by more than the tolerance.
    fn check(
        &mut self,
        lease: &Lease,
        sent: BootInstant,
        received: BootInstant,
    ) -> Option<Duration> {
        let store_now = lease.expires?.checked_sub(self.ttl?)?;
        let ahead = self.last.and_then(|(last_store, last_sent)| {
            // The store handled the last request after `last_sent` and this one before
            // `received`: no more than this passed between them by our clock.
            let ours = received.saturating_duration_since(last_sent);
            let theirs = store_now.duration_since(last_store).unwrap_or_default();
            let allowed = ours.mul_f64(1.0 + CLOCK_RATE_TOLERANCE) + STORE_CLOCK_SLACK;
            (theirs > allowed).then(|| theirs - ours)
        });
        self.last = Some((store_now, sent));
        ahead
    }
}

/// Proof that we hold a lease. It renews the lease in the background, tells its holder at once
/// when the lease is lost ([`lost`](Self::lost)), and releases it best-effort when dropped.
///
/// Prefer [`release`](Self::release): it reports whether the release reached the store. A drop
/// inside a tokio runtime releases in a background task; outside one the lease simply expires.
#[must_use = "the lease is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LeaseGuard {
    inner: Arc<Inner>,
    held: Arc<Held>,
}

impl LeaseGuard {
    pub(crate) fn new(inner: Arc<Inner>, held: Arc<Held>) -> Self {
        LeaseGuard { inner, held }
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The fencing token of this acquisition: pass it to the systems the job writes to.
    pub fn token(&self) -> FencingToken {
        lock(&self.held.lease).token
    }

    /// Who holds it (this process, with this acquisition's unique id).
    pub fn holder(&self) -> Holder {
        lock(&self.held.lease).holder.clone()
    }

    /// The lease as the store last reported it.
    pub fn lease(&self) -> Lease {
        self.held.lease()
    }

    /// The instant (on the boot clock, which counts suspended time) until which the lease is
    /// certainly ours, as of the last successful acquire or renew; `None` for a lease that never
    /// expires.
    pub fn safe_until(&self) -> Option<BootInstant> {
        self.held.safe_until()
    }

    /// Follows [`safe_until`](Self::safe_until) as renewals move it, e.g. to hand the deadline to
    /// a process that must enforce it even if this one stalls.
    pub fn safe_until_changes(&self) -> watch::Receiver<Option<BootInstant>> {
        self.held.safe_until.subscribe()
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        self.held.is_lost()
    }

    /// How the lease was lost, once it is: [`Loss::Gone`] means the store said so, and the
    /// holder must stop at once rather than use the grace period.
    pub fn loss(&self) -> Option<Loss> {
        self.held.loss.get().copied()
    }

    /// Completes when the lease is lost: stop working on the singleton's behalf at once.
    pub async fn lost(&self) {
        self.held.lost.cancelled().await;
    }

    /// A token cancelled when the lease is lost, to hand to code that should stop then.
    /// Cancelling it yourself does not release the lease.
    pub fn lost_token(&self) -> CancellationToken {
        self.held.lost.child_token()
    }

    /// Stops renewal and gives the lease back (owner-checked), recording the run as ended with
    /// [`Outcome::Released`]. Returns `false` if it was not ours any more (the lease then counts
    /// as lost, [`Loss::Gone`]).
    pub async fn release(self) -> Result<bool> {
        self.finish(Outcome::Released, Duration::ZERO)
            .await
            .map(|released| released != Released::NotHeld)
    }

    /// Ends the run: stops renewal, records `outcome` as the name's last run and, in the same
    /// store operation, gives the lease back, or keeps it in the store until `hold_at_least`
    /// after its acquisition (by the store's clock) if that is not over yet and the lease is
    /// not lost. A kept lease is not renewed: it simply expires then, and contenders meet a
    /// conflict until it does. This is how a cron job runs once per tick across hosts whose
    /// clocks and cron daemons fire a little apart (`run --hold-at-least`).
    ///
    /// Returns [`Released::Kept`] when the lease stays, [`Released::Released`] when it was given
    /// back, and [`Released::NotHeld`] if it was not ours any more (it then counts as lost,
    /// [`Loss::Gone`]; the outcome is still recorded if the run is the last on record).
    pub async fn finish(self, outcome: Outcome, hold_at_least: Duration) -> Result<Released> {
        self.inner.finish(&self.held, outcome, hold_at_least).await
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.held.releasing.load(Ordering::SeqCst) {
            return;
        }
        self.held.stop.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            let held = Arc::clone(&self.held);
            runtime.spawn(async move {
                let _ = inner.finish(&held, Outcome::Released, Duration::ZERO).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(options: Options) -> Result<Timing> {
        Timing::new(&options)
    }

    #[test]
    fn default_timing_leaves_room_to_renew() {
        let t = timing(Options::default()).unwrap();
        assert_eq!(t.ttl, Some(Duration::from_secs(15)));
        assert_eq!(t.renew_every, Some(Duration::from_secs(5)));
        assert_eq!(t.grace, Duration::from_secs(3));
        // 15 s × 0.99 − 200 ms
        assert_eq!(t.safe_for, Duration::from_millis(14_650));
        // A third of the renew interval; an acquire may take up to 5 s.
        assert_eq!(t.request_timeout, Duration::from_secs(5) / 3);
        assert_eq!(t.acquire_timeout(), MAX_REQUEST_TIMEOUT);
    }

    #[test]
    fn short_leases_get_short_requests() {
        let t = timing(Options::default().lock_expire(Duration::from_secs(1))).unwrap();
        assert_eq!(t.request_timeout, Duration::from_secs(1) / 9);
        // Up to `lost_at`: 990 ms − 200 ms margin − 200 ms grace.
        assert_eq!(t.acquire_timeout(), Duration::from_millis(590));
        let t = timing(Options::default().lock_expire(Duration::from_secs(600))).unwrap();
        assert_eq!(t.request_timeout, MAX_REQUEST_TIMEOUT);
        let t = timing(Options::default().request_timeout(Duration::from_secs(9))).unwrap();
        assert_eq!(t.request_timeout, Duration::from_secs(9));
        assert_eq!(t.acquire_timeout(), Duration::from_secs(9));
        assert!(timing(Options::default().request_timeout(Duration::ZERO)).is_err());
    }

    #[test]
    fn an_acquire_answered_after_lost_at_is_too_late() {
        let t = timing(Options::default().lock_expire(Duration::from_secs(10))).unwrap();
        let sent = BootInstant::from_since_start(Duration::from_secs(100));
        // lost_at = sent + 9.9 s − 0.2 s − 2 s
        let lost_at = sent + Duration::from_millis(7_700);
        assert!(!t.answered_too_late(sent, lost_at - Duration::from_millis(1)));
        assert!(t.answered_too_late(sent, lost_at));
        let forever = timing(Options::default().lock_expire(None)).unwrap();
        assert!(!forever.answered_too_late(sent, sent + MAX_DURATION));
    }

    #[test]
    fn impossible_timings_are_refused() {
        let err = timing(Options::default().lock_expire(Duration::ZERO)).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
        let err = timing(
            Options::default()
                .lock_expire(Duration::from_secs(3))
                .grace(Duration::from_secs(2)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("shorter grace"), "{err}");
        let err = timing(Options::default().lock_expire(Duration::from_secs(400 * 24 * 3600)))
            .unwrap_err();
        assert!(err.to_string().contains("at most a year"), "{err}");
        assert!(
            timing(
                Options::default()
                    .lock_expire(Duration::from_secs(3))
                    .renew_interval(Duration::from_secs(3))
            )
            .is_err()
        );
    }

    #[test]
    fn never_expiring_leases_have_no_deadline() {
        let t = timing(Options::default().lock_expire(None)).unwrap();
        assert_eq!(t.safe_until(BootInstant::now()), None);
    }

    fn lease_expiring(at: SystemTime) -> Lease {
        Lease {
            name: "n".into(),
            holder: Holder::current(""),
            token: FencingToken(1),
            created: at,
            expires: Some(at),
        }
    }

    #[test]
    fn a_store_clock_that_runs_ahead_is_caught() {
        let ttl = Duration::from_secs(3);
        let mut clock = StoreClock {
            ttl: Some(ttl),
            last: None,
        };
        let t0 = BootInstant::from_since_start(Duration::from_secs(50));
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ms = Duration::from_millis;
        assert_eq!(
            clock.check(&lease_expiring(wall + ttl), t0, t0 + ms(2)),
            None
        );
        // One second later by both clocks: fine.
        let t1 = t0 + ms(1000);
        assert_eq!(
            clock.check(&lease_expiring(wall + ms(1001) + ttl), t1, t1 + ms(2)),
            None
        );
        // The store's clock stepped 10 s forward meanwhile.
        let t2 = t1 + ms(1000);
        let ahead = clock
            .check(&lease_expiring(wall + ms(12_001) + ttl), t2, t2 + ms(2))
            .expect("the jump is caught");
        assert!(ahead > ms(9_900) && ahead < ms(10_000), "{ahead:?}");
        // A store whose replies carry no clock of its own is not checked.
        let mut unchecked = StoreClock {
            ttl: None,
            last: None,
        };
        assert_eq!(unchecked.check(&lease_expiring(wall), t0, t0), None);
        assert_eq!(
            unchecked.check(&lease_expiring(wall + ms(99_000)), t1, t1),
            None
        );
    }
}
