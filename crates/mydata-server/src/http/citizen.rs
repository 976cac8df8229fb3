//! The citizen pages (spec §5.3, D46): plain HTML forms that work without JavaScript, in
//! Traditional Chinese with English, behind a cookie session with a CSRF token on every form.
//!
//! Handlers only translate between HTTP and [`crate::citizen::flow`].

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use mydata_protocol::codes::IdentityMethod;
use mydata_protocol::flow::RedirectRequest;

use super::State;
use crate::citizen::flow::{self as cflow, Action, Next, Step, View};
use crate::citizen::session::COOKIE;
use crate::citizen::{Channel, Citizen, Field};
use crate::http::errors::{self, Surface};

/// Mounts the citizen pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The flow's routes first: a request is matched against the patterns in order, and the
    // pages of a flow are most of the requests.
    cfg.route("/flow/{id}/{action}", web::post().to(post))
        .route("/flow/{id}", web::get().to(page))
        // Reserved for SP-verified identity (identity modes 2 and 3, not specified yet): a
        // plain 404 for every method and depth (D38).
        .route("/service/spsignature{tail:.*}", web::route().to(reserved))
        .route(
            "/service/{client_id}/{resources}/{tx_id}",
            web::get().to(redirect),
        )
        .route("/static/mydata.css", web::get().to(css))
        .route("/static/card.js", web::get().to(card_js));
}

const CSS: &str = include_str!("../../static/mydata.css");
const CARD_JS: &str = include_str!("../../static/card.js");

async fn card_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(CARD_JS)
}

async fn reserved() -> HttpResponse {
    secure(&mut HttpResponse::NotFound())
        .content_type("text/plain; charset=utf-8")
        .body("Not Found")
}

/// Security headers of every page: no caching, no framing, no referrer, nothing but our CSS.
fn secure(b: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(CSS)
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text_zh: &'a str,
    text_en: &'a str,
}

#[derive(Template)]
#[template(path = "flow.html")]
struct FlowPage<'a> {
    v: &'a View,
    title: &'a str,
    step: &'a str,
    pii: bool,
    otp: bool,
    /// The certificate methods on offer: (code, name).
    certs: Vec<(&'static str, String)>,
    /// The local signing agent's origin, when the page offers it.
    card_agent: String,
    channels: Vec<(&'static str, String)>,
    unusable: String,
    lock_until: String,
    national_id: Input,
    birth_date: Input,
    nhi_card_number: Input,
    household_number: Input,
    code: Input,
    signature: Input,
}

/// An error message as the page shows it, before the first input it is about.
struct ErrorView {
    id: String,
    zh: String,
    en: String,
}

/// One input of a form: the value typed before an error, the error shown before it, the ids
/// of the errors that describe it (`aria-describedby`), and whether it takes the focus.
#[derive(Default)]
struct Input {
    value: String,
    error: Option<ErrorView>,
    described_by: String,
    autofocus: bool,
}

fn input(v: &View, field: Field) -> Input {
    let value = match field {
        Field::NationalId => v.typed.national_id.clone(),
        Field::BirthDate => v.typed.birth_date.clone(),
        Field::NhiCardNumber => v.typed.nhi_card_number.clone(),
        Field::HouseholdNumber => v.typed.household_number.clone(),
        // A one-time password or a signature is never shown again.
        Field::Code | Field::Signature => String::new(),
    };
    let error_id = |e: &crate::citizen::FieldError| {
        e.fields
            .first()
            .map(|f| format!("{}-error", f.name()))
            .unwrap_or_default()
    };
    let error = v
        .errors
        .iter()
        .find(|e| e.fields.first() == Some(&field))
        .map(|e| ErrorView {
            id: error_id(e),
            zh: e.zh.clone(),
            en: e.en.clone(),
        });
    let described_by = v
        .errors
        .iter()
        .filter(|e| e.fields.contains(&field))
        .map(error_id)
        .collect::<Vec<_>>()
        .join(" ");
    // The first input of the first error takes the focus (`autofocus`: no script needed).
    let autofocus =
        v.locked.is_none() && v.errors.first().and_then(|e| e.fields.first()) == Some(&field);
    Input {
        value,
        error,
        described_by,
        autofocus,
    }
}

fn html(status: StatusCode, body: Result<String, askama::Error>) -> HttpResponse {
    match body {
        Ok(b) => secure(&mut HttpResponse::build(status))
            .content_type("text/html; charset=utf-8")
            .body(b),
        Err(e) => errors::empty(
            Surface::Template,
            &crate::ServerError::Internal(e.to_string()),
        ),
    }
}

fn message(status: StatusCode, title: &str, zh: &str, en: &str) -> HttpResponse {
    html(
        status,
        MessagePage {
            title,
            text_zh: zh,
            text_en: en,
        }
        .render(),
    )
}

fn no_session() -> HttpResponse {
    message(
        StatusCode::FORBIDDEN,
        "連線已失效 / Session expired",
        "此頁面已失效（逾時、在其他瀏覽器開啟，或表單已過期）。請回到申請服務的網站重新開始。",
        "This page is no longer valid (it timed out, was opened in another browser, or the form is stale). Go back to the service's site and start again.",
    )
}

/// The citizen's error page for an error that reached a handler (logged once, in
/// [`errors`]).
fn internal(surface: Surface, e: &crate::ServerError) -> HttpResponse {
    errors::log(surface, e);
    message(
        errors::status_of(e),
        "系統錯誤 / System error",
        "系統暫時無法處理您的要求，請稍後再試。",
        "The platform cannot handle your request right now. Please try again later.",
    )
}

fn session_cookie(state: &State, value: String) -> Cookie<'static> {
    Cookie::build(COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.public_url.starts_with("https://"))
        .finish()
}

fn respond(state: &State, next: Next) -> HttpResponse {
    match next {
        Next::NotFound => secure(&mut HttpResponse::NotFound())
            .content_type("text/plain; charset=utf-8")
            .body("Not Found"),
        Next::Return(loc) => secure(&mut HttpResponse::Found())
            .insert_header((header::LOCATION, loc))
            .finish(),
        Next::Flow { id, cookie } => {
            let mut b = HttpResponse::SeeOther();
            secure(&mut b).insert_header((header::LOCATION, format!("/flow/{id}")));
            if let Some(c) = cookie {
                b.cookie(session_cookie(state, c));
            }
            b.finish()
        }
        Next::NoSession => no_session(),
        Next::Waiting { id } => {
            let mut r = message(
                StatusCode::OK,
                "請稍候 / Please wait",
                "正在將您的同意通知申請服務的網站，本頁會自動重新整理。",
                "Your consent is being passed to the service. This page reloads by itself.",
            );
            if let Ok(v) = header::HeaderValue::from_str(&format!("1; url=/flow/{id}")) {
                r.headers_mut()
                    .insert(header::HeaderName::from_static("refresh"), v);
            }
            r
        }
    }
}

fn cookie_of(req: &HttpRequest) -> Option<String> {
    req.cookie(COOKIE).map(|c| c.value().to_string())
}

/// The first value of `name` in a query string (form decoding).
fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn redirect(state: State, citizen: web::Data<Citizen>, req: HttpRequest) -> HttpResponse {
    // The raw path: the `{resources}` segment may hold %2F and %2B (§5.2).
    let raw = req.uri().path();
    let mut parts = raw.trim_start_matches('/').splitn(4, '/').skip(1);
    let (Some(client_id), Some(resources), Some(tx_id)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return respond(&state, Next::NotFound);
    };
    let q = req.query_string();
    let (return_url, pid, case_number) = (
        query_param(q, "returnUrl"),
        query_param(q, "pid"),
        query_param(q, "caseNumber"),
    );
    let rr = RedirectRequest {
        client_id,
        resources,
        tx_id,
        return_url: return_url.as_deref(),
        pid: pid.as_deref(),
        case_number: case_number.as_deref(),
        browser_ip: cflow::browser_ip(crate::http::source_ip(&state, &req)),
    };
    let platform: Arc<_> = state.clone().into_inner();
    let cookie = cookie_of(&req);
    match cflow::start(&platform, &citizen, &rr, cookie.as_deref()).await {
        Ok(next) => respond(&state, next),
        Err(e) => internal(Surface::Redirect, &e),
    }
}

fn method_names(ms: &[IdentityMethod]) -> String {
    ms.iter()
        .map(|m| match m {
            IdentityMethod::CitizenCertificate => "自然人憑證 (CER)",
            IdentityMethod::ChipFinancialCard => "晶片金融卡 (FIC)",
            IdentityMethod::HardwareFinancialCertificate => "硬體金融憑證 (FCH)",
            IdentityMethod::BusinessCertificate => "工商憑證 (MOE)",
            IdentityMethod::TwFido => "TW FidO (TFD)",
            IdentityMethod::NhiCard => "健保卡 (NHI)",
            IdentityMethod::SoftwareFinancialCertificate => "軟體金融憑證 (FCS)",
            IdentityMethod::TwoDocuments => "雙證件 (PII)",
            IdentityMethod::Otp => "一次性密碼 (OTP)",
        })
        .collect::<Vec<_>>()
        .join("、")
}

/// `HH:MM (UTC+8)` in Taiwan time (no daylight saving), rounded up to the minute: the lock is
/// over by the time shown.
fn taipei_clock(unix: i64) -> String {
    let s = (unix.saturating_add(8 * 3600 + 59)).rem_euclid(86_400);
    format!("{:02}:{:02} (UTC+8)", s / 3600, s / 60 % 60)
}

async fn page(
    state: State,
    citizen: web::Data<Citizen>,
    path: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    let id = path.into_inner();
    let cookie = cookie_of(&req);
    let platform = state.clone().into_inner();
    let c = citizen.clone().into_inner();
    // Lookups from memory run here; a store that reads the database goes to the blocking pool.
    let r = if platform.store.memory_first() {
        cflow::view(&platform, &c, &id, cookie.as_deref())
    } else {
        match web::block(move || cflow::view(&platform, &c, &id, cookie.as_deref())).await {
            Ok(r) => r,
            Err(e) => return internal(Surface::FlowPage, &e.into()),
        }
    };
    let v = match r {
        Ok(Ok(v)) => v,
        Ok(Err(next)) => return respond(&state, next),
        Err(e) => return internal(Surface::FlowPage, &e),
    };
    let (step, title) = match v.step {
        Step::Terms => ("terms", "服務條款 / Terms of use"),
        Step::Basic => ("basic", "基本資料 / Basic information"),
        Step::Identity => ("identity", "身分驗證 / Identity verification"),
        Step::Consent => ("consent", "同意傳送 / Consent"),
    };
    let channels = v
        .channels
        .iter()
        .map(|(ch, masked)| (ch.as_str(), masked.clone()))
        .collect();
    // The agent is offered on the identity page when a certificate method is.
    let agent = citizen.card_agent.clone().filter(|_| {
        v.step == Step::Identity
            && v.usable
                .iter()
                .any(|m| mydata_protocol::certlogin::is_certificate_method(*m))
    });
    let page = FlowPage {
        title,
        step,
        pii: v.usable.contains(&IdentityMethod::TwoDocuments),
        otp: v.usable.contains(&IdentityMethod::Otp),
        certs: v
            .usable
            .iter()
            .filter(|m| mydata_protocol::certlogin::is_certificate_method(**m))
            .map(|m| (m.code(), method_names(&[*m])))
            .collect(),
        channels,
        unusable: method_names(&v.unusable),
        lock_until: v.locked.map(|(u, _)| taipei_clock(u)).unwrap_or_default(),
        national_id: input(&v, Field::NationalId),
        birth_date: input(&v, Field::BirthDate),
        nhi_card_number: input(&v, Field::NhiCardNumber),
        household_number: input(&v, Field::HouseholdNumber),
        code: input(&v, Field::Code),
        signature: input(&v, Field::Signature),
        card_agent: agent.clone().unwrap_or_default(),
        v: &v,
    };
    let mut r = html(StatusCode::OK, page.render());
    // The page that offers the agent runs our script and may reach that origin, nothing more.
    if let Some(origin) = agent
        && let Ok(csp) = header::HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src {origin}; frame-ancestors 'none'; base-uri 'none'"
        ))
    {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    r
}

/// Every field any form of the flow posts.
#[derive(Debug, Deserialize)]
struct FlowForm {
    #[serde(default)]
    csrf: String,
    national_id: Option<String>,
    birth_date: Option<String>,
    nhi_card_number: Option<String>,
    household_number: Option<String>,
    channel: Option<String>,
    code: Option<String>,
    decision: Option<String>,
    method: Option<String>,
    challenge: Option<String>,
    signature: Option<String>,
}

async fn post(
    state: State,
    citizen: web::Data<Citizen>,
    path: web::Path<(String, String)>,
    form: web::Form<FlowForm>,
    req: HttpRequest,
) -> HttpResponse {
    let (id, action) = path.into_inner();
    let f = form.into_inner();
    let action = match action.as_str() {
        "terms" => Action::AcceptTerms,
        "basic" => Action::Basic {
            national_id: f.national_id.unwrap_or_default(),
            birth_date: f.birth_date.unwrap_or_default(),
        },
        "pii" => Action::TwoDocuments {
            nhi_card_number: f.nhi_card_number.unwrap_or_default(),
            household_number: f.household_number.unwrap_or_default(),
        },
        "otp-send" => match f.channel.as_deref().and_then(Channel::parse) {
            Some(ch) => Action::SendOtp(ch),
            None => return no_session(),
        },
        "otp" => Action::CheckOtp(f.code.unwrap_or_default()),
        "cert-challenge" => Action::CertChallenge,
        "cert" => Action::CertLogin {
            method: f.method.unwrap_or_default(),
            challenge: f.challenge.unwrap_or_default(),
            signature: f.signature.unwrap_or_default(),
        },
        "consent" => match f.decision.as_deref() {
            Some("agree") => Action::Consent(true),
            Some("refuse") => Action::Consent(false),
            _ => return no_session(),
        },
        "cancel" => Action::Cancel,
        _ => {
            return message(
                StatusCode::NOT_FOUND,
                "找不到頁面 / Not found",
                "沒有這個頁面。",
                "There is no such page.",
            );
        }
    };
    let cookie = cookie_of(&req);
    let platform = state.clone().into_inner();
    match cflow::act(&platform, &citizen, &id, cookie.as_deref(), &f.csrf, action).await {
        Ok(next) => respond(&state, next),
        Err(e) => internal(Surface::FlowAction, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taiwan_time() {
        assert_eq!(taipei_clock(0), "08:00 (UTC+8)");
        assert_eq!(taipei_clock(16 * 3600 + 60), "00:01 (UTC+8)");
        // Rounded up: the lock is over at the minute shown.
        assert_eq!(taipei_clock(16 * 3600 + 61), "00:02 (UTC+8)");
        assert_eq!(taipei_clock(6 * 3600 + 5 * 60), "14:05 (UTC+8)");
    }

    #[test]
    fn first_query_value_wins() {
        assert_eq!(
            query_param("pid=a%2Bb&pid=c", "pid").as_deref(),
            Some("a+b")
        );
        assert_eq!(query_param("x=1", "pid"), None);
    }
}
