//! `/connect/introspect`, `/connect/userinfo` and `/.well-known/oauth-authorization-server`
//! (spec §10, D31, D32).

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::State;
use crate::auth::Introspection;
use crate::http::errors::{self, Surface};

/// Mounts the authorization-server routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connect/introspect", web::post().to(introspect))
        .route("/connect/userinfo", web::get().to(userinfo))
        .route("/connect/userinfo", web::post().to(userinfo))
        .route(
            "/.well-known/oauth-authorization-server",
            web::get().to(metadata),
        );
}

/// `Authorization: Basic` credentials, if well-formed.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    b
}

fn unauthorized_basic() -> HttpResponse {
    no_store(HttpResponse::Unauthorized())
        .insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"mydata\""))
        .json(json!({"error": "invalid_client"}))
}

async fn introspect(state: State, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let creds = basic(req.headers());
    let Some((id, secret)) = creds.as_ref() else {
        return unauthorized_basic();
    };
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let now = state.now();
    // Authenticate before looking at the token, so that bad credentials learn nothing.
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return match state.auth.introspect(Some((id, secret)), "", now) {
            Ok(Introspection::BadCredentials) => unauthorized_basic(),
            Ok(_) => no_store(HttpResponse::BadRequest()).json(json!({
                "error": "invalid_request",
                "error_description": "form parameter token is required"
            })),
            Err(e) => errors::oauth(Surface::Introspection, &e),
        };
    };
    match state.auth.introspect(Some((id, secret)), &token, now) {
        Ok(Introspection::BadCredentials) => unauthorized_basic(),
        Ok(Introspection::Inactive) => no_store(HttpResponse::Ok())
            .content_type("application/json")
            .body(r#"{"active":false}"#),
        Ok(Introspection::Active(m)) => no_store(HttpResponse::Ok()).json(m),
        Err(e) => errors::oauth(Surface::Introspection, &e),
    }
}

async fn userinfo(state: State, req: HttpRequest) -> HttpResponse {
    let invalid = || {
        no_store(HttpResponse::Unauthorized())
            .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
            .finish()
    };
    let Some(token) = bearer(req.headers()) else {
        return no_store(HttpResponse::Unauthorized())
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"mydata\""))
            .finish();
    };
    match state.auth.userinfo(token, state.now()) {
        Ok(Some(claims)) => no_store(HttpResponse::Ok()).json(claims),
        Ok(None) => invalid(),
        Err(e) => errors::oauth(Surface::Userinfo, &e),
    }
}

async fn metadata(state: State) -> HttpResponse {
    let base = &state.config.public_url;
    HttpResponse::Ok().json(json!({
        "issuer": base,
        "introspection_endpoint": format!("{base}/connect/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "userinfo_endpoint": format!("{base}/connect/userinfo"),
        "response_types_supported": [],
        "grant_types_supported": [],
    }))
}
