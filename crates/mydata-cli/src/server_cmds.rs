//! `mydata serve` and the operator commands (`sp register|list`, `dp register|list`).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use mydata_protocol::ids::ResourceId;
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::template::Template;
use mydata_server::clock::SystemClock;
use mydata_server::config::Config;
use mydata_server::config_layers::Loaded;
use mydata_server::platform::{NewDp, NewSp, Platform};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::DpMethod;
use serde_json::json;

use crate::exit::runtime;

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Where the server's data lives; shared by `serve` and the operator commands.
#[derive(Args, Debug, Clone)]
pub struct Where {
    /// Configuration file (TOML, see examples/mydata.toml); `MYDATA_*` environment variables
    /// override it, and flags override both.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, master key, packages).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

/// `mydata serve`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  mydata serve --sandbox                       # platform on 127.0.0.1:8080, sandbox DP on :8081
  MYDATA_LISTEN=127.0.0.1:9080 mydata serve --sandbox   # the public URL follows (http://127.0.0.1:9080)
  mydata serve --config /etc/mydata/mydata.toml        # see examples/mydata.toml")]
pub struct ServeArgs {
    #[command(flatten)]
    place: Where,
    /// With --sandbox, do not start the sandbox DP in this process.
    #[arg(long)]
    no_sandbox_dp: bool,
    #[command(flatten)]
    settings: crate::settings::Settings,
}

/// `mydata config check`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  mydata config check --config /etc/mydata/mydata.toml
  MYDATA_LISTEN=0.0.0.0:8080 mydata config check --sandbox --json")]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    place: Where,
    /// JSON output: {\"ok\", \"settings\": [{\"key\", \"value\", \"source\"}], \"problems\"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    settings: crate::settings::Settings,
}

/// `mydata sandbox-dp`: the sandbox DP on its own.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  mydata sandbox-dp --listen 127.0.0.1:8081 --platform http://127.0.0.1:8080 --behaviour API.ARPPI3VTCB=fail:500"
)]
pub struct SandboxDpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The platform's base URL (for introspection).
    #[arg(long, alias = "platform-url", default_value = "http://127.0.0.1:8080")]
    platform: String,
    /// Behaviour of a dataset: RESOURCE_ID=instant|slow:SECONDS|no_data|fail:STATUS|down|tampered
    /// (repeat).
    #[arg(long = "behaviour")]
    behaviours: Vec<String>,
    /// Time scale of slow datasets (catalogue delivery seconds × scale; 0 = all instant).
    #[arg(long)]
    time_scale: Option<f64>,
    /// How long an active introspection answer is reused (seconds, default 30).
    #[arg(long, value_name = "SECONDS")]
    introspection_cache_secs: Option<u64>,
}

fn sandbox_config(
    listen: SocketAddr,
    platform: &str,
    behaviours: &[String],
    time_scale: Option<f64>,
) -> CliResult<mydata_dp::sandbox::SandboxConfig> {
    let mut cfg = mydata_dp::sandbox::SandboxConfig::embedded(platform)?;
    cfg.listen = listen;
    if let Some(t) = time_scale {
        cfg.time_scale = t;
    }
    for b in behaviours {
        let (id, how) = b
            .split_once('=')
            .ok_or_else(|| format!("--behaviour {b}: expected RESOURCE_ID=BEHAVIOUR"))?;
        cfg.behaviours.insert(
            id.to_string(),
            how.parse().map_err(|e| format!("--behaviour {b}: {e}"))?,
        );
    }
    Ok(cfg)
}

/// Runs `mydata sandbox-dp` until interrupted.
pub fn sandbox_dp(a: SandboxDpArgs) -> CliResult<i32> {
    let mut cfg = sandbox_config(a.listen, &a.platform, &a.behaviours, a.time_scale)?;
    if let Some(secs) = a.introspection_cache_secs {
        cfg.cache.ttl_secs = secs;
    }
    eprintln!(
        "mydata: sandbox DP on http://{} (platform {})",
        a.listen, a.platform
    );
    mydata_dp::sandbox::run(cfg)
        .map_err(|e| runtime(format!("sandbox DP on {} (--listen): {e}", a.listen)))?;
    Ok(0)
}

/// `mydata sp …`.
#[derive(Subcommand, Debug)]
pub enum SpCmd {
    /// Register an SP service and print its credentials (once).
    #[command(
        after_help = "Example:\n  mydata sp register --name 'Taipei housing' --return-url https://sp.example/return \\\n    --sp-api-url https://sp.example/sp-api --dataset API.2RXHOGTXIC --allow-ip 192.0.2.10"
    )]
    Register(SpRegisterArgs),
    /// List registered SP services.
    #[command(after_help = "Example:\n  mydata sp list --json --data-dir /var/lib/mydata")]
    List(ListArgs),
    /// Collect a package from a platform's MyData-API: poll, decrypt, verify, unpack.
    #[command(
        after_help = "Examples:\n  mydata sp fetch --sandbox-sp 1 --listen 127.0.0.1:8090 --pid A120345672 --dataset API.2RXHOGTXIC --out ./got\n  mydata sp fetch --sandbox-sp 1 --delivery sp-api-body.json --out ./got --json"
    )]
    Fetch(crate::sp_client::FetchArgs),
    /// Suspend a service: its redirects end with 423 until `mydata sp resume`.
    #[command(
        after_help = "Example:\n  mydata sp suspend CLI.AB12CD34EF --data-dir /var/lib/mydata"
    )]
    Suspend(IdArgs),
    /// Put a suspended service back in service.
    #[command(after_help = "Example:\n  mydata sp resume CLI.AB12CD34EF")]
    Resume(IdArgs),
    /// Delete a service registration.
    #[command(after_help = "Example:\n  mydata sp delete CLI.AB12CD34EF")]
    Delete(IdArgs),
    /// Give a service a new client_secret, cbc_iv and API key (printed once; the old ones stop
    /// working).
    #[command(after_help = "Example:\n  mydata sp rotate CLI.AB12CD34EF --json")]
    Rotate(IdArgs),
    /// Verify a saved package (the JWE body or the decrypted zip) and unpack it.
    #[command(
        after_help = "Example:\n  mydata sp verify --sandbox-sp 1 --package ./got/package.zip"
    )]
    Verify(crate::sp_client::VerifyArgs),
}

/// `mydata dp …`.
#[derive(Subcommand, Debug)]
pub enum DpCmd {
    /// Register a DP dataset and print its `resource_secret` (once).
    #[command(
        after_help = "Example:\n  mydata dp register --name 戶籍謄本 --provider 內政部 --scope moi.household.read \\\n    --endpoint https://dp.example/dp --identity-method CER --identity-method PII"
    )]
    Register(DpRegisterArgs),
    /// List registered DP datasets.
    #[command(after_help = "Example:\n  mydata dp list --json --data-dir /var/lib/mydata")]
    List(ListArgs),
    /// Stop a dataset: requests for it end with 501 until `mydata dp resume`.
    #[command(after_help = "Example:\n  mydata dp suspend API.2RXHOGTXIC")]
    Suspend(IdArgs),
    /// Put a stopped dataset back in service.
    #[command(after_help = "Example:\n  mydata dp resume API.2RXHOGTXIC")]
    Resume(IdArgs),
    /// Delete a dataset registration (refused while a service requests it).
    #[command(after_help = "Example:\n  mydata dp delete API.2RXHOGTXIC")]
    Delete(IdArgs),
    /// Give a dataset a new resource_secret (printed once; the old one stops working).
    #[command(after_help = "Example:\n  mydata dp rotate API.2RXHOGTXIC --json")]
    Rotate(IdArgs),
}

/// One registration by its id (`client_id` or `resource_id`).
#[derive(Args, Debug)]
pub struct IdArgs {
    #[command(flatten)]
    place: Where,
    /// The `client_id` (sp) or `resource_id` (dp).
    id: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    place: Where,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Jwe {
    Cbc,
    Gcm,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Packaging {
    A,
    B,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    Get,
    Post,
}

#[derive(Args, Debug)]
pub struct SpRegisterArgs {
    #[command(flatten)]
    place: Where,
    /// Service name.
    #[arg(long)]
    name: String,
    /// Purpose of use, shown to the citizen on the consent page.
    #[arg(long, default_value = "")]
    purpose: String,
    /// The return URL the citizen is sent back to.
    #[arg(long)]
    return_url: String,
    /// The SP-API URL the platform calls after consent.
    #[arg(long)]
    sp_api_url: String,
    /// A dataset the service may request (repeat; `*` = every registered dataset).
    #[arg(
        long = "dataset",
        alias = "datasets",
        alias = "resource",
        required = true
    )]
    datasets: Vec<String>,
    /// A source IP or CIDR prefix (at least /24, IPv6 /56) allowed on the MyData-API (repeat).
    #[arg(long = "allow-ip", required = true)]
    allowed_ips: Vec<mydata_server::sources::AllowedSource>,
    /// The SHA-256 fingerprint of a client certificate the SP must present on the MyData-API
    /// (repeat; needs a listener with `tls_client_ca`). `openssl x509 -noout -fingerprint
    /// -sha256 -in cert.pem` prints it.
    #[arg(long = "client-cert-sha256")]
    client_cert_sha256: Vec<String>,
    /// JWE mode of the MyData-API.
    #[arg(long, value_enum, default_value_t = Jwe::Cbc)]
    jwe: Jwe,
    /// Packaging mode.
    #[arg(long, value_enum, default_value_t = Packaging::A)]
    packaging: Packaging,
    /// Register without an SP-API key.
    #[arg(long)]
    no_api_key: bool,
    /// Why the service needs more than five datasets (required beyond five; brief §4).
    #[arg(long)]
    justification: Option<String>,
    /// A PEM file of the CA certificates the SP-API's server certificate must chain to; it
    /// replaces the system roots and `tls_ca_file` for this service (spec D49).
    #[arg(long, value_name = "FILE.pem")]
    tls_ca: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct DpRegisterArgs {
    #[command(flatten)]
    place: Where,
    /// Dataset name.
    #[arg(long)]
    name: String,
    /// DP agency.
    #[arg(long)]
    provider: String,
    /// Scope (repeat).
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// DP-API endpoint.
    #[arg(long)]
    endpoint: String,
    /// DP-API method.
    #[arg(long, value_enum, default_value_t = Method::Get)]
    method: Method,
    /// A userinfo claim the dataset may see (repeat; default sub, uid, uid_type, birthdate).
    #[arg(long = "claim")]
    claims: Vec<String>,
    /// Identity method that unlocks the dataset (repeat; CER, FIC, …, OTP).
    #[arg(long = "identity-method")]
    identity_methods: Vec<String>,
    /// Use this `resource_id` instead of a generated one.
    #[arg(long)]
    resource_id: Option<ResourceId>,
    /// DP-API request template (D28): a JSON file, `{"items": [{"location", "name", "value"}],
    /// "skeleton": {...}}` or a bare array of items.
    #[arg(long, value_name = "FILE.json")]
    template: Option<PathBuf>,
    /// A PEM file of the CA certificates the DP-API's server certificate must chain to; it
    /// replaces the system roots and `tls_ca_file` for this dataset (spec D49).
    #[arg(long, value_name = "FILE.pem")]
    tls_ca: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// The configuration of the file, the environment and the flags (`--data-dir` and `settings`).
fn load_layers(place: &Where, settings: &[(String, String)]) -> CliResult<Loaded> {
    let mut flags = settings.to_vec();
    if let Some(d) = &place.data_dir {
        flags.push(("data_dir".into(), d.display().to_string()));
    }
    Ok(Config::load_layers(
        place.config.as_deref(),
        std::env::vars(),
        flags,
    )?)
}

fn load_config(place: &Where) -> CliResult<Config> {
    Ok(load_layers(place, &[])?.config)
}

/// Runs `mydata config check`: the effective configuration (secrets redacted) and its
/// problems; 0 when it can start, 1 when it cannot (errors, or a value that does not load).
pub fn config_check(a: ConfigCheckArgs) -> CliResult<i32> {
    let loaded = match load_layers(&a.place, &a.settings.0) {
        Ok(l) => l,
        Err(e) => {
            if a.json {
                outln!(
                    "{}",
                    json!({"ok": false, "settings": [], "problems": [{"severity": "error", "key": null, "message": e.to_string()}]})
                )?;
            } else {
                outln!("error: {e}")?;
            }
            return Ok(1);
        }
    };
    let ok = loaded.errors().next().is_none();
    let settings = loaded.effective();
    if a.json {
        let s: Vec<_> = settings
            .iter()
            .map(|(k, v, src)| json!({"key": k, "value": v, "source": src}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"ok": ok, "settings": s, "problems": loaded.problems})
            )?
        )?;
    } else {
        outln!(
            "# effective configuration (secrets redacted); the comment says where each value came from"
        )?;
        for (k, v, src) in &settings {
            outln!("{k} = {v}  # {src}")?;
        }
        if loaded.problems.is_empty() {
            outln!("# no problems")?;
        }
        for p in &loaded.problems {
            outln!("# {p}")?;
        }
    }
    Ok(if ok { 0 } else { 1 })
}

fn open(config: Config) -> CliResult<Platform> {
    open_clocked(config, Arc::new(SystemClock), false)
}

/// Opens the platform; `serving` = for `mydata serve` (the write-behind store, spec D47), else
/// for a one-shot operator command that writes straight to the database.
fn open_clocked(
    config: Config,
    clock: mydata_server::clock::SharedClock,
    serving: bool,
) -> CliResult<Platform> {
    // Owner-only: created 0700, refused when shared unless allowed, files tightened (D48).
    mydata_server::datadir::prepare(&config.data_dir, config.allow_shared_data_dir)
        .map_err(|e| runtime(e.to_string()))?;
    let key = match std::env::var("MYDATA_MASTER_KEY") {
        Ok(hex) => MasterKey::from_hex(hex.trim())?,
        Err(_) => MasterKey::load_or_create(&config.data_dir)?,
    };
    let store = if serving {
        mydata_server::storage::open_server(&config)?
    } else {
        mydata_server::storage::open(&config.database_url, &config.data_dir)?
    };
    Ok(Platform::new(store, key, clock, config)?)
}

/// Runs `mydata serve` until interrupted.
pub fn serve(a: ServeArgs) -> CliResult<i32> {
    let loaded = load_layers(&a.place, &a.settings.0)?;
    // Settings that disagree (spec D48, issue 14): warnings are printed, errors refuse.
    for p in &loaded.problems {
        eprintln!("mydata: {p}");
    }
    if loaded.errors().next().is_some() {
        return Err("the configuration cannot work (see above, and `mydata config check`)".into());
    }
    let config = loaded.config;
    // Logs through `tracing` (the `log` macros bridged), filtered by RUST_LOG (spec
    // operations.md).
    // The guard flushes the log writer thread when `serve` returns.
    let _log = mydata_server::observe::logging::init(
        config.log_format,
        mydata_server::observe::logging::DEFAULT_FILTER,
    )?;
    // Every connection, outgoing call, database connection and package file is a file
    // descriptor: the soft limit goes up to the hard limit (spec D48).
    let before = mydata_server::limits::nofile_limit();
    match mydata_server::limits::raise_nofile_limit() {
        Ok(n) if before.is_some_and(|b| b < n) => tracing::info!(target: "mydata::serve",
            "open-file limit {n} (raised from {})",
            before.unwrap_or_default()
        ),
        Ok(n) => tracing::info!(target: "mydata::serve", "open-file limit {n}"),
        Err(e) => tracing::warn!(target: "mydata::serve",
            "open-file limit {} (could not raise it: {e})",
            before.map_or_else(|| "unknown".to_string(), |b| b.to_string())
        ),
    }
    let listen = config.listen;
    let sandbox_clock = config
        .sandbox_clock
        .then(mydata_server::clock::OffsetClock::new);
    let platform = match &sandbox_clock {
        Some(c) => {
            tracing::warn!(target: "mydata::serve", "sandbox clock on (POST /sandbox/clock); never use in production");
            open_clocked(config, Arc::new(c.clone()), true)?
        }
        None => open_clocked(config, Arc::new(SystemClock), true)?,
    };
    if platform.config.sandbox {
        let n = platform.load_sandbox()?;
        tracing::info!(target: "mydata::serve", "sandbox registrations loaded ({n} new)");
        let n = mydata_server::lifecycle::sandbox_in_service(&platform, true)?;
        if n > 0 {
            tracing::info!(target: "mydata::serve", "{n} sandbox registrations back in service");
        }
    } else {
        // The sandbox's credentials are public: a data directory once started with the
        // sandbox does not serve its registrations without it.
        let n = mydata_server::lifecycle::sandbox_in_service(&platform, false)?;
        if n > 0 {
            tracing::warn!(
                target: "mydata::serve",
                "{n} sandbox registrations taken out of service (started without sandbox)"
            );
        }
    }
    let _sandbox_dp = if platform.config.sandbox && !a.no_sandbox_dp {
        let dp_url = url::Url::parse(&platform.config.sandbox_dp_url)
            .map_err(|e| format!("sandbox_dp_url: {e}"))?;
        let addr = dp_url
            .socket_addrs(|| Some(80))
            .map_err(|e| format!("sandbox_dp_url: {e}"))?
            .into_iter()
            .next()
            .ok_or("sandbox_dp_url: no address")?;
        // The DP in this process calls the listener itself, whatever public_url says (a
        // proxy in front of the platform need not be reachable from here).
        let mut cfg = sandbox_config(addr, &platform.config.local_url(), &[], None)?;
        // An https:// sandbox_dp_url (`sandbox_tls` derives one) serves the sandbox DP's
        // certificate of the sandbox TLS PKI (spec D50).
        cfg.tls = dp_url.scheme() == "https";
        let t = mydata_dp::sandbox::spawn_thread(cfg)
            .map_err(|e| runtime(format!("sandbox DP on {addr} (sandbox_dp_url): {e}")))?;
        tracing::info!(target: "mydata::serve", "sandbox DP on {}://{}", dp_url.scheme(), t.addr());
        Some(t)
    } else {
        None
    };
    let platform = Arc::new(platform);
    let listener = TcpListener::bind(listen)
        .map_err(|e| runtime(format!("listen on {listen} (listen): {e}")))?;
    tracing::info!(target: "mydata::serve",
        "listening on {}://{listen} (public URL {}, data in {})",
        platform.config.listen_scheme(),
        platform.config.public_url,
        platform.config.data_dir.display()
    );
    let cap = mydata_server::limits::connection_cap(&platform.config);
    tracing::info!(target: "mydata::serve",
        "at most {} inbound connections ({} per worker, {} workers; max_connections)",
        cap.per_worker * cap.workers,
        cap.per_worker,
        cap.workers
    );
    let store = platform.store.clone();
    tracing::info!(
        target: "mydata::serve",
        event = "start",
        version = env!("CARGO_PKG_VERSION"),
        listen = %listen,
        admin_listen = platform.config.admin_listen.map(|a| a.to_string()),
        public_url = %platform.config.public_url,
        sandbox = platform.config.sandbox,
        metrics = platform.config.metrics,
        "mydata serve started"
    );
    actix_web::rt::System::new().block_on(async move {
        // DP calls that a stop interrupted, and packages lost from memory, are fetched again
        // (spec D47).
        match mydata_server::engine::resume(&platform) {
            Ok(0) => {}
            Ok(n) => tracing::info!(target: "mydata::serve", "resumed {n} transactions"),
            Err(e) => tracing::warn!(target: "mydata::serve", "resuming transactions failed: {e}"),
        }
        let sweeper = platform.clone();
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Err(e) = sweeper.sweep_tokens() {
                    tracing::warn!(target: "mydata::serve", "token sweep failed: {e}");
                }
                // The 8-hour purge of personal data (spec D37), driven by the platform's clock.
                let p = sweeper.clone();
                match actix_web::web::block(move || mydata_server::engine::purge(&p)).await {
                    Ok(Ok(r)) => {
                        if r.expired > 0 {
                            tracing::info!(target: "mydata::serve",
                                "{} transactions ended with 408 (time before consent ran out)",
                                r.expired
                            );
                        }
                        if r.purged + r.orphans > 0 {
                            tracing::info!(target: "mydata::serve",
                                "purged {} transactions, {} orphaned package files",
                                r.purged, r.orphans
                            );
                        }
                        for line in &r.not_erased {
                            tracing::error!(target: "mydata::serve", "purge: NOT ERASED: {line}");
                        }
                    }
                    Ok(Err(e)) => tracing::error!(target: "mydata::serve", "purge failed: {e}"),
                    Err(e) => tracing::error!(target: "mydata::serve", "purge failed: {e}"),
                }
            }
        });
        // The DP heartbeat (spec §9.4, D30), every `heartbeat_interval_secs` (0: none).
        mydata_server::engine::heartbeat::spawn(platform.clone());
        let srv = mydata_server::http::server_with(platform, listener, sandbox_clock)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        srv.await
    })?;
    // Stopped (SIGINT/SIGTERM): commit what the write-behind store still holds (spec D47).
    if let Err(e) = store.flush() {
        eprintln!("writes not committed at shutdown: {e}");
        tracing::error!(target: "mydata::serve", event = "shutdown", committed = false, error = %e, "stopped; writes not committed");
        return Ok(1);
    }
    tracing::info!(target: "mydata::serve", event = "shutdown", committed = true, "mydata serve stopped");
    Ok(0)
}

/// Prints the outcome of a lifecycle command.
fn done(a: &IdArgs, v: serde_json::Value, what: &str) -> CliResult<i32> {
    if a.json {
        outln!("{v}")?;
    } else {
        outln!("{}: {what}", a.id)?;
    }
    Ok(0)
}

/// The kind of registration a lifecycle command (`suspend`, `resume`, `delete`) acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// An SP (`mydata sp …`), named by its `client_id`.
    Sp,
    /// A dataset (`mydata dp …`), named by its `resource_id`.
    Dp,
}

impl Registration {
    /// The JSON key of its id.
    fn id_key(self) -> &'static str {
        match self {
            Registration::Sp => "client_id",
            Registration::Dp => "resource_id",
        }
    }

    /// Prints `{id_key: id, key: value}` (or `id: what`) as the outcome of a command.
    fn done(
        self,
        a: &IdArgs,
        id: String,
        key: &str,
        value: serde_json::Value,
        what: &str,
    ) -> CliResult<i32> {
        let mut v = serde_json::Map::new();
        v.insert(self.id_key().into(), id.into());
        v.insert(key.into(), value);
        done(a, serde_json::Value::Object(v), what)
    }

    /// `suspend` (`off`) or `resume`: prints the registration's status after it.
    fn set_status(self, a: IdArgs, off: bool) -> CliResult<i32> {
        let p = open(load_config(&a.place)?)?;
        let (id, status) = match self {
            Registration::Sp => {
                let sp = mydata_server::lifecycle::set_sp_suspended(&p, &a.id, off)?;
                (sp.client_id, sp.status)
            }
            Registration::Dp => {
                let dp = mydata_server::lifecycle::set_dp_stopped(&p, &a.id, off)?;
                (dp.resource_id, dp.status)
            }
        };
        self.done(&a, id, "status", status.clone().into(), &status)
    }

    /// `delete`.
    fn delete(self, a: IdArgs) -> CliResult<i32> {
        let p = open(load_config(&a.place)?)?;
        match self {
            Registration::Sp => mydata_server::lifecycle::delete_sp(&p, &a.id)?,
            Registration::Dp => mydata_server::lifecycle::delete_dp(&p, &a.id)?,
        }
        self.done(&a, a.id.clone(), "deleted", true.into(), "deleted")
    }
}

/// Runs `mydata sp …`.
pub fn sp(cmd: SpCmd) -> CliResult<i32> {
    match cmd {
        SpCmd::Register(a) => {
            let p = open(load_config(&a.place)?)?;
            let resources: Vec<ResourceId> = if a.datasets.iter().any(|d| d == "*") {
                p.store
                    .list_dps()?
                    .into_iter()
                    .map(|d| d.resource_id.parse())
                    .collect::<Result<_, _>>()?
            } else {
                a.datasets
                    .iter()
                    .map(|d| d.parse())
                    .collect::<Result<_, _>>()?
            };
            let (_, creds) = p.register_sp(NewSp {
                tls_ca: read_tls_ca(a.tls_ca.as_deref())?,
                name: a.name,
                purpose: a.purpose,
                return_url: a.return_url,
                sp_api_url: a.sp_api_url,
                api_key: a.no_api_key.then(String::new),
                allowed_ips: a.allowed_ips,
                client_cert_sha256: a.client_cert_sha256,
                resources,
                jwe_mode: match a.jwe {
                    Jwe::Cbc => JweMode::Cbc,
                    Jwe::Gcm => JweMode::Gcm,
                },
                packaging_mode: match a.packaging {
                    Packaging::A => PackagingMode::A,
                    Packaging::B => PackagingMode::B,
                },
                justification: a.justification,
                ..NewSp::default()
            })?;
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&creds)?)?;
            } else {
                outln!("client_id      {}", creds.client_id)?;
                outln!("client_secret  {}", creds.client_secret)?;
                outln!("cbc_iv         {}", creds.cbc_iv)?;
                outln!(
                    "api_key        {}",
                    creds.api_key.as_deref().unwrap_or("(none)")
                )?;
                outln!(
                    "Keep these now: the platform stores them sealed and never shows them again."
                )?;
                outln!(
                    "secret_key is fresh for every transaction and arrives in the SP-API call (spec D23)."
                )?;
            }
            Ok(0)
        }
        SpCmd::Suspend(a) => Registration::Sp.set_status(a, true),
        SpCmd::Resume(a) => Registration::Sp.set_status(a, false),
        SpCmd::Delete(a) => Registration::Sp.delete(a),
        SpCmd::Rotate(a) => {
            let p = open(load_config(&a.place)?)?;
            let creds = mydata_server::lifecycle::rotate_sp(&p, &a.id)?;
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&creds)?)?;
            } else {
                outln!("client_id      {}", creds.client_id)?;
                outln!("client_secret  {}", creds.client_secret)?;
                outln!("cbc_iv         {}", creds.cbc_iv)?;
                outln!(
                    "api_key        {}",
                    creds.api_key.as_deref().unwrap_or("(none)")
                )?;
                outln!(
                    "Keep these now: the old ones no longer work, and these are not shown again."
                )?;
            }
            Ok(0)
        }
        SpCmd::Fetch(a) => crate::sp_client::fetch(a),
        SpCmd::Verify(a) => crate::sp_client::verify(a),
        SpCmd::List(a) => {
            let p = open(load_config(&a.place)?)?;
            let sps = p.store.list_sps()?;
            if a.json {
                let v: Vec<_> = sps
                    .iter()
                    .map(|s| {
                        json!({
                            "client_id": s.client_id, "name": s.name, "return_url": s.return_url,
                            "sp_api_url": s.sp_api_url, "allowed_ips": s.allowed_ips,
                            "datasets": s.resources.len(), "jwe_mode": s.jwe_mode,
                            "packaging_mode": s.packaging_mode, "status": s.status,
                            "api_key": s.api_key_sealed.is_some(),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                for s in sps {
                    outln!(
                        "{}  {}  mode {}  jwe {}  {} datasets  {}  {}",
                        s.client_id,
                        s.status,
                        s.packaging_mode,
                        s.jwe_mode,
                        s.resources.len(),
                        s.return_url,
                        s.name
                    )?;
                }
            }
            Ok(0)
        }
    }
}

/// The text of a `--tls-ca` file (checked as PEM certificates by the registration).
fn read_tls_ca(path: Option<&std::path::Path>) -> CliResult<Option<String>> {
    path.map(|p| {
        std::fs::read_to_string(p).map_err(|e| format!("--tls-ca {}: {e}", p.display()).into())
    })
    .transpose()
}

/// Runs `mydata dp …`.
pub fn dp(cmd: DpCmd) -> CliResult<i32> {
    match cmd {
        DpCmd::Register(a) => {
            let template = match &a.template {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Some(
                        Template::from_json(&text)
                            .map_err(|e| format!("{}: {e}", path.display()))?,
                    )
                }
            };
            let p = open(load_config(&a.place)?)?;
            let (rec, secret) = p.register_dp(NewDp {
                tls_ca: read_tls_ca(a.tls_ca.as_deref())?,
                resource_id: a.resource_id,
                name: a.name,
                provider: a.provider,
                scopes: a.scopes,
                secret: None,
                endpoint: a.endpoint,
                method: match a.method {
                    Method::Get => DpMethod::Get,
                    Method::Post => DpMethod::Post,
                },
                claims: a.claims,
                identity_methods: a.identity_methods,
                template,
            })?;
            if a.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"resource_id": rec.resource_id, "resource_secret": secret})
                    )?
                )?;
            } else {
                outln!("resource_id      {}", rec.resource_id)?;
                outln!("resource_secret  {secret}")?;
                outln!("Keep the secret now: the platform stores only a keyed hash of it.")?;
            }
            Ok(0)
        }
        DpCmd::Suspend(a) => Registration::Dp.set_status(a, true),
        DpCmd::Resume(a) => Registration::Dp.set_status(a, false),
        DpCmd::Delete(a) => Registration::Dp.delete(a),
        DpCmd::Rotate(a) => {
            let p = open(load_config(&a.place)?)?;
            let secret = mydata_server::lifecycle::rotate_dp(&p, &a.id)?;
            if a.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"resource_id": a.id, "resource_secret": secret})
                    )?
                )?;
            } else {
                outln!("resource_id      {}", a.id)?;
                outln!("resource_secret  {secret}")?;
                outln!("Keep the secret now: the old one no longer works.")?;
            }
            Ok(0)
        }
        DpCmd::List(a) => {
            let p = open(load_config(&a.place)?)?;
            let dps = p.store.list_dps()?;
            if a.json {
                let v: Vec<_> = dps
                    .iter()
                    .map(|d| {
                        json!({
                            "resource_id": d.resource_id, "name": d.name, "provider": d.provider,
                            "scopes": d.scopes, "endpoint": d.endpoint, "method": d.method,
                            "claims": d.claims, "identity_methods": d.identity_methods,
                            "status": d.status,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                for d in dps {
                    outln!(
                        "{}  {}  {}  {}  {}",
                        d.resource_id,
                        d.status,
                        d.scopes.join(" "),
                        d.endpoint,
                        d.name
                    )?;
                }
            }
            Ok(0)
        }
    }
}
