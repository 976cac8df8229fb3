//! The SDK's general error (redirect building and configuration).

/// Errors while building a redirect or using the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpError {
    /// The platform URL is not an absolute `http://` or `https://` URL.
    #[error("platform URL {0:?} is not an absolute http(s) URL")]
    PlatformUrl(String),
    /// The return URL is not an absolute `http://` or `https://` URL without a fragment.
    #[error("return URL {0:?} is not an absolute http(s) URL without a fragment")]
    ReturnUrl(String),
    /// The extra query for the return URL holds `#`.
    #[error("the return query must not hold '#'")]
    ReturnQuery,
    /// The protocol core refused a value (encryption, randomness, identifiers).
    #[error(transparent)]
    Protocol(#[from] mydata_protocol::Error),
}
