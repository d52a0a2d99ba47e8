//! `singleton doctor` for etcd: every member's version against the lease fixes, the cluster's
//! health and size, and whether it asks clients to log in.

use etcd_client::{Client, GetOptions};

use super::{EtcdStore, version};
use crate::doctor::{Check, Status};
use crate::error::Result;

impl EtcdStore {
    /// The checks of [`crate::Store::doctor`].
    pub(super) async fn checks(&self) -> Result<Vec<Check>> {
        let members = self
            .call(
                "doctor",
                |mut client| async move { client.member_list().await },
            )
            .await?;
        // Each member asked on its own, as the version and the health are per member.
        let asking = members.members().iter().map(|member| async move {
            let name = match member.name() {
                "" => format!("{:x}", member.id()),
                name => name.to_owned(),
            };
            let Some(url) = member.client_urls().first() else {
                return (
                    name,
                    String::new(),
                    Err("it has no client URL (not started yet?)".to_owned()),
                );
            };
            let asked = async {
                let mut client =
                    Client::connect([url.as_str()], Some(self.connect_options.clone())).await?;
                client.status().await
            };
            let answer = match tokio::time::timeout(self.connect_timeout, asked).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(err)) => Err(super::flattened(&err)),
                Err(_) => Err(format!(
                    "no answer within {}",
                    humantime::format_duration(self.connect_timeout)
                )),
            };
            (name, super::url::host_of(url).to_owned(), answer)
        });
        let answers = futures_util::future::join_all(asking).await;
        let mut checks = vec![self.versions(&answers), health(&answers)];
        checks.push(members_count(members.members().len()));
        checks.push(self.auth().await);
        Ok(checks)
    }

    /// Every member's version against the first releases with the lease fixes.
    fn versions(&self, answers: &[Member]) -> Check {
        const NAME: &str = "version";
        let mut found = Vec::new();
        let mut unfit = None;
        for (name, endpoint, answer) in answers {
            match answer {
                Ok(status) => {
                    found.push(format!("{} on {name}", status.version()));
                    if unfit.is_none() {
                        unfit = version::unfit(endpoint, status.version());
                    }
                }
                Err(_) => found.push(format!("unknown on {name} (no answer)")),
            }
        }
        let found = found.join(", ");
        match unfit {
            None => Check::ok(
                NAME,
                found,
                "every member that answered has the fixes for etcd's known lease bugs (etcd issue 15247, PR 20590)",
            ),
            Some(why) if self.allow_unsafe_version => Check::warn(
                NAME,
                format!("{found}; the URL accepts it (?allow_unsafe_version=true)"),
                why,
                "upgrade every member, then drop ?allow_unsafe_version=true",
            ),
            Some(why) => Check::fail(
                NAME,
                format!("{found}; singleton run refuses it"),
                why,
                "upgrade every member",
            ),
        }
    }

    /// Whether the cluster asks clients to log in: a client without a password tries a read.
    async fn auth(&self) -> Check {
        const NAME: &str = "auth";
        let logged_in = self.logs_in;
        let asked = async {
            let mut client =
                Client::connect(&self.endpoints, Some(self.anonymous_options.clone())).await?;
            client
                .get(
                    self.prefix.as_bytes(),
                    Some(GetOptions::new().with_count_only()),
                )
                .await
        };
        let answer = tokio::time::timeout(self.connect_timeout, asked).await;
        let why = "anyone who reaches a member's client port without logging in can delete a lease key, so that a second holder takes it, or reset a fencing counter";
        match answer {
            Ok(Ok(_)) => Check::warn(
                NAME,
                "disabled: a client without a password may read and write",
                why,
                "etcdctl user add / role add / auth enable, give the jobs' user a role for the key prefix, and use etcd://user:password@…",
            ),
            // etcd answers a request without a login with "user name is empty".
            Ok(Err(err))
                if super::is_refusal(&err)
                    || super::flattened(&err).contains("user name is empty") =>
            {
                Check::ok(
                    NAME,
                    if logged_in {
                        "enabled: clients must log in, and this URL does"
                    } else {
                        "enabled: clients must log in"
                    },
                    "only users with a role for the key prefix can change leases",
                )
            }
            Ok(Err(err)) => Check::unreadable(NAME, super::flattened(&err)),
            Err(_) => Check::unreadable(NAME, "no answer in time"),
        }
    }
}

/// A member's name, its client endpoint and its status, or why it gave none.
type Member = (String, String, Result<etcd_client::StatusResponse, String>);

/// Whether every member answered, agrees on a leader and reports no alarms.
fn health(answers: &[Member]) -> Check {
    const NAME: &str = "health";
    let mut silent = Vec::new();
    let mut troubled = Vec::new();
    let mut leaders = std::collections::BTreeSet::new();
    for (name, _, answer) in answers {
        match answer {
            Ok(status) => {
                leaders.insert(status.leader());
                if !status.errors().is_empty() {
                    troubled.push(format!("{name}: {}", status.errors().join("; ")));
                }
            }
            Err(why) => silent.push(format!("{name}: {why}")),
        }
    }
    let answered = answers.len() - silent.len();
    let leader = leaders.len() == 1 && !leaders.contains(&0);
    let found = format!(
        "{answered} of {} members answered{}{}{}",
        answers.len(),
        if leader {
            ", with one leader"
        } else {
            ", without one agreed leader"
        },
        if silent.is_empty() {
            String::new()
        } else {
            format!("; silent: {}", silent.join(", "))
        },
        if troubled.is_empty() {
            String::new()
        } else {
            format!("; errors: {}", troubled.join(", "))
        }
    );
    let why = "acquire and renew need a leader and a majority of members; a member that does not answer makes one fewer that may fail";
    let status = if !leader || answered * 2 <= answers.len() {
        Status::Fail
    } else if !silent.is_empty() || !troubled.is_empty() {
        Status::Warn
    } else {
        Status::Ok
    };
    let fix = (status != Status::Ok).then(|| {
        "bring the silent members back (etcdctl endpoint health --cluster), or replace them (etcdctl member remove / add)".to_owned()
    });
    Check::new(status, NAME, found, why, fix)
}

/// How many failures the cluster's size tolerates.
fn members_count(members: usize) -> Check {
    const NAME: &str = "members";
    let tolerated = members.saturating_sub(1) / 2;
    let found = format!(
        "{members} member{}, tolerating {tolerated} failure{}",
        if members == 1 { "" } else { "s" },
        if tolerated == 1 { "" } else { "s" }
    );
    if members > 1 && members % 2 == 0 {
        Check::warn(
            NAME,
            found,
            "an even number of members tolerates no more failures than one fewer, and a partition can leave no majority on either side",
            "run an odd number of members (3 or 5)",
        )
    } else {
        Check::ok(
            NAME,
            found,
            "every lease operation needs a majority; a lost majority stops leases (holders stop their jobs) but never gives one to two holders",
        )
    }
}
