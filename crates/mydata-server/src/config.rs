//! Server configuration: a TOML file, then `MYDATA_*` environment variables, then flags.
//!
//! Every key has one name in the three layers: `key` in the file, `MYDATA_KEY` in the
//! environment, `--key` on `mydata serve`. The loading (`Config::load`, `Config::load_layers`)
//! and the checks are in `config_layers`, which depends on this module and not the reverse.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ServerError, ServerResult};

/// The largest `write_behind_ms`: a longer window would only widen what a crash can lose.
pub const MAX_WRITE_BEHIND_MS: u64 = 1_000;

/// The server's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Public base URL (the `issuer` of the metadata, links in pages).
    pub public_url: String,
    /// Data directory: `mydata.sqlite`, `master.key`, packages. Created with mode 0700 when
    /// missing; everything in it is owner-only (spec D48).
    pub data_dir: PathBuf,
    /// Accept a data directory that group or others may read, write or enter (mode 0700
    /// otherwise required: the server refuses to start, and says `chmod 700 DIR`). The files in
    /// it stay 0600 either way. Default false. `MYDATA_ALLOW_SHARED_DATA_DIR`.
    pub allow_shared_data_dir: bool,
    /// The database (spec D45): empty = the embedded SQLite file `mydata.sqlite` in `data_dir`;
    /// `postgres://user:password@host:port/database` = PostgreSQL (feature `postgres`).
    /// `MYDATA_DATABASE_URL`.
    pub database_url: String,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// At most this many inbound connections at once, in all workers (spec D48); more wait in
    /// the listen backlog. 0 (the default) = the open-file limit (`RLIMIT_NOFILE`, which
    /// `mydata serve` raises to its hard limit) minus a reserve of max(256, limit / 4) file
    /// descriptors for outgoing calls, the database and files ([`Config::connection_cap`]).
    /// `MYDATA_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Load the sandbox registrations.
    pub sandbox: bool,
    /// Base URL of the sandbox DP; each dataset's endpoint is `{base}/dp/{resource_id}`.
    pub sandbox_dp_url: String,
    /// SMTP server for e-mailed one-time passwords: `smtp://host:port` (plain, for a local
    /// relay), `smtp://host:port?tls=required` (STARTTLS) or `smtps://host:port`; user and
    /// password may be given in the URL. Empty = no e-mail.
    pub smtp_url: String,
    /// Sender address of e-mailed one-time passwords.
    pub smtp_from: String,
    /// SMS gateway for texted one-time passwords: an HTTP(S) URL that receives
    /// `POST {"to": "...", "text": "..."}` (spec D46). Empty = no SMS.
    pub sms_webhook: String,
    /// The citizen registry that the basic-information and two-documents checks use (the format
    /// of `fixtures/citizens.json`). Empty = the sandbox fixture with `sandbox`, otherwise none
    /// (and those checks are not offered).
    pub registry: String,
    /// The issuers of the certificate identity methods (spec D51): a directory laid out like
    /// `fixtures/pki/identity/` (`citizen-ca.pem`/`.crl`, `health-ca…`, `financial-ca…`,
    /// `business-ca…`, `certificates.json`). Empty = the sandbox issuers with `sandbox`,
    /// otherwise none (and those methods are not offered).
    pub identity_pki: String,
    /// A local signing agent the identity page may ask to sign a certificate challenge
    /// (`mydata card-agent`, spec D51), e.g. `http://127.0.0.1:61161`: the page gets a small
    /// script and a PIN field, and its CSP allows that origin. Empty = none (a pasted signature
    /// still works).
    pub card_agent_url: String,
    /// Sandbox only: the platform clock is system time plus an offset that `POST /sandbox/clock`
    /// advances (spec `conformance-platform.md`). Only valid with `sandbox` (`mydata serve`
    /// refuses it otherwise). Never for production.
    pub sandbox_clock: bool,
    /// Sandbox only: every hop on HTTPS with the sandbox TLS PKI (`fixtures/pki/tls/`, spec
    /// D50): the listener serves the sandbox `platform` certificate unless `tls_cert` is set, the
    /// sandbox DP serves HTTPS, the default `sandbox_dp_url` and `sandbox_sp_url` are `https://`,
    /// and outgoing calls trust the sandbox TLS root. `MYDATA_SANDBOX_TLS`, `--sandbox-tls`.
    pub sandbox_tls: bool,
    /// Base URL that replaces `http://127.0.0.1:8090` in the sandbox SPs' `return_url` and
    /// `sp_api_url` when they are registered (`fixtures/sandbox.json`).
    pub sandbox_sp_url: String,
    /// `mydata serve` keeps live transactions in memory and commits their writes in batches,
    /// at most this many milliseconds after the first write of a batch (spec D47); the ticket
    /// handed to an SP and the endings of transactions are committed before they are acted on
    /// (D47, "What a crash loses"). 0 =
    /// every write goes to the database at once; at most 1,000. `MYDATA_WRITE_BEHIND_MS`.
    pub write_behind_ms: u64,
    /// SP packages waiting for their SP are kept in memory up to this many MiB in all, in
    /// files under `packages/` in the data directory beyond it (spec D47); 0 = always files.
    /// `MYDATA_PACKAGE_MEMORY_MB`.
    pub package_memory_mb: usize,
    /// The CA certificates DP packages must chain to (spec D9 step 4, D35): PEM files, or
    /// directories whose `*.pem` and `*.crt` files are read (not recursive). Required outside the
    /// sandbox (the server refuses to start without it); in the sandbox they are trusted
    /// besides the sandbox CA. Changed files are taken up within 2 s ([`crate::trust`]).
    /// `MYDATA_DP_TRUST_ANCHORS` (paths separated by `:`).
    pub dp_trust_anchors: Vec<PathBuf>,
    /// The content IV of a CBC-mode JWE (`A256CBC-HS512`) on the MyData-API: false (the
    /// default) = the SP's `cbc_iv`, as the platform in service does and some SP libraries
    /// check; true = 16 fresh random bytes per JWE (spec D2, §12). GCM-mode JWEs always have a
    /// random IV. `MYDATA_JWE_RANDOM_IV`.
    pub jwe_random_iv: bool,
    /// The reverse proxies (addresses or CIDR prefixes) whose `X-Forwarded-For` is believed
    /// (spec D26): from a request whose TCP peer is one of them, the source IP is the right-most
    /// address in that header that is not one of them. Empty (the default): the source IP is
    /// always the TCP peer. `MYDATA_TRUSTED_PROXIES` (comma-separated).
    pub trusted_proxies: Vec<String>,
    /// Connect timeout of one DP-API call, in seconds (spec §9.3, D29; default 15).
    /// `MYDATA_DP_CONNECT_TIMEOUT_SECS`.
    pub dp_connect_timeout_secs: u64,
    /// Total time of one DP-API call, in seconds: connect, headers and the whole body (spec
    /// §9.3, D29; default 300). A call that outlasts it, or whose body breaks off, is a transport
    /// error: the DP is called again after `dp_transport_retry_secs`, within the series' budget.
    /// `MYDATA_DP_CALL_TIMEOUT_SECS`.
    pub dp_call_timeout_secs: u64,
    /// Wait after a DP-API transport error or timeout before the next call, in seconds (spec
    /// §9.3, D29; default 30). `MYDATA_DP_TRANSPORT_RETRY_SECS`.
    pub dp_transport_retry_secs: u64,
    /// Connect timeout of the SP-API call, in seconds (spec §7, D22; default 15).
    /// `MYDATA_SP_API_CONNECT_TIMEOUT_SECS`.
    pub sp_api_connect_timeout_secs: u64,
    /// Total time of the SP-API call, in seconds, from connect to the SP's status (spec §7,
    /// D22; default 30). `MYDATA_SP_API_TIMEOUT_SECS`.
    pub sp_api_timeout_secs: u64,
    /// Seconds between two heartbeats of each DP endpoint (`GET {endpoint}?heartbeat=true`,
    /// spec §9.4, D30; default 300); 0 = no heartbeat (every endpoint then counts as
    /// reachable). `MYDATA_HEARTBEAT_INTERVAL_SECS`.
    pub heartbeat_interval_secs: u64,
    /// How `mydata serve` writes its log lines to standard error: `human` (the default) or
    /// `json` (one object per line; spec `operations.md`). `RUST_LOG` filters them.
    /// `MYDATA_LOG_FORMAT`, `--log-format`.
    pub log_format: crate::observe::logging::LogFormat,
    /// Count requests and transaction steps and serve `GET /metrics` (default true).
    /// `MYDATA_METRICS`.
    pub metrics: bool,
    /// A separate address for `/healthz`, `/readyz` and `/metrics` (spec `operations.md`); they
    /// are then served there only. Unset (the default) = on the main listener.
    /// `MYDATA_ADMIN_LISTEN`, `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// The listener serves HTTPS itself with this certificate chain (PEM: the leaf, then any
    /// intermediates); needs `tls_key`. Unset (the default) = plain HTTP, for a TLS proxy in
    /// front (spec D50). Changed files are taken up within 2 s, for new connections only.
    /// `MYDATA_TLS_CERT`, `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM). `MYDATA_TLS_KEY`, `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates on the listener must chain to: when set,
    /// the listener asks every client for a certificate, refuses one that does not chain, and
    /// lets an SP registered with certificate pins (`client_cert_sha256`) use the MyData-API only
    /// with one of them (spec D50). Needs `tls_cert`. `MYDATA_TLS_CLIENT_CA`.
    pub tls_client_ca: Option<PathBuf>,
    /// Extra CA certificates (a PEM file) trusted for outgoing HTTPS calls (SP-API, DP-API),
    /// besides the system roots (spec D49). A registration that pins its own CA (`--tls-ca`)
    /// is verified against that CA alone. Unset (the default): system roots only.
    /// `MYDATA_TLS_CA_FILE`.
    pub tls_ca_file: Option<PathBuf>,
    /// The platform's client certificate chain (PEM file, leaf first), presented to SPs and
    /// DPs that ask for one (mutual TLS, spec D22, D49); needs `tls_client_key`.
    /// `MYDATA_TLS_CLIENT_CERT`.
    pub tls_client_cert: Option<PathBuf>,
    /// The private key (PEM file) of `tls_client_cert`. `MYDATA_TLS_CLIENT_KEY`.
    pub tls_client_key: Option<PathBuf>,
}

/// The largest value of a `*_secs` timeout setting (one day).
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            data_dir: PathBuf::from("mydata-data"),
            allow_shared_data_dir: false,
            database_url: String::new(),
            workers: 0,
            max_connections: 0,
            sandbox: false,
            sandbox_dp_url: "http://127.0.0.1:8081".into(),
            smtp_url: String::new(),
            smtp_from: "MyData <no-reply@mydata.invalid>".into(),
            sms_webhook: String::new(),
            registry: String::new(),
            identity_pki: String::new(),
            card_agent_url: String::new(),
            sandbox_clock: false,
            sandbox_tls: false,
            sandbox_sp_url: "http://127.0.0.1:8090".into(),
            write_behind_ms: 10,
            package_memory_mb: 64,
            dp_trust_anchors: Vec::new(),
            jwe_random_iv: false,
            trusted_proxies: Vec::new(),
            dp_connect_timeout_secs: 15,
            dp_call_timeout_secs: 300,
            dp_transport_retry_secs: 30,
            sp_api_connect_timeout_secs: 15,
            sp_api_timeout_secs: 30,
            heartbeat_interval_secs: mydata_protocol::heartbeat::INTERVAL_SECS,
            log_format: crate::observe::logging::LogFormat::Human,
            metrics: true,
            admin_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }
}

impl Config {
    /// Checks the post-conditions of every layer: bounds of numbers, trailing slashes.
    pub(crate) fn validated(mut self) -> ServerResult<Self> {
        if self.write_behind_ms > MAX_WRITE_BEHIND_MS {
            return Err(ServerError::Config(format!(
                "write_behind_ms: at most {MAX_WRITE_BEHIND_MS}"
            )));
        }
        for (name, v) in [
            ("dp_connect_timeout_secs", self.dp_connect_timeout_secs),
            ("dp_call_timeout_secs", self.dp_call_timeout_secs),
            ("dp_transport_retry_secs", self.dp_transport_retry_secs),
            (
                "sp_api_connect_timeout_secs",
                self.sp_api_connect_timeout_secs,
            ),
            ("sp_api_timeout_secs", self.sp_api_timeout_secs),
        ] {
            if !(1..=MAX_TIMEOUT_SECS).contains(&v) {
                return Err(ServerError::Config(format!(
                    "{name}: from 1 to {MAX_TIMEOUT_SECS} seconds"
                )));
            }
        }
        if self.heartbeat_interval_secs > MAX_TIMEOUT_SECS {
            return Err(ServerError::Config(format!(
                "heartbeat_interval_secs: from 0 (no heartbeat) to {MAX_TIMEOUT_SECS} seconds"
            )));
        }
        self.public_url = self.public_url.trim_end_matches('/').to_string();
        self.sandbox_sp_url = self.sandbox_sp_url.trim_end_matches('/').to_string();
        self.sandbox_dp_url = self.sandbox_dp_url.trim_end_matches('/').to_string();
        Ok(self)
    }

    /// The HTTP worker threads: `workers`, or one per core when 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The cap on concurrent inbound connections, in all workers, under an open-file limit of
    /// `nofile` (spec D48): `max_connections` if set, else `nofile` minus a reserve of
    /// max(256, `nofile` / 4) for outgoing calls, the database and files, at least 1.
    pub fn connection_cap(&self, nofile: u64) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let reserve = (nofile / 4).max(256);
        usize::try_from(nofile.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:9000\"\nsandbox = true\n").unwrap();
        let c = Config::load(
            Some(&p),
            [(
                "MYDATA_PUBLIC_URL".to_string(),
                "http://x.test/".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert!(c.sandbox);
        assert_eq!(c.public_url, "http://x.test");
        std::fs::write(&p, "lisen = 1\n").unwrap();
        assert!(Config::load(Some(&p), []).is_err());
        assert!(Config::load(None, [("MYDATA_LISTEN".into(), "x".into())]).is_err());
        let c = Config::load(
            None,
            [
                ("MYDATA_SANDBOX".into(), "1".into()),
                ("MYDATA_SANDBOX_CLOCK".into(), "true".into()),
                (
                    "MYDATA_SANDBOX_SP_URL".into(),
                    "http://127.0.0.1:9999/".into(),
                ),
            ],
        )
        .unwrap();
        assert!(c.sandbox_clock);
        assert_eq!(c.sandbox_sp_url, "http://127.0.0.1:9999");
        assert_eq!(c.database_url, "");
        assert_eq!(c.write_behind_ms, 10);
        assert_eq!(c.package_memory_mb, 64);
        let c = Config::load(None, [("MYDATA_PACKAGE_MEMORY_MB".into(), "0".into())]).unwrap();
        assert_eq!(c.package_memory_mb, 0);
        let c = Config::load(None, [("MYDATA_WRITE_BEHIND_MS".into(), "0".into())]).unwrap();
        assert_eq!(c.write_behind_ms, 0);
        assert!(Config::load(None, [("MYDATA_WRITE_BEHIND_MS".into(), "-1".into())]).is_err());
        assert!(Config::load(None, [("MYDATA_WRITE_BEHIND_MS".into(), "1001".into())]).is_err());
        std::fs::write(&p, "database_url = \"postgres://127.0.0.1/a\"\n").unwrap();
        assert_eq!(
            Config::load(Some(&p), []).unwrap().database_url,
            "postgres://127.0.0.1/a"
        );
        let c = Config::load(
            Some(&p),
            [(
                "MYDATA_DATABASE_URL".into(),
                "postgres://127.0.0.1/b".into(),
            )],
        )
        .unwrap();
        assert_eq!(c.database_url, "postgres://127.0.0.1/b");
        assert!(!c.allow_shared_data_dir);
        assert_eq!(c.max_connections, 0);
        let c = Config::load(
            None,
            [
                ("MYDATA_ALLOW_SHARED_DATA_DIR".into(), "1".into()),
                ("MYDATA_MAX_CONNECTIONS".into(), "500".into()),
            ],
        )
        .unwrap();
        assert!(c.allow_shared_data_dir);
        assert_eq!(c.max_connections, 500);
        assert!(Config::load(None, [("MYDATA_MAX_CONNECTIONS".into(), "x".into())]).is_err());
        std::fs::write(&p, "allow_shared_data_dir = true\nmax_connections = 7\n").unwrap();
        let c = Config::load(Some(&p), []).unwrap();
        assert!(c.allow_shared_data_dir);
        assert_eq!(c.max_connections, 7);
    }

    /// `jwe_random_iv` (spec D2, §12; issue 20 item 10) is a key of the file and
    /// `MYDATA_JWE_RANDOM_IV`; off by default.
    #[test]
    fn jwe_random_iv_option() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "jwe_random_iv = true\n").unwrap();
        let c = Config::load(Some(&p), []).unwrap();
        assert!(c.jwe_random_iv);
        // The variable overrides the file, as for every key.
        let c = Config::load(Some(&p), [("MYDATA_JWE_RANDOM_IV".into(), "0".into())]).unwrap();
        assert!(!c.jwe_random_iv);
        assert!(!Config::default().jwe_random_iv);
        assert!(!Config::load(None, []).unwrap().jwe_random_iv);
        for on in ["1", "true", "yes"] {
            let c = Config::load(None, [("MYDATA_JWE_RANDOM_IV".into(), on.into())]).unwrap();
            assert!(c.jwe_random_iv, "{on}");
        }
        std::fs::write(&p, "jwe_random_iv = \"yes\"\n").unwrap();
        assert!(Config::load(Some(&p), []).is_err(), "a TOML boolean");
    }

    #[test]
    fn call_timeouts() {
        let c = Config::default();
        assert_eq!(
            (
                c.dp_connect_timeout_secs,
                c.dp_call_timeout_secs,
                c.dp_transport_retry_secs,
                c.sp_api_connect_timeout_secs,
                c.sp_api_timeout_secs
            ),
            (15, 300, 30, 15, 30)
        );
        let c = Config::load(
            None,
            [
                ("MYDATA_DP_CONNECT_TIMEOUT_SECS".into(), "2".into()),
                ("MYDATA_DP_CALL_TIMEOUT_SECS".into(), "3".into()),
                ("MYDATA_DP_TRANSPORT_RETRY_SECS".into(), "4".into()),
                ("MYDATA_SP_API_CONNECT_TIMEOUT_SECS".into(), "5".into()),
                ("MYDATA_SP_API_TIMEOUT_SECS".into(), "6".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            (
                c.dp_connect_timeout_secs,
                c.dp_call_timeout_secs,
                c.dp_transport_retry_secs,
                c.sp_api_connect_timeout_secs,
                c.sp_api_timeout_secs
            ),
            (2, 3, 4, 5, 6)
        );
        for k in [
            "MYDATA_DP_CONNECT_TIMEOUT_SECS",
            "MYDATA_DP_CALL_TIMEOUT_SECS",
            "MYDATA_DP_TRANSPORT_RETRY_SECS",
            "MYDATA_SP_API_CONNECT_TIMEOUT_SECS",
            "MYDATA_SP_API_TIMEOUT_SECS",
        ] {
            for bad in ["0", "86401", "x", "-1"] {
                assert!(
                    Config::load(None, [(k.into(), bad.into())]).is_err(),
                    "{k}={bad}"
                );
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "dp_call_timeout_secs = 1
sp_api_timeout_secs = 2
",
        )
        .unwrap();
        let c = Config::load(Some(&p), []).unwrap();
        assert_eq!((c.dp_call_timeout_secs, c.sp_api_timeout_secs), (1, 2));
    }

    /// `log_format`, `metrics` and `admin_listen` (spec `operations.md`): file, then variable.
    #[test]
    fn operations_settings() {
        use crate::observe::logging::LogFormat;
        let c = Config::default();
        assert_eq!(c.log_format, LogFormat::Human);
        assert!(c.metrics);
        assert_eq!(c.admin_listen, None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "log_format = \"json\"\nmetrics = false\nadmin_listen = \"127.0.0.1:9100\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), []).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(!c.metrics);
        assert_eq!(c.admin_listen, Some("127.0.0.1:9100".parse().unwrap()));
        let c = Config::load(
            Some(&p),
            [
                ("MYDATA_LOG_FORMAT".into(), "human".into()),
                ("MYDATA_METRICS".into(), "1".into()),
                ("MYDATA_ADMIN_LISTEN".into(), "".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Human);
        assert!(c.metrics);
        assert_eq!(c.admin_listen, None);
        assert!(Config::load(None, [("MYDATA_LOG_FORMAT".into(), "xml".into())]).is_err());
        assert!(Config::load(None, [("MYDATA_ADMIN_LISTEN".into(), "x".into())]).is_err());
        std::fs::write(&p, "log_format = \"xml\"\n").unwrap();
        assert!(Config::load(Some(&p), []).is_err());
    }

    #[test]
    fn connection_cap_leaves_a_reserve() {
        let c = Config::default();
        // Reserve max(256, limit / 4).
        assert_eq!(c.connection_cap(1024), 768);
        assert_eq!(c.connection_cap(20_000), 15_000);
        assert_eq!(c.connection_cap(100), 1);
        let c = Config {
            max_connections: 300,
            ..Config::default()
        };
        assert_eq!(c.connection_cap(1024), 300);
    }
}
