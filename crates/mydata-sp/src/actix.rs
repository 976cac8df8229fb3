//! The actix-web adapter of the SP-API receiver.
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use mydata_sp::SpConfig;
//! use mydata_sp::actix::SpApiReceiver;
//! use mydata_sp::receiver::Received;
//!
//! # async fn demo(sp: SpConfig) -> std::io::Result<()> {
//! let receiver = SpApiReceiver::from_config(&sp, |r: Received| {
//!     // Store r.permission_ticket and r.content under r.tx_id.
//!     let _ = r;
//!     Ok(())
//! });
//! HttpServer::new(move || App::new().service(receiver.resource("/sp-api")))
//!     .bind(("127.0.0.1", 8090))?
//!     .run()
//!     .await
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use mydata_protocol::param::ParamCipher;

use crate::config::SpConfig;
use crate::receiver::{MAX_BODY_LEN, ReceiveError, Received, receive};

/// The application's refusal of an otherwise valid SP-API call (for example an unknown `tx_id`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct Rejected {
    /// The HTTP status to answer (a 4xx or 5xx; anything else is answered as 400).
    pub status: u16,
    /// A short reason, sent in the answer's JSON `error` member.
    pub reason: String,
}

impl Rejected {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Rejected {
            status,
            reason: reason.into(),
        }
    }
}

/// Where accepted SP-API calls go. It must answer quickly: the platform waits at most 30 s.
pub trait SpApiSink: Send + Sync + 'static {
    /// Takes one accepted call; `Err` refuses it (the platform then returns the citizen with 410).
    fn deliver(&self, received: Received) -> Result<(), Rejected>;
}

impl<F> SpApiSink for F
where
    F: Fn(Received) -> Result<(), Rejected> + Send + Sync + 'static,
{
    fn deliver(&self, received: Received) -> Result<(), Rejected> {
        self(received)
    }
}

struct Inner {
    cipher: ParamCipher,
    api_key: Option<String>,
    sink: Arc<dyn SpApiSink>,
}

/// An SP-API endpoint for actix-web. Cheap to clone.
#[derive(Clone)]
pub struct SpApiReceiver {
    inner: Arc<Inner>,
}

impl fmt::Debug for SpApiReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpApiReceiver")
            .field("cipher", &self.inner.cipher)
            .field(
                "api_key",
                &self.inner.api_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl SpApiReceiver {
    /// A receiver checking `api_key` (none expected when `None`) and decrypting with `cipher`.
    pub fn new(cipher: ParamCipher, api_key: Option<String>, sink: impl SpApiSink) -> Self {
        Self::with_sink(cipher, api_key, Arc::new(sink))
    }

    /// Like [`SpApiReceiver::new`], with a shared sink.
    pub fn with_sink(
        cipher: ParamCipher,
        api_key: Option<String>,
        sink: Arc<dyn SpApiSink>,
    ) -> Self {
        SpApiReceiver {
            inner: Arc::new(Inner {
                cipher,
                api_key,
                sink,
            }),
        }
    }

    /// A receiver for an SP's configuration (its cipher and SP-API key).
    pub fn from_config(sp: &SpConfig, sink: impl SpApiSink) -> Self {
        Self::new(sp.cipher(), sp.api_key.clone(), sink)
    }

    /// Handles one body: 200 `{"ok":true}` when accepted and taken by the sink, otherwise the
    /// error's status with `{"error": kind, "message": …}`.
    pub fn respond(&self, body: &[u8]) -> HttpResponse {
        let i = &self.inner;
        match receive(body, i.api_key.as_deref(), &i.cipher) {
            Ok(r) => match i.sink.deliver(r) {
                Ok(()) => HttpResponse::Ok().json(serde_json::json!({"ok": true})),
                Err(rej) => {
                    let status = StatusCode::from_u16(rej.status)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .unwrap_or(StatusCode::BAD_REQUEST);
                    HttpResponse::build(status)
                        .json(serde_json::json!({"error": "rejected", "message": rej.reason}))
                }
            },
            Err(e) => error_response(&e),
        }
    }

    /// A resource at `path` answering `POST` (other methods get 405).
    pub fn resource(&self, path: &str) -> actix_web::Resource {
        let me = self.clone();
        web::resource(path)
            .app_data(web::PayloadConfig::new(MAX_BODY_LEN))
            .route(web::post().to(move |body: web::Bytes| {
                let me = me.clone();
                async move { me.respond(&body) }
            }))
    }

    /// For `App::configure`: mounts the receiver at `path`.
    pub fn configure(&self, path: &str) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
        let resource = self.resource(path);
        move |cfg: &mut web::ServiceConfig| {
            cfg.service(resource);
        }
    }
}

fn error_response(e: &ReceiveError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::build(status)
        .json(serde_json::json!({"error": e.kind(), "message": e.to_string()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, test};
    use mydata_protocol::flow::{SpApiBody, SpApiDelivery};
    use mydata_protocol::ids::{PermissionTicket, SecretKey};
    use mydata_protocol::param::ParamMode;
    use std::sync::Mutex;

    #[actix_web::test]
    async fn adapter_statuses_and_sink() {
        let cipher =
            ParamCipher::from_raw("SandboxSecret001", "SandboxCbcIv0001", ParamMode::Cbc).unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let g2 = got.clone();
        let recv = SpApiReceiver::new(cipher.clone(), Some("k".repeat(32)), move |r: Received| {
            if r.tx_id.as_str() == "unknown" {
                return Err(Rejected::new(404, "unknown tx_id"));
            }
            g2.lock().map_err(|_| Rejected::new(500, "lock"))?.push(r);
            Ok(())
        });
        let app = test::init_service(App::new().service(recv.resource("/sp-api"))).await;
        let secret = SecretKey::generate().unwrap();
        let mk = |tx: &str, key: &str| {
            SpApiBody {
                tx_id: tx.parse().unwrap(),
                api_key: Some(key.into()),
                permission_ticket: PermissionTicket::generate().unwrap(),
                delivery: SpApiDelivery::SecretKey(cipher.encrypt(secret.as_str()).unwrap()),
            }
            .to_json()
        };
        let post = |b: String| {
            test::TestRequest::post()
                .uri("/sp-api")
                .insert_header(("content-type", "application/json; charset=utf-8"))
                .set_payload(b)
                .to_request()
        };
        let r = test::call_service(&app, post(mk("t1", &"k".repeat(32)))).await;
        assert_eq!(r.status(), 200);
        let r = test::call_service(&app, post(mk("t1", &"x".repeat(32)))).await;
        assert_eq!(r.status(), 403);
        let r = test::call_service(&app, post("not json".into())).await;
        assert_eq!(r.status(), 400);
        let r = test::call_service(&app, post(mk("unknown", &"k".repeat(32)))).await;
        assert_eq!(r.status(), 404);
        let r =
            test::call_service(&app, test::TestRequest::get().uri("/sp-api").to_request()).await;
        assert_eq!(r.status(), 405);
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].secret_key(), Some(&secret));
    }
}
