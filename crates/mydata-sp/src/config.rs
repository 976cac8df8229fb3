//! The SP's registration, as the SDK needs it.

use std::fmt;

use mydata_protocol::ids::{CbcIv, ClientId, ClientSecret};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::{ParamCipher, ParamMode};

/// What an SP registered at the platform (brief §4), plus where the platform is.
///
/// The registration's single "parameter encryption" choice (AES/CBC or AES/GCM) governs both the
/// parameter encryption of `pid`, `tx_id` and `secret_key` ([`ParamMode`]) and the JWE algorithms
/// ([`JweMode`]); [`SpConfig::with_gcm`] sets both. They are kept as two fields for SPs whose
/// platform couples them differently.
///
/// `Debug` does not print `client_secret` or `api_key`.
#[derive(Clone)]
pub struct SpConfig {
    /// The platform's base URL, e.g. `https://mydata.example` (no trailing slash needed).
    pub platform_url: String,
    /// The SP's `client_id`.
    pub client_id: ClientId,
    /// The SP's `client_secret` (parameter-encryption key material).
    pub client_secret: ClientSecret,
    /// The SP's `cbc_iv` (parameter-encryption IV, and the JWE content IV in mode CBC).
    pub cbc_iv: CbcIv,
    /// Parameter encryption of `pid`, `tx_id` and `secret_key`.
    pub param_mode: ParamMode,
    /// JWE algorithms of the MyData-API answer.
    pub jwe_mode: JweMode,
    /// The registered `return_url`.
    pub return_url: String,
    /// The SP-API key, when the service registered one (D24).
    pub api_key: Option<String>,
    /// The registered packaging mode, when known; enables the mode checks of packages.md §5.2.
    pub packaging_mode: Option<PackagingMode>,
}

impl fmt::Debug for SpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpConfig")
            .field("platform_url", &self.platform_url)
            .field("client_id", &self.client_id)
            .field("param_mode", &self.param_mode)
            .field("jwe_mode", &self.jwe_mode)
            .field("return_url", &self.return_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("packaging_mode", &self.packaging_mode)
            .finish_non_exhaustive()
    }
}

impl SpConfig {
    /// A configuration in mode CBC, without an SP-API key and without a known packaging mode.
    pub fn new(
        platform_url: impl Into<String>,
        client_id: ClientId,
        client_secret: ClientSecret,
        cbc_iv: CbcIv,
        return_url: impl Into<String>,
    ) -> Self {
        SpConfig {
            platform_url: platform_url.into(),
            client_id,
            client_secret,
            cbc_iv,
            param_mode: ParamMode::Cbc,
            jwe_mode: JweMode::Cbc,
            return_url: return_url.into(),
            api_key: None,
            packaging_mode: None,
        }
    }

    /// Sets both the parameter encryption and the JWE to the registered mode.
    pub fn with_mode(mut self, mode: JweMode) -> Self {
        self.jwe_mode = mode;
        self.param_mode = match mode {
            JweMode::Cbc => ParamMode::Cbc,
            JweMode::Gcm => ParamMode::Gcm,
        };
        self
    }

    /// Mode GCM for both the parameters and the JWE.
    pub fn with_gcm(self) -> Self {
        self.with_mode(JweMode::Gcm)
    }

    /// Sets the SP-API key the platform must send.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the registered packaging mode.
    pub fn with_packaging_mode(mut self, mode: PackagingMode) -> Self {
        self.packaging_mode = Some(mode);
        self
    }

    /// The parameter cipher of this SP.
    pub fn cipher(&self) -> ParamCipher {
        ParamCipher::new(&self.client_secret, &self.cbc_iv, self.param_mode)
    }

    /// The platform URL without trailing slashes.
    pub(crate) fn platform_base(&self) -> &str {
        self.platform_url.trim_end_matches('/')
    }
}

/// Whether `url` is an absolute `http://` or `https://` URL with a host.
pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SpConfig {
        SpConfig::new(
            "http://127.0.0.1:8080/",
            "CLI.SANDBOX001".parse().unwrap(),
            "SandboxSecret001".parse().unwrap(),
            "SandboxCbcIv0001".parse().unwrap(),
            "http://127.0.0.1:8090/return",
        )
    }

    #[test]
    fn modes_and_redaction() {
        let c = cfg().with_api_key("SandboxApiKey0000000000000000001");
        assert_eq!(c.cipher().mode(), ParamMode::Cbc);
        assert_eq!(c.platform_base(), "http://127.0.0.1:8080");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SandboxSecret001"), "{dbg}");
        assert!(!dbg.contains("SandboxApiKey"), "{dbg}");
        let g = c.with_gcm();
        assert_eq!(g.jwe_mode, JweMode::Gcm);
        assert_eq!(g.cipher().mode(), ParamMode::Gcm);
    }

    #[test]
    fn http_urls() {
        assert!(is_http_url("http://127.0.0.1:8080"));
        assert!(is_http_url("https://sp.example/return?x=1"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("http:///path"));
        assert!(!is_http_url("http://a b"));
        assert!(!is_http_url("/relative"));
    }
}
