//! The SP-API over real HTTP on 127.0.0.1: bodies written the way the platform writes them
//! (`flow::SpApiBody::to_json`, `secret_key` encrypted with `ParamCipher`) are accepted by the
//! SDK's actix receiver; a wrong `apiKey`, both members, or garbage are refused with 4xx.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpServer};
use mydata_protocol::flow::{SpApiBody, SpApiDelivery};
use mydata_protocol::ids::{PermissionTicket, SecretKey};
use mydata_protocol::jwe::JweMode;
use mydata_sp::SpConfig;
use mydata_sp::actix::SpApiReceiver;
use mydata_sp::receiver::{Received, ReceivedContent};

const API_KEY: &str = "SandboxApiKey0000000000000000002";

fn sandbox002() -> SpConfig {
    SpConfig::new(
        "http://127.0.0.1:8080",
        "CLI.SANDBOX002".parse().unwrap(),
        "SandboxSecret002".parse().unwrap(),
        "SandboxCbcIv0002".parse().unwrap(),
        "http://127.0.0.1:8090/return",
    )
    .with_mode(JweMode::Gcm)
    .with_api_key(API_KEY)
}

#[actix_web::test]
async fn platform_bodies_over_http() {
    let sp = sandbox002();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let g = got.clone();
    let receiver = SpApiReceiver::from_config(&sp, move |r: Received| {
        g.lock().unwrap().push(r);
        Ok(())
    });
    let srv = HttpServer::new(move || App::new().configure(receiver.configure("/sp-api")))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let url = format!("http://{}/sp-api", srv.addrs()[0]);
    let srv = srv.run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);

    // The platform side: the same cipher the platform derives from the registration.
    let platform_cipher = sp.cipher();
    let secret = SecretKey::generate().unwrap();
    let ticket = PermissionTicket::generate().unwrap();
    let body = |api_key: Option<&str>, delivery: SpApiDelivery| {
        SpApiBody {
            tx_id: "tx-interop-1".parse().unwrap(),
            api_key: api_key.map(str::to_owned),
            permission_ticket: ticket.clone(),
            delivery,
        }
        .to_json()
    };
    let post = |b: String| {
        let url = url.clone();
        async move {
            awc::Client::default()
                .post(url)
                .insert_header(("content-type", "application/json; charset=utf-8"))
                .send_body(b)
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let enc = platform_cipher.encrypt(secret.as_str()).unwrap();
    assert_eq!(
        post(body(Some(API_KEY), SpApiDelivery::SecretKey(enc.clone()))).await,
        200
    );
    assert_eq!(
        post(body(
            Some(API_KEY),
            SpApiDelivery::UnableToDeliver(vec!["API.5XQQ2IWD37".parse().unwrap()])
        ))
        .await,
        200
    );
    // Refusals.
    assert_eq!(
        post(body(
            Some("SandboxApiKey0000000000000000001"),
            SpApiDelivery::SecretKey(enc.clone())
        ))
        .await,
        403
    );
    assert_eq!(
        post(body(None, SpApiDelivery::SecretKey(enc.clone()))).await,
        403
    );
    let both = format!(
        r#"{{"tx_id":"t","apiKey":"{API_KEY}","permission_ticket":"{ticket}","secret_key":"{enc}","unable_to_deliver":["API.5XQQ2IWD37"]}}"#
    );
    assert_eq!(post(both).await, 400);
    assert_eq!(post("garbage".into()).await, 400);
    // A CBC-encrypted key does not pass a GCM SP.
    let cbc = sp
        .clone()
        .with_mode(JweMode::Cbc)
        .cipher()
        .encrypt(secret.as_str())
        .unwrap();
    assert_eq!(
        post(body(Some(API_KEY), SpApiDelivery::SecretKey(cbc))).await,
        400
    );

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "only the two valid calls reach the sink");
    assert_eq!(got[0].content, ReceivedContent::SecretKey(secret));
    assert_eq!(got[0].permission_ticket, ticket);
    assert_eq!(
        got[1].unable_to_deliver().unwrap()[0].as_str(),
        "API.5XQQ2IWD37"
    );
    handle.stop(true).await;
}
