//! The in-memory transaction store of the example SP.
//!
//! A real SP keeps these records in its database; here they live in memory and are dropped 8
//! hours after they start (the platform's own retention, spec §14).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use mydata_protocol::ids::{PermissionTicket, ResourceId, SecretKey};
use mydata_sp::package::{Delivered, Verification};
use serde::Serialize;

/// How long a transaction is kept.
pub const KEEP: Duration = Duration::from_secs(28_800);
/// The most text of one file shown on the result page.
pub const PREVIEW_BYTES: usize = 64 * 1024;

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Redirected to the platform; the citizen has not come back.
    Started,
    /// Back with code 200; the MyData-API is being polled.
    Waiting,
    /// The package arrived and was checked.
    Delivered,
    /// Polling or decryption failed.
    Failed,
    /// Back with a code other than 200.
    Ended,
}

/// One data file as shown.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    /// The name inside the DP package.
    pub name: String,
    /// Its size in bytes.
    pub size: usize,
    /// The SHA-256 (lowercase hex) of the bytes received.
    pub digest: String,
    /// Its text, for JSON, CSV and text files that are UTF-8 (at most [`PREVIEW_BYTES`]).
    #[serde(skip)]
    pub text: Option<String>,
}

/// One dataset as shown.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetView {
    /// The dataset.
    pub resource_id: String,
    /// Its registered name.
    #[serde(skip)]
    pub resource_name: String,
    /// The per-dataset code.
    pub code: u16,
    /// Whether a DP package shipped.
    pub shipped: bool,
    /// Whether it verified.
    pub verified: bool,
    /// Its verification error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its files.
    pub files: Vec<FileView>,
}

/// What `/api/tx/{tx_id}` answers and the pages show.
#[derive(Debug, Clone, Serialize)]
pub struct TxView {
    /// The transaction.
    pub tx_id: String,
    /// The return code, once the citizen is back.
    pub code: Option<u16>,
    /// Where it is.
    #[serde(rename = "state")]
    pub phase: Phase,
    /// Whether the SP-API call arrived.
    pub sp_api_received: bool,
    /// The datasets the platform could not deliver (SP-API `unable_to_deliver`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unable_to_deliver: Option<Vec<String>>,
    /// The datasets received.
    pub datasets: Vec<DatasetView>,
    /// Whether the package arrived and every shipped DP package verified.
    pub verified: bool,
    /// What failed.
    pub error: Option<String>,
}

/// One transaction.
pub struct Tx {
    /// The browser session that started it (the cookie value).
    pub session: String,
    /// The requested datasets, in order.
    pub resources: Vec<ResourceId>,
    /// When it started.
    pub started: SystemTime,
    /// The return code.
    pub code: Option<u16>,
    /// The ticket from the SP-API.
    pub ticket: Option<PermissionTicket>,
    /// The JWE key from the SP-API (dropped once used).
    pub secret_key: Option<SecretKey>,
    /// `unable_to_deliver` from the SP-API.
    pub unable_to_deliver: Option<Vec<ResourceId>>,
    /// Whether an SP-API call arrived.
    pub sp_api_received: bool,
    /// The phase.
    pub phase: Phase,
    /// The datasets received.
    pub datasets: Vec<DatasetView>,
    /// Whether everything verified.
    pub verified: bool,
    /// What failed.
    pub error: Option<String>,
    /// How the transaction ended, in the conformance hook's words (set with the phase).
    pub end: Option<End>,
    /// For a package refused for its manifest, the rule it broke in the hook's words
    /// (`packaging_mode`, `requested`; spec/conformance-sp.md §2.2).
    pub error_rule: Option<&'static str>,
    /// MyData-API requests made for it.
    pub polls: u32,
}

/// How a transaction ended, as the conformance hook reports it (spec/conformance-sp.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// MyData-API 201: the package had already been taken.
    Taken,
    /// MyData-API 403: unknown or expired ticket.
    Expired,
    /// Another final MyData-API answer, the deadline or the transport; the poll error's kind.
    Failed(&'static str),
    /// A package arrived and was refused (JWE, package, packaging mode or a DP package); the
    /// failure kind of packages.md §6.
    Rejected(&'static str),
    /// Back with code 200 but no usable SP-API delivery (nothing to poll with).
    Error(&'static str),
}

/// The transaction as the conformance hook answers it (`GET /conformance/tx/{tx_id}`).
#[derive(Debug, Clone, Serialize)]
pub struct HookView {
    /// The transaction.
    pub tx_id: String,
    /// started | unable_to_deliver | returned | polling | delivered | taken | expired | failed |
    /// rejected | refused | error.
    pub state: &'static str,
    /// The return code, once the citizen is back.
    pub code: Option<u16>,
    /// MyData-API requests made.
    pub polls: u32,
    /// A failure kind, for rejected, failed and error.
    pub error: Option<&'static str>,
    /// For `error` `manifest`, the rule of packages.md §5.2 the package broke
    /// (`packaging_mode` or `requested`), else `null`.
    pub error_rule: Option<&'static str>,
    /// The datasets received (when delivered).
    pub datasets: Vec<HookDataset>,
}

/// One dataset in a [`HookView`].
#[derive(Debug, Clone, Serialize)]
pub struct HookDataset {
    /// The dataset.
    pub resource_id: String,
    /// The per-dataset code.
    pub code: u16,
    /// The names of its verified files.
    pub files: Vec<String>,
    /// The SHA-256 (lowercase hex) of each file's bytes as received, in the order of `files`.
    pub sha256: Vec<String>,
}

impl Tx {
    /// A transaction just redirected.
    pub fn new(session: String, resources: Vec<ResourceId>, now: SystemTime) -> Self {
        Tx {
            session,
            resources,
            started: now,
            code: None,
            ticket: None,
            secret_key: None,
            unable_to_deliver: None,
            sp_api_received: false,
            phase: Phase::Started,
            datasets: Vec::new(),
            verified: false,
            error: None,
            end: None,
            error_rule: None,
            polls: 0,
        }
    }

    /// The conformance hook's state word for this transaction.
    pub fn hook_state(&self) -> &'static str {
        match (self.phase, &self.end) {
            (Phase::Delivered, _) if self.verified => "delivered",
            (Phase::Delivered, _) => "rejected",
            (_, _) if self.unable_to_deliver.is_some() => "unable_to_deliver",
            (Phase::Started, _) => "started",
            (Phase::Waiting, _) if self.polls == 0 => "returned",
            (Phase::Waiting, _) => "polling",
            (Phase::Ended, _) => "refused",
            (Phase::Failed, Some(End::Taken)) => "taken",
            (Phase::Failed, Some(End::Expired)) => "expired",
            (Phase::Failed, Some(End::Rejected(_))) => "rejected",
            (Phase::Failed, Some(End::Error(_))) => "error",
            (Phase::Failed, _) => "failed",
        }
    }

    /// The conformance hook's view of this transaction.
    pub fn hook_view(&self, tx_id: &str) -> HookView {
        let error = match &self.end {
            Some(End::Failed(k) | End::Rejected(k) | End::Error(k)) => Some(*k),
            _ => None,
        };
        HookView {
            tx_id: tx_id.to_owned(),
            state: self.hook_state(),
            code: self.code,
            polls: self.polls,
            error,
            error_rule: self.error_rule,
            datasets: if self.phase == Phase::Delivered && self.verified {
                self.datasets
                    .iter()
                    .map(|d| HookDataset {
                        resource_id: d.resource_id.clone(),
                        code: d.code,
                        files: d.files.iter().map(|f| f.name.clone()).collect(),
                        sha256: d.files.iter().map(|f| f.digest.clone()).collect(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The view of this transaction.
    pub fn view(&self, tx_id: &str) -> TxView {
        TxView {
            tx_id: tx_id.to_owned(),
            code: self.code,
            phase: self.phase,
            sp_api_received: self.sp_api_received,
            unable_to_deliver: self
                .unable_to_deliver
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            datasets: self.datasets.clone(),
            verified: self.verified,
            error: self.error.clone(),
        }
    }

    /// Records a delivered package.
    pub fn delivered(&mut self, d: &Delivered) {
        self.datasets = d.datasets.iter().map(dataset_view).collect();
        self.verified = d.verified();
        self.error = d.first_failure().map(ToString::to_string);
        self.end = d.first_failure().map(|e| End::Rejected(e.kind()));
        self.phase = Phase::Delivered;
        self.secret_key = None;
    }

    /// Records a failure and how the hook reports it.
    pub fn failed(&mut self, error: String, end: End) {
        self.error = Some(error);
        self.end = Some(end);
        self.phase = Phase::Failed;
        self.secret_key = None;
    }
}

fn dataset_view(d: &mydata_sp::package::DatasetData) -> DatasetView {
    let texty = |n: &str| {
        let l = n.to_ascii_lowercase();
        [".json", ".csv", ".txt", ".xml"]
            .iter()
            .any(|x| l.ends_with(x))
    };
    DatasetView {
        resource_id: d.resource_id.to_string(),
        resource_name: d.resource_name.clone(),
        code: d.code,
        shipped: !matches!(d.verification, Verification::NotShipped),
        verified: d.verification.is_verified(),
        error: d.verification.error().map(ToString::to_string),
        files: d
            .files
            .iter()
            .map(|f| FileView {
                name: f.name.clone(),
                size: f.bytes.len(),
                digest: {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(&f.bytes))
                },
                text: (texty(&f.name) && f.bytes.len() <= PREVIEW_BYTES)
                    .then(|| String::from_utf8(f.bytes.clone()).ok())
                    .flatten(),
            })
            .collect(),
    }
}

/// Every transaction, by `tx_id`.
#[derive(Default)]
pub struct Store {
    txs: Mutex<HashMap<String, Tx>>,
}

impl Store {
    /// Runs `f` on the map (a poisoned lock is recovered: the data is plain records).
    pub fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Tx>) -> R) -> R {
        let mut g = match self.txs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    /// Adds a transaction and drops the ones older than [`KEEP`].
    pub fn insert(&self, tx_id: String, tx: Tx) {
        let now = tx.started;
        self.with(|m| {
            m.retain(|_, t| {
                now.duration_since(t.started)
                    .map(|age| age <= KEEP)
                    .unwrap_or(true)
            });
            m.insert(tx_id, tx);
        });
    }

    /// The view of one transaction.
    pub fn view(&self, tx_id: &str) -> Option<TxView> {
        self.with(|m| m.get(tx_id).map(|t| t.view(tx_id)))
    }

    /// The conformance hook's view of one transaction.
    pub fn hook_view(&self, tx_id: &str) -> Option<HookView> {
        self.with(|m| m.get(tx_id).map(|t| t.hook_view(tx_id)))
    }
}
