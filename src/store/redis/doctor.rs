//! `singleton doctor` for Redis: eviction, persistence, replication against `?min_replicas=`,
//! cluster mode and the version.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::RedisStore;
use crate::doctor::Check;
use crate::error::Result;

impl RedisStore {
    /// The checks of [`crate::Store::doctor`].
    pub(super) async fn checks(&self) -> Result<Vec<Check>> {
        let info: String = self.query("doctor", &redis::cmd("INFO")).await?;
        let info = fields(&info);
        let mut config = redis::cmd("CONFIG");
        config
            .arg("GET")
            .arg("maxmemory*")
            .arg("appendonly")
            .arg("appendfsync")
            .arg("save")
            .arg("min-replicas-to-write");
        // CONFIG may be renamed away or not allowed to this user.
        let config = self
            .query::<HashMap<String, String>>("doctor", &config)
            .await;
        let mut checks = Vec::new();
        match &config {
            Ok(config) => {
                checks.push(eviction(config));
                checks.push(persistence(config));
            }
            Err(err) => {
                checks.push(Check::unreadable("maxmemory-policy", err));
                checks.push(Check::unreadable("appendonly", err));
            }
        }
        let min_replicas_to_write = config
            .as_ref()
            .ok()
            .and_then(|config| config.get("min-replicas-to-write")?.parse().ok());
        checks.push(self.replication(&info, min_replicas_to_write));
        checks.push(cluster(&info));
        checks.push(version(&info));
        Ok(checks)
    }

    /// The server's clock now: `TIME`, seconds and microseconds.
    pub(super) async fn clock(&self) -> Result<SystemTime> {
        let (secs, micros): (u64, u64) = self.query("read the clock", &redis::cmd("TIME")).await?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    }

    /// The server's role, its replicas and what `?min_replicas=` asks of them (SPEC §12).
    fn replication(&self, info: &HashMap<&str, &str>, server_min: Option<u32>) -> Check {
        const NAME: &str = "replication";
        let role = info.get("role").copied().unwrap_or("unknown");
        let replicas: u32 = info
            .get("connected_slaves")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let asked = self.min_replicas;
        let found = format!(
            "role {role}, {replicas} connected replica{}, ?min_replicas={asked}{}",
            if replicas == 1 { "" } else { "s" },
            match server_min {
                Some(n) if n > 0 => format!(", min-replicas-to-write {n}"),
                _ => String::new(),
            }
        );
        if role != "master" {
            return Check::fail(
                NAME,
                found,
                "a replica refuses writes, so every acquire fails",
                "point the URL at the primary, or use redis+sentinel://… to find it",
            );
        }
        if asked > replicas {
            return Check::fail(
                NAME,
                found,
                "every acquire waits for more replicas than are connected, so none succeeds",
                format!("connect {asked} replicas, or lower ?min_replicas= to {replicas}"),
            );
        }
        if replicas > 0 && asked == 0 {
            return Check::warn(
                NAME,
                found,
                "replication is asynchronous: a failover can promote a replica that lacks the last acquire, so a lease is held twice and a token issued again",
                "add ?min_replicas=1 (or more) to the URL, so that acquire and renew wait for the replicas (see docs/redis.md)",
            );
        }
        Check::ok(
            NAME,
            found,
            if replicas == 0 {
                "no replica to fail over to, so none can lack an acknowledged lease"
            } else {
                "acquire and renew wait for the replicas asked for, so a promoted replica has them"
            },
        )
    }
}

/// `INFO`'s `key:value` lines.
fn fields(info: &str) -> HashMap<&str, &str> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .collect()
}

/// Whether Redis may evict lease keys (they have a TTL) or fencing counters (they have none).
fn eviction(config: &HashMap<String, String>) -> Check {
    const NAME: &str = "maxmemory-policy";
    let policy = config
        .get("maxmemory-policy")
        .map_or("unknown", String::as_str);
    let limit = config.get("maxmemory").map_or("unknown", String::as_str);
    let found = format!(
        "{policy} (maxmemory {})",
        if limit == "0" {
            "0: no limit yet"
        } else {
            limit
        }
    );
    if policy == "noeviction" {
        return Check::ok(
            NAME,
            found,
            "at the memory limit Redis refuses writes instead of dropping keys: no lease or fencing counter is evicted",
        );
    }
    let what = if policy.starts_with("allkeys-") {
        "any key, a fencing counter too (tokens then start again at 1) or a live lease (a second holder then takes it)"
    } else {
        "keys with a TTL, which every live lease is: a second holder then takes it"
    };
    Check::fail(
        NAME,
        found,
        format!("at the memory limit Redis evicts {what}"),
        "CONFIG SET maxmemory-policy noeviction (and in redis.conf), or use a Redis of its own for leases",
    )
}

/// Whether a restart finds every acknowledged write: the append-only file, and how often it
/// reaches the disk.
fn persistence(config: &HashMap<String, String>) -> Check {
    const NAME: &str = "appendonly";
    let aof = config.get("appendonly").map_or("unknown", String::as_str);
    let fsync = config.get("appendfsync").map_or("unknown", String::as_str);
    let save = config.get("save").map_or("", String::as_str);
    if aof != "yes" {
        return Check::fail(
            NAME,
            format!(
                "appendonly {aof}, save {:?}",
                if save.is_empty() { "off" } else { save }
            ),
            "without the append-only file a restart loads the last snapshot at best: the fencing counters go back, tokens are issued again, and leases taken since are forgotten",
            "CONFIG SET appendonly yes and appendfsync always (and in redis.conf)",
        );
    }
    let found = format!("appendonly yes, appendfsync {fsync}");
    match fsync {
        "always" => Check::ok(
            NAME,
            found,
            "every write is on disk before Redis answers, so a crash loses no token",
        ),
        _ => Check::warn(
            NAME,
            found,
            format!(
                "a restart of Redis loses nothing, but a crash of its host (power cut, kernel panic) loses the writes of the last {}: tokens issued again",
                if fsync == "everysec" {
                    "second"
                } else {
                    "seconds the kernel kept in memory"
                }
            ),
            "CONFIG SET appendfsync always (and in redis.conf)",
        ),
    }
}

/// Cluster mode: a name's lease and fence keys land in different slots.
fn cluster(info: &HashMap<&str, &str>) -> Check {
    if info.get("cluster_enabled") == Some(&"1") {
        Check::fail(
            "cluster",
            "cluster mode",
            "each operation is one script over a name's two keys, which Redis Cluster puts in different slots: the scripts fail",
            "use a standalone Redis (with replicas and Sentinel for failover)",
        )
    } else {
        Check::ok(
            "cluster",
            "standalone",
            "each operation's script runs atomically on one server",
        )
    }
}

/// Redis 5 or later: the scripts use its commands.
fn version(info: &HashMap<&str, &str>) -> Check {
    let version = info.get("redis_version").copied().unwrap_or("unknown");
    let major: Option<u32> = version.split('.').next().and_then(|n| n.parse().ok());
    if major.is_some_and(|major| major < 5) {
        Check::fail(
            "version",
            version,
            "the lease scripts need Redis 5 or later",
            "upgrade Redis",
        )
    } else {
        Check::ok(
            "version",
            version,
            "Redis 5 or later runs the lease scripts",
        )
    }
}
