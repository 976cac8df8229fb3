//! Checking the platform's access tokens (spec protocol.md §10, D31).
//!
//! * [`Introspector`]: the async interface (introspection and userinfo).
//! * [`HttpIntrospector`]: the HTTP client (`awc`): `POST {platform}/connect/introspect` with
//!   `Authorization: Basic base64(resource_id:resource_secret)` and the form `token=…`;
//!   `GET {platform}/connect/userinfo` with the bearer token.
//! * [`CachingIntrospector`]: a short, bounded, expiry-aware cache in front of any
//!   introspector, so that the platform's repeated 429 polls do not re-introspect each time.
//! * [`Audience`]: which active tokens this DP accepts.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use mydata_protocol::date::UnixTime;

use crate::bounded::BoundedMap;
use crate::clock::Clock;

/// A boxed future. Not `Send`: the HTTP client runs on the current thread's runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Largest introspection or userinfo answer read, in bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A `resource_secret`. `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ResourceSecret(String);

impl ResourceSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        ResourceSecret(secret.into())
    }

    /// The secret, for building the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ResourceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResourceSecret(<redacted>)")
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(d)? {
        None => Vec::new(),
        Some(Aud::One(s)) => vec![s],
        Some(Aud::Many(v)) => v,
    })
}

/// An RFC 7662 introspection answer (spec protocol.md §10.2).
///
/// `Debug` masks the citizen's identifier `uid`.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Introspection {
    /// Whether the token is active for the authenticated `resource_id`.
    pub active: bool,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The SP receiving the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Opaque, stable identifier of the citizen at the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The citizen's national ID, resident certificate or business number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The `resource_id`(s) the token was issued for (a string or an array on the wire).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aud: Vec<String>,
    /// Issue time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Expiry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// The call series the token was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_uid: Option<String>,
    /// Any other member.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Introspection {
    /// The inactive answer.
    pub fn inactive() -> Self {
        Introspection::default()
    }

    /// The token's scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().unwrap_or("").split_ascii_whitespace()
    }
}

fn mask(s: &str) -> String {
    let shown: String = s.chars().take(2).collect();
    format!("{shown}***")
}

impl fmt::Debug for Introspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspection")
            .field("active", &self.active)
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field("sub", &self.sub)
            .field("uid", &self.uid.as_deref().map(mask))
            .field("aud", &self.aud)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .field("transaction_uid", &self.transaction_uid)
            .finish_non_exhaustive()
    }
}

/// Userinfo claims (spec protocol.md §10.3): `sub`, `uid`, `uid_type`, `birthdate`, `name`,
/// `email`, and whatever else the platform sends. `Debug` prints only the claim names.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserInfo(pub Map<String, Value>);

impl UserInfo {
    /// A string claim.
    pub fn get(&self, claim: &str) -> Option<&str> {
        self.0.get(claim)?.as_str()
    }

    /// `sub`.
    pub fn sub(&self) -> Option<&str> {
        self.get("sub")
    }

    /// `uid`.
    pub fn uid(&self) -> Option<&str> {
        self.get("uid")
    }

    /// `uid_type`: `NID`, `ARC` or `BAN`.
    pub fn uid_type(&self) -> Option<&str> {
        self.get("uid_type")
    }

    /// `birthdate`, `YYYY-MM-DD`.
    pub fn birthdate(&self) -> Option<&str> {
        self.get("birthdate")
    }

    /// `name`.
    pub fn name(&self) -> Option<&str> {
        self.get("name")
    }

    /// `email`.
    pub fn email(&self) -> Option<&str> {
        self.get("email")
    }
}

impl fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserInfo")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why the platform could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectError {
    /// Connection failure or timeout.
    #[error("cannot reach the platform: {0}")]
    Transport(String),
    /// The platform refused this DP's `resource_id`/`resource_secret` (401).
    #[error("the platform refused the resource credentials")]
    Credentials,
    /// Another unexpected status.
    #[error("unexpected status {0} from the platform")]
    Status(u16),
    /// The answer was not the expected JSON.
    #[error("unreadable answer from the platform: {0}")]
    BadAnswer(String),
}

/// Asks the platform about a bearer token.
pub trait Introspector: Send + Sync {
    /// RFC 7662 introspection. An unknown or expired token is `Ok` with `active: false`.
    fn introspect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Introspection, IntrospectError>>;

    /// The userinfo claims; `Ok(None)` when the platform refuses the token (401).
    fn userinfo<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, IntrospectError>>;
}

impl<T: Introspector + ?Sized> Introspector for Arc<T> {
    fn introspect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Introspection, IntrospectError>> {
        (**self).introspect(token)
    }

    fn userinfo<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, IntrospectError>> {
        (**self).userinfo(token)
    }
}

/// Which active tokens a DP accepts.
///
/// A token is accepted only when the platform says it is active **and** either its `aud`
/// contains this DP's `resource_id`, or, when the platform sent no `aud`, one of its scopes
/// is one of `scopes`. A token whose `aud` names another dataset is refused even if a scope
/// matches: each token is for one (transaction, dataset) (D31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// This dataset's `resource_id`.
    pub resource_id: String,
    /// This dataset's scopes (used only when the answer carries no `aud`).
    pub scopes: Vec<String>,
}

impl Audience {
    /// Whether `i` is acceptable.
    pub fn accepts(&self, i: &Introspection) -> bool {
        if !i.active {
            return false;
        }
        if !i.aud.is_empty() {
            return i.aud.contains(&self.resource_id);
        }
        i.scopes().any(|s| self.scopes.iter().any(|m| m == s))
    }
}

thread_local! {
    /// This thread's clients: the default one (key 0) and one per [`HttpIntrospector::with_tls`]
    /// configuration.
    static CLIENTS: std::cell::RefCell<std::collections::HashMap<u64, awc::Client>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Ids of TLS configurations (0 = the default client).
#[cfg(feature = "tls")]
static NEXT_TLS_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A client context and the id its thread-local client is cached under.
#[derive(Clone)]
struct TlsClient {
    #[cfg(feature = "tls")]
    id: u64,
    #[cfg(feature = "tls")]
    connector: openssl::ssl::SslConnector,
}

/// The awc client of `tls` (or the default) on this thread.
fn http_client(tls: Option<&TlsClient>) -> awc::Client {
    #[cfg(feature = "tls")]
    let id = tls.map_or(0, |t| t.id);
    #[cfg(not(feature = "tls"))]
    let id = {
        let _ = tls;
        0
    };
    CLIENTS.with(|c| {
        c.borrow_mut()
            .entry(id)
            .or_insert_with(|| {
                let connector = awc::Connector::new();
                #[cfg(feature = "tls")]
                let connector = match tls {
                    Some(t) => connector.openssl(t.connector.clone()),
                    // TLS 1.2 or later with the system roots (D49).
                    None => match crate::tls::TlsConfig::new().connector() {
                        Ok(c) => connector.openssl(c),
                        Err(_) => connector,
                    },
                };
                awc::Client::builder()
                    .connector(connector)
                    .disable_redirects()
                    .finish()
            })
            .clone()
    })
}

/// The introspection and userinfo client over HTTP (`awc`).
///
/// Must be used on an actix (or tokio `LocalSet`) runtime, as inside actix-web handlers.
/// One HTTP client with its connection pool is kept per thread (per TLS configuration).
/// Without the crate's `tls` feature only `http://` platform URLs can be reached; with it
/// (the default), `https://` with TLS 1.2 or later, the system roots, and what
/// [`HttpIntrospector::with_tls`] adds (a CA bundle, a client certificate).
#[derive(Clone)]
pub struct HttpIntrospector {
    introspect_url: String,
    userinfo_url: String,
    resource_id: String,
    basic: ResourceSecret,
    timeout: Duration,
    tls: Option<TlsClient>,
}

impl fmt::Debug for HttpIntrospector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpIntrospector")
            .field("introspect_url", &self.introspect_url)
            .field("userinfo_url", &self.userinfo_url)
            .field("resource_id", &self.resource_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The `Authorization` value for the introspection endpoint.
pub fn basic_authorization(resource_id: &str, secret: &ResourceSecret) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{resource_id}:{}", secret.expose()))
    )
}

impl HttpIntrospector {
    /// A client for the platform at `platform_url` (e.g. `https://mydata.example`), as the
    /// dataset `resource_id` with its `resource_secret`. Timeout 10 s.
    pub fn new(platform_url: &str, resource_id: &str, secret: ResourceSecret) -> Self {
        let base = platform_url.trim_end_matches('/');
        HttpIntrospector {
            introspect_url: format!("{base}/connect/introspect"),
            userinfo_url: format!("{base}/connect/userinfo"),
            resource_id: resource_id.to_owned(),
            basic: ResourceSecret(basic_authorization(resource_id, &secret)),
            timeout: Duration::from_secs(10),
            tls: None,
        }
    }

    /// HTTPS toward the platform with `tls`: an extra or pinned CA bundle, a client
    /// certificate the platform may ask for. Fails when the PEM does not parse or the key is
    /// not the certificate's.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        mut self,
        tls: &crate::tls::TlsConfig,
    ) -> Result<Self, crate::tls::ConnectorError> {
        self.tls = Some(TlsClient {
            id: NEXT_TLS_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            connector: tls.connector()?,
        });
        Ok(self)
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The introspection endpoint's URL.
    pub fn introspect_url(&self) -> &str {
        &self.introspect_url
    }

    async fn do_introspect(&self, token: &str) -> Result<Introspection, IntrospectError> {
        let client = http_client(self.tls.as_ref());
        let mut resp = client
            .post(&self.introspect_url)
            .insert_header(("Authorization", self.basic.expose()))
            .insert_header(("Accept", "application/json"))
            .timeout(self.timeout)
            .send_form(&[("token", token)])
            .await
            .map_err(|e| IntrospectError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            401 => return Err(IntrospectError::Credentials),
            s => return Err(IntrospectError::Status(s)),
        }
        let body = resp
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| IntrospectError::Transport(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| IntrospectError::BadAnswer(e.to_string()))
    }

    async fn do_userinfo(&self, token: &str) -> Result<Option<UserInfo>, IntrospectError> {
        let client = http_client(self.tls.as_ref());
        let mut resp = client
            .get(&self.userinfo_url)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Accept", "application/json"))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| IntrospectError::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            401 => return Ok(None),
            s => return Err(IntrospectError::Status(s)),
        }
        let body = resp
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| IntrospectError::Transport(e.to_string()))?;
        serde_json::from_slice::<UserInfo>(&body)
            .map(Some)
            .map_err(|e| IntrospectError::BadAnswer(e.to_string()))
    }
}

impl Introspector for HttpIntrospector {
    fn introspect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Introspection, IntrospectError>> {
        Box::pin(self.do_introspect(token))
    }

    fn userinfo<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, IntrospectError>> {
        Box::pin(self.do_userinfo(token))
    }
}

/// Settings of [`CachingIntrospector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Seconds an active answer is reused, never beyond the token's `exp` (default 30).
    pub ttl_secs: u64,
    /// Seconds an inactive answer is reused (default 2; 0 disables).
    pub negative_ttl_secs: u64,
    /// Most tokens remembered (default 10,000; oldest evicted first).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl_secs: 30,
            negative_ttl_secs: 2,
            max_entries: 10_000,
        }
    }
}

type TokenKey = [u8; 32];

fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cache in front of an [`Introspector`]. Tokens are kept only as SHA-256 digests.
///
/// Active answers are kept `ttl_secs`, but never past the token's `exp`; inactive answers
/// `negative_ttl_secs`; errors are never kept. Userinfo answers are kept `ttl_secs`: they
/// are only asked for after the token passed (cached, expiry-aware) introspection.
pub struct CachingIntrospector<I> {
    inner: I,
    clock: Arc<dyn Clock>,
    config: CacheConfig,
    answers: Mutex<BoundedMap<TokenKey, Introspection>>,
    claims: Mutex<BoundedMap<TokenKey, UserInfo>>,
}

impl<I: fmt::Debug> fmt::Debug for CachingIntrospector<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingIntrospector")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<I: Introspector> CachingIntrospector<I> {
    /// A cache around `inner`, reading time from `clock`.
    pub fn new(inner: I, clock: Arc<dyn Clock>, config: CacheConfig) -> Self {
        CachingIntrospector {
            inner,
            clock,
            config,
            answers: Mutex::new(BoundedMap::new(config.max_entries, usize::MAX)),
            claims: Mutex::new(BoundedMap::new(config.max_entries, usize::MAX)),
        }
    }

    /// The wrapped introspector.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// Introspection answers currently cached.
    pub fn cached(&self) -> usize {
        lock(&self.answers).len()
    }

    fn expiry(&self, i: &Introspection, now: UnixTime) -> UnixTime {
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        if i.active {
            let until = now.0.saturating_add(secs(self.config.ttl_secs));
            UnixTime(i.exp.map_or(until, |exp| exp.min(until)))
        } else {
            UnixTime(now.0.saturating_add(secs(self.config.negative_ttl_secs)))
        }
    }

    async fn cached_introspect(&self, token: &str) -> Result<Introspection, IntrospectError> {
        let key = token_key(token);
        let now = self.clock.now();
        if let Some(hit) = lock(&self.answers).get_mut(&key, now) {
            return Ok(hit.clone());
        }
        let answer = self.inner.introspect(token).await?;
        let now = self.clock.now();
        let expires = self.expiry(&answer, now);
        if expires > now {
            lock(&self.answers).insert(key, answer.clone(), expires, 0);
        }
        Ok(answer)
    }

    async fn cached_userinfo(&self, token: &str) -> Result<Option<UserInfo>, IntrospectError> {
        let key = token_key(token);
        let now = self.clock.now();
        if let Some(hit) = lock(&self.claims).get_mut(&key, now) {
            return Ok(Some(hit.clone()));
        }
        let answer = self.inner.userinfo(token).await?;
        if let Some(claims) = &answer {
            let now = self.clock.now();
            let ttl = i64::try_from(self.config.ttl_secs).unwrap_or(i64::MAX);
            if ttl > 0 {
                lock(&self.claims).insert(
                    key,
                    claims.clone(),
                    UnixTime(now.0.saturating_add(ttl)),
                    0,
                );
            }
        }
        Ok(answer)
    }
}

impl<I: Introspector> Introspector for CachingIntrospector<I> {
    fn introspect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Introspection, IntrospectError>> {
        Box::pin(self.cached_introspect(token))
    }

    fn userinfo<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, IntrospectError>> {
        Box::pin(self.cached_userinfo(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fixed table of answers, counting calls (a test double of the platform, not of this crate).
    #[derive(Default)]
    struct Table {
        answers: HashMap<String, Introspection>,
        calls: AtomicUsize,
        userinfo_calls: AtomicUsize,
        fail: bool,
    }

    impl Introspector for Table {
        fn introspect<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<Introspection, IntrospectError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let r = if self.fail {
                Err(IntrospectError::Status(503))
            } else {
                Ok(self.answers.get(token).cloned().unwrap_or_default())
            };
            Box::pin(async move { r })
        }

        fn userinfo<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<Option<UserInfo>, IntrospectError>> {
            self.userinfo_calls.fetch_add(1, Ordering::SeqCst);
            let r = self.answers.get(token).map(|i| {
                let mut m = Map::new();
                m.insert("sub".into(), Value::from(i.sub.clone().unwrap_or_default()));
                UserInfo(m)
            });
            Box::pin(async move { Ok(r) })
        }
    }

    fn active(exp: i64) -> Introspection {
        Introspection {
            active: true,
            sub: Some("s".into()),
            uid: Some("A120345672".into()),
            aud: vec!["API.AAAAAAAAAA".into()],
            exp: Some(exp),
            ..Introspection::default()
        }
    }

    fn block<F: Future>(f: F) -> F::Output {
        actix_web::rt::System::new().block_on(f)
    }

    #[test]
    fn parses_the_spec_answer() {
        let i: Introspection = serde_json::from_str(
            r#"{"active":true,"scope":"a b","client_id":"CLI.SANDBOX001","token_type":"Bearer",
            "sub":"0d9c","uid":"A123456789","aud":"API.HOUSEHOLD1","iat":1,"exp":2,
            "transaction_uid":"c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801","x":1}"#,
        )
        .unwrap();
        assert!(i.active);
        assert_eq!(i.aud, vec!["API.HOUSEHOLD1"]);
        assert_eq!(i.scopes().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(i.extra.get("x"), Some(&Value::from(1)));
        assert!(!format!("{i:?}").contains("A123456789"));
        let i: Introspection = serde_json::from_str(r#"{"active":false}"#).unwrap();
        assert_eq!(i, Introspection::inactive());
        let i: Introspection = serde_json::from_str(r#"{"active":true,"aud":["x","y"]}"#).unwrap();
        assert_eq!(i.aud, vec!["x", "y"]);
        assert!(serde_json::from_str::<Introspection>(r#"{"aud":"x"}"#).is_err());
    }

    #[test]
    fn audience_rules() {
        let a = Audience {
            resource_id: "API.AAAAAAAAAA".into(),
            scopes: vec!["moi.x".into()],
        };
        assert!(a.accepts(&active(9)));
        let mut other = active(9);
        other.aud = vec!["API.BBBBBBBBBB".into()];
        other.scope = Some("moi.x".into());
        assert!(!a.accepts(&other), "aud names another dataset");
        other.aud.clear();
        assert!(a.accepts(&other), "no aud: scope decides");
        other.scope = Some("moi.y".into());
        assert!(!a.accepts(&other));
        let mut off = active(9);
        off.active = false;
        assert!(!a.accepts(&off));
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = ResourceSecret::new("0123456789abcdef");
        assert!(!format!("{s:?}").contains("0123"));
        let h = HttpIntrospector::new("http://p.example/", "API.AAAAAAAAAA", s.clone());
        let d = format!("{h:?}");
        assert!(!d.contains("0123") && !d.contains("MDEy"), "{d}");
        assert_eq!(h.introspect_url(), "http://p.example/connect/introspect");
        assert_eq!(
            basic_authorization("API.AAAAAAAAAA", &s),
            format!(
                "Basic {}",
                STANDARD.encode("API.AAAAAAAAAA:0123456789abcdef")
            )
        );
    }

    #[test]
    fn cache_is_expiry_aware() {
        let clock = ManualClock::new(UnixTime(1_000));
        let mut table = Table::default();
        table.answers.insert("long".into(), active(10_000));
        table.answers.insert("short".into(), active(1_010));
        let c = CachingIntrospector::new(table, Arc::new(clock.clone()), CacheConfig::default());
        let calls = |c: &CachingIntrospector<Table>| c.inner().calls.load(Ordering::SeqCst);
        block(async {
            assert!(c.introspect("long").await.unwrap().active);
            assert!(c.introspect("long").await.unwrap().active);
            assert_eq!(calls(&c), 1, "second answer from the cache");
            assert!(c.introspect("short").await.unwrap().active);
            clock.advance(9);
            c.introspect("short").await.unwrap();
            assert_eq!(calls(&c), 2);
            clock.advance(1); // now = exp of "short": never cached beyond it
            c.introspect("short").await.unwrap();
            assert_eq!(calls(&c), 3);
            clock.advance(19); // 29 s after the first "long" answer: TTL 30, still cached
            c.introspect("long").await.unwrap();
            assert_eq!(calls(&c), 3);
            clock.advance(30);
            c.introspect("long").await.unwrap();
            assert_eq!(calls(&c), 4, "TTL over");
            // Negatives: 2 s.
            assert!(!c.introspect("nope").await.unwrap().active);
            assert!(!c.introspect("nope").await.unwrap().active);
            assert_eq!(calls(&c), 5);
            clock.advance(2);
            c.introspect("nope").await.unwrap();
            assert_eq!(calls(&c), 6);
            // Userinfo is cached too.
            c.userinfo("long").await.unwrap().unwrap();
            c.userinfo("long").await.unwrap().unwrap();
            assert_eq!(c.inner().userinfo_calls.load(Ordering::SeqCst), 1);
            assert_eq!(c.userinfo("nope").await.unwrap(), None);
        });
    }

    #[test]
    fn errors_are_not_cached_and_size_is_bounded() {
        let clock = ManualClock::new(UnixTime(0));
        let table = Table {
            fail: true,
            ..Table::default()
        };
        let c = CachingIntrospector::new(
            table,
            Arc::new(clock),
            CacheConfig {
                max_entries: 3,
                ..CacheConfig::default()
            },
        );
        block(async {
            assert!(c.introspect("t").await.is_err());
            assert!(c.introspect("t").await.is_err());
            assert_eq!(c.inner().calls.load(Ordering::SeqCst), 2);
            assert_eq!(c.cached(), 0);
        });
        let mut table = Table::default();
        for i in 0..10 {
            table.answers.insert(format!("t{i}"), active(100));
        }
        let c = CachingIntrospector::new(
            table,
            Arc::new(ManualClock::new(UnixTime(0))),
            CacheConfig {
                max_entries: 3,
                ..CacheConfig::default()
            },
        );
        block(async {
            for i in 0..10 {
                c.introspect(&format!("t{i}")).await.unwrap();
            }
        });
        assert_eq!(c.cached(), 3);
    }
}
