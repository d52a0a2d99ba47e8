//! `etcd[s]://[user:password@]host:port[,host:port…][?prefix=…&connect_timeout=…&allow_unsafe_version=…&cacert=…&cert=…&key=…]`
//! — leases in an etcd v3 cluster, built on etcd's own leases and revisions.
//!
//! `etcds://` connects in TLS with etcdctl's `cacert`, `cert` and `key` (see `url.rs`); how the
//! channel connects, logs in and names a failed handshake is in `transport.rs`.
//!
//! Connecting checks every member named in the URL for a server version with known lease bugs
//! (see [`version`]) and refuses such a cluster unless `?allow_unsafe_version=true`.
//!
//! Per name there are four keys, told apart by the kind that follows the prefix:
//! - `{prefix}lease/{name}`: the live lease. Its value is the holder id, and it is attached to
//!   an etcd lease that nothing but its expires key is attached to, so the cluster (by its
//!   leader's clock) deletes it on expiry. Its create revision is the fencing token: revisions grow
//!   cluster-wide, so a later acquisition of any name gets a larger one.
//! - `{prefix}info/{name}`: the run that holds it (id, pid, host, label, created, granted TTL),
//!   written in the same transaction and attached to no lease. Its mod revision is the token of
//!   the lease it describes. Finish and force-release delete it, so it outlives its lease key
//!   only when the lease expired under a run that never finished: it then reads as that run,
//!   ended with outcome `unknown`, and the acquire that takes the name over records it so.
//! - `{prefix}last/{name}`: the name's last ended run (token, holder, started, ended, outcome;
//!   see [`records`]), attached to no lease. Finish writes it in the transaction that deletes
//!   (or keeps) the lease key; the acquire that takes over an unfinished run, and a
//!   force-release, write that run there with outcome `unknown`. The acquire needs a second
//!   transaction for that (see `acquire`); a name whose runs finish has no info key left, and
//!   its acquire stays one transaction.
//! - `{prefix}expires/{name}`: when the lease's etcd lease runs out, by the holder's clock
//!   (etcd keeps a lease's TTL apart from its keys, one request per lease to ask), written by
//!   the acquisition on the same etcd lease, by every renewal and by a finish that keeps the
//!   lease, and deleted with the lease key: `list` reads it with all keys in one request, and
//!   a conflicting acquire with the name's. Display and pacing only, never safety; it counts
//!   only on the lease key's etcd lease with the lease key's create revision (see
//!   [`records::expiry_of`]), else the TTL is asked for.
//!
//! etcd has no clock API: `created` (a run's start) is the acquiring client's wall clock, and
//! a run's end is the finishing client's. A lease kept after its run (`Finish::hold`) moves its
//! lease key onto a new etcd lease granted for what is left of the hold, whole seconds rounded
//! up, so etcd expires it then; its `info` key is deleted and the `last` record describes it.
//!
//! etcd leases last whole seconds, at least 2 s: a TTL is rounded up (a store lease longer
//! than asked is safe, the holder's own deadline counts from what it asked for) and a shorter
//! one is refused.
//!
//! Granting an etcd lease is a write the cluster commits like any other (a separate request:
//! a transaction cannot grant one). So the store keeps the etcd lease of a released (or
//! conflicting) acquisition as a spare and the next acquire sends a keep-alive for it, which
//! the leader answers alone, together with its transaction: one round trip and one committed
//! write, as a plain put. Without a spare, acquire grants a lease under an id of its own
//! choosing, sent together with the transaction. See `refresh_and_attach` below for
//! why neither can leave the holder a shorter lease than it counts on.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use self::url::host_of;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    LeaseGrantOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};

mod doctor;
mod records;
mod run;
mod transport;
mod url;
mod version;

use self::records::Info;
use super::kv;
use super::reconnect::{Lent, Reconnecting};
use super::tls::Tls;
use super::{
    Acquire, FencingToken, Finish, Freed, Heard, Holder, LastRun, Lease, Refusals, Released, Store,
    mask_password,
};
use crate::error::{Error, Result};

/// Key prefix unless the URL's `?prefix=` sets another.
pub const DEFAULT_PREFIX: &str = "singleton/";

/// etcd's shortest lease with its default election timeout.
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// The largest reply of the transaction that reads every name's keys (`list`, `list --all`):
/// about 280 bytes a name, so room for some 900 000 names.
const READ_ALL_LIMIT: usize = 256 * 1024 * 1024;

/// How many lease expiries `list` asks etcd for at once.
const EXPIRIES_AT_ONCE: usize = 64;

/// How long a renewal's write of its expires record may take before it is dropped (see
/// `record_renewal`).
const RECORD_TIMEOUT: Duration = Duration::from_secs(1);

/// etcd's longest lease (`MaxLeaseTTL`).
const MAX_TTL_SECS: u64 = 9_000_000_000;

const LEASE: &str = "lease/";
const INFO: &str = "info/";
const LAST: &str = "last/";
const EXPIRES: &str = "expires/";
/// Every kind of key, in the order of [`Keys::reads`].
const KINDS: [&str; 4] = [LEASE, INFO, LAST, EXPIRES];
const BENCH: &str = "bench/";

/// How long, at least, connect waits for a member's version after the cluster has answered
/// (see `connect`).
const MEMBER_GRACE: Duration = Duration::from_millis(500);

/// How many times acquire and force-release read and write again when the keys they read
/// changed before their write could apply (each time, another client got something done).
const MAX_ATTEMPTS: usize = 8;

/// The keys of one name.
struct Keys {
    lease: Vec<u8>,
    info: Vec<u8>,
    last: Vec<u8>,
    expires: Vec<u8>,
}

impl Keys {
    /// A transaction's reads of the keys, in this order: lease, info, last, expires.
    fn reads(&self) -> [TxnOp; 4] {
        [
            TxnOp::get(self.lease.clone(), None),
            TxnOp::get(self.info.clone(), None),
            TxnOp::get(self.last.clone(), None),
            TxnOp::get(self.expires.clone(), None),
        ]
    }

    /// The write of the expires record: `expires`, on etcd lease `id`.
    fn record_expiry(&self, id: i64, expires: SystemTime) -> TxnOp {
        TxnOp::put(
            self.expires.clone(),
            records::encode_expiry(expires),
            Some(PutOptions::new().with_lease(id)),
        )
    }
}

/// The etcd store: one client (one multiplexed gRPC channel over the endpoints), cloned per
/// request because the client's methods take `&mut self`, and replaced by a new one once a
/// request on it was abandoned (see `reconnect`: every request queues on the one channel, so a
/// dead connection would hold them all).
pub struct EtcdStore {
    url: String,
    prefix: String,
    clients: Reconnecting<Client>,
    /// For the next client.
    endpoints: Vec<String>,
    connect_options: ConnectOptions,
    connect_timeout: Duration,
    /// The URL's TLS settings, to explain a failed handshake; `None` for plaintext.
    tls: Option<Tls>,
    /// An etcd lease of ours with nothing attached, kept for the next acquisition (see
    /// [`Spare`]).
    spare: std::sync::Mutex<Option<Spare>>,
    /// Whether the URL accepted members with known lease bugs.
    allow_unsafe_version: bool,
    /// [`connect_options`](Self::connect_options) without the URL's login, and whether the
    /// URL has one: for `doctor`.
    anonymous_options: ConnectOptions,
    logs_in: bool,
}

/// An etcd lease that an earlier acquisition of this store used (and released) or that a
/// conflict left unused. Granting a lease is a write the cluster must commit, as costly as the
/// transaction itself; a keep-alive is answered by the leader alone. So acquire refreshes a
/// spare with a keep-alive sent together with its transaction instead of granting a new one.
#[derive(Debug, Clone, Copy)]
struct Spare {
    id: i64,
    /// Its granted length in seconds.
    secs: i64,
    /// When it runs out at the earliest, as far as we know (our clock; only used to skip a
    /// spare that has probably run out, never for safety).
    expires: SystemTime,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster named by an `etcd://` URL and checks that it answers (a
    /// linearizable read, which also needs a leader) and that no member named in the URL runs
    /// a version with known lease bugs, all within the connect timeout (default 5 s).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_as(url, Refusals::Refuse).await
    }

    /// [`connect`](Self::connect); with [`Refusals::Report`], members with known lease bugs
    /// are accepted, for `doctor` to report.
    pub(crate) async fn connect_as(url: &str, refusals: Refusals) -> Result<Self> {
        let masked = mask_password(url);
        let mut target = self::url::parse(url)?;
        let connect_options = transport::connect_options(&target)
            .map_err(|e| Error::refused(&masked, "connect", e))?;
        // For `doctor`, which tells whether the cluster lets clients in without a password.
        let login = target.user.take();
        let anonymous_options = transport::connect_options(&target)
            .map_err(|e| Error::refused(&masked, "connect", e))?;
        let logs_in = login.is_some();
        target.user = login;
        let prefix = &target.prefix;
        let single = target.endpoints.len() == 1;
        let probe = async {
            let client = Client::connect(&target.endpoints, Some(connect_options.clone())).await?;
            let mut asker = client.clone();
            // With one endpoint, the client's own channel asks its member; with several it
            // would ask whichever the balancer picks, so each gets a client of its own below.
            let (read, status) = tokio::join!(
                until_sent(|| {
                    let (mut reader, key) = (client.clone(), prefix.as_bytes().to_vec());
                    let options = GetOptions::new().with_count_only();
                    async move { reader.get(key, Some(options)).await }
                }),
                async {
                    if single {
                        Some(asker.status().await)
                    } else {
                        None
                    }
                },
            );
            read?;
            Ok::<_, etcd_client::Error>((client, status))
        };
        // Each member's answer, as it comes.
        let answers = std::sync::Mutex::new(Vec::new());
        let each_member = async {
            if single {
                return;
            }
            let asking = target.endpoints.iter().map(|endpoint| async {
                let asked = async {
                    let mut client =
                        Client::connect([endpoint.as_str()], Some(connect_options.clone())).await?;
                    client.status().await
                };
                if let Ok(answer) = tokio::time::timeout(target.connect_timeout, asked).await {
                    answers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((endpoint.as_str(), answer));
                }
            });
            futures_util::future::join_all(asking).await;
        };
        // Once the cluster has answered, a member that has not told its version yet gets as
        // long again as the cluster took (at least `MEMBER_GRACE`), not the whole connect
        // timeout: a member cut off from the network never answers, and waiting for it would
        // make every connect take the connect timeout for as long as it is away.
        let (answered, answered_after) = tokio::sync::oneshot::channel();
        let probing = async {
            let started = tokio::time::Instant::now();
            let probed = tokio::time::timeout(target.connect_timeout, probe).await;
            let _ = answered.send(started.elapsed());
            probed
        };
        let checking = async {
            let mut each_member = std::pin::pin!(each_member);
            tokio::select! {
                () = &mut each_member => {}
                took = answered_after => {
                    let grace = took.unwrap_or_default().max(MEMBER_GRACE);
                    let _ = tokio::time::timeout(grace, each_member).await;
                }
            }
        };
        let (probed, ()) = tokio::join!(probing, checking);
        let mut answers = answers
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // `None` for a member that did not answer in time.
        let members: Vec<(&str, Option<_>)> = if single {
            Vec::new()
        } else {
            target
                .endpoints
                .iter()
                .map(|endpoint| {
                    let answer = answers
                        .iter()
                        .position(|(named, _)| *named == endpoint.as_str())
                        .map(|i| answers.swap_remove(i).1);
                    (endpoint.as_str(), answer)
                })
                .collect()
        };
        let probed = probed.map_err(|_| Error::Timeout {
            store: masked.clone(),
            operation: "connect",
            after: target.connect_timeout,
        })?;
        let (client, status) = match probed {
            Ok(probed) => probed,
            Err(err) => return Err(connect_error(&masked, &target, err).await),
        };
        let mut checked = Vec::new();
        if let Some(status) = status {
            let status = match status {
                Ok(status) => status,
                Err(err) => return Err(connect_error(&masked, &target, err).await),
            };
            checked.push((target.endpoints[0].as_str(), status.version().to_owned()));
        }
        for (endpoint, answer) in members {
            match answer {
                Some(Ok(status)) => checked.push((endpoint, status.version().to_owned())),
                // The cluster answered through another member: one that is down is skipped,
                // and checked the next time it answers at a connect.
                Some(Err(err)) => {
                    let err = EtcdError::from(err);
                    tracing::warn!(store = %masked, endpoint = %host_of(endpoint), error = %err, "could not read this etcd member's version; it is not checked for known lease bugs");
                }
                None => {
                    tracing::warn!(store = %masked, endpoint = %host_of(endpoint), "this etcd member did not tell its version in time (it is down or cut off?); it is not checked for known lease bugs");
                }
            }
        }
        if checked.is_empty() {
            return Err(Error::store(
                &masked,
                "connect",
                "no member named in the URL told its version, so the cluster cannot be checked for known lease bugs; check that the members are reachable",
            ));
        }
        for (endpoint, reported) in &checked {
            let Some(why) = version::unfit(host_of(endpoint), reported) else {
                continue;
            };
            if refusals == Refusals::Report {
                continue;
            }
            if !target.allow_unsafe_version {
                return Err(Error::store(&masked, "connect", why));
            }
            tracing::warn!(store = %masked, endpoint = %host_of(endpoint), version = %reported, "?allow_unsafe_version=true: using an etcd member with known lease bugs; two holders could both hold a lease (etcd issue 15247, PR 20590)");
        }
        Ok(EtcdStore {
            url: masked,
            prefix: target.prefix,
            clients: Reconnecting::new(client),
            endpoints: target.endpoints,
            connect_options,
            connect_timeout: target.connect_timeout,
            tls: target.tls,
            spare: std::sync::Mutex::new(None),
            allow_unsafe_version: target.allow_unsafe_version,
            anonymous_options,
            logs_in,
        })
    }

    /// The client for one request, lent until the request was answered: see [`settle`].
    async fn lend(&self, operation: &'static str) -> Result<Lent<'_, Client>> {
        self.clients
            .lend(|| async {
                // Connecting makes no request, unless it has to log in.
                let connecting =
                    Client::connect(&self.endpoints, Some(self.connect_options.clone()));
                tokio::time::timeout(self.connect_timeout, connecting)
                    .await
                    .map_err(|_| Error::Timeout {
                        store: self.url.clone(),
                        operation,
                        after: self.connect_timeout,
                    })?
                    .map_err(|e| self.error(operation, e))
            })
            .await
    }

    /// Sends one request (`send` gets the client; see [`until_sent`]) and hands back the
    /// client's own error.
    async fn try_call<T, F>(
        &self,
        operation: &'static str,
        mut send: impl FnMut(Client) -> F,
    ) -> Result<Result<T, etcd_client::Error>>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.lend(operation).await?;
        let answer = until_sent(|| send(client.clone())).await;
        settle(client, &[answer.as_ref().err()]);
        Ok(answer)
    }

    /// Sends one request (`send` gets the client) and maps its error.
    async fn call<T, F>(&self, operation: &'static str, send: impl FnMut(Client) -> F) -> Result<T>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.try_call(operation, send)
            .await?
            .map_err(|e| self.error(operation, e))
    }

    fn key(&self, kind: &str, name: &str) -> Vec<u8> {
        kv::key(&self.prefix, kind, name)
    }

    fn keys(&self, name: &str) -> Keys {
        Keys {
            lease: self.key(LEASE, name),
            info: self.key(INFO, name),
            last: self.key(LAST, name),
            expires: self.key(EXPIRES, name),
        }
    }

    /// A transaction that reads every key of every kind, in one snapshot: lease keys, info
    /// keys, last keys and expires keys, in this order.
    fn read_all(&self) -> Txn {
        Txn::new().and_then(
            KINDS.map(|kind| TxnOp::get(self.key(kind, ""), Some(GetOptions::new().with_prefix()))),
        )
    }

    /// Runs [`read_all`](Self::read_all): its reply holds every name's keys, which passes
    /// gRPC's default 4 MiB limit for a reply at about 15 000 names, so this one takes up to
    /// [`READ_ALL_LIMIT`].
    async fn read_everything(&self, operation: &'static str) -> Result<TxnResponse> {
        let txn = self.read_all();
        self.call(operation, |client| {
            let txn = txn.clone();
            async move {
                client
                    .kv_client()
                    .max_decoding_message_size(READ_ALL_LIMIT)
                    .txn(txn)
                    .await
            }
        })
        .await
    }

    /// The results of [`read_all`](Self::read_all) by name, one map per kind; keys that are
    /// not ours (another kind, prefix or program) are left out.
    fn by_name<'f>(&self, found: &'f [Vec<KeyValue>]) -> [BTreeMap<&'f str, &'f KeyValue>; 4] {
        let mut maps = [(); 4].map(|()| BTreeMap::new());
        for ((map, kind), kvs) in maps.iter_mut().zip(KINDS).zip(found) {
            for kv in kvs {
                if let Some(name) = kv::name_of_key(kv.key(), &self.prefix, kind) {
                    map.insert(name, kv);
                }
            }
        }
        maps
    }

    fn error(&self, operation: &'static str, err: etcd_client::Error) -> Error {
        driver_error(&self.url, operation, err, self.tls.as_ref())
    }

    fn malformed(&self, operation: &'static str, name: &str) -> Error {
        Error::store(
            &self.url,
            operation,
            format!("the keys of {name:?} do not hold a lease record written by singleton"),
        )
    }

    /// A record of `name` that cannot be read: `why` says which and how.
    fn unreadable(&self, operation: &'static str, name: &str, why: String) -> Error {
        Error::store(&self.url, operation, format!("{name:?}: {why}"))
    }

    /// The keys of `name` changed under the operation [`MAX_ATTEMPTS`] times in a row.
    fn kept_changing(&self, operation: &'static str, name: &str) -> Error {
        Error::store(
            &self.url,
            operation,
            format!("the keys of {name:?} kept changing under this request; try again"),
        )
    }

    /// The etcd lease length for `ttl`: whole seconds, rounded up, at least [`MIN_TTL`].
    fn ttl_secs(&self, ttl: Duration) -> Result<i64> {
        if ttl < MIN_TTL {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "{}: etcd leases last at least 2s, but {} was asked for; use a TTL of 2s or more",
                    self.url,
                    humantime::format_duration(ttl)
                ),
            });
        }
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        i64::try_from(secs)
            .ok()
            .filter(|_| secs <= MAX_TTL_SECS)
            .ok_or_else(|| Error::InvalidOptions {
                reason: format!(
                    "{}: a lease of {} is longer than etcd's longest ({MAX_TTL_SECS}s)",
                    self.url,
                    humantime::format_duration(ttl)
                ),
            })
    }

    async fn txn(&self, operation: &'static str, txn: Txn) -> Result<TxnResponse> {
        self.call(operation, |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }

    /// The spare lease, if it was granted for `secs` and has not probably run out by `now`.
    /// One that does not fit is revoked.
    fn take_spare(&self, secs: i64, now: SystemTime) -> Option<Spare> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        // Half its length left, or the keep-alive might well find it gone.
        let half = Duration::from_secs(spare.secs.unsigned_abs()) / 2;
        if spare.secs == secs && spare.expires > now + half {
            Some(spare)
        } else {
            self.revoke_in_background(spare.id);
            None
        }
    }

    /// Keeps `spare` for the next acquisition; with one kept already, revokes it instead.
    fn keep_spare(&self, spare: Spare) {
        let mut slot = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(spare);
        } else {
            drop(slot);
            self.revoke_in_background(spare.id);
        }
    }

    /// Refreshes the spare lease with a keep-alive and runs `txn`, whose put attaches the lease
    /// key to it, both sent at once: one round trip, and only the transaction is a write.
    ///
    /// Why the lease cannot run out under the holder: etcd refuses a put onto a lease it no
    /// longer has, and a keep-alive of a lease that has run out fails (etcd waits for its
    /// revocation first). So when both succeed, whichever came first, the key was on a live
    /// lease from the transaction on, and the keep-alive, sent after the caller's request
    /// time, restarted the lease's full length at the leader. Should the keep-alive fail, a key
    /// the transaction attached is deleted again (owner-checked) and `None` asks the caller to
    /// start over with a new lease.
    async fn refresh_and_attach(
        &self,
        name: &str,
        holder: &Holder,
        spare: Spare,
        txn: Txn,
    ) -> Result<Option<TxnResponse>> {
        let client = self.lend("acquire").await?;
        let (kept, attached) = tokio::join!(
            until_sent(|| {
                let mut keeper = client.clone();
                async move { keeper.lease_keep_alive(spare.id).await }
            }),
            until_sent(|| {
                let (mut attacher, txn) = (client.clone(), txn.clone());
                async move { attacher.txn(txn).await }
            }),
        );
        settle(client, &[kept.as_ref().err(), attached.as_ref().err()]);
        match (kept, attached) {
            (Ok(_), Ok(response)) => Ok(Some(response)),
            (Ok(_), Err(err)) => {
                // The transaction may have been applied all the same: the revocation takes a
                // key it attached with it.
                self.revoke(spare.id).await;
                Err(self.error("acquire", err))
            }
            (Err(_), Ok(response)) => {
                if response.succeeded() {
                    self.undo_attach(name, holder, &response).await?;
                }
                self.revoke_in_background(spare.id);
                Ok(None)
            }
            (Err(_), Err(err)) if is_lease_not_found(&err) => Ok(None),
            (Err(_), Err(err)) => {
                self.revoke_in_background(spare.id);
                Err(self.error("acquire", err))
            }
        }
    }

    /// Deletes the lease key that a successful acquire transaction (`response`) created,
    /// because its etcd lease cannot be vouched for. Owner-checked, like a release.
    async fn undo_attach(&self, name: &str, holder: &Holder, response: &TxnResponse) -> Result<()> {
        let token = response
            .header()
            .and_then(|header| u64::try_from(header.revision()).ok())
            .ok_or_else(|| self.malformed("acquire", name))?;
        let lease = Lease {
            name: name.to_owned(),
            holder: holder.clone(),
            token: FencingToken(token),
            created: SystemTime::now(),
            expires: None,
        };
        self.delete_if_ours("acquire", &lease).await.map(|_| ())
    }

    /// Grants the etcd lease `lease_id` for `secs` seconds and runs `txn`, whose put attaches
    /// the lease key to it, both sent at once: one round trip instead of two. etcd checks a
    /// put's lease before it applies any of a transaction's operations, so a transaction that
    /// overtakes the grant changes nothing and fails with "lease not found"; it is sent again
    /// once the grant has been applied. The lease starts when the grant is applied, after the
    /// caller's request time, so the holder's deadline stays on the safe side.
    async fn grant_and_attach(
        &self,
        name: &str,
        holder: &Holder,
        lease_id: i64,
        secs: i64,
        txn: Txn,
    ) -> Result<TxnResponse> {
        let client = self.lend("acquire").await?;
        let attach = || {
            let (mut attacher, txn) = (client.clone(), txn.clone());
            async move { attacher.txn(txn).await }
        };
        let (granted, attached) = tokio::join!(
            until_sent(|| {
                let mut granter = client.clone();
                let options = LeaseGrantOptions::new().with_id(lease_id);
                async move { granter.lease_grant(secs, Some(options)).await }
            }),
            until_sent(attach),
        );
        let attached = match attached {
            Err(err) if granted.is_ok() && is_lease_not_found(&err) => until_sent(attach).await,
            other => other,
        };
        settle(client, &[granted.as_ref().err(), attached.as_ref().err()]);
        match (granted, attached) {
            (Ok(_), Ok(response)) => Ok(response),
            (Ok(_), Err(err)) => {
                self.revoke(lease_id).await;
                Err(self.error("acquire", err))
            }
            (Err(err), Ok(response)) => {
                // The key went onto a lease with our id that, as far as we know, our grant did
                // not create (an id that collided, or a grant whose answer was lost): take the
                // key back, but leave that lease alone, it may be somebody else's.
                if response.succeeded()
                    && let Err(undo) = self.undo_attach(name, holder, &response).await
                {
                    tracing::warn!(store = %self.url, name, error = %undo, "could not undo an acquisition whose etcd lease grant failed; it ends with that lease");
                }
                Err(self.error("acquire", err))
            }
            (Err(err), Err(_)) => Err(self.error("acquire", err)),
        }
    }

    /// Deletes the lease key and the info key of `lease` in one transaction if the lease is
    /// still ours; the response's results are the deleted lease key and info key.
    async fn delete_if_ours(&self, operation: &'static str, lease: &Lease) -> Result<TxnResponse> {
        let lease_key = self.key(LEASE, &lease.name);
        let txn = Txn::new().when(ours(&lease_key, lease)?).and_then([
            TxnOp::delete(
                lease_key.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            ),
            TxnOp::delete(
                self.key(INFO, &lease.name),
                Some(DeleteOptions::new().with_prev_key()),
            ),
        ]);
        self.txn(operation, txn).await
    }

    /// When the etcd lease `id` expires by its remaining TTL (informational); `None` for no
    /// lease. A lease that is already gone reports now.
    async fn expiry(&self, operation: &'static str, id: i64) -> Result<Option<SystemTime>> {
        if id == 0 {
            return Ok(None);
        }
        let left = self
            .call(operation, |mut client| async move {
                client.lease_time_to_live(id, None).await
            })
            .await?
            .ttl();
        Ok(Some(
            SystemTime::now() + Duration::from_secs(left.max(0).unsigned_abs()),
        ))
    }

    /// Records `expires` as the expiry of `lease`, renewed on etcd lease `id`, for `list` to
    /// read with the keys instead of asking etcd for each lease's time to live: written only
    /// while the lease key is still ours and on that etcd lease.
    ///
    /// The write is sent in the background (see [`in_background`](Self::in_background)),
    /// bounded by [`RECORD_TIMEOUT`]: the renewal is done already, and neither a slow write nor
    /// one cut off by a partition may delay the holder's next renewal or make its next request
    /// connect afresh. `list` falls back to asking etcd when
    /// the record is missing or not the lease key's own, and a record that lags (a write lost
    /// or overtaken) only shows an earlier expiry than the lease has.
    fn record_renewal(&self, lease: &Lease, keys: &Keys, id: i64, expires: SystemTime) {
        let (Ok(mut still_ours), Ok(token)) = (ours(&keys.lease, lease), token_of(lease)) else {
            return;
        };
        // The record the acquisition wrote, on the same etcd lease as the lease key.
        still_ours.extend([
            Compare::lease(keys.lease.clone(), CompareOp::Equal, id),
            Compare::create_revision(keys.expires.clone(), CompareOp::Equal, token),
        ]);
        let txn = Txn::new()
            .when(still_ours)
            .and_then([keys.record_expiry(id, expires)]);
        let (url, name) = (self.url.clone(), lease.name.clone());
        self.in_background(move |mut client| async move {
            let why = match tokio::time::timeout(RECORD_TIMEOUT, client.txn(txn)).await {
                Ok(Ok(_)) => return,
                Ok(Err(err)) => flattened(&err),
                Err(_) => format!("no answer within {RECORD_TIMEOUT:?}"),
            };
            tracing::debug!(store = %url, name = %name, error = %why, "could not record a renewed lease's expiry for list");
        });
    }

    /// Revokes an etcd lease whose key is already gone or was never written. Only tidiness
    /// depends on it (an unrevoked lease runs out by itself), so a failure is logged, not
    /// returned.
    async fn revoke(&self, id: i64) {
        if id == 0 {
            return;
        }
        let revoked = self
            .call("revoke", |mut client| async move {
                client.lease_revoke(id).await
            })
            .await;
        if let Err(err) = revoked {
            tracing::debug!(store = %self.url, lease = id, error = %err, "could not revoke an unused etcd lease");
        }
    }

    /// Revokes the etcd lease of a key that finish has deleted (or moved), without waiting:
    /// nothing is attached to it any more, so this only saves the server from expiring it
    /// later, and a finish need not wait a second round trip for that. Outside a tokio runtime
    /// (or if the process exits first) the lease simply runs out.
    fn revoke_in_background(&self, id: i64) {
        if id == 0 {
            return;
        }
        self.in_background(move |mut client| async move {
            let _ = client.lease_revoke(id).await;
        });
    }

    /// Runs `work` on the current client in the background, without borrowing the client (see
    /// [`Reconnecting::peek`]): for requests whose outcome nobody waits for, which must neither
    /// delay the caller nor, should they hang, make the next request connect afresh. Without a
    /// runtime or a client, `work` is skipped.
    fn in_background<F>(&self, work: impl FnOnce(Client) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let (Ok(runtime), Some(client)) =
            (tokio::runtime::Handle::try_current(), self.clients.peek())
        {
            runtime.spawn(work(client));
        }
    }
}

/// An etcd client error, shown as one short line (the gRPC code and message, then the causes
/// that add something); the client's error stays available as its source.
#[derive(Debug)]
struct EtcdError {
    message: String,
    source: etcd_client::Error,
}

impl From<etcd_client::Error> for EtcdError {
    fn from(source: etcd_client::Error) -> Self {
        EtcdError {
            message: flattened(&source),
            source,
        }
    }
}

/// The client's error on one line: the gRPC code and message, then the causes that add
/// something (tonic's transport errors keep rustls's cause among their sources).
fn flattened(err: &etcd_client::Error) -> String {
    use std::error::Error as _;
    // The client's own Display of a gRPC status is a debug dump of the whole chain.
    let (mut message, mut cause) = match err {
        etcd_client::Error::GRpcStatus(status) => (
            format!("{:?}: {}", status.code(), status.message()),
            status.source(),
        ),
        etcd_client::Error::TransportError(err) => (err.to_string(), err.source()),
        other => (other.to_string(), None),
    };
    while let Some(err) = cause {
        let text = err.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = err.source();
    }
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// [`Error::Refused`] when trying again will not help: etcd refused our credentials or our
/// access (a wrong user or password, or a role without permission on the prefix), or TLS
/// failed (`tls`: the URL's settings), shown as its one-line cause; else [`Error::Store`]. An
/// expired auth token is not a refusal: the client logs in again.
fn driver_error(
    store: &str,
    operation: &'static str,
    err: etcd_client::Error,
    tls: Option<&Tls>,
) -> Error {
    let refused = is_refusal(&err);
    let mut err = EtcdError::from(err);
    if let Some(cause) = transport::explain(&err.message, tls) {
        err.message = cause.to_string();
        return Error::refused(store, operation, err);
    }
    if refused {
        Error::refused(store, operation, err)
    } else {
        Error::store(store, operation, err)
    }
}

/// Whether the cluster refused our credentials or our access; an expired auth token is not a
/// refusal: the client logs in again.
fn is_refusal(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => match i32::from(status.code()) {
            grpc::PERMISSION_DENIED => true,
            grpc::UNAUTHENTICATED => !status.message().contains("invalid auth token"),
            // etcd's own word for a wrong user or password.
            grpc::INVALID_ARGUMENT => status.message().contains("authentication failed"),
            _ => false,
        },
        _ => false,
    }
}

/// The error of a connect that failed. A connection that failed without saying why (closed,
/// or a broken pipe) may be a TLS mismatch that tonic does not report: a handshake of our own
/// tells (see [`transport::diagnose`]), within the connect timeout once more.
async fn connect_error(store: &str, target: &self::url::Target, err: etcd_client::Error) -> Error {
    let tls = target.tls.as_ref();
    let unexplained = match &err {
        etcd_client::Error::GRpcStatus(status) => matches!(
            i32::from(status.code()),
            grpc::CANCELLED | grpc::UNKNOWN | grpc::UNAVAILABLE
        ),
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    } && transport::explain(&flattened(&err), tls).is_none();
    if unexplained
        && let Some(diagnosis) =
            transport::diagnose(&target.endpoints, tls, target.connect_timeout).await
    {
        let mut err = EtcdError::from(err);
        return match diagnosis {
            transport::Diagnosis::Certain(cause) => {
                err.message = cause.to_string();
                Error::refused(store, "connect", err)
            }
            // Only likely: a waiter should still wait.
            transport::Diagnosis::Hint(cause) => {
                err.message = format!("{}: {cause}", err.message);
                Error::store(store, "connect", err)
            }
        };
    }
    driver_error(store, "connect", err, tls)
}

/// The gRPC status codes we tell apart (the channel's own timeout reports `CANCELLED`).
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// How many times a request is sent in all while the channel fails to connect to the member
/// it picked for it (see [`until_sent`]).
const SENDS: usize = 6;

/// Sends a request (`send` sends it once) again, at once, while it fails because the channel
/// could not connect to the member it picked: the request never left, so sending it again is
/// sending it for the first time, whatever it is (a write too).
///
/// The channel balances requests over every member named in the URL, and it keeps a member
/// that is down among them: its connection is tried afresh for every request picked for it,
/// and a refused connection fails that request at once. So with one member of three down
/// (crashed, or just restarting), one request in three or so would fail, though the cluster
/// answers. Sent again, the request goes to a member picked afresh; the caller's request
/// timeout still bounds the whole.
async fn until_sent<T, F>(mut send: impl FnMut() -> F) -> Result<T, etcd_client::Error>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut sent = 1;
    loop {
        match send().await {
            Err(err) if never_sent(&err) && sent < SENDS => {
                tracing::debug!(error = %EtcdError::from(err), "an etcd member could not be reached; sending the request to another");
                sent += 1;
            }
            answer => return answer,
        }
    }
}

/// Whether a request failed because no connection could be made for it: tonic reports a
/// failed connect as `UNAVAILABLE` with the connector's own words (a TLS handshake that
/// failed is not among these: that connection was made, and its error stands).
fn never_sent(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status)
        if i32::from(status.code()) == grpc::UNAVAILABLE
            && ["tcp connect error", "dns error"]
                .iter()
                .any(|words| status.message().starts_with(words)))
}

/// Hands a lent client back, unless one of the requests on it timed out (the channel's own
/// request timeout), which gives it up like an abandoned request.
fn settle(client: Lent<'_, Client>, errors: &[Option<&etcd_client::Error>]) {
    let timed_out = errors.iter().flatten().any(|err| {
        matches!(err, etcd_client::Error::GRpcStatus(status)
            if matches!(i32::from(status.code()), grpc::CANCELLED | grpc::DEADLINE_EXCEEDED))
    });
    if !timed_out {
        client.answered();
    }
}

/// The key-values a transaction's reads returned (and a delete's previous values), one list
/// per operation in order; a put gives its previous value if it asked for it, a nested
/// transaction an empty list.
fn results(response: &TxnResponse) -> Vec<Vec<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().to_vec(),
            TxnOpResponse::Delete(delete) => delete.prev_kvs().to_vec(),
            TxnOpResponse::Put(put) => put.prev_key().into_iter().cloned().collect(),
            TxnOpResponse::Txn(_) => Vec::new(),
        })
        .collect()
}

/// Whether etcd refused a transaction because a put names a lease it does not have (yet).
fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status) if status.message().contains("lease not found"))
}

/// The `n`th operation's first key-value.
fn first(results: &[Vec<KeyValue>], n: usize) -> Option<&KeyValue> {
    results.get(n).and_then(|kvs| kvs.first())
}

/// The compares that make a transaction act only on our lease: the lease key was created by
/// our acquisition (its revision is our token) and still names our holder id.
fn ours(key: &[u8], lease: &Lease) -> Result<Vec<Compare>> {
    Ok(vec![
        Compare::create_revision(key, CompareOp::Equal, token_of(lease)?),
        Compare::value(key, CompareOp::Equal, lease.holder.id.as_bytes()),
    ])
}

/// The lease's token as the etcd revision it is.
fn token_of(lease: &Lease) -> Result<i64> {
    i64::try_from(lease.token.0)
        .map_err(|_| Error::lost(lease, "its token is not an etcd revision"))
}

/// A [`SystemTime`] as milliseconds since the Unix epoch (0 before it).
fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> &str {
        &self.url
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire> {
        let secs = ttl.map(|ttl| self.ttl_secs(ttl)).transpose()?;
        let keys = self.keys(name);
        let created = SystemTime::now();
        let created_ms = unix_ms(created);
        let info = Info::encode(holder, created_ms, secs.map_or(0, i64::unsigned_abs));
        let expires = secs.map(|secs| created + Duration::from_secs(secs.unsigned_abs()));
        // Creates the lease key if there is none and the info key is as last seen (`seen`: its
        // mod revision, 0 for none), writing `record` as the last run; else reads the keys.
        let txn = |lease_id: i64, seen: i64, record: Option<Vec<u8>>| {
            let put = (lease_id != 0).then(|| PutOptions::new().with_lease(lease_id));
            let mut writes: Vec<TxnOp> = record
                .map(|record| TxnOp::put(keys.last.clone(), record, None))
                .into_iter()
                .collect();
            writes.push(TxnOp::put(keys.lease.clone(), holder.id.as_bytes(), put));
            writes.push(TxnOp::put(keys.info.clone(), info.clone(), None));
            if let (true, Some(expires)) = (lease_id != 0, expires) {
                writes.push(keys.record_expiry(lease_id, expires));
            }
            Txn::new()
                .when([
                    Compare::create_revision(keys.lease.clone(), CompareOp::Equal, 0),
                    Compare::mod_revision(keys.info.clone(), CompareOp::Equal, seen),
                ])
                .and_then(writes)
                .or_else(keys.reads())
        };
        // The first attempt expects no info key: a finished run leaves none.
        let (lease_id, mut response) = match secs {
            None => (0, self.txn("acquire", txn(0, 0, None)).await?),
            Some(secs) => {
                let refreshed = match self.take_spare(secs, created) {
                    Some(spare) => self
                        .refresh_and_attach(name, holder, spare, txn(spare.id, 0, None))
                        .await?
                        .map(|response| (spare.id, response)),
                    None => None,
                };
                match refreshed {
                    Some(done) => done,
                    None => {
                        // An id of our own choosing, so that the grant need not come back
                        // before the transaction that attaches the key to it can be sent.
                        let id = fastrand::i64(1..=i64::MAX);
                        let txn = txn(id, 0, None);
                        let response = self.grant_and_attach(name, holder, id, secs, txn);
                        (id, response.await?)
                    }
                }
            }
        };
        let mut took_over = None;
        let mut attempts = 1;
        while !response.succeeded() {
            let found = results(&response);
            if let Some(held) = first(&found, 0) {
                // Nothing was attached to our lease: keep it for the next attempt.
                if let Some(secs) = secs {
                    self.keep_spare(Spare {
                        id: lease_id,
                        secs,
                        expires: created + Duration::from_secs(secs.unsigned_abs()),
                    });
                }
                let mut lease = records::lease_of(name, held, first(&found, 1), first(&found, 2))
                    .ok_or_else(|| self.malformed("acquire", name))?;
                lease.expires = match records::expiry_of(held, first(&found, 3)) {
                    Some(recorded) => Some(recorded),
                    None => self.expiry("acquire", held.lease()).await?,
                };
                return Ok(Acquire::Held(lease));
            }
            if attempts == MAX_ATTEMPTS {
                self.revoke_in_background(lease_id);
                return Err(self.kept_changing("acquire", name));
            }
            attempts += 1;
            // No lease key, but an info key: the lease of a run that never finished expired.
            // Taking over records that run (unless its holder finished it meanwhile), under the
            // condition that the info key is still the one read here. Our etcd lease is live
            // (refreshed or granted just now), so this attaches the key as safely.
            let (seen, record) = match first(&found, 1) {
                Some(info_kv) => {
                    let (previous, record) = run::unfinished(name, info_kv, first(&found, 2));
                    took_over = previous;
                    (info_kv.mod_revision(), record)
                }
                None => {
                    took_over = None;
                    (0, None)
                }
            };
            response = match self.txn("acquire", txn(lease_id, seen, record)).await {
                Ok(response) => response,
                Err(err) => {
                    // It may have been applied all the same: the revocation takes a key it
                    // attached with it.
                    self.revoke(lease_id).await;
                    return Err(err);
                }
            };
        }
        let token = response
            .header()
            .and_then(|header| u64::try_from(header.revision()).ok())
            .ok_or_else(|| self.malformed("acquire", name))?;
        let lease = Lease {
            name: name.to_owned(),
            holder: holder.clone(),
            token: FencingToken(token),
            created: kv::from_unix_ms(created_ms),
            expires,
        };
        Ok(Acquire::Acquired { lease, took_over })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let secs = self.ttl_secs(ttl)?;
        let keys = self.keys(&lease.name);
        // The info key names the run until it finishes: a lease kept after its run is not
        // renewed any more.
        let mut compares = ours(&keys.lease, lease)?;
        compares.push(Compare::mod_revision(
            keys.info.clone(),
            CompareOp::Equal,
            token_of(lease)?,
        ));
        let txn = Txn::new().when(compares).and_then([
            TxnOp::get(keys.lease.clone(), None),
            TxnOp::get(keys.info.clone(), None),
        ]);
        let response = self.txn("renew", txn).await?;
        if !response.succeeded() {
            return Err(Error::lost(
                lease,
                "it expired, was released or finished, or another holder has it",
            ));
        }
        let found = results(&response);
        let lease_kv = first(&found, 0).ok_or_else(|| self.malformed("renew", &lease.name))?;
        let info = first(&found, 1)
            .and_then(|info| Info::decode(info.value()))
            .ok_or_else(|| self.malformed("renew", &lease.name))?;
        let mut renewed = lease.clone();
        if lease_kv.lease() == 0 {
            // A lease that never expires has nothing to extend; it is still ours.
            renewed.expires = None;
            return Ok(renewed);
        }
        // A keep-alive restores the TTL granted at acquisition; it cannot lengthen it.
        if secs.unsigned_abs() > info.granted_secs {
            return Err(Error::InvalidOptions {
                reason: format!(
                    "{}: etcd renews a lease to the length it was granted ({}s) and cannot lengthen it to {}",
                    self.url,
                    info.granted_secs,
                    humantime::format_duration(ttl)
                ),
            });
        }
        let sent = SystemTime::now();
        let id = lease_kv.lease();
        let kept = self
            .try_call("renew", |mut client| async move {
                client.lease_keep_alive(id).await
            })
            .await?;
        match kept {
            Ok(_) => {}
            // The client reports a keep-alive answered with TTL 0 (lease gone) this way.
            Err(etcd_client::Error::LeaseKeepAliveError(reason)) => {
                return Err(Error::lost(
                    lease,
                    format!("its etcd lease is gone ({reason})"),
                ));
            }
            Err(err) => return Err(self.error("renew", err)),
        }
        let expires = sent + Duration::from_secs(info.granted_secs);
        self.record_renewal(lease, &keys, id, expires);
        renewed.expires = Some(expires);
        Ok(renewed)
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        self.finish_run(lease, finish).await
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        let keys = self.keys(name);
        let found = results(
            &self
                .txn("last-run", Txn::new().and_then(keys.reads()))
                .await?,
        );
        records::last_run_of(name, first(&found, 0), first(&found, 1), first(&found, 2))
            .map_err(|why| self.unreadable("last-run", name, why))
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        let found = results(&self.read_everything("last-runs").await?);
        let [leases, infos, lasts, _] = self.by_name(&found);
        // Every name with a run on record has an info key or a last key; keys (and so these
        // maps) are ordered by the names' bytes, which is the names' order.
        let names: std::collections::BTreeSet<&str> =
            infos.keys().chain(lasts.keys()).copied().collect();
        let mut runs = Vec::with_capacity(names.len());
        for name in names {
            let run = records::last_run_of(
                name,
                leases.get(name).copied(),
                infos.get(name).copied(),
                lasts.get(name).copied(),
            )
            .map_err(|why| self.unreadable("last-runs", name, why))?;
            runs.extend(run);
        }
        Ok(runs)
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        let keys = self.keys(name);
        let found = results(
            &self
                .txn("inspect", Txn::new().and_then(keys.reads()))
                .await?,
        );
        let Some(lease_kv) = first(&found, 0) else {
            return Ok(None);
        };
        let mut lease = records::lease_of(name, lease_kv, first(&found, 1), first(&found, 2))
            .ok_or_else(|| self.malformed("inspect", name))?;
        lease.expires = self.expiry("inspect", lease_kv.lease()).await?;
        Ok(Some(lease))
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        // One snapshot of every kind of key; a range over "{prefix}lease/" can only hold lease
        // keys, and every key is parsed strictly.
        let found = results(&self.read_everything("list").await?);
        let [leases, infos, lasts, expiries] = self.by_name(&found);
        let mut listed = Vec::with_capacity(leases.len());
        // In name order, as the keys are.
        for (name, lease_kv) in &leases {
            listed.push(
                records::lease_of(
                    name,
                    lease_kv,
                    infos.get(name).copied(),
                    lasts.get(name).copied(),
                )
                .ok_or_else(|| self.malformed("list", name))?,
            );
        }
        // The holders record each lease's expiry as they renew it; a lease without a record of
        // its own (taken by a previous version, or whose last record failed) costs a request
        // for its time to live (etcd keeps the TTL with the lease, not the key): many at once
        // over the one connection, or a long list would take a round trip per name.
        use futures_util::StreamExt as _;
        let asking: Vec<_> = leases
            .iter()
            .zip(&mut listed)
            .filter_map(|((name, lease_kv), lease)| {
                lease.expires = records::expiry_of(lease_kv, expiries.get(name).copied());
                (lease.expires.is_none() && lease_kv.lease() != 0)
                    .then_some(async { (lease, self.expiry("list", lease_kv.lease()).await) })
            })
            .collect();
        let asked: Vec<_> = futures_util::stream::iter(asking)
            .buffer_unordered(EXPIRIES_AT_ONCE)
            .collect()
            .await;
        for (lease, expires) in asked {
            lease.expires = expires?;
        }
        Ok(listed)
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        self.force_release_run(name).await
    }

    /// A watch (on the client's gRPC channel) of the name's lease key: its deletion (finish,
    /// force-release and expiry alike) may have freed the name, and its creation is an
    /// acquire that took it.
    async fn watch(&self, name: &str) -> Result<Option<Freed>> {
        let client = self.lend("watch").await?;
        let options = WatchOptions::new();
        let starting = async {
            let mut stream = until_sent(|| {
                let (mut watcher, options) = (client.clone(), options.clone());
                let key = self.key(LEASE, name);
                async move { watcher.watch(key, Some(options)).await }
            })
            .await?;
            // Deletions are reported from the moment etcd confirms the watch.
            match stream.message().await? {
                Some(response) if response.created() => Ok(stream),
                _ => Err(etcd_client::Error::WatchError(
                    "etcd did not confirm the watch".to_owned(),
                )),
            }
        };
        let started = tokio::time::timeout(kv::RESPONSE_TIMEOUT, starting).await;
        // A set-up that timed out gives the client up, with its channel.
        let Ok(started) = started else {
            return Err(Error::Timeout {
                store: self.url.clone(),
                operation: "watch",
                after: kv::RESPONSE_TIMEOUT,
            });
        };
        settle(client, &[started.as_ref().err()]);
        let mut stream = started.map_err(|e| self.error("watch", e))?;
        let (heard, word) = Freed::channel();
        let listener = Freed::listen(async move {
            while let Ok(Some(response)) = stream.message().await {
                if response.canceled() {
                    return;
                }
                // The newest event counts; a put that is not the key's creation (none of
                // ours) leaves it held by whoever held it.
                let word =
                    response
                        .events()
                        .iter()
                        .rev()
                        .find_map(|event| match event.event_type() {
                            EventType::Delete => Some(Heard::Freed),
                            EventType::Put => event
                                .kv()
                                .filter(|kv| kv.create_revision() == kv.mod_revision())
                                .map(|_| Heard::Taken { expires: None }),
                        });
                if let Some(word) = word {
                    heard.tell(word);
                }
            }
        });
        Ok(Some(Freed::new(word, listener)))
    }

    async fn doctor(&self) -> Result<Vec<crate::doctor::Check>> {
        self.checks().await
    }

    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        let key = self.key(BENCH, scratch_key);
        let put = key.clone();
        self.call("benchmark", |mut client| {
            let put = put.clone();
            async move { client.put(put, "1", None).await }
        })
        .await?;
        self.call("benchmark", |mut client| {
            let key = key.clone();
            async move { client.delete(key, None).await }
        })
        .await?;
        Ok(())
    }
}
