//! Which file systems the SQLite store refuses: those that several hosts can share.
//!
//! Everything this store relies on is per host: SQLite's locks and the WAL's shared memory
//! (`-shm`, mapped by each host on its own), `CLOCK_MONOTONIC` and the boot id. Two hosts that
//! open one file over NFS, SMB, 9p or a FUSE file system exclude nothing: both could hold a
//! lease. So the file system that will hold the database is looked up before it is opened:
//! its `statfs(2)` magic number names network and cluster file systems, and for FUSE, which
//! also serves purely local file systems (`fuse-overlayfs` under rootless containers), the
//! mount's type in `/proc/self/mountinfo` tells the local ones apart.

use std::path::{Path, PathBuf};

/// File systems that other hosts (or a VM's host) can share, by their `statfs(2)` `f_type`.
/// Numbers from the kernel's `include/uapi/linux/magic.h` where it has them (NFS, SMB, CIFS,
/// SMB2, 9p, AFS, kAFS, Ceph, Coda, NCP, OCFS2), else from the file systems' own sources.
const SHARED: &[(u32, &str)] = &[
    (0x0000_6969, "NFS"),
    (0x0000_517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x0102_1997, "9p (v9fs)"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "kAFS"),
    (0x00C3_6400, "Ceph"),
    (0x7375_7245, "Coda"),
    (0x0000_564C, "NCP (NetWare)"),
    (0x7461_636F, "OCFS2"),
    (0x0116_1970, "GFS2"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS (IBM Storage Scale)"),
    (0x1983_0326, "BeeGFS"),
    (0x2003_0528, "OrangeFS"),
    (0xAAD7_AAEA, "PanFS"),
    (0xBEEF_DEAD, "StorNext"),
    (0x6163_6673, "ACFS"),
    (0x0131_11A8, "IBRIX"),
    (0x786F_4256, "VirtualBox shared folder (vboxsf)"),
    (0xBACB_ACBC, "VMware shared folder (vmhgfs)"),
    (0x7C7C_6673, "Parallels shared folder (prl_fs)"),
];

/// `FUSE_SUPER_MAGIC`: FUSE, fuseblk and virtiofs alike.
const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;

/// FUSE mounts (their type in `/proc/self/mountinfo`) that keep their files on this host:
/// fuse-overlayfs (rootless containers' root and volumes, where the CLI's default store lives)
/// and `fuseblk`, a FUSE file system on a local block device (ntfs-3g, exfat-fuse). Any other
/// FUSE file system may be a network one (sshfs, s3fs, glusterfs, …) or mirror one (bindfs).
const LOCAL_FUSE: &[&str] = &["fuse.fuse-overlayfs", "fuseblk"];

/// The file system kind that can be shared by other hosts holding `path`'s database, or
/// `None` for one that is local to this host. `path` need not exist yet.
pub(super) fn shared_kind(path: &Path) -> nix::Result<Option<String>> {
    let target = where_files_go(path);
    let magic = magic_of(&target)?;
    if let Some(kind) = shared_by_magic(magic) {
        return Ok(Some(kind.to_owned()));
    }
    if magic != FUSE_SUPER_MAGIC {
        return Ok(None);
    }
    let dev = nix::sys::stat::stat(&target)?.st_dev;
    let fstype = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|mountinfo| {
            let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            mount_type(&mountinfo, major, minor).map(str::to_owned)
        });
    Ok(match fstype {
        Some(fstype) if LOCAL_FUSE.contains(&fstype.as_str()) => None,
        Some(fstype) => Some(format!("FUSE ({fstype})")),
        None => Some("FUSE (of unknown type)".to_owned()),
    })
}

/// File systems in memory, by their `statfs(2)` `f_type`: gone at the next boot.
const IN_MEMORY: &[(u32, &str)] = &[(0x0102_1994, "tmpfs"), (0x8584_58F6, "ramfs")];

/// The in-memory file system (tmpfs, ramfs) that would hold `path`'s database, if it is on one.
pub(super) fn in_memory_kind(path: &Path) -> nix::Result<Option<&'static str>> {
    let magic = magic_of(&where_files_go(path))?;
    Ok(IN_MEMORY
        .iter()
        .find(|(number, _)| *number == magic)
        .map(|(_, name)| *name))
}

/// The `statfs(2)` magic number of the file system holding `target`.
fn magic_of(target: &Path) -> nix::Result<u32> {
    let magic = nix::sys::statfs::statfs(target)?.filesystem_type().0;
    // `f_type` is a long holding a 32-bit magic number (negative on 32-bit hosts for those
    // with the top bit set): its low 32 bits are the number.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(magic as u32)
}

/// The name of a file system that other hosts can share, by its magic number.
fn shared_by_magic(magic: u32) -> Option<&'static str> {
    SHARED
        .iter()
        .find(|(number, _)| *number == magic)
        .map(|(_, name)| *name)
}

/// Where SQLite will put the database and its `-wal` and `-shm` files: beside the file itself
/// (SQLite follows a symbolic link to it), or, for a file not created yet, in its directory
/// (for a dangling symbolic link, the directory of its target).
pub(super) fn where_files_go(path: &Path) -> PathBuf {
    if path.exists() {
        return path.to_path_buf();
    }
    let parent = |path: &Path| match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::read_link(path) {
        Ok(target) => parent(&parent(path).join(target)),
        Err(_) => parent(path),
    }
}

/// The type (`ext4`, `fuse.sshfs`, `virtiofs`, …) of the mount of device `major:minor` in a
/// `/proc/self/mountinfo` text; the last such mount if several (they share one superblock).
///
/// A line reads `ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS [OPTIONAL…] - TYPE SOURCE
/// SUPER-OPTIONS`; spaces inside fields are escaped as `\040`, so fields split on spaces and
/// the optional ones end at the lone `-`.
fn mount_type(mountinfo: &str, major: u64, minor: u64) -> Option<&str> {
    let device = format!("{major}:{minor}");
    mountinfo.lines().rev().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (mount.split(' ').nth(2)? == device).then_some(())?;
        fs.split(' ').next().filter(|fstype| !fstype.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_cluster_file_systems_are_shared() {
        for (magic, kind) in [
            (0x6969, "NFS"),
            (0xFF53_4D42, "CIFS"),
            (0xFE53_4D42, "SMB2"),
            (0x517B, "SMB"),
            (0x0102_1997, "9p (v9fs)"),
            (0x00C3_6400, "Ceph"),
            (0x0BD0_0BD0, "Lustre"),
            (0x4750_4653, "GPFS (IBM Storage Scale)"),
            (0x7461_636F, "OCFS2"),
            (0x0116_1970, "GFS2"),
        ] {
            assert_eq!(shared_by_magic(magic), Some(kind), "{magic:#x}");
        }
    }

    #[test]
    fn local_file_systems_and_fuse_are_not_in_the_table() {
        // ext4, XFS, btrfs, tmpfs, overlayfs, ZFS, F2FS, bcachefs; FUSE is decided by its type.
        for magic in [
            0xEF53,
            0x5846_5342,
            0x9123_683E,
            0x0102_1994,
            0x794C_7630,
            0x2FC1_2FC1,
            0xF2F5_2010,
            0xCA45_1A4E,
            FUSE_SUPER_MAGIC,
        ] {
            assert_eq!(shared_by_magic(magic), None, "{magic:#x}");
        }
        let mut numbers: Vec<u32> = SHARED.iter().map(|(number, _)| *number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            SHARED.len(),
            "a magic number is listed twice"
        );
    }

    /// From a rootless container (fuse-overlayfs root), with a bindfs and an sshfs mount, a
    /// virtiofs share and an NTFS disk; spaces escaped as the kernel writes them.
    const MOUNTINFO: &str = "\
1010 940 0:88 / / rw,nodev,relatime - fuse.fuse-overlayfs fuse-overlayfs rw,user_id=0,group_id=0,default_permissions,allow_other
1011 1010 0:90 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1012 1010 259:2 /home/me /home/me rw,relatime shared:1 master:7 - ext4 /dev/nvme0n1p2 rw
1013 1012 0:91 / /home/me/shared\\040dir rw,nosuid,nodev,relatime shared:9 - fuse.bindfs bindfs rw,user_id=0,group_id=0
1014 1012 0:92 / /home/me/remote rw,nosuid,nodev,relatime - fuse.sshfs me@host:/srv rw,user_id=1000,group_id=1000
1015 1010 0:93 / /mnt/host rw,relatime - virtiofs myfs rw
1016 1010 8:17 / /mnt/disk rw,relatime - fuseblk /dev/sdb1 rw,user_id=0,group_id=0,allow_other,blksize=4096
1017 1010 0:94 / /mnt/plain rw - fuse /dev/fuse rw,user_id=0,group_id=0
";

    #[test]
    fn mountinfo_names_the_mount_of_a_device() {
        for (major, minor, fstype) in [
            (0, 88, "fuse.fuse-overlayfs"),
            (259, 2, "ext4"),
            (0, 91, "fuse.bindfs"),
            (0, 92, "fuse.sshfs"),
            (0, 93, "virtiofs"),
            (8, 17, "fuseblk"),
            (0, 94, "fuse"),
        ] {
            assert_eq!(
                mount_type(MOUNTINFO, major, minor),
                Some(fstype),
                "{major}:{minor}"
            );
        }
        assert_eq!(mount_type(MOUNTINFO, 0, 8), None);
        assert_eq!(mount_type(MOUNTINFO, 0, 9), None, "no prefix matches");
        assert_eq!(mount_type("", 0, 88), None);
        assert_eq!(mount_type("garbage\n1 2 0:88 / /x rw\n", 0, 88), None);
    }

    #[test]
    fn only_known_local_fuse_types_pass() {
        for fstype in ["fuse.fuse-overlayfs", "fuseblk"] {
            assert!(LOCAL_FUSE.contains(&fstype), "{fstype}");
        }
        for fstype in [
            "fuse.bindfs",
            "fuse.sshfs",
            "virtiofs",
            "fuse",
            "fuse.glusterfs",
        ] {
            assert!(!LOCAL_FUSE.contains(&fstype), "{fstype}");
        }
    }

    #[test]
    fn files_go_beside_the_file_or_into_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.db");
        assert_eq!(where_files_go(&file), dir.path());
        std::fs::write(&file, b"").unwrap();
        assert_eq!(where_files_go(&file), file);
        assert_eq!(where_files_go(Path::new("locks.db")), Path::new("."));
        let elsewhere = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(elsewhere.path().join("new.db"), &link).unwrap();
        assert_eq!(where_files_go(&link), elsewhere.path());
    }

    #[test]
    fn a_local_temporary_directory_is_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(shared_kind(&dir.path().join("locks.db")).unwrap(), None);
    }
}
