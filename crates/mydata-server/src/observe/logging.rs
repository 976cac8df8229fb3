//! The log subscriber of `mydata serve`: `tracing` events, and the `log` records of the
//! crates that use the `log` macros (bridged by `tracing-log`), filtered by `RUST_LOG`
//! (`EnvFilter` syntax), written to standard error as human-readable lines or as JSON objects.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::error::{ServerError, ServerResult};

/// How log lines are written (`log_format`, `MYDATA_LOG_FORMAT`, `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (`message`, `event`,
    /// `tx`, `client_id`, …).
    Json,
}

impl FromStr for LogFormat {
    type Err = ServerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(ServerError::Config(format!(
                "log_format: expected human or json, not {other:?}"
            ))),
        }
    }
}

/// The filter when `RUST_LOG` is not set: the platform's own events at `info`, everything
/// else at `warn`.
pub const DEFAULT_FILTER: &str = "warn,mydata=info,mydata_server=info,mydata_cli=info";

/// The filter from `RUST_LOG`, or `default` when it is unset or empty. A `RUST_LOG` that does
/// not parse is an error naming it.
pub fn filter(default: &str) -> ServerResult<EnvFilter> {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(v.trim()).map_err(|e| ServerError::Config(format!("RUST_LOG: {e}")))
        }
        _ => EnvFilter::try_new(default).map_err(|e| ServerError::Config(format!("filter: {e}"))),
    }
}

/// Installs the process-wide subscriber writing to standard error, with `RUST_LOG` (or
/// `default`) as its filter, and routes the `log` macros to it. Fails when a subscriber or a
/// logger is already installed.
pub fn init(format: LogFormat, default: &str) -> ServerResult<()> {
    init_with_writer(format, default, std::io::stderr)
}

/// [`init`] writing to `writer` instead of standard error (the flow_load bench writes to a
/// file).
pub fn init_with_writer<W>(format: LogFormat, default: &str, writer: W) -> ServerResult<()>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter(default)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Human => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| ServerError::Config(format!("log subscriber: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_unknown_ones_are_refused() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(" Human ".parse::<LogFormat>().unwrap(), LogFormat::Human);
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::default(), LogFormat::Human);
    }

    #[test]
    fn default_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
    }
}
