//! The actix-web adapter: mounts a [`DpService`] at a path, for GET and POST.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use actix_web::{App, HttpServer};
//! # use mydata_dp::{DpService, actix::DpApi};
//! # async fn demo(service: DpService) -> std::io::Result<()> {
//! let api = DpApi::new(service);
//! HttpServer::new(move || App::new().configure(api.configure("/dp/household")))
//!     .bind(("127.0.0.1", 8081))?
//!     .run()
//!     .await
//! # }
//! ```

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::answer::HttpAnswer;
use crate::request::{MAX_BODY_LEN, RawRequest};
use crate::service::DpService;

/// A [`DpService`] ready to be mounted in an actix-web `App`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DpApi {
    service: Arc<DpService>,
}

impl DpApi {
    /// Wraps a service.
    pub fn new(service: DpService) -> Self {
        DpApi {
            service: Arc::new(service),
        }
    }

    /// Wraps a shared service.
    pub fn from_arc(service: Arc<DpService>) -> Self {
        DpApi { service }
    }

    /// The service.
    pub fn service(&self) -> &Arc<DpService> {
        &self.service
    }

    /// A resource at `path` answering every method (GET and POST are served, others get 405).
    pub fn resource(&self, path: &str) -> actix_web::Resource {
        web::resource(path)
            .app_data(web::Data::from(self.service.clone()))
            .app_data(web::PayloadConfig::new(MAX_BODY_LEN))
            .default_service(web::to(handler))
    }

    /// For `App::configure`: mounts the service at `path`.
    pub fn configure(&self, path: &str) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
        let resource = self.resource(path);
        move |cfg: &mut web::ServiceConfig| {
            cfg.service(resource);
        }
    }
}

async fn handler(
    service: web::Data<DpService>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    respond(&service, &req, &body).await
}

/// Answers an actix request with a service (for custom routing, e.g. one path parameter
/// selecting among several services).
pub async fn respond(service: &DpService, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let headers: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let raw = RawRequest {
        method: req.method().as_str(),
        query: req.query_string(),
        headers: &headers,
        body,
    };
    to_response(service.handle(&raw).await)
}

/// Converts a framework-free answer into an actix response.
pub fn to_response(answer: HttpAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(status);
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(*name),
            HeaderValue::try_from(value.as_str()),
        ) {
            resp.insert_header((n, v));
        }
    }
    if let Some(ct) = answer.content_type {
        resp.insert_header((CONTENT_TYPE, ct));
    }
    if answer.body.is_empty() {
        resp.finish()
    } else {
        resp.body(web::Bytes::from_owner(answer.body))
    }
}
