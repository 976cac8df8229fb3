//! §10.1, D31 over real HTTP on 127.0.0.1: an access token lives only as long as its DP call
//! series. A proxy in front of the sandbox DP keeps the bearer token the platform sent; once the
//! package is ready, introspection of that token says `{"active": false}` and userinfo answers
//! 401 (a rule that existed without a test, issue 20).

mod common;

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use mydata_protocol::catalogue::sandbox_resource_secret;
use mydata_protocol::ids::ResourceId;
use mydata_protocol::package::sp::PackagingMode;

use common::{Browser, CITIZEN, pii_datasets, world};

/// A proxy that forwards `/dp/{rid}` to `upstream` and keeps every `Authorization` it saw.
fn recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let srv = HttpServer::new(move || {
        let (seen, upstream) = (s2.clone(), upstream.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (seen, upstream) = (seen.clone(), upstream.clone());
            async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push(auth.clone());
                let mut fwd = awc::Client::default()
                    .request(req.method().clone(), format!("{upstream}{}", req.uri()))
                    .insert_header(("authorization", auth));
                for h in ["accept", "content-type"] {
                    if let Some(v) = req.headers().get(h) {
                        fwd = fwd.insert_header((h, v.clone()));
                    }
                }
                let mut r = fwd.send_body(body).await.unwrap();
                let bytes = r.body().limit(64 << 20).await.unwrap();
                let mut out = HttpResponse::build(r.status());
                for h in ["content-type", "retry-after"] {
                    if let Some(v) = r.headers().get(h) {
                        out.insert_header((h, v.clone()));
                    }
                }
                out.body(bytes)
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    actix_web::rt::spawn(srv.run());
    (format!("http://{addr}"), seen)
}

#[actix_web::test]
async fn a_token_is_dead_once_its_call_series_ended() {
    let w = world().await;
    let ids = pii_datasets(1);
    let rid = ids[0].clone();
    // The dataset's DP behind the recording proxy.
    let mut dp = w.p.store.get_dp(&rid).unwrap().unwrap();
    let (base, path) = dp.endpoint.split_at(dp.endpoint.find("/dp/").unwrap());
    let (proxy, seen) = recording_proxy(base.to_string());
    dp.endpoint = format!("{proxy}{path}");
    w.p.store.update_dp(&dp).unwrap();

    let creds = w.register(PackagingMode::B, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-token", CITIZEN)).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&creds).0, 200);
    let ticket = w.sp_api_calls().last().unwrap()["permission_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = common::poll_until_ready(&w.srv.url, &ticket, "tx-token").await;
    assert_eq!(s, 200);

    let bearer = seen
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("the DP was called through the proxy");
    let token = bearer.strip_prefix("Bearer ").expect("a bearer token");
    let secret = sandbox_resource_secret(&rid.parse::<ResourceId>().unwrap());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{rid}:{secret}"))
    );
    let mut r = awc::Client::default()
        .post(format!("{}/connect/introspect", w.srv.url))
        .insert_header(("Authorization", basic))
        .content_type("application/x-www-form-urlencoded")
        .send_body(format!("token={token}"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v, serde_json::json!({"active": false}));
    let r = awc::Client::default()
        .get(format!("{}/connect/userinfo", w.srv.url))
        .insert_header(("Authorization", bearer.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
