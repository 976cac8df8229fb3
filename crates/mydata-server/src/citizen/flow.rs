//! The citizen's way through the platform (spec §5.3, D46): the redirect, the terms, basic
//! information, identity verification, consent, and the return to the SP.
//!
//! Framework-free: the HTTP layer hands in the request's parts and renders what comes back. The
//! rules themselves are the core's ([`mydata_protocol::flow`], [`mydata_protocol::attempts`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use mydata_protocol::attempts::{self, OtpChallenge, OtpCheck};
use mydata_protocol::certlogin;
use mydata_protocol::codes::{IdentityMethod, ReturnCode};
use mydata_protocol::date::{CivilDate, UnixTime};
use mydata_protocol::flow::{
    self, AcceptedRedirect, ApplicationMode, Availability, Lifecycle, Pid, RedirectRequest,
    Rejection, ServiceStatus, ServiceView, TxFacts, TxSlot,
};
use mydata_protocol::ids::{PermissionTicket, ResourceId};
use mydata_protocol::param::ParamCipher;

use super::notify::mask;
use super::{
    CertTrust, Channel, Field, FieldError, Flow, Notifier, Registry, RegistryEntry, Sessions, Typed,
};
use crate::auth::CitizenClaims;
use crate::config::Config;
use crate::engine::{self, state};
use crate::error::{ServerError, ServerResult};
use crate::observe::TX;
use crate::platform::Platform;
use crate::secrets::random_bytes;
use crate::storage::{DpRecord, SpRecord, TxRecord};

/// The citizen side of the platform: sessions, the registry, and one-time password delivery.
#[derive(Debug)]
pub struct Citizen {
    /// Browser sessions.
    pub sessions: Sessions,
    /// The registry the basic-information and two-documents checks use.
    pub registry: Option<Registry>,
    /// One-time password delivery.
    pub notifier: Notifier,
    /// The issuers of the certificate methods (D51), when any is configured.
    pub certs: Option<CertTrust>,
    /// The origin of the local signing agent the identity page may ask (`card_agent_url`).
    pub card_agent: Option<String>,
}

impl Citizen {
    /// The citizen side of a configuration: the registry file (or the sandbox fixture), SMTP and
    /// the SMS gateway.
    pub fn from_config(c: &Config) -> ServerResult<Self> {
        let registry = if !c.registry.is_empty() {
            let text = std::fs::read_to_string(&c.registry)
                .map_err(|e| ServerError::Config(format!("registry {}: {e}", c.registry)))?;
            Some(Registry::from_json(&text)?)
        } else if c.sandbox {
            Some(Registry::sandbox()?)
        } else {
            None
        };
        let certs = if !c.identity_pki.is_empty() {
            Some(CertTrust::from_dir(std::path::Path::new(&c.identity_pki))?)
        } else if c.sandbox {
            Some(CertTrust::sandbox()?)
        } else {
            None
        };
        let card_agent = match c.card_agent_url.trim() {
            "" => None,
            u => Some(agent_origin(u)?),
        };
        Ok(Citizen {
            sessions: Sessions::new(),
            registry,
            notifier: Notifier::from_config(c)?,
            certs,
            card_agent,
        })
    }

    /// The methods this deployment can perform for `accepted`: the request's methods that the
    /// reference server implements (the certificate methods its issuers cover, two documents,
    /// one-time password) and the identifier admits.
    pub fn usable_methods(&self, accepted: &AcceptedRedirect) -> Vec<IdentityMethod> {
        accepted
            .methods
            .iter()
            .copied()
            .filter(|m| accepted.pid.admits(*m))
            .filter(|m| match m {
                IdentityMethod::TwoDocuments => self.registry.is_some(),
                IdentityMethod::Otp => {
                    self.registry.is_some()
                        && (self.notifier.offers(Channel::Email)
                            || self.notifier.offers(Channel::Mobile))
                }
                m if certlogin::is_certificate_method(*m) => {
                    self.certs.as_ref().is_some_and(|t| t.offers(*m))
                }
                _ => false,
            })
            .collect()
    }
}

/// The origin (`scheme://host:port`) of `card_agent_url`: an `http(s)` URL without credentials,
/// query or fragment, since it goes into the page's CSP.
fn agent_origin(url: &str) -> ServerResult<String> {
    let bad = || {
        ServerError::Config(format!(
            "card_agent_url {url:?}: expected http(s)://host:port"
        ))
    };
    let rest = url
        .strip_prefix("http://")
        .map(|r| ("http", r))
        .or_else(|| url.strip_prefix("https://").map(|r| ("https", r)))
        .ok_or_else(bad)?;
    let host = rest.1.trim_end_matches('/');
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok {
        return Err(bad());
    }
    Ok(format!("{}://{host}", rest.0))
}

/// Where the browser goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A plain `404` (§5.3 steps 1–2).
    NotFound,
    /// Back to the SP: a 302 to this location.
    Return(String),
    /// To a page of the flow: a 303 to `/flow/{id}`, setting the session cookie when given.
    Flow {
        /// The transaction's internal id.
        id: String,
        /// A new session cookie value.
        cookie: Option<String>,
    },
    /// No session holds this flow (expired, another browser, or a forged form): a 403 page.
    NoSession,
    /// The citizen consented and the SP-API call is still being made: a page that reloads
    /// `/flow/{id}` by itself until the transaction's code is known (§6: `code=200` only once
    /// the SP-API answered).
    Waiting {
        /// The transaction's internal id.
        id: String,
    },
}

/// One dataset as the consent page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetLine {
    /// The id.
    pub resource_id: String,
    /// Its name.
    pub name: String,
    /// The DP agency.
    pub provider: String,
    /// Mode B: it cannot be delivered.
    pub unavailable: bool,
}

/// What a page of the flow shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The transaction's internal id (the page's URL).
    pub id: String,
    /// The form's CSRF token.
    pub csrf: String,
    /// Which page.
    pub step: Step,
    /// The SP's service name.
    pub sp_name: String,
    /// The SP's purpose.
    pub purpose: String,
    /// The datasets, in request order.
    pub datasets: Vec<DatasetLine>,
    /// Methods this deployment can perform for the request.
    pub usable: Vec<IdentityMethod>,
    /// Methods the request lists that this deployment cannot perform.
    pub unusable: Vec<IdentityMethod>,
    /// One-time password channels on offer, with the masked contact.
    pub channels: Vec<(Channel, String)>,
    /// A one-time password was sent.
    pub otp_sent: bool,
    /// A message about the last action.
    pub notice: Option<String>,
    /// The errors of the last post, each tied to its inputs.
    pub errors: Vec<FieldError>,
    /// What was typed into the form that got those errors (never a one-time password).
    pub typed: Typed,
    /// Locked until (Unix seconds), with the seconds left.
    pub locked: Option<(i64, i64)>,
    /// The live challenge of the certificate methods (D51), to be signed.
    pub challenge: Option<String>,
}

/// The pages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Terms of use.
    Terms,
    /// National ID and birth date.
    Basic,
    /// Identity verification.
    Identity,
    /// Consent.
    Consent,
}

/// What the browser posted.
#[derive(Debug, Clone)]
pub enum Action {
    /// Accept the terms.
    AcceptTerms,
    /// Basic information.
    Basic {
        /// National ID as typed.
        national_id: String,
        /// ROC birth date as typed (`0770101`).
        birth_date: String,
    },
    /// Two documents.
    TwoDocuments {
        /// NHI card number.
        nhi_card_number: String,
        /// Household registration number.
        household_number: String,
    },
    /// Send a one-time password.
    SendOtp(Channel),
    /// Check a one-time password.
    CheckOtp(String),
    /// Hand out a challenge for a certificate method (D51).
    CertChallenge,
    /// A certificate method's answer: the method code, the challenge signed, and the detached
    /// PKCS#7 signature in base64.
    CertLogin {
        /// `CER`, `FIC`, `FCH`, `FCS`, `NHI` or `MOE`.
        method: String,
        /// The challenge the signature is over.
        challenge: String,
        /// Base64 (standard or URL-safe, padding and whitespace optional) of the DER.
        signature: String,
    },
    /// Agree (`true`) or refuse on the consent page.
    Consent(bool),
    /// Leave the flow (code 205; code 403 when no usable method exists, D46).
    Cancel,
}

fn cipher(p: &Platform, sp: &SpRecord) -> ServerResult<ParamCipher> {
    let s = p.sp_secrets(sp)?;
    Ok(ParamCipher::new(
        &s.client_secret,
        &s.cbc_iv,
        engine::param_mode(sp),
    ))
}

fn methods_of(dp: &DpRecord) -> Vec<IdentityMethod> {
    dp.identity_methods
        .iter()
        .filter_map(|m| IdentityMethod::ALL.into_iter().find(|x| x.code() == m))
        .collect()
}

fn dataset_map(p: &Platform, sp: &SpRecord) -> ServerResult<HashMap<String, DpRecord>> {
    let wanted: std::collections::HashSet<&str> = sp.resources.iter().map(String::as_str).collect();
    // A few datasets: one lookup each, rather than reading and parsing every registration.
    if wanted.len() <= 8 {
        let mut m = HashMap::new();
        for id in wanted {
            if let Some(d) = p.store.get_dp(id)? {
                m.insert(d.resource_id.clone(), d);
            }
        }
        return Ok(m);
    }
    Ok(p.store
        .list_dps()?
        .into_iter()
        .filter(|d| wanted.contains(d.resource_id.as_str()))
        .map(|d| (d.resource_id.clone(), d))
        .collect())
}

fn service_view(
    p: &Platform,
    sp: &SpRecord,
    dps: &HashMap<String, DpRecord>,
) -> ServerResult<ServiceView> {
    let datasets = sp
        .resources
        .iter()
        .filter_map(|r| {
            let id: ResourceId = r.parse().ok()?;
            Some((id, dps.get(r).map(methods_of).unwrap_or_default()))
        })
        .collect();
    Ok(ServiceView {
        return_url: sp.return_url.clone(),
        status: match sp.status.as_str() {
            "suspended" => ServiceStatus::Suspended,
            "taken_down" => ServiceStatus::TakenDown,
            _ => ServiceStatus::Active,
        },
        maintenance: Vec::new(),
        lifecycle: Lifecycle::Online,
        application_mode: Default::default(),
        cipher: cipher(p, sp)?,
        datasets,
    })
}

fn open_pid(p: &Platform, tx: &TxRecord) -> Option<String> {
    tx.pid_sealed
        .as_deref()
        .and_then(|s| p.key.open(&format!("tx:{}:pid", tx.id), s).ok())
}

fn facts(p: &Platform, tx: &TxRecord) -> TxFacts {
    TxFacts {
        state: tx.flow_state(),
        created_at: UnixTime(tx.created_at),
        last_activity: UnixTime(tx.last_activity.max(tx.created_at)),
        resources: serde_json::from_str::<Vec<String>>(&tx.resources)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect(),
        pid: open_pid(p, tx).and_then(|s| Pid::parse_for(Default::default(), &s).ok()),
        return_url: tx.return_url.clone().unwrap_or_default(),
    }
}

/// `GET /service/{client_id}/{resources}/{tx_id}` (§5.3): checks 1–12, then creates or resumes
/// the transaction and binds it to the browser's session.
pub async fn start(
    p: &Arc<Platform>,
    c: &Citizen,
    req: &RedirectRequest<'_>,
    cookie: Option<&str>,
) -> ServerResult<Next> {
    let now = p.now();
    let sp = match req.client_id.parse::<mydata_protocol::ids::ClientId>() {
        Ok(id) => p.store.get_sp(id.as_str())?,
        Err(_) => None,
    };
    let Some(sp) = sp else {
        return Ok(Next::NotFound);
    };
    let dps = dataset_map(p, &sp)?;
    let view = service_view(p, &sp, &dps)?;
    let accepted = match flow::validate_redirect(req, Some(&view), now) {
        Ok(a) => a,
        Err(r) => {
            tracing::info!(
                target: TX,
                event = "redirect_refused",
                client_id = %sp.client_id,
                code = r.code().map(|c| c.wire()),
                "redirect refused"
            );
            return reject(p, &sp, &view.cipher, r, now).await;
        }
    };
    let existing = p.store.find_tx(&sp.client_id, accepted.tx_id.as_str())?;
    let existing_facts = existing.as_ref().map(|t| facts(p, t));
    let session_pid = c
        .sessions
        .with(cookie, now, |s| s.citizen.clone())
        .flatten();
    let mode = sp.packaging_mode;
    let admission = match flow::admit(
        &accepted,
        existing_facts.as_ref(),
        mode,
        |id| match dps.get(id.as_str()) {
            // Three failed heartbeats in a row (§9.4, D30): 504 (D21).
            Some(d) if d.status == "active" && !p.dp_health.is_reachable(&d.endpoint) => {
                Availability::Unreachable
            }
            Some(d) if d.status == "active" => Availability::Available,
            _ => Availability::Stopped,
        },
        session_pid.as_ref(),
        now,
    ) {
        Ok(a) => a,
        Err(r) => {
            // Refused after step 9 (steps 10–12: 403, 409, 501, …): the pair names an ended
            // transaction from now on, so txid_status tells the code and a reuse gets 400
            // (D19). Step 10 in mode B records its own (the SP-API is called).
            let step9 = flow::check_resume(existing_facts.as_ref(), &accepted, now);
            let recorded_by_step10 = matches!(
                &r,
                flow::Rejection::Redirect { unable_to_deliver, .. } if !unable_to_deliver.is_empty()
            );
            let mut refused_tx = None;
            if let (Ok(slot), Some(code), false) = (step9, r.code(), recorded_by_step10) {
                let mut tx = occupy(p, &sp, &accepted, slot, existing, now)?;
                engine::end(p, &mut tx, code, now)?;
                refused_tx = Some(tx.id);
            }
            tracing::info!(
                target: TX,
                event = "redirect_refused",
                tx = refused_tx.as_deref(),
                client_id = %sp.client_id,
                code = r.code().map(|c| c.wire()),
                "redirect refused"
            );
            return reject(p, &sp, &view.cipher, r, now).await;
        }
    };
    // Whether the pair named a stored transaction (continued, or replaced after its 8 hours).
    let existing_pair = existing.is_some();
    let tx = occupy(p, &sp, &accepted, admission.slot, existing, now)?;
    tracing::info!(
        target: TX,
        event = "redirect_accepted",
        tx = %tx.id,
        client_id = %tx.client_id,
        existing = existing_pair,
        datasets = accepted.resources.ids().len(),
        "redirect accepted"
    );
    p.metrics.tx_started();
    let unavailable: Vec<ResourceId> = admission
        .unavailable
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let id = tx.id.clone();
    let (cookie, ()) = c.sessions.with_or_create(cookie, now, |s| {
        s.flows
            .entry(id.clone())
            .or_insert_with(|| Flow::new(accepted, unavailable));
    })?;
    Ok(Next::Flow { id, cookie })
}

/// The transaction a redirect that passed step 9 names: the existing one resumed (its activity
/// recorded), or a new one, replacing a record more than 8 hours old that freed its pair (D19).
fn occupy(
    p: &Platform,
    sp: &SpRecord,
    accepted: &AcceptedRedirect,
    slot: TxSlot,
    existing: Option<TxRecord>,
    now: UnixTime,
) -> ServerResult<TxRecord> {
    match (slot, existing) {
        (TxSlot::Resume, Some(mut tx)) => {
            tx.last_activity = now.0;
            p.store.update_tx(&tx)?;
            Ok(tx)
        }
        (_, old) => {
            if let Some(old) = old {
                engine::forget(p, &old)?;
            }
            let tx = new_tx(p, sp, accepted, now)?;
            p.store.insert_tx(&tx)?;
            Ok(tx)
        }
    }
}

fn new_tx(
    p: &Platform,
    sp: &SpRecord,
    a: &AcceptedRedirect,
    now: UnixTime,
) -> ServerResult<TxRecord> {
    let id = PermissionTicket::generate()?.as_str().to_string();
    let resources: Vec<&str> = a.resources.ids().iter().map(|r| r.as_str()).collect();
    Ok(TxRecord {
        pid_sealed: Some(p.key.seal(&format!("tx:{id}:pid"), a.pid.as_str())?),
        return_query: a.return_query.clone(),
        case_number: a.case_number.as_ref().map(|c| c.as_str().to_string()),
        return_url: Some(a.return_url.clone()),
        // The pair names this transaction for 8 hours, whatever happens (D19; the record
        // deadline); its personal data goes earlier, when it ends (D37; the purge ends it with
        // 408 once its 1,200 s idle or 3,600 s in all have passed, D21).
        ..TxRecord::created(
            id,
            &sp.client_id,
            a.tx_id.as_str(),
            &resources,
            state::REDIRECTED,
            now,
        )
    })
}

async fn reject(
    p: &Arc<Platform>,
    sp: &SpRecord,
    cipher: &ParamCipher,
    r: Rejection,
    now: UnixTime,
) -> ServerResult<Next> {
    if let Rejection::Redirect {
        code,
        tx_id: Some(tx_id),
        unable_to_deliver,
        ..
    } = &r
        && !unable_to_deliver.is_empty()
    {
        // §5.3 step 10: the SP hears which datasets cannot be delivered (§7, D22).
        engine::undeliverable(p, sp, tx_id, *code, unable_to_deliver, now).await?;
    }
    Ok(match r.location(&sp.return_url, cipher)? {
        Some(l) => Next::Return(l),
        None => Next::NotFound,
    })
}

/// The context of one request inside a flow.
struct Ctx {
    tx: TxRecord,
    sp: SpRecord,
    flow: Flow,
    csrf: String,
    citizen: Option<Pid>,
    method: Option<IdentityMethod>,
}

fn load(
    p: &Platform,
    c: &Citizen,
    id: &str,
    cookie: Option<&str>,
    now: UnixTime,
) -> ServerResult<Option<Ctx>> {
    let Some((flow, csrf, citizen, method)) = c
        .sessions
        .with(cookie, now, |s| {
            s.flows
                .get(id)
                .cloned()
                .map(|f| (f, s.csrf.clone(), s.citizen.clone(), s.method))
        })
        .flatten()
    else {
        return Ok(None);
    };
    let Some(tx) = p.store.get_tx(id)? else {
        return Ok(None);
    };
    let Some(sp) = p.store.get_sp(&tx.client_id)? else {
        return Ok(None);
    };
    Ok(Some(Ctx {
        tx,
        sp,
        flow,
        csrf,
        citizen,
        method,
    }))
}

/// A page of a flow whose session is gone: when the transaction itself expired before consent
/// (the session and the transaction share the 1,200 s idle time), the browser goes back to the SP
/// with 408 (D21); otherwise the page is refused. Ending an already expired transaction early
/// gives nothing away, so this needs no session.
fn expired_without_session(p: &Platform, id: &str, now: UnixTime) -> ServerResult<Next> {
    let Some(mut tx) = p.store.get_tx(id)? else {
        return Ok(Next::NoSession);
    };
    let before_consent = tx.flow_state().is_before_consent();
    let expired = flow::pre_consent_expired(
        UnixTime(tx.created_at),
        UnixTime(tx.last_activity.max(tx.created_at)),
        now,
    );
    let (true, true, Some(sp)) = (before_consent, expired, p.store.get_sp(&tx.client_id)?) else {
        return Ok(Next::NoSession);
    };
    let query = tx.return_query.clone();
    let tx_id = tx.tx_id.clone();
    engine::end(p, &mut tx, ReturnCode::Timeout, now)?;
    let enc = cipher(p, &sp)?.encrypt(&tx_id)?;
    Ok(Next::Return(flow::return_url(
        &sp.return_url,
        ReturnCode::Timeout,
        Some(&enc),
        query.as_deref(),
    )))
}

fn save_flow(c: &Citizen, cookie: Option<&str>, id: &str, flow: Flow, now: UnixTime) {
    c.sessions.with(cookie, now, |s| {
        s.flows.insert(id.to_string(), flow);
    });
}

/// Ends the transaction before consent with `code` and sends the browser back.
fn finish(
    p: &Platform,
    c: &Citizen,
    cookie: Option<&str>,
    ctx: &mut Ctx,
    code: ReturnCode,
    now: UnixTime,
) -> ServerResult<Next> {
    engine::end(p, &mut ctx.tx, code, now)?;
    let id = ctx.tx.id.clone();
    c.sessions.with(cookie, now, |s| {
        s.flows.remove(&id);
    });
    back(p, ctx, code)
}

fn back(p: &Platform, ctx: &Ctx, code: ReturnCode) -> ServerResult<Next> {
    Ok(Next::Return(ctx.flow.accepted.return_location(
        &ctx.sp.return_url,
        &cipher(p, &ctx.sp)?,
        code,
    )?))
}

/// Whether the transaction is still before consent and inside its time (D21); ends it with 408
/// otherwise.
fn live(
    p: &Platform,
    c: &Citizen,
    cookie: Option<&str>,
    ctx: &mut Ctx,
    now: UnixTime,
) -> ServerResult<Option<Next>> {
    if ctx.tx.state == state::CALLING_SP {
        // Consented in this tab a moment ago (a reload) or in another: the SP has not answered
        // the SP-API call yet, so neither 200 nor 410 can be told.
        return Ok(Some(Next::Waiting {
            id: ctx.tx.id.clone(),
        }));
    }
    if !ctx.tx.flow_state().is_before_consent() {
        // Consent already happened (a reload, another tab), or the transaction ended: back to
        // the SP with the code it was sent back with, which for an acknowledged consent stays
        // 200 whatever happened to the DP calls since (they are told by txid_status).
        let code = if ctx.tx.sp_api_ack && ctx.tx.state != state::UNDELIVERABLE {
            ReturnCode::Success
        } else {
            ctx.tx
                .code
                .and_then(|c| ReturnCode::from_wire(c as u16))
                .unwrap_or(ReturnCode::BadRequest)
        };
        return back(p, ctx, code).map(Some);
    }
    if flow::pre_consent_expired(
        UnixTime(ctx.tx.created_at),
        UnixTime(ctx.tx.last_activity.max(ctx.tx.created_at)),
        now,
    ) {
        return finish(p, c, cookie, ctx, ReturnCode::Timeout, now).map(Some);
    }
    // Within the same second there is nothing new to record.
    if ctx.tx.last_activity != now.0 {
        ctx.tx.last_activity = now.0;
        p.store.update_tx(&ctx.tx)?;
    }
    Ok(None)
}

/// What `GET /flow/{id}` shows: the next page, or a return to the SP.
pub fn view(
    p: &Platform,
    c: &Citizen,
    id: &str,
    cookie: Option<&str>,
) -> ServerResult<Result<View, Next>> {
    let now = p.now();
    let Some(mut ctx) = load(p, c, id, cookie, now)? else {
        return Ok(Err(expired_without_session(p, id, now)?));
    };
    if let Some(next) = live(p, c, cookie, &mut ctx, now)? {
        return Ok(Err(next));
    }
    let step = if !ctx.flow.terms {
        Step::Terms
    } else if !ctx.flow.basic {
        Step::Basic
    } else if ctx.tx.state == state::AUTHENTICATED
        && ctx.citizen.as_ref() == Some(&ctx.flow.accepted.pid)
    {
        Step::Consent
    } else {
        Step::Identity
    };
    let dps = dataset_map(p, &ctx.sp)?;
    let datasets = ctx
        .flow
        .accepted
        .resources
        .ids()
        .iter()
        .map(|r| {
            let d = dps.get(r.as_str());
            DatasetLine {
                resource_id: r.as_str().to_string(),
                name: d.map(|d| d.name.clone()).unwrap_or_default(),
                provider: d.map(|d| d.provider.clone()).unwrap_or_default(),
                unavailable: ctx.flow.unavailable.contains(r),
            }
        })
        .collect();
    let usable = c.usable_methods(&ctx.flow.accepted);
    let unusable = ctx
        .flow
        .accepted
        .methods
        .iter()
        .copied()
        .filter(|m| !usable.contains(m))
        .collect();
    let entry = c
        .registry
        .as_ref()
        .and_then(|r| r.get(ctx.flow.accepted.pid.as_str()));
    let channels = if usable.contains(&IdentityMethod::Otp) {
        channels(c, entry)
    } else {
        Vec::new()
    };
    let locked = c
        .sessions
        .lockout(id, now, |l| l.check(now))
        .err()
        .map(|until| (until.0, until.0 - now.0));
    let notice = ctx.flow.notice.take();
    // Shown once: a reload shows the form empty, and the values leave the session.
    let errors = std::mem::take(&mut ctx.flow.errors);
    let typed = std::mem::take(&mut ctx.flow.typed);
    let otp_sent = ctx.flow.otp.is_some();
    let challenge = ctx.flow.challenge.current(id, now).map(str::to_owned);
    save_flow(c, cookie, id, ctx.flow.clone(), now);
    Ok(Ok(View {
        id: id.to_string(),
        csrf: ctx.csrf,
        step,
        sp_name: ctx.sp.name,
        purpose: ctx.sp.purpose,
        datasets,
        usable,
        unusable,
        channels,
        otp_sent,
        notice,
        errors,
        typed,
        locked,
        challenge,
    }))
}

fn channels(c: &Citizen, entry: Option<&RegistryEntry>) -> Vec<(Channel, String)> {
    let Some(e) = entry else {
        return Vec::new();
    };
    [(Channel::Email, &e.email), (Channel::Mobile, &e.mobile)]
        .into_iter()
        .filter(|(ch, to)| !to.is_empty() && c.notifier.offers(*ch))
        .map(|(ch, to)| (ch, mask(to)))
        .collect()
}

fn same(a: &str, b: &str) -> bool {
    mydata_protocol::constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// `POST /flow/{id}/…`: checks the session and the CSRF token, applies the action, and says where
/// the browser goes next.
pub async fn act(
    p: &Arc<Platform>,
    c: &Citizen,
    id: &str,
    cookie: Option<&str>,
    csrf: &str,
    action: Action,
) -> ServerResult<Next> {
    let now = p.now();
    let Some(mut ctx) = load(p, c, id, cookie, now)? else {
        return expired_without_session(p, id, now);
    };
    if !same(&ctx.csrf, csrf) {
        return Ok(Next::NoSession);
    }
    if let Some(next) = live(p, c, cookie, &mut ctx, now)? {
        return Ok(next);
    }
    let stay = Next::Flow {
        id: id.to_string(),
        cookie: None,
    };
    let locked = c.sessions.lockout(id, now, |l| l.check(now)).err();
    match action {
        Action::Cancel => {
            let code = if c.usable_methods(&ctx.flow.accepted).is_empty() {
                ReturnCode::Forbidden
            } else {
                ReturnCode::Refused
            };
            return finish(p, c, cookie, &mut ctx, code, now);
        }
        Action::AcceptTerms => ctx.flow.terms = true,
        Action::Basic {
            national_id,
            birth_date,
        } if ctx.flow.terms && locked.is_none() => {
            let typed = national_id.trim().to_ascii_uppercase();
            let birth_text = birth_date.trim();
            let birth = CivilDate::parse_roc(birth_text).ok();
            // Format first: a malformed value is answered on its input and never counts as a
            // failed attempt; only a well-formed wrong answer does (D46).
            let mut errors = Vec::new();
            // Well-formed: a personal ID with its check digit, or, when the SP named a legal
            // person, its business number.
            let kind = match ctx.flow.accepted.pid {
                Pid::Person(_) => ApplicationMode::Person,
                Pid::LegalPerson(_) => ApplicationMode::PersonOrLegalPerson,
            };
            if Pid::parse_for(kind, &typed).is_err() {
                errors.push(field_error(
                    &[Field::NationalId],
                    "身分證統一編號格式不正確，請檢查英文字母與數字",
                    "This is not a valid national ID number: check its letter and digits.",
                ));
            }
            if birth.is_none() {
                errors.push(field_error(
                    &[Field::BirthDate],
                    "出生日期須為民國年月日 7 碼，例如 0770101",
                    "The birth date must be 7 digits: ROC year, month and day, e.g. 0770101.",
                ));
            }
            ctx.flow.typed = Typed {
                national_id: kept(&national_id),
                birth_date: kept(&birth_date),
                ..Typed::default()
            };
            if !errors.is_empty() {
                ctx.flow.errors = errors;
                save_flow(c, cookie, id, ctx.flow, now);
                return Ok(stay);
            }
            if Pid::parse_for(Default::default(), &typed).is_ok()
                && typed != ctx.flow.accepted.pid.as_str()
            {
                // Someone other than the person the SP named (§5.3, code 409).
                return finish(p, c, cookie, &mut ctx, ReturnCode::IdentityConflict, now);
            }
            let entry = c
                .registry
                .as_ref()
                .and_then(|r| r.get(ctx.flow.accepted.pid.as_str()));
            let same_id = typed == ctx.flow.accepted.pid.as_str();
            match (entry, birth) {
                (Some(e), Some(b)) if same_id && e.birth_date == b => {
                    ctx.flow.basic = true;
                    ctx.flow.notice = None;
                    ctx.flow.typed = Typed::default();
                    // A session already authenticated as this citizen, with a method this request
                    // accepts, needs no second verification (D46).
                    if let (Some(who), Some(m)) = (&ctx.citizen, ctx.method)
                        && *who == ctx.flow.accepted.pid
                        && ctx.flow.accepted.methods.contains(&m)
                    {
                        return authenticated(p, c, cookie, ctx, m, now);
                    }
                }
                // Without a registry the birth date cannot be checked here; the identity
                // verification that follows decides.
                (None, Some(_)) if same_id && c.registry.is_none() => {
                    ctx.flow.basic = true;
                    ctx.flow.typed = Typed::default();
                }
                // A business number other than the one the SP named.
                _ if !same_id => fail(
                    c,
                    id,
                    &ctx.tx.client_id,
                    &mut ctx.flow,
                    now,
                    field_error(
                        &[Field::NationalId],
                        "身分證統一編號不符",
                        "The national ID number does not match.",
                    ),
                ),
                _ => fail(
                    c,
                    id,
                    &ctx.tx.client_id,
                    &mut ctx.flow,
                    now,
                    field_error(
                        &[Field::BirthDate],
                        "出生日期與身分證統一編號不符",
                        "The birth date does not match the national ID number.",
                    ),
                ),
            }
        }
        Action::TwoDocuments {
            nhi_card_number,
            household_number,
        } if ctx.flow.basic && locked.is_none() => {
            let nhi = nhi_card_number.trim();
            let household = household_number.trim().to_ascii_uppercase();
            // Format first: a malformed value is not counted (D46).
            let mut errors = Vec::new();
            if nhi.len() != 12 || !nhi.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(field_error(
                    &[Field::NhiCardNumber],
                    "健保卡卡號須為 12 位數字",
                    "The NHI card number must be 12 digits.",
                ));
            }
            if household.len() != 8 || !household.bytes().all(|b| b.is_ascii_alphanumeric()) {
                errors.push(field_error(
                    &[Field::HouseholdNumber],
                    "戶號須為 8 碼英文字母或數字",
                    "The household registration number must be 8 letters or digits.",
                ));
            }
            ctx.flow.typed = Typed {
                nhi_card_number: kept(&nhi_card_number),
                household_number: kept(&household_number),
                ..Typed::default()
            };
            if !errors.is_empty() {
                ctx.flow.errors = errors;
                save_flow(c, cookie, id, ctx.flow, now);
                return Ok(stay);
            }
            let entry = c
                .registry
                .as_ref()
                .and_then(|r| r.get(ctx.flow.accepted.pid.as_str()));
            let ok = entry.is_some_and(|e| {
                same(&e.nhi_card_number, nhi)
                    && same(&e.household_number.to_ascii_uppercase(), &household)
            });
            if ok {
                ctx.flow.typed = Typed::default();
                return authenticated(p, c, cookie, ctx, IdentityMethod::TwoDocuments, now);
            }
            fail(
                c,
                id,
                &ctx.tx.client_id,
                &mut ctx.flow,
                now,
                field_error(
                    &[Field::NhiCardNumber, Field::HouseholdNumber],
                    "健保卡卡號或戶號不符",
                    "The NHI card number or the household registration number does not match.",
                ),
            );
        }
        Action::SendOtp(channel) if ctx.flow.basic && locked.is_none() => {
            let entry = c
                .registry
                .as_ref()
                .and_then(|r| r.get(ctx.flow.accepted.pid.as_str()));
            let to = entry.map(|e| match channel {
                Channel::Email => e.email.clone(),
                Channel::Mobile => e.mobile.clone(),
            });
            let usable = c.usable_methods(&ctx.flow.accepted);
            match to.filter(|t| !t.is_empty()) {
                Some(to) if usable.contains(&IdentityMethod::Otp) && c.notifier.offers(channel) => {
                    // Per transaction and per destination, whatever the session (D46).
                    match c.sessions.claim_otp_send(id, &to, now) {
                        Err(when) => {
                            ctx.flow.notice = Some(format!(
                                "請於 {} 秒後再要求新的驗證碼 / wait {} s before asking for a new code",
                                when.0 - now.0,
                                when.0 - now.0
                            ));
                        }
                        Ok(()) => {
                            let code = loop {
                                if let Some(code) =
                                    attempts::otp_from_random(&random_bytes::<16>()?)
                                {
                                    break code;
                                }
                            };
                            let digest = otp_digest(p, id, &code);
                            if let Err(e) = c.notifier.send_otp(channel, &to, &code).await {
                                log::warn!("one-time password delivery failed: {e}");
                                c.sessions.release_otp_send(id, &to);
                                ctx.flow.notice = Some(
                                    "驗證碼寄送失敗，請稍後再試 / the code could not be sent; try again later"
                                        .into(),
                                );
                                save_flow(c, cookie, id, ctx.flow, now);
                                return Ok(stay);
                            }
                            ctx.flow.otp = Some((
                                OtpChallenge {
                                    digest,
                                    issued_at: now,
                                },
                                channel,
                            ));
                            ctx.flow.notice = Some(format!(
                                "驗證碼已寄至 {} / a code was sent to {}",
                                mask(&to),
                                mask(&to)
                            ));
                        }
                    }
                }
                _ => {
                    ctx.flow.notice =
                        Some("無法以此方式寄送驗證碼 / no code can be sent this way".into());
                }
            }
        }
        Action::CheckOtp(input) if ctx.flow.basic && locked.is_none() => {
            let check = attempts::otp_check(
                ctx.flow.otp.as_ref().map(|(o, _)| o),
                &input,
                |s| otp_digest(p, id, s),
                now,
            );
            match check {
                OtpCheck::Valid => {
                    ctx.flow.otp = None;
                    return authenticated(p, c, cookie, ctx, IdentityMethod::Otp, now);
                }
                OtpCheck::Wrong => fail(
                    c,
                    id,
                    &ctx.tx.client_id,
                    &mut ctx.flow,
                    now,
                    field_error(&[Field::Code], "驗證碼錯誤", "Wrong code."),
                ),
                OtpCheck::Expired => {
                    ctx.flow.otp = None;
                    ctx.flow.notice = Some(
                        "驗證碼已逾時，請重新寄送 / the code expired; ask for a new one".into(),
                    );
                }
                OtpCheck::Malformed => {
                    ctx.flow.errors = vec![field_error(
                        &[Field::Code],
                        "驗證碼須為 6 位數字",
                        "The code must be 6 digits.",
                    )];
                }
            }
        }
        Action::CertChallenge if ctx.flow.basic && locked.is_none() => {
            let usable = c.usable_methods(&ctx.flow.accepted);
            if usable.iter().any(|m| certlogin::is_certificate_method(*m)) {
                ctx.flow.challenge.issue(id, random_bytes::<32>()?, now);
                ctx.flow.notice = Some(
                    "請以您的憑證簽署挑戰碼（5 分鐘內有效）/ sign the challenge with your certificate (valid 5 minutes)"
                        .into(),
                );
            } else {
                ctx.flow.notice =
                    Some("本次申請不接受憑證驗證 / this request accepts no certificate".into());
            }
        }
        Action::CertLogin {
            method,
            challenge,
            signature,
        } if ctx.flow.basic && locked.is_none() => {
            let usable = c.usable_methods(&ctx.flow.accepted);
            let chosen = IdentityMethod::ALL
                .into_iter()
                .find(|m| m.code() == method.trim() && certlogin::is_certificate_method(*m))
                .filter(|m| usable.contains(m));
            let (Some(m), Some(trust)) = (chosen, c.certs.as_ref()) else {
                ctx.flow.notice =
                    Some("無法以此方式驗證 / this method is not offered for this request".into());
                save_flow(c, cookie, id, ctx.flow, now);
                return Ok(stay);
            };
            // Any answer ends the challenge (D51); then the signature decides.
            let result = ctx
                .flow
                .challenge
                .take(id, challenge.trim(), now)
                .and_then(|()| {
                    let der = decode_signature(&signature)
                        .ok_or_else(|| certlogin::CertLoginError::Malformed("not base64".into()))?;
                    certlogin::verify(
                        m,
                        &der,
                        challenge.trim(),
                        ctx.flow.accepted.pid.as_str(),
                        &trust.issuers,
                        &trust.holders,
                        now,
                    )
                });
            match result {
                Ok(_) => return authenticated(p, c, cookie, ctx, m, now),
                Err(certlogin::CertLoginError::NotConfigured(_)) => {
                    ctx.flow.notice = Some(
                        "無法以此方式驗證 / this method is not offered for this request".into(),
                    );
                }
                Err(e) => {
                    let (zh, en) = cert_refusal(&e);
                    fail(
                        c,
                        id,
                        &ctx.tx.client_id,
                        &mut ctx.flow,
                        now,
                        field_error(&[Field::Signature], zh, en),
                    );
                }
            }
        }
        Action::Consent(agree)
            if ctx.tx.state == state::AUTHENTICATED
                && ctx.citizen.as_ref() == Some(&ctx.flow.accepted.pid) =>
        {
            if !agree {
                tracing::info!(
                    target: TX,
                    event = "consent",
                    tx = %ctx.tx.id,
                    client_id = %ctx.tx.client_id,
                    agreed = false,
                    "consent refused"
                );
                return finish(p, c, cookie, &mut ctx, ReturnCode::Refused, now);
            }
            let claims = claims(p, c, &ctx.flow.accepted.pid);
            let code = match engine::consent(p.clone(), ctx.tx.clone(), claims).await {
                Ok(code) => code,
                // Another post took the consent first: this one shows the transaction as it
                // is (waiting, then back to the SP with its code).
                Err(ServerError::Conflict(_)) => return Ok(stay),
                Err(e) => return Err(e),
            };
            // The flow stays in the session: a reload after this answer (the browser lost it,
            // or another tab) goes back to the SP with the transaction's code again.
            return back(p, &ctx, code);
        }
        _ if locked.is_some() => {}
        // An action out of order (a stale tab): show the current page again.
        _ => {}
    }
    save_flow(c, cookie, id, ctx.flow, now);
    Ok(stay)
}

fn otp_digest(p: &Platform, id: &str, code: &str) -> Vec<u8> {
    p.key
        .keyed_hash(&[b"otp", id.as_bytes(), code.as_bytes()])
        .to_vec()
}

/// At most this many characters of a typed value are kept to be shown again.
const KEPT_CHARS: usize = 32;

fn kept(typed: &str) -> String {
    typed.trim().chars().take(KEPT_CHARS).collect()
}

/// A signature as posted: base64, standard or URL-safe, with or without padding and whitespace.
fn decode_signature(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() || compact.len() > 64 * 1024 {
        return None;
    }
    GeneralPurpose::new(&base64::alphabet::STANDARD, cfg)
        .decode(&compact)
        .or_else(|_| GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg).decode(&compact))
        .ok()
}

/// What the page says about a refused certificate login (D51).
fn cert_refusal(e: &certlogin::CertLoginError) -> (&'static str, &'static str) {
    use certlogin::CertLoginError as E;
    match e {
        E::Challenge => (
            "挑戰碼已使用或逾時，請重新產生",
            "The challenge was used or has expired; get a new one.",
        ),
        E::Malformed(_) => ("簽章格式錯誤", "The signature is malformed."),
        E::BadSignature => (
            "簽章與挑戰碼不符",
            "The signature does not match the challenge.",
        ),
        E::Untrusted(_) => (
            "憑證非由此驗證方式的發證機關簽發",
            "The certificate is not from this method's issuer.",
        ),
        E::NotValidNow(_) => (
            "憑證已過期或尚未生效",
            "The certificate has expired or is not yet valid.",
        ),
        E::Purpose(_) => (
            "此憑證不可用於登入",
            "This certificate cannot be used to sign in.",
        ),
        E::Revoked => ("憑證已廢止", "The certificate has been revoked."),
        E::NoCurrentCrl(_) => (
            "目前無法確認憑證狀態，請稍後再試",
            "The certificate's status cannot be checked now; try again later.",
        ),
        E::WrongPerson => (
            "憑證與身分證統一編號不符",
            "The certificate belongs to another person.",
        ),
        E::NotConfigured(_) => ("無法以此方式驗證", "This method is not offered."),
    }
}

fn field_error(fields: &[Field], zh: &str, en: &str) -> FieldError {
    FieldError {
        fields: fields.to_vec(),
        zh: zh.to_string(),
        en: en.to_string(),
    }
}

/// A well-formed wrong answer: it counts toward the lock (D46). The page then says how many tries
/// are left, on the inputs concerned; once locked, the lock is the page's one message.
fn fail(
    c: &Citizen,
    id: &str,
    client_id: &str,
    flow: &mut Flow,
    now: UnixTime,
    mut error: FieldError,
) {
    let locked = c.sessions.lockout(id, now, |l| l.fail(now));
    tracing::info!(
        target: TX,
        event = "identity",
        tx = %id,
        client_id = %client_id,
        result = "failed",
        locked = locked.is_some(),
        "identity check failed"
    );
    flow.notice = None;
    if locked.is_some() {
        flow.errors.clear();
        return;
    }
    let left = c.sessions.lockout(id, now, |l| l.remaining(now));
    error.zh.push_str(&format!("（尚可嘗試 {left} 次）"));
    error.en.push_str(&format!(" {left} attempts left."));
    flow.errors = vec![error];
}

/// The citizen proved who they are with `method` (§5.3 "Authentication").
fn authenticated(
    p: &Platform,
    c: &Citizen,
    cookie: Option<&str>,
    mut ctx: Ctx,
    method: IdentityMethod,
    now: UnixTime,
) -> ServerResult<Next> {
    let who = ctx.flow.accepted.pid.clone();
    if let Err(code) = flow::check_authenticated(&ctx.flow.accepted, &who, method) {
        tracing::info!(
            target: TX,
            event = "identity",
            tx = %ctx.tx.id,
            client_id = %ctx.tx.client_id,
            result = "refused",
            method = method.code(),
            code = code.wire(),
            "identity verified but not accepted"
        );
        return finish(p, c, cookie, &mut ctx, code, now);
    }
    tracing::info!(
        target: TX,
        event = "identity",
        tx = %ctx.tx.id,
        client_id = %ctx.tx.client_id,
        result = "verified",
        method = method.code(),
        "identity verified"
    );
    c.sessions.lockout(&ctx.tx.id, now, |l| l.reset());
    ctx.tx.state = state::AUTHENTICATED;
    ctx.tx.identity_method = Some(method.code().to_string());
    p.store.update_tx(&ctx.tx)?;
    ctx.flow.notice = None;
    let id = ctx.tx.id.clone();
    c.sessions.with(cookie, now, |s| {
        s.citizen = Some(who);
        s.method = Some(method);
        s.flows.insert(id.clone(), ctx.flow);
    });
    Ok(Next::Flow { id, cookie: None })
}

fn claims(p: &Platform, c: &Citizen, pid: &Pid) -> CitizenClaims {
    let entry = c.registry.as_ref().and_then(|r| r.get(pid.as_str()));
    CitizenClaims {
        sub: p.citizen_sub(pid.as_str()),
        uid: pid.as_str().to_string(),
        uid_type: pid.uid_type().to_string(),
        birthdate: entry.map(|e| e.birth_date.iso()),
        name: entry.map(|e| e.name.clone()).filter(|n| !n.is_empty()),
        email: entry.map(|e| e.email.clone()).filter(|n| !n.is_empty()),
    }
}

/// The request's browser address (D26): [`crate::http::source_ip`], `0.0.0.0` when unknown.
pub fn browser_ip(source: Option<IpAddr>) -> IpAddr {
    source.unwrap_or(IpAddr::from([0, 0, 0, 0]))
}
