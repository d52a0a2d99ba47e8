//! `mongodb://` and `mongodb+srv://` — leases in a MongoDB collection (feature `mongodb`), the
//! original package's only persister, done safely.
//!
//! One document per name, `_id` = the name:
//!
//! ```text
//! { _id: "nightly-report",
//!   token: 7,                                   // the fencing counter; survives release and expiry
//!   holder: { id, host, pid, label } | null,    // null while nobody holds the name
//!   created: ISODate(...),                      // by the server's clock ($$NOW)
//!   expires: ISODate(...) | null,               // null: never expires (or free)
//!   previous: { holder, token, created, expires } | null,  // the expired lease last taken over
//!   run: { holder, token, started, ended, outcome, lease } } // the last ended run (see `run`)
//! ```
//!
//! Documents written before `run` existed have none: they mean "no last run", and every
//! operation works on them as on any other.
//!
//! Every operation is one command, so one round trip:
//! - acquire: `findAndModify` on `{_id: name}` with upsert, whose update pipeline keeps the
//!   document as it is (`$$ROOT`) while its lease is live by the server's `$$NOW`, and otherwise
//!   replaces it with our lease and token + 1, putting an expired lease's run on record as
//!   unknown unless it was finished. The reply is the document after the update: our holder id
//!   means we hold it, any other holder is the conflict, with no second read.
//! - renew: `findAndModify` matching holder id, token and a live lease; no match is `Lost`.
//! - finish (and release): `findAndModify` matching our holder id and token, or a run on record
//!   that is ours and unfinished; its pipeline records the run and gives the lease back or keeps
//!   it for a hold, or only sets the outcome of the run on record. The reply tells which.
//! - force-release: `findAndModify` matching a live lease; frees it and records its run.
//! - last run(s): `aggregate` reading the documents with their liveness by `$$NOW`.
//!
//! Dates are compared as `$toLong` milliseconds inside `$expr`: valid on every MongoDB since 4.2
//! and needed by SecantusDB, whose direct comparison of a date with `$$NOW` is broken. Every
//! caller-supplied value inside a pipeline is wrapped in `$literal`, so a name or label such as
//! `$where` is data, never a field path or operator.
//!
//! The documents are never deleted (no TTL index): deleting one would restart its fencing
//! counter at 1. One small document per name ever used is the price.

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, Database};
use serde::Deserialize;

use super::reconnect::Reconnecting;

mod doctor;
mod run;
mod tls;
mod url;

use self::url::{StoreUrl, check_collection_name};
use super::{
    Acquire, FencingToken, Finish, Holder, LastRun, Lease, Released, Store, mask_password, redact,
};
use crate::error::{Error, Result};

/// The collection used when the URL has no `?collection=`.
pub const DEFAULT_COLLECTION: &str = "singletons";

/// How long connecting (TCP + TLS + handshake) and finding a usable server may take, unless the
/// URL sets `connectTimeoutMS` / `serverSelectionTimeoutMS`. The driver's own defaults (10 s and
/// 30 s) would leave the CLI silent for half a minute on a wrong host name.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one store operation may take in all, unless the URL sets `timeoutMS`. The driver
/// has no socket timeout, so without this a server that accepts but never answers would hang
/// every call (the lease's own deadline still protects a holder, but not `status` or `release`).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest lease we accept: far beyond any sensible TTL, and safely inside BSON dates.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// How often acquire is tried when two first-ever upserts of one name collide. The second try
/// finds the document the winner inserted, so it has an answer.
const ACQUIRE_TRIES: usize = 3;

/// The MongoDB store: one [`Client`] (a connection pool) shared by every call, and replaced by
/// a new one once a request was abandoned (see `reconnect`).
#[derive(Clone)]
pub struct MongoStore {
    url: String,
    handles: Arc<Reconnecting<Handles>>,
    /// For the next client.
    options: ClientOptions,
    database: String,
    collection: String,
    timeout: Duration,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

/// What the store reaches through one client.
#[derive(Clone)]
struct Handles {
    db: Database,
    leases: Collection<LeaseDoc>,
    scratch: Collection<Document>,
}

impl Handles {
    fn new(
        options: &ClientOptions,
        database: &str,
        collection: &str,
    ) -> mongodb::error::Result<Self> {
        let db = Client::with_options(options.clone())?.database(database);
        Ok(Handles {
            leases: db.collection(collection),
            scratch: db.collection(&format!("{collection}.benchmark")),
            db,
        })
    }
}

impl MongoStore {
    /// Connects to the store named by a `mongodb://` or `mongodb+srv://` URL.
    ///
    /// The database comes from the URL's path (required); `?collection=` names the collection
    /// (default [`DEFAULT_COLLECTION`]) and `?timeoutMS=` bounds each operation (default
    /// [`OPERATION_TIMEOUT`]); every other option is the driver's. Connecting checks that the
    /// server answers and accepts the credentials, so a bad host or password fails here.
    pub async fn open(url: &str) -> Result<Self> {
        let masked = mask_password(url);
        let parsed = StoreUrl::parse(url)?;
        // mongodb+srv:// asks DNS while parsing, which must not hang either.
        let parsing =
            tokio::time::timeout(parsed.timeout, ClientOptions::parse(&parsed.driver_url));
        let parsed_options = parsing.await.map_err(|_| Error::Timeout {
            store: masked.clone(),
            operation: "connect",
            after: parsed.timeout,
        })?;
        let mut options = parsed_options.map_err(|err| match *err.kind {
            // mongodb+srv:// resolves its hosts while parsing: a DNS failure is an outage
            // (or a typo in the host), not a malformed URL.
            ErrorKind::DnsResolve { .. } => {
                Error::store(&masked, "connect", DriverError::new(err, url))
            }
            _ => Error::InvalidUrl {
                url: masked.clone(),
                reason: DriverError::new(err, url).message,
            },
        })?;
        // A lease acknowledged by the primary alone could be rolled back by a fail-over, and
        // one acknowledged before it reached the journal could vanish in a crash of the server
        // that restarts within the lease: either way its token could be issued again, to a
        // second holder. Unless the URL says otherwise (`w=`, `journal=`), wait for a majority
        // and for the journal.
        let concern = options
            .write_concern
            .get_or_insert_with(WriteConcern::default);
        concern.w.get_or_insert(Acknowledgment::Majority);
        concern.journal.get_or_insert(true);
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options
            .server_selection_timeout
            .get_or_insert(CONNECT_TIMEOUT);
        let database = options
            .default_database
            .clone()
            .filter(|db| !db.is_empty())
            .ok_or_else(|| Error::InvalidUrl {
                url: masked.clone(),
                reason: "name the database in the path, e.g. mongodb://host:27017/locks".into(),
            })?;
        let tls = tls::settings(&options);
        if let Some(tls) = &tls {
            // Checked before anything goes on the wire, so that an unreadable file is one line
            // that names it (the driver says only that it could not connect).
            let refused = |e| Error::refused(&masked, "connect", e);
            tls.ca_pem().map_err(refused)?;
            tls.identity_pem().map_err(refused)?;
        }
        let hosts = options.hosts.clone();
        let connected = Self::connect(
            masked.clone(),
            url,
            options,
            &database,
            &parsed.collection,
            parsed.timeout,
        )
        .await;
        match connected {
            Err(err @ (Error::Store { .. } | Error::Timeout { .. })) => {
                Err(tls::explain_connect(&masked, err, tls.as_ref(), &hosts).await)
            }
            other => other,
        }
    }

    /// Connects with client options the caller built, e.g. with a command monitor or the
    /// application's own pool settings, using `database` and `collection` and bounding each
    /// operation by `timeout`. Unlike [`MongoStore::open`] it applies no defaults: the write
    /// concern and the connect timeouts are exactly as given.
    pub async fn with_options(
        options: ClientOptions,
        database: &str,
        collection: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
        let url = format!(
            "mongodb://{}/{database}?collection={collection}",
            hosts.join(",")
        );
        let valid = if database.is_empty() {
            Err("the database name is empty")
        } else {
            check_collection_name(collection)
        };
        valid.map_err(|reason| Error::InvalidUrl {
            url: url.clone(),
            reason: reason.into(),
        })?;
        Self::connect(url.clone(), &url, options, database, collection, timeout).await
    }

    /// Builds the client and proves the server usable with one command.
    async fn connect(
        url: String,
        raw_url: &str,
        options: ClientOptions,
        database: &str,
        collection: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let connect_failed = |err| Error::store(&url, "connect", DriverError::new(err, raw_url));
        let handles = Handles::new(&options, database, collection).map_err(connect_failed)?;
        let store = MongoStore {
            handles: Arc::new(Reconnecting::new(handles)),
            options,
            database: database.to_owned(),
            collection: collection.to_owned(),
            url: url.clone(),
            timeout,
        };
        // listCollections authenticates and reaches the server, and shows the collection's
        // default collation: names must compare byte for byte, so a case-insensitive
        // collection would merge `Job` and `job` into one lock.
        let spec = store
            .bounded_scrubbed(
                "connect",
                |handles| async move {
                    let mut found = handles
                        .db
                        .list_collections()
                        .filter(doc! { "name": collection })
                        .await?;
                    found.try_next().await
                },
                raw_url,
            )
            .await?;
        if let Some(collation) = spec.and_then(|spec| spec.options.collation)
            && collation.locale != "simple"
        {
            return Err(Error::store(
                &url,
                "connect",
                format!(
                    "collection {collection:?} has collation {:?}; lock names must compare byte \
                     for byte, so use a collection with the simple (default) collation",
                    collation.locale
                ),
            ));
        }
        Ok(store)
    }

    /// Runs one driver call (`call` gets the client's handles) within the operation timeout,
    /// mapping its error.
    async fn bounded<T, F>(
        &self,
        operation: &'static str,
        call: impl FnOnce(Handles) -> F,
    ) -> Result<T>
    where
        F: IntoFuture<Output = mongodb::error::Result<T>>,
    {
        self.bounded_scrubbed(operation, call, "").await
    }

    /// [`Self::bounded`], blanking the password of `raw_url` should an error message quote it.
    ///
    /// The driver closes the connection of a call that is abandoned (timed out here, or its
    /// future dropped), but its pool's other connections went through the same network and
    /// would serve the next call: so the whole client is given up, and the next call makes a
    /// new one.
    async fn bounded_scrubbed<T, F>(
        &self,
        operation: &'static str,
        call: impl FnOnce(Handles) -> F,
        raw_url: &str,
    ) -> Result<T>
    where
        F: IntoFuture<Output = mongodb::error::Result<T>>,
    {
        let fresh = || {
            let made = Handles::new(&self.options, &self.database, &self.collection);
            std::future::ready(made.map_err(|err| driver_error(&self.url, operation, err, raw_url)))
        };
        let handles = self.handles.lend(fresh).await?;
        let answer = tokio::time::timeout(self.timeout, call(handles.clone()).into_future()).await;
        let Ok(answer) = answer else {
            return Err(Error::Timeout {
                store: self.url.clone(),
                operation,
                after: self.timeout,
            });
        };
        handles.answered();
        answer.map_err(|err| driver_error(&self.url, operation, err, raw_url))
    }
}

/// MongoDB's `Unauthorized` and `AuthenticationFailed` error codes.
const UNAUTHORIZED: i32 = 13;
const AUTHENTICATION_FAILED: i32 = 18;

/// [`Error::Refused`] when the server refused our credentials (a failed authentication) or
/// our access (a user without the role for the collection), else [`Error::Store`].
fn driver_error(
    store: &str,
    operation: &'static str,
    err: mongodb::error::Error,
    raw_url: &str,
) -> Error {
    let refused = match &*err.kind {
        ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(err) => matches!(err.code, UNAUTHORIZED | AUTHENTICATION_FAILED),
        ErrorKind::Write(WriteFailure::WriteError(err)) => err.code == UNAUTHORIZED,
        _ => false,
    };
    let error = DriverError::new(err, raw_url);
    if refused {
        Error::refused(store, operation, error)
    } else {
        Error::store(store, operation, error)
    }
}

/// A driver error as one tidy line; the driver's own error stays reachable as the source.
#[derive(Debug)]
struct DriverError {
    message: String,
    inner: mongodb::error::Error,
}

impl DriverError {
    /// `raw_url` (when known) lets us blank its secrets should a message ever quote them.
    fn new(inner: mongodb::error::Error, raw_url: &str) -> Self {
        let message = match &*inner.kind {
            ErrorKind::Command(err) => format!("{} ({} {})", err.message, err.code_name, err.code),
            ErrorKind::Write(WriteFailure::WriteError(err)) => {
                format!("{} (code {})", err.message, err.code)
            }
            ErrorKind::Write(WriteFailure::WriteConcernError(err)) => {
                format!(
                    "write concern: {} ({} {})",
                    err.message, err.code_name, err.code
                )
            }
            ErrorKind::Authentication { message, .. } => {
                format!("authentication failed: {message}")
            }
            ErrorKind::ServerSelection { message, .. } => server_selection(message),
            ErrorKind::InvalidArgument { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let message = redact(&message.replace(['\n', '\r'], " "), raw_url);
        DriverError { message, inner }
    }
}

/// The driver's server-selection failure ends in a dump of its topology; the useful part is
/// each server's address and last error. Falls back to the whole message should the driver's
/// wording change.
fn server_selection(message: &str) -> String {
    let servers: Vec<String> = message
        .split("{ Address: ")
        .skip(1)
        .filter_map(|server| {
            let (address, rest) = server.split_once(',')?;
            let (_, error) = rest.split_once("Error: ")?;
            let error = error.split(", labels:").next()?;
            let error = error.strip_prefix("Kind: ").unwrap_or(error);
            Some(format!("{address}: {error}"))
        })
        .collect();
    if servers.is_empty() {
        format!("no usable server: {message}")
    } else {
        format!("no usable server in time ({})", servers.join("; "))
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner)
    }
}

/// A lease document as stored.
#[derive(Debug, Deserialize)]
struct LeaseDoc {
    #[serde(rename = "_id")]
    name: String,
    token: i64,
    #[serde(default)]
    holder: Option<HolderDoc>,
    #[serde(default)]
    created: Option<DateTime>,
    #[serde(default)]
    expires: Option<DateTime>,
    #[serde(default)]
    previous: Option<PreviousDoc>,
    /// The last run on record, read only where needed (see `run`).
    #[serde(default)]
    run: Option<Bson>,
    /// Whether the lease is live by the server's clock, where a read computed it.
    #[serde(default)]
    live: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct HolderDoc {
    id: String,
    host: String,
    pid: i64,
    label: String,
}

/// The expired lease an acquire took over.
#[derive(Debug, Deserialize)]
struct PreviousDoc {
    holder: HolderDoc,
    token: i64,
    #[serde(default)]
    created: Option<DateTime>,
    #[serde(default)]
    expires: Option<DateTime>,
}

fn lease_of(
    name: &str,
    holder: HolderDoc,
    token: i64,
    created: Option<DateTime>,
    expires: Option<DateTime>,
) -> Lease {
    Lease {
        name: name.to_owned(),
        holder: Holder {
            id: holder.id,
            host: holder.host,
            pid: u32::try_from(holder.pid).unwrap_or(0),
            label: holder.label,
        },
        token: FencingToken(u64::try_from(token).unwrap_or(0)),
        created: created.map_or(SystemTime::UNIX_EPOCH, DateTime::to_system_time),
        expires: expires.map(DateTime::to_system_time),
    }
}

impl LeaseDoc {
    /// The lease this document records, if somebody holds it (live or expired).
    fn lease(self) -> Option<Lease> {
        let holder = self.holder?;
        Some(lease_of(
            &self.name,
            holder,
            self.token,
            self.created,
            self.expires,
        ))
    }
}

/// True while the document's lease is held and unexpired by the server's clock.
fn live() -> Document {
    doc! { "$and": [
        { "$eq": [{ "$type": "$holder" }, "object"] },
        { "$or": [
            { "$eq": [{ "$type": "$expires" }, "null"] },
            { "$gt": [{ "$toLong": "$expires" }, { "$toLong": "$$NOW" }] },
        ] },
    ] }
}

/// `value` as pipeline data, never read as a field path (`$x`) or operator.
fn literal(value: impl Into<Bson>) -> Document {
    doc! { "$literal": value.into() }
}

/// A lease length in whole milliseconds, rounded up so the store never grants less than asked.
fn ttl_ms(ttl: Duration) -> Result<i64> {
    if ttl > MAX_TTL {
        return Err(Error::options(format!(
            "lease length {} is too large",
            humantime::format_duration(ttl)
        )));
    }
    let ms = ttl.as_micros().div_ceil(1000);
    i64::try_from(ms).map_err(|_| Error::options("lease length overflows"))
}

/// Our token as stored; a token beyond `i64` cannot be one this store issued.
fn stored_token(token: FencingToken) -> Option<i64> {
    i64::try_from(token.0).ok()
}

fn is_duplicate_key(err: &Error) -> bool {
    let Error::Store { source, .. } = err else {
        return false;
    };
    let Some(driver) = source.downcast_ref::<DriverError>() else {
        return false;
    };
    match &*driver.inner.kind {
        ErrorKind::Command(err) => err.code == DUPLICATE_KEY,
        ErrorKind::Write(WriteFailure::WriteError(err)) => err.code == DUPLICATE_KEY,
        _ => false,
    }
}

#[async_trait::async_trait]
impl Store for MongoStore {
    fn describe(&self) -> &str {
        &self.url
    }

    // expires is the server's $$NOW plus the TTL.
    fn expiry_on_store_clock(&self) -> bool {
        true
    }

    async fn acquire(&self, name: &str, holder: &Holder, ttl: Option<Duration>) -> Result<Acquire> {
        let expires = match ttl {
            Some(ttl) => Bson::Document(doc! { "$add": ["$$NOW", ttl_ms(ttl)?] }),
            None => Bson::Null,
        };
        let ours = doc! {
            "_id": literal(name),
            "token": { "$add": [{ "$ifNull": ["$token", 0_i64] }, 1_i64] },
            "holder": literal(doc! {
                "id": &holder.id,
                "host": &holder.host,
                "pid": i64::from(holder.pid),
                "label": &holder.label,
            }),
            "created": "$$NOW",
            "expires": expires,
            // A lease kept after its finished run ended as planned: not reported as taken over.
            "previous": { "$cond": {
                "if": { "$and": [
                    { "$eq": [{ "$type": "$holder" }, "object"] },
                    { "$not": [run::recorded()] },
                ] },
                "then": { "holder": "$holder", "token": "$token", "created": "$created", "expires": "$expires" },
                "else": Bson::Null,
            } },
            "run": run::taken_over(),
        };
        let pipeline = vec![doc! {
            "$replaceWith": { "$cond": { "if": live(), "then": "$$ROOT", "else": ours } }
        }];
        // Both retries below re-send the same idempotent command: if an earlier try did install
        // our lease, the next one finds it live with our holder id and returns it unchanged.
        let mut tries = 0;
        let mut doc = loop {
            tries += 1;
            let pipeline = pipeline.clone();
            let attempt = self
                .bounded("acquire", |h| async move {
                    h.leases
                        .find_one_and_update(doc! { "_id": name }, pipeline)
                        .upsert(true)
                        .return_document(ReturnDocument::After)
                        .await
                })
                .await;
            match attempt {
                Ok(Some(doc)) => break doc,
                // Two first-ever upserts of one name raced and the other inserted first; now
                // that the document exists, the next try reads or takes it.
                Err(err) if is_duplicate_key(&err) && tries < ACQUIRE_TRIES => continue,
                // MongoDB always returns the document of an upsert with `new: true`; SecantusDB
                // returns none when another client inserted the document between its lookup
                // and its write. The document exists now, so ask again.
                Ok(None) if tries < ACQUIRE_TRIES => continue,
                Ok(None) => {
                    return Err(Error::store(
                        &self.url,
                        "acquire",
                        "the server returned no document for an upsert",
                    ));
                }
                Err(err) => return Err(err),
            }
        };
        let previous = doc.previous.take();
        let is_ours = doc.holder.as_ref().is_some_and(|h| h.id == holder.id);
        let lease = doc.lease().ok_or_else(|| {
            Error::store(
                &self.url,
                "acquire",
                "the server returned a lease without holder",
            )
        })?;
        if !is_ours {
            return Ok(Acquire::Held(lease));
        }
        let took_over = previous.map(|p| lease_of(name, p.holder, p.token, p.created, p.expires));
        Ok(Acquire::Acquired { lease, took_over })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let ttl = ttl_ms(ttl)?;
        let Some(token) = stored_token(lease.token) else {
            return Err(Error::lost(lease, Error::NOT_OURS));
        };
        let filter = doc! {
            "_id": &lease.name,
            "holder.id": &lease.holder.id,
            "token": token,
            "$expr": live(),
        };
        // A lease that never expires stays so; any other gets `ttl` from the server's now.
        let pipeline = vec![doc! { "$set": { "expires": { "$cond": {
            "if": { "$eq": [{ "$type": "$expires" }, "null"] },
            "then": Bson::Null,
            "else": { "$add": ["$$NOW", ttl] },
        } } } }];
        let renewed = self
            .bounded("renew", |h| async move {
                h.leases
                    .find_one_and_update(filter, pipeline)
                    .return_document(ReturnDocument::After)
                    .await
            })
            .await?;
        renewed
            .and_then(LeaseDoc::lease)
            .ok_or_else(|| Error::lost(lease, Error::NOT_OURS))
    }

    async fn finish(&self, lease: &Lease, finish: &Finish) -> Result<Released> {
        let Some(token) = stored_token(lease.token) else {
            return Ok(Released::NotHeld);
        };
        let hold_ms = finish
            .hold
            .map(|hold| ttl_ms(hold.after_acquisition.min(MAX_TTL)))
            .transpose()?;
        let id = &lease.holder.id;
        let filter = run::finish_filter(&lease.name, id, token);
        let update = run::finish_update(id, token, finish.outcome, hold_ms);
        let after = self
            .bounded("release", |h| async move {
                h.leases
                    .find_one_and_update(filter, vec![update])
                    .return_document(ReturnDocument::After)
                    .await
            })
            .await?;
        run::finished(after, id, token).map_err(|e| Error::store(&self.url, "release", e))
    }

    async fn last_run(&self, name: &str) -> Result<Option<LastRun>> {
        let found = self
            .bounded("last-run", |h| async move {
                let cursor = h
                    .leases
                    .aggregate(run::reading(doc! { "_id": name }))
                    .with_type::<LeaseDoc>()
                    .await?;
                cursor.try_collect::<Vec<LeaseDoc>>().await
            })
            .await?;
        match found.into_iter().next() {
            Some(doc) => run::last_run_of(doc).map_err(|e| Error::store(&self.url, "last-run", e)),
            None => Ok(None),
        }
    }

    async fn last_runs(&self) -> Result<Vec<LastRun>> {
        // Only documents with a run on record or a lease (which may have expired unfinished).
        let with_runs = doc! { "$or": [
            { "run": { "$type": "object" } },
            { "holder": { "$type": "object" } },
        ] };
        let found = self
            .bounded("last-run", |h| async move {
                let cursor = h
                    .leases
                    .aggregate(run::reading(with_runs))
                    .with_type::<LeaseDoc>()
                    .await?;
                cursor.try_collect::<Vec<LeaseDoc>>().await
            })
            .await?;
        let mut runs = Vec::with_capacity(found.len());
        for doc in found {
            if let Some(run) =
                run::last_run_of(doc).map_err(|e| Error::store(&self.url, "last-run", e))?
            {
                runs.push(run);
            }
        }
        // Byte order, as `list`.
        runs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(runs)
    }

    async fn inspect(&self, name: &str) -> Result<Option<Lease>> {
        let found = self
            .bounded("inspect", |h| async move {
                h.leases
                    .find_one(doc! { "_id": name, "$expr": live() })
                    .await
            })
            .await?;
        Ok(found.and_then(LeaseDoc::lease))
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let mut leases: Vec<Lease> = self
            .bounded("list", |h| async move {
                let cursor = h.leases.find(doc! { "$expr": live() }).await?;
                cursor.try_collect::<Vec<LeaseDoc>>().await
            })
            .await?
            .into_iter()
            .filter_map(LeaseDoc::lease)
            .collect();
        // Byte order, whatever the server's sort would be.
        leases.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(leases)
    }

    async fn force_release(&self, name: &str) -> Result<Option<Lease>> {
        let removed = self
            .bounded("force-release", |h| async move {
                h.leases
                    .find_one_and_update(
                        doc! { "_id": name, "$expr": live() },
                        vec![doc! { "$set": {
                            "holder": Bson::Null,
                            "expires": Bson::Null,
                            "run": run::force_released(),
                        } }],
                    )
                    .return_document(ReturnDocument::Before)
                    .await
            })
            .await?;
        Ok(removed.and_then(LeaseDoc::lease))
    }

    async fn doctor(&self) -> Result<Vec<crate::doctor::Check>> {
        self.checks().await
    }

    async fn store_time(&self) -> Result<Option<SystemTime>> {
        self.clock().await.map(Some)
    }

    async fn benchmark_floor(&self, scratch_key: &str) -> Result<()> {
        self.bounded("benchmark", |h| async move {
            h.scratch.insert_one(doc! { "_id": scratch_key }).await
        })
        .await?;
        self.bounded("benchmark", |h| async move {
            h.scratch.delete_one(doc! { "_id": scratch_key }).await
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_options_are_taken_out_of_the_url() {
        let parsed =
            StoreUrl::parse("mongodb://u:p@h:1/db?w=majority&collection=my%20locks&timeoutMS=250")
                .expect("parse");
        assert_eq!(parsed.driver_url, "mongodb://u:p@h:1/db?w=majority");
        assert_eq!(parsed.collection, "my locks");
        assert_eq!(parsed.timeout, Duration::from_millis(250));
        let plain = StoreUrl::parse("mongodb://h/db").expect("parse");
        assert_eq!(plain.driver_url, "mongodb://h/db");
        assert_eq!(plain.collection, DEFAULT_COLLECTION);
        assert_eq!(plain.timeout, OPERATION_TIMEOUT);
    }

    #[test]
    fn bad_collection_names_are_refused() {
        for bad in ["", "a$b", "system.users", &"c".repeat(201)] {
            let url = format!("mongodb://u:secret@h/db?collection={bad}");
            match StoreUrl::parse(&url) {
                Err(Error::InvalidUrl { url, .. }) => assert!(!url.contains("secret"), "{url}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(StoreUrl::parse("mongodb://h/db?timeoutMS=0").is_err());
        assert!(StoreUrl::parse("mongodb://h/db?timeoutMS=3600001").is_err());
        assert!(StoreUrl::parse("mongodb://h/db?timeoutMS=18446744073709551615").is_err());
    }

    #[test]
    fn ttl_rounds_up_to_milliseconds() {
        assert_eq!(ttl_ms(Duration::from_micros(1500)).ok(), Some(2));
        assert_eq!(ttl_ms(Duration::from_secs(15)).ok(), Some(15_000));
        assert!(ttl_ms(Duration::MAX).is_err());
    }

    #[test]
    fn server_selection_names_each_server_and_its_error() {
        let driver = "Server selection timeout: No available servers. Topology: { Type: Unknown, \
            Servers: [ { Address: 127.0.0.1:1, Type: Unknown, Error: Kind: I/O error: Connection \
            refused (os error 111), labels: {}, source: None } ] }";
        assert_eq!(
            server_selection(driver),
            "no usable server in time (127.0.0.1:1: I/O error: Connection refused (os error 111))"
        );
        assert_eq!(server_selection("odd"), "no usable server: odd");
    }
}
