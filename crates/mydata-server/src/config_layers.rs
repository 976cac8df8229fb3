//! The three layers of the configuration, and the checks of the result.
//!
//! One key has one meaning everywhere: `key = …` in the TOML file, `MYDATA_KEY` in the
//! environment, `--key …` on `mydata serve` and `mydata config check` (a `_` in the key is a
//! `-` in the flag). The file is read first, then the environment, then the flags; the last
//! layer that sets a key wins. A value from the environment or a flag is text, read as the
//! key's type: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` for a switch, a decimal number,
//! or paths separated by `:` for a list of paths.
//!
//! `public_url`, when no layer sets it, is derived from `listen` (`http://{listen}`, with a
//! wildcard address read as loopback and a warning), so moving the listener by any layer
//! moves the public URL with it. [`check`] then names the settings that disagree.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{ServerError, ServerResult};

impl Config {
    /// Reads a TOML file (if given), then applies `MYDATA_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> ServerResult<Self> {
        Ok(Self::load_layers(file, env, [])?.config)
    }

    /// Reads a TOML file (if given), then `MYDATA_*` variables from `env`, then `flags` (pairs
    /// of a key name and its value, as `mydata serve --KEY VALUE` gives them): each key means
    /// the same in the three layers, the later layer wins (`MYDATA_LISTEN` ≡ `listen` ≡
    /// `--listen`). `public_url`, when no layer sets it, is derived from `listen`.
    pub fn load_layers(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: impl IntoIterator<Item = (String, String)>,
    ) -> ServerResult<Loaded> {
        load(file, env, flags)
    }

    /// The listener's address as this machine calls it (`http://{listen}`, a wildcard address
    /// read as loopback): where an in-process component (the sandbox DP) reaches the platform,
    /// whatever `public_url` says.
    pub fn local_url(&self) -> String {
        format!("{}://{}", self.listen_scheme(), local_addr(self.listen))
    }

    /// `https` when the listener serves TLS itself (`tls_cert`, or the sandbox's certificate
    /// with `sandbox_tls`), else `http`.
    pub fn listen_scheme(&self) -> &'static str {
        if self.tls_cert.is_some() || (self.sandbox && self.sandbox_tls) {
            "https"
        } else {
            "http"
        }
    }
}

/// Every key of [`Config`], in the order of the sample file; a test checks that it lists
/// exactly the fields of [`Config`].
pub const KEYS: &[&str] = &[
    "listen",
    "public_url",
    "data_dir",
    "allow_shared_data_dir",
    "database_url",
    "workers",
    "max_connections",
    "sandbox",
    "sandbox_dp_url",
    "sandbox_sp_url",
    "sandbox_clock",
    "sandbox_tls",
    "smtp_url",
    "smtp_from",
    "sms_webhook",
    "registry",
    "identity_pki",
    "card_agent_url",
    "write_behind_ms",
    "package_memory_mb",
    "dp_trust_anchors",
    "jwe_random_iv",
    "trusted_proxies",
    "log_format",
    "metrics",
    "admin_listen",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "dp_connect_timeout_secs",
    "dp_call_timeout_secs",
    "dp_transport_retry_secs",
    "sp_api_connect_timeout_secs",
    "sp_api_timeout_secs",
    "tls_ca_file",
    "tls_client_cert",
    "tls_client_key",
    "heartbeat_interval_secs",
];

/// List keys whose environment and flag text is separated by commas, not by `:` as paths are
/// (their entries may be IPv6 addresses).
pub const COMMA_LISTS: &[&str] = &["trusted_proxies"];

/// Keys whose values may carry a password or a token; [`Loaded::effective`] redacts them.
const SECRET_KEYS: &[&str] = &["database_url", "smtp_url", "sms_webhook"];

/// The environment variable of a key: `MYDATA_` and the key in capitals.
pub fn env_name(key: &str) -> String {
    format!("MYDATA_{}", key.to_ascii_uppercase())
}

/// The flag of a key: `--` and the key with `-` for `_`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// Where a setting's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// No layer set it: the built-in default.
    Default,
    /// The TOML file.
    File,
    /// A `MYDATA_*` environment variable.
    Env,
    /// A command-line flag.
    Flag,
    /// Computed from other settings (`public_url` from `listen`).
    Derived,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "environment",
            Source::Flag => "flag",
            Source::Derived => "derived",
        })
    }
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works, but probably not as meant; `mydata serve` prints it and starts.
    Warning,
    /// Cannot work; `mydata serve` refuses to start.
    Error,
}

/// A setting that disagrees with another or with the place it runs in.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// The key at fault.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: {}: {}", self.key, self.message)
    }
}

/// A loaded configuration: the values, where each came from, and what [`check`] found.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The source of every key.
    pub sources: BTreeMap<String, Source>,
    /// Warnings and errors, errors first.
    pub problems: Vec<Problem>,
}

impl Loaded {
    /// The problems that forbid starting.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    /// Every key with its effective value (secrets redacted, [`redact_url`]) and its source,
    /// in the order of [`KEYS`].
    pub fn effective(&self) -> Vec<(&'static str, Value, Source)> {
        let values = match serde_json::to_value(&self.config) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        KEYS.iter()
            .map(|k| {
                let mut v = values.get(*k).cloned().unwrap_or(Value::Null);
                if SECRET_KEYS.contains(k)
                    && let Value::String(s) = &v
                {
                    v = Value::String(redact_url(s));
                }
                let source = self.sources.get(*k).copied().unwrap_or(Source::Default);
                (*k, v, source)
            })
            .collect()
    }
}

/// `url` with its password and its query replaced by `***` (a token may ride in either); text
/// that is not a URL with one of them comes back as it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let mut changed = false;
    if u.password().is_some() && u.set_password(Some("***")).is_ok() {
        changed = true;
    }
    if u.query().is_some() {
        u.set_query(Some("***"));
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        url.to_string()
    }
}

fn defaults() -> ServerResult<Map<String, Value>> {
    match serde_json::to_value(Config::default()) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ServerError::Internal(
            "the default configuration is not an object".into(),
        )),
    }
}

/// Reads the text of an environment variable or a flag as the type of the key's default.
fn from_text(key: &str, default: &Value, text: &str) -> Result<Value, String> {
    match default {
        Value::Bool(_) => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
            "0" | "false" | "no" | "off" | "" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {text:?}")),
        },
        Value::Number(_) => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("expected a number, got {text:?}")),
        // An optional key unset by default (`admin_listen`): empty text leaves it unset.
        Value::Null if text.trim().is_empty() => Ok(Value::Null),
        Value::Array(_) if COMMA_LISTS.contains(&key) => Ok(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| Value::String(e.to_string()))
                .collect(),
        )),
        Value::Array(_) => Ok(Value::Array(
            std::env::split_paths(text)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| Value::String(p.display().to_string()))
                .collect(),
        )),
        _ => Ok(Value::String(text.to_string())),
    }
}

/// Checks one value alone, so that the message names the layer and the key.
fn check_one(defaults: &Map<String, Value>, key: &str, v: &Value, label: &str) -> ServerResult<()> {
    let mut m = defaults.clone();
    m.insert(key.to_string(), v.clone());
    Config::deserialize(Value::Object(m))
        .map(|_| ())
        .map_err(|e| ServerError::Config(format!("{label}: {e}")))
}

/// See [`Config::load_layers`].
pub(crate) fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: impl IntoIterator<Item = (String, String)>,
) -> ServerResult<Loaded> {
    let defaults = defaults()?;
    let mut merged = defaults.clone();
    let mut sources: BTreeMap<String, Source> = defaults
        .keys()
        .map(|k| (k.clone(), Source::Default))
        .collect();
    if let Some(p) = file {
        let at = |e: &dyn std::fmt::Display| ServerError::Config(format!("{}: {e}", p.display()));
        let text = std::fs::read_to_string(p).map_err(|e| at(&e))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| at(&e))?;
        for (k, v) in table {
            if !defaults.contains_key(&k) {
                return Err(at(&format!("unknown key `{k}`")));
            }
            let v = serde_json::to_value(&v).map_err(|e| at(&e))?;
            check_one(&defaults, &k, &v, &format!("{}: {k}", p.display()))?;
            merged.insert(k.clone(), v);
            sources.insert(k, Source::File);
        }
    }
    for (name, text) in env {
        let Some(rest) = name.strip_prefix("MYDATA_") else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        let Some(default) = defaults.get(&key) else {
            continue;
        };
        let v = from_text(&key, default, &text)
            .map_err(|w| ServerError::Config(format!("{name}: {w}")))?;
        check_one(&defaults, &key, &v, &name)?;
        merged.insert(key.clone(), v);
        sources.insert(key, Source::Env);
    }
    for (key, text) in flags {
        let flag = flag_name(&key);
        let Some(default) = defaults.get(&key) else {
            return Err(ServerError::Config(format!("{flag}: not a setting")));
        };
        let v = from_text(&key, default, &text)
            .map_err(|w| ServerError::Config(format!("{flag}: {w}")))?;
        check_one(&defaults, &key, &v, &flag)?;
        merged.insert(key.clone(), v);
        sources.insert(key, Source::Flag);
    }
    let mut config = Config::deserialize(Value::Object(merged))
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let mut problems = Vec::new();
    // The sandbox on HTTPS: its default addresses too (an address set anywhere stays as set).
    if config.sandbox && config.sandbox_tls {
        for (key, url) in [
            ("sandbox_dp_url", &mut config.sandbox_dp_url),
            ("sandbox_sp_url", &mut config.sandbox_sp_url),
        ] {
            if sources.get(key) == Some(&Source::Default)
                && let Some(rest) = url.strip_prefix("http://")
            {
                *url = format!("https://{rest}");
                sources.insert(key.into(), Source::Derived);
            }
        }
    }
    if sources.get("public_url") == Some(&Source::Default) {
        config.public_url = format!("{}://{}", config.listen_scheme(), local_addr(config.listen));
        sources.insert("public_url".into(), Source::Derived);
        if config.listen.ip().is_unspecified() {
            problems.push(Problem {
                severity: Severity::Warning,
                key: "public_url".into(),
                message: format!(
                    "derived as {} from the wildcard address {}: SPs and citizens elsewhere \
                     need the address they reach; set public_url",
                    config.public_url, config.listen
                ),
            });
        }
    }
    let config = config.validated()?;
    problems.extend(check(&config));
    problems.sort_by_key(|p| p.severity != Severity::Error);
    Ok(Loaded {
        config,
        sources,
        problems,
    })
}

/// `listen` as an address this machine can call: a wildcard address becomes loopback.
pub(crate) fn local_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// The host and port of `url` when the host is this machine (a loopback address or
/// `localhost`).
fn loopback_port(url: &url::Url) -> Option<u16> {
    let local = match url.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    local.then(|| url.port_or_known_default()).flatten()
}

/// Whether the listener, bound to `listen`, answers on loopback.
fn listens_on_loopback(listen: SocketAddr) -> bool {
    listen.ip().is_loopback() || listen.ip().is_unspecified()
}

/// The settings that disagree with each other: errors forbid starting (`mydata serve` refuses
/// them), warnings are printed.
pub fn check(c: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut err = |key: &str, message: String| {
        out.push(Problem {
            severity: Severity::Error,
            key: key.into(),
            message,
        })
    };
    match url::Url::parse(&c.public_url) {
        Err(e) => err(
            "public_url",
            format!("{:?} is not a URL: {e}", c.public_url),
        ),
        Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host().is_none() => err(
            "public_url",
            format!("{} is not an http(s) URL with a host", c.public_url),
        ),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => err(
            "public_url",
            format!("{} carries a query or a fragment", c.public_url),
        ),
        Ok(u) => {
            if let Some(port) = loopback_port(&u)
                && (port != c.listen.port() || !listens_on_loopback(c.listen))
            {
                err(
                    "public_url",
                    format!(
                        "{} is this machine, but the server listens on {}: nothing answers \
                         there (leave public_url out to derive it from listen, or make them agree)",
                        c.public_url, c.listen
                    ),
                );
            } else if loopback_port(&u).is_some() && u.scheme() != c.listen_scheme() {
                err(
                    "public_url",
                    format!(
                        "{} is this machine, but the listener speaks {} (tls_cert {})",
                        c.public_url,
                        c.listen_scheme(),
                        if c.tls_cert.is_some() { "set" } else { "unset" }
                    ),
                );
            }
        }
    }
    if c.sandbox {
        let mut ports = Vec::new();
        for (key, value) in [
            ("sandbox_dp_url", &c.sandbox_dp_url),
            ("sandbox_sp_url", &c.sandbox_sp_url),
        ] {
            match url::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    if let Some(port) = loopback_port(&u) {
                        if port == c.listen.port() && listens_on_loopback(c.listen) {
                            err(
                                key,
                                format!(
                                    "{value} is the platform's own address (listen {}): give \
                                     the sandbox its own port",
                                    c.listen
                                ),
                            );
                        }
                        ports.push((key, port));
                    }
                }
                _ => err(key, format!("{value:?} is not an http(s) URL with a host")),
            }
        }
        if let [(_, a), (_, b)] = ports.as_slice()
            && a == b
        {
            err(
                "sandbox_sp_url",
                format!("the same port as sandbox_dp_url ({a}) on this machine"),
            );
        }
    } else {
        if c.sandbox_tls {
            err(
                "sandbox_tls",
                "only valid with sandbox (--sandbox-tls needs --sandbox)".into(),
            );
        }
        if c.sandbox_clock {
            err(
                "sandbox_clock",
                "only valid with sandbox (--sandbox-clock needs --sandbox; never for production)"
                    .into(),
            );
        }
        if c.dp_trust_anchors.is_empty() {
            err(
                "dp_trust_anchors",
                "required outside the sandbox: the CA certificates DP packages must chain to"
                    .into(),
            );
        }
    }
    if let Err(bad) =
        mydata_protocol::flow::TrustedProxies::parse(c.trusted_proxies.iter().map(String::as_str))
    {
        err(
            "trusted_proxies",
            format!("{bad:?} is neither an IP address nor a CIDR prefix (10.0.0.0/8)"),
        );
    }
    match (&c.tls_cert, &c.tls_key) {
        (Some(_), None) => err("tls_key", "tls_cert is set: its key is needed too".into()),
        (None, Some(_)) => err("tls_cert", "tls_key is set without a certificate".into()),
        _ => {}
    }
    if c.tls_client_ca.is_some() && c.listen_scheme() == "http" {
        err(
            "tls_client_ca",
            "client certificates need the listener to serve TLS itself (tls_cert, tls_key)".into(),
        );
    }
    // The platform's client certificate for mutual TLS toward SPs and DPs (D49): both or none.
    match (&c.tls_client_cert, &c.tls_client_key) {
        (Some(_), None) => err(
            "tls_client_key",
            "required with tls_client_cert (the certificate's private key, PEM)".into(),
        ),
        (None, Some(_)) => err(
            "tls_client_cert",
            "required with tls_client_key (the client certificate chain, PEM)".into(),
        ),
        _ => {}
    }
    let postgres = ["postgres://", "postgresql://"];
    if !c.database_url.is_empty() && !postgres.iter().any(|p| c.database_url.starts_with(p)) {
        err(
            "database_url",
            format!(
                "{} is not a postgres:// URL (leave it empty for the embedded SQLite)",
                redact_url(&c.database_url)
            ),
        );
    }
    if !c.sandbox
        && c.listen_scheme() == "http"
        && let Ok(u) = url::Url::parse(&c.public_url)
        && u.scheme() == "http"
        && loopback_port(&u).is_none()
    {
        out.push(Problem {
            severity: Severity::Warning,
            key: "public_url".into(),
            message: format!(
                "{} is plain HTTP on the network: put the platform behind a TLS proxy and give \
                 its https:// address",
                c.public_url
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `trusted_proxies` (D26) takes IPv6 entries from the environment (commas, not `:`), and
    /// an entry that is neither an address nor a prefix is a problem naming it.
    #[test]
    fn trusted_proxies_split_on_commas_and_bad_entries_are_named() {
        let l = Config::load_layers(
            None,
            [(
                "MYDATA_TRUSTED_PROXIES".to_string(),
                "10.0.0.0/8, 2001:db8::1".to_string(),
            )],
            [],
        )
        .unwrap();
        assert_eq!(l.config.trusted_proxies, ["10.0.0.0/8", "2001:db8::1"]);
        assert!(!check(&l.config).iter().any(|p| p.key == "trusted_proxies"));
        let c = Config {
            trusted_proxies: vec!["10.0.0.0/8".into(), "lb.internal".into()],
            ..Config::default()
        };
        let bad: Vec<_> = check(&c)
            .into_iter()
            .filter(|p| p.key == "trusted_proxies")
            .collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].severity, Severity::Error);
        assert!(bad[0].message.contains("lb.internal"), "{}", bad[0].message);
    }

    /// One key, one meaning: the file, `MYDATA_KEY` and `--key` set the same thing, the later
    /// layer wins, and `public_url` follows `listen` whichever layer moved it (issue 14 item 3).
    #[test]
    fn layers_mean_the_same_and_public_url_follows_listen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let flag = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        // listen by each layer: public_url derived from it.
        std::fs::write(&p, "listen = \"127.0.0.1:9001\"\n").unwrap();
        let by_file = Config::load_layers(Some(&p), [], []).unwrap();
        let by_env = Config::load_layers(None, env("MYDATA_LISTEN", "127.0.0.1:9001"), []).unwrap();
        let by_flag = Config::load_layers(None, [], flag("listen", "127.0.0.1:9001")).unwrap();
        for (l, src) in [
            (&by_file, Source::File),
            (&by_env, Source::Env),
            (&by_flag, Source::Flag),
        ] {
            assert_eq!(l.config.listen.port(), 9001);
            assert_eq!(l.config.public_url, "http://127.0.0.1:9001");
            assert_eq!(l.sources["listen"], src);
            assert_eq!(l.sources["public_url"], Source::Derived);
            assert!(l.errors().next().is_none() || !l.config.sandbox);
        }
        // The flag beats the environment, which beats the file.
        let l = Config::load_layers(
            Some(&p),
            env("MYDATA_LISTEN", "127.0.0.1:9002"),
            flag("listen", "127.0.0.1:9003"),
        )
        .unwrap();
        assert_eq!(l.config.listen.port(), 9003);
        assert_eq!(l.config.public_url, "http://127.0.0.1:9003");
        // Every key has its variable and its flag, typed alike.
        for key in KEYS {
            let d = serde_json::to_value(Config::default()).unwrap()[key].clone();
            let text = match d {
                serde_json::Value::Bool(on) => if on { "no" } else { "yes" }.to_string(),
                serde_json::Value::Number(_) => "7".to_string(),
                serde_json::Value::Array(_) => "/a:/b".to_string(),
                _ if *key == "listen" || *key == "admin_listen" => "127.0.0.1:9".to_string(),
                _ if *key == "log_format" => "json".to_string(),
                _ if key.ends_with("_url") || *key == "sms_webhook" => {
                    if *key == "database_url" {
                        "postgres://h/d".to_string()
                    } else {
                        "http://127.0.0.1:7".to_string()
                    }
                }
                _ => "x".to_string(),
            };
            let a = Config::load_layers(None, env(&env_name(key), &text), []).unwrap();
            let b = Config::load_layers(None, [], flag(key, &text)).unwrap();
            let va = serde_json::to_value(&a.config).unwrap();
            let vb = serde_json::to_value(&b.config).unwrap();
            assert_eq!(va, vb, "{key}");
            assert_ne!(
                va[key],
                serde_json::to_value(Config::default()).unwrap()[key],
                "{key}"
            );
        }
        // Errors name the layer and the key.
        let e = Config::load_layers(None, [], flag("listen", "x")).unwrap_err();
        assert!(e.to_string().contains("--listen"), "{e}");
        let e = Config::load_layers(None, env("MYDATA_SANDBOX", "maybe"), []).unwrap_err();
        assert!(e.to_string().contains("MYDATA_SANDBOX"), "{e}");
        assert!(Config::load_layers(None, [], flag("nope", "1")).is_err());
        std::fs::write(&p, "workers = \"many\"\n").unwrap();
        let e = Config::load_layers(Some(&p), [], []).unwrap_err();
        assert!(e.to_string().contains("workers"), "{e}");
    }

    /// `KEYS` lists exactly the fields of `Config`, so that every field has its variable and
    /// its flag, and the sample file can be checked against it.
    #[test]
    fn keys_are_the_fields() {
        let v = serde_json::to_value(Config::default()).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    /// Settings that disagree are named: errors refuse, warnings inform.
    #[test]
    fn disagreeing_addresses_are_problems() {
        let flags = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let errors = |pairs: &[(&str, &str)]| -> Vec<String> {
            Config::load_layers(None, [], flags(pairs))
                .unwrap()
                .errors()
                .map(|p| p.key.clone())
                .collect()
        };
        assert!(errors(&[("sandbox", "1")]).is_empty());
        assert_eq!(
            errors(&[
                ("sandbox", "1"),
                ("listen", "127.0.0.1:9100"),
                ("public_url", "http://127.0.0.1:9200")
            ]),
            ["public_url"]
        );
        assert_eq!(
            errors(&[
                ("sandbox", "1"),
                ("listen", "0.0.0.0:9100"),
                ("public_url", "http://localhost:9100/")
            ]),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(&[
                ("sandbox", "1"),
                ("sandbox_dp_url", "http://127.0.0.1:8080")
            ]),
            ["sandbox_dp_url"]
        );
        assert_eq!(
            errors(&[
                ("sandbox", "1"),
                ("sandbox_sp_url", "http://127.0.0.1:8081")
            ]),
            ["sandbox_sp_url"]
        );
        assert_eq!(
            errors(&[("sandbox_clock", "1")]),
            ["sandbox_clock", "dp_trust_anchors"]
        );
        assert_eq!(
            errors(&[("sandbox", "1"), ("database_url", "mysql://u:pw@h/d")]),
            ["database_url"]
        );
        assert_eq!(
            errors(&[("sandbox", "1"), ("public_url", "ftp://x")]),
            ["public_url"]
        );
        // A wildcard listener: derived public_url, with a warning.
        let l = Config::load_layers(
            None,
            [],
            flags(&[("sandbox", "1"), ("listen", "0.0.0.0:9300")]),
        )
        .unwrap();
        assert_eq!(l.config.public_url, "http://127.0.0.1:9300");
        assert!(l.problems.iter().any(|p| p.severity == Severity::Warning));
        assert_eq!(l.config.local_url(), "http://127.0.0.1:9300");
        // Secrets are redacted in the effective view.
        let l = Config::load_layers(
            None,
            [],
            flags(&[
                ("sandbox", "1"),
                ("database_url", "postgres://u:hunter2@h/d"),
                ("sms_webhook", "https://sms.test/send?token=abc"),
            ]),
        )
        .unwrap();
        let shown = format!("{:?}", l.effective());
        assert!(
            !shown.contains("hunter2") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(shown.contains("postgres://u:***@h/d"), "{shown}");
    }

    /// `examples/mydata.toml` loads with this loader, has no problem, and names every key.
    #[test]
    fn the_sample_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mydata.toml");
        let l = Config::load_layers(Some(&path), [], []).unwrap();
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.config.public_url, "https://mydata.example.gov.tw");
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        for key in KEYS {
            // A key unset by default (`admin_listen`) has no TOML value for "unset": the sample
            // shows it commented out.
            let unset = defaults[*key].is_null();
            assert!(
                text.lines().any(|line| {
                    line.starts_with(&format!("{key} = "))
                        || (unset && line.starts_with(&format!("# {key} = ")))
                }),
                "{key} missing from the sample"
            );
            if !unset {
                assert_eq!(l.sources[*key], Source::File, "{key}");
            }
        }
    }
}
