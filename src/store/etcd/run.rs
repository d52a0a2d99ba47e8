//! The end of a run in etcd: `finish` (with or without a hold), `force_release`, and the run
//! that an acquire finds unfinished. The records they write are in [`records`](super::records).

use std::time::{Duration, SystemTime};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::records::{self, Info};
use super::{EtcdStore, Keys, MAX_ATTEMPTS, MAX_TTL_SECS, Spare, first, ours, results, token_of};
use crate::error::Result;
use crate::store::{Finish, LastRun, Lease, Outcome, Released};

/// A new etcd lease for a lease kept after its run.
struct Kept {
    id: i64,
    /// The granted length from just before the grant was sent (our clock).
    expires: SystemTime,
}

impl EtcdStore {
    /// [`Store::finish`](crate::Store::finish), in one transaction (with a hold, after the
    /// grant of the kept lease's new etcd lease):
    ///
    /// - if the lease key is ours: delete it (or, with a hold, put it again, same value, on the
    ///   new etcd lease, which keeps its create revision, the token), delete the info key and
    ///   write the last run;
    /// - else, if the last run on record is ours (its value starts with our token and holder
    ///   id): write it again with our outcome and end;
    /// - else, if the info key is still our run's (its lease expired, nobody took over): delete
    ///   it and write the last run. Our lease is given back (by etcd, already).
    pub(super) async fn finish_run(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        let keys = self.keys(&lease.name);
        let kept = match finish.hold.filter(|hold| !hold.remaining.is_zero()) {
            Some(hold) => Some(self.grant_hold(hold.remaining).await?),
            None => None,
        };
        let run = LastRun::of(lease, Some(SystemTime::now()), finish.outcome);
        let record = records::encode_run(&run);
        let (lease_op, expires_op) = match &kept {
            None => (
                TxnOp::delete(
                    keys.lease.clone(),
                    Some(DeleteOptions::new().with_prev_key()),
                ),
                TxnOp::delete(keys.expires.clone(), None),
            ),
            Some(kept) => (
                TxnOp::put(
                    keys.lease.clone(),
                    lease.holder.id.as_bytes(),
                    Some(PutOptions::new().with_lease(kept.id).with_prev_key()),
                ),
                keys.record_expiry(kept.id, kept.expires),
            ),
        };
        let txn = Txn::new()
            .when(ours(&keys.lease, lease)?)
            .and_then([
                lease_op,
                TxnOp::delete(
                    keys.info.clone(),
                    Some(DeleteOptions::new().with_prev_key()),
                ),
                TxnOp::put(keys.last.clone(), record.clone(), None),
                expires_op,
            ])
            .or_else([TxnOp::txn(not_ours(&keys, lease, record)?)]);
        let response = match self.txn("finish", txn).await {
            Ok(response) => response,
            Err(err) => {
                if let Some(kept) = &kept {
                    // Applied or not, the lease is given back: the revocation takes a key the
                    // transaction moved onto it.
                    self.revoke(kept.id).await;
                }
                return Err(err);
            }
        };
        if !response.succeeded() {
            if let Some(kept) = &kept {
                self.revoke_in_background(kept.id);
            }
            return Ok(if recorded_expired(&response) {
                Released::Released
            } else {
                Released::NotHeld
            });
        }
        let found = results(&response);
        // Nothing is attached to the lease key's old etcd lease any more.
        if let (Some(previous), Some(info)) = (first(&found, 0), first(&found, 1)) {
            self.reuse(previous.lease(), info, lease.expires);
        }
        Ok(match kept {
            Some(kept) => Released::Kept {
                expires: Some(kept.expires),
            },
            None => Released::Released,
        })
    }

    /// Grants the etcd lease of a lease kept after its run, for `remaining` in whole seconds,
    /// rounded up (etcd may raise it to its shortest lease, and says so).
    async fn grant_hold(&self, remaining: Duration) -> Result<Kept> {
        let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        let secs = i64::try_from(secs.clamp(1, MAX_TTL_SECS)).unwrap_or(i64::MAX);
        let sent = SystemTime::now();
        let granted = self
            .call("finish", |mut client| async move {
                client.lease_grant(secs, None).await
            })
            .await?;
        Ok(Kept {
            id: granted.id(),
            expires: sent + Duration::from_secs(granted.ttl().unsigned_abs()),
        })
    }

    /// Keeps etcd lease `id`, whose only key is gone or moved, as the spare for the next
    /// acquisition (`info`: the deleted info key, with the length it was granted), or revokes
    /// it.
    fn reuse(&self, id: i64, info: &KeyValue, expires: Option<SystemTime>) {
        let granted =
            Info::decode(info.value()).and_then(|info| i64::try_from(info.granted_secs).ok());
        match granted {
            Some(secs) if id != 0 && secs != 0 => self.keep_spare(Spare {
                id,
                secs,
                expires: expires.unwrap_or_else(SystemTime::now),
            }),
            _ => self.revoke_in_background(id),
        }
    }

    /// [`Store::force_release`](crate::Store::force_release): reads the name's keys, then
    /// deletes the lease key and the info key and records the run as ended `unknown` now (a
    /// lease kept after its run is on record already), in one transaction that applies only
    /// if neither key changed since the read; else reads again.
    pub(super) async fn force_release_run(&self, name: &str) -> Result<Option<Lease>> {
        let keys = self.keys(name);
        for _ in 0..MAX_ATTEMPTS {
            let read = Txn::new().and_then(keys.reads());
            let found = results(&self.txn("force-release", read).await?);
            let Some(lease_kv) = first(&found, 0) else {
                return Ok(None);
            };
            let info_kv = first(&found, 1);
            let mut lease = records::lease_of(name, lease_kv, info_kv, first(&found, 2))
                .ok_or_else(|| self.malformed("force-release", name))?;
            let mut writes = vec![
                TxnOp::delete(keys.lease.clone(), None),
                TxnOp::delete(keys.info.clone(), None),
                TxnOp::delete(keys.expires.clone(), None),
            ];
            if info_kv.is_some_and(|info| info.mod_revision() == lease_kv.create_revision()) {
                let run = LastRun::of(&lease, Some(SystemTime::now()), Outcome::Unknown);
                writes.push(TxnOp::put(
                    keys.last.clone(),
                    records::encode_run(&run),
                    None,
                ));
            }
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(
                        keys.lease.clone(),
                        CompareOp::Equal,
                        lease_kv.mod_revision(),
                    ),
                    Compare::mod_revision(
                        keys.info.clone(),
                        CompareOp::Equal,
                        info_kv.map_or(0, KeyValue::mod_revision),
                    ),
                ])
                .and_then(writes);
            if !self.txn("force-release", txn).await?.succeeded() {
                continue;
            }
            lease.expires = self.expiry("force-release", lease_kv.lease()).await?;
            // Revoked, so that the old holder cannot keep its etcd lease alive any more.
            self.revoke(lease_kv.lease()).await;
            return Ok(Some(lease));
        }
        Err(self.kept_changing("force-release", name))
    }
}

/// The run of the info key `info_kv` that an acquire found without its lease key (it
/// expired): the lease it had, to report as taken over, and the last-run record to write
/// for it, `None` if `last_kv` holds it already (its holder finished it since). An info key
/// that cannot be read is no run to keep (the acquire replaces it, as the previous version
/// did), and a last record that cannot be read is replaced.
pub(super) fn unfinished(
    name: &str,
    info_kv: &KeyValue,
    last_kv: Option<&KeyValue>,
) -> (Option<Lease>, Option<Vec<u8>>) {
    let Some(info) = Info::decode(info_kv.value()) else {
        return (None, None);
    };
    let run = info.run(name, info_kv.mod_revision(), None, Outcome::Unknown);
    let recorded = last_kv
        .and_then(|last| records::decode_run(name, last.value()).ok())
        .is_some_and(|last| last.token == run.token && last.holder.id == run.holder.id);
    let lease = Lease {
        name: name.to_owned(),
        holder: run.holder.clone(),
        token: run.token,
        created: run.started,
        expires: Some(SystemTime::now()),
    };
    (Some(lease), (!recorded).then(|| records::encode_run(&run)))
}

/// The part of a finish for a lease key that is not ours: sets the outcome of our run if the
/// last record holds it, else records our run if the info key is still its own (see
/// [`recorded_expired`]).
fn not_ours(keys: &Keys, lease: &Lease, record: Vec<u8>) -> Result<Txn> {
    let mut expired = records::starts_with(&keys.info, &Info::prefix(&lease.holder));
    expired.push(Compare::mod_revision(
        keys.info.clone(),
        CompareOp::Equal,
        token_of(lease)?,
    ));
    let expired = Txn::new().when(expired).and_then([
        TxnOp::delete(keys.info.clone(), None),
        TxnOp::put(keys.last.clone(), record.clone(), None),
    ]);
    let recorded = records::starts_with(
        &keys.last,
        &records::run_prefix(lease.token, &lease.holder.id),
    );
    Ok(Txn::new()
        .when(recorded)
        .and_then([TxnOp::put(keys.last.clone(), record, None)])
        .or_else([TxnOp::txn(expired)]))
}

/// Whether a finish that found the lease key not ours recorded our run from the info key, its
/// lease having expired with nobody taking over.
fn recorded_expired(response: &TxnResponse) -> bool {
    let nested = |response: &TxnResponse| match response.op_responses().into_iter().next() {
        Some(TxnOpResponse::Txn(nested)) => Some(nested),
        _ => None,
    };
    nested(response)
        .filter(|recorded| !recorded.succeeded())
        .and_then(|recorded| nested(&recorded))
        .is_some_and(|expired| expired.succeeded())
}
