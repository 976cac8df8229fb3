//! Storage behind traits (spec D45). Handlers and flows see only [`Store`]; the embedded default is
//! SQLite ([`sqlite::SqliteStore`]); the shared test suite in [`suite`] runs against every backend.

use mydata_protocol::date::UnixTime;
use serde::{Deserialize, Serialize};

use crate::auth::TokenRecord;
use crate::error::ServerResult;

pub mod sqlite;
pub mod suite;

/// HTTP method of a DP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// A registered dataset (one `resource_id`) of a DP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpRecord {
    /// The dataset's id.
    pub resource_id: String,
    /// Dataset name.
    pub name: String,
    /// The DP agency.
    pub provider: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Keyed hash of `resource_secret` (hex).
    pub secret_hash: String,
    /// DP-API endpoint.
    pub endpoint: String,
    /// DP-API method.
    pub method: DpMethod,
    /// Userinfo claims the dataset may see.
    pub claims: Vec<String>,
    /// Identity methods that may unlock the dataset (codes of brief §9.8).
    pub identity_methods: Vec<String>,
    /// `active` or `stopped`.
    pub status: String,
}

/// A registered SP service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpRecord {
    /// The service's `client_id`.
    pub client_id: String,
    /// Service name.
    pub name: String,
    /// Registered return URL.
    pub return_url: String,
    /// SP-API URL.
    pub sp_api_url: String,
    /// Sealed SP-API key, if any.
    pub api_key_sealed: Option<String>,
    /// Sealed `client_secret`.
    pub client_secret_sealed: String,
    /// Sealed `cbc_iv`.
    pub cbc_iv_sealed: String,
    /// Source IPs allowed on the MyData-API.
    pub allowed_ips: Vec<String>,
    /// Datasets the service may request.
    pub resources: Vec<String>,
    /// `cbc` or `gcm`.
    pub jwe_mode: String,
    /// `A` or `B`.
    pub packaging_mode: String,
    /// `active` or `suspended`.
    pub status: String,
}

/// The platform's storage.
pub trait Store: Send + Sync + 'static {
    /// Adds a dataset registration; `Conflict` if its id exists.
    fn insert_dp(&self, dp: &DpRecord, now: UnixTime) -> ServerResult<()>;
    /// Replaces a dataset registration; `NotFound` if absent.
    fn update_dp(&self, dp: &DpRecord) -> ServerResult<()>;
    /// One dataset registration.
    fn get_dp(&self, resource_id: &str) -> ServerResult<Option<DpRecord>>;
    /// All dataset registrations, by id.
    fn list_dps(&self) -> ServerResult<Vec<DpRecord>>;
    /// Adds an SP registration; `Conflict` if its id exists.
    fn insert_sp(&self, sp: &SpRecord, now: UnixTime) -> ServerResult<()>;
    /// Replaces an SP registration; `NotFound` if absent.
    fn update_sp(&self, sp: &SpRecord) -> ServerResult<()>;
    /// One SP registration.
    fn get_sp(&self, client_id: &str) -> ServerResult<Option<SpRecord>>;
    /// All SP registrations, by id.
    fn list_sps(&self) -> ServerResult<Vec<SpRecord>>;

    /// Persists an issued token.
    fn insert_token(&self, t: &TokenRecord) -> ServerResult<()>;
    /// Tokens with `exp > now`.
    fn live_tokens(&self, now: UnixTime) -> ServerResult<Vec<TokenRecord>>;
    /// Deletes one token.
    fn delete_token(&self, token_hash: &str) -> ServerResult<()>;
    /// Deletes a transaction's tokens; returns how many.
    fn delete_tokens_of_tx(&self, tx_id: &str) -> ServerResult<usize>;
    /// Deletes tokens with `exp <= now`; returns how many.
    fn delete_expired_tokens(&self, now: UnixTime) -> ServerResult<usize>;
}
