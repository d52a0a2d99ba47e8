//! Secrets in store URLs and connection strings, masked for messages and logs.
//!
//! Masking errs on the side of hiding too much: a password may contain `/`, `?`, `#`, `@` or `:`
//! unencoded, and drivers differ in where they think it ends, so the masked part is the widest
//! any of them could read as the password.

use std::ops::Range;

/// What replaces each secret.
const MASK: &str = "***";

/// Returns `url` with every secret it carries replaced by `***`, so that it can be shown in
/// messages and logs:
///
/// - the password of `scheme://user:password@host…`: everything from the first `:` after `//` to
///   the last `@`, so a password with unencoded `/ ? # @ :` is hidden whole (this may hide a
///   port and path too, when a later part of the URL has an `@`);
/// - the value of every query parameter whose name says it is a secret (see [`is_secret_key`]),
///   e.g. `password=`, `sslpassword=`, `pass=`, `tlsCertificateKeyFilePassword=`,
///   `proxyPassword=`, and `authMechanismProperties=` (which carries AWS session tokens);
/// - in text that is not a URL, such as a libpq `host=db user=u password=secret` string, the
///   value of every secret keyword (also quoted: `password='a b'`), and the URL passwords of the
///   words.
///
/// A `sqlite://` URL is a file path, not credentials, and is returned as it is.
///
/// ```
/// use singleton_process::store::mask_password;
///
/// assert_eq!(mask_password("postgres://u:p/ss@db/x"), "postgres://u:***@db/x");
/// assert_eq!(mask_password("mongodb://h/db?proxyPassword=pw&w=1"), "mongodb://h/db?proxyPassword=***&w=1");
/// assert_eq!(mask_password("host=db password='a b' dbname=x"), "host=db password=*** dbname=x");
/// assert_eq!(mask_password("sqlite:///tmp/a@b:c.db"), "sqlite:///tmp/a@b:c.db");
/// ```
pub fn mask_password(url: &str) -> String {
    let mut masked = String::with_capacity(url.len());
    let mut at = 0;
    for span in secret_spans(url) {
        masked.push_str(&url[at..span.start]);
        masked.push_str(MASK);
        at = span.end;
    }
    masked.push_str(&url[at..]);
    masked
}

/// Whether a URL parameter, connection keyword, command-line option or environment variable
/// called `key` carries a secret. Case, punctuation and percent-encoding do not count: a secret
/// name is `pass` or `authMechanismProperties`, or contains `password`, `passwd`, `secret`,
/// `token` or `apikey`.
///
/// ```
/// use singleton_process::store::is_secret_key;
///
/// assert!(is_secret_key("sslpassword"));
/// assert!(is_secret_key("--api-key"));
/// assert!(is_secret_key("AWS_SESSION_TOKEN"));
/// assert!(!is_secret_key("user"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let key: String = percent_encoding::percent_decode_str(key)
        .decode_utf8_lossy()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    matches!(key.as_str(), "pass" | "authmechanismproperties")
        || ["password", "passwd", "secret", "token", "apikey"]
            .iter()
            .any(|word| key.contains(word))
}

/// `message` with every secret of `url` replaced by `***`, as written in the URL and
/// percent-decoded, should a driver's message quote one.
#[cfg(any(feature = "mongodb", feature = "redis"))]
pub(crate) fn redact(message: &str, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    for span in secret_spans(url) {
        let raw = &url[span];
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned();
        for secret in [raw.to_owned(), decoded] {
            if !secret.is_empty() && !secrets.contains(&secret) {
                secrets.push(secret);
            }
        }
    }
    // Longest first, so that a secret inside another is not left half shown.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut message = message.to_owned();
    for secret in secrets {
        message = message.replace(&secret, MASK);
    }
    message
}

/// Where the secrets of `text` are, in order and none overlapping.
fn secret_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    match url_start(text) {
        Some(rest) => url_spans(text, rest..text.len(), &mut spans),
        None => keyword_spans(text, &mut spans),
    }
    merged(spans)
}

/// Where the part after `scheme://` starts, if `text` is a URL whose scheme may carry
/// credentials (not `sqlite:`, whose URLs are file paths).
fn url_start(text: &str) -> Option<usize> {
    let (scheme, _) = text.split_once("://")?;
    (is_scheme(scheme) && !scheme.eq_ignore_ascii_case("sqlite")).then_some(scheme.len() + 3)
}

/// Whether `text` is a URL scheme: a letter, then letters, digits, `+`, `-` and `.`.
pub(crate) fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic()) && text.chars().all(is_scheme_char)
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

/// The secrets of the URL part `rest` (after `scheme://`) of `text`.
fn url_spans(text: &str, rest: Range<usize>, spans: &mut Vec<Range<usize>>) {
    let part = &text[rest.clone()];
    let at = part.rfind('@');
    match (part.find(':'), at) {
        (Some(colon), Some(at)) if colon < at => {
            spans.push(rest.start + colon + 1..rest.start + at);
        }
        _ => {}
    }
    // The query starts at the first `?`, unless that one is inside the password: try both.
    let after_userinfo = at.map_or(0, |at| at + 1);
    let queries = [
        part.find('?'),
        part[after_userinfo..].find('?').map(|q| q + after_userinfo),
    ];
    for query in queries.into_iter().flatten() {
        let query = rest.start + query + 1..rest.end;
        // Parameters are separated by `&`; some clients also take `;`.
        query_spans(text, query.clone(), &['&'], spans);
        query_spans(text, query, &['&', ';'], spans);
    }
}

/// The values of the secret parameters of the query `query` of `text`.
fn query_spans(
    text: &str,
    query: Range<usize>,
    separators: &[char],
    spans: &mut Vec<Range<usize>>,
) {
    let mut start = query.start;
    for pair in text[query].split(separators) {
        match pair.split_once('=') {
            Some((key, value)) if !value.is_empty() && is_secret_key(key) => {
                spans.push(start + key.len() + 1..start + pair.len());
            }
            _ => {}
        }
        // Every separator is one byte.
        start += pair.len() + 1;
    }
}

/// The secrets of text that is not a URL: libpq's `keyword = value` pairs separated by
/// whitespace, values unquoted or in single quotes, `\` escaping the next character.
fn keyword_spans(text: &str, spans: &mut Vec<Range<usize>>) {
    let bytes = text.as_bytes();
    // Every byte looked at is ASCII (UTF-8 continuation bytes are never delimiters), so every
    // position kept is a character boundary.
    let skip_space = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        at
    };
    let mut at = skip_space(0);
    while at < bytes.len() {
        let key_start = at;
        while at < bytes.len() && !bytes[at].is_ascii_whitespace() && bytes[at] != b'=' {
            at += 1;
        }
        let key = key_start..at;
        let equals = skip_space(at);
        if bytes.get(equals) == Some(&b'=') {
            let value_start = skip_space(equals + 1);
            let value = value_start..value_end(bytes, value_start);
            at = value.end;
            if is_secret_key(&text[key]) {
                if !value.is_empty() {
                    spans.push(value);
                }
            } else {
                word_url_spans(text, value, spans);
            }
        } else {
            word_url_spans(text, key, spans);
        }
        at = skip_space(at);
    }
}

/// Where a libpq value that starts at `start` ends.
fn value_end(bytes: &[u8], start: usize) -> usize {
    let quoted = bytes.get(start) == Some(&b'\'');
    let mut at = if quoted { start + 1 } else { start };
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'\'' if quoted => return at + 1,
            byte if !quoted && byte.is_ascii_whitespace() => return at,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// The secrets of a URL inside the word `word` of `text`, if it has one.
fn word_url_spans(text: &str, word: Range<usize>, spans: &mut Vec<Range<usize>>) {
    let Some(separator) = text[word.clone()].find("://") else {
        return;
    };
    let separator = word.start + separator;
    let scheme_start = text[word.start..separator]
        .rfind(|c| !is_scheme_char(c))
        .map_or(word.start, |at| word.start + at + 1);
    if !text[scheme_start..separator].eq_ignore_ascii_case("sqlite") {
        url_spans(text, separator + 3..word.end, spans);
    }
}

/// `spans` in order, overlapping and touching ones joined.
fn merged(mut spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    spans.sort_by_key(|span| (span.start, span.end));
    let mut joined: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match joined.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => joined.push(span),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn masks(url: &str, expected: &str) {
        assert_eq!(mask_password(url), expected, "{url}");
    }

    #[test]
    fn the_password_of_a_url() {
        masks(
            "redis://user:s3cret@host:6379/0?x=1",
            "redis://user:***@host:6379/0?x=1",
        );
        masks("redis://:s3cret@host", "redis://:***@host");
        masks("redis://u:@host", "redis://u:***@host");
        masks("redis://host:6379", "redis://host:6379");
        masks("redis://user@host", "redis://user@host");
        masks(
            "redis+sentinel://u:pw@s1:26379,s2:26379/mymaster/1?sentinel_password=spw&x=1",
            "redis+sentinel://u:***@s1:26379,s2:26379/mymaster/1?sentinel_password=***&x=1",
        );
        masks(
            "redis+sentinel://s1,s2/m?sentinel_user=s&sentinel_password=p",
            "redis+sentinel://s1,s2/m?sentinel_user=s&sentinel_password=***",
        );
        masks("postgres://u:p%40ss%2F@h/db", "postgres://u:***@h/db");
        masks(
            "mongodb+srv://u:pw@cluster0.example.net/db",
            "mongodb+srv://u:***@cluster0.example.net/db",
        );
        masks("POSTGRESQL://u:pw@h/db", "POSTGRESQL://u:***@h/db");
    }

    #[test]
    fn a_password_with_unencoded_delimiters_is_hidden_whole() {
        masks("postgres://u:p/ss@db/x", "postgres://u:***@db/x");
        masks("postgres://u:p@ss@h/db", "postgres://u:***@h/db");
        masks("mysql://u:p?x@h/db", "mysql://u:***@h/db");
        masks("mysql://u:p#x@h/db", "mysql://u:***@h/db");
        masks("mysql://u:p:x@h/db", "mysql://u:***@h/db");
        masks("mysql://u:p?x@h/db?pass=y", "mysql://u:***@h/db?pass=***");
        // An `@` later in the URL hides more than the password, never less.
        masks("mongodb://u:pw@h/db?appName=a@b", "mongodb://u:***@b");
    }

    #[test]
    fn urls_with_many_hosts() {
        masks("etcd://u:p@h1:2379,h2:2379", "etcd://u:***@h1:2379,h2:2379");
        masks("etcd://h1:2379,h2:2379", "etcd://h1:2379,h2:2379");
        masks(
            "etcds://u:p@h1:2379,h2?cacert=/ca.pem",
            "etcds://u:***@h1:2379,h2?cacert=/ca.pem",
        );
        masks(
            "mongodb://u:p@h1,h2/db?replicaSet=r",
            "mongodb://u:***@h1,h2/db?replicaSet=r",
        );
        masks(
            "mongodb://u:p@[::1]:27017,[::2]:27017/db",
            "mongodb://u:***@[::1]:27017,[::2]:27017/db",
        );
    }

    #[test]
    fn secret_query_parameters() {
        masks(
            "postgres://h/db?password=pw&sslmode=require",
            "postgres://h/db?password=***&sslmode=require",
        );
        masks(
            "postgres://h/db?sslpassword=pw",
            "postgres://h/db?sslpassword=***",
        );
        masks(
            "postgresql:///db?host=/run/pg&user=u&password=a%26b",
            "postgresql:///db?host=/run/pg&user=u&password=***",
        );
        masks(
            "redis+unix:///run/redis.sock?db=1&user=u&pass=pw",
            "redis+unix:///run/redis.sock?db=1&user=u&pass=***",
        );
        masks(
            "mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok,X:y&w=1",
            "mongodb://h/db?authMechanism=MONGODB-AWS&authMechanismProperties=***&w=1",
        );
        masks(
            "mongodb://h/db?tls=true&tlsCertificateKeyFilePassword=pw",
            "mongodb://h/db?tls=true&tlsCertificateKeyFilePassword=***",
        );
        masks(
            "mongodb://h/db?proxyHost=p&proxyPassword=pw",
            "mongodb://h/db?proxyHost=p&proxyPassword=***",
        );
        masks(
            "mongodb://h/db?w=1;password=pw",
            "mongodb://h/db?w=1;password=***",
        );
        masks(
            "mongodb://h/db?PASS%77ORD=pw",
            "mongodb://h/db?PASS%77ORD=***",
        );
        masks("mongodb://h/db?password=", "mongodb://h/db?password=");
        masks(
            "redis://h/0?prefix=app:&protocol=resp3",
            "redis://h/0?prefix=app:&protocol=resp3",
        );
    }

    #[test]
    fn libpq_keyword_value_strings() {
        masks(
            "host=db user=u password=secret dbname=x",
            "host=db user=u password=*** dbname=x",
        );
        masks("password='a b' host=db", "password=*** host=db");
        masks(r"password='it\'s \\ here' host=db", "password=*** host=db");
        masks(r"password=a\ b host=db", "password=*** host=db");
        masks("host = db password = secret", "host = db password = ***");
        masks("password='never closed", "password=***");
        masks("sslpassword=x passfile=/p", "sslpassword=*** passfile=/p");
        masks("host=db dbname=x", "host=db dbname=x");
        masks("ünï=1 password=ß", "ünï=1 password=***");
        // A URL among the words, or as a value.
        masks(" postgres://u:pw@h/db", " postgres://u:***@h/db");
        masks("--db=redis://:pw@h", "--db=redis://:***@h");
    }

    #[test]
    fn sqlite_paths_are_not_credentials() {
        masks("sqlite:///tmp/a@b:c.db", "sqlite:///tmp/a@b:c.db");
        masks("sqlite://rel/u:p@h.db", "sqlite://rel/u:p@h.db");
        masks(
            "SQLite://rel/u:p@h.db?x=password=y",
            "SQLite://rel/u:p@h.db?x=password=y",
        );
        masks("--db=sqlite://a:b@c", "--db=sqlite://a:b@c");
        masks("memory:", "memory:");
    }

    #[test]
    #[cfg(any(feature = "mongodb", feature = "redis"))]
    fn redact_blanks_raw_and_decoded_secrets() {
        let url = "postgres://u:p%2Fss@h/db?sslpassword=other";
        assert_eq!(
            redact("auth failed for p%2Fss, p/ss and other", url),
            "auth failed for ***, *** and ***"
        );
        assert_eq!(redact("no secret here", "redis://h"), "no secret here");
    }
}
