//! Which etcd servers the store refuses: releases whose leases can outlive the lock they
//! carry, so that two holders could both believe they hold one.
//!
//! The fixes, and why each matters here (details and links in docs/etcd.md):
//! - an old leader stuck in fdatasync or on a busy CPU kept revoking leases by its own stale
//!   clock and kept acknowledging keep-alives it could no longer vouch for (etcd issue 15247,
//!   fixed by PR 16822: 3.4.31, 3.5.13, 3.6.0);
//! - a keep-alive that raced with the lease's revocation answered with success (PR 20590:
//!   3.4.38, 3.5.23, 3.6.5). A renewal or acquisition of ours that is told "kept alive" then
//!   counts on a lease whose key is already gone, while another holder takes the name.

/// The first release of each line that has every fix above. Lines after 3.6 branched after
/// them, so their first release (`X.Y.0`, not its pre-releases) is the minimum.
pub(super) const FIRST_FIXED: [Version; 3] = [
    Version::release(3, 4, 38),
    Version::release(3, 5, 23),
    Version::release(3, 6, 5),
];

/// A server version as etcd reports it (`3.4.23`, `3.6.0-rc.1`, `3.5.9+git`): the numbers,
/// and whether it is a pre-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    /// A pre-release (`-rc.1`, `-alpha.0`) comes before the release of the same numbers and
    /// may lack fixes that the release has.
    pre_release: bool,
}

impl Version {
    const fn release(major: u64, minor: u64, patch: u64) -> Self {
        Version {
            major,
            minor,
            patch,
            pre_release: false,
        }
    }

    /// Parses `MAJOR.MINOR.PATCH`, optionally with a leading `v`, a `-pre-release` and a
    /// `+build` suffix; anything else is `None`.
    pub(super) fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let text = text
            .split_once('+')
            .map_or(text, |(version, _build)| version);
        let (numbers, pre_release) = match text.split_once('-') {
            Some((numbers, pre)) if !pre.is_empty() => (numbers, true),
            Some(_) => return None,
            None => (text, false),
        };
        let mut parts = numbers.split('.').map(|part| {
            // Digits only: `u64::from_str` would also take a leading `+`.
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        });
        let version = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
            pre_release,
        };
        parts.next().is_none().then_some(version)
    }

    /// Whether this version has every lease fix listed above.
    pub(super) fn has_lease_fixes(&self) -> bool {
        let first_fixed = match FIRST_FIXED
            .iter()
            .find(|fixed| (fixed.major, fixed.minor) == (self.major, self.minor))
        {
            Some(fixed) => *fixed,
            // A line after the newest listed one.
            None if (self.major, self.minor) > (3, 6) => {
                Version::release(self.major, self.minor, 0)
            }
            // 3.3 and older: no release of theirs has the fixes.
            None => return false,
        };
        match self.patch.cmp(&first_fixed.patch) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => !self.pre_release,
            std::cmp::Ordering::Less => false,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The releases to upgrade to, for messages: `3.4.38+, 3.5.23+ or 3.6.5+`.
fn first_fixed_list() -> String {
    let [a, b, c] = FIRST_FIXED;
    format!("{a}+, {b}+ or {c}+ (or any later line)")
}

/// Why the member at `endpoint`, which reports `reported` as its version, must not be used;
/// `None` if it has every fix. One line, for [`Error::Store`](crate::Error::Store).
pub(super) fn unfit(endpoint: &str, reported: &str) -> Option<String> {
    let what = match Version::parse(reported) {
        Some(version) if version.has_lease_fixes() => return None,
        Some(_) => format!(
            "etcd {} at {endpoint} has known lease bugs",
            reported.trim()
        ),
        None => format!(
            "etcd at {endpoint} reports the version {reported:?}, which cannot be checked for known lease bugs"
        ),
    };
    Some(format!(
        "{what}: an old leader stuck on a slow disk or a busy CPU keeps acknowledging keep-alives and revoking leases (etcd issue 15247), and a keep-alive racing with the lease's expiry can report success (etcd PR 20590), so two holders could both hold a lease; upgrade every member to {}, or add ?allow_unsafe_version=true to the URL to accept the risk",
        first_fixed_list()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(text: &str) -> Option<bool> {
        Version::parse(text).map(|version| version.has_lease_fixes())
    }

    #[test]
    fn first_fixed_releases_and_later_pass() {
        for text in [
            "3.4.38",
            "3.4.44",
            "3.5.23",
            "3.5.100",
            "3.6.5",
            "3.6.12",
            "3.7.0",
            "3.10.1",
            "4.0.0",
            "v3.6.5",
            "3.6.5+git",
            " 3.5.23\n",
        ] {
            assert_eq!(fixed(text), Some(true), "{text}");
        }
    }

    #[test]
    fn releases_before_the_fixes_are_refused() {
        for text in [
            "3.4.23", "3.4.37", "3.4.0", "3.5.0", "3.5.22", "3.5.13", "3.6.0", "3.6.4", "3.3.27",
            "3.0.0", "2.3.8", "0.0.1",
        ] {
            assert_eq!(fixed(text), Some(false), "{text}");
        }
    }

    #[test]
    fn a_pre_release_comes_before_its_release() {
        for (text, ok) in [
            ("3.6.5-rc.0", false),
            ("3.6.6-rc.0", true),
            ("3.4.38-alpha", false),
            ("3.7.0-alpha.0", false),
            ("3.7.1-alpha.0", true),
            ("4.0.0-alpha.0", false),
            ("3.5.23-rc.1+git", false),
        ] {
            assert_eq!(fixed(text), Some(ok), "{text}");
        }
    }

    #[test]
    fn garbage_is_not_a_version() {
        for text in [
            "",
            "3",
            "3.4",
            "3.4.",
            "3.4.x",
            "3.4.23.1",
            "3.4.-1",
            "3.4.+1",
            "three",
            "3.4.23-",
            "v",
            "3..4",
            "99999999999999999999.0.0",
        ] {
            assert_eq!(Version::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_refusal_is_one_line_naming_everything() {
        let why = unfit("127.0.0.1:2379", "3.4.23").expect("3.4.23 is unfit");
        for part in [
            "etcd 3.4.23 at 127.0.0.1:2379",
            "15247",
            "20590",
            "3.4.38+, 3.5.23+ or 3.6.5+",
            "?allow_unsafe_version=true",
        ] {
            assert!(why.contains(part), "{part:?} missing: {why}");
        }
        assert!(!why.contains('\n'));
        let why = unfit("h:1", "nonsense\nversion").expect("garbage is unfit");
        assert!(why.contains(r#""nonsense\nversion""#), "{why}");
        assert!(!why.contains('\n'));
        assert_eq!(unfit("h:1", "3.6.5"), None);
    }
}
