//! The roles the suite plays over HTTP: a browser on the citizen pages, the SP's receiver, the
//! DP (the sandbox DP behind a recorder), and a client on a foreign source address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_dp::introspect::{ResourceSecret, basic_authorization};
use mydata_dp::sandbox::SandboxDp;
use mydata_protocol::catalogue::sandbox_resource_secret;
use mydata_protocol::ids::ResourceId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A locked value, surviving a poisoned lock (a panicking handler must not stop the suite).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One HTTP answer as the browser saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `Location`, if any.
    pub location: Option<String>,
    /// Body text (lossy UTF-8).
    pub body: String,
}

impl Answer {
    /// The `value` of the hidden `csrf` field.
    pub fn csrf(&self) -> Option<String> {
        const MARK: &str = "name=\"csrf\" value=\"";
        let i = self.body.find(MARK)? + MARK.len();
        let j = self.body[i..].find('"')?;
        Some(self.body[i..i + j].to_string())
    }

    /// The page's `data-step` (D46 pages).
    pub fn step(&self) -> Option<&str> {
        const MARK: &str = "data-step=\"";
        let i = self.body.find(MARK)? + MARK.len();
        let j = self.body[i..].find('"')?;
        Some(&self.body[i..i + j])
    }

    /// Whether the page has a form posting to `…/{action}`.
    pub fn has_action(&self, action: &str) -> bool {
        self.body.contains(&format!("/{action}\""))
    }
}

/// A cookie-keeping browser without automatic redirects.
pub struct Browser {
    base: String,
    cookies: HashMap<String, BTreeMap<String, String>>,
    client: awc::Client,
}

impl Browser {
    /// A browser whose relative URLs resolve against `base`.
    pub fn new(base: &str) -> Self {
        Browser {
            base: base.trim_end_matches('/').to_string(),
            cookies: HashMap::new(),
            client: awc::Client::builder()
                .disable_redirects()
                .timeout(std::time::Duration::from_secs(30))
                .finish(),
        }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        }
    }

    async fn send(
        &mut self,
        req: awc::ClientRequest,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Answer, String> {
        let host = req
            .get_uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let jar = self.cookies.entry(host.clone()).or_default();
        let req = if jar.is_empty() {
            req
        } else {
            let v = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req.insert_header(("Cookie", v))
        };
        let url = req.get_uri().to_string();
        let sent = match form {
            Some(f) => req.send_form(&f.to_vec()).await,
            None => req.send().await,
        };
        let mut r = sent.map_err(|e| format!("{url}: {e}"))?;
        for v in r.headers().get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            if let Some((k, val)) = pair.split_once('=') {
                self.cookies
                    .entry(host.clone())
                    .or_default()
                    .insert(k.trim().to_string(), val.trim().to_string());
            }
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r
            .body()
            .limit(4 << 20)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Answer {
            status: r.status().as_u16(),
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// `GET url` (absolute, or relative to the base).
    pub async fn get(&mut self, url: &str) -> Result<Answer, String> {
        let req = self.client.get(self.absolute(url));
        self.send(req, None).await
    }

    /// Posts a form.
    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Result<Answer, String> {
        let req = self.client.post(self.absolute(url));
        self.send(req, Some(form)).await
    }
}

/// One request the SP role received.
#[derive(Debug, Clone)]
pub struct SpHit {
    /// The path.
    pub path: String,
    /// The method.
    pub method: String,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

/// A MyData-API poll the SP role made while an SP-API call was still unanswered (D25: the
/// ticket is live from the moment it is sent).
#[derive(Debug, Clone)]
pub struct Probe {
    /// The `tx_id` of the SP-API call.
    pub tx_id: String,
    /// The status and `Retry-After` of the answer, or why there was none.
    pub answer: Result<(u16, Option<String>), String>,
}

/// The SP role's servers (one per distinct host:port of the profile's SPs).
pub struct SpRole {
    /// Every request received, in order.
    pub hits: Arc<Mutex<Vec<SpHit>>>,
    /// The polls made from inside SP-API calls, in order.
    pub probes: Arc<Mutex<Vec<Probe>>>,
    handles: Vec<ServerHandle>,
}

/// What the SP role's handlers share.
struct SpState {
    hits: Arc<Mutex<Vec<SpHit>>>,
    probes: Arc<Mutex<Vec<Probe>>>,
    platform_url: String,
}

/// How long a poll from inside the SP-API call may take: well below the platform's own
/// SP-API timeout (30 s for the reference server), so that a platform that cannot answer the
/// poll before the acknowledgement still gets one.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `permission_ticket` and `tx_id` of an SP-API body that delivers a `secret_key`.
fn delivered_ticket(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("secret_key")?;
    let ticket = v.get("permission_ticket")?.as_str()?;
    let tx_id = v.get("tx_id")?.as_str()?;
    Some((ticket.to_string(), tx_id.to_string()))
}

/// `GET /service/data` with `ticket` and `tx_id`: the status and `Retry-After`.
async fn poll_once(
    platform_url: &str,
    ticket: &str,
    tx_id: &str,
) -> Result<(u16, Option<String>), String> {
    let r = awc::Client::builder()
        .disable_redirects()
        .timeout(PROBE_TIMEOUT)
        .finish()
        .get(format!("{platform_url}/service/data"))
        .insert_header(("accept", "application/jwe"))
        .insert_header(("permission_ticket", ticket))
        .insert_header(("tx_id", tx_id))
        .send()
        .await
        .map_err(|e| format!("GET /service/data during the SP-API call: {e}"))?;
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((r.status().as_u16(), retry_after))
}

async fn sp_handler(state: web::Data<SpState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    lock(&state.hits).push(SpHit {
        at: Instant::now(),
        path: req.path().to_string(),
        method: req.method().to_string(),
        body: body.to_vec(),
    });
    if req.method() == actix_web::http::Method::POST {
        // An SP-API call with a ticket: poll with it before acknowledging (D25).
        if let Some((ticket, tx_id)) = delivered_ticket(&body) {
            let answer = poll_once(&state.platform_url, &ticket, &tx_id).await;
            lock(&state.probes).push(Probe { tx_id, answer });
        }
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body("<!DOCTYPE html><title>SP</title><p>conformance suite: SP return page</p>")
    }
}

impl SpRole {
    /// Listens on each address (answers 200 to every POST, a small page to every GET). Before
    /// answering an SP-API call that delivers a `secret_key`, polls the MyData-API of the
    /// platform at `platform_url` once with its ticket and records the answer in `probes`.
    pub fn start(addrs: &[SocketAddr], platform_url: &str) -> Result<Self, String> {
        let hits: Arc<Mutex<Vec<SpHit>>> = Arc::new(Mutex::new(Vec::new()));
        let probes: Arc<Mutex<Vec<Probe>>> = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(SpState {
            hits: hits.clone(),
            probes: probes.clone(),
            platform_url: platform_url.trim_end_matches('/').to_string(),
        });
        let mut handles = Vec::new();
        let mut seen = Vec::new();
        for a in addrs {
            if seen.contains(a) {
                continue;
            }
            seen.push(*a);
            let st = state.clone();
            let srv = HttpServer::new(move || {
                App::new()
                    .app_data(st.clone())
                    .app_data(web::PayloadConfig::new(1 << 20))
                    .default_service(web::to(sp_handler))
            })
            .workers(1)
            .disable_signals()
            .bind(a)
            .map_err(|e| format!("SP role: listen on {a}: {e}"))?
            .run();
            handles.push(srv.handle());
            actix_web::rt::spawn(srv);
        }
        Ok(SpRole {
            hits,
            probes,
            handles,
        })
    }

    /// Stops the servers.
    pub async fn stop(self) {
        for h in self.handles {
            h.stop(false).await;
        }
    }
}

/// One call the DP role received.
#[derive(Debug, Clone)]
pub struct DpCall {
    /// The dataset.
    pub resource_id: String,
    /// When it arrived.
    pub at: Instant,
    /// When it was answered.
    pub answered: Instant,
    /// Whether it was a heartbeat (`?heartbeat=true`).
    pub heartbeat: bool,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `transaction_uid` query parameter.
    pub transaction_uid: Option<String>,
    /// What the platform's introspection said of the Bearer token (`None`: not asked, or no
    /// answer).
    pub active: Option<bool>,
    /// The DP's status.
    pub status: u16,
    /// The DP's `Retry-After` (seconds).
    pub retry_after: Option<u64>,
}

struct DpState {
    dp: Arc<SandboxDp>,
    platform_url: String,
    calls: Arc<Mutex<Vec<DpCall>>>,
}

/// The DP role: the sandbox DP behind a recorder.
pub struct DpRole {
    /// Every call, in order.
    pub calls: Arc<Mutex<Vec<DpCall>>>,
    handle: ServerHandle,
}

async fn introspect(platform_url: &str, resource_id: &str, token: &str) -> Option<bool> {
    let id: ResourceId = resource_id.parse().ok()?;
    let auth = basic_authorization(
        resource_id,
        &ResourceSecret::new(sandbox_resource_secret(&id)),
    );
    let mut r = awc::Client::default()
        .post(format!("{platform_url}/connect/introspect"))
        .insert_header(("Authorization", auth))
        .timeout(std::time::Duration::from_secs(10))
        .send_form(&[("token", token)])
        .await
        .ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    v.get("active").and_then(|a| a.as_bool())
}

async fn dp_handler(state: web::Data<DpState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let at = Instant::now();
    let id = req
        .path()
        .strip_prefix("/dp/")
        .unwrap_or_default()
        .to_string();
    let query: Vec<(String, String)> = mydata_sp::callback::parse_query(req.query_string());
    let heartbeat = query.iter().any(|(k, v)| k == "heartbeat" && v == "true");
    let transaction_uid = query
        .iter()
        .find(|(k, _)| k == "transaction_uid")
        .map(|(_, v)| v.clone());
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let active = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        Some(token) if !heartbeat => introspect(&state.platform_url, &id, token.trim()).await,
        _ => None,
    };
    let resp = match state.dp.service(&id) {
        Some(service) => mydata_dp::actix::respond(service, &req, &body).await,
        None => HttpResponse::NotFound().finish(),
    };
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    lock(&state.calls).push(DpCall {
        resource_id: id,
        at,
        answered: Instant::now(),
        heartbeat,
        authorization,
        transaction_uid,
        active,
        status: resp.status().as_u16(),
        retry_after,
    });
    resp
}

impl DpRole {
    /// Serves `dp` on `listen` under `/dp/{resource_id}`, recording every call and asking the
    /// platform at `platform_url` to introspect each Bearer token.
    pub fn start(dp: SandboxDp, listen: SocketAddr, platform_url: &str) -> Result<Self, String> {
        let calls: Arc<Mutex<Vec<DpCall>>> = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(DpState {
            dp: Arc::new(dp),
            platform_url: platform_url.trim_end_matches('/').to_string(),
            calls: calls.clone(),
        });
        let srv = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(dp_handler))
        })
        .workers(2)
        .disable_signals()
        .bind(listen)
        .map_err(|e| format!("DP role: listen on {listen}: {e}"))?
        .run();
        let handle = srv.handle();
        actix_web::rt::spawn(srv);
        Ok(DpRole { calls, handle })
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<DpCall> {
        lock(&self.calls).clone()
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// `GET /service/data` with `ticket` over a socket bound to `source`; the status code.
pub async fn get_data_from(
    platform_url: &str,
    source: IpAddr,
    ticket: &str,
) -> Result<u16, String> {
    let auth = platform_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let addr = tokio::net::lookup_host(auth.as_str())
        .await
        .map_err(|e| format!("{auth}: {e}"))?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| format!("{auth}: no address of the family of {source}"))?;
    let sock = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let mut s = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr} from {source}: {e}"))?;
    let req = format!(
        "GET /service/data HTTP/1.1\r\nHost: {auth}\r\npermission_ticket: {ticket}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out));
    read.await
        .map_err(|_| "no answer within 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    text.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| {
        format!(
            "not an HTTP answer: {:?}",
            text.lines().next().unwrap_or("")
        )
    })
}
