//! The server layer's one error type.

use thiserror::Error;

/// Errors of the server layer (storage, configuration, the authorization server, flows).
#[derive(Debug, Error)]
pub enum ServerError {
    /// A configuration value is missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A record that must exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A record with the same key exists already.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The caller's input is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A protocol rule failed (carries the core's error, which knows its return code).
    #[error(transparent)]
    Protocol(#[from] mydata_protocol::Error),
    /// A service the platform depends on (SMTP, an SMS gateway, an SP, a DP) failed.
    #[error("upstream: {0}")]
    Upstream(String),
    /// Something that should not fail did.
    #[error("internal: {0}")]
    Internal(String),
}

/// Result of the server layer.
pub type ServerResult<T> = std::result::Result<T, ServerError>;
