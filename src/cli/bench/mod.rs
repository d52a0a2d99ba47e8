//! `singleton bench`: in one run against one store, our acquire+release cycle next to the
//! store's raw write pair (the floor), throughput of contenders hammering one name (checking that
//! every acquisition was exclusive), and hand-off latency from a release to a waiter's acquisition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use singleton_process::store::mask_password;
use singleton_process::{Error, FencingToken, Lock, Options, Singleton, Store};

pub mod names;
pub mod waiters;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub iterations: usize,
    pub contenders: usize,
    pub hammer_for: Duration,
    pub handoffs: usize,
}

/// What one run measured.
#[derive(Debug)]
pub struct Report {
    store: String,
    plan: Plan,
    floor: Percentiles,
    cycle: Percentiles,
    throughput: Throughput,
    handoff: Percentiles,
}

#[derive(Debug)]
struct Throughput {
    acquisitions: usize,
    attempts: usize,
    per_second: f64,
    overlaps: usize,
}

/// p50 and p99 of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: Duration,
    p99: Duration,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(index).copied().unwrap_or_default()
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
        }
    }

    fn json(&self) -> Value {
        json!({ "p50": micros(self.p50), "p99": micros(self.p99) })
    }
}

/// The cycle's p50 over the floor's.
fn ratio(floor: &Percentiles, cycle: &Percentiles) -> f64 {
    cycle.p50.as_secs_f64() / floor.p50.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// One line of p50 and p99.
fn print_row(label: &str, p: &Percentiles) {
    say!(
        "{label:<28} p50 {:>10.1} µs   p99 {:>10.1} µs",
        micros(p.p50),
        micros(p.p99)
    );
}

/// The floor, the cycle and their ratio, as `singleton bench` prints them.
fn print_cycle(floor: &Percentiles, cycle: &Percentiles) {
    print_row("raw write pair (floor)", floor);
    print_row("acquire+release cycle", cycle);
    say!(
        "{:<28} {:.2}× the floor (p50)",
        "cycle",
        ratio(floor, cycle)
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

const WARM_UP: usize = 20;

/// Runs every measurement against the store at `url`.
pub async fn run(url: &str, store: Arc<dyn Store>, plan: Plan) -> Result<Report, Error> {
    let name = format!("singleton-bench-{}", std::process::id());
    let (floor, cycle) = cycle_vs_floor(&store, &name, plan.iterations).await?;
    let throughput = hammer(url, &format!("{name}-contended"), plan).await?;
    let handoff = handoff(&store, &format!("{name}-handoff"), plan.handoffs).await?;
    Ok(Report {
        store: store.describe().to_owned(),
        plan,
        floor,
        cycle,
        throughput,
        handoff,
    })
}

/// Prints a measurement of `store`: its JSON with the store's name added, or its human form.
pub fn show(store: &dyn Store, json: bool, mut value: Value, human: impl FnOnce()) {
    if json {
        value["store"] = store.describe().into();
        say!("{value}");
    } else {
        say!("store: {}", store.describe());
        human();
    }
}

fn conflict(name: &str, lease: &singleton_process::Lease) -> Error {
    Error::InvalidOptions {
        reason: format!("the benchmark's name {name:?} is {lease}; is another benchmark running?"),
    }
}

/// Alternates one raw write pair and one acquire+release cycle, so that both see the same load.
async fn cycle_vs_floor(
    store: &Arc<dyn Store>,
    name: &str,
    iterations: usize,
) -> Result<(Percentiles, Percentiles), Error> {
    let scratch = format!("{name}-scratch");
    let singleton = Singleton::new(name, Arc::clone(store), Options::default())?;
    let mut floor = Vec::with_capacity(iterations);
    let mut cycle = Vec::with_capacity(iterations);
    for i in 0..WARM_UP + iterations {
        let started = Instant::now();
        store.benchmark_floor(&scratch).await?;
        let floor_took = started.elapsed();

        let started = Instant::now();
        match singleton.lock().await? {
            Lock::Locked(guard) => {
                guard.release().await?;
            }
            Lock::Conflict(lease) => return Err(conflict(name, &lease)),
        }
        let cycle_took = started.elapsed();
        if i >= WARM_UP {
            floor.push(floor_took);
            cycle.push(cycle_took);
        }
    }
    Ok((Percentiles::of(floor), Percentiles::of(cycle)))
}

/// `contenders` tasks, each with its own connection, try to lock one name back to back for
/// `hammer_for`. Every acquisition's interval (from lock returned to release sent) is recorded,
/// and afterwards checked for overlaps and token order.
async fn hammer(url: &str, name: &str, plan: Plan) -> Result<Throughput, Error> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    let stop_at = started + plan.hammer_for;
    for _ in 0..plan.contenders {
        let store = singleton_process::connect(url).await?;
        let singleton = Singleton::new(name, store, Options::default())?;
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut attempts = 0usize;
            while Instant::now() < stop_at {
                attempts += 1;
                if let Lock::Locked(guard) = singleton.lock().await? {
                    let from = Instant::now();
                    let token = guard.token();
                    let to = Instant::now();
                    guard.release().await?;
                    held.push((from, to, token));
                }
                // Let the other contenders' tasks run between attempts.
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>((held, attempts))
        }));
    }
    let mut intervals: Vec<(Instant, Instant, FencingToken)> = Vec::new();
    let mut attempts = 0;
    for task in tasks {
        let (held, tried) = task
            .await
            .map_err(|e| Error::store(mask_password(url), "benchmark", e))??;
        intervals.extend(held);
        attempts += tried;
    }
    let elapsed = started.elapsed();
    intervals.sort_by_key(|&(from, _, _)| from);
    let overlaps = intervals
        .windows(2)
        .filter(|pair| pair[0].1 > pair[1].0 || pair[0].2 >= pair[1].2)
        .count();
    Ok(Throughput {
        acquisitions: intervals.len(),
        attempts,
        per_second: intervals.len() as f64 / elapsed.as_secs_f64(),
        overlaps,
    })
}

/// A holder releases while a waiter waits in `lock_wait` (hearing of the release where the store
/// tells, else polling); measures release-to-acquire.
async fn handoff(store: &Arc<dyn Store>, name: &str, rounds: usize) -> Result<Percentiles, Error> {
    let holder = Singleton::new(name, Arc::clone(store), Options::default())?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let guard = match holder.lock().await? {
            Lock::Locked(guard) => guard,
            Lock::Conflict(lease) => return Err(conflict(name, &lease)),
        };
        let waiter = Singleton::new(name, Arc::clone(store), Options::default())?;
        let waiting = tokio::spawn(async move {
            let outcome = waiter.lock_wait(None).await;
            (outcome, Instant::now())
        });
        // Release at a random point of the waiter's polling cycle.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..120))).await;
        let released_at = Instant::now();
        guard.release().await?;
        let (outcome, acquired_at) = waiting
            .await
            .map_err(|e| Error::store(store.describe(), "benchmark", e))?;
        match outcome? {
            Lock::Locked(next) => {
                next.release().await?;
            }
            Lock::Conflict(lease) => return Err(conflict(name, &lease)),
        }
        samples.push(acquired_at.saturating_duration_since(released_at));
    }
    Ok(Percentiles::of(samples))
}

impl Report {
    fn ratio(&self) -> f64 {
        ratio(&self.floor, &self.cycle)
    }

    pub fn print(&self, json: bool) {
        if json {
            let value = json!({
                "store": self.store,
                "iterations": self.plan.iterations,
                "floor_us": self.floor.json(),
                "cycle_us": self.cycle.json(),
                "ratio_p50": self.ratio(),
                "contended": {
                    "contenders": self.plan.contenders,
                    "seconds": self.plan.hammer_for.as_secs_f64(),
                    "acquisitions": self.throughput.acquisitions,
                    "attempts": self.throughput.attempts,
                    "acquisitions_per_second": self.throughput.per_second,
                    "overlaps": self.throughput.overlaps,
                },
                "handoff_us": self.handoff.json(),
            });
            say!("{value}");
            return;
        }
        say!("store: {}", self.store);
        print_cycle(&self.floor, &self.cycle);
        let t = &self.throughput;
        say!(
            "{:<28} {:.0} acquisitions/s by {} contenders ({} of {} attempts won), {} overlaps",
            "contended",
            t.per_second,
            self.plan.contenders,
            t.acquisitions,
            t.attempts,
            t.overlaps
        );
        print_row("hand-off (release→acquire)", &self.handoff);
    }

    /// Whether every contended acquisition was exclusive.
    pub fn exclusive(&self) -> bool {
        self.throughput.overlaps == 0
    }
}
