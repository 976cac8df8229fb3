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
    "smtp_url",
    "smtp_from",
    "sms_webhook",
    "registry",
    "write_behind_ms",
    "package_memory_mb",
    "dp_trust_anchors",
    "jwe_random_iv",
    "dp_connect_timeout_secs",
    "dp_call_timeout_secs",
    "dp_transport_retry_secs",
    "sp_api_connect_timeout_secs",
    "sp_api_timeout_secs",
];

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
fn from_text(default: &Value, text: &str) -> Result<Value, String> {
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
        let v =
            from_text(default, &text).map_err(|w| ServerError::Config(format!("{name}: {w}")))?;
        check_one(&defaults, &key, &v, &name)?;
        merged.insert(key.clone(), v);
        sources.insert(key, Source::Env);
    }
    for (key, text) in flags {
        let flag = flag_name(&key);
        let Some(default) = defaults.get(&key) else {
            return Err(ServerError::Config(format!("{flag}: not a setting")));
        };
        let v =
            from_text(default, &text).map_err(|w| ServerError::Config(format!("{flag}: {w}")))?;
        check_one(&defaults, &key, &v, &flag)?;
        merged.insert(key.clone(), v);
        sources.insert(key, Source::Flag);
    }
    let mut config = Config::deserialize(Value::Object(merged))
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let mut problems = Vec::new();
    if sources.get("public_url") == Some(&Source::Default) {
        config.public_url = format!("http://{}", local_addr(config.listen));
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
                Ok(u) if u.scheme() == "http" && u.host().is_some() => {
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
                _ => err(key, format!("{value:?} is not an http URL with a host")),
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
