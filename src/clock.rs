//! The clock that lease deadlines are measured on.
//!
//! A holder's safe deadline must count every moment its lease ages in the store, including the
//! time this host spends suspended (a laptop's lid closed, a VM paused by its hypervisor and
//! resumed): the store's clock runs on meanwhile, and another host may acquire the lease. Linux's
//! `CLOCK_MONOTONIC`, which tokio's [`Instant`](tokio::time::Instant) and timers use, stops
//! while the host is suspended; `CLOCK_BOOTTIME` does not. So deadlines are [`BootInstant`]s,
//! and [`sleep_until`] waits on a `timerfd` of `CLOCK_BOOTTIME`, which fires at once on waking
//! up if its deadline passed during the suspend. On other systems both fall back to tokio's
//! monotonic clock.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// The clock deadlines are read from: `CLOCK_BOOTTIME` on Linux (it counts suspended time).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const SOURCE: nix::time::ClockId = nix::time::ClockId::CLOCK_BOOTTIME;

/// A point in time on [`SOURCE`], the clock that lease deadlines are measured on: like
/// [`std::time::Instant`], but it keeps counting while the host is suspended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Duration);

impl BootInstant {
    /// Now.
    pub fn now() -> Self {
        BootInstant(now_since_boot())
    }

    /// `self + duration`, or `None` if that cannot be represented.
    pub fn checked_add(self, duration: Duration) -> Option<Self> {
        self.0.checked_add(duration).map(BootInstant)
    }

    /// `self - duration`, or `None` before the clock's start.
    pub fn checked_sub(self, duration: Duration) -> Option<Self> {
        self.0.checked_sub(duration).map(BootInstant)
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// How long from now until this instant; zero if it has passed.
    pub fn remaining(self) -> Duration {
        self.saturating_duration_since(BootInstant::now())
    }

    /// The time since the clock's start (boot, on Linux), as the clock reads it.
    pub fn since_start(self) -> Duration {
        self.0
    }

    /// The instant `since_start` after the clock's start.
    pub fn from_since_start(since_start: Duration) -> Self {
        BootInstant(since_start)
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;

    /// # Panics
    /// If the result overflows; use [`checked_add`](Self::checked_add) for durations from input.
    fn add(self, duration: Duration) -> BootInstant {
        self.checked_add(duration)
            .expect("overflow when adding a duration to a BootInstant")
    }
}

impl Sub<Duration> for BootInstant {
    type Output = BootInstant;

    /// Saturates at the clock's start.
    fn sub(self, duration: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(duration))
    }
}

impl fmt::Debug for BootInstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootInstant({:?})", self.0)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn now_since_boot() -> Duration {
    // CLOCK_BOOTTIME exists since Linux 2.6.39, so this cannot fail on a kernel we run on.
    // Were it to, no deadline could be trusted: stop rather than go on without one.
    match nix::time::clock_gettime(SOURCE) {
        Ok(now) => Duration::new(now.tv_sec() as u64, now.tv_nsec() as u32),
        Err(_) => std::process::abort(),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn now_since_boot() -> Duration {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    // Offset by a second so that no instant is the clock's start itself.
    START.get_or_init(std::time::Instant::now).elapsed() + Duration::from_secs(1)
}

/// Waits until `deadline` has passed on [`SOURCE`], also across a suspend of the host: on
/// waking up, a deadline that passed meanwhile is due at once. Cancel-safe.
///
/// Needs a tokio runtime with its I/O driver (`enable_all`, as `#[tokio::main]` gives), as
/// the network stores do too: the wait is a `timerfd` registered with it.
pub async fn sleep_until(deadline: BootInstant) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Ok(timer) = BootTimer::new(deadline) {
        timer.wait().await;
        return;
    }
    // No timerfd (seccomp, exhausted descriptors): sleep on tokio's clock in short steps, so
    // that a suspend delays the wake-up by at most one step.
    const STEP: Duration = Duration::from_millis(50);
    loop {
        let left = deadline.remaining();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(STEP)).await;
    }
}

/// A one-shot `timerfd` on `CLOCK_BOOTTIME`, armed for an absolute deadline.
#[cfg(any(target_os = "linux", target_os = "android"))]
struct BootTimer(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

#[cfg(any(target_os = "linux", target_os = "android"))]
impl BootTimer {
    fn new(deadline: BootInstant) -> std::io::Result<Self> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
        let timer = TimerFd::new(
            ClockId::CLOCK_BOOTTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // An absolute time of zero would disarm the timer instead of firing it.
        let at = deadline.since_start().max(Duration::from_nanos(1));
        timer.set(
            Expiration::OneShot(TimeSpec::from_duration(at)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        let fd = std::os::fd::OwnedFd::from(timer);
        // SAFETY: the `AsyncFd` owns the descriptor, and it is closed only when that drops.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }?;
        Ok(BootTimer(fd))
    }

    async fn wait(&self) {
        loop {
            let Ok(mut ready) = self.0.readable().await else {
                // The reactor is gone (runtime shutting down): nothing will wait for us.
                return std::future::pending().await;
            };
            // The timer is readable once it has fired; reading clears it.
            let mut expirations = [0u8; 8];
            match nix::unistd::read(self.0.get_ref(), &mut expirations) {
                Ok(_) => return,
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                // Anything else (cannot happen for a timerfd): treat the deadline as due,
                // the safe way round.
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn deadlines_are_read_from_clock_boottime() {
        // CLOCK_BOOTTIME counts suspended time; CLOCK_MONOTONIC, tokio's clock, does not.
        assert_eq!(SOURCE, nix::time::ClockId::CLOCK_BOOTTIME);
        let boottime = || {
            let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
            Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
        };
        let before = boottime();
        let now = BootInstant::now().since_start();
        let after = boottime();
        assert!(
            before <= now && now <= after,
            "{before:?} {now:?} {after:?}"
        );
    }

    #[tokio::test]
    async fn sleep_until_waits_for_the_deadline_on_the_boot_clock() {
        let start = BootInstant::now();
        let deadline = start + Duration::from_millis(30);
        sleep_until(deadline).await;
        assert!(BootInstant::now() >= deadline);
        // A deadline in the past is due at once.
        let early = std::time::Instant::now();
        sleep_until(start).await;
        sleep_until(BootInstant::from_since_start(Duration::ZERO)).await;
        assert!(early.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn arithmetic_saturates_or_reports_overflow() {
        let t = BootInstant::from_since_start(Duration::from_secs(5));
        assert_eq!(
            t - Duration::from_secs(9),
            BootInstant::from_since_start(Duration::ZERO)
        );
        assert_eq!(t.checked_add(Duration::MAX), None);
        assert_eq!(
            (t + Duration::from_secs(1)).saturating_duration_since(t),
            Duration::from_secs(1)
        );
        assert_eq!(
            t.saturating_duration_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
