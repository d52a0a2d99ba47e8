//! `singleton doctor`: reads a store's own settings and says, one [`Check`] at a time, whether
//! they keep the promise of [`Store`]: no two holders, tokens that only grow.
//!
//! Every store reports the settings it depends on through [`Store::doctor`] (durability,
//! eviction, replication, server versions with known lease bugs, the file system under
//! SQLite); [`examine`] adds what every store shares: the offset between this host's wall
//! clock and the store's ([`Store::store_time`]), and the measured round trip with what it
//! means for the shortest safe lease. Nothing here writes lease data: the checks only read.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> singleton_process::Result<()> {
//! use singleton_process::doctor::{self, Status};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("sqlite://{}/locks.db", dir.path().display());
//! let report = doctor::examine(&*doctor::open(&url).await?).await?;
//! for check in &report.checks {
//!     println!("{check}");
//! }
//! assert_ne!(report.status, Status::Fail);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::error::Result;
use crate::lease::MAX_REQUEST_TIMEOUT;
use crate::store::{Store, bounded};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Safe as it is (or not applicable).
    Ok,
    /// Safe only under conditions doctor cannot see, or a risk the URL accepted: read why.
    Warn,
    /// Two holders, a reissued token or a dropped lease are possible, or the store refuses
    /// leases altogether: fix it before relying on it.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

/// One finding: what was checked, what was found, why it matters and, unless it is fine,
/// what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A short id, e.g. `fsync` or `maxmemory-policy`.
    pub name: String,
    /// How bad it is.
    pub status: Status,
    /// What the store said, e.g. `off`.
    pub found: String,
    /// Why it matters for leases.
    pub why: String,
    /// What to change; `None` when nothing needs changing.
    pub fix: Option<String>,
}

impl Check {
    /// A finding of any status.
    pub fn new(
        status: Status,
        name: impl Into<String>,
        found: impl Into<String>,
        why: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Check {
            name: name.into(),
            status,
            found: found.into(),
            why: why.into(),
            fix,
        }
    }

    /// A setting that is fine.
    pub fn ok(name: impl Into<String>, found: impl Into<String>, why: impl Into<String>) -> Self {
        Check::new(Status::Ok, name, found, why, None)
    }

    /// A risk, and its fix.
    pub fn warn(
        name: impl Into<String>,
        found: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check::new(Status::Warn, name, found, why, Some(fix.into()))
    }

    /// A setting that breaks the promise, and its fix.
    pub fn fail(
        name: impl Into<String>,
        found: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check::new(Status::Fail, name, found, why, Some(fix.into()))
    }

    /// A setting that could not be read (not allowed, say): a warning, as nobody checked it.
    pub fn unreadable(name: impl Into<String>, error: impl fmt::Display) -> Self {
        let name = name.into();
        Check::warn(
            name.clone(),
            format!("could not be read: {error}"),
            "doctor cannot tell whether this setting is safe",
            format!("check {name} by hand, or run doctor as a user allowed to read it"),
        )
    }
}

/// One line: `fail fsync: off — why; fix: what to do`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {}: {} — {}",
            self.status, self.name, self.found, self.why
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// Every check of one store, and the worst status among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The store's URL, password masked.
    pub store: String,
    /// The worst status of the checks (`ok` when there are none).
    pub status: Status,
    /// The checks, the store's own first.
    pub checks: Vec<Check>,
}

impl Report {
    /// The report of `checks` on `store`.
    pub fn new(store: impl Into<String>, checks: Vec<Check>) -> Self {
        let status = checks
            .iter()
            .map(|check| check.status)
            .max()
            .unwrap_or(Status::Ok);
        Report {
            store: store.into(),
            status,
            checks,
        }
    }
}

/// How long a store's own checks may take in all.
const STORE_CHECKS_TIMEOUT: Duration = Duration::from_secs(30);

/// Round trips measured, after one that warms the connection up.
const ROUND_TRIPS: usize = 5;

/// Reads of the store's clock; the one with the shortest round trip tells the offset.
const CLOCK_READS: usize = 3;

/// A request that is abandoned (it took longer than the request timeout, a ninth of the lease)
/// is sent again on a fresh connection, which costs its own round trips (TCP, TLS, login): a
/// request timeout below this many round trips leaves no room for that.
const ROUND_TRIPS_PER_REQUEST: u32 = 5;

/// The CLI's default lease (`run --ttl`), and the library's.
const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// The request timeout is this fraction of the lease (a third of the renew interval, which is
/// a third of the lease; see [`crate::Options::request_timeout`]).
const REQUEST_TIMEOUTS_PER_TTL: u32 = 9;

/// A clock offset above this is worth a warning.
const CLOCK_OFFSET_WARN: Duration = Duration::from_secs(1);

/// The name whose lease the round-trip check reads (a read: nothing is written).
const PROBE_NAME: &str = "singleton-doctor-probe";

/// Opens the store named by `url` for [`examine`], as [`crate::connect`] does, except that the
/// safety refusals a store makes at connect (an SQLite file on a file system other hosts can
/// share, an etcd member with known lease bugs) become failed checks in its report instead of
/// an error. Like `connect`, it creates the lease table if the store does that at connect.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    crate::store::connect_for_doctor(url).await
}

/// Runs the store's own checks ([`Store::doctor`]), then those every store shares: the clock
/// offset and the round trip. An unreachable store is an error; a setting that cannot be read
/// is a warning.
pub async fn examine(store: &dyn Store) -> Result<Report> {
    let mut checks = bounded(store, "doctor", STORE_CHECKS_TIMEOUT, store.doctor()).await?;
    checks.push(clock_offset(store).await?);
    checks.push(round_trip(store).await?);
    Ok(Report::new(store.describe(), checks))
}

/// The offset between this host's wall clock and the store's, from the read with the
/// shortest round trip, the store's reading taken to be half-way through it.
async fn clock_offset(store: &dyn Store) -> Result<Check> {
    const NAME: &str = "clock-offset";
    let mut best: Option<(Duration, f64)> = None;
    for _ in 0..CLOCK_READS {
        let (wall, started) = (SystemTime::now(), Instant::now());
        let Some(theirs) = bounded(
            store,
            "read the clock",
            MAX_REQUEST_TIMEOUT,
            store.store_time(),
        )
        .await?
        else {
            return Ok(Check::ok(
                NAME,
                "not applicable",
                "this store keeps no wall clock of its own for leases (SQLite uses this host's clock; etcd's leases count down on its leader)",
            ));
        };
        let rtt = started.elapsed();
        let ours = wall + rtt / 2;
        let offset = match theirs.duration_since(ours) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        };
        if best.is_none_or(|(shortest, _)| rtt < shortest) {
            best = Some((rtt, offset));
        }
    }
    let Some((rtt, offset)) = best else {
        unreachable!("CLOCK_READS is not zero")
    };
    let size = Duration::from_secs_f64(offset.abs());
    let found = format!(
        "the store's clock is {} {} this host's (± {})",
        show(size),
        if offset >= 0.0 { "ahead of" } else { "behind" },
        show(rtt / 2)
    );
    let why = "expiry is judged by the store's clock and each holder counts its own deadline on a monotonic clock, so an offset alone does not break a lease; but status and list show the store's times, --hold-at-least ends by the store's clock, and an offset usually means one side does not synchronise its clock, which then gets stepped (a store clock stepped forward ends leases early, and holders stop their jobs)";
    if size.saturating_sub(rtt / 2) > CLOCK_OFFSET_WARN {
        Ok(Check::warn(
            NAME,
            found,
            why,
            "run NTP (chrony, systemd-timesyncd) on this host and on the store's hosts",
        ))
    } else {
        Ok(Check::ok(NAME, found, why))
    }
}

/// The round trip of a lease read, and the shortest lease it leaves room for.
async fn round_trip(store: &dyn Store) -> Result<Check> {
    const NAME: &str = "round-trip";
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for attempt in 0..=ROUND_TRIPS {
        let started = Instant::now();
        bounded(
            store,
            "inspect",
            MAX_REQUEST_TIMEOUT,
            store.inspect(PROBE_NAME),
        )
        .await?;
        // The first one may pay for connecting.
        if attempt > 0 {
            samples.push(started.elapsed());
        }
    }
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    let slowest = samples[samples.len() - 1];
    let request = slowest * ROUND_TRIPS_PER_REQUEST;
    let shortest_ttl = request * REQUEST_TIMEOUTS_PER_TTL;
    let found = format!(
        "median {}, slowest {} of {ROUND_TRIPS} lease reads: leases of {} or more have room",
        show(median),
        show(slowest),
        show(shortest_ttl)
    );
    let why = format!(
        "a renewal that takes longer than the request timeout (a ninth of the lease, at most {}) is abandoned and sent again on a fresh connection, which costs a few round trips more; with less room than {ROUND_TRIPS_PER_REQUEST} round trips per request a slow moment loses the lease and stops the job",
        show(MAX_REQUEST_TIMEOUT)
    );
    if request > MAX_REQUEST_TIMEOUT {
        Ok(Check::fail(
            NAME,
            found,
            why,
            "move this host closer to the store (or the store closer to it): even the longest request timeout cannot absorb these round trips",
        ))
    } else if shortest_ttl > DEFAULT_TTL {
        Ok(Check::warn(
            NAME,
            found,
            format!(
                "{why}; the default lease ({}) is shorter than that",
                show(DEFAULT_TTL)
            ),
            format!(
                "run with --ttl {}s or more, or bring this host and the store closer",
                shortest_ttl.as_secs() + 1
            ),
        ))
    } else {
        Ok(Check::ok(NAME, found, why))
    }
}

/// A duration for people: `0.4ms`, `12ms`, `1.5s`.
fn show(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_takes_the_worst_status() {
        let ok = Check::ok("a", "on", "fine");
        let warn = Check::warn("b", "2", "risky", "set it to 1");
        let fail = Check::fail("c", "off", "unsafe", "turn it on");
        assert_eq!(Report::new("x", vec![]).status, Status::Ok);
        assert_eq!(Report::new("x", vec![ok.clone()]).status, Status::Ok);
        assert_eq!(
            Report::new("x", vec![ok.clone(), warn.clone()]).status,
            Status::Warn
        );
        assert_eq!(Report::new("x", vec![fail, ok, warn]).status, Status::Fail);
    }

    #[test]
    fn a_check_is_one_line_with_its_fix() {
        let check = Check::fail("fsync", "off", "a crash loses commits", "set fsync = on");
        assert_eq!(
            check.to_string(),
            "fail fsync: off — a crash loses commits; fix: set fsync = on"
        );
        assert_eq!(
            Check::ok("fsync", "on", "safe").to_string(),
            "ok   fsync: on — safe"
        );
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["fix"], "set fsync = on");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(show(Duration::from_micros(420)), "0.4ms");
        assert_eq!(show(Duration::from_millis(12)), "12ms");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    }

    #[tokio::test]
    async fn the_memory_store_has_only_the_shared_checks() {
        let store = crate::connect("memory:").await.unwrap();
        let report = examine(&*store).await.unwrap();
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["clock-offset", "round-trip"]);
        assert_eq!(report.checks[0].status, Status::Ok, "{report:?}");
        assert_eq!(report.checks[0].found, "not applicable");
    }
}
