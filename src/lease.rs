//! The guard of a held lease: background renewal and lost-lease detection.
//!
//! # The safe deadline
//! Just before an acquire or renew request is sent we note `sent` on the monotonic clock. The
//! store starts the lease when it processes the request, which is later, so by the store's clock
//! the lease lasts at least until `sent + ttl`. Our clock may run slower than the store's by up to
//! [`CLOCK_RATE_TOLERANCE`], and some delays cannot be measured at all (a killed process taking time
//! to die), hence a safety margin:
//!
//! ```text
//! safe_until = sent + ttl × (1 − 1%) − safety_margin
//! lost_at    = safe_until − grace
//! ```
//!
//! The lease is renewed every `renew_interval`; a failed renewal is retried with backoff. If no
//! renewal has succeeded by `lost_at`, [`Event::Lost`] fires and [`LeaseGuard::lost`] completes,
//! leaving `grace` for the holder to stop before anybody else can acquire. The wall clock is never
//! used for any of this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::singleton::{Inner, Options};
use crate::store::{FencingToken, Holder, Lease};

/// How much slower this host's monotonic clock may run than the store's clock, as a fraction.
/// Real clocks drift by parts per million; 1% leaves a wide allowance.
pub const CLOCK_RATE_TOLERANCE: f64 = 0.01;

/// The longest lease, wait or grace period accepted (a year); longer ones are almost surely typos.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

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
}

impl Timing {
    pub(crate) fn new(options: &Options) -> Result<Self> {
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
        Ok(Timing {
            ttl: Some(ttl),
            renew_every,
            grace,
            safe_for,
        })
    }

    fn safe_until(&self, sent: Instant) -> Option<Instant> {
        self.ttl?;
        sent.checked_add(self.safe_for)
    }

    fn lost_at(&self, sent: Instant) -> Option<Instant> {
        self.safe_until(sent).map(|safe| safe - self.grace)
    }
}

/// The state of one acquisition, shared by its guard, its singleton and its renewal task.
#[derive(Debug)]
pub(crate) struct Held {
    lease: Mutex<Lease>,
    safe_until: watch::Sender<Option<Instant>>,
    lost: CancellationToken,
    stop: CancellationToken,
    releasing: AtomicBool,
    keeper: Mutex<Option<JoinHandle<()>>>,
}

impl Held {
    /// Starts holding `lease`, acquired with a request sent at `sent`, and spawns its keeper.
    pub(crate) fn start(inner: &Arc<Inner>, lease: Lease, sent: Instant) -> Arc<Held> {
        let held = Arc::new(Held {
            lease: Mutex::new(lease),
            safe_until: watch::Sender::new(inner.timing.safe_until(sent)),
            lost: CancellationToken::new(),
            stop: CancellationToken::new(),
            releasing: AtomicBool::new(false),
            keeper: Mutex::new(None),
        });
        if inner.timing.ttl.is_some() {
            let task = tokio::spawn(keep(Arc::clone(inner), Arc::clone(&held), sent));
            *lock(&held.keeper) = Some(task);
        }
        held
    }

    pub(crate) fn lease(&self) -> Lease {
        lock(&self.lease).clone()
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

    pub(crate) fn mark_lost(&self, inner: &Inner, reason: String) {
        if self.lost.is_cancelled() {
            return;
        }
        self.lost.cancel();
        let lease = self.lease();
        inner.emit(Event::Lost {
            name: lease.name,
            token: lease.token,
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

/// The keeper of one lease: renews it on schedule and declares it lost at `lost_at`.
async fn keep(inner: Arc<Inner>, held: Arc<Held>, sent: Instant) {
    let timing = inner.timing;
    let (Some(ttl), Some(mut lost_at)) = (timing.ttl, timing.lost_at(sent)) else {
        return;
    };
    let mut next_renewal = timing.renew_every.map(|every| sent + every);
    let mut retry_pause = RETRY_MIN;
    loop {
        let renewal_due = async {
            match next_renewal {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = held.stop.cancelled() => return,
            _ = sleep_until(lost_at) => {
                let reason = match timing.renew_every {
                    Some(_) => "no renewal succeeded before the safe deadline",
                    None => "the lease ran out (renewal is off)",
                };
                held.mark_lost(&inner, reason.into());
                return;
            }
            _ = renewal_due => {}
        }

        let sent = Instant::now();
        let lease = held.lease();
        let renewed = tokio::select! {
            biased;
            _ = held.stop.cancelled() => return,
            _ = sleep_until(lost_at) => {
                held.mark_lost(&inner, "the store did not answer the renewal before the safe deadline".into());
                return;
            }
            renewed = inner.store.renew(&lease, ttl) => renewed,
        };
        match renewed {
            Ok(lease) => {
                if let Some(at) = timing.lost_at(sent) {
                    lost_at = at;
                }
                held.safe_until.send_replace(timing.safe_until(sent));
                *lock(&held.lease) = lease.clone();
                next_renewal = timing.renew_every.map(|every| sent + every);
                retry_pause = RETRY_MIN;
                inner.emit(Event::Renewed { lease });
            }
            Err(Error::Lost { reason, .. }) => {
                held.mark_lost(&inner, reason);
                return;
            }
            Err(err) => {
                inner.emit(Event::Error {
                    name: inner.name.clone(),
                    message: format!(
                        "{err}; retrying in {}",
                        humantime::format_duration(retry_pause)
                    ),
                });
                next_renewal = Some(Instant::now() + retry_pause);
                let cap = timing.renew_every.unwrap_or(retry_pause) / 2;
                retry_pause = (retry_pause * 2).min(cap.max(RETRY_MIN));
            }
        }
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

    /// The monotonic instant until which the lease is certainly ours, as of the last successful
    /// acquire or renew; `None` for a lease that never expires.
    pub fn safe_until(&self) -> Option<Instant> {
        *self.held.safe_until.borrow()
    }

    /// Follows [`safe_until`](Self::safe_until) as renewals move it, e.g. to hand the deadline to
    /// a process that must enforce it even if this one stalls.
    pub fn safe_until_changes(&self) -> watch::Receiver<Option<Instant>> {
        self.held.safe_until.subscribe()
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        self.held.lost.is_cancelled()
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

    /// Stops renewal and gives the lease back (owner-checked). Returns `false` if it was not ours
    /// any more.
    pub async fn release(self) -> Result<bool> {
        self.inner.release(&self.held).await
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
                let _ = inner.release(&held).await;
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
        assert_eq!(t.safe_until(Instant::now()), None);
    }
}
