//! The dataset catalogue (`fixtures/catalogue.json` and operator catalogues): parsing and rules.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::codes::IdentityMethod;
use crate::error::{Error, Result};
use crate::ids::{ResourceId, Scope};

/// How long a DP typically takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Answers at once.
    Instant,
    /// Minutes (land data 5–10, tax data 60).
    Minutes,
    /// Hours.
    Hours,
}

/// One dataset of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Position in the source table.
    pub index: u32,
    /// The dataset's id.
    pub resource_id: ResourceId,
    /// The DP-owned scope.
    pub scope: Scope,
    /// The DP agency, as written in the source.
    pub provider: String,
    /// Short ASCII code of the DP agency.
    pub provider_code: String,
    /// The dataset's name.
    pub name: String,
    /// Service domain (household, land, tax_finance, …).
    pub domain: String,
    /// Methods that may unlock the dataset.
    pub identity_methods: Vec<IdentityMethod>,
    /// File formats delivered.
    pub formats: Vec<String>,
    /// Typical delivery time class.
    pub delivery: Delivery,
    /// Typical delivery time in seconds.
    pub delivery_seconds: u64,
}

/// A catalogue document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    /// Format version (1).
    pub version: u32,
    /// The datasets.
    pub datasets: Vec<Dataset>,
}

impl Catalogue {
    /// Parses and checks a catalogue: unique ids and scopes, at least one method and one format per dataset.
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Catalogue =
            serde_json::from_str(json).map_err(|e| Error::Catalogue(e.to_string()))?;
        if c.version != 1 {
            return Err(Error::Catalogue(format!(
                "unsupported version {}",
                c.version
            )));
        }
        let mut ids = HashSet::new();
        let mut scopes = HashSet::new();
        for d in &c.datasets {
            if !ids.insert(d.resource_id.as_str()) {
                return Err(Error::Catalogue(format!(
                    "duplicate resource_id {}",
                    d.resource_id
                )));
            }
            if !scopes.insert(d.scope.as_str()) {
                return Err(Error::Catalogue(format!("duplicate scope {}", d.scope)));
            }
            if d.identity_methods.is_empty() || d.formats.is_empty() {
                return Err(Error::Catalogue(format!(
                    "{} lists no identity method or no format",
                    d.resource_id
                )));
            }
        }
        Ok(c)
    }

    /// The dataset with this id.
    pub fn get(&self, id: &ResourceId) -> Option<&Dataset> {
        self.datasets.iter().find(|d| &d.resource_id == id)
    }
}

/// The public sandbox `resource_secret` of a dataset: 16 lowercase hex characters of
/// SHA-256(`"mydata-sandbox:" || resource_id`).
///
/// Sandbox only (spec D43): anyone can compute it, so a real deployment never uses it.
pub fn sandbox_resource_secret(id: &ResourceId) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("mydata-sandbox:{}", id.as_str()).as_bytes());
    hex::encode(&d[..8])
}
