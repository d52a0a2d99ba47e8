//! `singleton bench --names N`: the acquire+release cycle, and `list`, with N other live leases
//! in the store, as a store shared by many jobs holds them.
//!
//! The N leases are this benchmark's own (a holder of its own, a 10-minute lease each), taken
//! before and given back after, owner-checked as any release: nobody else's lease is touched.
//! Stores that keep a row per name (the SQL stores, MongoDB) keep the N free rows afterwards,
//! as they keep every name's fencing counter; run it against a scratch table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use singleton_process::store::{Acquire, Holder, Lease};
use singleton_process::{Error, Store};
use tokio::task::JoinSet;

use super::{Percentiles, cycle_vs_floor, print_cycle, ratio};

/// How many of the N leases are taken or given back at once.
const AT_ONCE: usize = 32;

/// What the N other leases did to the cycle and to `list`.
#[derive(Debug)]
pub struct Report {
    names: usize,
    filled_in: Duration,
    floor: Percentiles,
    cycle: Percentiles,
    listed: usize,
    list_took: Duration,
}

/// Takes `names` leases besides `name`, measures the cycle on `name` (`iterations` times) and
/// one `list`, then gives the leases back.
pub async fn run(
    store: &Arc<dyn Store>,
    name: &str,
    names: usize,
    iterations: usize,
) -> Result<Report, Error> {
    let holder = Holder::current("singleton bench --names".to_owned());
    let started = Instant::now();
    let (leases, failed) = in_parallel(store, (0..names).collect(), {
        let (name, holder) = (name.to_owned(), holder.clone());
        move |store, i| {
            let (name, holder) = (format!("{name}-{i}"), holder.clone());
            async move {
                match store
                    .acquire(&name, &holder, Some(Duration::from_secs(600)))
                    .await?
                {
                    Acquire::Acquired { lease, .. } => Ok(lease),
                    Acquire::Held(lease) => Err(super::conflict(&name, &lease)),
                }
            }
        }
    })
    .await;
    let filled_in = started.elapsed();
    let measured = match failed {
        None => measure(store, name, iterations).await,
        Some(err) => Err(err),
    };
    let (_, not_given_back) = in_parallel(store, leases, |store, lease: Lease| async move {
        store.release(&lease).await.map(|_| ())
    })
    .await;
    let (floor, cycle, listed, list_took) = measured?;
    if let Some(err) = not_given_back {
        return Err(err);
    }
    Ok(Report {
        names,
        filled_in,
        floor,
        cycle,
        listed,
        list_took,
    })
}

async fn measure(
    store: &Arc<dyn Store>,
    name: &str,
    iterations: usize,
) -> Result<(Percentiles, Percentiles, usize, Duration), Error> {
    let (floor, cycle) = cycle_vs_floor(store, name, iterations).await?;
    let started = Instant::now();
    let listed = store.list().await?.len();
    Ok((floor, cycle, listed, started.elapsed()))
}

/// `each(store, item)` for every item, [`AT_ONCE`] at a time: what succeeded, in no particular
/// order, and the first error, after which no more are started.
async fn in_parallel<I, T, F, Fut>(
    store: &Arc<dyn Store>,
    items: Vec<I>,
    each: F,
) -> (Vec<T>, Option<Error>)
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, I) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    let mut done = Vec::with_capacity(items.len());
    let mut failed = None;
    let mut running = JoinSet::new();
    let mut items = items.into_iter();
    loop {
        while failed.is_none() && running.len() < AT_ONCE {
            let Some(item) = items.next() else { break };
            running.spawn(each(Arc::clone(store), item));
        }
        let Some(next) = running.join_next().await else {
            return (done, failed);
        };
        match next {
            Ok(Ok(value)) => done.push(value),
            Ok(Err(err)) => {
                failed.get_or_insert(err);
            }
            Err(err) => {
                failed.get_or_insert(Error::InvalidOptions {
                    reason: format!("a benchmark task failed: {err}"),
                });
            }
        }
    }
}

impl Report {
    pub fn json(&self) -> Value {
        json!({
            "names": self.names,
            "filled_in_seconds": self.filled_in.as_secs_f64(),
            "floor_us": self.floor.json(),
            "cycle_us": self.cycle.json(),
            "ratio_p50": ratio(&self.floor, &self.cycle),
            "listed": self.listed,
            "list_seconds": self.list_took.as_secs_f64(),
        })
    }

    pub fn print(&self) {
        say!(
            "{:<28} {} taken in {:.1} s",
            "other live leases",
            self.names,
            self.filled_in.as_secs_f64()
        );
        print_cycle(&self.floor, &self.cycle);
        say!(
            "{:<28} {} leases in {:.3} s",
            "list",
            self.listed,
            self.list_took.as_secs_f64()
        );
    }
}
