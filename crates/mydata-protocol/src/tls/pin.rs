//! Client-certificate pins on a server context (see the [module documentation](super)).
//!
//! [`require_pinned_client`] narrows an acceptor that already requires client certificates
//! chaining to a CA ([`super::acceptor`] with `ClientCerts::Required`): the client's leaf
//! certificate must also have one of the given SHA-256 fingerprints. An SP or DP built on our
//! SDKs uses it to accept only the platform's client certificate (issue 15, D49).

use openssl::ssl::{SslAcceptorBuilder, SslVerifyMode};

use super::acceptor::{AcceptorError, ClientCerts, ServerTls, acceptor, pinned};

/// A server context (for actix-web's `bind_openssl`) serving `cert_chain_pem` and `key_pem`
/// that requires a client certificate chaining to `client_ca_pem` and, when `pins` is not
/// empty, having one of those SHA-256 fingerprints: an SP-API or DP-API that accepts only the
/// platform (its `platform-client` certificate, or any certificate of the platform's CA).
pub fn acceptor_requiring_client(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    pins: Vec<String>,
) -> Result<SslAcceptorBuilder, AcceptorError> {
    let mut b = acceptor(&ServerTls {
        cert_chain_pem,
        key_pem,
        client_ca_pem: Some(client_ca_pem),
        client_certs: ClientCerts::Required,
    })?;
    require_pinned_client(&mut b, pins);
    Ok(b)
}

/// Makes `b` refuse any handshake whose client leaf certificate is not one of `pins` (SHA-256
/// of the DER, hex, any case, `:` allowed; see [`super::acceptor::fingerprint`]). The chain
/// must still verify against the acceptor's client CA; a certificate is required. With no pin,
/// only the requirement is set.
pub fn require_pinned_client(b: &mut SslAcceptorBuilder, pins: Vec<String>) {
    let mode = SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    b.set_verify_callback(mode, move |ok, ctx| {
        if !ok {
            return false;
        }
        if pins.is_empty() || ctx.error_depth() != 0 {
            return true;
        }
        ctx.current_cert().is_some_and(|c| pinned(c, &pins))
    });
}
