//! The one place where a [`ServerError`] that reaches a handler becomes an HTTP answer.
//!
//! Errors the protocol defines an answer for never get here: the core and the engine turn them
//! into their documented codes first (`engine::DataAnswer`, `engine::StatusAnswer`, the citizen
//! flow's pages). What does get here is the platform failing itself (storage, a sealed value,
//! a task), so the answer is 500 on every surface, in that surface's own shape, and the cause
//! is logged once, here, with the surface it failed on. Nothing of the request is logged.

use actix_web::HttpResponse;
use actix_web::http::{StatusCode, header};
use serde_json::json;

use crate::error::ServerError;

/// Where an error surfaced: named in the log line, and it decides the shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `GET /service/data`, `txid_status`, `type_valid` (§8): an empty body.
    MyDataApi,
    /// Recording a delivery after its body was written (nothing is answered any more).
    Delivery,
    /// `POST /oauth/introspect` (§10.1): `{"error": "server_error"}`.
    Introspection,
    /// `GET /oauth/userinfo` (§10.2): `{"error": "server_error"}`.
    Userinfo,
    /// The redirect of §5.3 (`/service/sp/...`): the citizen's error page.
    Redirect,
    /// A citizen page (`GET /flow/{id}`): the citizen's error page.
    FlowPage,
    /// A citizen action (`POST /flow/{id}/{action}`): the citizen's error page.
    FlowAction,
    /// Rendering a page template: an empty 500 (the error page is a template too).
    Template,
    /// The sandbox clock's purge (`POST /sandbox/clock`): `{"error": "purge_failed"}`.
    SandboxClock,
}

impl Surface {
    /// The name in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::MyDataApi => "MyData-API",
            Surface::Delivery => "MyData-API: recording a delivery",
            Surface::Introspection => "introspection",
            Surface::Userinfo => "userinfo",
            Surface::Redirect => "redirect",
            Surface::FlowPage => "flow page",
            Surface::FlowAction => "flow action",
            Surface::Template => "template",
            Surface::SandboxClock => "sandbox clock: purge failed",
        }
    }
}

/// The HTTP status of an error that reached a handler: always 500 (see the module's docs), the
/// one mapping every handler goes through.
pub fn status_of(e: &ServerError) -> StatusCode {
    match e {
        ServerError::Config(_)
        | ServerError::Storage(_)
        | ServerError::NotFound(_)
        | ServerError::Conflict(_)
        | ServerError::Invalid(_)
        | ServerError::Protocol(_)
        | ServerError::Upstream(_)
        | ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Logs an error once, naming the surface.
pub fn log(surface: Surface, e: &ServerError) {
    log::error!("{}: {e}", surface.as_str());
}

/// The answer with an empty body (`Cache-Control: no-store`): the MyData-API, templates.
pub fn empty(surface: Surface, e: &ServerError) -> HttpResponse {
    log(surface, e);
    HttpResponse::build(status_of(e))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The OAuth 2.0 shape (`{"error": "server_error"}`, `no-store`): introspection, userinfo.
pub fn oauth(surface: Surface, e: &ServerError) -> HttpResponse {
    log(surface, e);
    HttpResponse::build(status_of(e))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(json!({"error": "server_error"}))
}

/// A JSON `{"error": code}` (the sandbox hooks).
pub fn json_error(surface: Surface, e: &ServerError, code: &str) -> HttpResponse {
    log(surface, e);
    HttpResponse::build(status_of(e)).json(json!({ "error": code }))
}

impl From<actix_web::error::BlockingError> for ServerError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ServerError::Internal(format!("blocking pool: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_that_reaches_a_handler_is_500_in_its_surface_shape() {
        let e = ServerError::Storage("disk full".into());
        assert_eq!(status_of(&e), StatusCode::INTERNAL_SERVER_ERROR);
        let r = empty(Surface::MyDataApi, &e);
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
        let r = oauth(Surface::Introspection, &e);
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers().get("pragma").unwrap(), "no-cache");
    }
}
