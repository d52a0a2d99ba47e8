//! `singleton doctor` for MongoDB: standalone or replica set, the write concern the store
//! uses, journaling and the version.

use std::time::SystemTime;

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::Acknowledgment;

use super::MongoStore;
use crate::doctor::Check;
use crate::error::{Error, Result};

impl MongoStore {
    /// The checks of [`crate::Store::doctor`].
    pub(super) async fn checks(&self) -> Result<Vec<Check>> {
        let hello = self.command("doctor", doc! { "hello": 1 }).await?;
        let replica_set = hello.get_str("setName").ok().map(str::to_owned);
        let mut checks = vec![topology(&hello), self.write_concern(replica_set.is_some())];
        checks.push(
            match self.command("doctor", doc! { "serverStatus": 1 }).await {
                Ok(status) => journaling(&status),
                Err(err) => Check::unreadable("journaling", err),
            },
        );
        checks.push(
            match self.command("doctor", doc! { "buildInfo": 1 }).await {
                Ok(info) => version(&info),
                Err(err) => Check::unreadable("version", err),
            },
        );
        Ok(checks)
    }

    /// The server's clock now: `hello`'s `localTime`, in milliseconds.
    pub(super) async fn clock(&self) -> Result<SystemTime> {
        let hello = self.command("read the clock", doc! { "hello": 1 }).await?;
        match hello.get_datetime("localTime") {
            Ok(time) => Ok(time.to_system_time()),
            Err(_) => Err(Error::store(
                &self.url,
                "read the clock",
                "hello has no localTime",
            )),
        }
    }

    async fn command(&self, operation: &'static str, command: Document) -> Result<Document> {
        self.bounded(operation, |handles| async move {
            handles.db.run_command(command).await
        })
        .await
    }

    /// The write concern acquire and renew use: the URL's, else a majority and the journal.
    fn write_concern(&self, replica_set: bool) -> Check {
        const NAME: &str = "write-concern";
        let concern = self.options.write_concern.clone().unwrap_or_default();
        let w = match &concern.w {
            Some(Acknowledgment::Majority) => "majority".to_owned(),
            Some(Acknowledgment::Nodes(n)) => n.to_string(),
            Some(Acknowledgment::Custom(tag)) => format!("{tag:?}"),
            Some(other) => format!("{other:?}"),
            None => "the server's default".to_owned(),
        };
        let journal = concern.journal.unwrap_or(false);
        let found = format!("w: {w}, j: {journal}");
        if concern.w == Some(Acknowledgment::Nodes(0)) {
            return Check::fail(
                NAME,
                found,
                "w: 0 acknowledges nothing: the store cannot know whether an acquire happened",
                "drop w= from the URL (the store then waits for a majority and the journal)",
            );
        }
        if !journal {
            return Check::fail(
                NAME,
                found,
                "a write acknowledged before it reached the journal is lost in a crash of the server: a token issued again, a lease forgotten while its holder runs",
                "drop journal= from the URL, or set journal=true",
            );
        }
        let majority = matches!(concern.w, Some(Acknowledgment::Majority));
        if replica_set && !majority {
            return Check::warn(
                NAME,
                found,
                "a write that only some members have is rolled back when another member is elected: the lease is then held twice and its token issued again",
                "drop w= from the URL (the store then uses w: majority)",
            );
        }
        Check::ok(
            NAME,
            found,
            "every acquire is journaled (and, in a replica set, on a majority) before it counts",
        )
    }
}

/// Standalone, a replica set (this member primary or not) or a mongos.
fn topology(hello: &Document) -> Check {
    const NAME: &str = "topology";
    let primary = hello.get_bool("isWritablePrimary").unwrap_or(false);
    let found = match hello.get_str("setName") {
        Ok(set) => {
            let members = hello.get_array("hosts").map_or(0, Vec::len);
            format!(
                "replica set {set:?}, {members} member{} ({})",
                if members == 1 { "" } else { "s" },
                if primary {
                    "talking to the primary"
                } else {
                    "talking to a secondary"
                }
            )
        }
        Err(_) if hello.get_str("msg") == Ok("isdbgrid") => "a mongos router".to_owned(),
        Err(_) => "standalone".to_owned(),
    };
    if !primary {
        return Check::fail(
            NAME,
            found,
            "this server does not take writes, so every acquire fails",
            "connect to the replica set (mongodb://h1,h2,h3/db?replicaSet=…) so the driver finds the primary",
        );
    }
    Check::ok(
        NAME,
        found,
        "a standalone cannot fail over; a replica set fails over safely with the write concern below",
    )
}

/// Whether the storage engine keeps data on disk and journals it.
fn journaling(status: &Document) -> Check {
    const NAME: &str = "journaling";
    let Ok(engine) = status.get_document("storageEngine") else {
        return Check::unreadable(NAME, "serverStatus has no storageEngine");
    };
    let name = engine.get_str("name").unwrap_or("unknown");
    let persistent = match engine.get("persistent") {
        Some(Bson::Boolean(persistent)) => Some(*persistent),
        _ => None,
    };
    let found = format!(
        "storage engine {name}{}",
        match persistent {
            Some(true) => ", persistent",
            Some(false) => ", in memory",
            None => "",
        }
    );
    if persistent == Some(false) {
        Check::fail(
            NAME,
            found,
            "data kept in memory is gone when the server restarts: every fencing counter starts again at 1",
            "run the server with a persistent storage engine (WiredTiger, the default)",
        )
    } else {
        Check::ok(
            NAME,
            found,
            "writes acknowledged with j: true survive a crash of the server",
        )
    }
}

/// MongoDB 4.2 or later: the lease pipelines need it.
fn version(info: &Document) -> Check {
    const NAME: &str = "version";
    let version = info.get_str("version").unwrap_or("unknown");
    let mut numbers = version.split('.').map(|n| n.parse::<u32>().ok());
    let (major, minor) = (numbers.next().flatten(), numbers.next().flatten());
    if major.zip(minor).is_some_and(|found| found < (4, 2)) {
        Check::fail(
            NAME,
            version,
            "the lease updates are pipelines with $toLong, which need MongoDB 4.2 or later",
            "upgrade MongoDB",
        )
    } else {
        Check::ok(
            NAME,
            version,
            "MongoDB 4.2 or later runs the lease pipelines",
        )
    }
}
