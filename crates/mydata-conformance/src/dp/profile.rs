//! The profile: what the suite needs to know about the DP under test (JSON, spec
//! `conformance-dp.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mydata_protocol::catalogue::sandbox_resource_secret;
use mydata_protocol::ids::ResourceId;
use mydata_protocol::template::Template;
use serde::Deserialize;

/// The sandbox root CA, which issued the sandbox DP's signing certificate.
const SANDBOX_DP_CA: &[u8] = include_bytes!("../../../../fixtures/pki/sandbox-root-ca.pem");

/// One dataset endpoint of the DP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetProfile {
    /// The dataset's `resource_id`.
    pub resource_id: String,
    /// Its `resource_secret`: the DP authenticates to the suite's `/connect/introspect` with it.
    pub resource_secret: String,
    /// The registered endpoint, e.g. `http://127.0.0.1:8082/dp/household-transcript`.
    pub endpoint: String,
    /// `GET` (default) or `POST`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The dataset's scope strings (the tokens the suite issues carry the first one).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The dataset's registered template (spec protocol.md §9.2, the registration's JSON form),
    /// sent with every call; absent, calls carry only `transaction_uid`.
    #[serde(default)]
    pub template: Option<serde_json::Value>,
}

/// A person the suite issues tokens for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// National ID, resident certificate number or business number (the token's `uid`).
    pub id: String,
    /// Birth date `YYYY-MM-DD` (userinfo `birthdate`, template `{{birthdate:…}}`).
    #[serde(default)]
    pub birth_date: Option<String>,
    /// Name (userinfo `name`).
    #[serde(default)]
    pub name: Option<String>,
    /// E-mail address (userinfo `email`).
    #[serde(default)]
    pub email: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_cache_secs() -> u64 {
    30
}

fn default_slow_max_secs() -> u64 {
    60
}

fn default_client_id() -> String {
    "CLI.SANDBOX001".into()
}

/// The suite's profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The platform base URL the DP is configured with (`http://IP:PORT`): the suite serves
    /// `/connect/introspect` and `/connect/userinfo` there.
    pub platform_url: String,
    /// A dataset that answers at once: 200 with a package for `citizen` and `other_citizen`,
    /// 204 for `no_data_id`.
    pub instant: DatasetProfile,
    /// A dataset whose work takes a while (answers 429 + `Retry-After` first); absent, the
    /// check `dp.slow.retry_after` is skipped.
    #[serde(default)]
    pub slow: Option<DatasetProfile>,
    /// A person with data at the DP.
    pub citizen: Person,
    /// Another person with (different) data at the DP.
    pub other_citizen: Person,
    /// A well-formed ID of a person the DP has no data for.
    pub no_data_id: String,
    /// PEM file of the CA(s) the DP's signing certificate must chain to; a relative path is
    /// read from the profile's directory.
    #[serde(default)]
    pub dp_ca: Option<PathBuf>,
    /// The longest the DP may keep an active introspection answer, in seconds (1–300,
    /// default 30): the revocation check waits this long plus one second.
    #[serde(default = "default_cache_secs")]
    pub cache_secs: u64,
    /// How long the slow dataset may take, in seconds (1–5,400, default 60).
    #[serde(default = "default_slow_max_secs")]
    pub slow_max_secs: u64,
    /// The SP the tokens are issued to (token `client_id`; default `CLI.SANDBOX001`).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The CA PEM itself (the sandbox profile's; else read from `dp_ca`).
    #[serde(skip)]
    pub dp_ca_pem: Option<Vec<u8>>,
}

/// A profile entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("profile: {0}")]
pub struct ProfileError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ProfileError> {
    Err(ProfileError(msg.into()))
}

impl Profile {
    /// Reads a profile from JSON text and checks it ([`Profile::validate`]); `base` is the
    /// directory a relative `dp_ca` is read from.
    pub fn from_json(text: &str, base: &Path) -> Result<Self, ProfileError> {
        let p = Self::parse_json(text, base)?;
        p.validate()?;
        Ok(p)
    }

    /// Reads a profile from JSON text without checking its values (for callers that change
    /// some before [`Profile::validate`]); the CA file is read.
    pub fn parse_json(text: &str, base: &Path) -> Result<Self, ProfileError> {
        let mut p: Profile = serde_json::from_str(text).map_err(|e| ProfileError(e.to_string()))?;
        if let Some(ca) = &p.dp_ca {
            let path = if ca.is_relative() {
                base.join(ca)
            } else {
                ca.clone()
            };
            p.dp_ca_pem = Some(
                std::fs::read(&path)
                    .map_err(|e| ProfileError(format!("dp_ca {}: {e}", path.display())))?,
            );
        }
        Ok(p)
    }

    /// The profile of the sandbox DP (`mydata sandbox-dp`, or the one `mydata serve --sandbox`
    /// runs) at `dp_url` (its base URL, endpoints `{dp_url}/dp/{resource_id}`), configured with
    /// `platform_url` as its platform: dataset `API.ARPPI3VTCB` (instant) and `API.3DQEOU3GLR`
    /// (slow), the fixture citizens, the sandbox root CA.
    pub fn sandbox(platform_url: &str, dp_url: &str) -> Self {
        let dp_url = dp_url.trim_end_matches('/');
        let dataset = |id: &str, scope: &str| DatasetProfile {
            resource_id: id.into(),
            resource_secret: id
                .parse::<ResourceId>()
                .map(|r| sandbox_resource_secret(&r))
                .unwrap_or_default(),
            endpoint: format!("{dp_url}/dp/{id}"),
            method: default_method(),
            scopes: vec![scope.into()],
            template: None,
        };
        Profile {
            platform_url: platform_url.trim_end_matches('/').into(),
            instant: dataset("API.ARPPI3VTCB", "moi.ris.ds001.read"),
            slow: Some(dataset("API.3DQEOU3GLR", "moi.dla.ds005.read")),
            citizen: Person {
                id: "A120345672".into(),
                birth_date: Some("1988-01-01".into()),
                name: Some("王大明".into()),
                email: Some("wang.daming@example.test".into()),
            },
            other_citizen: Person {
                id: "F228710436".into(),
                birth_date: Some("1975-03-15".into()),
                name: Some("林淑芬".into()),
                email: Some("lin.shufen@example.test".into()),
            },
            no_data_id: "H135908240".into(),
            dp_ca: None,
            cache_secs: default_cache_secs(),
            slow_max_secs: default_slow_max_secs(),
            client_id: default_client_id(),
            dp_ca_pem: Some(SANDBOX_DP_CA.to_vec()),
        }
    }

    /// Where the suite listens for the DP's introspection and userinfo requests.
    pub fn listen(&self) -> Result<SocketAddr, ProfileError> {
        let rest = self.platform_url.strip_prefix("http://").ok_or_else(|| {
            ProfileError(format!(
                "platform_url {}: expected http://IP:PORT",
                self.platform_url
            ))
        })?;
        rest.trim_end_matches('/').parse().map_err(|_| {
            ProfileError(format!(
                "platform_url {}: the host must be IP:PORT (the suite listens there)",
                self.platform_url
            ))
        })
    }

    /// The datasets of the profile (instant, then slow when present).
    pub fn datasets(&self) -> impl Iterator<Item = &DatasetProfile> {
        std::iter::once(&self.instant).chain(self.slow.as_ref())
    }

    /// Checks every entry; the first problem is the error.
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.listen()?;
        for d in self.datasets() {
            if d.resource_id.parse::<ResourceId>().is_err() {
                return err(format!(
                    "{}: not a resource_id (API.XXXXXXXXXX)",
                    d.resource_id
                ));
            }
            if d.resource_secret.is_empty() {
                return err(format!("{}: resource_secret is empty", d.resource_id));
            }
            if !(d.endpoint.starts_with("http://") || d.endpoint.starts_with("https://")) {
                return err(format!(
                    "{}: endpoint {} is not an http(s) URL",
                    d.resource_id, d.endpoint
                ));
            }
            if !matches!(d.method.as_str(), "GET" | "POST") {
                return err(format!(
                    "{}: method {}: expected GET or POST",
                    d.resource_id, d.method
                ));
            }
            if let Some(t) = &d.template {
                Template::from_json(&t.to_string())
                    .map_err(|e| ProfileError(format!("{}: template: {e}", d.resource_id)))?;
            }
        }
        if let Some(s) = &self.slow
            && s.resource_id == self.instant.resource_id
        {
            return err("slow and instant must be different datasets");
        }
        let ids = [&self.citizen.id, &self.other_citizen.id, &self.no_data_id];
        if ids.iter().any(|i| i.is_empty()) {
            return err("citizen.id, other_citizen.id and no_data_id must be set");
        }
        if ids[0].eq_ignore_ascii_case(ids[1])
            || ids[0].eq_ignore_ascii_case(ids[2])
            || ids[1].eq_ignore_ascii_case(ids[2])
        {
            return err(
                "citizen.id, other_citizen.id and no_data_id must be three different people",
            );
        }
        if !(1..=300).contains(&self.cache_secs) {
            return err(format!("cache_secs {}: expected 1 to 300", self.cache_secs));
        }
        if !(1..=5_400).contains(&self.slow_max_secs) {
            return err(format!(
                "slow_max_secs {}: expected 1 to 5400",
                self.slow_max_secs
            ));
        }
        if self.dp_ca_pem.is_none() {
            return err(
                "dp_ca: the CA file the DP's signing certificate must chain to is required",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_profile_is_valid_and_bad_entries_are_named() {
        let p = Profile::sandbox("http://127.0.0.1:9100", "http://127.0.0.1:8081/");
        p.validate().unwrap();
        assert_eq!(
            p.instant.endpoint,
            "http://127.0.0.1:8081/dp/API.ARPPI3VTCB"
        );
        assert_eq!(p.listen().unwrap().port(), 9100);

        let mut bad = p.clone();
        bad.platform_url = "http://localhost:9100".into();
        assert!(bad.validate().unwrap_err().0.contains("IP:PORT"));
        let mut bad = p.clone();
        bad.no_data_id = p.citizen.id.clone();
        assert!(bad.validate().unwrap_err().0.contains("different"));
        let mut bad = p.clone();
        bad.cache_secs = 0;
        assert!(bad.validate().unwrap_err().0.contains("cache_secs"));
        let mut bad = p;
        bad.instant.method = "PUT".into();
        assert!(bad.validate().unwrap_err().0.contains("GET or POST"));

        let e = Profile::from_json(r#"{"platform_url":"http://127.0.0.1:1"}"#, Path::new("."))
            .unwrap_err();
        assert!(e.0.contains("missing field"), "{e}");
    }
}
