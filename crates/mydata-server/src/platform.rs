//! The platform's state and operations shared by the HTTP layer, the CLI and background tasks.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mydata_protocol::catalogue::{Catalogue, sandbox_resource_secret};
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::TrustedProxies;
use std::net::IpAddr;

use mydata_protocol::ids::{CbcIv, ClientId, ClientSecret, PermissionTicket, ResourceId};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::template::{self, Template};
use serde::{Deserialize, Serialize};

use crate::auth::{
    AuthServer, CitizenClaims, DEFAULT_CLAIMS, IssuedAccessToken, KNOWN_CLAIMS, ResourceGrantInfo,
    TokenRequest,
};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{ServerError, ServerResult};
use crate::packages::Packages;
use crate::secrets::MasterKey;
use crate::sources::{AllowedSource, SourceIndex};
use crate::storage::{DpMethod, DpRecord, SpRecord, Store};
use crate::trust::{Anchors, DpTrust};

/// The sandbox catalogue, compiled in so that `mydata serve --sandbox` works from any directory.
pub const SANDBOX_CATALOGUE: &str = include_str!("../../../fixtures/catalogue.json");

pub use crate::trust::SANDBOX_ROOT_CA;

/// The sandbox SP registrations, compiled in (fixtures/sandbox.json).
pub const SANDBOX_SPS: &str = include_str!("../../../fixtures/sandbox.json");

/// The SP base URL written in `fixtures/sandbox.json`, replaced by `sandbox_sp_url`.
const SANDBOX_SP_BASE: &str = "http://127.0.0.1:8090";

/// A new SP service registration, as the operator gives it.
#[derive(Debug, Clone, Default)]
pub struct NewSp {
    /// The id (`None` = generate).
    pub client_id: Option<ClientId>,
    /// Service name.
    pub name: String,
    /// Purpose of use, shown to the citizen on the consent page.
    pub purpose: String,
    /// Registered return URL.
    pub return_url: String,
    /// SP-API URL.
    pub sp_api_url: String,
    /// `client_secret` (`None` = generate).
    pub client_secret: Option<ClientSecret>,
    /// `cbc_iv` (`None` = generate).
    pub cbc_iv: Option<CbcIv>,
    /// SP-API key: `None` = generate, `Some("")` = none.
    pub api_key: Option<String>,
    /// Source IPs allowed on the MyData-API: addresses or CIDR prefixes (spec D26).
    pub allowed_ips: Vec<AllowedSource>,
    /// SHA-256 fingerprints (hex) of the client certificates of which the SP must present one
    /// on the MyData-API (spec D50); empty = none asked. Needs a listener with `tls_client_ca`.
    pub client_cert_sha256: Vec<String>,
    /// Datasets the service may request.
    pub resources: Vec<ResourceId>,
    /// JWE mode.
    pub jwe_mode: JweMode,
    /// Packaging mode.
    pub packaging_mode: PackagingMode,
    /// Why the service needs more than five datasets (brief §4, D3): required beyond five,
    /// written to the log with the registration.
    pub justification: Option<String>,
    /// The CA bundle (PEM) the SP-API's certificate must chain to, alone (D49); `None` = the
    /// system roots and `tls_ca_file`.
    pub tls_ca: Option<String>,
}

/// The most datasets a service is registered for without a justification (brief §4, D3).
pub const MAX_DATASETS_UNJUSTIFIED: usize = 5;

/// The credentials of a registered SP, shown once at registration.
#[derive(Debug, Clone, Serialize)]
pub struct SpCredentials {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// `cbc_iv`.
    pub cbc_iv: String,
    /// SP-API key, if any.
    pub api_key: Option<String>,
}

/// An SP's secrets, opened for use.
#[derive(Clone)]
pub struct SpSecrets {
    /// `client_secret`.
    pub client_secret: ClientSecret,
    /// `cbc_iv`.
    pub cbc_iv: CbcIv,
    /// SP-API key, if any.
    pub api_key: Option<String>,
}

#[derive(Deserialize)]
struct SandboxFile {
    sps: Vec<SandboxSp>,
}

#[derive(Deserialize)]
struct SandboxSp {
    client_id: ClientId,
    name: String,
    #[serde(default)]
    purpose: String,
    client_secret: ClientSecret,
    cbc_iv: CbcIv,
    api_key: String,
    return_url: String,
    sp_api_url: String,
    allowed_ips: Vec<AllowedSource>,
    #[serde(default)]
    client_cert_sha256: Vec<String>,
    resources: String,
    jwe_mode: JweMode,
    packaging_mode: PackagingMode,
}

/// The platform.
pub struct Platform {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// The authorization server.
    pub auth: AuthServer,
    /// The clock.
    pub clock: SharedClock,
    /// The master key.
    pub key: MasterKey,
    /// Configuration.
    pub config: Config,
    /// Source IP → SPs that registered it, for the MyData-API (`engine::data`).
    pub sp_sources: SourceIndex,
    /// What DP packages must chain to (spec D35), reloaded when the files change.
    pub dp_trust: DpTrust,
    /// The reverse proxies whose `X-Forwarded-For` is believed (spec D26, `trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// SP packages waiting for their SP (memory, then files).
    pub packages: Packages,
    /// The Prometheus metrics (`GET /metrics`; counting off with `metrics = false`).
    pub metrics: crate::observe::Metrics,
    /// TLS of outgoing calls: `tls_ca_file`, the client certificate, the sandbox's plain HTTP
    /// (D49).
    pub outbound: crate::engine::outbound::Outbound,
    /// The DP endpoints' heartbeat state (spec §9.4, D30), kept by
    /// [`crate::engine::heartbeat`] and read by §5.3 step 10, `/readyz` and `/metrics`.
    pub dp_health: crate::dp_health::DpHealth,
    /// SP secrets opened, by `client_id`, with the sealed values they were opened from.
    opened: Mutex<HashMap<String, (SealedSecrets, SpSecrets)>>,
    /// Transaction locks, striped by id ([`Platform::tx_lock`]).
    tx_locks: Box<[Mutex<()>]>,
    /// Transactions whose package is being served right now ([`Platform::lease_delivery`]).
    delivering: Arc<Mutex<HashSet<String>>>,
    /// Transactions whose DPs are being called ([`Platform::fetches_running`]).
    fetching: Arc<AtomicUsize>,
}

/// Counts one transaction's DP calls as running while it lives.
#[derive(Debug)]
pub struct FetchRunning(Arc<AtomicUsize>);

impl Drop for FetchRunning {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many stripes [`Platform::tx_lock`] spreads transactions over.
const TX_LOCK_STRIPES: usize = 64;

/// The right to serve one transaction's package: one poll at a time holds it, and dropping it
/// frees the transaction for the next poll (spec D25).
pub struct DeliveryLease {
    id: String,
    set: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for DeliveryLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryLease")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for DeliveryLease {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// The identity-method codes of a dataset registration, checked and in canonical form: at least
/// one, each a known code (`CER`, `FIC`, …, `OTP`; any case), none twice.
fn identity_codes(given: &[String]) -> ServerResult<Vec<String>> {
    use mydata_protocol::codes::IdentityMethod;
    let known = || {
        IdentityMethod::ALL
            .iter()
            .map(|m| m.code())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if given.is_empty() {
        return Err(ServerError::Invalid(format!(
            "a dataset needs at least one identity method (one of {})",
            known()
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for g in given {
        let Some(m) = IdentityMethod::ALL
            .into_iter()
            .find(|m| m.code().eq_ignore_ascii_case(g.trim()))
        else {
            return Err(ServerError::Invalid(format!(
                "unknown identity method {g:?} (one of {})",
                known()
            )));
        };
        if !out.iter().any(|c| c == m.code()) {
            out.push(m.code().to_string());
        }
    }
    Ok(out)
}

/// The sealed secrets of an SP record, as stored.
type SealedSecrets = (String, String, Option<String>);

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A new dataset registration, as the operator gives it.
#[derive(Debug, Clone)]
pub struct NewDp {
    /// The id (`None` = generate).
    pub resource_id: Option<ResourceId>,
    /// Name.
    pub name: String,
    /// DP agency.
    pub provider: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The `resource_secret` (`None` = generate 16 characters).
    pub secret: Option<String>,
    /// DP-API endpoint.
    pub endpoint: String,
    /// DP-API method.
    pub method: DpMethod,
    /// Claims it may see (empty = the default set).
    pub claims: Vec<String>,
    /// Identity methods.
    pub identity_methods: Vec<String>,
    /// DP-API request template (D28); `None` = the plain call.
    pub template: Option<Template>,
    /// The CA bundle (PEM) the DP-API's certificate must chain to, alone (D49); `None` = the
    /// system roots and `tls_ca_file`.
    pub tls_ca: Option<String>,
}

impl Platform {
    /// Builds the platform over `store`: registers every dataset with the authorization server
    /// and reloads live tokens.
    pub fn new(
        store: Arc<dyn Store>,
        key: MasterKey,
        clock: SharedClock,
        config: Config,
    ) -> ServerResult<Self> {
        let auth = AuthServer::new(key.clone());
        for dp in store.list_dps()? {
            auth.register_resource(&grant_info(&dp))?;
        }
        for t in store.live_tokens(clock.now())? {
            auth.import(&t)?;
        }
        let sp_sources = SourceIndex::from_sps(&store.list_sps()?);
        let dp_trust = DpTrust::load(config.sandbox, &config.dp_trust_anchors)?;
        let trusted_proxies = TrustedProxies::parse(
            config.trusted_proxies.iter().map(String::as_str),
        )
        .map_err(|bad| {
            ServerError::Config(format!(
                "trusted_proxies: {bad:?} is neither an IP address nor a CIDR prefix"
            ))
        })?;
        let packages = Packages::new(
            config.data_dir.clone(),
            config.package_memory_mb.saturating_mul(1 << 20),
        );
        let metrics = crate::observe::Metrics::new(config.metrics);
        let outbound = crate::engine::outbound::Outbound::from_config(&config)?;
        let config_interval = config.heartbeat_interval_secs;
        Ok(Platform {
            outbound,
            store,
            auth,
            clock,
            key,
            config,
            sp_sources,
            dp_trust,
            trusted_proxies,
            packages,
            opened: Mutex::new(HashMap::new()),
            tx_locks: (0..TX_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            delivering: Arc::new(Mutex::new(HashSet::new())),
            fetching: Arc::new(AtomicUsize::new(0)),
            metrics,
            dp_health: crate::dp_health::DpHealth::new(config_interval),
        })
    }

    /// The platform with plain `http://` SP-API and DP endpoints allowed or refused whatever
    /// the sandbox says ([`Outbound::with_plain_http`](crate::engine::outbound::Outbound::with_plain_http)):
    /// for tests of production rules against loopback HTTP peers.
    pub fn with_plain_http(mut self, allowed: bool) -> Self {
        self.outbound = self.outbound.with_plain_http(allowed);
        self
    }

    /// How many transactions have DP calls or packaging running now (every series ended and
    /// its outcome written or dropped when 0).
    pub fn fetches_running(&self) -> usize {
        self.fetching.load(Ordering::Acquire)
    }

    /// Marks one transaction's DP calls as running until the guard drops.
    pub(crate) fn fetch_started(&self) -> FetchRunning {
        self.fetching.fetch_add(1, Ordering::AcqRel);
        FetchRunning(self.fetching.clone())
    }

    /// The lock of transaction `id`. Whatever ends or deletes a transaction (the purge,
    /// `engine::forget`) and whatever writes its DP results or its
    /// package holds it, so a purged transaction gets nothing written after its purge (D37).
    /// Held only for in-memory work and single writes, never across an await.
    pub fn tx_lock(&self, id: &str) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        let i = (h.finish() as usize) % self.tx_locks.len();
        self.tx_locks[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The right to serve transaction `id`'s package, unless another poll is serving it now.
    pub fn lease_delivery(&self, id: &str) -> Option<DeliveryLease> {
        let fresh = self
            .delivering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
        fresh.then(|| DeliveryLease {
            id: id.to_string(),
            set: self.delivering.clone(),
        })
    }

    /// Rebuilds the MyData-API source index from storage when it is older than
    /// [`REGISTRATION_TTL`](crate::storage::hot::REGISTRATION_TTL), so that SPs registered,
    /// changed or removed by another process are followed within that time (spec D26, D47).
    fn refresh_sources(&self) -> ServerResult<()> {
        if self.sp_sources.claim_refresh() {
            self.sp_sources.replace(&self.store.list_sps()?);
        }
        Ok(())
    }

    /// Whether some SP registered `ip` as a MyData-API source (storage followed within
    /// [`REGISTRATION_TTL`](crate::storage::hot::REGISTRATION_TTL)).
    pub fn source_registered(&self, ip: IpAddr) -> ServerResult<bool> {
        self.refresh_sources()?;
        Ok(self.sp_sources.is_registered(ip))
    }

    /// The SPs that registered `ip` (storage followed within
    /// [`REGISTRATION_TTL`](crate::storage::hot::REGISTRATION_TTL)).
    pub fn source_clients(&self, ip: IpAddr) -> ServerResult<Vec<String>> {
        self.refresh_sources()?;
        Ok(self.sp_sources.clients(ip))
    }

    /// Makes the authorization server know `dp` as stored: a dataset registered or changed by
    /// another process on the same database (`mydata dp register`) is taken up before its first
    /// token is issued (spec D47).
    pub fn sync_dataset(&self, dp: &DpRecord) -> ServerResult<()> {
        if self.auth.sync_resource(&grant_info(dp))? {
            log::info!(
                "dataset {}: registration taken up from storage",
                dp.resource_id
            );
        }
        Ok(())
    }

    /// The current time.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Registers a dataset; returns the record and the `resource_secret` (shown once).
    pub fn register_dp(&self, new: NewDp) -> ServerResult<(DpRecord, String)> {
        let resource_id = match new.resource_id {
            Some(id) => id,
            None => ResourceId::generate()?,
        };
        let secret = match new.secret {
            Some(s) => {
                if s.len() < 16 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(ServerError::Invalid(
                        "resource_secret: at least 16 characters [A-Za-z0-9]".into(),
                    ));
                }
                s
            }
            None => mydata_protocol::ids::ClientSecret::generate()?
                .as_str()
                .to_string(),
        };
        if new.scopes.is_empty() {
            return Err(ServerError::Invalid(
                "a dataset needs at least one scope".into(),
            ));
        }
        let identity_methods = identity_codes(&new.identity_methods)?;
        let claims = if new.claims.is_empty() {
            DEFAULT_CLAIMS.iter().map(|s| s.to_string()).collect()
        } else {
            new.claims
        };
        if let Some(c) = claims.iter().find(|c| !KNOWN_CLAIMS.contains(&c.as_str())) {
            return Err(ServerError::Invalid(format!("unknown claim {c}")));
        }
        let endpoint = url::Url::parse(&new.endpoint)
            .map_err(|e| ServerError::Invalid(format!("endpoint: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(ServerError::Invalid("endpoint: http or https only".into()));
        }
        self.check_outbound("endpoint", &new.endpoint, new.tls_ca.as_deref())?;
        if endpoint.fragment().is_some() {
            return Err(ServerError::Invalid("endpoint: no #fragment".into()));
        }
        if new.endpoint.parse::<awc::http::Uri>().is_err() {
            return Err(ServerError::Invalid(
                "endpoint: not a valid request URI (percent-encode spaces and non-ASCII)".into(),
            ));
        }
        if let Some(t) = &new.template {
            t.check_method(match new.method {
                DpMethod::Get => template::Method::Get,
                DpMethod::Post => template::Method::Post,
            })
            .map_err(|e| ServerError::Invalid(e.to_string()))?;
            // The template sends the DP only what the dataset may see at userinfo.
            if let Some(c) = t
                .claims()
                .into_iter()
                .find(|c| !claims.iter().any(|k| k == c))
            {
                return Err(ServerError::Invalid(format!(
                    "the template uses claim {c}, which the dataset may not see (add --claim {c})"
                )));
            }
        }
        let record = DpRecord {
            tls_ca: new.tls_ca,
            secret_hash: self
                .auth
                .hash_resource_secret(resource_id.as_str(), &secret),
            resource_id: resource_id.as_str().to_string(),
            name: new.name,
            provider: new.provider,
            scopes: new.scopes,
            endpoint: new.endpoint,
            method: new.method,
            claims,
            identity_methods,
            status: "active".into(),
            template: new.template,
        };
        self.store.insert_dp(&record, self.now())?;
        self.auth.register_resource(&grant_info(&record))?;
        Ok((record, secret))
    }

    /// Registers every catalogue dataset with its public sandbox secret and the sandbox DP as
    /// endpoint (skipping those already registered).
    pub fn load_sandbox(&self) -> ServerResult<usize> {
        self.load_sandbox_at(&self.config.sandbox_dp_url)
    }

    /// [`Platform::load_sandbox`] with the sandbox DP at `dp_base` instead of the configured URL.
    pub fn load_sandbox_at(&self, dp_base: &str) -> ServerResult<usize> {
        let catalogue = Catalogue::from_json(SANDBOX_CATALOGUE)?;
        let base = dp_base.trim_end_matches('/');
        let mut added = 0;
        for d in catalogue.datasets {
            if self.store.get_dp(d.resource_id.as_str())?.is_some() {
                continue;
            }
            self.register_dp(NewDp {
                tls_ca: None,
                secret: Some(sandbox_resource_secret(&d.resource_id)),
                endpoint: format!("{base}/dp/{}", d.resource_id),
                resource_id: Some(d.resource_id),
                name: d.name,
                provider: d.provider,
                scopes: vec![d.scope.as_str().to_string()],
                method: DpMethod::Get,
                claims: KNOWN_CLAIMS.iter().map(|s| s.to_string()).collect(),
                identity_methods: d.identity_methods.iter().map(|m| m.to_string()).collect(),
                template: None,
            })?;
            added += 1;
        }
        added += self.load_sandbox_sps()?;
        Ok(added)
    }

    /// A registration's outgoing URL and pinned CA, as the calls will need them (D49): https
    /// (plain http only in the sandbox), and a CA bundle that parses.
    fn check_outbound(&self, what: &str, url: &str, tls_ca: Option<&str>) -> ServerResult<()> {
        crate::engine::outbound::check_scheme(self.outbound.plain_http(), what, url)
            .map_err(ServerError::Invalid)?;
        if let Some(pem) = tls_ca {
            crate::engine::outbound::check_pinned_ca("tls_ca", pem)
                .map_err(ServerError::Invalid)?;
        }
        Ok(())
    }

    /// Registers an SP service; returns the record and its credentials (shown once).
    ///
    /// Refused (D3, D36): a dataset listed twice, more than [`MAX_DATASETS_UNJUSTIFIED`] datasets
    /// without a justification, and datasets that share no identity method (every request of
    /// the full set would end 403).
    pub fn register_sp(&self, new: NewSp) -> ServerResult<(SpRecord, SpCredentials)> {
        let mut seen = HashSet::new();
        if let Some(r) = new.resources.iter().find(|r| !seen.insert(r.as_str())) {
            return Err(ServerError::Invalid(format!("dataset {r} is listed twice")));
        }
        let justification = new
            .justification
            .as_deref()
            .map(str::trim)
            .filter(|j| !j.is_empty())
            .map(str::to_string);
        if new.resources.len() > MAX_DATASETS_UNJUSTIFIED && justification.is_none() {
            return Err(ServerError::Invalid(format!(
                "{} datasets: a service has at most {MAX_DATASETS_UNJUSTIFIED} unless the SP \
                 justifies more (--justification)",
                new.resources.len()
            )));
        }
        let mut common: Option<Vec<String>> = None;
        for r in &new.resources {
            let Some(dp) = self.store.get_dp(r.as_str())? else {
                return Err(ServerError::Invalid(format!("unknown dataset {r}")));
            };
            common = Some(match common {
                None => dp.identity_methods.clone(),
                Some(c) => c
                    .into_iter()
                    .filter(|m| dp.identity_methods.contains(m))
                    .collect(),
            });
        }
        if common.as_ref().is_some_and(Vec::is_empty) {
            return Err(ServerError::Invalid(
                "the datasets share no identity method, so every request would end with 403 \
                 (D36): register them as separate services"
                    .into(),
            ));
        }
        let registered = self.register_sp_unchecked(new)?;
        if let Some(j) = justification {
            log::info!(
                "service {}: {} datasets, justified: {j}",
                registered.0.client_id,
                registered.0.resources.len()
            );
        }
        Ok(registered)
    }

    /// [`Platform::register_sp`] without the D3/D36 dataset checks: the sandbox SPs are
    /// registered for every catalogue dataset on purpose (conformance suites exercise D36's 403).
    fn register_sp_unchecked(&self, new: NewSp) -> ServerResult<(SpRecord, SpCredentials)> {
        let client_id = match new.client_id {
            Some(id) => id,
            None => ClientId::generate()?,
        };
        let client_secret = match new.client_secret {
            Some(s) => s,
            None => ClientSecret::generate()?,
        };
        let cbc_iv = match new.cbc_iv {
            Some(s) => s,
            None => CbcIv::generate()?,
        };
        let api_key = match new.api_key {
            None => Some(
                mydata_protocol::ids::SecretKey::generate()?
                    .as_str()
                    .to_string(),
            ),
            Some(k) if k.is_empty() => None,
            Some(k) => {
                if k.len() < 16 || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(ServerError::Invalid(
                        "api_key: at least 16 characters [A-Za-z0-9]".into(),
                    ));
                }
                Some(k)
            }
        };
        for (what, u) in [
            ("return_url", &new.return_url),
            ("sp_api_url", &new.sp_api_url),
        ] {
            // The URL parser drops tabs and line breaks silently; the stored text is what
            // reaches the `Location` header and the SP-API request.
            if u.chars().any(char::is_control) {
                return Err(ServerError::Invalid(format!(
                    "{what}: control characters are not allowed"
                )));
            }
            let parsed =
                url::Url::parse(u).map_err(|e| ServerError::Invalid(format!("{what}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ServerError::Invalid(format!("{what}: http or https only")));
            }
        }
        // The SP-API is a server-to-server call (D49); the return URL is the citizen's browser.
        self.check_outbound("sp_api_url", &new.sp_api_url, new.tls_ca.as_deref())?;
        if new.resources.is_empty() {
            return Err(ServerError::Invalid(
                "a service needs at least one dataset".into(),
            ));
        }
        for r in &new.resources {
            if self.store.get_dp(r.as_str())?.is_none() {
                return Err(ServerError::Invalid(format!("unknown dataset {r}")));
            }
        }
        let mut pins = Vec::new();
        for pin in &new.client_cert_sha256 {
            let p = mydata_protocol::tls::acceptor::normalize_pin(pin);
            if p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ServerError::Invalid(format!(
                    "client certificate pin {pin:?}: a SHA-256 fingerprint is 64 hex digits"
                )));
            }
            pins.push(p);
        }
        let id = client_id.as_str();
        let record = SpRecord {
            tls_ca: new.tls_ca,
            client_id: id.to_string(),
            name: new.name,
            purpose: new.purpose,
            return_url: new.return_url,
            sp_api_url: new.sp_api_url,
            api_key_sealed: api_key
                .as_deref()
                .map(|k| self.key.seal(&format!("sp:{id}:api_key"), k))
                .transpose()?,
            client_secret_sealed: self
                .key
                .seal(&format!("sp:{id}:client_secret"), client_secret.as_str())?,
            cbc_iv_sealed: self.key.seal(&format!("sp:{id}:cbc_iv"), cbc_iv.as_str())?,
            allowed_ips: new.allowed_ips.iter().map(|i| i.to_string()).collect(),
            client_cert_sha256: pins,
            resources: new
                .resources
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            jwe_mode: new.jwe_mode,
            packaging_mode: new.packaging_mode,
            status: "active".into(),
        };
        self.store.insert_sp(&record, self.now())?;
        self.sp_sources.insert(&record);
        let creds = SpCredentials {
            client_id: id.to_string(),
            client_secret: client_secret.as_str().to_string(),
            cbc_iv: cbc_iv.as_str().to_string(),
            api_key,
        };
        Ok((record, creds))
    }

    /// Opens an SP's sealed secrets.
    ///
    /// Opened once per registration and kept (every page of a flow and every delivery needs
    /// them); a record whose sealed values changed is opened again.
    pub fn sp_secrets(&self, sp: &SpRecord) -> ServerResult<SpSecrets> {
        let sealed: SealedSecrets = (
            sp.client_secret_sealed.clone(),
            sp.cbc_iv_sealed.clone(),
            sp.api_key_sealed.clone(),
        );
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, secrets)) = opened.get(&sp.client_id)
            && *s == sealed
        {
            return Ok(secrets.clone());
        }
        let secrets = self.open_sp_secrets(sp)?;
        opened.insert(sp.client_id.clone(), (sealed, secrets.clone()));
        Ok(secrets)
    }

    fn open_sp_secrets(&self, sp: &SpRecord) -> ServerResult<SpSecrets> {
        let id = &sp.client_id;
        Ok(SpSecrets {
            client_secret: self
                .key
                .open(&format!("sp:{id}:client_secret"), &sp.client_secret_sealed)?
                .parse()?,
            cbc_iv: self
                .key
                .open(&format!("sp:{id}:cbc_iv"), &sp.cbc_iv_sealed)?
                .parse()?,
            api_key: sp
                .api_key_sealed
                .as_deref()
                .map(|s| self.key.open(&format!("sp:{id}:api_key"), s))
                .transpose()?,
        })
    }

    /// Registers the sandbox SPs of fixtures/sandbox.json (skipping those already registered).
    fn load_sandbox_sps(&self) -> ServerResult<usize> {
        let file: SandboxFile = serde_json::from_str(SANDBOX_SPS)
            .map_err(|e| ServerError::Config(format!("fixtures/sandbox.json: {e}")))?;
        let all: Vec<ResourceId> = Catalogue::from_json(SANDBOX_CATALOGUE)?
            .datasets
            .into_iter()
            .map(|d| d.resource_id)
            .collect();
        let mut added = 0;
        for sp in file.sps {
            if self.store.get_sp(sp.client_id.as_str())?.is_some() {
                continue;
            }
            let resources = if sp.resources == "*" {
                all.clone()
            } else {
                sp.resources
                    .split(',')
                    .map(|r| r.trim().parse())
                    .collect::<Result<_, _>>()?
            };
            // The fixture's SP base is replaced by the configured one (`sandbox_sp_url`).
            let rebase = |u: String| match u.strip_prefix(SANDBOX_SP_BASE) {
                Some(rest) => format!("{}{rest}", self.config.sandbox_sp_url),
                None => u,
            };
            self.register_sp_unchecked(NewSp {
                tls_ca: None,
                client_id: Some(sp.client_id),
                name: sp.name,
                purpose: sp.purpose,
                return_url: rebase(sp.return_url),
                sp_api_url: rebase(sp.sp_api_url),
                client_secret: Some(sp.client_secret),
                cbc_iv: Some(sp.cbc_iv),
                api_key: Some(sp.api_key),
                allowed_ips: sp.allowed_ips,
                client_cert_sha256: sp.client_cert_sha256,
                resources,
                jwe_mode: sp.jwe_mode,
                packaging_mode: sp.packaging_mode,
                justification: None,
            })?;
            added += 1;
        }
        Ok(added)
    }

    /// Issues and persists the access token of one (transaction, dataset) call series.
    pub fn issue_token(
        &self,
        tx_id: &str,
        client_id: &str,
        resource_id: &str,
        transaction_uid: &str,
        citizen: &CitizenClaims,
    ) -> ServerResult<IssuedAccessToken> {
        let issued = self.auth.issue(&TokenRequest {
            tx_id,
            client_id,
            resource_id,
            transaction_uid,
            citizen,
            now: self.now(),
        })?;
        self.store.insert_token(&issued.record)?;
        Ok(issued)
    }

    /// Revokes and deletes every token of a transaction.
    pub fn revoke_transaction_tokens(&self, tx_id: &str) -> ServerResult<usize> {
        self.auth.revoke_transaction(tx_id)?;
        self.store.delete_tokens_of_tx(tx_id)
    }

    /// Drops expired tokens from memory and storage.
    pub fn sweep_tokens(&self) -> ServerResult<usize> {
        let now = self.now();
        self.auth.sweep(now)?;
        self.store.delete_expired_tokens(now)
    }
}

fn grant_info(dp: &DpRecord) -> ResourceGrantInfo {
    ResourceGrantInfo {
        resource_id: dp.resource_id.clone(),
        secret_hash: dp.secret_hash.clone(),
        scopes: dp.scopes.clone(),
        claims: dp.claims.clone(),
    }
}

impl Platform {
    /// Keyed hash of a citizen identifier, for transfer records (D37).
    pub fn subject_hash(&self, pid: &str) -> String {
        hex::encode(self.key.keyed_hash(&[b"subject", pid.as_bytes()]))
    }

    /// The citizen's stable opaque `sub` (a UUID derived from a keyed hash of the identifier).
    pub fn citizen_sub(&self, pid: &str) -> String {
        let h = self.key.keyed_hash(&[b"sub", pid.as_bytes()]);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        PermissionTicket::from_random(b).as_str().to_string()
    }

    /// Keyed hash of a permission ticket (tickets are stored only this way).
    pub fn ticket_hash(&self, ticket: &str) -> String {
        hex::encode(
            self.key
                .keyed_hash(&[b"permission_ticket", ticket.as_bytes()]),
        )
    }

    /// Trust anchors for DP packages: the configured ones, plus the sandbox CA in sandbox
    /// mode; [`Anchors::Missing`] outside the sandbox without any (spec D35).
    pub fn dp_trust(&self) -> Anchors {
        self.dp_trust.anchors()
    }
}
