//! What an operator does to a registration after it is made (issue 14): suspend and resume it,
//! delete it, rotate its credentials; and keeping the sandbox's registrations, whose
//! credentials are public, out of a platform started without the sandbox.
//!
//! Every change goes through [`Store`](crate::storage::Store), so that a running server on
//! the same database follows it within
//! [`REGISTRATION_TTL`](crate::storage::hot::REGISTRATION_TTL): a suspended SP's redirects end
//! with 423, a stopped dataset's calls with 501 (protocol.md §6), a deleted one is unknown, and
//! rotated credentials replace the old ones: an SP's at once, a dataset's `resource_secret` in
//! a running server before the dataset's next access token is issued
//! ([`Platform::sync_dataset`]).

use mydata_protocol::catalogue::{Catalogue, sandbox_resource_secret};
use mydata_protocol::ids::{CbcIv, ClientSecret, SecretKey};

use crate::error::{ServerError, ServerResult};
use crate::platform::{Platform, SANDBOX_CATALOGUE, SANDBOX_SPS, SpCredentials};
use crate::storage::{DpRecord, SpRecord};

/// The status of an SP that is registered but not served (its redirects end with 423).
pub const SP_SUSPENDED: &str = "suspended";
/// The status of a dataset that is registered but not called (its requests end with 501).
pub const DP_STOPPED: &str = "stopped";
/// The status of a registration in service.
pub const ACTIVE: &str = "active";

fn sp_of(p: &Platform, client_id: &str) -> ServerResult<SpRecord> {
    p.store
        .get_sp(client_id)?
        .ok_or_else(|| ServerError::NotFound(format!("service {client_id} is not registered")))
}

fn dp_of(p: &Platform, resource_id: &str) -> ServerResult<DpRecord> {
    p.store
        .get_dp(resource_id)?
        .ok_or_else(|| ServerError::NotFound(format!("dataset {resource_id} is not registered")))
}

/// Suspends (`suspended = true`) or resumes an SP service; returns the record as stored.
pub fn set_sp_suspended(p: &Platform, client_id: &str, suspended: bool) -> ServerResult<SpRecord> {
    let mut sp = sp_of(p, client_id)?;
    sp.status = if suspended { SP_SUSPENDED } else { ACTIVE }.into();
    p.store.update_sp(&sp)?;
    Ok(sp)
}

/// Stops (`stopped = true`) or resumes a dataset; returns the record as stored.
pub fn set_dp_stopped(p: &Platform, resource_id: &str, stopped: bool) -> ServerResult<DpRecord> {
    let mut dp = dp_of(p, resource_id)?;
    dp.status = if stopped { DP_STOPPED } else { ACTIVE }.into();
    p.store.update_dp(&dp)?;
    Ok(dp)
}

/// Deletes an SP service. Its transactions stay until the purge (D37).
pub fn delete_sp(p: &Platform, client_id: &str) -> ServerResult<()> {
    sp_of(p, client_id)?;
    p.store.delete_sp(client_id)?;
    p.sp_sources.remove(client_id);
    Ok(())
}

/// Deletes a dataset; refused while a service still lists it (delete or re-register the
/// service first: its requests would name a dataset that no longer exists).
pub fn delete_dp(p: &Platform, resource_id: &str) -> ServerResult<()> {
    dp_of(p, resource_id)?;
    let users: Vec<String> = p
        .store
        .list_sps()?
        .into_iter()
        .filter(|s| s.resources.iter().any(|r| r == resource_id))
        .map(|s| s.client_id)
        .collect();
    if !users.is_empty() {
        return Err(ServerError::Invalid(format!(
            "dataset {resource_id} is requested by {}: delete those services first",
            users.join(", ")
        )));
    }
    p.store.delete_dp(resource_id)
}

/// Gives an SP service a new `client_secret`, `cbc_iv` and (when it has one) SP-API key;
/// returns them (shown once). The old ones stop working.
pub fn rotate_sp(p: &Platform, client_id: &str) -> ServerResult<SpCredentials> {
    let mut sp = sp_of(p, client_id)?;
    let secret = ClientSecret::generate()?;
    let iv = CbcIv::generate()?;
    let api_key = match sp.api_key_sealed {
        Some(_) => Some(SecretKey::generate()?.as_str().to_string()),
        None => None,
    };
    let id = sp.client_id.clone();
    sp.client_secret_sealed = p
        .key
        .seal(&format!("sp:{id}:client_secret"), secret.as_str())?;
    sp.cbc_iv_sealed = p.key.seal(&format!("sp:{id}:cbc_iv"), iv.as_str())?;
    sp.api_key_sealed = api_key
        .as_deref()
        .map(|k| p.key.seal(&format!("sp:{id}:api_key"), k))
        .transpose()?;
    p.store.update_sp(&sp)?;
    Ok(SpCredentials {
        client_id: id,
        client_secret: secret.as_str().to_string(),
        cbc_iv: iv.as_str().to_string(),
        api_key,
    })
}

/// Gives a dataset a new `resource_secret`; returns it (shown once). The old one stops working
/// for introspection.
pub fn rotate_dp(p: &Platform, resource_id: &str) -> ServerResult<String> {
    let mut dp = dp_of(p, resource_id)?;
    let secret = ClientSecret::generate()?.as_str().to_string();
    dp.secret_hash = p.auth.hash_resource_secret(&dp.resource_id, &secret);
    p.store.update_dp(&dp)?;
    p.auth.sync_resource(&crate::auth::ResourceGrantInfo {
        resource_id: dp.resource_id.clone(),
        secret_hash: dp.secret_hash.clone(),
        scopes: dp.scopes.clone(),
        claims: dp.claims.clone(),
    })?;
    Ok(secret)
}

/// The sandbox's registrations in the store: the sandbox SPs of `fixtures/sandbox.json` (by
/// `client_id`), and the catalogue datasets that still have their public sandbox secret (a
/// real dataset registered under a catalogue id, with its own secret, is not one).
pub fn sandbox_registrations(p: &Platform) -> ServerResult<(Vec<SpRecord>, Vec<DpRecord>)> {
    let file: serde_json::Value = serde_json::from_str(SANDBOX_SPS)
        .map_err(|e| ServerError::Internal(format!("fixtures/sandbox.json: {e}")))?;
    let mut sps = Vec::new();
    for id in file["sps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["client_id"].as_str())
    {
        if let Some(sp) = p.store.get_sp(id)? {
            sps.push(sp);
        }
    }
    let mut dps = Vec::new();
    for d in Catalogue::from_json(SANDBOX_CATALOGUE)?.datasets {
        let Some(dp) = p.store.get_dp(d.resource_id.as_str())? else {
            continue;
        };
        let public = p.auth.hash_resource_secret(
            dp.resource_id.as_str(),
            &sandbox_resource_secret(&d.resource_id),
        );
        if dp.secret_hash == public {
            dps.push(dp);
        }
    }
    Ok((sps, dps))
}

/// Puts the sandbox's registrations in or out of service: out (`in_service = false`, a
/// platform started without the sandbox: the sandbox SPs suspended, the sandbox datasets
/// stopped, since their credentials are public), or back in (`true`, started with it).
/// Returns how many changed.
pub fn sandbox_in_service(p: &Platform, in_service: bool) -> ServerResult<usize> {
    let (sps, dps) = sandbox_registrations(p)?;
    let mut changed = 0;
    for sp in sps {
        let want = if in_service { ACTIVE } else { SP_SUSPENDED };
        if sp.status != want {
            set_sp_suspended(p, &sp.client_id, !in_service)?;
            changed += 1;
        }
    }
    for dp in dps {
        let want = if in_service { ACTIVE } else { DP_STOPPED };
        if dp.status != want {
            set_dp_stopped(p, &dp.resource_id, !in_service)?;
            changed += 1;
        }
    }
    Ok(changed)
}
