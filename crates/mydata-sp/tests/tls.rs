//! The SP SDK toward an HTTPS platform (issue 15, spec D49), with real TLS on 127.0.0.1 and the
//! sandbox TLS PKI: the MyData-API poller presents the `sp-client` certificate to a platform that
//! requires it, verifies the platform's certificate against the configured CA, and an SP-API
//! built on the SDK accepts only the platform's pinned client certificate.
#![cfg(feature = "tls")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_protocol::ids::PermissionTicket;
use mydata_protocol::tls::acceptor::{self, ClientCerts, ServerTls};
use mydata_sp::poll::{Answer, MyDataApi, PollOptions};
use mydata_sp::tls::{TlsConfig, acceptor_requiring_platform, fingerprint};
use openssl::ssl::SslAcceptorBuilder;
use openssl::x509::X509;

fn tls(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/tls")
        .join(name);
    std::fs::read(p).unwrap()
}

fn pin(name: &str) -> String {
    fingerprint(&X509::from_pem(&tls(name)).unwrap())
}

type Seen = Arc<Mutex<Vec<String>>>;

async fn data(req: HttpRequest, seen: web::Data<Seen>) -> HttpResponse {
    let ticket = req
        .headers()
        .get("permission_ticket")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    seen.lock().unwrap().push(ticket);
    HttpResponse::Ok()
        .content_type("application/jwe")
        .body("aaa.bbb.ccc.ddd.eee")
}

/// An HTTPS server on 127.0.0.1 with `acceptor`, answering `GET /service/data` with a JWE.
fn start(acceptor: SslAcceptorBuilder) -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(s2.clone()))
            .route("/service/data", web::get().to(data))
    })
    .workers(1)
    .bind_openssl("127.0.0.1:0", acceptor)
    .unwrap();
    let port = srv.addrs()[0].port();
    actix_web::rt::spawn(srv.run());
    (format!("https://127.0.0.1:{port}"), seen)
}

/// A platform requiring a client certificate from the sandbox TLS root, `sp-client` pinned.
fn strict_platform() -> (String, Seen) {
    start(
        acceptor_requiring_platform(
            &tls("platform.pem"),
            &tls("platform.key"),
            &tls("tls-root-ca.pem"),
            vec![pin("sp-client.pem")],
        )
        .unwrap(),
    )
}

fn ticket() -> PermissionTicket {
    "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44".parse().unwrap()
}

async fn once(url: &str, tls_config: Option<TlsConfig>) -> Answer {
    let mut api = MyDataApi::new(url, PollOptions::default());
    if let Some(t) = tls_config {
        api = api.with_tls(&t).unwrap();
    }
    api.fetch_once(&ticket(), None, SystemTime::now()).await
}

#[actix_web::test]
async fn polls_an_https_platform_with_the_sp_client_certificate() {
    let (url, seen) = strict_platform();
    let config = TlsConfig::new()
        .with_pinned_ca(tls("tls-root-ca.pem"))
        .with_client_certificate(tls("sp-client.pem"), tls("sp-client.key"));
    match once(&url, Some(config)).await {
        Answer::Ready(jwe) => assert_eq!(jwe, "aaa.bbb.ccc.ddd.eee"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec!["6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44".to_string()]
    );
}

#[actix_web::test]
async fn a_missing_or_wrong_client_certificate_or_an_untrusted_platform_gets_nothing() {
    let (url, seen) = strict_platform();
    let root = || TlsConfig::new().with_extra_ca(tls("tls-root-ca.pem"));
    let cases = [
        ("no client certificate", root()),
        (
            "the platform's certificate, not the pinned one",
            root().with_client_certificate(tls("platform-client.pem"), tls("platform-client.key")),
        ),
        (
            "an untrusted client certificate",
            root()
                .with_client_certificate(tls("untrusted-client.pem"), tls("untrusted-client.key")),
        ),
        (
            "the platform under another pinned CA",
            TlsConfig::new()
                .with_pinned_ca(tls("other-tls-root-ca.pem"))
                .with_client_certificate(tls("sp-client.pem"), tls("sp-client.key")),
        ),
    ];
    for (what, config) in cases {
        match once(&url, Some(config)).await {
            Answer::Transient { .. } => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // Without the sandbox root the platform's certificate does not verify.
    assert!(matches!(once(&url, None).await, Answer::Transient { .. }));
    assert!(seen.lock().unwrap().is_empty());
}

#[actix_web::test]
async fn an_old_tls_version_is_not_offered() {
    // A server that speaks only TLS 1.1 (if its OpenSSL allows it at all) gets no handshake.
    let mut b: SslAcceptorBuilder = acceptor::acceptor(&ServerTls {
        cert_chain_pem: &tls("platform.pem"),
        key_pem: &tls("platform.key"),
        client_ca_pem: None,
        client_certs: ClientCerts::None,
    })
    .unwrap();
    b.clear_options(openssl::ssl::SslOptions::NO_TLSV1 | openssl::ssl::SslOptions::NO_TLSV1_1);
    b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
    b.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1))
        .unwrap();
    b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_1))
        .unwrap();
    let (url, seen) = start(b);
    let config = TlsConfig::new().with_pinned_ca(tls("tls-root-ca.pem"));
    assert!(matches!(
        once(&url, Some(config)).await,
        Answer::Transient { .. }
    ));
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a_bad_client_key_is_a_typed_error() {
    let e = MyDataApi::new("https://127.0.0.1:1", PollOptions::default())
        .with_tls(
            &TlsConfig::new().with_client_certificate(tls("sp-client.pem"), tls("platform.key")),
        )
        .unwrap_err();
    assert_eq!(e, mydata_sp::tls::ConnectorError::KeyMismatch);
}
