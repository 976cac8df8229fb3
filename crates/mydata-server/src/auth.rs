//! The authorization server for DPs (brief §9.7; spec §10, D31, D32, D44).
//!
//! A thin module over oxide-auth's primitives:
//!
//! - **registrar**: [`oxide_auth::primitives::registrar::ClientMap`] holds one confidential client
//!   per `resource_id`. Its password policy is ours ([`KeyedHashPolicy`]): the stored pass-data is
//!   HMAC-SHA-256 of the `resource_secret` under the server's hash key, so the database never
//!   holds a secret, and a check costs one HMAC instead of an Argon2 run.
//! - **issuer**: [`oxide_auth::primitives::issuer::TokenMap`] holds the grants. It is keyed by the
//!   keyed hash of the token, never the token itself. We never let it set expiry times (that
//!   would read the system clock): every grant's `until` comes from the injected clock, and
//!   expiry is checked here against the caller's `now`.
//!
//! What we add: token generation (32 random bytes, base64url), binding a token to a transaction,
//! a `transaction_uid` and the citizen's claims; the claim filter per dataset; revocation per
//! transaction; the RFC 7662 answer shape; and records to persist, so tokens survive a restart.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use mydata_protocol::date::UnixTime;
use oxide_auth::primitives::generator::RandomGenerator;
use oxide_auth::primitives::grant::{Extensions, Grant, Value};
use oxide_auth::primitives::issuer::{Issuer, TokenMap};
use oxide_auth::primitives::registrar::{
    Client, ClientMap, PasswordPolicy, RegisteredUrl, Registrar, RegistrarError,
};
use oxide_auth::primitives::scope::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::{ServerError, ServerResult};
use crate::secrets::MasterKey;

/// Token lifetime (spec §10.1).
pub const TOKEN_LIFETIME_SECS: i64 = 7_200;

/// The claims userinfo can give (spec D31).
pub const KNOWN_CLAIMS: &[&str] = &["sub", "uid", "uid_type", "birthdate", "name", "email"];

/// Claims a dataset sees when its registration names none.
pub const DEFAULT_CLAIMS: &[&str] = &["sub", "uid", "uid_type", "birthdate"];

/// The password policy of the registrar: keyed HMAC-SHA-256 pass-data.
///
/// `store` keeps what it is given: the caller passes the keyed hash computed by
/// [`AuthServer::hash_resource_secret`], which is also what the database keeps. `check`
/// recomputes the hash of the presented secret and compares in constant time.
pub struct KeyedHashPolicy {
    key: MasterKey,
}

impl PasswordPolicy for KeyedHashPolicy {
    fn store(&self, _client_id: &str, passdata: &[u8]) -> Vec<u8> {
        passdata.to_vec()
    }

    fn check(
        &self,
        client_id: &str,
        passphrase: &[u8],
        stored: &[u8],
    ) -> Result<(), RegistrarError> {
        if self.key.verify_keyed_hash(
            &[b"resource_secret", client_id.as_bytes(), passphrase],
            stored,
        ) {
            Ok(())
        } else {
            Err(RegistrarError::Unspecified)
        }
    }
}

/// A dataset as the authorization server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceGrantInfo {
    /// The dataset's `resource_id`.
    pub resource_id: String,
    /// Keyed hash of its `resource_secret` (hex).
    pub secret_hash: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The userinfo claims it may see.
    pub claims: Vec<String>,
}

/// The citizen's claims as the platform knows them for one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitizenClaims {
    /// Opaque stable identifier at the platform.
    pub sub: String,
    /// National ID, resident certificate or business number.
    pub uid: String,
    /// `NID`, `ARC` or `BAN`.
    pub uid_type: String,
    /// `YYYY-MM-DD`.
    pub birthdate: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
}

impl CitizenClaims {
    /// The claims restricted to `allowed`, without empty values.
    pub fn filtered(&self, allowed: &[String]) -> Map<String, Json> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<&String>| {
            if let Some(v) = v.filter(|v| !v.is_empty())
                && allowed.iter().any(|a| a == k)
            {
                m.insert(k.to_string(), Json::String(v.clone()));
            }
        };
        put("sub", Some(&self.sub));
        put("uid", Some(&self.uid));
        put("uid_type", Some(&self.uid_type));
        put("birthdate", self.birthdate.as_ref());
        put("name", self.name.as_ref());
        put("email", self.email.as_ref());
        m
    }
}

/// What a token is bound to when issued.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// The platform transaction (`tx_id` of the SP).
    pub tx_id: &'a str,
    /// The SP receiving the data.
    pub client_id: &'a str,
    /// The dataset called.
    pub resource_id: &'a str,
    /// The call series' `transaction_uid`.
    pub transaction_uid: &'a str,
    /// The citizen.
    pub citizen: &'a CitizenClaims,
    /// Issue time.
    pub now: UnixTime,
}

/// A token as persisted (no token, only its keyed hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Keyed hash of the token (hex).
    pub token_hash: String,
    /// Transaction.
    pub tx_id: String,
    /// Receiving SP.
    pub client_id: String,
    /// Dataset (`aud`).
    pub resource_id: String,
    /// Call series id.
    pub transaction_uid: String,
    /// Space-separated scopes.
    pub scope: String,
    /// `sub`.
    pub sub: String,
    /// `uid`.
    pub uid: String,
    /// The claims userinfo gives (already filtered), JSON object.
    pub claims: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
}

/// The result of issuing a token.
#[derive(Debug, Clone)]
pub struct IssuedAccessToken {
    /// The bearer token (43 characters). Sent to the DP; never stored.
    pub token: String,
    /// What to persist.
    pub record: TokenRecord,
}

/// The answer of introspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    /// The caller's credentials are wrong or missing (401).
    BadCredentials,
    /// `{"active":false}`.
    Inactive,
    /// An active answer (JSON object of spec §10.2).
    Active(Map<String, Json>),
}

struct TokenIndex {
    by_tx: HashMap<String, HashSet<String>>,
    exp: HashMap<String, (String, i64)>,
}

/// The authorization server's state.
pub struct AuthServer {
    key: MasterKey,
    registrar: RwLock<ClientMap>,
    /// Each dataset's registration as given to [`AuthServer::register_resource`].
    scopes: RwLock<HashMap<String, ResourceGrantInfo>>,
    issuer: RwLock<TokenMap<RandomGenerator>>,
    index: RwLock<TokenIndex>,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer").finish_non_exhaustive()
    }
}

fn placeholder_url() -> url::Url {
    url::Url::parse("urn:mydata:dp").expect("static URL parses")
}

fn to_chrono(t: UnixTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

fn ext(grant: &Grant, name: &str) -> Option<String> {
    grant
        .extensions
        .public()
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.map(str::to_string))
}

impl AuthServer {
    /// An empty authorization server using `key` for keyed hashes.
    pub fn new(key: MasterKey) -> Self {
        let mut registrar = ClientMap::new();
        registrar.set_password_policy(KeyedHashPolicy { key: key.clone() });
        AuthServer {
            key,
            registrar: RwLock::new(registrar),
            scopes: RwLock::new(HashMap::new()),
            issuer: RwLock::new(TokenMap::new(RandomGenerator::new(32))),
            index: RwLock::new(TokenIndex {
                by_tx: HashMap::new(),
                exp: HashMap::new(),
            }),
        }
    }

    /// The keyed hash (hex) to store for `resource_id`'s `resource_secret`.
    pub fn hash_resource_secret(&self, resource_id: &str, secret: &str) -> String {
        hex::encode(self.key.keyed_hash(&[
            b"resource_secret",
            resource_id.as_bytes(),
            secret.as_bytes(),
        ]))
    }

    fn hash_token(&self, token: &str) -> String {
        hex::encode(self.key.keyed_hash(&[b"access_token", token.as_bytes()]))
    }

    /// Registers (or replaces) a dataset's credentials, scopes and claims.
    pub fn register_resource(&self, info: &ResourceGrantInfo) -> ServerResult<()> {
        let stored = hex::decode(&info.secret_hash)
            .map_err(|_| ServerError::Invalid("secret hash is not hex".into()))?;
        let scope: Scope = info
            .scopes
            .join(" ")
            .parse()
            .map_err(|e| ServerError::Invalid(format!("scope: {e}")))?;
        let client = Client::confidential(
            &info.resource_id,
            RegisteredUrl::Semantic(placeholder_url()),
            scope,
            &stored,
        );
        self.registrar
            .write()
            .map_err(|_| poisoned())?
            .register_client(client);
        self.scopes
            .write()
            .map_err(|_| poisoned())?
            .insert(info.resource_id.clone(), info.clone());
        Ok(())
    }

    /// Registers `info` unless the dataset is registered exactly so already (a dataset
    /// registered or changed by another process on the same database, spec D47). Returns
    /// whether it (re)registered.
    pub fn sync_resource(&self, info: &ResourceGrantInfo) -> ServerResult<bool> {
        if self
            .scopes
            .read()
            .map_err(|_| poisoned())?
            .get(&info.resource_id)
            .is_some_and(|known| known == info)
        {
            return Ok(false);
        }
        self.register_resource(info)?;
        Ok(true)
    }

    /// Issues the access token of one (transaction, dataset) call series.
    pub fn issue(&self, req: &TokenRequest<'_>) -> ServerResult<IssuedAccessToken> {
        let ResourceGrantInfo { scopes, claims, .. } = self
            .scopes
            .read()
            .map_err(|_| poisoned())?
            .get(req.resource_id)
            .cloned()
            .ok_or_else(|| ServerError::NotFound(format!("dataset {}", req.resource_id)))?;
        let token = URL_SAFE_NO_PAD.encode(crate::secrets::random_bytes::<32>()?);
        let record = TokenRecord {
            token_hash: self.hash_token(&token),
            tx_id: req.tx_id.to_string(),
            client_id: req.client_id.to_string(),
            resource_id: req.resource_id.to_string(),
            transaction_uid: req.transaction_uid.to_string(),
            scope: scopes.join(" "),
            sub: req.citizen.sub.clone(),
            uid: req.citizen.uid.clone(),
            claims: Json::Object(req.citizen.filtered(&claims)).to_string(),
            iat: req.now.0,
            exp: req.now.0 + TOKEN_LIFETIME_SECS,
        };
        self.import(&record)?;
        Ok(IssuedAccessToken { token, record })
    }

    /// Loads a persisted token (at start-up, or after issue).
    pub fn import(&self, r: &TokenRecord) -> ServerResult<()> {
        let scope: Scope = r
            .scope
            .parse()
            .map_err(|e| ServerError::Invalid(format!("scope: {e}")))?;
        let mut extensions = Extensions::new();
        for (k, v) in [
            ("tx_id", &r.tx_id),
            ("aud", &r.resource_id),
            ("transaction_uid", &r.transaction_uid),
            ("uid", &r.uid),
            ("claims", &r.claims),
            ("iat", &r.iat.to_string()),
        ] {
            extensions.set_raw(k.to_string(), Value::public(Some(v.clone())));
        }
        let grant = Grant {
            owner_id: r.sub.clone(),
            client_id: r.client_id.clone(),
            scope,
            redirect_uri: placeholder_url(),
            until: to_chrono(UnixTime(r.exp)),
            extensions,
        };
        self.issuer
            .write()
            .map_err(|_| poisoned())?
            .import_grant(r.token_hash.clone(), grant);
        let mut idx = self.index.write().map_err(|_| poisoned())?;
        idx.by_tx
            .entry(r.tx_id.clone())
            .or_default()
            .insert(r.token_hash.clone());
        idx.exp
            .insert(r.token_hash.clone(), (r.tx_id.clone(), r.exp));
        Ok(())
    }

    fn live_grant(&self, token: &str, now: UnixTime) -> ServerResult<Option<Grant>> {
        let hash = self.hash_token(token);
        let grant = self
            .issuer
            .read()
            .map_err(|_| poisoned())?
            .recover_token(&hash)
            .map_err(|_| ServerError::Internal("issuer failed".into()))?;
        Ok(grant.filter(|g| g.until.timestamp() > now.0))
    }

    /// RFC 7662 introspection by the dataset `resource_id` authenticating with `secret`.
    pub fn introspect(
        &self,
        credentials: Option<(&str, &str)>,
        token: &str,
        now: UnixTime,
    ) -> ServerResult<Introspection> {
        let Some((resource_id, secret)) = credentials else {
            return Ok(Introspection::BadCredentials);
        };
        if self
            .registrar
            .read()
            .map_err(|_| poisoned())?
            .check(resource_id, Some(secret.as_bytes()))
            .is_err()
        {
            return Ok(Introspection::BadCredentials);
        }
        let Some(grant) = self.live_grant(token, now)? else {
            return Ok(Introspection::Inactive);
        };
        let scopes = self.scopes.read().map_err(|_| poisoned())?;
        let Some(ResourceGrantInfo { scopes: own, .. }) = scopes.get(resource_id) else {
            return Ok(Introspection::Inactive);
        };
        if !grant.scope.iter().any(|s| own.iter().any(|o| o == s)) {
            return Ok(Introspection::Inactive);
        }
        let mut m = Map::new();
        m.insert("active".into(), Json::Bool(true));
        m.insert("scope".into(), Json::String(grant.scope.to_string()));
        m.insert("client_id".into(), Json::String(grant.client_id.clone()));
        m.insert("token_type".into(), Json::String("Bearer".into()));
        m.insert("sub".into(), Json::String(grant.owner_id.clone()));
        for k in ["uid", "aud"] {
            if let Some(v) = ext(&grant, k) {
                m.insert(k.into(), Json::String(v));
            }
        }
        let iat = ext(&grant, "iat").and_then(|v| v.parse::<i64>().ok());
        if let Some(iat) = iat {
            m.insert("iat".into(), Json::from(iat));
        }
        m.insert("exp".into(), Json::from(grant.until.timestamp()));
        if let Some(v) = ext(&grant, "transaction_uid") {
            m.insert("transaction_uid".into(), Json::String(v));
        }
        Ok(Introspection::Active(m))
    }

    /// The userinfo claims of a live token, or `None` (401).
    pub fn userinfo(&self, token: &str, now: UnixTime) -> ServerResult<Option<Map<String, Json>>> {
        let Some(grant) = self.live_grant(token, now)? else {
            return Ok(None);
        };
        let claims = ext(&grant, "claims").unwrap_or_default();
        match serde_json::from_str::<Json>(&claims) {
            Ok(Json::Object(m)) => Ok(Some(m)),
            _ => Err(ServerError::Internal(
                "stored claims are not an object".into(),
            )),
        }
    }

    /// Revokes one token by its hash (end of its call series).
    pub fn revoke_hash(&self, token_hash: &str) -> ServerResult<()> {
        self.issuer
            .write()
            .map_err(|_| poisoned())?
            .revoke(token_hash);
        let mut idx = self.index.write().map_err(|_| poisoned())?;
        if let Some((tx, _)) = idx.exp.remove(token_hash)
            && let Some(set) = idx.by_tx.get_mut(&tx)
        {
            set.remove(token_hash);
            if set.is_empty() {
                idx.by_tx.remove(&tx);
            }
        }
        Ok(())
    }

    /// Revokes every token of a transaction (its personal data is deleted). Returns how many.
    pub fn revoke_transaction(&self, tx_id: &str) -> ServerResult<usize> {
        let hashes: Vec<String> = self
            .index
            .read()
            .map_err(|_| poisoned())?
            .by_tx
            .get(tx_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for h in &hashes {
            self.revoke_hash(h)?;
        }
        Ok(hashes.len())
    }

    /// Drops expired tokens from memory. Returns how many.
    pub fn sweep(&self, now: UnixTime) -> ServerResult<usize> {
        let expired: Vec<String> = self
            .index
            .read()
            .map_err(|_| poisoned())?
            .exp
            .iter()
            .filter(|(_, (_, exp))| *exp <= now.0)
            .map(|(h, _)| h.clone())
            .collect();
        for h in &expired {
            self.revoke_hash(h)?;
        }
        Ok(expired.len())
    }

    /// How many tokens are held in memory.
    pub fn token_count(&self) -> usize {
        self.index.read().map(|i| i.exp.len()).unwrap_or(0)
    }
}

fn poisoned() -> ServerError {
    ServerError::Internal("lock poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> AuthServer {
        let a = AuthServer::new(MasterKey::from_bytes([3; 32]));
        for (id, scope, claims) in [
            ("API.AAAAAAAAAA", "moi.a.read", vec!["sub", "uid", "name"]),
            ("API.BBBBBBBBBB", "moi.b.read", vec!["sub"]),
        ] {
            a.register_resource(&ResourceGrantInfo {
                resource_id: id.into(),
                secret_hash: a.hash_resource_secret(id, "s3cretS3cretS3cr"),
                scopes: vec![scope.into()],
                claims: claims.into_iter().map(String::from).collect(),
            })
            .unwrap();
        }
        a
    }

    fn citizen() -> CitizenClaims {
        CitizenClaims {
            sub: "sub-1".into(),
            uid: "A120345672".into(),
            uid_type: "NID".into(),
            birthdate: Some("1988-01-01".into()),
            name: Some("王大明".into()),
            email: None,
        }
    }

    fn issue(a: &AuthServer, rid: &str, tx: &str, now: i64) -> IssuedAccessToken {
        a.issue(&TokenRequest {
            tx_id: tx,
            client_id: "CLI.SANDBOX001",
            resource_id: rid,
            transaction_uid: "c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801",
            citizen: &citizen(),
            now: UnixTime(now),
        })
        .unwrap()
    }

    #[test]
    fn introspection_rules() {
        let a = server();
        let t = issue(&a, "API.AAAAAAAAAA", "tx1", 1000);
        assert_eq!(t.token.len(), 43);
        assert_ne!(t.record.token_hash, t.token);
        let good = Some(("API.AAAAAAAAAA", "s3cretS3cretS3cr"));
        match a.introspect(good, &t.token, UnixTime(1001)).unwrap() {
            Introspection::Active(m) => {
                assert_eq!(m["aud"], "API.AAAAAAAAAA");
                assert_eq!(m["exp"], 1000 + TOKEN_LIFETIME_SECS);
                assert_eq!(m["client_id"], "CLI.SANDBOX001");
            }
            other => panic!("{other:?}"),
        }
        let other = Some(("API.BBBBBBBBBB", "s3cretS3cretS3cr"));
        assert_eq!(
            a.introspect(other, &t.token, UnixTime(1001)).unwrap(),
            Introspection::Inactive
        );
        let wrong = Some(("API.AAAAAAAAAA", "wrong"));
        assert_eq!(
            a.introspect(wrong, &t.token, UnixTime(1001)).unwrap(),
            Introspection::BadCredentials
        );
        assert_eq!(
            a.introspect(None, &t.token, UnixTime(1001)).unwrap(),
            Introspection::BadCredentials
        );
        assert_eq!(
            a.introspect(good, &t.token, UnixTime(1000 + TOKEN_LIFETIME_SECS))
                .unwrap(),
            Introspection::Inactive
        );
        assert_eq!(
            a.introspect(good, "nope", UnixTime(1001)).unwrap(),
            Introspection::Inactive
        );
        assert_eq!(a.revoke_transaction("tx1").unwrap(), 1);
        assert_eq!(
            a.introspect(good, &t.token, UnixTime(1001)).unwrap(),
            Introspection::Inactive
        );
    }

    #[test]
    fn userinfo_is_filtered_and_import_restores() {
        let a = server();
        let t = issue(&a, "API.BBBBBBBBBB", "tx2", 50);
        let m = a.userinfo(&t.token, UnixTime(60)).unwrap().unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), vec!["sub"]);
        let t2 = issue(&a, "API.AAAAAAAAAA", "tx2", 50);
        let m = a.userinfo(&t2.token, UnixTime(60)).unwrap().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["name"], "王大明");
        // A restarted server imports the record and recognises the token.
        let b = server();
        b.import(&t2.record).unwrap();
        assert!(b.userinfo(&t2.token, UnixTime(60)).unwrap().is_some());
        assert_eq!(b.sweep(UnixTime(50 + TOKEN_LIFETIME_SECS)).unwrap(), 1);
        assert_eq!(b.token_count(), 0);
    }
}
