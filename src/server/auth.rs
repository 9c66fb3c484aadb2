//! Bearer-token authentication with scopes. Tokens are configured as sha256 hashes; a request's
//! token is hashed and compared with every configured hash in constant time. Tokens are never
//! logged; a token's name identifies the caller (the author of a rules change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use chrono::Utc;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, Code};
use crate::config::{Scope, TokenConfig};
use crate::store::{ConsoleSession, Store};

/// A configured token, validated.
#[derive(Debug, Clone)]
struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
    rate_per_minute: Option<u32>,
}

/// A token bucket: `tokens` left, refilled continuously up to the per-minute rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The caller a request was authenticated as: found once per request by the middleware and
/// kept in the request's extensions, where handlers take it (`caller: Caller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name (`dev` in dev mode).
    pub name: String,
    /// What it may do (`admin` implies everything).
    scopes: Vec<Scope>,
    /// Its own requests per minute, if it sets a limit.
    rate_per_minute: Option<u32>,
    /// Authenticated by the console's session cookie: the session's CSRF token, which its
    /// changes must echo.
    session_csrf: Option<String>,
}

impl Caller {
    /// The CSRF token of the console session that authenticated it, if a session did.
    pub fn session_csrf(&self) -> Option<&str> {
        self.session_csrf.as_deref()
    }
}

/// Whether a path needs a token: the API under `/v1/` (but the helpdesks' webhooks) and the
/// metrics; the probes, the OpenAPI document and the console's page and login do not.
pub fn needs_token(path: &str) -> bool {
    (path.starts_with("/v1/") || path == "/metrics") && !is_helpdesk_webhook(path)
}

/// A helpdesk's webhook (`/v1/connectors/{name}/events`): authenticated by the connector's own
/// signature or secret, not by our tokens.
pub fn is_helpdesk_webhook(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(""), Some("v1"), Some("connectors"), Some(name), Some("events"), None) if !name.is_empty()
    )
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(unauthenticated)
    }
}

/// The refusal of a request that needs a token and came without a known one.
pub fn unauthenticated() -> ApiError {
    unauthorized("missing or unknown bearer token: send Authorization: Bearer <token>")
}

/// The token table, or dev mode (no tokens, loopback only), and the console's sessions (in
/// the database, so every replica knows them). Rate limits are per process: behind a load
/// balancer the effective limit is the token's limit times the replicas.
#[derive(Debug)]
pub struct Auth {
    tokens: RwLock<Vec<Token>>,
    dev: bool,
    default_rate: Option<u32>,
    buckets: Mutex<HashMap<String, Bucket>>,
    sessions: Option<Arc<Store>>,
}

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "ir_session";

/// How long a console session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    crate::import::hex(&b)
}

/// The token of a request's `Authorization: Bearer` header, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The session id in a request's `Cookie` header, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The hex sha256 of a token, as configured.
pub fn hash_token(token: &str) -> String {
    crate::import::hex(&Sha256::digest(token.as_bytes()))
}

impl Auth {
    /// Validates configured tokens (`dev`: accept every request as `dev`); `default_rate`
    /// limits tokens that set no `rate_per_minute` of their own.
    pub fn new(
        tokens: &[TokenConfig],
        dev: bool,
        default_rate: Option<u32>,
    ) -> Result<Self, String> {
        Ok(Self {
            tokens: RwLock::new(validate(tokens)?),
            dev,
            default_rate,
            buckets: Mutex::new(HashMap::new()),
            sessions: None,
        })
    }

    /// Keeps the console's sessions in `store`.
    pub fn with_sessions(mut self, store: Arc<Store>) -> Self {
        self.sessions = Some(store);
        self
    }

    fn sessions(&self) -> Result<&Store, ApiError> {
        self.sessions
            .as_deref()
            .ok_or_else(|| ApiError::internal("console sessions have no store. This is a bug."))
    }

    /// Replaces the token table (rotation without restart); sessions of names no longer
    /// configured with the `admin` scope end with it. Returns how many tokens are configured.
    pub fn reload(&self, tokens: &[TokenConfig]) -> Result<usize, String> {
        let new = validate(tokens)?;
        let n = new.len();
        *self.tokens.write().expect("tokens lock poisoned") = new;
        Ok(n)
    }

    /// Whether `name` is (still) a configured admin token, which a session stands for.
    fn admin(&self, name: &str) -> bool {
        self.dev
            || self
                .tokens
                .read()
                .expect("tokens lock poisoned")
                .iter()
                .any(|t| t.name == name && t.scopes.contains(&Scope::Admin))
    }

    /// The configured token a presented one hashes to (constant-time over every token).
    fn lookup(&self, presented: &str) -> Option<Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in self.tokens.read().expect("tokens lock poisoned").iter() {
            if bool::from(t.hash.ct_eq(&digest)) {
                found = Some(t.clone());
            }
        }
        found
    }

    /// Takes one request from the token's bucket: 429 with the seconds to wait when empty.
    fn take(&self, name: &str, rate: Option<u32>) -> Result<(), ApiError> {
        let Some(rate) = rate.or(self.default_rate).filter(|r| *r > 0) else {
            return Ok(());
        };
        let per_sec = f64::from(rate) / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("buckets lock poisoned");
        let b = buckets.entry(name.to_string()).or_insert(Bucket {
            tokens: f64::from(rate),
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(f64::from(rate));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64;
        let mut e = ApiError::new(
            Code::RateLimited,
            format!("token \"{name}\" may make {rate} requests per minute; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        Err(e)
    }

    /// Console login: an `admin` token opens a session; returns its id (the cookie's value)
    /// and the session.
    pub async fn login(&self, token: &str) -> Result<(String, ConsoleSession), ApiError> {
        let (name, scopes) = if self.dev {
            ("dev".to_string(), vec![Scope::Admin])
        } else {
            let t = self
                .lookup(token.trim())
                .ok_or_else(|| unauthorized("unknown or revoked token"))?;
            (t.name, t.scopes)
        };
        if !scopes.contains(&Scope::Admin) {
            return Err(ApiError::new(
                Code::Forbidden,
                format!("token \"{name}\" lacks the `admin` scope the console needs"),
            ));
        }
        let session = ConsoleSession {
            name,
            csrf: random_hex(),
            expires_at: Utc::now()
                + chrono::Duration::from_std(SESSION_TTL).expect("8 hours fit. This is a bug."),
        };
        let id = random_hex();
        let store = self.sessions()?;
        store.insert_session(&hash_token(&id), &session).await?;
        Ok((id, session))
    }

    /// The live session of a request's cookie (one whose admin token is still configured).
    pub async fn session(&self, headers: &HeaderMap) -> Result<Option<ConsoleSession>, ApiError> {
        let Some(id) = session_cookie(headers) else {
            return Ok(None);
        };
        let found = self
            .sessions()?
            .console_session(&hash_token(&id), Utc::now())
            .await?;
        Ok(found.filter(|s| self.admin(&s.name)))
    }

    /// Ends a request's session.
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(id) = session_cookie(headers) {
            self.sessions()?.end_session(&hash_token(&id)).await?;
        }
        Ok(())
    }

    /// Who a request comes from: its bearer token, else its console session (which stands for
    /// an admin token); `None` with neither; 401 for an unknown token. Run once per request,
    /// before its body is read, so an unauthenticated client learns nothing from parse errors.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
        if self.dev {
            return Ok(Some(Caller {
                name: "dev".into(),
                scopes: vec![Scope::Admin],
                rate_per_minute: None,
                session_csrf: None,
            }));
        }
        let Some(presented) = bearer(headers) else {
            // The console's session (admin; its CSRF token is checked by the middleware).
            return Ok(self.session(headers).await?.map(|s| Caller {
                name: s.name,
                scopes: vec![Scope::Admin],
                rate_per_minute: None,
                session_csrf: Some(s.csrf),
            }));
        };
        let Some(Token {
            name,
            scopes,
            rate_per_minute,
            ..
        }) = self.lookup(presented)
        else {
            return Err(unauthorized("unknown or revoked token"));
        };
        Ok(Some(Caller {
            name,
            scopes,
            rate_per_minute,
            session_csrf: None,
        }))
    }

    /// Whether requests are accepted without tokens.
    pub fn is_dev(&self) -> bool {
        self.dev
    }

    /// How many tokens are configured.
    pub fn token_count(&self) -> usize {
        self.tokens.read().expect("tokens lock poisoned").len()
    }

    /// Lets a caller use an endpoint that needs `scope`: 403 without the scope, 429 when its
    /// requests per minute are used up.
    pub fn permit(&self, caller: Caller, scope: Scope) -> Result<Caller, ApiError> {
        if self.dev {
            return Ok(caller);
        }
        if !(caller.scopes.contains(&scope) || caller.scopes.contains(&Scope::Admin)) {
            return Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "token \"{}\" lacks the `{}` scope this endpoint needs",
                    caller.name,
                    scope.name()
                ),
            ));
        }
        self.take(&caller.name, caller.rate_per_minute)?;
        Ok(caller)
    }
}

/// Checks configured tokens: hashes, names and scopes.
fn validate(tokens: &[TokenConfig]) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let hex = t.sha256.trim().to_ascii_lowercase();
        let bytes: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| {
                (0..32)
                    .map(|j| u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).ok())
                    .collect()
            })
            .flatten();
        let Some(bytes) = bytes else {
            return Err(format!(
                "tokens[{i}] ({}): sha256 must be 64 hex digits (run `intent-router hash-token`)",
                t.name
            ));
        };
        if t.name.trim().is_empty() {
            return Err(format!("tokens[{i}]: name must not be empty"));
        }
        if t.scopes.is_empty() {
            return Err(format!(
                "tokens[{i}] ({}): scopes must list at least one of route, feedback, metrics, admin",
                t.name
            ));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes);
        out.push(Token {
            name: t.name.clone(),
            hash,
            scopes: t.scopes.clone(),
            rate_per_minute: t.rate_per_minute,
        });
    }
    Ok(out)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(Code::Unauthorized, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn auth() -> Auth {
        Auth::new(
            &[
                TokenConfig {
                    name: "helpdesk".into(),
                    sha256: hash_token("s3cret-route"),
                    scopes: vec![Scope::Route],
                    rate_per_minute: None,
                },
                TokenConfig {
                    name: "ann".into(),
                    sha256: hash_token("s3cret-admin").to_uppercase(),
                    scopes: vec![Scope::Admin],
                    rate_per_minute: None,
                },
            ],
            false,
            None,
        )
        .unwrap()
    }

    impl Auth {
        /// What the middleware and a handler do together: identify, then permit.
        fn check(&self, h: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let caller = rt
                .block_on(self.identify(h))?
                .ok_or_else(|| unauthorized("missing bearer token"))?;
            self.permit(caller, scope)
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn scopes_decide_and_admin_implies_all() {
        let a = auth();
        assert_eq!(
            a.check(&bearer("s3cret-route"), Scope::Route).unwrap().name,
            "helpdesk"
        );
        let e = a.check(&bearer("s3cret-route"), Scope::Admin).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            e.message,
            "token \"helpdesk\" lacks the `admin` scope this endpoint needs"
        );
        assert_eq!(
            a.check(&bearer("s3cret-admin"), Scope::Route).unwrap().name,
            "ann"
        );
        let e = a.check(&bearer("wrong"), Scope::Route).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let e = a.check(&HeaderMap::new(), Scope::Route).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn bad_token_config_is_explained() {
        let e = Auth::new(
            &[TokenConfig {
                name: "x".into(),
                sha256: "abc".into(),
                scopes: vec![Scope::Route],
                rate_per_minute: None,
            }],
            false,
            None,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "tokens[0] (x): sha256 must be 64 hex digits (run `intent-router hash-token`)"
        );
    }

    #[test]
    fn rate_limits_per_token_and_rotation() {
        let a = Auth::new(
            &[TokenConfig {
                name: "slow".into(),
                sha256: hash_token("slow-token-000000"),
                scopes: vec![Scope::Route],
                rate_per_minute: Some(2),
            }],
            false,
            None,
        )
        .unwrap();
        let h = bearer("slow-token-000000");
        assert!(a.check(&h, Scope::Route).is_ok());
        assert!(a.check(&h, Scope::Route).is_ok());
        let e = a.check(&h, Scope::Route).unwrap_err();
        assert_eq!(
            (e.status(), e.code),
            (StatusCode::TOO_MANY_REQUESTS, Code::RateLimited)
        );
        assert_eq!(e.retry_after, Some(30));
        // Rotation: the old token stops working, the new one works, without a restart.
        a.reload(&[TokenConfig {
            name: "fresh".into(),
            sha256: hash_token("fresh-token-00000"),
            scopes: vec![Scope::Route],
            rate_per_minute: None,
        }])
        .unwrap();
        assert_eq!(
            a.check(&h, Scope::Route).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            a.check(&bearer("fresh-token-00000"), Scope::Route)
                .unwrap()
                .name,
            "fresh"
        );
    }
}
