//! Every configuration key as a flag of `mydata serve` and `mydata config check`: `--key VALUE`
//! means what `key = VALUE` means in the file and `MYDATA_KEY=VALUE` in the environment
//! (`mydata_server::config_layers`). `--data-dir` and `--config` are the global flags of
//! [`crate::server_cmds::Where`].

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use mydata_server::config::Config;
use mydata_server::config_layers::{COMMA_LISTS, KEYS, env_name};
use serde_json::Value;

/// The settings given as flags: pairs of a key and its text, in the order of `KEYS`.
#[derive(Debug, Clone, Default)]
pub struct Settings(pub Vec<(String, String)>);

/// Keys that are flags elsewhere (`--data-dir` is global).
const NOT_HERE: &[&str] = &["data_dir"];

/// One line of help per key (the sample `examples/mydata.toml` has the long form).
fn describe(key: &str) -> &'static str {
    match key {
        "listen" => "Address to listen on [127.0.0.1:8080]",
        "public_url" => "Public base URL [derived from listen]",
        "allow_shared_data_dir" => "Accept a data directory others may enter",
        "database_url" => "postgres://… (empty: SQLite in the data directory)",
        "workers" => "HTTP worker threads [0: one per core]",
        "max_connections" => "Inbound connections at once [0: from the open-file limit]",
        "sandbox" => "Load the sandbox registrations and run the sandbox DP",
        "sandbox_dp_url" => "Where the sandbox DP listens [http://127.0.0.1:8081]",
        "sandbox_sp_url" => "Base URL of the sandbox SPs [http://127.0.0.1:8090]",
        "sandbox_clock" => "Sandbox only: POST /sandbox/clock moves the clock",
        "sandbox_tls" => "Sandbox only: every hop on HTTPS with the sandbox TLS PKI",
        "smtp_url" => "SMTP server of e-mailed one-time passwords",
        "smtp_from" => "Sender of e-mailed one-time passwords",
        "sms_webhook" => "HTTP(S) gateway of texted one-time passwords",
        "registry" => "Citizen registry file (fixtures/citizens.json format)",
        "identity_pki" => "Issuers of the certificate methods (fixtures/pki/identity layout)",
        "card_agent_url" => "Local signing agent the identity page may ask (mydata card-agent)",
        "write_behind_ms" => "Batch window of writes in ms [10; 0: at once; ≤ 1000]",
        "package_memory_mb" => "SP packages kept in memory up to this many MiB [64]",
        "dp_trust_anchors" => "CA PEM files or directories DP packages chain to (repeat, or `:`)",
        "jwe_random_iv" => "Random content IV for CBC-mode JWEs instead of cbc_iv",
        "trusted_proxies" => "Proxies whose X-Forwarded-For is believed (repeat, or `,`)",
        "log_format" => "Log lines on standard error: human or json [human]",
        "metrics" => "Count requests and steps, serve GET /metrics [true]",
        "admin_listen" => "Serve /healthz, /readyz, /metrics only on this ip:port",
        "tls_cert" => "Serve HTTPS with this certificate chain (PEM)",
        "tls_key" => "Private key of --tls-cert (PEM)",
        "tls_client_ca" => "Ask clients for certificates chaining to these CAs (PEM)",
        "dp_connect_timeout_secs" => "DP-API connect timeout [15]",
        "dp_call_timeout_secs" => "DP-API call timeout, body included [300]",
        "dp_transport_retry_secs" => "Wait after a DP transport error [30]",
        "sp_api_connect_timeout_secs" => "SP-API connect timeout [15]",
        "sp_api_timeout_secs" => "SP-API call timeout [30]",
        "tls_ca_file" => "Extra CA PEM trusted for outgoing HTTPS (SP-API, DP-API)",
        "tls_client_cert" => "Client certificate PEM presented to SPs and DPs (mutual TLS)",
        "tls_client_key" => "Private key PEM of tls_client_cert",
        "heartbeat_interval_secs" => "Seconds between DP heartbeats [300; 0: none]",
        _ => "See examples/mydata.toml",
    }
}

fn kind(key: &str) -> Value {
    serde_json::to_value(Config::default())
        .ok()
        .and_then(|v| v.get(key).cloned())
        .unwrap_or(Value::Null)
}

impl FromArgMatches for Settings {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut out = Vec::new();
        for key in KEYS.iter().filter(|k| !NOT_HERE.contains(k)) {
            let Ok(Some(values)) = m.try_get_many::<String>(key) else {
                continue;
            };
            let values: Vec<&String> = values.collect();
            let text = if matches!(kind(key), Value::Array(_)) {
                values
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(if COMMA_LISTS.contains(key) { "," } else { ":" })
            } else {
                values.last().map(|s| s.to_string()).unwrap_or_default()
            };
            out.push((key.to_string(), text));
        }
        Ok(Settings(out))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Settings {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd.next_help_heading("Settings (also `KEY = …` in --config, MYDATA_KEY)");
        for key in KEYS.iter().filter(|k| !NOT_HERE.contains(k)) {
            // Flag names live as long as the command (built once per process).
            let long: &'static str = Box::leak(key.replace('_', "-").into_boxed_str());
            let help = format!("{} (`{key}`, {})", describe(key), env_name(key));
            let arg = Arg::new(*key).long(long).help(help);
            let arg = match kind(key) {
                Value::Bool(_) => arg
                    .value_name("BOOL")
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .action(ArgAction::Set),
                Value::Array(_) if COMMA_LISTS.contains(key) => {
                    arg.value_name("LIST").action(ArgAction::Append)
                }
                Value::Array(_) => arg.value_name("PATHS").action(ArgAction::Append),
                Value::Number(_) => arg.value_name("N").action(ArgAction::Set),
                _ => arg.value_name("VALUE").action(ArgAction::Set),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Every key but the global `--data-dir` is a flag, with its own help line.
    #[test]
    fn every_key_is_a_described_flag() {
        for key in KEYS.iter().filter(|k| !NOT_HERE.contains(k)) {
            assert_ne!(describe(key), "See examples/mydata.toml", "{key}");
        }
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            s: Settings,
        }
        let t = T::try_parse_from([
            "t",
            "--sandbox",
            "--listen",
            "127.0.0.1:1",
            "--dp-trust-anchors",
            "/a",
            "--dp-trust-anchors",
            "/b",
            "--jwe-random-iv=false",
        ])
        .unwrap();
        assert_eq!(
            t.s.0,
            [
                ("listen".to_string(), "127.0.0.1:1".to_string()),
                ("sandbox".into(), "true".into()),
                ("dp_trust_anchors".into(), "/a:/b".into()),
                ("jwe_random_iv".into(), "false".into()),
            ]
        );
    }
}
