//! `singleton doctor` for SQLite: the file system under the database, and who else can reach
//! its directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{SqliteStore, filesystem};
use crate::doctor::Check;
use crate::error::{Error, Result};

impl SqliteStore {
    /// The checks of [`crate::Store::doctor`]; file system calls on the blocking pool, as a
    /// dead NFS server blocks them.
    pub(super) async fn checks(&self) -> Result<Vec<Check>> {
        let path = self.path.clone();
        let allowed = self.allow_network_fs;
        let mut checks = tokio::task::spawn_blocking(move || {
            vec![
                file_system(&path, allowed),
                directory(&path),
                default_file_as_root(&path),
            ]
        })
        .await
        .map_err(|e| Error::store(&self.url, "doctor", e))?;
        let mode = self
            .with_conn("doctor", |conn, _| {
                Ok(conn.query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))?)
            })
            .await;
        checks.push(match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => Check::ok(
                "journal_mode",
                "wal, with synchronous=FULL on every connection of singleton",
                "every commit is on disk before it returns, so a power cut reissues no token",
            ),
            Ok(mode) => Check::fail(
                "journal_mode",
                mode,
                "singleton sets WAL when it opens the file; another mode means something else changed it, and a connection of singleton would fail",
                "PRAGMA journal_mode = WAL on the file, and find what changes it",
            ),
            Err(err) => Check::unreadable("journal_mode", err),
        });
        Ok(checks)
    }
}

/// The file system under the database: shared by other hosts (refused unless the URL accepts
/// it), in memory (gone at reboot), or local.
fn file_system(path: &Path, allowed: bool) -> Check {
    const NAME: &str = "file-system";
    let shared = match filesystem::shared_kind(path) {
        Ok(shared) => shared,
        Err(err) => return Check::unreadable(NAME, err),
    };
    let dir = filesystem::where_files_go(path);
    let why = "SQLite's locks, the write-ahead log's shared memory and the clock leases are judged by reach this host only: two hosts opening one file could both hold a lease";
    if let Some(kind) = shared {
        let found = format!(
            "{} is on {kind}, which other hosts can share",
            dir.display()
        );
        let move_it = "use a network store (postgres://, mysql://, redis://, etcd://, mongodb://) or a file on a local disk";
        return if allowed {
            Check::warn(
                NAME,
                format!("{found}; the URL accepts it (?allow_network_fs=true)"),
                format!("{why}; this is safe only while no other host ever opens the file"),
                move_it,
            )
        } else {
            Check::fail(
                NAME,
                format!("{found}; singleton run refuses it"),
                why,
                format!(
                    "{move_it}, or add ?allow_network_fs=true if no other host ever opens this file"
                ),
            )
        };
    }
    match filesystem::in_memory_kind(path) {
        Ok(Some(kind)) => Check::warn(
            NAME,
            format!("{} is on {kind}, in memory", dir.display()),
            "the file is gone after a reboot, and with it the fencing counters: tokens start again at 1, so anything that compares tokens across a reboot would take old ones for new",
            "keep the file on a disk (e.g. under /var/lib), unless no token outlives a boot",
        ),
        Ok(None) => Check::ok(
            NAME,
            format!("{} is on a local file system", dir.display()),
            "SQLite's locks and this host's clock reach every process that can open it",
        ),
        Err(err) => Check::unreadable(NAME, err),
    }
}

/// Who owns the database's directory and who may write to it: whoever can write there can
/// delete the database (and every fencing counter with it) or put another in its place.
fn directory(path: &Path) -> Check {
    const NAME: &str = "directory";
    let dir = directory_of(path);
    let meta = match std::fs::metadata(&dir) {
        Ok(meta) => meta,
        Err(err) => return Check::unreadable(NAME, format!("{}: {err}", dir.display())),
    };
    let mode = meta.permissions().mode() & 0o7777;
    let found = format!(
        "{} is owned by uid {} gid {}, mode {mode:04o}",
        dir.display(),
        meta.uid(),
        meta.gid()
    );
    let sticky = mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky {
        Check::warn(
            NAME,
            found,
            "every user may delete or replace the database here, which frees every lease and restarts the fencing counters",
            format!(
                "keep the database in a directory that only the jobs' users may write to (chmod o-w {})",
                dir.display()
            ),
        )
    } else {
        Check::ok(
            NAME,
            found,
            "only its owner and group (or, with the sticky bit, a file's owner) can delete or replace the database",
        )
    }
}

/// The directory that holds the database's files.
fn directory_of(path: &Path) -> PathBuf {
    let files = filesystem::where_files_go(path);
    if files.is_dir() {
        files
    } else {
        files
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}

/// Root's jobs with a file in a home directory (the CLI's per-user default is under
/// `~/.local/state`): the same job run by another user's cron uses that user's own file.
fn default_file_as_root(path: &Path) -> Check {
    const NAME: &str = "shared-by";
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let in_home = home
        .as_deref()
        .is_some_and(|home| home != Path::new("/") && absolute.starts_with(home))
        || absolute.starts_with("/home")
        || absolute.starts_with("/root");
    // /proc/self belongs to the effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0);
    if root && in_home {
        Check::warn(
            NAME,
            format!(
                "{} is in a home directory, and doctor runs as root",
                absolute.display()
            ),
            "a lease excludes only the jobs that use the same file: the CLI's default file is per user, so the same job in another user's crontab (or with another HOME) takes its own lease",
            "give every user's jobs one file, e.g. --store sqlite:///var/lib/singleton/locks.db (or SINGLETON_STORE), in a directory of a group they share",
        )
    } else {
        Check::ok(
            NAME,
            format!("{}", absolute.display()),
            "a lease excludes the jobs that use this same file, whichever user runs them",
        )
    }
}
