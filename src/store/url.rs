//! Where the database is: a file (SQLite, the embedded default) or a PostgreSQL server, read
//! from `--database` / `database =` as a path, `sqlite://PATH` or `postgres://…`. Any other
//! scheme is refused (a URL must never silently become a file name). Owns redaction: the URL
//! is shown in logs and errors without its password.

use std::fmt;
use std::path::{Path, PathBuf};

/// The schemes a database URL may have.
pub const SCHEMES: &str =
    "a file path or sqlite://PATH (SQLite), postgres://USER@HOST/DB (PostgreSQL)";

/// A database location, parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server: the `postgres://` URL as given.
    Postgres(String),
}

/// A database URL that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// A scheme we do not support.
    #[error("database {url:?}: unsupported scheme \"{scheme}\"; give {SCHEMES}")]
    Scheme {
        /// The URL (redacted).
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Nothing after the scheme.
    #[error("database {0:?}: no path after the scheme; give {SCHEMES}")]
    Empty(String),
}

impl DatabaseUrl {
    /// Parses a path or URL; relative SQLite paths are resolved against `base` (the config
    /// file's directory, when the setting came from one).
    pub fn parse(s: &str, base: Option<&Path>) -> Result<Self, UrlError> {
        let rel = |p: &str| -> Result<Self, UrlError> {
            if p.is_empty() {
                return Err(UrlError::Empty(redact(s)));
            }
            let p = PathBuf::from(p);
            Ok(Self::Sqlite(match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            }))
        };
        match scheme(s) {
            None => rel(s),
            Some("sqlite") => rel(s["sqlite:".len()..].trim_start_matches("//")),
            Some("postgres" | "postgresql") => Ok(Self::Postgres(s.to_string())),
            Some(other) => Err(UrlError::Scheme {
                url: redact(s),
                scheme: other.to_string(),
            }),
        }
    }

    /// The SQLite file, if that is what it is.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }
}

/// `scheme` of `scheme:…` (two characters at least, so that no path is taken for one).
fn scheme(s: &str) -> Option<&str> {
    let (head, _) = s.split_once(':')?;
    let ok = head.len() >= 2
        && head.starts_with(|c: char| c.is_ascii_alphabetic())
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then_some(head)
}

/// The URL with any password replaced by `***` (in the user part and in a `password=` query
/// parameter).
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        // The user part ends at the last `@` before the query: a password may hold `/` or `@`.
        let end = out[start..].find('?').map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let query: Vec<String> = out[q + 1..]
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], query.join("&"));
    }
    out
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(u) => f.write_str(&redact(u)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Connect;

    #[test]
    fn paths_sqlite_urls_and_postgres_urls_parse_and_others_are_refused() {
        let base = Path::new("/etc/ir");
        let p = |s| DatabaseUrl::parse(s, Some(base));
        assert_eq!(
            p("r.db").unwrap(),
            DatabaseUrl::Sqlite("/etc/ir/r.db".into())
        );
        assert_eq!(
            p("/var/r.db").unwrap(),
            DatabaseUrl::Sqlite("/var/r.db".into())
        );
        assert_eq!(
            p("sqlite:///var/r.db").unwrap(),
            DatabaseUrl::Sqlite("/var/r.db".into())
        );
        assert_eq!(
            p("sqlite://data/r.db").unwrap(),
            DatabaseUrl::Sqlite("/etc/ir/data/r.db".into())
        );
        assert_eq!(
            p("postgresql://u@h/db").unwrap(),
            DatabaseUrl::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(
            p("mysql://root:secret@h/db").unwrap_err().to_string(),
            "database \"mysql://root:***@h/db\": unsupported scheme \"mysql\"; give a file path \
             or sqlite://PATH (SQLite), postgres://USER@HOST/DB (PostgreSQL)"
        );
        assert!(matches!(p("sqlite://"), Err(UrlError::Empty(_))));
        // A one-letter "scheme" is a path, not a URL.
        assert!(matches!(p("c:db"), Ok(DatabaseUrl::Sqlite(_))));
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://app:s3cr@t@db.local:5432/ir?sslmode=require"),
            "postgres://app:***@db.local:5432/ir?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/ir?user=app&password=x&sslmode=verify-full"),
            "postgres://db/ir?user=app&password=***&sslmode=verify-full"
        );
        assert_eq!(redact("postgres://app@db/ir"), "postgres://app@db/ir");
        assert_eq!(
            redact("postgres://app:pa/ss@db/ir"),
            "postgres://app:***@db/ir"
        );
        let settings = format!(
            "{:?}",
            Connect {
                password: Some("hunter2".into())
            }
        );
        assert_eq!(settings, "Connect { password: Some(\"***\") }");
        let u = DatabaseUrl::parse("postgres://a:b@h/d", None).unwrap();
        assert_eq!(
            format!("{u} {u:?}"),
            "postgres://a:***@h/d DatabaseUrl(postgres://a:***@h/d)"
        );
    }
}
