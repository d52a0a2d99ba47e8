//! The end of a run: how it ended ([`Outcome`]), how the holder gives its lease up ([`Finish`],
//! [`Hold`]), and what the store keeps of it afterwards ([`LastRun`]). SPEC §10.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::ser::SerializeMap;

use super::{FencingToken, Holder, Lease};

/// How a run ended, as the name's [`LastRun`] keeps it.
///
/// Stores keep it as text ([`Display`](fmt::Display) and [`FromStr`] are each other's inverse):
/// `exit N`, `signal N`, `lost`, `unknown` or `released`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The command exited with this code.
    Exit(i32),
    /// The command was killed by this signal.
    Signal(i32),
    /// The lease was lost while the run went on, and its command was stopped.
    Lost,
    /// Nobody said: the holder died (or was force-released) and its lease ran out.
    Unknown,
    /// A program that uses the library gave the lease back without saying how its work went
    /// ([`LeaseGuard::release`](crate::LeaseGuard::release)).
    Released,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Exit(code) => write!(f, "exit {code}"),
            Outcome::Signal(signal) => write!(f, "signal {signal}"),
            Outcome::Lost => f.write_str("lost"),
            Outcome::Unknown => f.write_str("unknown"),
            Outcome::Released => f.write_str("released"),
        }
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |n: &str| {
            n.parse::<i32>()
                .map_err(|_| format!("unknown outcome {text:?}"))
        };
        match text.split_once(' ') {
            Some(("exit", code)) => Ok(Outcome::Exit(number(code)?)),
            Some(("signal", signal)) => Ok(Outcome::Signal(number(signal)?)),
            _ => match text {
                "lost" => Ok(Outcome::Lost),
                "unknown" => Ok(Outcome::Unknown),
                "released" => Ok(Outcome::Released),
                _ => Err(format!("unknown outcome {text:?}")),
            },
        }
    }
}

/// How a holder gives up its lease at the end of its run: [`Store::finish`](super::Store::finish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// How the run ended; recorded as the name's last run.
    pub outcome: Outcome,
    /// Keep the lease in the store after the run instead of giving it back (`run
    /// --hold-at-least`); `None` gives it back.
    pub hold: Option<Hold>,
}

impl Finish {
    /// Gives the lease back, recording `outcome`.
    pub fn release(outcome: Outcome) -> Self {
        Finish {
            outcome,
            hold: None,
        }
    }
}

/// How long a finished run's lease stays in the store: until its acquisition plus
/// `after_acquisition` by the store's clock.
///
/// A store whose leases carry their acquisition time on its own clock (SQL `now()`, MongoDB
/// `$$NOW`, Redis `TIME`) sets the expiry to that time plus `after_acquisition`. A store without
/// one (etcd's leases only count down; SQLite's and `memory:`'s clock is the host's monotonic
/// clock) keeps the lease for `remaining` from now: the holder measured it from the moment the
/// acquire's answer arrived, which is after the store took the lease, so it never falls short.
/// Either way, when the time is already over, the lease is given back at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// From the lease's acquisition, by the store's clock.
    pub after_acquisition: Duration,
    /// At least this from now (the holder's own measure of what is left of it).
    pub remaining: Duration,
}

/// A name's last run on record: who ran, with which token, from when to when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    /// The singleton's name.
    pub name: String,
    /// Who ran it.
    pub holder: Holder,
    /// The fencing token of its lease.
    pub token: FencingToken,
    /// When its lease was acquired, by the store's clock.
    pub started: SystemTime,
    /// When it ended, by the store's clock. For [`Outcome::Unknown`], when the lease expired if
    /// the store knows, else `None`.
    pub ended: Option<SystemTime>,
    /// How it ended.
    pub outcome: Outcome,
}

impl LastRun {
    /// A run that ended with `outcome` at `ended`, from its lease.
    pub fn of(lease: &Lease, ended: Option<SystemTime>, outcome: Outcome) -> Self {
        LastRun {
            name: lease.name.clone(),
            holder: lease.holder.clone(),
            token: lease.token,
            started: lease.created,
            ended,
            outcome,
        }
    }

    /// Whether `lease` is this run's lease, held on after the run (`--hold-at-least`).
    pub fn holds(&self, lease: &Lease) -> bool {
        lease.token == self.token && lease.holder.id == self.holder.id
    }
}

impl Serialize for LastRun {
    /// `{"name", "holder", "token", "started", "ended", "outcome": "exit 3", "exit_code": 3,
    /// "signal": null}`: the outcome as text, and its number where it has one.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(8))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("holder", &self.holder)?;
        map.serialize_entry("token", &self.token)?;
        map.serialize_entry(
            "started",
            &humantime::format_rfc3339_millis(self.started).to_string(),
        )?;
        map.serialize_entry(
            "ended",
            &self
                .ended
                .map(|at| humantime::format_rfc3339_millis(at).to_string()),
        )?;
        map.serialize_entry("outcome", &self.outcome.to_string())?;
        let (code, signal) = match self.outcome {
            Outcome::Exit(code) => (Some(code), None),
            Outcome::Signal(signal) => (None, Some(signal)),
            _ => (None, None),
        };
        map.serialize_entry("exit_code", &code)?;
        map.serialize_entry("signal", &signal)?;
        map.end()
    }
}

impl fmt::Display for LastRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by {} (token {}), started {}",
            self.outcome,
            self.holder,
            self.token,
            humantime::format_rfc3339_millis(self.started)
        )?;
        match self.ended {
            Some(at) => write!(f, ", ended {}", humantime::format_rfc3339_millis(at)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_written() {
        for outcome in [
            Outcome::Exit(0),
            Outcome::Exit(-1),
            Outcome::Exit(3),
            Outcome::Signal(9),
            Outcome::Lost,
            Outcome::Unknown,
            Outcome::Released,
        ] {
            assert_eq!(outcome.to_string().parse::<Outcome>(), Ok(outcome));
        }
        for bad in ["", "exit", "exit x", "signal 9 9", "LOST", "running"] {
            assert!(bad.parse::<Outcome>().is_err(), "{bad:?}");
        }
    }
}
