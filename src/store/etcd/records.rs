//! What the etcd store keeps of a name besides its lease key, and how it reads them: the
//! `info` record of the run that holds (or held) the lease, and the `last` record of the name's
//! last ended run. Neither is attached to an etcd lease, so both outlive the lease key.
//!
//! Both are runs of length-prefixed fields (see [`kv`]), whose encoding is prefix-free: "the
//! value starts with these fields" means "these fields are equal", which a transaction can
//! check with two byte-wise compares (see [`starts_with`]).

use std::time::SystemTime;

use etcd_client::{Compare, CompareOp, KeyValue};

use super::super::kv::{self, Fields};
use super::unix_ms;
use crate::store::{FencingToken, Holder, LastRun, Lease, Outcome};

/// What the `info` key records: the run that acquired the lease key. Its mod revision is the
/// lease's token, as both are written by the acquisition's transaction.
pub(super) struct Info {
    pub holder: Holder,
    pub created: SystemTime,
    /// The granted lease length in seconds; 0 for a lease that never expires.
    pub granted_secs: u64,
}

impl Info {
    pub fn encode(holder: &Holder, created_ms: u64, granted_secs: u64) -> Vec<u8> {
        let mut out = kv::encode_holder(holder);
        kv::push_field(&mut out, created_ms.to_string().as_bytes());
        kv::push_field(&mut out, granted_secs.to_string().as_bytes());
        out
    }

    pub fn decode(value: &[u8]) -> Option<Info> {
        let mut fields = Fields::new(value);
        let info = Info {
            holder: fields.holder()?,
            created: kv::from_unix_ms(fields.number()?),
            granted_secs: fields.number()?,
        };
        fields.is_done().then_some(info)
    }

    /// The start of an `info` value written for `holder`: its id.
    pub fn prefix(holder: &Holder) -> Vec<u8> {
        let mut out = Vec::new();
        kv::push_field(&mut out, holder.id.as_bytes());
        out
    }

    /// The run of this record's lease with token `token`, ended with `outcome` at `ended`.
    pub fn run(
        self,
        name: &str,
        token: i64,
        ended: Option<SystemTime>,
        outcome: Outcome,
    ) -> LastRun {
        LastRun {
            name: name.to_owned(),
            holder: self.holder,
            token: FencingToken(token.unsigned_abs()),
            started: self.created,
            ended,
            outcome,
        }
    }
}

/// The `expires` record: when the lease's etcd lease runs out at the earliest, by the clock of
/// the holder that granted or last kept it alive (Unix milliseconds, one field). It is attached
/// to that etcd lease, and it counts only next to a lease key with the same create revision on
/// the same etcd lease (see [`expiry_of`]).
pub(super) fn encode_expiry(expires: SystemTime) -> Vec<u8> {
    let mut out = Vec::new();
    kv::push_field(&mut out, unix_ms(expires).to_string().as_bytes());
    out
}

/// The expiry that `expires_kv` records for the lease key `lease_kv`: `None` when the record is
/// not that lease's (written for an earlier lease of the name, or by a previous version, which
/// wrote none) or cannot be read.
pub(super) fn expiry_of(lease_kv: &KeyValue, expires_kv: Option<&KeyValue>) -> Option<SystemTime> {
    let expires_kv = expires_kv?;
    if lease_kv.lease() == 0
        || expires_kv.lease() != lease_kv.lease()
        || expires_kv.create_revision() != lease_kv.create_revision()
    {
        return None;
    }
    let mut fields = Fields::new(expires_kv.value());
    let ms = fields.number()?;
    fields.is_done().then(|| kv::from_unix_ms(ms))
}

/// The `last` record: fields token, holder (id, pid, host, label), started and ended (Unix
/// milliseconds; ended empty when unknown) and the outcome as text. Token and holder id come
/// first, so that [`run_prefix`] identifies the run.
pub(super) fn encode_run(run: &LastRun) -> Vec<u8> {
    let mut out = run_prefix(run.token, &run.holder.id);
    for field in [
        run.holder.pid.to_string().as_bytes(),
        run.holder.host.as_bytes(),
        run.holder.label.as_bytes(),
    ] {
        kv::push_field(&mut out, field);
    }
    kv::push_field(&mut out, unix_ms(run.started).to_string().as_bytes());
    let ended = run
        .ended
        .map(|at| unix_ms(at).to_string())
        .unwrap_or_default();
    kv::push_field(&mut out, ended.as_bytes());
    kv::push_field(&mut out, run.outcome.to_string().as_bytes());
    out
}

/// Reads a `last` record back; the error says what is wrong with it.
pub(super) fn decode_run(name: &str, value: &[u8]) -> Result<LastRun, String> {
    let malformed = || "it is not a last-run record written by singleton".to_owned();
    let mut fields = Fields::new(value);
    let token = fields.number().ok_or_else(malformed)?;
    let holder = fields.holder().ok_or_else(malformed)?;
    let started = fields
        .number()
        .map(kv::from_unix_ms)
        .ok_or_else(malformed)?;
    let ended = match fields.text().ok_or_else(malformed)? {
        "" => None,
        ms => Some(kv::from_unix_ms(ms.parse().map_err(|_| malformed())?)),
    };
    let outcome = fields.text().ok_or_else(malformed)?;
    if !fields.is_done() {
        return Err(malformed());
    }
    Ok(LastRun {
        name: name.to_owned(),
        holder,
        token: FencingToken(token),
        started,
        ended,
        outcome: outcome.parse()?,
    })
}

/// The start of the `last` record of the run with `token` and holder id `id`.
pub(super) fn run_prefix(token: FencingToken, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    kv::push_field(&mut out, token.0.to_string().as_bytes());
    kv::push_field(&mut out, id.as_bytes());
    out
}

/// The compares that hold when the value of `key` starts with `prefix` (and is longer): etcd
/// compares values byte-wise, and the values that start with `prefix` are exactly those above
/// `prefix` and below its successor (its last byte below 0xff raised by one; the bytes after
/// the last one below 0xff dropped).
pub(super) fn starts_with(key: &[u8], prefix: &[u8]) -> Vec<Compare> {
    let mut compares = vec![Compare::value(key, CompareOp::Greater, prefix)];
    let mut above = prefix.to_vec();
    while let Some(last) = above.pop() {
        if last < u8::MAX {
            above.push(last + 1);
            compares.push(Compare::value(key, CompareOp::Less, above));
            break;
        }
    }
    compares
}

/// The lease that a lease key and the record of its run describe: the `info` record that its
/// acquisition wrote, or, for a lease kept after its run, the `last` record of that run.
/// `None` when neither matches the key (its create revision and holder id).
pub(super) fn lease_of(
    name: &str,
    lease_kv: &KeyValue,
    info_kv: Option<&KeyValue>,
    last_kv: Option<&KeyValue>,
) -> Option<Lease> {
    let token = u64::try_from(lease_kv.create_revision()).ok()?;
    let (holder, created) = match info_kv.and_then(|info| Some((info, Info::decode(info.value())?)))
    {
        Some((info_kv, info)) if info_kv.mod_revision() == lease_kv.create_revision() => {
            (info.holder, info.created)
        }
        _ => {
            let run = decode_run(name, last_kv?.value()).ok()?;
            if run.token.0 != token {
                return None;
            }
            (run.holder, run.started)
        }
    };
    if holder.id.as_bytes() != lease_kv.value() {
        return None;
    }
    Some(Lease {
        name: name.to_owned(),
        holder,
        token: FencingToken(token),
        created,
        expires: None,
    })
}

/// The name's last run from its keys as one snapshot read them: the `last` record, unless the
/// `info` record names a run whose lease key is gone (it expired) that the `last` record does
/// not hold: that run ended, nobody knows how or exactly when. The error says which record is
/// wrong and how.
pub(super) fn last_run_of(
    name: &str,
    lease_kv: Option<&KeyValue>,
    info_kv: Option<&KeyValue>,
    last_kv: Option<&KeyValue>,
) -> Result<Option<LastRun>, String> {
    let last = last_kv
        .map(|last| decode_run(name, last.value()))
        .transpose()
        .map_err(|why| format!("its last-run record is unreadable: {why}"))?;
    let Some(info_kv) = info_kv else {
        return Ok(last);
    };
    let info = Info::decode(info_kv.value())
        .ok_or_else(|| "its info record is not a lease record written by singleton".to_owned())?;
    let token = info_kv.mod_revision();
    let live = lease_kv.is_some_and(|lease| {
        lease.create_revision() == token && lease.value() == info.holder.id.as_bytes()
    });
    let recorded = last
        .as_ref()
        .is_some_and(|run| run.token.0 == token.unsigned_abs() && run.holder.id == info.holder.id);
    if live || recorded {
        return Ok(last);
    }
    Ok(Some(info.run(name, token, None, Outcome::Unknown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcome: Outcome, ended: Option<SystemTime>) -> LastRun {
        LastRun {
            name: "n".into(),
            holder: Holder {
                id: "a:1".into(),
                host: "h".into(),
                pid: 7,
                label: "x 1:y".into(),
            },
            token: FencingToken(42),
            started: kv::from_unix_ms(1_700_000_000_123),
            ended,
            outcome,
        }
    }

    #[test]
    fn runs_read_back_as_written() {
        for (outcome, ended) in [
            (Outcome::Exit(3), Some(kv::from_unix_ms(1_700_000_001_000))),
            (Outcome::Unknown, None),
            (Outcome::Signal(9), Some(kv::from_unix_ms(0))),
        ] {
            let written = run(outcome, ended);
            let record = encode_run(&written);
            assert_eq!(decode_run("n", &record), Ok(written.clone()));
            assert!(record.starts_with(&run_prefix(written.token, &written.holder.id)));
        }
    }

    #[test]
    fn bad_records_are_errors() {
        let mut bad_outcome = encode_run(&run(Outcome::Lost, None));
        bad_outcome.truncate(bad_outcome.len() - "4:lost".len());
        kv::push_field(&mut bad_outcome, b"running");
        let err = decode_run("n", &bad_outcome).unwrap_err();
        assert!(err.contains("unknown outcome \"running\""), "{err}");
        for bad in [&b""[..], b"2:42", b"garbage"] {
            assert!(decode_run("n", bad).is_err());
        }
        let mut trailing = encode_run(&run(Outcome::Lost, None));
        trailing.extend_from_slice(b"1:x");
        assert!(decode_run("n", &trailing).is_err());
    }
}
