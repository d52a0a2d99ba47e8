//! The servers a `postgres://` URL names, and connecting to the right one.
//!
//! A URL may name several hosts (`postgres://U@h1:5432,h2:5433/db`), as libpq's do: a primary
//! and the standbys that may be promoted in its place. libpq and `tokio-postgres` try them one
//! after the other, each within the connect timeout, which after a failover does not work here:
//! the old primary's machine, gone without a reset, holds every connection up for the whole
//! connect timeout before the next host is tried, and the lease's request timeout (a ninth of
//! the lease, at most 5 s) abandons the attempt first, every time. So the store tries every
//! host at once and keeps the first session that meets `target_session_attrs`; with several
//! hosts that defaults to `read-write`, as every lease operation writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::task::{JoinHandle, JoinSet};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A connection to one server, to be driven by a task of its own.
pub(super) type Connection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// The driver's configuration for each server, and the TLS connector they share.
#[derive(Clone)]
pub(super) struct Servers {
    configs: Arc<[Config]>,
    connector: MakeRustlsConnect,
}

impl Servers {
    /// The servers of `configs`, one per host of the URL (see [`per_host`]), reached through
    /// `connector`. Without an explicit `target_session_attrs`, several hosts mean
    /// `read-write`.
    pub fn new(
        configs: Vec<Config>,
        explicit_session_attrs: bool,
        connector: MakeRustlsConnect,
    ) -> Self {
        let several = configs.len() > 1 || configs.iter().any(|c| c.get_hosts().len() > 1);
        let configs = configs
            .into_iter()
            .map(|mut config| {
                if several && !explicit_session_attrs {
                    config.target_session_attrs(TargetSessionAttrs::ReadWrite);
                }
                config
            })
            .collect();
        Servers { configs, connector }
    }

    /// The first configuration, for the pool's records (connections are made by [`Servers`]).
    pub fn first(&self) -> Config {
        self.configs[0].clone()
    }

    /// A session with the first server, of all the URL names, that accepts one meeting
    /// `target_session_attrs`; every host is tried at once. When none does, the most telling
    /// error: the server's own (a refused password, say) before one of the network.
    pub async fn connect_first(&self) -> Result<(Client, Connection), tokio_postgres::Error> {
        if let [only] = &self.configs[..] {
            return only.connect(self.connector.clone()).await;
        }
        let mut trying = JoinSet::new();
        for config in self.configs.iter() {
            let (config, connector) = (config.clone(), self.connector.clone());
            trying.spawn(async move { config.connect(connector).await });
        }
        let mut failed: Option<tokio_postgres::Error> = None;
        // Returning drops the set, which aborts the attempts still under way.
        while let Some(attempt) = trying.join_next().await {
            match attempt {
                Ok(Ok(connected)) => return Ok(connected),
                Ok(Err(err)) => {
                    let telling =
                        err.code().is_some() && failed.as_ref().is_none_or(|f| f.code().is_none());
                    if failed.is_none() || telling {
                        failed = Some(err);
                    }
                }
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
        Err(failed.expect("at least two hosts were tried"))
    }
}

/// Connections for the pool, made by [`Servers::connect_first`].
impl deadpool_postgres::Connect for Servers {
    fn connect(
        &self,
        _: &Config,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>>
                + Send
                + '_,
        >,
    > {
        Box::pin(async move {
            let (client, connection) = self.connect_first().await?;
            let driving = tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!("a PostgreSQL connection ended: {err}");
                }
            });
            Ok((client, driving))
        })
    }
}

/// The driver URL once per host it names: `postgres://U@h1:1,h2:2/db?q` gives
/// `postgres://U@h1:1/db?q` and `postgres://U@h2:2/db?q`. Read as `tokio-postgres` reads it:
/// the credentials end at the first `@`, the hosts at the next `/` or `?`. A URL with one host
/// (or none) is itself.
pub(super) fn per_host(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_owned()];
    };
    let (credentials, after) = rest
        .find('@')
        .map_or(("", rest), |at| rest.split_at(at + 1));
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (hosts, tail) = after.split_at(end);
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.len() < 2 {
        return vec![url.to_owned()];
    }
    hosts
        .iter()
        .map(|host| format!("{scheme}://{credentials}{host}{tail}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::per_host;

    #[test]
    fn each_host_gets_a_url_of_its_own_with_the_rest_kept() {
        assert_eq!(
            per_host("postgres://u:p@h1:5432,[::1]:5433,h3/db?target_session_attrs=read-write"),
            [
                "postgres://u:p@h1:5432/db?target_session_attrs=read-write",
                "postgres://u:p@[::1]:5433/db?target_session_attrs=read-write",
                "postgres://u:p@h3/db?target_session_attrs=read-write",
            ]
        );
        assert_eq!(
            per_host("postgresql://h1,h2"),
            ["postgresql://h1", "postgresql://h2"]
        );
        assert_eq!(
            per_host("postgres://u@h1/db?x=1"),
            ["postgres://u@h1/db?x=1"]
        );
        assert_eq!(per_host("postgres:///db"), ["postgres:///db"]);
    }
}
