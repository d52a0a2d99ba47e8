//! `redis+sentinel://` — finding the current primary through Redis Sentinel.
//!
//! The URL names the Sentinels and the name of the primary they watch (its "service"):
//! `redis+sentinel://[user:password@]s1:26379,s2:26379,s3:26379/mymaster[/db][?…]`. The user and
//! password are those of the data nodes (the primary); Sentinels that want a login of their own
//! get it from `?sentinel_user=` and `?sentinel_password=`.
//!
//! Discovery asks every Sentinel at once (`SENTINEL get-master-addr-by-name`) and takes the
//! first address named that answers as a primary (`INFO replication` says `role:master`): a
//! Sentinel that has not heard of a failover yet may still name the old primary, which is
//! either gone or has been turned into a replica since. The store discovers again whenever it
//! gives its connection up: after a request timed out, the connection failed, or the server
//! refused a write because it is a replica (`READONLY`).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

/// The port of a Sentinel that the URL names without one.
pub(super) const DEFAULT_PORT: u16 = 26379;

/// Whether `url` is a `redis+sentinel://` URL.
pub(super) fn is_sentinel(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("redis+sentinel"))
}

/// The parts of a `redis+sentinel://` URL before its `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    /// Host and port of every Sentinel, in the URL's order.
    pub sentinels: Vec<(String, u16)>,
    /// The name under which the Sentinels monitor the primary.
    pub service: String,
    /// `user:password@` as written (percent-encoded), for the data nodes; empty without.
    pub userinfo: String,
    /// The database number, if the URL gives one.
    pub db: Option<u32>,
}

impl SentinelUrl {
    /// Parses `base`, the URL without its query; the error is the reason, without the URL.
    pub fn parse(base: &str) -> Result<Self, String> {
        let rest = base
            .split_once("://")
            .map(|(_, rest)| rest)
            .ok_or("expected redis+sentinel://HOST:PORT,…/SERVICE")?;
        // A password may hold an unencoded `/`: the host list starts after the last `@`.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (&rest[..=at], &rest[at + 1..]),
            None => ("", rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut sentinels = Vec::new();
        for entry in hosts.split(',') {
            sentinels.push(parse_host(entry)?);
        }
        let mut parts = path.split('/');
        let service = parts.next().unwrap_or_default();
        if service.is_empty() {
            return Err(
                "name the primary the Sentinels monitor after the hosts, e.g. redis+sentinel://s1:26379,s2:26379/mymaster"
                    .into(),
            );
        }
        if service.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{service:?} is not a Sentinel service name"));
        }
        let db =
            match parts.next() {
                None | Some("") => None,
                Some(db) => Some(db.parse().map_err(|_| {
                    format!("the database {db:?} after the service is not a number")
                })?),
            };
        if parts.next().is_some_and(|extra| !extra.is_empty()) {
            return Err("expected …/SERVICE or …/SERVICE/DB after the hosts".into());
        }
        Ok(SentinelUrl {
            sentinels,
            service: service.to_owned(),
            userinfo: userinfo.to_owned(),
            db,
        })
    }

    /// The `redis://` URL of the data node at `host:port`, with the URL's login, database and
    /// the driver's query `query` (already encoded; empty for none).
    pub fn node_url(&self, host: &str, port: u16, query: &str) -> String {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let db = self.db.map(|db| format!("/{db}")).unwrap_or_default();
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("redis://{}{host}:{port}{db}{query}", self.userinfo)
    }
}

/// `host[:port]` or `[v6][:port]` of one Sentinel.
fn parse_host(entry: &str) -> Result<(String, u16), String> {
    let bad = || format!("{entry:?} is not a Sentinel's HOST:PORT");
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(bad)?,
    };
    Ok((host.to_owned(), port))
}

/// The Sentinels of one store and how to reach them.
pub(super) struct Sentinels {
    pub url: SentinelUrl,
    /// `?sentinel_user=` and `?sentinel_password=`.
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Where discovery found the primary: its client, a connection manager on it, and its address.
pub(super) struct Primary {
    pub client: redis::Client,
    pub conn: ConnectionManager,
    pub address: (String, u16),
}

impl Sentinels {
    /// Asks every Sentinel at once for the primary and returns the first address named that
    /// answers as a primary. `client_for` makes the data node's client for an address; each
    /// request to a Sentinel or a candidate waits at most `timeout`. The error lists what each
    /// Sentinel said.
    pub async fn primary(
        &self,
        timeout: Duration,
        config: &ConnectionManagerConfig,
        client_for: impl Fn(&str, u16) -> Result<redis::Client, String>,
    ) -> Result<Primary, String> {
        let mut asking: FuturesUnordered<_> = self
            .url
            .sentinels
            .iter()
            .map(|sentinel| async move { (sentinel, self.ask(sentinel, timeout).await) })
            .collect();
        let mut tried: Vec<(String, u16)> = Vec::new();
        let mut failures = Vec::new();
        while let Some(((host, port), answer)) = asking.next().await {
            let address = match answer {
                Ok(address) => address,
                Err(err) => {
                    failures.push(format!("Sentinel {host}:{port}: {err}"));
                    continue;
                }
            };
            if tried.contains(&address) {
                continue;
            }
            tried.push(address.clone());
            match verify(&address, timeout, config, &client_for).await {
                Ok((client, conn)) => {
                    return Ok(Primary {
                        client,
                        conn,
                        address,
                    });
                }
                Err(err) => failures.push(format!(
                    "Sentinel {host}:{port} named {}:{}, which {err}",
                    address.0, address.1
                )),
            }
        }
        Err(format!(
            "no Sentinel named a primary for {:?} that answers as one ({})",
            self.url.service,
            failures.join("; ")
        ))
    }

    /// The address one Sentinel gives for the primary.
    async fn ask(
        &self,
        (host, port): &(String, u16),
        timeout: Duration,
    ) -> Result<(String, u16), String> {
        let mut login = RedisConnectionInfo::default();
        if let Some(user) = &self.user {
            login = login.set_username(user);
        }
        if let Some(password) = &self.password {
            login = login.set_password(password);
        }
        let info = ConnectionAddr::Tcp(host.clone(), *port)
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_redis_settings(login);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let asking = async {
            let client = redis::Client::open(info)?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.url.service)
                .query_async::<Option<(String, String)>>(&mut conn)
                .await
        };
        let answer = tokio::time::timeout(timeout, asking)
            .await
            .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
            .map_err(|e| e.to_string())?;
        let (address, port) =
            answer.ok_or_else(|| format!("it does not monitor {:?}", self.url.service))?;
        let port = port
            .parse()
            .map_err(|_| format!("it gave the port {port:?}"))?;
        Ok((address, port))
    }
}

/// A client and connection manager on `address` if it answers as a primary.
async fn verify(
    (host, port): &(String, u16),
    timeout: Duration,
    config: &ConnectionManagerConfig,
    client_for: &impl Fn(&str, u16) -> Result<redis::Client, String>,
) -> Result<(redis::Client, ConnectionManager), String> {
    let client = client_for(host, *port)?;
    let checking = async {
        // One try at first: a candidate that is gone should not cost the manager's retries.
        let once = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&once)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut probe)
            .await?;
        if !info.lines().any(|line| line.trim() == "role:master") {
            return Ok(None);
        }
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok::<_, redis::RedisError>(Some(conn))
    };
    match tokio::time::timeout(timeout, checking).await {
        Err(_) => Err(format!(
            "did not answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(err)) => Err(format!("could not be reached: {err}")),
        Ok(Ok(None)) => Err("answers as a replica".into()),
        Ok(Ok(Some(conn))) => Ok((client, conn)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_hosts_service_and_database() {
        let url =
            SentinelUrl::parse("redis+sentinel://u:p/w@s1:26380,s2,[::1]:7/mymaster/2").unwrap();
        assert_eq!(
            url.sentinels,
            vec![
                ("s1".to_owned(), 26380),
                ("s2".to_owned(), DEFAULT_PORT),
                ("::1".to_owned(), 7)
            ]
        );
        assert_eq!(url.service, "mymaster");
        assert_eq!(url.userinfo, "u:p/w@");
        assert_eq!(url.db, Some(2));
        assert_eq!(
            url.node_url("10.0.0.2", 6379, "protocol=resp3"),
            "redis://u:p/w@10.0.0.2:6379/2?protocol=resp3"
        );
        assert_eq!(url.node_url("::2", 1, ""), "redis://u:p/w@[::2]:1/2");
        let plain = SentinelUrl::parse("redis+sentinel://s1/m").unwrap();
        assert_eq!(plain.userinfo, "");
        assert_eq!(plain.db, None);
        assert_eq!(plain.node_url("h", 2, ""), "redis://h:2");
    }

    #[test]
    fn malformed_sentinel_urls_say_what_is_wrong() {
        for (url, words) in [
            ("redis+sentinel://s1:26379", "name the primary"),
            ("redis+sentinel://s1:26379/", "name the primary"),
            ("redis+sentinel://s1:x/m", "HOST:PORT"),
            ("redis+sentinel://s1:0/m", "HOST:PORT"),
            ("redis+sentinel://,s1/m", "HOST:PORT"),
            ("redis+sentinel://s1/m/x", "not a number"),
            ("redis+sentinel://s1/m/1/2", "SERVICE/DB"),
        ] {
            let err = SentinelUrl::parse(url).unwrap_err();
            assert!(err.contains(words), "{url}: {err}");
        }
    }
}
