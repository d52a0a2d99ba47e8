//! `singleton bench`: our acquire+release cycle next to the store's raw write pair, measured in
//! the same run on the same store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use singleton_process::{Error, Lock, Options, Singleton, Store};

/// What one run measured.
#[derive(Debug)]
pub struct Report {
    pub store: String,
    pub iterations: usize,
    pub floor: Percentiles,
    pub cycle: Percentiles,
}

/// p50 and p99 of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
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
}

const WARM_UP: usize = 20;

/// Alternates one raw write pair and one acquire+release cycle, `iterations` times each.
pub async fn run(store: Arc<dyn Store>, iterations: usize) -> Result<Report, Error> {
    let name = format!("singleton-bench-{}", std::process::id());
    let scratch = format!("{name}-scratch");
    let singleton = Singleton::new(&name, Arc::clone(&store), Options::default())?;
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
            Lock::Conflict(lease) => {
                return Err(Error::InvalidOptions {
                    reason: format!("the benchmark's name {name:?} is {lease}"),
                });
            }
        }
        let cycle_took = started.elapsed();
        if i >= WARM_UP {
            floor.push(floor_took);
            cycle.push(cycle_took);
        }
    }
    Ok(Report {
        store: store.describe().to_owned(),
        iterations,
        floor: Percentiles::of(floor),
        cycle: Percentiles::of(cycle),
    })
}

impl Report {
    fn ratio(&self) -> f64 {
        self.cycle.p50.as_secs_f64() / self.floor.p50.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn print(&self, json: bool) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        if json {
            let value = json!({
                "store": self.store,
                "iterations": self.iterations,
                "floor_us": { "p50": us(self.floor.p50), "p99": us(self.floor.p99) },
                "cycle_us": { "p50": us(self.cycle.p50), "p99": us(self.cycle.p99) },
                "ratio_p50": self.ratio(),
            });
            println!("{value}");
        } else {
            println!("store:                    {}", self.store);
            println!("iterations:               {}", self.iterations);
            println!(
                "raw write pair (floor):   p50 {:>9.1} µs   p99 {:>9.1} µs",
                us(self.floor.p50),
                us(self.floor.p99)
            );
            println!(
                "acquire+release cycle:    p50 {:>9.1} µs   p99 {:>9.1} µs",
                us(self.cycle.p50),
                us(self.cycle.p99)
            );
            println!("cycle / floor (p50):      {:.2}×", self.ratio());
        }
    }
}
