//! `memory:` — leases in this process only. For tests and for coordinating tasks inside one
//! program; it protects nothing across processes, so the CLI refuses it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use tokio::sync::broadcast;

use super::{
    Acquire, FencingToken, Finish, Freed, Heard, Holder, LastRun, Lease, Outcome, Released, Store,
};
use crate::error::{Error, Result};

/// An in-process store. Its clock is this process's monotonic clock.
#[derive(Debug)]
pub struct MemoryStore {
    names: Mutex<BTreeMap<String, Slot>>,
    scratch: Mutex<BTreeMap<String, ()>>,
    /// What happened to which name (released or force-released, acquired), for
    /// [`Store::watch`].
    freed: broadcast::Sender<(String, Heard)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            names: Mutex::default(),
            scratch: Mutex::default(),
            freed: broadcast::Sender::new(64),
        }
    }
}

/// One name's record. The token counter outlives the lease.
#[derive(Debug)]
struct Slot {
    last_token: u64,
    held: Option<Held>,
    last_run: Option<LastRun>,
}

impl Slot {
    /// The last run on record, counting an expired lease that nobody finished or replaced.
    fn last_run(&self, now: Instant) -> Option<LastRun> {
        match &self.held {
            Some(held) if !held.is_live(now) && !self.recorded(&held.lease) => {
                let lease = held.snapshot(now);
                Some(LastRun::of(&lease, lease.expires, Outcome::Unknown))
            }
            _ => self.last_run.clone(),
        }
    }

    /// Whether `lease`'s run is the last run on record.
    fn recorded(&self, lease: &Lease) -> bool {
        self.last_run.as_ref().is_some_and(|run| run.holds(lease))
    }

    /// Takes the lease out and returns it if its run was not finished, recording that run as
    /// unknown.
    fn remove_unfinished(&mut self, now: Instant) -> Option<Lease> {
        let held = self.held.take()?;
        let lease = held.snapshot(now);
        if self.recorded(&lease) {
            return None;
        }
        let ended = if held.is_live(now) {
            Some(SystemTime::now())
        } else {
            lease.expires
        };
        self.last_run = Some(LastRun::of(&lease, ended, Outcome::Unknown));
        Some(lease)
    }
}

#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    /// `None`: never expires.
    deadline: Option<Instant>,
}

impl Held {
    fn is_live(&self, now: Instant) -> bool {
        self.deadline.is_none_or(|deadline| deadline > now)
    }

    /// The lease with its expiry translated to wall-clock time for display.
    fn snapshot(&self, now: Instant) -> Lease {
        let mut lease = self.lease.clone();
        lease.expires = self
            .deadline
            .map(|deadline| SystemTime::now() + deadline.saturating_duration_since(now));
        lease
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn names(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        // A panic while holding the lock cannot leave a slot half-written: every update below
        // assigns whole values.
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn deadline(now: Instant, ttl: Duration) -> Result<Instant> {
    now.checked_add(ttl)
        .ok_or_else(|| Error::options(format!("lease length {ttl:?} is too large")))
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> &str {
        "memory:"
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire> {
        let now = Instant::now();
        let deadline = ttl.map(|ttl| deadline(now, ttl)).transpose()?;
        let mut names = self.names();
        let slot = names.entry(name.to_owned()).or_insert(Slot {
            last_token: 0,
            held: None,
            last_run: None,
        });
        if let Some(held) = slot.held.as_ref().filter(|held| held.is_live(now)) {
            return Ok(Acquire::Held(held.snapshot(now)));
        }
        let took_over = slot.remove_unfinished(now);
        slot.last_token += 1;
        let held = Held {
            lease: Lease {
                name: name.to_owned(),
                holder: holder.clone(),
                token: FencingToken(slot.last_token),
                created: SystemTime::now(),
                expires: None,
            },
            deadline,
        };
        let lease = held.snapshot(now);
        slot.held = Some(held);
        drop(names);
        let _ = self.freed.send((
            name.to_owned(),
            Heard::Taken {
                expires: lease.expires,
            },
        ));
        Ok(Acquire::Acquired { lease, took_over })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let now = Instant::now();
        let new_deadline = deadline(now, ttl)?;
        let mut names = self.names();
        let held = names
            .get_mut(&lease.name)
            .and_then(|slot| slot.held.as_mut())
            .filter(|held| {
                held.lease.holder.id == lease.holder.id && held.lease.token == lease.token
            })
            .ok_or_else(|| Error::lost(lease, "another holder has it or it was released"))?;
        if !held.is_live(now) {
            return Err(Error::lost(lease, "it expired before it could be renewed"));
        }
        if held.deadline.is_some() {
            held.deadline = Some(new_deadline);
        }
        Ok(held.snapshot(now))
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        let now = Instant::now();
        let mut names = self.names();
        let Some(slot) = names.get_mut(&lease.name) else {
            return Ok(Released::NotHeld);
        };
        let ours = |other: &Lease| other.holder.id == lease.holder.id && other.token == lease.token;
        let Some(held) = slot.held.as_mut().filter(|held| ours(&held.lease)) else {
            if let Some(run) = slot.last_run.as_mut().filter(|run| run.holds(lease)) {
                run.outcome = finish.outcome;
                run.ended = Some(SystemTime::now());
            }
            return Ok(Released::NotHeld);
        };
        let ended = SystemTime::now();
        slot.last_run = Some(LastRun::of(&held.lease, Some(ended), finish.outcome));
        if let Some(hold) = finish.hold.filter(|hold| !hold.remaining.is_zero()) {
            if held.is_live(now) {
                held.deadline = Some(deadline(now, hold.remaining)?);
                return Ok(Released::Kept {
                    expires: held.snapshot(now).expires,
                });
            }
        }
        slot.held = None;
        drop(names);
        // Nobody listening is no error.
        let _ = self.freed.send((lease.name.clone(), Heard::Freed));
        Ok(Released::Released)
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        let now = Instant::now();
        Ok(self.names().get(name).and_then(|slot| slot.last_run(now)))
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        let now = Instant::now();
        Ok(self
            .names()
            .values()
            .filter_map(|slot| slot.last_run(now))
            .collect())
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        let now = Instant::now();
        Ok(self
            .names()
            .get(name)
            .and_then(|slot| slot.held.as_ref())
            .filter(|held| held.is_live(now))
            .map(|held| held.snapshot(now)))
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let now = Instant::now();
        Ok(self
            .names()
            .values()
            .filter_map(|slot| slot.held.as_ref())
            .filter(|held| held.is_live(now))
            .map(|held| held.snapshot(now))
            .collect())
    }

    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        let lock = || {
            self.scratch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        lock().insert(scratch_key.to_owned(), ());
        lock().remove(scratch_key);
        Ok(())
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        let now = Instant::now();
        let removed = self
            .names()
            .get_mut(name)
            .filter(|slot| slot.held.as_ref().is_some_and(|held| held.is_live(now)))
            .and_then(|slot| {
                let kept = slot.held.as_ref().map(|held| held.snapshot(now));
                slot.remove_unfinished(now).or(kept)
            });
        if removed.is_some() {
            let _ = self.freed.send((name.to_owned(), Heard::Freed));
        }
        Ok(removed)
    }

    async fn watch(&self, name: &str) -> Result<Option<Freed>> {
        let mut freed = self.freed.subscribe();
        let name = name.to_owned();
        let (heard, word) = Freed::channel();
        let listener = Freed::listen(async move {
            loop {
                match freed.recv().await {
                    Ok((changed, _)) if changed != name => continue,
                    Ok((_, word)) => heard.tell(word),
                    // Missed words may have named ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => heard.changed(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Some(Freed::new(word, listener)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test]
    async fn memory_keeps_last_runs() {
        crate::conformance::Suite::new(Arc::new(super::MemoryStore::new()))
            .run_last_run_checks()
            .await;
    }
}
