//! The lease label: what `status`, `list` and conflict messages show about a holder, on every
//! host that reads the store (and in the mails cron sends from there). By default it is the
//! command line, so the secrets people put on command lines are masked in it.

use std::ffi::OsString;

use singleton_process::store::{is_secret_key, mask_password};

/// Longest label in characters; a longer one is cut and ends in `...`.
const MAX_CHARS: usize = 200;

/// What replaces each secret.
const MASK: &str = "***";

/// The label of a run: `explicit` (`--label TEXT`) as given, else the command line with its
/// secrets masked; either cut to 200 characters.
pub fn label(explicit: Option<&str>, command: &[OsString]) -> String {
    let text = match explicit {
        Some(text) => text.to_owned(),
        None => masked_command_line(command),
    };
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// The command line with `***` in place of each secret:
/// - the value of a long option whose name says it is a secret (`--password=X`, `--token X`,
///   `--api-key=X`; see [`is_secret_key`]), in both the `=` and the next-argument form (but
///   `--no-password` takes no value);
/// - what follows `-p` in the same argument (`-pX`, as mysql takes its password; `-p` alone
///   stays, and so does the next argument);
/// - the value of `KEY=value` when KEY names a secret (`PGPASSWORD=X`, `API_TOKEN=X`);
/// - URL passwords and secret URL parameters anywhere in an argument, and the secrets of
///   `keyword=value` words inside one ([`mask_password`]).
fn masked_command_line(command: &[OsString]) -> String {
    let mut words = Vec::with_capacity(command.len());
    let mut value_of_secret = false;
    for arg in command {
        let arg = arg.to_string_lossy();
        if std::mem::take(&mut value_of_secret) {
            words.push(MASK.to_owned());
            continue;
        }
        let (masked, next_is_secret) = masked_argument(&arg);
        words.push(masked);
        value_of_secret = next_is_secret;
    }
    words.join(" ")
}

/// One argument masked, and whether the next argument is the value of a secret option.
fn masked_argument(arg: &str) -> (String, bool) {
    if let Some(option) = arg.strip_prefix("--") {
        return match option.split_once('=') {
            Some((name, _)) if is_secret_key(name) => (format!("--{name}={MASK}"), false),
            Some((name, value)) => (format!("--{name}={}", mask_password(value)), false),
            // `--no-password` and the like take no value.
            None => (
                arg.to_owned(),
                !option.starts_with("no-") && is_secret_key(option),
            ),
        };
    }
    if arg.len() > 2 && arg.starts_with("-p") {
        return (format!("-p{MASK}"), false);
    }
    match arg.split_once('=') {
        Some((key, _)) if is_variable_name(key) && is_secret_key(key) => {
            (format!("{key}={MASK}"), false)
        }
        _ => (mask_password(arg), false),
    }
}

/// Whether `text` can be the name of an environment variable, as `env` and shells take it.
fn is_variable_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn masks(command: &[&str], expected: &str) {
        let command: Vec<OsString> = command.iter().map(OsString::from).collect();
        assert_eq!(label(None, &command), expected, "{command:?}");
    }

    #[test]
    fn secrets_on_the_command_line_are_masked() {
        masks(
            &["psql", "postgres://u:secret@db/x", "-c", "select 1"],
            "psql postgres://u:***@db/x -c select 1",
        );
        masks(&["sync", "--db=redis://:pw@h"], "sync --db=redis://:***@h");
        masks(&["tool", "--password=a b", "x"], "tool --password=*** x");
        masks(&["tool", "--password", "pw", "x"], "tool --password *** x");
        masks(
            &["tool", "--passwd", "pw", "--pass", "pw"],
            "tool --passwd *** --pass ***",
        );
        masks(
            &[
                "tool",
                "--db-password=pw",
                "--client-secret",
                "s",
                "--auth-token=t",
                "--api-key",
                "k",
                "--apikey=k",
            ],
            "tool --db-password=*** --client-secret *** --auth-token=*** --api-key *** --apikey=***",
        );
        masks(
            &["mysql", "-u", "root", "-pSecret", "db"],
            "mysql -u root -p*** db",
        );
        masks(&["mysql", "-u", "root", "-p", "db"], "mysql -u root -p db");
        masks(
            &[
                "env",
                "PGPASSWORD=x y",
                "AWS_SECRET_ACCESS_KEY=k",
                "GITHUB_TOKEN=t",
                "LANG=C",
                "psql",
            ],
            "env PGPASSWORD=*** AWS_SECRET_ACCESS_KEY=*** GITHUB_TOKEN=*** LANG=C psql",
        );
        masks(
            &[
                "sh",
                "-c",
                "psql 'host=db password=pw' && curl https://x/?token=t",
            ],
            "sh -c psql 'host=db password=*** && curl https://x/?token=***",
        );
        // Nothing after it to mask; a negated option takes no value.
        masks(&["tool", "--password"], "tool --password");
        masks(
            &["psql", "--no-password", "-h", "db"],
            "psql --no-password -h db",
        );
    }

    #[test]
    fn plain_command_lines_stay_as_they_are() {
        masks(
            &[
                "./report.sh",
                "--since",
                "2d",
                "-v",
                "--out=/tmp/a b",
                "name=x",
                "--",
            ],
            "./report.sh --since 2d -v --out=/tmp/a b name=x --",
        );
        masks(&["cp", "sqlite:///a:b@c", "/x"], "cp sqlite:///a:b@c /x");
    }

    #[test]
    fn an_explicit_label_is_kept_and_long_ones_are_cut() {
        let command = [OsString::from("tool"), OsString::from("--password=pw")];
        assert_eq!(
            label(Some("nightly --password=pw"), &command),
            "nightly --password=pw"
        );
        let long = "é".repeat(300);
        let cut = label(Some(&long), &command);
        assert_eq!(cut.chars().count(), MAX_CHARS + 3);
        assert!(cut.ends_with("..."));
        let args: Vec<OsString> = vec![
            "x".repeat(150).into(),
            "--token".into(),
            "y".repeat(150).into(),
        ];
        assert!(!label(None, &args).contains('y'), "masked before it is cut");
    }
}
