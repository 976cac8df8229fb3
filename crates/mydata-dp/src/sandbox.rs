//! The sandbox DP: serves every dataset of the fixture catalogue for the fixture citizens.
//!
//! * One endpoint per dataset: `{prefix}/{resource_id}` (prefix `/dp` by default), GET and
//!   POST, plus `GET {prefix}` listing the datasets and their behaviour.
//! * Tokens are checked at the platform with each dataset's public sandbox secret
//!   ([`sandbox_resource_secret`]).
//! * The citizen is the token's `uid` (national ID, resident certificate or business number,
//!   `fixtures/citizens.json`). Unknown citizens and citizens tagged `no_data` get 204.
//! * Data: `data.json` (the dataset and the citizen's fields) and, for csv datasets,
//!   `data.csv`; signed with the sandbox DP key (`fixtures/pki/dp-moi.*`). A package is built
//!   once per (dataset, citizen) and reused ([`SandboxDp::presign_all`] builds them all).
//! * Behaviour per dataset ([`Behaviour`]): catalogue datasets delivered in minutes or hours
//!   are slow by default, `delivery_seconds × time_scale` seconds (at least 1, at most
//!   `max_slow_secs`); overrides by `resource_id`.
//!
//! ```no_run
//! // The CLI:
//! let mut config = mydata_dp::sandbox::SandboxConfig::embedded("http://127.0.0.1:8080")?;
//! config.listen = "127.0.0.1:8081".parse()?;
//! mydata_dp::sandbox::run(config)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Map, Value, json};

use mydata_protocol::catalogue::{self, Catalogue, Delivery, sandbox_resource_secret};
use mydata_protocol::package::dp::{BuildOptions, DpSigner};

use crate::answer::{DataFile, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::introspect::{BoxFuture, CacheConfig, ResourceSecret};
use crate::jobs::JobStoreConfig;
use crate::request::MAX_BODY_LEN;
use crate::service::{CallContext, ConfigError, Dataset, DpService, build_package};

const EMBEDDED_CATALOGUE: &str = include_str!("../../../fixtures/catalogue.json");
const EMBEDDED_CITIZENS: &str = include_str!("../../../fixtures/citizens.json");
const EMBEDDED_KEY: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.key");
const EMBEDDED_CERT: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.pem");

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A fixture file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A fixture is malformed.
    #[error("fixture: {0}")]
    Fixture(String),
    /// The catalogue or the signing key was refused.
    #[error(transparent)]
    Protocol(#[from] mydata_protocol::Error),
    /// A dataset service could not be built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server could not bind or run.
    #[error("server: {0}")]
    Server(std::io::Error),
}

/// How a sandbox dataset answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 (or 204 for citizens without data) at once.
    Instant,
    /// 429 + `Retry-After` until this many seconds after the series' first call, then as
    /// `Instant`.
    Slow(u64),
    /// 204 for everyone.
    NoData,
    /// This status (4xx/5xx) for every call; heartbeats stay healthy.
    Fail(u16),
    /// Heartbeat 500 and every call 503.
    Down,
    /// 200 with a package that was correctly signed and then altered: one byte of its first
    /// data file is changed after signing, so its digest no longer matches the signed manifest
    /// (for conformance suites: a platform must not pass it on as verified).
    Tampered,
}

impl FromStr for Behaviour {
    type Err = String;

    /// `instant`, `slow:SECONDS`, `no_data`, `fail:STATUS`, `down` or `tampered`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |a: Option<&str>| -> Result<u64, String> {
            a.and_then(|a| a.trim().parse().ok())
                .ok_or_else(|| format!("{s}: expected a number after ':'"))
        };
        match (name.trim().to_ascii_lowercase().as_str(), arg) {
            ("instant", None) => Ok(Behaviour::Instant),
            ("slow", a) => Ok(Behaviour::Slow(num(a)?)),
            ("no_data" | "nodata", None) => Ok(Behaviour::NoData),
            ("fail", a) => match u16::try_from(num(a)?) {
                Ok(code @ 400..=599) => Ok(Behaviour::Fail(code)),
                _ => Err(format!("{s}: the status must be 400 to 599")),
            },
            ("down", None) => Ok(Behaviour::Down),
            ("tampered", None) => Ok(Behaviour::Tampered),
            _ => Err(format!(
                "{s}: expected instant, slow:SECONDS, no_data, fail:STATUS, down or tampered"
            )),
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Instant => f.write_str("instant"),
            Behaviour::Slow(s) => write!(f, "slow:{s}"),
            Behaviour::NoData => f.write_str("no_data"),
            Behaviour::Fail(s) => write!(f, "fail:{s}"),
            Behaviour::Down => f.write_str("down"),
            Behaviour::Tampered => f.write_str("tampered"),
        }
    }
}

/// One sandbox person: a citizen or a legal person.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// National ID, resident certificate number or business number.
    pub id: String,
    /// Tags (`ordinary`, `no_data`, `legal_person`, …).
    pub tags: Vec<String>,
    /// Every field of the fixture except `tags`.
    pub fields: Map<String, Value>,
}

impl Person {
    /// Whether every DP answers 204 for this person.
    pub fn has_no_data(&self) -> bool {
        self.tags.iter().any(|t| t == "no_data")
    }
}

/// The people of `fixtures/citizens.json`, by identifier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Citizens {
    people: Vec<Person>,
}

impl Citizens {
    /// Parses `citizens.json`: `citizens[].national_id` and `legal_persons[].business_number`.
    pub fn from_json(text: &str) -> Result<Self, SandboxError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| SandboxError::Fixture(e.to_string()))?;
        let mut people = Vec::new();
        for (list, id_field) in [
            ("citizens", "national_id"),
            ("legal_persons", "business_number"),
        ] {
            let Some(items) = doc.get(list).and_then(Value::as_array) else {
                continue;
            };
            for item in items {
                let mut fields = item
                    .as_object()
                    .cloned()
                    .ok_or_else(|| SandboxError::Fixture(format!("{list}: not an object")))?;
                let id = fields
                    .get(id_field)
                    .and_then(Value::as_str)
                    .ok_or_else(|| SandboxError::Fixture(format!("{list}: no {id_field}")))?
                    .to_ascii_uppercase();
                let tags = match fields.remove("tags") {
                    Some(Value::Array(t)) => t
                        .into_iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                people.push(Person { id, tags, fields });
            }
        }
        if people.is_empty() {
            return Err(SandboxError::Fixture("no citizen".into()));
        }
        Ok(Citizens { people })
    }

    /// The person with this identifier (any case).
    pub fn get(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id.eq_ignore_ascii_case(id))
    }

    /// Everyone.
    pub fn all(&self) -> &[Person] {
        &self.people
    }
}

/// Settings of the sandbox DP.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Where to listen (default `127.0.0.1:0`, an ephemeral port).
    pub listen: SocketAddr,
    /// The platform's base URL, for `/connect/introspect` (`http://` only without the `tls`
    /// feature).
    pub platform_url: String,
    /// The datasets.
    pub catalogue: Catalogue,
    /// The people.
    pub citizens: Citizens,
    /// The package signer.
    pub signer: Arc<DpSigner>,
    /// Slow datasets take `delivery_seconds × time_scale` seconds (default 0.002: 300 s →
    /// 1 s, 3,600 s → 8 s); 0 makes every dataset instant.
    pub time_scale: f64,
    /// Upper bound of a default slow delay, in seconds (default 30).
    pub max_slow_secs: u64,
    /// Behaviour overrides by `resource_id`.
    pub behaviours: HashMap<String, Behaviour>,
    /// Build every (dataset, person) package when starting (default false: built on first use).
    pub presign: bool,
    /// URL path prefix of the endpoints (default `/dp`).
    pub prefix: String,
    /// Server worker threads (default 2).
    pub workers: usize,
    /// Introspection cache settings.
    pub cache: CacheConfig,
    /// Job store bounds (per dataset).
    pub jobs: JobStoreConfig,
    /// The clock (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// Serve HTTPS with the sandbox DP certificate of the sandbox TLS PKI, and trust the
    /// sandbox TLS root (besides the system roots) toward an `https://` platform (default
    /// false; needs the `tls` feature). `mydata serve --sandbox --sandbox-tls` sets it.
    pub tls: bool,
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("listen", &self.listen)
            .field("platform_url", &self.platform_url)
            .field("datasets", &self.catalogue.datasets.len())
            .field("people", &self.citizens.people.len())
            .field("signer", &self.signer)
            .field("time_scale", &self.time_scale)
            .field("max_slow_secs", &self.max_slow_secs)
            .field("behaviours", &self.behaviours)
            .field("presign", &self.presign)
            .field("prefix", &self.prefix)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SandboxError> {
    std::fs::read(path).map_err(|source| SandboxError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl SandboxConfig {
    /// A configuration from fixture texts and a signer.
    pub fn new(
        platform_url: &str,
        catalogue_json: &str,
        citizens_json: &str,
        signer: DpSigner,
    ) -> Result<Self, SandboxError> {
        Ok(SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            platform_url: platform_url.to_owned(),
            catalogue: Catalogue::from_json(catalogue_json)?,
            citizens: Citizens::from_json(citizens_json)?,
            signer: Arc::new(signer),
            time_scale: 0.002,
            max_slow_secs: 30,
            behaviours: HashMap::new(),
            presign: false,
            prefix: "/dp".into(),
            workers: 2,
            cache: CacheConfig::default(),
            jobs: JobStoreConfig::default(),
            clock: Arc::new(SystemClock),
            tls: false,
        })
    }

    /// The repository's fixtures, compiled into the library (works from any directory).
    pub fn embedded(platform_url: &str) -> Result<Self, SandboxError> {
        let signer = DpSigner::from_pem(EMBEDDED_KEY, EMBEDDED_CERT)?;
        Self::new(platform_url, EMBEDDED_CATALOGUE, EMBEDDED_CITIZENS, signer)
    }

    /// The fixtures in a directory laid out as the repository's `fixtures/`
    /// (`catalogue.json`, `citizens.json`, `pki/dp-moi.key`, `pki/dp-moi.pem`).
    pub fn from_fixtures(dir: &Path, platform_url: &str) -> Result<Self, SandboxError> {
        let text = |name: &str| -> Result<String, SandboxError> {
            String::from_utf8(read(&dir.join(name))?)
                .map_err(|_| SandboxError::Fixture(format!("{name}: not UTF-8")))
        };
        let signer = DpSigner::from_pem(
            &read(&dir.join("pki/dp-moi.key"))?,
            &read(&dir.join("pki/dp-moi.pem"))?,
        )?;
        Self::new(
            platform_url,
            &text("catalogue.json")?,
            &text("citizens.json")?,
            signer,
        )
    }

    /// The behaviour of a dataset: its override, else from its catalogue delivery time.
    pub fn behaviour(&self, d: &catalogue::Dataset) -> Behaviour {
        if let Some(b) = self.behaviours.get(d.resource_id.as_str()) {
            return *b;
        }
        if d.delivery == Delivery::Instant || self.time_scale.is_nan() || self.time_scale <= 0.0 {
            return Behaviour::Instant;
        }
        let secs = (d.delivery_seconds as f64 * self.time_scale).ceil();
        let secs = if secs.is_finite() {
            secs as u64
        } else {
            u64::MAX
        };
        Behaviour::Slow(secs.clamp(1, self.max_slow_secs.max(1)))
    }
}

/// Signed packages by (dataset index, person id).
type PackageCache = HashMap<(usize, String), Arc<[u8]>>;

struct Shared {
    datasets: Vec<catalogue::Dataset>,
    citizens: Citizens,
    signer: Arc<DpSigner>,
    packages: Mutex<PackageCache>,
    built: AtomicUsize,
}

impl Shared {
    fn files(&self, index: usize, person: &Person) -> Vec<DataFile> {
        let d = &self.datasets[index];
        let doc = json!({
            "resource_id": d.resource_id.as_str(),
            "dataset": d.name,
            "provider": d.provider,
            "scope": d.scope.as_str(),
            "sandbox": true,
            "note": "Sandbox data: invented, not real personal data.",
            "person": person.fields,
        });
        let pretty =
            serde_json::to_vec_pretty(&doc).unwrap_or_else(|_| doc.to_string().into_bytes());
        let mut files = vec![DataFile::new("data.json", pretty)];
        if d.formats.iter().any(|f| f.eq_ignore_ascii_case("csv")) {
            let mut csv = String::from("field,value\r\n");
            for (k, v) in &person.fields {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                csv.push_str(&format!("{},{}\r\n", csv_field(k), csv_field(&v)));
            }
            files.push(DataFile::new("data.csv", csv));
        }
        files
    }

    fn package(&self, index: usize, person: &Person) -> mydata_protocol::Result<Arc<[u8]>> {
        let key = (index, person.id.clone());
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let built: Arc<[u8]> = Arc::from(build_package(
            &self.signer,
            &self.files(index, person),
            BuildOptions::default(),
        )?);
        self.built.fetch_add(1, Ordering::Relaxed);
        Ok(self.lock().entry(key).or_insert(built).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PackageCache> {
        self.packages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A copy of a signed DP package with one byte of its first data file (the first entry outside
/// `META-INFO/`) changed; the manifest, signature and certificate are copied unchanged.
fn tamper(package: &[u8]) -> mydata_protocol::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let zerr = |e: zip::result::ZipError| mydata_protocol::Error::Zip(e.to_string());
    let mut input = zip::ZipArchive::new(std::io::Cursor::new(package)).map_err(zerr)?;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut altered = false;
    for i in 0..input.len() {
        let mut f = input.by_index(i).map_err(zerr)?;
        let name = f.name().map_err(zerr)?.into_owned();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        let meta = name.starts_with("META-INFO/") || name.starts_with("META-INFO\\");
        if !altered && !meta && !f.is_dir() {
            match bytes.first_mut() {
                Some(b) => *b ^= 0x20,
                None => bytes.push(b'x'),
            }
            altered = true;
        }
        out.start_file(name, opts).map_err(zerr)?;
        out.write_all(&bytes)?;
    }
    Ok(out.finish().map_err(zerr)?.into_inner())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

struct SandboxDataset {
    shared: Arc<Shared>,
    index: usize,
    behaviour: Behaviour,
}

impl SandboxDataset {
    fn outcome(&self, call: &CallContext) -> Outcome {
        match self.behaviour {
            Behaviour::Down => return Outcome::Failed { status: 503 },
            Behaviour::Fail(status) => return Outcome::Failed { status },
            Behaviour::NoData => return Outcome::NoData,
            Behaviour::Slow(secs) => {
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                let left = secs.saturating_sub(call.elapsed());
                if left > 0 {
                    return Outcome::Pending {
                        retry_after: u32::try_from(left).unwrap_or(u32::MAX),
                    };
                }
            }
            Behaviour::Instant | Behaviour::Tampered => {}
        }
        let Some(person) = call.uid().and_then(|uid| self.shared.citizens.get(uid)) else {
            return Outcome::NoData;
        };
        if person.has_no_data() {
            return Outcome::NoData;
        }
        let built = self.shared.package(self.index, person);
        let built = match (built, self.behaviour) {
            (Ok(p), Behaviour::Tampered) => tamper(&p).map(Arc::from),
            (other, _) => other,
        };
        match built {
            Ok(p) => Outcome::Package(p),
            Err(e) => {
                log::error!("sandbox: packaging failed: {e}");
                Outcome::failed()
            }
        }
    }
}

impl Dataset for SandboxDataset {
    fn answer<'a>(&'a self, call: &'a CallContext) -> BoxFuture<'a, Outcome> {
        let out = self.outcome(call);
        Box::pin(async move { out })
    }

    fn healthy(&self) -> bool {
        self.behaviour != Behaviour::Down
    }
}

/// The sandbox DP: one [`DpService`] per catalogue dataset.
pub struct SandboxDp {
    services: HashMap<String, Arc<DpService>>,
    behaviours: Vec<(String, String, Behaviour)>,
    shared: Arc<Shared>,
    prefix: String,
}

impl fmt::Debug for SandboxDp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxDp")
            .field("datasets", &self.services.len())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SandboxDp {
    /// Builds the services (and, with `config.presign`, every package).
    pub fn new(config: &SandboxConfig) -> Result<Self, SandboxError> {
        let shared = Arc::new(Shared {
            datasets: config.catalogue.datasets.clone(),
            citizens: config.citizens.clone(),
            signer: config.signer.clone(),
            packages: Mutex::new(HashMap::new()),
            built: AtomicUsize::new(0),
        });
        let mut services = HashMap::new();
        let mut behaviours = Vec::new();
        for (index, d) in config.catalogue.datasets.iter().enumerate() {
            let behaviour = config.behaviour(d);
            let builder = DpService::builder(d.resource_id.as_str())
                .scopes([d.scope.as_str()])
                .platform(
                    &config.platform_url,
                    ResourceSecret::new(sandbox_resource_secret(&d.resource_id)),
                );
            #[cfg(feature = "tls")]
            let builder = if config.tls {
                builder.platform_tls(
                    crate::tls::TlsConfig::new()
                        .with_extra_ca(mydata_protocol::tls::sandbox::ROOT_CA),
                )
            } else {
                builder
            };
            let service = builder
                .clock(config.clock.clone())
                .cache(config.cache)
                .jobs(config.jobs)
                .signer(config.signer.clone())
                .dataset(SandboxDataset {
                    shared: shared.clone(),
                    index,
                    behaviour,
                })
                .build()?;
            services.insert(d.resource_id.as_str().to_owned(), Arc::new(service));
            behaviours.push((d.resource_id.as_str().to_owned(), d.name.clone(), behaviour));
        }
        let dp = SandboxDp {
            services,
            behaviours,
            shared,
            prefix: config.prefix.trim_end_matches('/').to_owned(),
        };
        if config.presign {
            dp.presign_all()?;
        }
        Ok(dp)
    }

    /// Builds and caches the package of every (dataset, person with data); returns how many
    /// packages are cached.
    pub fn presign_all(&self) -> Result<usize, SandboxError> {
        for index in 0..self.shared.datasets.len() {
            for p in self
                .shared
                .citizens
                .all()
                .iter()
                .filter(|p| !p.has_no_data())
            {
                self.shared.package(index, p)?;
            }
        }
        Ok(self.shared.lock().len())
    }

    /// Packages built so far (each (dataset, person) is built once).
    pub fn packages_built(&self) -> usize {
        self.shared.built.load(Ordering::Relaxed)
    }

    /// The service of a dataset.
    pub fn service(&self, resource_id: &str) -> Option<&Arc<DpService>> {
        self.services.get(resource_id)
    }

    /// Every dataset with its name and behaviour, in catalogue order.
    pub fn datasets(&self) -> &[(String, String, Behaviour)] {
        &self.behaviours
    }

    /// The URL path of a dataset's endpoint, e.g. `/dp/API.ARPPI3VTCB`.
    pub fn path(&self, resource_id: &str) -> String {
        format!("{}/{resource_id}", self.prefix)
    }

    /// For `App::configure`: mounts `{prefix}` (the list) and `{prefix}/{resource_id}`.
    pub fn configure(self: &Arc<Self>) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
        let dp = self.clone();
        move |cfg: &mut web::ServiceConfig| {
            let data = web::Data::from(dp.clone());
            let list = if dp.prefix.is_empty() {
                "/".to_owned()
            } else {
                dp.prefix.clone()
            };
            cfg.service(
                web::resource(list)
                    .app_data(data.clone())
                    .route(web::get().to(list_handler)),
            )
            .service(
                web::resource(format!("{}/{{resource_id}}", dp.prefix))
                    .app_data(data)
                    .app_data(web::PayloadConfig::new(MAX_BODY_LEN))
                    .default_service(web::to(dataset_handler)),
            );
        }
    }
}

async fn list_handler(dp: web::Data<SandboxDp>) -> HttpResponse {
    let items: Vec<Value> = dp
        .behaviours
        .iter()
        .map(|(id, name, b)| {
            json!({ "resource_id": id, "name": name, "path": dp.path(id), "behaviour": b.to_string() })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "datasets": items }))
}

async fn dataset_handler(
    dp: web::Data<SandboxDp>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let id = req.match_info().get("resource_id").unwrap_or_default();
    match dp.service(id) {
        Some(service) => crate::actix::respond(service, &req, &body).await,
        None => HttpResponse::NotFound().json(json!({ "error": "unknown resource_id" })),
    }
}

fn server(
    config: &SandboxConfig,
    dp: Arc<SandboxDp>,
    signals: bool,
) -> Result<(actix_web::dev::Server, SocketAddr), SandboxError> {
    let mut http = HttpServer::new(move || App::new().configure(dp.configure()))
        .workers(config.workers.max(1))
        .shutdown_timeout(2);
    if !signals {
        http = http.disable_signals();
    }
    #[cfg(feature = "tls")]
    let http = if config.tls {
        http.bind_openssl(config.listen, sandbox_acceptor()?)
    } else {
        http.bind(config.listen)
    };
    #[cfg(not(feature = "tls"))]
    let http = if config.tls {
        return Err(SandboxError::Server(std::io::Error::other(
            "HTTPS needs the mydata-dp feature `tls`",
        )));
    } else {
        http.bind(config.listen)
    };
    let http = http.map_err(SandboxError::Server)?;
    let addr = http
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| SandboxError::Server(std::io::Error::other("not bound")))?;
    Ok((http.run(), addr))
}

/// The acceptor of the sandbox DP on HTTPS (`tls`): its certificate of the sandbox TLS PKI.
#[cfg(feature = "tls")]
fn sandbox_acceptor() -> Result<openssl::ssl::SslAcceptorBuilder, SandboxError> {
    use mydata_protocol::tls::acceptor::{self, ClientCerts, ServerTls};
    use mydata_protocol::tls::sandbox;
    acceptor::acceptor(&ServerTls {
        cert_chain_pem: sandbox::DP_CERT,
        key_pem: sandbox::DP_KEY,
        client_ca_pem: None,
        client_certs: ClientCerts::None,
    })
    .map_err(|e| SandboxError::Server(std::io::Error::other(e.to_string())))
}

/// Runs the sandbox DP until the process gets Ctrl-C / SIGTERM (blocking; starts its own
/// actix runtime). For the CLI: `mydata_dp::sandbox::run(config)`.
pub fn run(config: SandboxConfig) -> Result<(), SandboxError> {
    actix_web::rt::System::new().block_on(serve(config))
}

/// Runs the sandbox DP on the current actix runtime until it is stopped by a signal.
pub async fn serve(config: SandboxConfig) -> Result<(), SandboxError> {
    let dp = Arc::new(SandboxDp::new(&config)?);
    let (server, addr) = server(&config, dp, true)?;
    let scheme = if config.tls { "https" } else { "http" };
    log::info!("sandbox DP listening on {scheme}://{addr}");
    server.await.map_err(SandboxError::Server)
}

/// A sandbox DP running on the current actix runtime (see [`spawn`]).
#[derive(Debug)]
pub struct SandboxServer {
    addr: SocketAddr,
    handle: ServerHandle,
    dp: Arc<SandboxDp>,
    tls: bool,
}

impl SandboxServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, or `https://localhost:{port}` on HTTPS (the name its certificate
    /// carries).
    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The full URL of a dataset's endpoint.
    pub fn endpoint(&self, resource_id: &str) -> String {
        format!("{}{}", self.base_url(), self.dp.path(resource_id))
    }

    /// The DP (services, package cache).
    pub fn dp(&self) -> &Arc<SandboxDp> {
        &self.dp
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Starts the sandbox DP on the current actix runtime (e.g. inside `#[actix_web::test]`),
/// bound to `config.listen` (default `127.0.0.1:0`), and returns once it is listening.
/// Signals are not handled; call [`SandboxServer::stop`].
pub async fn spawn(config: SandboxConfig) -> Result<SandboxServer, SandboxError> {
    let dp = Arc::new(SandboxDp::new(&config)?);
    let (server, addr) = server(&config, dp.clone(), false)?;
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(SandboxServer {
        addr,
        handle,
        dp,
        tls: config.tls,
    })
}

/// A sandbox DP running on its own thread and runtime (see [`spawn_thread`]). Stopped when
/// dropped.
#[derive(Debug)]
pub struct SandboxThread {
    addr: SocketAddr,
    handle: ServerHandle,
    dp: Arc<SandboxDp>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SandboxThread {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full URL of a dataset's endpoint.
    pub fn endpoint(&self, resource_id: &str) -> String {
        format!("{}{}", self.base_url(), self.dp.path(resource_id))
    }

    /// The DP (services, package cache).
    pub fn dp(&self) -> &Arc<SandboxDp> {
        &self.dp
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // The stop command is sent when `stop` is called; the returned future only waits.
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SandboxThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the sandbox DP on a new thread with its own actix runtime, from any context (sync
/// tests, other runtimes), and returns once it is listening.
pub fn spawn_thread(config: SandboxConfig) -> Result<SandboxThread, SandboxError> {
    let dp = Arc::new(SandboxDp::new(&config)?);
    let (tx, rx) = std::sync::mpsc::channel();
    let dp2 = dp.clone();
    let thread = std::thread::Builder::new()
        .name("mydata-sandbox-dp".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match server(&config, dp2, false) {
                    Ok((srv, addr)) => {
                        let _ = tx.send(Ok((srv.handle(), addr)));
                        let _ = srv.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(SandboxError::Server)?;
    match rx.recv() {
        Ok(Ok((handle, addr))) => Ok(SandboxThread {
            addr,
            handle,
            dp,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(SandboxError::Server(std::io::Error::other(
                "the server thread ended before listening",
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviours_parse_and_default() {
        assert_eq!("instant".parse(), Ok(Behaviour::Instant));
        assert_eq!("slow:5".parse(), Ok(Behaviour::Slow(5)));
        assert_eq!("no_data".parse(), Ok(Behaviour::NoData));
        assert_eq!("fail:503".parse(), Ok(Behaviour::Fail(503)));
        assert_eq!("down".parse(), Ok(Behaviour::Down));
        assert_eq!("tampered".parse(), Ok(Behaviour::Tampered));
        assert_eq!(Behaviour::Tampered.to_string(), "tampered");
        for bad in [
            "slow",
            "slow:x",
            "fail:200",
            "fail:70000",
            "later",
            "instant:1",
        ] {
            assert!(bad.parse::<Behaviour>().is_err(), "{bad}");
        }
        for b in [Behaviour::Slow(3), Behaviour::Fail(418), Behaviour::NoData] {
            assert_eq!(b.to_string().parse(), Ok(b));
        }
        let mut c = SandboxConfig::embedded("http://127.0.0.1:1").unwrap();
        let slow: Vec<_> = c
            .catalogue
            .datasets
            .iter()
            .filter(|d| d.delivery != Delivery::Instant)
            .cloned()
            .collect();
        assert_eq!(slow.len(), 11);
        let first = &c.catalogue.datasets[0];
        assert_eq!(c.behaviour(first), Behaviour::Instant);
        let b: Vec<_> = slow.iter().map(|d| c.behaviour(d)).collect();
        assert!(
            b.contains(&Behaviour::Slow(1)) && b.contains(&Behaviour::Slow(8)),
            "{b:?}"
        );
        c.time_scale = 1.0;
        assert_eq!(c.behaviour(&slow[0]), Behaviour::Slow(30));
        c.time_scale = 0.0;
        assert_eq!(c.behaviour(&slow[0]), Behaviour::Instant);
        c.behaviours
            .insert(first.resource_id.to_string(), Behaviour::Fail(502));
        assert_eq!(c.behaviour(first), Behaviour::Fail(502));
    }

    #[test]
    fn citizens_and_files() {
        let c = Citizens::from_json(EMBEDDED_CITIZENS).unwrap();
        assert!(c.get("a120345672").is_some());
        assert!(c.get("H135908240").unwrap().has_no_data());
        assert!(c.get("53091428").is_some(), "legal persons too");
        assert!(c.get("Z999999999").is_none());
        assert!(Citizens::from_json("{}").is_err());
        assert!(Citizens::from_json("[").is_err());
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn packages_are_built_once_and_verify() {
        let config = SandboxConfig::embedded("http://127.0.0.1:1").unwrap();
        let dp = SandboxDp::new(&config).unwrap();
        let csv = config
            .catalogue
            .datasets
            .iter()
            .position(|d| d.formats.iter().any(|f| f == "csv"))
            .unwrap();
        let person = config.citizens.get("A120345672").unwrap();
        let a = dp.shared.package(csv, person).unwrap();
        let b = dp.shared.package(csv, person).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(dp.packages_built(), 1);
        let v = mydata_protocol::package::dp::verify(
            std::io::Cursor::new(&a[..]),
            &mydata_protocol::package::dp::VerifyOptions::at(mydata_protocol::date::UnixTime(
                1_798_761_600,
            )),
        )
        .unwrap();
        let names: Vec<_> = v.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["data.json", "data.csv"]);
    }

    #[test]
    fn a_tampered_package_keeps_its_signature_and_fails_verification() {
        let config = SandboxConfig::embedded("http://127.0.0.1:1").unwrap();
        let dp = SandboxDp::new(&config).unwrap();
        let person = config.citizens.get("A120345672").unwrap();
        let good = dp.shared.package(0, person).unwrap();
        let bad = tamper(&good).unwrap();
        let opts = mydata_protocol::package::dp::VerifyOptions::at(
            mydata_protocol::date::UnixTime(1_798_761_600),
        );
        assert!(
            mydata_protocol::package::dp::verify(std::io::Cursor::new(&good[..]), &opts).is_ok()
        );
        assert!(
            mydata_protocol::package::dp::verify(std::io::Cursor::new(&bad[..]), &opts).is_err()
        );
        // Only the data file changed: the manifest and signature entries are the same bytes.
        let entry = |zip: &[u8], name: &str| {
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
            let mut f = z.by_name(name).unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v).unwrap();
            v
        };
        for meta in ["META-INFO/manifest.xml", "data.json"] {
            let same = entry(&good, meta) == entry(&bad, meta);
            assert_eq!(same, meta != "data.json", "{meta}");
        }
        assert!(tamper(b"not a zip").is_err());
    }
}
