//! The platform's state and operations shared by the HTTP layer, the CLI and background tasks.

use std::sync::Arc;

use mydata_protocol::catalogue::{Catalogue, sandbox_resource_secret};
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::ResourceId;

use crate::auth::{
    AuthServer, CitizenClaims, DEFAULT_CLAIMS, IssuedAccessToken, KNOWN_CLAIMS, ResourceGrantInfo,
    TokenRequest,
};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{ServerError, ServerResult};
use crate::secrets::MasterKey;
use crate::storage::{DpMethod, DpRecord, Store};

/// The sandbox catalogue, compiled in so that `mydata serve --sandbox` works from any directory.
pub const SANDBOX_CATALOGUE: &str = include_str!("../../../fixtures/catalogue.json");

/// The platform.
pub struct Platform {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// The authorization server.
    pub auth: AuthServer,
    /// The clock.
    pub clock: SharedClock,
    /// The master key.
    pub key: MasterKey,
    /// Configuration.
    pub config: Config,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A new dataset registration, as the operator gives it.
#[derive(Debug, Clone)]
pub struct NewDp {
    /// The id (`None` = generate).
    pub resource_id: Option<ResourceId>,
    /// Name.
    pub name: String,
    /// DP agency.
    pub provider: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The `resource_secret` (`None` = generate 16 characters).
    pub secret: Option<String>,
    /// DP-API endpoint.
    pub endpoint: String,
    /// DP-API method.
    pub method: DpMethod,
    /// Claims it may see (empty = the default set).
    pub claims: Vec<String>,
    /// Identity methods.
    pub identity_methods: Vec<String>,
}

impl Platform {
    /// Builds the platform over `store`: registers every dataset with the authorization server
    /// and reloads live tokens.
    pub fn new(
        store: Arc<dyn Store>,
        key: MasterKey,
        clock: SharedClock,
        config: Config,
    ) -> ServerResult<Self> {
        let auth = AuthServer::new(key.clone());
        for dp in store.list_dps()? {
            auth.register_resource(&grant_info(&dp))?;
        }
        for t in store.live_tokens(clock.now())? {
            auth.import(&t)?;
        }
        Ok(Platform {
            store,
            auth,
            clock,
            key,
            config,
        })
    }

    /// The current time.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Registers a dataset; returns the record and the `resource_secret` (shown once).
    pub fn register_dp(&self, new: NewDp) -> ServerResult<(DpRecord, String)> {
        let resource_id = match new.resource_id {
            Some(id) => id,
            None => ResourceId::generate()?,
        };
        let secret = match new.secret {
            Some(s) => {
                if s.len() < 16 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(ServerError::Invalid(
                        "resource_secret: at least 16 characters [A-Za-z0-9]".into(),
                    ));
                }
                s
            }
            None => mydata_protocol::ids::ClientSecret::generate()?
                .as_str()
                .to_string(),
        };
        if new.scopes.is_empty() {
            return Err(ServerError::Invalid(
                "a dataset needs at least one scope".into(),
            ));
        }
        let claims = if new.claims.is_empty() {
            DEFAULT_CLAIMS.iter().map(|s| s.to_string()).collect()
        } else {
            new.claims
        };
        if let Some(c) = claims.iter().find(|c| !KNOWN_CLAIMS.contains(&c.as_str())) {
            return Err(ServerError::Invalid(format!("unknown claim {c}")));
        }
        let record = DpRecord {
            secret_hash: self
                .auth
                .hash_resource_secret(resource_id.as_str(), &secret),
            resource_id: resource_id.as_str().to_string(),
            name: new.name,
            provider: new.provider,
            scopes: new.scopes,
            endpoint: new.endpoint,
            method: new.method,
            claims,
            identity_methods: new.identity_methods,
            status: "active".into(),
        };
        self.store.insert_dp(&record, self.now())?;
        self.auth.register_resource(&grant_info(&record))?;
        Ok((record, secret))
    }

    /// Registers every catalogue dataset with its public sandbox secret and the sandbox DP as
    /// endpoint (skipping those already registered).
    pub fn load_sandbox(&self) -> ServerResult<usize> {
        let catalogue = Catalogue::from_json(SANDBOX_CATALOGUE)?;
        let base = self.config.sandbox_dp_url.trim_end_matches('/');
        let mut added = 0;
        for d in catalogue.datasets {
            if self.store.get_dp(d.resource_id.as_str())?.is_some() {
                continue;
            }
            self.register_dp(NewDp {
                secret: Some(sandbox_resource_secret(&d.resource_id)),
                endpoint: format!("{base}/dp/{}", d.resource_id),
                resource_id: Some(d.resource_id),
                name: d.name,
                provider: d.provider,
                scopes: vec![d.scope.as_str().to_string()],
                method: DpMethod::Get,
                claims: KNOWN_CLAIMS.iter().map(|s| s.to_string()).collect(),
                identity_methods: d.identity_methods.iter().map(|m| m.to_string()).collect(),
            })?;
            added += 1;
        }
        Ok(added)
    }

    /// Issues and persists the access token of one (transaction, dataset) call series.
    pub fn issue_token(
        &self,
        tx_id: &str,
        client_id: &str,
        resource_id: &str,
        transaction_uid: &str,
        citizen: &CitizenClaims,
    ) -> ServerResult<IssuedAccessToken> {
        let issued = self.auth.issue(&TokenRequest {
            tx_id,
            client_id,
            resource_id,
            transaction_uid,
            citizen,
            now: self.now(),
        })?;
        self.store.insert_token(&issued.record)?;
        Ok(issued)
    }

    /// Revokes and deletes every token of a transaction.
    pub fn revoke_transaction_tokens(&self, tx_id: &str) -> ServerResult<usize> {
        self.auth.revoke_transaction(tx_id)?;
        self.store.delete_tokens_of_tx(tx_id)
    }

    /// Drops expired tokens from memory and storage.
    pub fn sweep_tokens(&self) -> ServerResult<usize> {
        let now = self.now();
        self.auth.sweep(now)?;
        self.store.delete_expired_tokens(now)
    }
}

fn grant_info(dp: &DpRecord) -> ResourceGrantInfo {
    ResourceGrantInfo {
        resource_id: dp.resource_id.clone(),
        secret_hash: dp.secret_hash.clone(),
        scopes: dp.scopes.clone(),
        claims: dp.claims.clone(),
    }
}
