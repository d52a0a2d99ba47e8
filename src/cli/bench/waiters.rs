//! `singleton bench --waiters N`: what N waiters on one held name cost the store while they
//! wait, and how a release every second is handed to one of them.
//!
//! Each waiter has a connection of its own, as a waiting process on another host would. Their
//! store requests are counted on our side of the connection: every operation our code asks the
//! store for (an acquire, an inspection, the set-up of listening) counts as one.
//!
//! For the hand-offs one more waiter joins, and each holder, once it has released, waits
//! again only after half its hold: so N others wait at every release, as in a fleet whose
//! holder's host is busy elsewhere for a while, and the releaser never takes the name back
//! itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use singleton_process::store::Counted;
use singleton_process::{Error, Lock, Options, Singleton, Store};
use tokio::sync::mpsc;

use super::{Percentiles, conflict, micros};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub waiters: usize,
    /// How long the name stays held by an outsider while the waiters settle and then idle.
    pub settle: Duration,
    pub idle: Duration,
    pub handoffs: usize,
    /// How long each waiter that acquires holds the lease before it releases; it waits again
    /// half of this later.
    pub hold: Duration,
}

/// What the waiters cost.
#[derive(Debug)]
pub struct Report {
    plan: Plan,
    /// Store requests per second per waiter while the name was held.
    idle_per_waiter: f64,
    /// Store requests of all waiters from one release to the next.
    per_handoff: f64,
    /// Those of each hand-off in turn: in the first, no waiter has seen another take the name.
    each: Vec<u64>,
    handoff: Percentiles,
}

/// Runs the measurement against the store at `url`, on `name`.
pub async fn run(url: &str, name: &str, plan: Plan) -> Result<Report, Error> {
    let holder = Singleton::new(
        name,
        singleton_process::connect(url).await?,
        Options::default(),
    )?;
    let first = match holder.lock().await? {
        Lock::Locked(guard) => guard,
        Lock::Conflict(lease) => return Err(conflict(name, &lease)),
    };
    let requests = Arc::new(AtomicU64::new(0));
    let (held, mut handed) = mpsc::unbounded_channel::<(Instant, Instant)>();
    let mut tasks = tokio::task::JoinSet::new();
    let hold = plan.hold;
    let waiter = async |held: mpsc::UnboundedSender<(Instant, Instant)>| {
        let store: Arc<dyn Store> = Arc::new(Counted::new(
            singleton_process::connect(url).await?,
            Arc::clone(&requests),
        ));
        let waiter = Singleton::new(name, store, Options::default())?;
        Ok::<_, Error>(async move {
            loop {
                if let Lock::Locked(guard) = waiter.lock_wait(None).await? {
                    let acquired = Instant::now();
                    tokio::time::sleep(hold).await;
                    let releasing = Instant::now();
                    guard.release().await?;
                    if held.send((acquired, releasing)).is_err() {
                        return Ok::<_, Error>(());
                    }
                    tokio::time::sleep(hold / 2).await;
                }
            }
        })
    };
    for _ in 0..plan.waiters {
        tasks.spawn(waiter(held.clone()).await?);
    }
    tokio::time::sleep(plan.settle).await;
    let before = requests.load(Ordering::Relaxed);
    tokio::time::sleep(plan.idle).await;
    let idle = requests.load(Ordering::Relaxed) - before;
    let idle_per_waiter = idle as f64 / plan.idle.as_secs_f64() / plan.waiters.max(1) as f64;

    // The one who will be away while the first new holder holds.
    tasks.spawn(waiter(held.clone()).await?);
    tokio::time::sleep(plan.settle).await;
    let before = requests.load(Ordering::Relaxed);
    let mut released = Instant::now();
    first.release().await?;
    let mut samples = Vec::with_capacity(plan.handoffs);
    // The request count at each release: hand-off k's requests are those between release k
    // and release k + 1 (its waiters' tries, and the rejoining holder's).
    let mut counted = vec![before];
    while samples.len() < plan.handoffs {
        let Some((acquired, releasing)) = handed.recv().await else {
            break;
        };
        counted.push(requests.load(Ordering::Relaxed));
        samples.push(acquired.saturating_duration_since(released));
        released = releasing;
    }
    let during = requests.load(Ordering::Relaxed) - before;
    let each: Vec<u64> = counted.windows(2).map(|w| w[1] - w[0]).collect();
    tasks.abort_all();
    while let Some(ended) = tasks.join_next().await {
        if let Ok(Err(err)) = ended {
            return Err(err);
        }
    }
    // A waiter stopped while holding leaves its lease to expire, and one stopped mid-acquire
    // may still get it (a store call in flight, such as SQLite's on its blocking thread, runs
    // to its end): free the name until it stays free, for the next run.
    for _ in 0..20 {
        let _ = holder.store().force_release(name).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if matches!(holder.store().inspect(name).await, Ok(None)) {
            break;
        }
    }
    Ok(Report {
        plan,
        idle_per_waiter,
        per_handoff: during as f64 / samples.len().max(1) as f64,
        each,
        handoff: Percentiles::of(samples),
    })
}

impl Report {
    pub fn json(&self) -> Value {
        json!({
            "waiters": self.plan.waiters,
            "idle_seconds": self.plan.idle.as_secs_f64(),
            "idle_requests_per_waiter_per_second": self.idle_per_waiter,
            "handoffs": self.plan.handoffs,
            "requests_per_handoff": self.per_handoff,
            "requests_each_handoff": self.each,
            "handoff_us": self.handoff.json(),
        })
    }

    pub fn print(&self) {
        say!(
            "{:<28} {:.3} store requests/s per waiter ({} waiters, {:.0} s)",
            "idle waiters",
            self.idle_per_waiter,
            self.plan.waiters,
            self.plan.idle.as_secs_f64()
        );
        say!(
            "{:<28} p50 {:>10.1} µs   p99 {:>10.1} µs   {:.1} store requests each ({} hand-offs: {:?})",
            "hand-off to a waiter",
            micros(self.handoff.p50),
            micros(self.handoff.p99),
            self.per_handoff,
            self.plan.handoffs,
            self.each
        );
    }
}
