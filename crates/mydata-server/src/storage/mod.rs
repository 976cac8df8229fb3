//! Storage behind traits (spec D45). Handlers and flows see only [`Store`]; the embedded default is
//! SQLite ([`sqlite::SqliteStore`]), and with the `postgres` feature (on by default) PostgreSQL
//! ([`postgres::PgStore`]), chosen by the `database_url` setting ([`open`]). Both use the same
//! `table!` definitions and row types; the shared test suite in [`suite`] runs against both.

use std::path::Path;
use std::sync::Arc;

use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow;
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::template::Template;
use serde::{Deserialize, Serialize};

use crate::auth::TokenRecord;
use crate::error::{ServerError, ServerResult};

pub mod hot;
#[cfg(feature = "postgres")]
pub mod postgres;
mod queries;
mod registrations;
mod rows;
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
    /// The DP-API request template (D28); `None` is the plain call (`transaction_uid`,
    /// `Authorization` and `Accept` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// The CA bundle (PEM) the DP-API's server certificate must chain to, replacing the system
    /// roots and `tls_ca_file` for this dataset (spec D49, `--tls-ca`); `None`: those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
}

/// A registered SP service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpRecord {
    /// The service's `client_id`.
    pub client_id: String,
    /// Service name.
    pub name: String,
    /// Purpose of use, shown on the consent page.
    #[serde(default)]
    pub purpose: String,
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
    /// Source IPs allowed on the MyData-API: addresses or CIDR prefixes (spec D26).
    pub allowed_ips: Vec<String>,
    /// SHA-256 fingerprints (hex) of the client certificates of which the SP must present one
    /// on the MyData-API (spec D50); empty (the default) = none asked, the source IP alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_cert_sha256: Vec<String>,
    /// Datasets the service may request.
    pub resources: Vec<String>,
    /// The JWE algorithms, and the parameter cipher (stored `cbc` or `gcm`).
    pub jwe_mode: JweMode,
    /// Packaging mode (stored `A` or `B`).
    pub packaging_mode: PackagingMode,
    /// `active` or `suspended`.
    pub status: String,
    /// The CA bundle (PEM) the SP-API's server certificate must chain to, replacing the system
    /// roots and `tls_ca_file` for this service (spec D22, D49, `--tls-ca`); `None`: those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
}

/// One online-service transaction as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Internal id (UUID).
    pub id: String,
    /// The SP.
    pub client_id: String,
    /// The SP's `tx_id`.
    pub tx_id: String,
    /// Flow state as stored.
    pub state: TxPhase,
    /// The return code once ended (or 200 once consented).
    pub code: Option<i32>,
    /// Requested resource_ids in request order, JSON array.
    pub resources: String,
    /// The original query string of `returnUrl`.
    pub return_query: Option<String>,
    /// `caseNumber`.
    pub case_number: Option<String>,
    /// Sealed `pid` (personal).
    pub pid_sealed: Option<String>,
    /// Sealed citizen claims JSON (personal).
    pub citizen_sealed: Option<String>,
    /// Identity method used.
    pub identity_method: Option<String>,
    /// Keyed hash of the permission ticket.
    pub ticket_hash: Option<String>,
    /// Sealed `secret_key`.
    pub secret_key_sealed: Option<String>,
    /// The SP-API call was acknowledged.
    pub sp_api_ack: bool,
    /// Per-dataset results, JSON array.
    pub datasets: String,
    /// The SP package file, relative to the data directory.
    pub package_path: Option<String>,
    /// Created at.
    pub created_at: i64,
    /// Consent at.
    pub consent_at: Option<i64>,
    /// Taken at.
    pub taken_at: Option<i64>,
    /// The first second at which the row is due for the purge (`purge_at <= now`): after consent
    /// [`mydata_protocol::flow::retention_deadline`], so that the purge agrees with the core's
    /// `purge_due` to the second (D37); before consent, [`mydata_protocol::flow::record_deadline`]
    /// (more than 8 hours from creation, D19).
    pub purge_at: i64,
    /// The supplied `returnUrl`, as given (personal: cleared when the transaction ends).
    pub return_url: Option<String>,
    /// The citizen's last request in the flow (idle expiry, D21).
    pub last_activity: i64,
}

/// A transfer record (brief §8, D37).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// When.
    pub at: i64,
    /// `dp_call` (one dataset's DP call series and its code), `delivery` (the package taken),
    /// `return` (the code the SP was sent back with: 200 at consent, or the ending's code) or
    /// `ended` (a transaction ended after the SP had been told 200) (spec §14, D37).
    pub kind: String,
    /// The receiving SP.
    pub client_id: String,
    /// The dataset (`dp_call`), or every requested dataset, comma-separated (`return`, `ended`).
    pub resource_id: Option<String>,
    /// Keyed hash of the citizen's identifier (hex).
    pub subject_hash: String,
    /// Result code.
    pub code: i32,
    /// `caseNumber`.
    pub case_number: Option<String>,
    /// Identity method.
    pub identity_method: Option<String>,
}

/// One write of a batch ([`Store::apply`]): the transaction, token and transfer writes that
/// [`hot::HotStore`] defers and applies together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// [`Store::insert_tx`].
    InsertTx(TxRecord),
    /// [`Store::update_tx`]; a row that is gone is skipped.
    UpdateTx(TxRecord),
    /// [`Store::delete_tx`].
    DeleteTx(String),
    /// [`Store::insert_token`].
    InsertToken(TokenRecord),
    /// [`Store::delete_token`].
    DeleteToken(String),
    /// [`Store::delete_tokens_of_tx`].
    DeleteTokensOfTx(String),
    /// [`Store::insert_transfer`].
    InsertTransfer(TransferRecord),
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
    /// Removes an SP registration (`mydata sp delete`); `NotFound` if absent. Its
    /// transactions stay until the purge.
    fn delete_sp(&self, client_id: &str) -> ServerResult<()>;
    /// Removes a dataset registration (`mydata dp delete`); `NotFound` if absent.
    fn delete_dp(&self, resource_id: &str) -> ServerResult<()>;

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

    /// Adds a transaction; `Conflict` if (`client_id`, `tx_id`) exists.
    fn insert_tx(&self, tx: &TxRecord) -> ServerResult<()>;
    /// Replaces a transaction's state and data; `NotFound` if absent. Its identity (`client_id`,
    /// `tx_id`, `resources`, `created_at`) is fixed at [`Store::insert_tx`] and left as stored.
    fn update_tx(&self, tx: &TxRecord) -> ServerResult<()>;
    /// A transaction by internal id.
    fn get_tx(&self, id: &str) -> ServerResult<Option<TxRecord>>;
    /// A transaction by (`client_id`, `tx_id`).
    fn find_tx(&self, client_id: &str, tx_id: &str) -> ServerResult<Option<TxRecord>>;
    /// Transactions with this `tx_id`, any SP.
    fn find_tx_any(&self, tx_id: &str) -> ServerResult<Vec<TxRecord>>;
    /// A transaction by the keyed hash of its ticket.
    fn find_tx_by_ticket(&self, ticket_hash: &str) -> ServerResult<Option<TxRecord>>;
    /// Transactions with `purge_at <= now` (their deadline has come; see [`TxRecord::purge_at`]).
    fn txs_due(&self, now: UnixTime) -> ServerResult<Vec<TxRecord>>;
    /// Transactions in flow state `state` (a scan; for start-up, [`crate::engine::resume`]).
    fn txs_in_state(&self, state: TxPhase) -> ServerResult<Vec<TxRecord>>;
    /// How many transactions are stored in each state, every state of [`TxPhase::ALL`] listed in
    /// that order (0 for none): one aggregate query, for the `mydata_transactions` gauge of
    /// `/metrics`.
    fn count_txs_by_state(&self) -> ServerResult<Vec<(TxPhase, u64)>>;
    /// Deletes a transaction row.
    fn delete_tx(&self, id: &str) -> ServerResult<()>;
    /// Appends a transfer record.
    fn insert_transfer(&self, t: &TransferRecord) -> ServerResult<()>;
    /// Transfer records of one subject, oldest first.
    fn transfers_of(&self, subject_hash: &str) -> ServerResult<Vec<TransferRecord>>;
    /// Deletes transfer records older than `before`; returns how many.
    fn delete_transfers_before(&self, before: UnixTime) -> ServerResult<usize>;

    /// Makes deletions final on disk (for SQLite: a WAL checkpoint that truncates the log, so
    /// that no old page image of deleted personal data survives; D37).
    fn checkpoint(&self) -> ServerResult<()>;

    /// Applies `batch` in order as one database transaction: all of it or none of it. An
    /// update of a row that is gone is skipped (it was deleted in the same batch or earlier).
    fn apply(&self, batch: &[Write]) -> ServerResult<()>;

    /// Makes every write accepted so far durable before it returns. Stores that write at once
    /// (the database backends) have nothing to do; [`hot::HotStore`] waits for its writer.
    fn flush(&self) -> ServerResult<()> {
        Ok(())
    }

    /// Whether the database answers and its schema is current (`GET /readyz`, spec
    /// `operations.md`): a cheap query (the migrations table) and, for a database file, that
    /// the file is still the one opened. The error says what is wrong.
    fn ready(&self) -> ServerResult<()>;

    /// The write-behind store's figures for `/metrics` (`None` for the database backends).
    fn write_behind(&self) -> Option<crate::observe::WriteBehindStats> {
        None
    }

    /// Whether transaction lookups are answered from memory, touching the database only
    /// rarely ([`hot::HotStore`]); the HTTP layer then runs them on its workers instead of
    /// handing them to the blocking pool.
    fn memory_first(&self) -> bool {
        false
    }
}

/// The SQLite file's name in the data directory.
pub const SQLITE_FILE: &str = "mydata.sqlite";

/// Opens the store that `database_url` names (the `database_url` setting, spec D45): empty is the
/// embedded SQLite file [`SQLITE_FILE`] in `data_dir` (created if missing); `postgres://…` or
/// `postgresql://…` is a PostgreSQL database ([`postgres::PgStore`], feature `postgres`).
/// Pending migrations run either way.
pub fn open(database_url: &str, data_dir: &Path) -> ServerResult<Arc<dyn Store>> {
    let url = database_url.trim();
    if url.is_empty() {
        return Ok(Arc::new(sqlite::SqliteStore::open(
            &data_dir.join(SQLITE_FILE),
        )?));
    }
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        #[cfg(feature = "postgres")]
        Some("postgres" | "postgresql") => Ok(Arc::new(postgres::PgStore::open(url)?)),
        #[cfg(not(feature = "postgres"))]
        Some("postgres" | "postgresql") => Err(ServerError::Config(
            "database_url: this build has no PostgreSQL support (feature `postgres`)".into(),
        )),
        _ => Err(ServerError::Config(
            "database_url: expected empty (SQLite in the data directory) or a postgres:// URL"
                .into(),
        )),
    }
}

/// The store of `mydata serve`: [`open`], wrapped in [`hot::HotStore`] unless
/// `write_behind_ms` is 0 (spec D47).
pub fn open_server(config: &crate::config::Config) -> ServerResult<Arc<dyn Store>> {
    let db = open(&config.database_url, &config.data_dir)?;
    if config.write_behind_ms == 0 {
        return Ok(db);
    }
    Ok(Arc::new(hot::HotStore::new(
        db,
        std::time::Duration::from_millis(config.write_behind_ms),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_selects_by_database_url() {
        let dir = tempfile::tempdir().unwrap();
        let s = open("", dir.path()).unwrap();
        s.insert_sp(&suite::sample_sp("CLI.AAAAAAAAAA"), UnixTime(1))
            .unwrap();
        assert!(dir.path().join(SQLITE_FILE).is_file());
        drop(s);
        // Reopened: the same file, the same data.
        let s = open("  ", dir.path()).unwrap();
        assert_eq!(s.list_sps().unwrap().len(), 1);
        for bad in ["mysql://127.0.0.1/x", "sqlite:db", "127.0.0.1:5432"] {
            match open(bad, dir.path()) {
                Err(ServerError::Config(m)) => assert!(m.contains("postgres://"), "{m}"),
                other => panic!("{bad}: {:?}", other.err()),
            }
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_url_that_cannot_connect_is_a_clear_error() {
        // Port 1 on the loopback: nothing listens there, so libpq's refusal comes back at once.
        let dir = tempfile::tempdir().unwrap();
        match open(
            "postgres://mydata:secret-password@127.0.0.1:1/mydata",
            dir.path(),
        ) {
            Err(ServerError::Storage(m)) => {
                assert!(m.starts_with("PostgreSQL: "), "{m}");
                assert!(m.contains("127.0.0.1"), "{m}");
                assert!(!m.contains("secret-password"), "{m}");
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(!dir.path().join(SQLITE_FILE).exists());
    }
}

/// A transaction's state as stored (column `transactions.state`, its text [`TxPhase::as_str`]).
/// [`TxRecord::flow_state`] is the one conversion to the core's [`flow::TxState`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum TxPhase {
    /// Redirect accepted; not yet consented.
    Redirected,
    /// Identity verified.
    Authenticated,
    /// Consented; the permission ticket is recorded and the SP-API call is being made. A
    /// transaction found in this state after a restart never had its acknowledgement
    /// recorded: it ends with 410 and its ticket stays withdrawn (spec D47).
    CallingSp,
    /// Consented, SP-API acknowledged, DPs being called.
    Fetching,
    /// The package is ready (or, with code 504, found lost: ended).
    Ready,
    /// The package was taken.
    Taken,
    /// Ended with `code`.
    Ended,
    /// Ended at §5.3 step 10; the SP-API was called with `unable_to_deliver`.
    Undeliverable,
}

impl TxPhase {
    /// Every state, in flow order.
    pub const ALL: [TxPhase; 8] = [
        TxPhase::Redirected,
        TxPhase::Authenticated,
        TxPhase::CallingSp,
        TxPhase::Fetching,
        TxPhase::Ready,
        TxPhase::Taken,
        TxPhase::Ended,
        TxPhase::Undeliverable,
    ];

    /// Every state of [`TxPhase::ALL`] with its count in `counted` (pairs in any order, a
    /// state absent from them counted 0).
    pub fn tally(counted: impl IntoIterator<Item = (TxPhase, u64)>) -> Vec<(TxPhase, u64)> {
        let mut out: Vec<(TxPhase, u64)> = TxPhase::ALL.iter().map(|p| (*p, 0)).collect();
        for (phase, n) in counted {
            if let Some(slot) = out.iter_mut().find(|(p, _)| *p == phase) {
                slot.1 += n;
            }
        }
        out
    }

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            TxPhase::Redirected => "redirected",
            TxPhase::Authenticated => "authenticated",
            TxPhase::CallingSp => "calling_sp",
            TxPhase::Fetching => "fetching",
            TxPhase::Ready => "ready",
            TxPhase::Taken => "taken",
            TxPhase::Ended => "ended",
            TxPhase::Undeliverable => "undeliverable",
        }
    }

    /// The state stored as `text`; `None` for a text no version of the platform writes.
    pub fn from_stored(text: &str) -> Option<TxPhase> {
        TxPhase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Whether nothing more happens to the transaction but the purge (taken or ended): its
    /// personal data is gone.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            TxPhase::Taken | TxPhase::Ended | TxPhase::Undeliverable
        )
    }
}

impl std::fmt::Display for TxPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TxRecord {
    /// A transaction record created at `now` in `state`: its identity (`resources` stored as
    /// their JSON array), the record deadline of D19 ([`flow::record_deadline`]) and nothing
    /// else yet.
    pub fn created(
        id: String,
        client_id: &str,
        tx_id: &str,
        resources: &[&str],
        state: TxPhase,
        now: UnixTime,
    ) -> TxRecord {
        TxRecord {
            id,
            client_id: client_id.to_string(),
            tx_id: tx_id.to_string(),
            state,
            code: None,
            resources: serde_json::Value::from(resources).to_string(),
            return_query: None,
            case_number: None,
            pid_sealed: None,
            citizen_sealed: None,
            identity_method: None,
            ticket_hash: None,
            secret_key_sealed: None,
            sp_api_ack: false,
            datasets: "[]".into(),
            package_path: None,
            created_at: now.0,
            consent_at: None,
            taken_at: None,
            purge_at: flow::record_deadline(now).0,
            return_url: None,
            last_activity: now.0,
        }
    }

    /// The core's view of the stored transaction (the one conversion from stored states):
    /// `ready` with code 504 is a package found lost (ended 504), an ended or undeliverable
    /// transaction is `Ended` with its code.
    pub fn flow_state(&self) -> flow::TxState {
        use flow::TxState;
        match (self.state, self.code) {
            (TxPhase::Redirected, _) => TxState::Redirected,
            (TxPhase::Authenticated, _) => TxState::Authenticated,
            (TxPhase::CallingSp | TxPhase::Fetching, _) => TxState::Consented,
            (TxPhase::Ready, Some(504)) => TxState::Ended(ReturnCode::DpSystemError),
            (TxPhase::Ready, _) => TxState::Ready,
            (TxPhase::Taken, _) => TxState::Taken,
            (TxPhase::Ended | TxPhase::Undeliverable, c) => TxState::Ended(
                c.and_then(|c| u16::try_from(c).ok())
                    .and_then(ReturnCode::from_wire)
                    .unwrap_or(ReturnCode::BadRequest),
            ),
        }
    }
}

/// The stored states by their old names, for code written against the text constants.
pub mod state {
    use super::TxPhase;
    /// [`TxPhase::Redirected`].
    pub const REDIRECTED: TxPhase = TxPhase::Redirected;
    /// [`TxPhase::Authenticated`].
    pub const AUTHENTICATED: TxPhase = TxPhase::Authenticated;
    /// [`TxPhase::CallingSp`].
    pub const CALLING_SP: TxPhase = TxPhase::CallingSp;
    /// [`TxPhase::Fetching`].
    pub const FETCHING: TxPhase = TxPhase::Fetching;
    /// [`TxPhase::Ready`].
    pub const READY: TxPhase = TxPhase::Ready;
    /// [`TxPhase::Taken`].
    pub const TAKEN: TxPhase = TxPhase::Taken;
    /// [`TxPhase::Ended`].
    pub const ENDED: TxPhase = TxPhase::Ended;
    /// [`TxPhase::Undeliverable`].
    pub const UNDELIVERABLE: TxPhase = TxPhase::Undeliverable;
}

#[cfg(test)]
mod phase_tests {
    use super::TxPhase;

    #[test]
    fn stored_text_round_trips_and_unknown_text_is_refused() {
        for p in TxPhase::ALL {
            assert_eq!(TxPhase::from_stored(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert_eq!(TxPhase::from_stored("consented"), None);
        assert_eq!(TxPhase::from_stored("READY"), None);
    }
}
