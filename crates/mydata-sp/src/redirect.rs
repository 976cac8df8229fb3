//! The redirect to the platform (spec protocol.md §5.1–§5.2, D3, D4).
//!
//! ```text
//! {platform}/service/{client_id}/{resources}/{tx_id}?returnUrl={url}&pid={enc_pid}[&caseNumber={case}]
//! ```

use mydata_protocol::flow::{Pid, percent_encode};
use mydata_protocol::ids::{CaseNumber, PermissionTicket, TxId};
use mydata_protocol::resources::ResourceList;

use crate::config::{SpConfig, is_http_url};
use crate::error::SpError;

/// A fresh `tx_id`: a random UUID version 4 in lower case (D4 asks for uniqueness per `client_id`
/// for 8 hours; 122 random bits give it).
pub fn new_tx_id() -> Result<TxId, SpError> {
    // A v4 UUID is also a valid tx_id ([A-Za-z0-9-], 36 characters).
    let uuid = PermissionTicket::generate()?;
    Ok(uuid.as_str().parse()?)
}

/// The `{resources}` path segment: standard Base64 of the ids joined with `:`, with `/` and `+`
/// percent-encoded (§5.2). `=` padding is kept, as it is allowed in a path segment.
pub fn resources_segment(resources: &ResourceList) -> String {
    escape_segment(&resources.encode())
}

/// Percent-encodes the two Base64 characters that a path segment cannot carry as they are.
fn escape_segment(b64: &str) -> String {
    let mut out = String::with_capacity(b64.len() + 8);
    for c in b64.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '+' => out.push_str("%2B"),
            c => out.push(c),
        }
    }
    out
}

/// What one redirect asks for.
#[derive(Debug, Clone)]
pub struct RedirectRequest<'a> {
    /// The datasets, in request order.
    pub resources: &'a ResourceList,
    /// The citizen (or legal person) the SP names.
    pub pid: &'a Pid,
    /// The `tx_id` to use; a fresh one ([`new_tx_id`]) when `None`.
    pub tx_id: Option<TxId>,
    /// The approved trial application number (required while the service is in trial).
    pub case_number: Option<&'a CaseNumber>,
    /// A query string to add to the return URL (without `?`); the platform copies it back (§6).
    pub return_query: Option<&'a str>,
}

impl<'a> RedirectRequest<'a> {
    /// A request with a fresh `tx_id`, no `caseNumber` and no return query.
    pub fn new(resources: &'a ResourceList, pid: &'a Pid) -> Self {
        RedirectRequest {
            resources,
            pid,
            tx_id: None,
            case_number: None,
            return_query: None,
        }
    }
}

/// A redirect ready to send to the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The URL for the `Location` header.
    pub url: String,
    /// The `tx_id` in the URL: bind it to the browser session before redirecting.
    pub tx_id: TxId,
}

impl SpConfig {
    /// Builds the redirect URL (§5.1): `pid` is encrypted with the SP's parameter cipher and
    /// percent-encoded, `returnUrl` is the registered return URL (plus `return_query`),
    /// percent-encoded.
    pub fn redirect(&self, req: &RedirectRequest<'_>) -> Result<Redirect, SpError> {
        let base = self.platform_base();
        if !is_http_url(base) {
            return Err(SpError::PlatformUrl(self.platform_url.clone()));
        }
        if !is_http_url(&self.return_url) || self.return_url.contains('#') {
            return Err(SpError::ReturnUrl(self.return_url.clone()));
        }
        let tx_id = match &req.tx_id {
            Some(t) => t.clone(),
            None => new_tx_id()?,
        };
        let mut return_url = self.return_url.clone();
        if let Some(q) = req.return_query.filter(|q| !q.is_empty()) {
            if q.contains('#') {
                return Err(SpError::ReturnQuery);
            }
            return_url.push(if return_url.contains('?') { '&' } else { '?' });
            return_url.push_str(q.trim_start_matches('?'));
        }
        let enc_pid = self.cipher().encrypt(req.pid.as_str())?;
        let mut url = format!(
            "{base}/service/{}/{}/{}?returnUrl={}&pid={}",
            self.client_id,
            resources_segment(req.resources),
            tx_id,
            percent_encode(&return_url),
            percent_encode(&enc_pid),
        );
        if let Some(c) = req.case_number {
            url.push_str("&caseNumber=");
            url.push_str(&percent_encode(c.as_str()));
        }
        Ok(Redirect { url, tx_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mydata_protocol::flow::ApplicationMode;
    use mydata_protocol::ids::ResourceId;
    use mydata_protocol::jwe::JweMode;
    use mydata_protocol::param::{ParamCipher, ParamMode};

    fn spec_cfg() -> SpConfig {
        SpConfig::new(
            "https://mydata.example",
            "CLI.SANDBOX001".parse().unwrap(),
            "Kx7pQ2mN9vR4tL8w".parse().unwrap(),
            "Hj3kM6nP9qS2uV5x".parse().unwrap(),
            "https://sp.example/mydata/return",
        )
    }

    fn ids(v: &[&str]) -> ResourceList {
        ResourceList::new(v.iter().map(|s| s.parse::<ResourceId>().unwrap()).collect()).unwrap()
    }

    #[test]
    fn worked_example_16_1() {
        let list = ids(&["API.HOUSEHOLD1", "API.LANDREC001"]);
        let pid = Pid::parse_for(ApplicationMode::Person, "A123456789").unwrap();
        let req = RedirectRequest {
            tx_id: Some("3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e".parse().unwrap()),
            return_query: Some("step=2"),
            ..RedirectRequest::new(&list, &pid)
        };
        let r = spec_cfg().redirect(&req).unwrap();
        assert_eq!(
            r.url,
            "https://mydata.example/service/CLI.SANDBOX001/QVBJLkhPVVNFSE9MRDE6QVBJLkxBTkRSRUMwMDE=/\
             3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e?returnUrl=https%3A%2F%2Fsp.example%2Fmydata%2Freturn%3Fstep%3D2\
             &pid=5fRhnjLWuQPMiB1e9Rsy0Q%3D%3D"
        );
        assert_eq!(r.tx_id.as_str(), "3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e");
    }

    #[test]
    fn fresh_tx_ids_and_case_number_and_gcm() {
        let list = ids(&["API.2RXHOGTXIC"]);
        let pid = Pid::parse_for(ApplicationMode::Person, "F228710436").unwrap();
        let case: CaseNumber = "A-2024-0001".parse().unwrap();
        let cfg = spec_cfg().with_gcm();
        let req = RedirectRequest {
            case_number: Some(&case),
            ..RedirectRequest::new(&list, &pid)
        };
        let a = cfg.redirect(&req).unwrap();
        let b = cfg.redirect(&req).unwrap();
        assert_ne!(a.tx_id, b.tx_id);
        assert_eq!(a.tx_id.as_str().len(), 36);
        assert!(a.url.ends_with("&caseNumber=A-2024-0001"), "{}", a.url);
        assert!(a.url.contains(&format!("/{}?returnUrl=", a.tx_id)));
        // The pid round-trips through the platform's decryption.
        let enc = a
            .url
            .split("&pid=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=");
        let platform =
            ParamCipher::from_raw("Kx7pQ2mN9vR4tL8w", "Hj3kM6nP9qS2uV5x", ParamMode::Gcm).unwrap();
        assert_eq!(platform.decrypt(&enc).unwrap(), "F228710436");
        assert_eq!(cfg.jwe_mode, JweMode::Gcm);
    }

    #[test]
    fn segment_escapes_slash_and_plus() {
        // Valid ids never produce '+' or '/', so check the escaping on the encoder directly.
        let list = ids(&["API.HOUSEHOLD1"]);
        assert!(!resources_segment(&list).contains('%'));
        assert_eq!(escape_segment("ab+/c="), "ab%2B%2Fc=");
        assert_eq!(escape_segment("++//"), "%2B%2B%2F%2F");
    }

    #[test]
    fn bad_urls_are_refused() {
        let list = ids(&["API.HOUSEHOLD1"]);
        let pid = Pid::parse_for(ApplicationMode::Person, "A123456789").unwrap();
        let mut c = spec_cfg();
        c.platform_url = "mydata.example".into();
        assert!(matches!(
            c.redirect(&RedirectRequest::new(&list, &pid)),
            Err(SpError::PlatformUrl(_))
        ));
        let mut c = spec_cfg();
        c.return_url = "https://sp.example/r#frag".into();
        assert!(matches!(
            c.redirect(&RedirectRequest::new(&list, &pid)),
            Err(SpError::ReturnUrl(_))
        ));
        let req = RedirectRequest {
            return_query: Some("a=1#x"),
            ..RedirectRequest::new(&list, &pid)
        };
        assert!(matches!(
            spec_cfg().redirect(&req),
            Err(SpError::ReturnQuery)
        ));
    }
}
