//! The profile: what the suite needs to know about the platform under test (JSON, spec
//! `conformance-platform.md`).

use std::net::{IpAddr, SocketAddr};

use mydata_protocol::ids::{CbcIv, ClientId, ClientSecret, ResourceId};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use serde::Deserialize;

/// One SP registration the suite plays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpProfile {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret` (32 characters).
    pub client_secret: String,
    /// `cbc_iv` (16 characters).
    pub cbc_iv: String,
    /// The SP-API key, when the registration has one.
    #[serde(default)]
    pub api_key: Option<String>,
    /// `cbc` or `gcm`.
    pub jwe_mode: String,
    /// `A` or `B`.
    pub packaging_mode: String,
    /// The registered return URL (the suite serves it).
    pub return_url: String,
    /// The registered SP-API URL (the suite serves it).
    pub sp_api_url: String,
}

/// The datasets the checks use; each must be registered at the platform with the DP URL of the
/// profile as endpoint base and the sandbox `resource_secret`, and allowed to every SP of the
/// profile (except `unregistered`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datasets {
    /// Delivered at once.
    pub instant: String,
    /// Answers 429 with `Retry-After` for `slow_secs` seconds, then delivers.
    pub slow: String,
    /// Answers 500 to every call.
    pub failing: String,
    /// Answers a signed package altered after signing.
    pub tampered: String,
    /// A well-formed id that no SP of the profile may request.
    pub unregistered: String,
}

/// The citizen who goes through the pages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Citizen {
    /// National ID (`pid`).
    pub id: String,
    /// ROC birth date, e.g. `0770101`.
    pub birth_date: String,
    /// NHI card number (two-documents method).
    pub nhi_card_number: String,
    /// Household registration number (two-documents method).
    pub household_number: String,
    /// A well-formed national ID of someone else (for code 409).
    pub other_id: String,
}

fn default_slow_secs() -> u64 {
    3
}

/// The default quiet window after a refusal (see [`Profile::refusal_quiet_secs`]).
pub const DEFAULT_REFUSAL_QUIET_SECS: u64 = 3;

fn default_refusal_quiet_secs() -> u64 {
    DEFAULT_REFUSAL_QUIET_SECS
}

fn default_foreign() -> IpAddr {
    IpAddr::from([127, 0, 0, 2])
}

fn default_true() -> bool {
    true
}

/// The suite's profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The platform's base URL (`http://` only).
    pub platform_url: String,
    /// The SP registrations the suite plays (at least one).
    pub sps: Vec<SpProfile>,
    /// The DP base URL the platform calls for the profile's datasets
    /// (`{dp_url}/dp/{resource_id}`); the suite serves it on its host:port.
    pub dp_url: String,
    /// The datasets.
    pub datasets: Datasets,
    /// How long the slow dataset keeps answering 429 (seconds, 1–60; default 3).
    #[serde(default = "default_slow_secs")]
    pub slow_secs: u64,
    /// How long after a refusal an SP-API call for the refused transaction is still looked for
    /// (seconds, 0–60; default 3). The window runs while the later checks do, so it lengthens
    /// the run only when they finish sooner; a call seen at any time before the end of the run
    /// fails `platform.flow.refusal_205`.
    #[serde(default = "default_refusal_quiet_secs")]
    pub refusal_quiet_secs: u64,
    /// The citizen.
    pub citizen: Citizen,
    /// Whether the citizen pages follow spec D46 (otherwise the consent-dependent checks are
    /// skipped).
    #[serde(default = "default_true")]
    pub d46_pages: bool,
    /// The clock hook's path on the platform (`POST {"advance_secs": N}`), e.g.
    /// `/sandbox/clock`; absent, the retention check is skipped.
    #[serde(default)]
    pub clock_hook: Option<String>,
    /// A loopback source address that no SP registered (default 127.0.0.2).
    #[serde(default = "default_foreign")]
    pub foreign_source: IpAddr,
}

/// A profile entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("profile: {0}")]
pub struct ProfileError(pub String);

/// An SP of the profile, parsed.
#[derive(Debug, Clone)]
pub struct Sp {
    /// As written.
    pub raw: SpProfile,
    /// The SDK configuration.
    pub config: mydata_sp::SpConfig,
    /// The JWE mode.
    pub jwe: JweMode,
    /// The packaging mode.
    pub packaging: PackagingMode,
    /// Where the suite listens for this SP's SP-API and return URL.
    pub listen: SocketAddr,
}

/// `http://IP:PORT/...` → (IP:PORT, path). Only IP literals: the suite listens there.
pub fn listen_addr(url: &str) -> Result<(SocketAddr, String), ProfileError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProfileError(format!("{url}: expected http://IP:PORT/…")))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = auth
        .parse()
        .map_err(|_| ProfileError(format!("{url}: the host must be IP:PORT")))?;
    Ok((addr, path.to_string()))
}

impl Profile {
    /// Reads a profile from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let p: Profile = serde_json::from_str(text).map_err(|e| ProfileError(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// The profile matching `mydata serve --sandbox --no-sandbox-dp --sandbox-clock` on
    /// `platform_url`, with the sandbox DP served at `dp_url` (the server's `sandbox_dp_url`)
    /// and the sandbox SPs at `sp_url` (the server's `sandbox_sp_url`).
    pub fn sandbox(platform_url: &str, dp_url: &str, sp_url: &str) -> Self {
        let sp_url = sp_url.trim_end_matches('/');
        let sp = |n: u8, jwe: &str, packaging: &str| SpProfile {
            client_id: format!("CLI.SANDBOX00{n}"),
            client_secret: format!("SandboxSecret00{n}"),
            cbc_iv: format!("SandboxCbcIv000{n}"),
            api_key: Some(format!("SandboxApiKey000000000000000000{n}")),
            jwe_mode: jwe.into(),
            packaging_mode: packaging.into(),
            return_url: format!("{sp_url}/return"),
            sp_api_url: format!("{sp_url}/sp-api"),
        };
        Profile {
            platform_url: platform_url.trim_end_matches('/').into(),
            // Mode B first: the main transaction (slow, failing, tampered) runs on it.
            sps: vec![sp(2, "gcm", "B"), sp(1, "cbc", "A")],
            dp_url: dp_url.trim_end_matches('/').into(),
            datasets: Datasets {
                instant: "API.AFZDMRDWVI".into(),
                slow: "API.AU32RIXPOR".into(),
                failing: "API.ZYUUKSXD2V".into(),
                tampered: "API.WPL4BS6IZW".into(),
                unregistered: "API.ZZZZZZZZZZ".into(),
            },
            slow_secs: default_slow_secs(),
            refusal_quiet_secs: default_refusal_quiet_secs(),
            citizen: Citizen {
                id: "A120345672".into(),
                birth_date: "0770101".into(),
                nhi_card_number: "000018342761".into(),
                household_number: "A2034517".into(),
                other_id: "F228710436".into(),
            },
            d46_pages: true,
            clock_hook: Some("/sandbox/clock".into()),
            foreign_source: default_foreign(),
        }
    }

    /// Checks every entry; the first problem is the error.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if !self.platform_url.starts_with("http://") {
            return Err(ProfileError(format!(
                "platform_url {}: expected http://",
                self.platform_url
            )));
        }
        if self.sps.is_empty() {
            return Err(ProfileError("sps: at least one SP".into()));
        }
        self.parsed_sps()?;
        listen_addr(&self.dp_url)?;
        let d = &self.datasets;
        for (what, id) in [
            ("instant", &d.instant),
            ("slow", &d.slow),
            ("failing", &d.failing),
            ("tampered", &d.tampered),
            ("unregistered", &d.unregistered),
        ] {
            id.parse::<ResourceId>()
                .map_err(|e| ProfileError(format!("datasets.{what}: {e}")))?;
        }
        if !(1..=60).contains(&self.slow_secs) {
            return Err(ProfileError("slow_secs: 1 to 60".into()));
        }
        if self.refusal_quiet_secs > 60 {
            return Err(ProfileError("refusal_quiet_secs: 0 to 60".into()));
        }
        if !self.foreign_source.is_loopback() {
            return Err(ProfileError(
                "foreign_source: a loopback address (the suite runs offline)".into(),
            ));
        }
        if let Some(h) = &self.clock_hook
            && !h.starts_with('/')
        {
            return Err(ProfileError("clock_hook: a path starting with /".into()));
        }
        Ok(())
    }

    /// The SPs, parsed.
    pub fn parsed_sps(&self) -> Result<Vec<Sp>, ProfileError> {
        self.sps
            .iter()
            .map(|s| {
                let bad = |what: &str, e: String| {
                    ProfileError(format!("sp {}: {what}: {e}", s.client_id))
                };
                let jwe = match s.jwe_mode.to_ascii_lowercase().as_str() {
                    "cbc" => JweMode::Cbc,
                    "gcm" => JweMode::Gcm,
                    other => return Err(bad("jwe_mode", format!("{other}: cbc or gcm"))),
                };
                let packaging = match s.packaging_mode.to_ascii_uppercase().as_str() {
                    "A" => PackagingMode::A,
                    "B" => PackagingMode::B,
                    other => return Err(bad("packaging_mode", format!("{other}: A or B"))),
                };
                let client_id: ClientId = s
                    .client_id
                    .parse()
                    .map_err(|e| bad("client_id", format!("{e}")))?;
                let secret: ClientSecret = s
                    .client_secret
                    .parse()
                    .map_err(|e| bad("client_secret", format!("{e}")))?;
                let iv: CbcIv = s
                    .cbc_iv
                    .parse()
                    .map_err(|e| bad("cbc_iv", format!("{e}")))?;
                let (listen, _) = listen_addr(&s.return_url)?;
                let (api_listen, _) = listen_addr(&s.sp_api_url)?;
                if listen != api_listen {
                    return Err(bad(
                        "return_url",
                        "return_url and sp_api_url must share host:port".into(),
                    ));
                }
                let mut config = mydata_sp::SpConfig::new(
                    self.platform_url.as_str(),
                    client_id,
                    secret,
                    iv,
                    s.return_url.clone(),
                )
                .with_mode(jwe)
                .with_packaging_mode(packaging);
                if let Some(k) = &s.api_key {
                    config = config.with_api_key(k.clone());
                }
                Ok(Sp {
                    raw: s.clone(),
                    config,
                    jwe,
                    packaging,
                    listen,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_profile_is_valid_and_round_trips_bad_entries() {
        let p = Profile::sandbox(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8081",
            "http://127.0.0.1:8090/",
        );
        p.validate().unwrap();
        let sps = p.parsed_sps().unwrap();
        assert_eq!(sps[0].packaging, PackagingMode::B);
        assert_eq!(sps[1].jwe, JweMode::Cbc);
        assert_eq!(sps[0].listen, "127.0.0.1:8090".parse().unwrap());
        let mut bad = p.clone();
        bad.datasets.slow = "nope".into();
        assert!(bad.validate().is_err());
        let mut bad = p.clone();
        bad.refusal_quiet_secs = 61;
        assert!(bad.validate().is_err());
        let mut bad = p.clone();
        bad.foreign_source = "10.0.0.1".parse().unwrap();
        assert!(bad.validate().is_err());
        let mut bad = p.clone();
        bad.sps[0].sp_api_url = "http://localhost:1/x".into();
        assert!(bad.validate().is_err());
        assert!(Profile::from_json("{}").is_err());
        assert!(listen_addr("https://127.0.0.1:1/").is_err());
        assert_eq!(
            listen_addr("http://127.0.0.1:9/a/b").unwrap(),
            ("127.0.0.1:9".parse().unwrap(), "/a/b".to_string())
        );
    }
}
