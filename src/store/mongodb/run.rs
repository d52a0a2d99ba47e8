//! The name's last run on record: the `run` field of its document, the pipeline pieces that
//! write it (finish, and the acquire and force-release that replace an unfinished lease), and
//! reading it back.
//!
//! ```text
//! run: { holder: { id, host, pid, label }, token, started: ISODate, ended: ISODate | null,
//!        outcome: "exit 3" | "signal 9" | "lost" | "unknown" | "released",
//!        lease: "released" | "kept" | "taken over" | "force-released" }
//! ```
//!
//! `run.lease` says what became of the run's lease. A finish reads it back in its reply: after
//! its own release the document is free with our token and `"released"`, while a late finish
//! of a force-released lease leaves it free with our token too, but `"force-released"`. Only a
//! run recorded unfinished (`"taken over"`, `"force-released"`) takes a late finish's outcome.

use mongodb::bson::{Bson, DateTime, Document, doc};
use serde::Deserialize;

use super::{HolderDoc, LeaseDoc, lease_of, literal, live};
use crate::store::{LastRun, Outcome, Released};

/// `run.lease` of a run whose finish gave its lease back.
const RELEASED: &str = "released";
/// `run.lease` of a run whose finish kept its lease for a hold.
const KEPT: &str = "kept";
/// `run.lease` of an unfinished run whose expired lease an acquire replaced.
const TAKEN_OVER: &str = "taken over";
/// `run.lease` of an unfinished run whose lease was force-released.
const FORCE_RELEASED: &str = "force-released";

/// The run as stored.
#[derive(Debug, Deserialize)]
struct RunDoc {
    holder: HolderDoc,
    token: i64,
    #[serde(default)]
    started: Option<DateTime>,
    #[serde(default)]
    ended: Option<DateTime>,
    outcome: String,
    #[serde(default)]
    lease: Option<String>,
}

impl RunDoc {
    /// Whether this is the run of the lease of holder `id` with `token`.
    fn is_of(&self, id: &str, token: i64) -> bool {
        self.token == token && self.holder.id == id
    }
}

/// The document's run field, if it has one (documents of the previous version have none).
fn run_of(doc: &mut LeaseDoc) -> Result<Option<RunDoc>, String> {
    match doc.run.take() {
        None | Some(Bson::Null) => Ok(None),
        Some(run) => mongodb::bson::from_bson(run).map(Some).map_err(|err| {
            format!(
                "the last run of {:?} on record is malformed: {err}",
                doc.name
            )
        }),
    }
}

/// True while the run on record is the document's lease's own: that lease was finished, and is
/// kept after its run (or expired since).
pub(super) fn recorded() -> Document {
    doc! { "$and": [
        { "$eq": ["$run.token", "$token"] },
        { "$eq": ["$run.holder.id", "$holder.id"] },
    ] }
}

/// The run field once the document's lease is replaced unfinished: that lease's run as
/// [`Outcome::Unknown`], ended at `ended`, unless it was finished already.
fn unfinished(ended: &str, lease: &str) -> Document {
    doc! { "$cond": {
        "if": recorded(),
        "then": "$run",
        "else": {
            "holder": "$holder",
            "token": "$token",
            "started": "$created",
            "ended": ended,
            "outcome": literal(Outcome::Unknown.to_string()),
            "lease": literal(lease),
        },
    } }
}

/// The run field for acquire's update, which replaces a free or expired lease: an expired
/// lease's unfinished run goes on record, ended at its expiry.
pub(super) fn taken_over() -> Document {
    doc! { "$cond": {
        "if": { "$eq": [{ "$type": "$holder" }, "object"] },
        "then": unfinished("$expires", TAKEN_OVER),
        "else": "$run",
    } }
}

/// The run field for force-release's update, which removes a live lease: its run goes on
/// record as unfinished, ended now, unless it was finished and only kept.
pub(super) fn force_released() -> Document {
    unfinished("$$NOW", FORCE_RELEASED)
}

/// The filter of a finish of holder `id`'s lease with `token`: the lease is ours, or the run on
/// record is ours and was recorded unfinished (a finished run stays as its finish left it, so a
/// second finish matches nothing).
pub(super) fn finish_filter(name: &str, id: &str, token: i64) -> Document {
    doc! {
        "_id": name,
        "$or": [
            { "holder.id": id, "token": token },
            {
                "run.holder.id": id,
                "run.token": token,
                "run.lease": { "$in": [TAKEN_OVER, FORCE_RELEASED] },
            },
        ],
    }
}

/// The update of a finish that matched [`finish_filter`], in one `$replaceWith`.
///
/// While the lease is ours (live, or expired but not taken over), its run goes on record, ended
/// at `$$NOW` with `outcome`. With `hold_ms` (milliseconds after the acquisition) and a live
/// lease whose acquisition plus `hold_ms` is still ahead of `$$NOW`, the lease stays with that
/// expiry; otherwise it is given back. When only the run on record is ours, its outcome and end
/// are set and nothing else changes.
pub(super) fn finish_update(
    id: &str,
    token: i64,
    outcome: Outcome,
    hold_ms: Option<i64>,
) -> Document {
    let outcome = literal(outcome.to_string());
    let ours = doc! { "$and": [
        { "$eq": ["$holder.id", literal(id)] },
        { "$eq": ["$token", token] },
    ] };
    let (holder, expires, lease) = match hold_ms {
        None => (Bson::Null, Bson::Null, Bson::from(literal(RELEASED))),
        Some(ms) => (
            doc! { "$cond": ["$$keep", "$holder", Bson::Null] }.into(),
            doc! { "$cond": ["$$keep", { "$add": ["$created", ms] }, Bson::Null] }.into(),
            doc! { "$cond": ["$$keep", literal(KEPT), literal(RELEASED)] }.into(),
        ),
    };
    let mut finished = doc! { "$mergeObjects": ["$$ROOT", {
        "holder": holder,
        "expires": expires,
        "run": {
            "holder": "$holder",
            "token": "$token",
            "started": "$created",
            "ended": "$$NOW",
            "outcome": outcome.clone(),
            "lease": lease,
        },
    }] };
    if let Some(ms) = hold_ms {
        let keep = doc! { "$and": [
            live(),
            { "$eq": [{ "$type": "$created" }, "date"] },
            { "$gt": [{ "$add": [{ "$toLong": "$created" }, ms] }, { "$toLong": "$$NOW" }] },
        ] };
        finished = doc! { "$let": { "vars": { "keep": keep }, "in": finished } };
    }
    let late = doc! { "$mergeObjects": ["$$ROOT", {
        "run": { "$mergeObjects": ["$run", { "ended": "$$NOW", "outcome": outcome }] },
    }] };
    doc! { "$replaceWith": { "$cond": { "if": ours, "then": finished, "else": late } } }
}

/// What a finish did, from the document after its update (`None`: nothing matched).
pub(super) fn finished(doc: Option<LeaseDoc>, id: &str, token: i64) -> Result<Released, String> {
    let Some(mut doc) = doc else {
        return Ok(Released::NotHeld);
    };
    if doc.token == token && doc.holder.as_ref().is_some_and(|h| h.id == id) {
        return Ok(Released::Kept {
            expires: doc.expires.map(DateTime::to_system_time),
        });
    }
    let run = run_of(&mut doc)?;
    let released = doc.token == token
        && doc.holder.is_none()
        && run.is_some_and(|run| run.is_of(id, token) && run.lease.as_deref() == Some(RELEASED));
    Ok(if released {
        Released::Released
    } else {
        Released::NotHeld
    })
}

/// The aggregation that reads the documents `filter` matches with their `live` flag, by the
/// server's clock, for [`last_run_of`].
pub(super) fn reading(filter: Document) -> Vec<Document> {
    vec![
        doc! { "$match": filter },
        doc! { "$addFields": { "live": live() } },
    ]
}

/// The last run on record of a document read by [`reading`]: an expired lease whose run is not
/// on record reads as an unknown run, ended at its expiry.
pub(super) fn last_run_of(mut doc: LeaseDoc) -> Result<Option<LastRun>, String> {
    let run = run_of(&mut doc)?;
    let unfinished = doc.live == Some(false)
        && doc.holder.as_ref().is_some_and(|holder| {
            !run.as_ref()
                .is_some_and(|run| run.is_of(&holder.id, doc.token))
        });
    if unfinished {
        return Ok(doc
            .lease()
            .map(|lease| LastRun::of(&lease, lease.expires, Outcome::Unknown)));
    }
    let Some(run) = run else {
        return Ok(None);
    };
    let outcome = run
        .outcome
        .parse::<Outcome>()
        .map_err(|err| format!("the last run of {:?} on record has an {err}", doc.name))?;
    let lease = lease_of(&doc.name, run.holder, run.token, run.started, None);
    Ok(Some(LastRun::of(
        &lease,
        run.ended.map(DateTime::to_system_time),
        outcome,
    )))
}
