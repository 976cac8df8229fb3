//! The platform's side toward the DP: tokens the suite issues, and the authorization server the
//! DP asks about them (`POST /connect/introspect`, `GET /connect/userinfo`, spec protocol.md
//! §10), recording every request the DP makes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::profile::{DatasetProfile, Person, Profile};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the Unix epoch (the suite is an I/O shell: it reads the system clock).
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How the suite answers the introspection of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// As the platform does (spec §10.2).
    Normal,
    /// Never issued: `{"active":false}`.
    Unknown,
    /// Active, with the dataset's scope, but `aud` naming another dataset.
    ForeignAud(String),
    /// Active, without `aud`, with another dataset's scope only.
    ForeignScope(String),
}

/// A token the suite issued.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    resource_id: String,
    scope: String,
    person: Person,
    uid: String,
    iat: i64,
    exp: i64,
    revoked: bool,
    shape: Shape,
}

/// One request the DP made to `/connect/introspect`.
#[derive(Debug, Clone)]
pub(crate) struct IntrospectHit {
    /// The token asked about (from the form body, else the query).
    pub token: Option<String>,
    /// The `resource_id` whose Basic credentials were right, if any.
    pub authenticated: Option<String>,
    /// POST, `application/x-www-form-urlencoded`, `token` in the body.
    pub form_post: bool,
    /// What was wrong with the request, for the report.
    pub problem: Option<String>,
}

/// One request the DP made to `/connect/userinfo`.
#[derive(Debug, Clone)]
pub(crate) struct UserinfoHit {
    /// The token it carried (`Authorization: Bearer`, else an `access_token` query item).
    pub token: Option<String>,
    /// Whether the token came in `Authorization: Bearer`.
    pub in_header: bool,
}

struct State {
    secrets: HashMap<String, String>,
    client_id: String,
    tokens: Mutex<HashMap<String, Issued>>,
    introspections: Mutex<Vec<IntrospectHit>>,
    userinfos: Mutex<Vec<UserinfoHit>>,
}

/// The running authorization server.
pub(crate) struct PlatformRole {
    state: Arc<State>,
    handle: ServerHandle,
}

/// A fresh opaque token: 32 random bytes, base64url, 43 characters (spec §10.1).
fn fresh_token() -> String {
    let mut b = [0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: a token that still differs per call (the suite is not a security
        // boundary; the DP under test only needs distinct opaque strings).
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b[..16].copy_from_slice(&n.to_le_bytes());
    }
    URL_SAFE_NO_PAD.encode(b)
}

/// The opaque, stable `sub` of a person.
fn sub_of(id: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.to_ascii_uppercase().hash(&mut h);
    format!("conformance-{:016x}", h.finish())
}

/// `NID`, `ARC` or `BAN`, as the platform names the kind of an ID (`Pid::uid_type`); an ID that
/// does not parse is taken as a resident certificate number.
pub(crate) fn uid_type(id: &str) -> &'static str {
    use mydata_protocol::flow::{ApplicationMode, Pid};
    Pid::parse_for(ApplicationMode::PersonOrLegalPerson, id.trim()).map_or("ARC", |p| p.uid_type())
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_owned())
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    mydata_sp::callback::parse_query(text)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

impl State {
    /// The introspection answer for `token` asked by `resource_id`.
    fn answer(&self, token: &str, resource_id: &str) -> Value {
        let tokens = lock(&self.tokens);
        let Some(t) = tokens.get(token) else {
            return json!({"active": false});
        };
        let live = !t.revoked && now() < t.exp;
        let mut a = Map::new();
        a.insert("active".into(), Value::Bool(true));
        match &t.shape {
            Shape::Unknown => return json!({"active": false}),
            Shape::Normal => {
                if !live || t.resource_id != resource_id {
                    return json!({"active": false});
                }
                a.insert("scope".into(), Value::String(t.scope.clone()));
                a.insert("aud".into(), Value::String(t.resource_id.clone()));
            }
            Shape::ForeignAud(other) => {
                a.insert("scope".into(), Value::String(t.scope.clone()));
                a.insert("aud".into(), Value::String(other.clone()));
            }
            Shape::ForeignScope(scope) => {
                a.insert("scope".into(), Value::String(scope.clone()));
            }
        }
        a.insert("client_id".into(), Value::String(self.client_id.clone()));
        a.insert("token_type".into(), Value::String("Bearer".into()));
        a.insert("sub".into(), Value::String(sub_of(&t.person.id)));
        a.insert(
            "uid".into(),
            Value::String(t.person.id.to_ascii_uppercase()),
        );
        a.insert("iat".into(), Value::from(t.iat));
        a.insert("exp".into(), Value::from(t.exp));
        a.insert("transaction_uid".into(), Value::String(t.uid.clone()));
        Value::Object(a)
    }

    /// The userinfo claims for `token`, when it is active.
    fn claims(&self, token: &str) -> Option<Value> {
        let tokens = lock(&self.tokens);
        let t = tokens.get(token)?;
        // Userinfo authenticates no dataset: every token the suite calls active has claims
        // (also those answered active for another dataset), so that only the DP's own checks
        // of `aud` and scope refuse them.
        if t.revoked || now() >= t.exp || t.shape == Shape::Unknown {
            return None;
        }
        let p = &t.person;
        let mut c = Map::new();
        c.insert("sub".into(), Value::String(sub_of(&p.id)));
        c.insert("uid".into(), Value::String(p.id.to_ascii_uppercase()));
        c.insert("uid_type".into(), Value::String(uid_type(&p.id).into()));
        for (k, v) in [
            ("birthdate", &p.birth_date),
            ("name", &p.name),
            ("email", &p.email),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                c.insert(k.into(), Value::String(v.clone()));
            }
        }
        Some(Value::Object(c))
    }
}

async fn introspect(st: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let creds = basic_credentials(&req);
    let authenticated = creds
        .as_ref()
        .filter(|(id, secret)| st.secrets.get(id).is_some_and(|s| s == secret))
        .map(|(id, _)| id.clone());
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let in_body = form_value(&body, "token");
    let in_query = form_value(req.query_string().as_bytes(), "token");
    let form_post = req.method() == actix_web::http::Method::POST && is_form && in_body.is_some();
    let problem = if authenticated.is_none() {
        Some(match creds {
            None => "no Basic credentials".to_owned(),
            Some((id, _)) => format!("wrong Basic credentials (resource_id {id})"),
        })
    } else if !form_post {
        Some(format!(
            "{} with Content-Type {:?}, token {}",
            req.method(),
            req.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)"),
            if in_body.is_some() {
                "in the body"
            } else if in_query.is_some() {
                "in the query string"
            } else {
                "absent"
            }
        ))
    } else {
        None
    };
    let token = in_body.or(in_query);
    lock(&st.introspections).push(IntrospectHit {
        token: token.clone(),
        authenticated: authenticated.clone(),
        form_post,
        problem,
    });
    let Some(resource_id) = authenticated else {
        return HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", r#"Basic realm="mydata""#))
            .json(json!({"error": "invalid_client"}));
    };
    // Lenient about the request's form (a token in the query is answered too), so that
    // `dp.introspect.request` alone reports it.
    let Some(token) = token else {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_request"}));
    };
    HttpResponse::Ok().json(st.answer(&token, &resource_id))
}

async fn userinfo(st: web::Data<State>, req: HttpRequest) -> HttpResponse {
    // Lenient about where the token is (an `access_token` query item is answered too), so
    // that `dp.userinfo.bearer` alone reports it.
    let header = bearer(&req);
    let in_header = header.is_some();
    let token = header.or_else(|| form_value(req.query_string().as_bytes(), "access_token"));
    lock(&st.userinfos).push(UserinfoHit {
        token: token.clone(),
        in_header,
    });
    match token.and_then(|t| st.claims(&t)) {
        Some(c) => HttpResponse::Ok().json(c),
        None => HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", r#"Bearer error="invalid_token""#))
            .json(json!({"error": "invalid_token"})),
    }
}

async fn metadata(req: HttpRequest) -> HttpResponse {
    let base = format!(
        "{}://{}",
        req.connection_info().scheme(),
        req.connection_info().host()
    );
    HttpResponse::Ok().json(json!({
        "issuer": base,
        "introspection_endpoint": format!("{base}/connect/introspect"),
        "userinfo_endpoint": format!("{base}/connect/userinfo"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "response_types_supported": [],
        "grant_types_supported": [],
    }))
}

impl PlatformRole {
    /// Starts the authorization server on `listen` (on the current actix system).
    pub(crate) fn start(profile: &Profile, listener: TcpListener) -> Result<Self, String> {
        let listen = listener
            .local_addr()
            .map_err(|e| format!("platform role: {e}"))?;
        let state = Arc::new(State {
            secrets: profile
                .datasets()
                .map(|d| (d.resource_id.clone(), d.resource_secret.clone()))
                .collect(),
            client_id: profile.client_id.clone(),
            tokens: Mutex::new(HashMap::new()),
            introspections: Mutex::new(Vec::new()),
            userinfos: Mutex::new(Vec::new()),
        });
        let data = web::Data::from(state.clone());
        let srv = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024))
                .route("/connect/introspect", web::to(introspect))
                .route("/connect/userinfo", web::to(userinfo))
                .route(
                    "/.well-known/oauth-authorization-server",
                    web::get().to(metadata),
                )
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .map_err(|e| format!("platform role: listen on {listen}: {e}"))?
        .run();
        let handle = srv.handle();
        actix_web::rt::spawn(srv);
        Ok(PlatformRole { state, handle })
    }

    /// Issues a token for `person` and the call series `uid` of dataset `d`, active for
    /// `lifetime` seconds, answered as `shape`.
    pub(crate) fn issue(
        &self,
        d: &DatasetProfile,
        person: &Person,
        uid: &str,
        lifetime: i64,
        shape: Shape,
    ) -> String {
        let token = fresh_token();
        let iat = now();
        lock(&self.state.tokens).insert(
            token.clone(),
            Issued {
                resource_id: d.resource_id.clone(),
                scope: d
                    .scopes
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("{}.read", d.resource_id.to_ascii_lowercase())),
                person: person.clone(),
                uid: uid.to_owned(),
                iat,
                exp: iat.saturating_add(lifetime),
                revoked: false,
                shape,
            },
        );
        token
    }

    /// The `exp` of a token the suite issued.
    pub(crate) fn exp_of(&self, token: &str) -> Option<i64> {
        lock(&self.state.tokens).get(token).map(|t| t.exp)
    }

    /// Ends a token before its expiry (as the platform does when the transaction's data is
    /// deleted or its call series ends).
    pub(crate) fn revoke(&self, token: &str) {
        if let Some(t) = lock(&self.state.tokens).get_mut(token) {
            t.revoked = true;
        }
    }

    /// The introspection requests so far.
    pub(crate) fn introspections(&self) -> Vec<IntrospectHit> {
        lock(&self.state.introspections).clone()
    }

    /// The userinfo requests so far.
    pub(crate) fn userinfos(&self) -> Vec<UserinfoHit> {
        lock(&self.state.userinfos).clone()
    }

    /// Stops the server.
    pub(crate) async fn stop(self) {
        self.handle.stop(false).await;
    }
}
