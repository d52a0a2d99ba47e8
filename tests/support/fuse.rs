//! A FUSE file system for the tests: bindfs, which may mirror a network directory, so the
//! SQLite store must treat it as one that other hosts can share.

/// A bindfs (FUSE) mount of a temporary directory over another, unmounted on drop, also when
/// the test fails.
pub struct FuseMount {
    /// Where the mount is.
    pub point: tempfile::TempDir,
    /// What it mirrors.
    pub source: tempfile::TempDir,
}

impl FuseMount {
    pub fn new() -> Self {
        let bindfs =
            crate::support::servers::require_binary("bindfs", &[], "apt-get install bindfs");
        let source = tempfile::tempdir().expect("temp dir");
        let point = tempfile::tempdir().expect("temp dir");
        let mounted = std::process::Command::new(bindfs)
            .arg(source.path())
            .arg(point.path())
            .output()
            .expect("run bindfs");
        assert!(
            mounted.status.success(),
            "bindfs failed (it needs /dev/fuse and root or the fuse group): {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        FuseMount { point, source }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        for unmount in [
            &["umount"][..],
            &["fusermount3", "-u"],
            &["fusermount", "-u"],
        ] {
            let done = std::process::Command::new(unmount[0])
                .args(&unmount[1..])
                .arg(self.point.path())
                .output();
            if done.is_ok_and(|done| done.status.success()) {
                return;
            }
        }
        eprintln!("could not unmount {}", self.point.path().display());
    }
}
