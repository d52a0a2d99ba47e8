//! The store conformance suite: plain async checks that every [`Store`] must pass, run unchanged
//! against each backend by the project's tests. Write your own store? Run it too:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = singleton_process::connect("memory:").await.unwrap();
//! singleton_process::conformance::Suite::new(store).run_all().await;
//! # }
//! ```
//!
//! Each check panics with a message saying what the store did wrong. Every check uses names of
//! its own, so checks may run in parallel against one store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::store::{
    Acquire, Finish, Freed, Heard, Hold, Holder, LastRun, Lease, MAX_NAME_LEN, Outcome, Released,
    Store,
};

/// The first word within 10 s that `wanted` accepts, passing over others. Word is a hint that
/// may come late or twice: this waits long enough that only a store that does not send it
/// fails.
async fn heard(freed: &mut Freed, wanted: impl Fn(&Heard) -> bool) -> Option<Heard> {
    let waiting = async {
        while let Some(heard) = freed.next().await {
            if wanted(&heard) {
                return Some(heard);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .ok()
        .flatten()
}

/// Whether word that the name may have been freed comes within 10 s.
async fn heard_freed(freed: &mut Freed) -> bool {
    heard(freed, |heard| {
        matches!(heard, Heard::Freed | Heard::Changed)
    })
    .await
    .is_some()
}

/// The suite, bound to one store.
#[derive(Debug, Clone)]
pub struct Suite {
    store: Arc<dyn Store>,
    short_ttl: Duration,
}

/// A lease long enough that no check sees it expire by accident.
const LONG_TTL: Duration = Duration::from_secs(60);

impl Suite {
    /// The suite for `store`, using 500 ms leases where a check waits for expiry.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Suite {
            store,
            short_ttl: Duration::from_millis(500),
        }
    }

    /// Uses `ttl` where a check waits for a lease to expire (for stores with a minimum lease).
    pub fn short_ttl(mut self, ttl: Duration) -> Self {
        self.short_ttl = ttl;
        self
    }

    /// Runs every check.
    pub async fn run_all(&self) {
        self.exclusive().await;
        self.conflict_names_the_holder().await;
        self.renew_and_release_check_the_owner().await;
        self.renew_extends_the_lease().await;
        self.expired_lease_is_taken_over().await;
        self.expired_lease_cannot_be_renewed().await;
        self.tokens_increase_across_release_and_expiry().await;
        self.never_expiring_lease_stays().await;
        self.exists_and_list().await;
        self.list_shows_key_like_names_once().await;
        self.force_release_frees_and_keeps_the_counter().await;
        self.odd_names_work().await;
        self.one_winner_among_contenders(16, 5).await;
        self.finish_records_the_last_run().await;
        self.a_dead_holder_leaves_an_unknown_run().await;
        self.a_force_released_run_is_unknown_until_finished().await;
        self.a_kept_lease_holds_after_the_run().await;
        self.last_runs_lists_every_ended_run().await;
    }

    /// The checks of the last run on record and of leases kept after their run (SPEC §10),
    /// which [`run_all`](Self::run_all) runs too.
    pub async fn run_last_run_checks(&self) {
        self.finish_records_the_last_run().await;
        self.a_dead_holder_leaves_an_unknown_run().await;
        self.a_force_released_run_is_unknown_until_finished().await;
        self.a_kept_lease_holds_after_the_run().await;
        self.last_runs_lists_every_ended_run().await;
    }

    fn store(&self) -> &dyn Store {
        &*self.store
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Acquire {
        self.store()
            .acquire(name, holder, ttl)
            .await
            .unwrap_or_else(|e| panic!("acquire {name:?}: {e}"))
    }

    async fn must_acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Lease {
        match self.acquire(name, holder, ttl).await {
            Acquire::Acquired { lease, .. } => lease,
            Acquire::Held(other) => panic!("{name:?} should be free, but is {other}"),
        }
    }

    async fn must_be_held(&self, name: &str, holder: &Holder) -> Lease {
        match self.acquire(name, holder, Some(LONG_TTL)).await {
            Acquire::Held(other) => other,
            Acquire::Acquired { lease, .. } => {
                panic!("{name:?} should be held, but {} acquired it", lease.holder)
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Released {
        self.store()
            .release(lease)
            .await
            .unwrap_or_else(|e| panic!("release {:?}: {e}", lease.name))
    }

    async fn finish(&self, lease: &Lease, outcome: Outcome, hold: Option<Hold>) -> Released {
        self.store()
            .finish(lease, &Finish { outcome, hold })
            .await
            .unwrap_or_else(|e| panic!("finish {:?}: {e}", lease.name))
    }

    async fn last_run(&self, name: &str) -> Option<LastRun> {
        self.store()
            .last_run(name)
            .await
            .unwrap_or_else(|e| panic!("last_run {name:?}: {e}"))
    }

    /// The last run of `name`, which must be `lease`'s run, ended with `outcome`.
    async fn must_have_run(&self, name: &str, lease: &Lease, outcome: Outcome) -> LastRun {
        let run = self
            .last_run(name)
            .await
            .unwrap_or_else(|| panic!("{name:?} must have a last run ({outcome})"));
        assert_eq!(run.name, name);
        assert_eq!(
            (run.token, &run.holder, run.outcome),
            (lease.token, &lease.holder, outcome),
            "the last run of {name:?} must be token {} of {} with {outcome}, but is {run}",
            lease.token,
            lease.holder
        );
        let started_off = match run.started.duration_since(lease.created) {
            Ok(later) => later,
            Err(earlier) => earlier.duration(),
        };
        // A store that reports the acquisition by its own clock reports what it records; one
        // that reports the client's time (taken before the request) is off by a round trip.
        let slack = if self.store().expiry_on_store_clock() {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(250)
        };
        assert!(
            started_off <= slack,
            "the run started when its lease was acquired ({}), not at {}",
            humantime::format_rfc3339_millis(lease.created),
            humantime::format_rfc3339_millis(run.started)
        );
        if let Some(ended) = run.ended {
            assert!(
                ended + Duration::from_millis(5) >= run.started,
                "a run cannot end before it started: {run}"
            );
        }
        run
    }

    async fn inspect(&self, name: &str) -> Option<Lease> {
        self.store()
            .inspect(name)
            .await
            .unwrap_or_else(|e| panic!("inspect {name:?}: {e}"))
    }

    /// Waits until a short-lived lease has certainly expired by any sane store clock.
    async fn outlive_short_ttl(&self) {
        tokio::time::sleep(self.short_ttl + self.short_ttl / 2 + Duration::from_millis(100)).await;
    }

    /// A second acquisition of a held name is refused; after release it succeeds.
    pub async fn exclusive(&self) {
        let name = unique("exclusive");
        let (a, b) = (holder("a"), holder("b"));
        let lease = self.must_acquire(&name, &a, Some(LONG_TTL)).await;
        assert_eq!(lease.name, name);
        assert_eq!(lease.holder, a);
        let seen = self.must_be_held(&name, &b).await;
        assert_eq!(seen.holder.id, a.id, "the conflict must name the holder");
        assert_eq!(self.release(&lease).await, Released::Released);
        let lease_b = self.must_acquire(&name, &b, Some(LONG_TTL)).await;
        assert_eq!(self.release(&lease_b).await, Released::Released);
    }

    /// A conflict reports the holder's id, host, pid and label, its token, and when it started.
    pub async fn conflict_names_the_holder(&self) {
        let name = unique("conflict");
        let a = holder("first holder");
        let before = std::time::SystemTime::now() - Duration::from_secs(5);
        let lease = self.must_acquire(&name, &a, Some(LONG_TTL)).await;
        let seen = self.must_be_held(&name, &holder("b")).await;
        assert_eq!(
            seen.holder, a,
            "holder id, host, pid and label must round-trip"
        );
        assert_eq!(seen.token, lease.token);
        let after = std::time::SystemTime::now() + Duration::from_secs(5);
        assert!(
            before <= seen.created && seen.created <= after,
            "created {:?} should be about now",
            seen.created
        );
        let expires = seen.expires.expect("a lease with a TTL reports its expiry");
        assert!(
            expires > seen.created,
            "the lease must expire after it was created"
        );
        self.release(&lease).await;
    }

    /// Nobody but the holder (same id AND token) can renew or release a lease.
    pub async fn renew_and_release_check_the_owner(&self) {
        let name = unique("owner");
        let a = holder("a");
        let lease = self.must_acquire(&name, &a, Some(LONG_TTL)).await;

        let mut forged = lease.clone();
        forged.holder = holder("intruder");
        match self.store().renew(&forged, LONG_TTL).await {
            Err(Error::Lost { .. }) => {}
            other => panic!("renewing with another holder id must fail with Lost, got {other:?}"),
        }
        assert_eq!(self.release(&forged).await, Released::NotHeld);

        let mut stale = lease.clone();
        stale.token.0 = lease.token.0.wrapping_sub(1);
        assert_eq!(self.release(&stale).await, Released::NotHeld);

        let still = self
            .inspect(&name)
            .await
            .expect("the lease must survive others' attempts");
        assert_eq!(still.holder.id, a.id);
        self.store()
            .renew(&lease, LONG_TTL)
            .await
            .unwrap_or_else(|e| panic!("the holder's own renew must succeed: {e}"));
        assert_eq!(self.release(&lease).await, Released::Released);
        assert_eq!(
            self.release(&lease).await,
            Released::NotHeld,
            "release is not repeatable"
        );
        assert!(self.inspect(&name).await.is_none());
        match self.store().renew(&lease, LONG_TTL).await {
            Err(Error::Lost { .. }) => {}
            other => panic!("renewing a released lease must fail with Lost, got {other:?}"),
        }
    }

    /// A renewed lease outlives its first expiry.
    pub async fn renew_extends_the_lease(&self) {
        let name = unique("renew");
        let lease = self
            .must_acquire(&name, &holder("a"), Some(self.short_ttl))
            .await;
        for _ in 0..3 {
            tokio::time::sleep(self.short_ttl / 3).await;
            self.store()
                .renew(&lease, self.short_ttl)
                .await
                .unwrap_or_else(|e| panic!("renew: {e}"));
        }
        self.must_be_held(&name, &holder("b")).await;
        self.release(&lease).await;
    }

    /// A lease that has expired by the store's clock is taken over in one acquire, which reports
    /// the expired lease; the old holder can then neither renew nor release.
    pub async fn expired_lease_is_taken_over(&self) {
        let name = unique("expiry");
        let (a, b) = (holder("a"), holder("b"));
        let old = self.must_acquire(&name, &a, Some(self.short_ttl)).await;
        self.must_be_held(&name, &b).await;
        self.outlive_short_ttl().await;
        assert!(
            self.inspect(&name).await.is_none(),
            "an expired lease is not live"
        );
        let new = match self.acquire(&name, &b, Some(LONG_TTL)).await {
            Acquire::Acquired { lease, took_over } => {
                let previous = took_over.expect("the acquire must report the expired lease");
                assert_eq!(previous.holder.id, a.id);
                lease
            }
            Acquire::Held(other) => panic!("an expired lease must be taken over, but {other}"),
        };
        assert!(new.token > old.token);
        assert!(
            matches!(
                self.store().renew(&old, LONG_TTL).await,
                Err(Error::Lost { .. })
            ),
            "the old holder must not renew a taken-over lease"
        );
        assert_eq!(self.release(&old).await, Released::NotHeld);
        assert_eq!(self.inspect(&name).await.map(|l| l.holder.id), Some(b.id));
        self.release(&new).await;
    }

    /// A lease that expired, even if nobody took it over, can no longer be renewed: its holder
    /// has already been told it is lost, and someone else may be acquiring it right now.
    pub async fn expired_lease_cannot_be_renewed(&self) {
        let name = unique("late-renew");
        let lease = self
            .must_acquire(&name, &holder("a"), Some(self.short_ttl))
            .await;
        self.outlive_short_ttl().await;
        match self.store().renew(&lease, LONG_TTL).await {
            Err(Error::Lost { .. }) => {}
            other => panic!("renewing an expired lease must fail with Lost, got {other:?}"),
        }
        let next = self.must_acquire(&name, &holder("b"), Some(LONG_TTL)).await;
        assert!(next.token > lease.token);
        self.release(&next).await;
    }

    /// Tokens strictly increase across release and expiry.
    pub async fn tokens_increase_across_release_and_expiry(&self) {
        let name = unique("tokens");
        let first = self.must_acquire(&name, &holder("a"), Some(LONG_TTL)).await;
        self.release(&first).await;
        let second = self
            .must_acquire(&name, &holder("b"), Some(self.short_ttl))
            .await;
        assert!(second.token > first.token, "token after release must grow");
        self.outlive_short_ttl().await;
        let third = self.must_acquire(&name, &holder("c"), Some(LONG_TTL)).await;
        assert!(third.token > second.token, "token after expiry must grow");
        self.release(&third).await;
        let other = self
            .must_acquire(&unique("tokens-other"), &holder("d"), Some(LONG_TTL))
            .await;
        self.release(&other).await;
    }

    /// A lease without TTL never expires and is still owner-checked.
    pub async fn never_expiring_lease_stays(&self) {
        let name = unique("forever");
        let lease = self.must_acquire(&name, &holder("a"), None).await;
        assert_eq!(lease.expires, None);
        self.outlive_short_ttl().await;
        let seen = self.must_be_held(&name, &holder("b")).await;
        assert_eq!(seen.expires, None);
        assert_eq!(self.release(&lease).await, Released::Released);
    }

    /// `inspect` and `list` show live leases only.
    pub async fn exists_and_list(&self) {
        let (x, y, gone) = (unique("list-x"), unique("list-y"), unique("list-gone"));
        assert!(self.inspect(&x).await.is_none());
        let lx = self.must_acquire(&x, &holder("a"), Some(LONG_TTL)).await;
        let ly = self.must_acquire(&y, &holder("b"), Some(LONG_TTL)).await;
        let lg = self.must_acquire(&gone, &holder("c"), Some(LONG_TTL)).await;
        self.release(&lg).await;
        assert_eq!(self.inspect(&x).await.map(|l| l.token), Some(lx.token));
        let listed: BTreeSet<String> = self
            .store()
            .list()
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert!(
            listed.contains(&x) && listed.contains(&y),
            "list must show live leases"
        );
        assert!(
            !listed.contains(&gone),
            "list must not show released leases"
        );
        self.release(&lx).await;
        self.release(&ly).await;
        assert!(self.inspect(&x).await.is_none());
    }

    /// Names that look like a store's own keys or paths are listed once each, as themselves.
    pub async fn list_shows_key_like_names_once(&self) {
        let base = unique("keys");
        let names = [
            base.clone(),
            format!("{base}/child"),
            format!("lease:{base}"),
            format!("fence:{base}"),
            format!("lease/{base}"),
            format!("info/{base}"),
            format!("{base}*"),
            format!("{base}:"),
        ];
        let mut leases = Vec::new();
        for name in &names {
            leases.push(self.must_acquire(name, &holder("a"), Some(LONG_TTL)).await);
        }
        let listed: Vec<String> = self
            .store()
            .list()
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
            .into_iter()
            .map(|l| l.name)
            .filter(|name| name.contains(&base))
            .collect();
        let mut expected: Vec<String> = names.to_vec();
        expected.sort();
        let mut got = listed.clone();
        got.sort();
        assert_eq!(got, expected, "list must show each name exactly once");
        assert!(
            listed.windows(2).all(|pair| pair[0] <= pair[1]),
            "list must be ordered by name: {listed:?}"
        );
        for lease in &leases {
            self.release(lease).await;
        }
    }

    /// An operator's force-release frees the name; the old holder cannot renew; tokens go on.
    pub async fn force_release_frees_and_keeps_the_counter(&self) {
        let name = unique("force");
        let lease = self.must_acquire(&name, &holder("a"), Some(LONG_TTL)).await;
        let removed = self
            .store()
            .force_release(&name)
            .await
            .unwrap_or_else(|e| panic!("force_release: {e}"))
            .expect("force_release returns the lease it removed");
        assert_eq!(removed.holder.id, lease.holder.id);
        assert!(self.inspect(&name).await.is_none());
        assert!(matches!(
            self.store().renew(&lease, LONG_TTL).await,
            Err(Error::Lost { .. })
        ));
        let next = self.must_acquire(&name, &holder("b"), Some(LONG_TTL)).await;
        assert!(next.token > lease.token);
        assert_eq!(self.release(&lease).await, Released::NotHeld);
        self.release(&next).await;
        let none = self
            .store()
            .force_release(&name)
            .await
            .expect("force_release");
        assert!(
            none.is_none(),
            "force-releasing a free name removes nothing"
        );
    }

    /// `finish` gives the lease back and records the run with its outcome; a run still going is
    /// no last run; a stale or forged finish changes nothing.
    pub async fn finish_records_the_last_run(&self) {
        let name = unique("last-run");
        let (a, b, c) = (holder("a"), holder("b"), holder("c"));
        assert!(
            self.last_run(&name).await.is_none(),
            "a new name has no last run"
        );
        let first = self.must_acquire(&name, &a, Some(LONG_TTL)).await;
        assert!(
            self.last_run(&name).await.is_none(),
            "a run still going is not the last run"
        );
        // Long enough that a start recorded at the end would show.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            self.finish(&first, Outcome::Exit(3), None).await,
            Released::Released
        );
        assert!(self.inspect(&name).await.is_none(), "finish frees the name");
        let run = self.must_have_run(&name, &first, Outcome::Exit(3)).await;
        assert!(run.ended.is_some(), "a finished run has an end");

        let second = self.must_acquire(&name, &b, Some(LONG_TTL)).await;
        assert!(second.token > first.token);
        self.must_have_run(&name, &first, Outcome::Exit(3)).await;
        assert_eq!(
            self.finish(&second, Outcome::Signal(9), None).await,
            Released::Released
        );
        self.must_have_run(&name, &second, Outcome::Signal(9)).await;

        let third = self.must_acquire(&name, &c, Some(LONG_TTL)).await;
        assert_eq!(self.release(&third).await, Released::Released);
        self.must_have_run(&name, &third, Outcome::Released).await;

        // Neither a finished run's holder nor a forger can change the record or the name.
        let fourth = self.must_acquire(&name, &a, Some(LONG_TTL)).await;
        let forged = Lease {
            holder: holder("forger"),
            ..fourth.clone()
        };
        for stale in [&first, &second, &forged] {
            assert_eq!(
                self.finish(stale, Outcome::Exit(0), None).await,
                Released::NotHeld
            );
        }
        self.must_have_run(&name, &third, Outcome::Released).await;
        assert_eq!(
            self.inspect(&name).await.map(|l| l.token),
            Some(fourth.token)
        );
        self.release(&fourth).await;
    }

    /// A holder that died leaves an unknown run: its expired lease reads as one, the next
    /// acquire keeps it on record, and a late finish of its holder sets its outcome without
    /// touching the new lease.
    pub async fn a_dead_holder_leaves_an_unknown_run(&self) {
        let name = unique("unknown-run");
        let (a, b) = (holder("a"), holder("b"));
        let dead = self.must_acquire(&name, &a, Some(self.short_ttl)).await;
        self.outlive_short_ttl().await;
        assert!(self.inspect(&name).await.is_none());
        self.must_have_run(&name, &dead, Outcome::Unknown).await;
        let next = self.must_acquire(&name, &b, Some(LONG_TTL)).await;
        self.must_have_run(&name, &dead, Outcome::Unknown).await;
        assert_eq!(
            self.finish(&dead, Outcome::Lost, None).await,
            Released::NotHeld
        );
        self.must_have_run(&name, &dead, Outcome::Lost).await;
        let live = self
            .inspect(&name)
            .await
            .expect("the new lease is untouched");
        assert_eq!((live.token, &live.holder), (next.token, &next.holder));
        assert_eq!(
            self.finish(&next, Outcome::Exit(0), None).await,
            Released::Released
        );
        self.must_have_run(&name, &next, Outcome::Exit(0)).await;
    }

    /// A force-released run is on record as unknown until its holder finishes it.
    pub async fn a_force_released_run_is_unknown_until_finished(&self) {
        let name = unique("forced-run");
        let lease = self.must_acquire(&name, &holder("a"), Some(LONG_TTL)).await;
        self.store()
            .force_release(&name)
            .await
            .unwrap_or_else(|e| panic!("force_release: {e}"))
            .expect("force_release returns the lease it removed");
        self.must_have_run(&name, &lease, Outcome::Unknown).await;
        assert_eq!(
            self.finish(&lease, Outcome::Lost, None).await,
            Released::NotHeld
        );
        self.must_have_run(&name, &lease, Outcome::Lost).await;
    }

    /// A finish with a hold leaves the lease held after the run, to its acquisition plus the
    /// hold (longer or shorter than its TTL), then the name is free and the run stays on record.
    pub async fn a_kept_lease_holds_after_the_run(&self) {
        let name = unique("kept");
        let (a, b) = (holder("a"), holder("b"));
        let hold = |length: Duration| {
            Some(Hold {
                after_acquisition: length,
                remaining: length,
            })
        };
        // Shorter than the TTL.
        let lease = self.must_acquire(&name, &a, Some(LONG_TTL)).await;
        let length = self.short_ttl * 2;
        match self.finish(&lease, Outcome::Exit(0), hold(length)).await {
            Released::Kept { .. } => {}
            other => panic!("a finish with a hold must keep the lease, got {other:?}"),
        }
        let kept = self.must_be_held(&name, &b).await;
        assert_eq!((kept.token, &kept.holder), (lease.token, &lease.holder));
        let run = self.must_have_run(&name, &lease, Outcome::Exit(0)).await;
        assert!(run.holds(&kept), "the kept lease is the run's own");
        tokio::time::sleep(length + self.short_ttl / 2 + Duration::from_millis(100)).await;
        assert!(
            self.inspect(&name).await.is_none(),
            "a kept lease expires at its acquisition plus the hold, not at its TTL"
        );
        self.must_have_run(&name, &lease, Outcome::Exit(0)).await;
        let next = match self.acquire(&name, &b, Some(LONG_TTL)).await {
            Acquire::Acquired { lease, took_over } => {
                assert_eq!(
                    took_over, None,
                    "a lease kept after its finished run is not reported as taken over"
                );
                lease
            }
            Acquire::Held(other) => panic!("the hold is over, but {other}"),
        };
        assert!(next.token > lease.token, "fencing is unchanged by a hold");
        self.must_have_run(&name, &lease, Outcome::Exit(0)).await;

        // A hold that is over already gives the lease back.
        let over = Some(Hold {
            after_acquisition: Duration::from_millis(1),
            remaining: Duration::ZERO,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            self.finish(&next, Outcome::Exit(0), over).await,
            Released::Released
        );
        assert!(self.inspect(&name).await.is_none());

        // Longer than the TTL.
        let short = self.must_acquire(&name, &a, Some(self.short_ttl)).await;
        assert!(matches!(
            self.finish(&short, Outcome::Exit(1), hold(self.short_ttl * 3))
                .await,
            Released::Kept { .. }
        ));
        self.outlive_short_ttl().await;
        let kept = self
            .inspect(&name)
            .await
            .expect("a hold longer than the TTL keeps the lease past its TTL");
        assert_eq!(kept.token, short.token);
        self.must_have_run(&name, &short, Outcome::Exit(1)).await;
    }

    /// `last_runs` lists the names with an ended run, in name order, and no name without one.
    pub async fn last_runs_lists_every_ended_run(&self) {
        let prefix = unique("runs");
        let (x, y, z) = (
            format!("{prefix}-x"),
            format!("{prefix}-y"),
            format!("{prefix}-z"),
        );
        let lz = self.must_acquire(&z, &holder("z"), Some(LONG_TTL)).await;
        let ly = self.must_acquire(&y, &holder("y"), Some(LONG_TTL)).await;
        self.finish(&ly, Outcome::Exit(2), None).await;
        let lx = self.must_acquire(&x, &holder("x"), Some(LONG_TTL)).await;
        self.finish(&lx, Outcome::Exit(0), None).await;
        let runs = self
            .store()
            .last_runs()
            .await
            .unwrap_or_else(|e| panic!("last_runs: {e}"));
        let ours: Vec<_> = runs
            .iter()
            .filter(|run| run.name.starts_with(&prefix))
            .map(|run| (run.name.as_str(), run.token, run.outcome))
            .collect();
        assert_eq!(
            ours,
            [
                (x.as_str(), lx.token, Outcome::Exit(0)),
                (y.as_str(), ly.token, Outcome::Exit(2))
            ],
            "last_runs lists ended runs only, in name order"
        );
        let names: Vec<_> = runs.iter().map(|run| run.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "last_runs is ordered by name");
        self.release(&lz).await;
    }

    /// Starts watching `name`; panics if the store cannot.
    async fn watch(&self, name: &str) -> Freed {
        self.store()
            .watch(name)
            .await
            .unwrap_or_else(|e| panic!("watch {name:?}: {e}"))
            .unwrap_or_else(|| panic!("{} cannot tell waiters", self.store().describe()))
    }

    /// For a store whose [`Store::watch`] tells waiters (not every store can): a watcher hears
    /// a release and a force-release of its name. Not part of [`Suite::run_all`]; panics if the
    /// store cannot watch.
    pub async fn watchers_hear_releases(&self) {
        let name = unique("watch");
        let mut freed = self.watch(&name).await;
        let lease = self.must_acquire(&name, &holder("a"), Some(LONG_TTL)).await;
        assert_eq!(self.release(&lease).await, Released::Released);
        assert!(
            heard_freed(&mut freed).await,
            "the watcher of {name:?} did not hear its release"
        );
        let lease = self.must_acquire(&name, &holder("b"), Some(LONG_TTL)).await;
        self.store()
            .force_release(&name)
            .await
            .unwrap_or_else(|e| panic!("force_release {name:?}: {e}"))
            .expect("force_release returns the lease it removed");
        assert!(
            heard_freed(&mut freed).await,
            "the watcher of {name:?} did not hear the force-release of {lease}"
        );
    }

    /// For a store whose [`Store::watch`] also tells of acquires (not every store can): a
    /// watcher hears that somebody took its name, with an expiry no later than the lease's
    /// where the store tells one, and then that it was freed. Not part of
    /// [`Suite::run_all`]; panics if the store cannot watch.
    pub async fn watchers_hear_acquires(&self) {
        let name = unique("taken");
        let mut freed = self.watch(&name).await;
        let lease = self.must_acquire(&name, &holder("a"), Some(LONG_TTL)).await;
        let taken = heard(&mut freed, |heard| matches!(heard, Heard::Taken { .. })).await;
        let Some(Heard::Taken { expires }) = taken else {
            panic!("the watcher of {name:?} did not hear that {lease} took it");
        };
        if let (Some(told), Some(expires)) = (expires, lease.expires) {
            // Both come from the store's record of the lease, but may be rounded differently
            // (milliseconds, microseconds); a wrong unit is off by far more than a second.
            let apart = told
                .duration_since(expires)
                .unwrap_or_else(|e| e.duration());
            assert!(
                apart < Duration::from_secs(1),
                "the watcher of {name:?} was told the lease expires at {told:?}, and it expires at {expires:?}"
            );
        }
        assert_eq!(self.release(&lease).await, Released::Released);
        assert!(
            heard_freed(&mut freed).await,
            "the watcher of {name:?} did not hear its release after its acquire"
        );
    }

    /// Names with quotes, wildcards, separators, spaces and non-ASCII work, and are compared
    /// byte for byte.
    pub async fn odd_names_work(&self) {
        let base = unique("odd");
        let longest = format!("{base}{}", "ü".repeat((MAX_NAME_LEN - base.len()) / 2));
        let names = [
            format!("{base}'; DROP TABLE x; --"),
            format!("{base}\"quoted\""),
            format!("{base}100%_off"),
            format!("{base}*?[a-z]{{}}"),
            format!("{base}/a/b\\c"),
            format!("{base} with  spaces "),
            format!("{base}名前-ñ-🦀"),
            format!("{base}$where:{{}}.$"),
            format!("{base}Job"),
            format!("{base}job"),
            format!("{base}a"),
            format!("{base}a "),
            longest,
        ];
        let mut leases = Vec::new();
        for name in &names {
            assert!(name.len() <= MAX_NAME_LEN, "{name:?} too long for the test");
            let lease = self.must_acquire(name, &holder("a"), Some(LONG_TTL)).await;
            assert_eq!(&lease.name, name);
            leases.push(lease);
        }
        for name in &names {
            let seen = self
                .inspect(name)
                .await
                .unwrap_or_else(|| panic!("{name:?} is held"));
            assert_eq!(&seen.name, name, "names must round-trip exactly");
        }
        let listed: BTreeSet<String> = self
            .store()
            .list()
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
            .into_iter()
            .map(|l| l.name)
            .collect();
        for name in &names {
            assert!(listed.contains(name), "list must show {name:?}");
        }
        for lease in &leases {
            assert_eq!(
                self.release(lease).await,
                Released::Released,
                "{:?}",
                lease.name
            );
        }
        for name in &names {
            assert!(self.inspect(name).await.is_none(), "{name:?} must be free");
        }
    }

    /// `contenders` concurrent acquisitions of one name: exactly one wins each round, and tokens
    /// grow from round to round.
    pub async fn one_winner_among_contenders(&self, contenders: usize, rounds: usize) {
        let name = unique("race");
        let mut last_token = None;
        for round in 0..rounds {
            let attempts = (0..contenders).map(|i| {
                let store = Arc::clone(&self.store);
                let name = name.clone();
                tokio::spawn(async move {
                    store
                        .acquire(&name, &holder(&format!("contender {i}")), Some(LONG_TTL))
                        .await
                })
            });
            let mut winners = Vec::new();
            let mut holders_seen = BTreeSet::new();
            for attempt in attempts.collect::<Vec<_>>() {
                match attempt
                    .await
                    .expect("task")
                    .unwrap_or_else(|e| panic!("acquire: {e}"))
                {
                    Acquire::Acquired { lease, .. } => winners.push(lease),
                    Acquire::Held(other) => {
                        holders_seen.insert(other.holder.id);
                    }
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "round {round}: exactly one contender must win"
            );
            let winner = winners.pop().expect("one winner");
            assert!(
                holders_seen.iter().all(|id| *id == winner.holder.id),
                "round {round}: losers must all see the winner"
            );
            assert!(last_token.is_none_or(|last| winner.token > last));
            last_token = Some(winner.token);
            assert_eq!(self.release(&winner).await, Released::Released);
        }
    }
}

/// A name no other check or test run uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn holder(label: &str) -> Holder {
    Holder::current(label)
}
