//! The DP SDK toward an HTTPS platform and from it (issue 15, spec D49), with real TLS on
//! 127.0.0.1 and the sandbox TLS PKI: the introspection client verifies the platform against a
//! configured CA, and a DP-API built on the SDK accepts only the platform's pinned client
//! certificate.
#![cfg(feature = "tls")]

use std::path::PathBuf;

use actix_web::{App, HttpResponse, HttpServer, web};
use mydata_dp::introspect::{HttpIntrospector, IntrospectError, Introspector, ResourceSecret};
use mydata_dp::tls::{TlsConfig, acceptor_requiring_platform, fingerprint};
use mydata_protocol::tls::acceptor::{self, ClientCerts, ServerTls};
use openssl::ssl::SslAcceptorBuilder;
use openssl::x509::X509;

fn tls(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/tls")
        .join(name);
    std::fs::read(p).unwrap()
}

fn start(acceptor: SslAcceptorBuilder) -> String {
    let srv = HttpServer::new(|| {
        App::new()
            .route(
                "/connect/introspect",
                web::post().to(|| async {
                    HttpResponse::Ok().json(serde_json::json!({
                        "active": true,
                        "aud": ["API.HTTPSDP001"],
                        "scope": "test.https",
                    }))
                }),
            )
            .route(
                "/dp",
                web::get().to(|| async { HttpResponse::Ok().body("zip") }),
            )
    })
    .workers(1)
    .bind_openssl("127.0.0.1:0", acceptor)
    .unwrap();
    let port = srv.addrs()[0].port();
    actix_web::rt::spawn(srv.run());
    format!("https://127.0.0.1:{port}")
}

fn plain_acceptor(server: &str) -> SslAcceptorBuilder {
    acceptor::acceptor(&ServerTls {
        cert_chain_pem: &tls(&format!("{server}.pem")),
        key_pem: &tls(&format!("{server}.key")),
        client_ca_pem: None,
        client_certs: ClientCerts::None,
    })
    .unwrap()
}

fn introspector(base: &str) -> HttpIntrospector {
    HttpIntrospector::new(
        base,
        "API.HTTPSDP001",
        ResourceSecret::new("0123456789abcdef"),
    )
}

#[actix_web::test]
async fn introspects_an_https_platform_trusted_through_its_ca() {
    let base = start(plain_acceptor("platform"));
    let i = introspector(&base)
        .with_tls(&TlsConfig::new().with_extra_ca(tls("tls-root-ca.pem")))
        .unwrap();
    let answer = i.introspect("token").await.unwrap();
    assert!(answer.active);
    assert_eq!(answer.aud, vec!["API.HTTPSDP001".to_string()]);
    // The system roots alone do not know the sandbox root; another pinned CA refuses it too.
    let e = introspector(&base).introspect("token").await.unwrap_err();
    assert!(matches!(e, IntrospectError::Transport(_)), "{e:?}");
    let e = introspector(&base)
        .with_tls(&TlsConfig::new().with_pinned_ca(tls("other-tls-root-ca.pem")))
        .unwrap()
        .introspect("token")
        .await
        .unwrap_err();
    assert!(matches!(e, IntrospectError::Transport(_)), "{e:?}");
}

#[actix_web::test]
async fn an_expired_or_misnamed_platform_certificate_is_refused() {
    for server in ["expired-server", "wrong-host"] {
        let base = start(plain_acceptor(server));
        let e = introspector(&base)
            .with_tls(&TlsConfig::new().with_pinned_ca(tls("tls-root-ca.pem")))
            .unwrap()
            .introspect("token")
            .await
            .unwrap_err();
        assert!(
            matches!(e, IntrospectError::Transport(_)),
            "{server}: {e:?}"
        );
    }
}

/// A GET of `{base}/dp` with `config`: the status, or the error's text.
async fn get_dp(base: &str, config: &TlsConfig) -> Result<u16, String> {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().openssl(config.connector().unwrap()))
        .finish();
    client
        .get(format!("{base}/dp"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[actix_web::test]
async fn a_dp_api_requires_the_platforms_pinned_client_certificate() {
    let platform_pin = fingerprint(&X509::from_pem(&tls("platform-client.pem")).unwrap());
    let base = start(
        acceptor_requiring_platform(
            &tls("sandbox-dp.pem"),
            &tls("sandbox-dp.key"),
            &tls("tls-root-ca.pem"),
            vec![platform_pin],
        )
        .unwrap(),
    );
    let root = || TlsConfig::new().with_pinned_ca(tls("tls-root-ca.pem"));
    let platform =
        root().with_client_certificate(tls("platform-client.pem"), tls("platform-client.key"));
    assert_eq!(get_dp(&base, &platform).await, Ok(200));
    for (what, config) in [
        ("no certificate", root()),
        (
            "the SP's certificate (same CA, not pinned)",
            root().with_client_certificate(tls("sp-client.pem"), tls("sp-client.key")),
        ),
        (
            "an expired certificate",
            root().with_client_certificate(tls("expired-client.pem"), tls("expired-client.key")),
        ),
        (
            "an untrusted certificate",
            root()
                .with_client_certificate(tls("untrusted-client.pem"), tls("untrusted-client.key")),
        ),
    ] {
        assert!(get_dp(&base, &config).await.is_err(), "{what}");
    }
}
