//! The checks and the order they run in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mydata_dp::sandbox::{Behaviour, SandboxConfig, SandboxDp};
use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::ids::{ResourceId, SecretKey, TxId};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::TrustAnchors;
use mydata_protocol::resources::ResourceList;
use mydata_sp::package::{Expectations, Verification};
use mydata_sp::receiver::ReceivedContent;
use mydata_sp::redirect::RedirectRequest;

use super::profile::{Profile, Sp, listen_addr};
use super::roles::{Answer, Browser, DpCall, DpRole, SpHit, SpRole, get_data_from};
use crate::report::{Outcome, Report};

/// The trust anchor of the suite's DP role (the sandbox CA that issued the fixture DP key).
const SANDBOX_ROOT_CA: &[u8] = include_bytes!("../../../../fixtures/pki/sandbox-root-ca.pem");

/// Seconds after consent at which the ticket must be refused (protocol.md §8.1, D37).
const RETENTION_SECS: i64 = 28_800;

/// Every check of the suite, in run order: (stable id, rule with its spec reference).
pub const CHECKS: &[(&str, &str)] = &[
    (
        "platform.redirect.return_url_mismatch_404",
        "protocol.md §5.3 step 3, §6, D18: a returnUrl other than the registered one is answered 302 to the registered return_url with code=404 and no tx_id",
    ),
    (
        "platform.redirect.unregistered_dataset_401",
        "protocol.md §5.2, §5.3 step 7: a dataset not registered for the service returns code=401 with the SP's tx_id",
    ),
    (
        "platform.redirect.bad_pid_400",
        "protocol.md §5.3 step 8: a pid that decrypts to no valid identifier returns code=400",
    ),
    (
        "platform.flow.refusal_205",
        "protocol.md §5.3, §6, D46: refusing on the consent page returns code=205 with the SP's tx_id, and the SP-API is not called for that transaction: not by the return, nor within the quiet window after it (profile refusal_quiet_secs, default 3 s), nor later in the run",
    ),
    (
        "platform.flow.identity_conflict_409",
        "protocol.md §5.3, D46: another person's national ID on the basic-information page returns code=409",
    ),
    (
        "platform.sp_api.call",
        "protocol.md §7, D22-D24: after consent the SP-API is called with the SP's apiKey, its tx_id, a permission_ticket and a secret_key that decrypts with the SP's cipher",
    ),
    (
        "platform.return.success_200",
        "protocol.md §6: after consent and an acknowledged SP-API call the browser returns with code=200 and a tx_id that decrypts to the SP's",
    ),
    (
        "platform.data.no_ticket_400",
        "protocol.md §8.1 row 2, D25: GET /service/data without permission_ticket answers 400",
    ),
    (
        "platform.data.unknown_ticket_403",
        "protocol.md §8.1 row 3, D25: an unknown permission_ticket answers 403",
    ),
    (
        "platform.data.ticket_live_during_sp_api",
        "D25, protocol.md §7, §8.1 row 6: a ticket is live from the moment it is sent: polled with its tx_id while the SP-API call is still unanswered, it answers 429 with an integer Retry-After, not 403",
    ),
    (
        "platform.data.not_ready_429",
        "protocol.md §8.1 row 6, D25: while a dataset is pending the answer is 429 with Retry-After an integer in [5, 600]",
    ),
    (
        "platform.data.jwe_gcm",
        "protocol.md §8.1 row 7, §12: 200 with Content-Type application/jwe; for a GCM SP a JWE (A256GCMKW, A256GCM) that decrypts with the transaction's secret_key",
    ),
    (
        "platform.data.jwe_cbc",
        "protocol.md §8.1 row 7, §12: 200 with Content-Type application/jwe; for a CBC SP a JWE (A256KW, A256CBC-HS512) whose content IV is the SP's cbc_iv and that decrypts with the transaction's secret_key",
    ),
    (
        "platform.package.verifies",
        "packages.md, protocol.md §12, D9, D10: every delivered SP package verifies: manifest, packaging-mode rules, datasets in request order, and every shipped DP package (its signature to the trust anchor and its digests) but the tampered dataset's, which is platform.package.tampered_not_verified's; in mode B the instant and slow datasets are 200 with a verified DP package",
    ),
    (
        "platform.package.failed_dataset",
        "D29, D10: a dataset whose DP answers 5xx is in the package with code 504 and no file",
    ),
    (
        "platform.package.tampered_not_verified",
        "D29, D9: a DP package altered after signing is not passed on: its dataset has a failure code and no file",
    ),
    (
        "platform.data.one_shot_201",
        "protocol.md §8.1 row 4, D25: once the package is taken the ticket answers 201",
    ),
    (
        "platform.data.foreign_ip_401",
        "protocol.md §8.1 row 1, D26: a request from a source IP registered for no service answers 401",
    ),
    (
        "platform.data.all_failed_504",
        "protocol.md §8.1 row 5: when every dataset failed the answer is 504",
    ),
    (
        "platform.dp.bearer_and_transaction_uid",
        "D28, D31, protocol.md §9.1, §10.1, §10.2: every DP call carries Authorization: Bearer with a token that introspects active for the dataset, and a lowercase UUID v4 transaction_uid that is the same for every call of a (transaction, dataset) series (one token, §10.1) and differs between series",
    ),
    (
        "platform.dp.retry_after_respected",
        "D29: after a DP 429 with Retry-After n, the series' next call comes no sooner than n seconds later with the same transaction_uid",
    ),
    (
        "platform.retention.ticket_403_after_8h",
        "protocol.md §8.1 row 3, D37: 28,800 s after consent the ticket answers 403 (needs the clock hook)",
    ),
];

/// Longest wait for a package (the slow dataset plus platform retries, on a loaded machine).
const READY_WITHIN: Duration = Duration::from_secs(120);

/// One MyData-API answer.
#[derive(Debug, Clone)]
struct DataAnswer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: String,
}

/// A transaction that reached the return.
struct Consented {
    tx_id: TxId,
    ret: Answer,
}

/// A refusal whose code and `tx_id` passed: the SP-API must stay quiet for its transaction
/// until `until` (and the end of the run), when [`settle_refusal`] gives the final outcome.
struct PendingRefusal {
    /// The refused transaction.
    tx_id: TxId,
    /// When the platform's return arrived.
    returned: Instant,
    /// The end of the quiet window.
    until: Instant,
    /// Where the check's (provisional) result is in the report.
    index: usize,
}

/// What the SP-API call gave.
struct Delivery {
    ticket: String,
    secret_key: SecretKey,
}

struct Ctx {
    p: Profile,
    sps: Vec<Sp>,
    main: usize,
    other: usize,
    sp_role: SpRole,
    dp_role: DpRole,
    report: Report,
    client: awc::Client,
    ids: Ids,
    refusal: Option<PendingRefusal>,
}

/// The profile's datasets, parsed.
struct Ids {
    instant: ResourceId,
    slow: ResourceId,
    failing: ResourceId,
    tampered: ResourceId,
    unregistered: ResourceId,
}

fn rule(id: &str) -> &'static str {
    CHECKS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, r)| *r)
        .unwrap_or("")
}

fn fail<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

fn outcome(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Pass,
        Err(m) => Outcome::Fail(m),
    }
}

impl Ctx {
    fn record(&mut self, id: &str, o: Outcome, started: Instant) {
        self.report.push(id, rule(id), o, started.elapsed());
    }

    fn skip(&mut self, id: &str, why: &str) {
        self.report
            .push(id, rule(id), Outcome::Skip(why.to_string()), Duration::ZERO);
    }

    /// A dataset by role: `slow`, `failing`, `tampered`, `unregistered`, else `instant`.
    fn id(&self, what: &str) -> ResourceId {
        match what {
            "slow" => self.ids.slow.clone(),
            "failing" => self.ids.failing.clone(),
            "tampered" => self.ids.tampered.clone(),
            "unregistered" => self.ids.unregistered.clone(),
            _ => self.ids.instant.clone(),
        }
    }

    fn list(&self, what: &[&str]) -> Result<ResourceList, String> {
        ResourceList::new(what.iter().map(|w| self.id(w)).collect()).map_err(|e| e.to_string())
    }

    fn pid(&self, s: &str) -> Result<Pid, String> {
        Pid::parse_for(ApplicationMode::Person, s).map_err(|e| format!("citizen id {s}: {e}"))
    }

    /// The platform's return (a 302 to the registered return_url), parsed with the SP's cipher.
    fn returned(&self, sp: &Sp, a: &Answer) -> Result<mydata_sp::callback::Returned, String> {
        if a.status != 302 {
            return fail(format!(
                "expected a 302 back to the SP, got {} {}",
                a.status,
                a.location.as_deref().unwrap_or("")
            ));
        }
        let loc = a.location.as_deref().unwrap_or("");
        let Some(rest) = loc.strip_prefix(sp.raw.return_url.as_str()) else {
            return fail(format!(
                "the return goes to {loc}, not the registered {}",
                sp.raw.return_url
            ));
        };
        let query = rest.strip_prefix('?').unwrap_or(rest);
        sp.config
            .read_return(query)
            .map_err(|e| format!("return {loc}: {e}"))
    }

    /// Opens the redirect and follows the D46 pages for `national_id` up to the consent page.
    /// `Ok(Err(answer))` when the platform ended the flow with a return before consent.
    async fn to_consent(
        &self,
        sp: &Sp,
        what: &[&str],
        national_id: &str,
    ) -> Result<(Browser, TxId, String, Result<Answer, Answer>), String> {
        let list = self.list(what)?;
        let pid = self.pid(&self.p.citizen.id)?;
        let r = sp
            .config
            .redirect(&RedirectRequest::new(&list, &pid))
            .map_err(|e| e.to_string())?;
        let mut b = Browser::new(&self.p.platform_url);
        let a = b.get(&r.url).await?;
        if a.status != 303 {
            return Ok((b, r.tx_id, String::new(), Err(a)));
        }
        let Some(flow) = a.location.clone() else {
            return fail("303 without Location");
        };
        let flow = flow
            .strip_prefix(self.p.platform_url.as_str())
            .unwrap_or(&flow)
            .to_string();
        let mut page = b.get(&flow).await?;
        for _ in 0..6 {
            if page.status != 200 {
                return Ok((b, r.tx_id, flow, Err(page)));
            }
            let csrf = page.csrf().unwrap_or_default();
            let next = if page.has_action("consent") {
                return Ok((b, r.tx_id, flow, Ok(page)));
            } else if page.step() == Some("terms") || page.has_action("terms") {
                submit(&mut b, &flow, "terms", &csrf, &[]).await?
            } else if page.has_action("basic") {
                submit(
                    &mut b,
                    &flow,
                    "basic",
                    &csrf,
                    &[
                        ("national_id", national_id),
                        ("birth_date", &self.p.citizen.birth_date),
                    ],
                )
                .await?
            } else if page.has_action("pii") {
                submit(
                    &mut b,
                    &flow,
                    "pii",
                    &csrf,
                    &[
                        ("nhi_card_number", &self.p.citizen.nhi_card_number),
                        ("household_number", &self.p.citizen.household_number),
                    ],
                )
                .await?
            } else {
                return fail(format!(
                    "page {flow} (step {:?}) offers neither terms, basic, pii nor consent",
                    page.step()
                ));
            };
            page = next;
        }
        fail(format!("{flow}: no consent page after 6 pages"))
    }

    /// A whole consent: pages, agree, return. The return must be code 200 for `Ok`.
    async fn consent(&self, sp: &Sp, what: &[&str], decision: &str) -> Result<Consented, String> {
        let (mut b, tx_id, flow, page) = self.to_consent(sp, what, &self.p.citizen.id).await?;
        let page = match page {
            Ok(p) => p,
            Err(a) => {
                return fail(format!(
                    "the flow ended before consent: {} {}",
                    a.status,
                    a.location.as_deref().unwrap_or("")
                ));
            }
        };
        let csrf = page.csrf().unwrap_or_default();
        let ret = b
            .post(
                &format!("{flow}/consent"),
                &[("csrf", csrf.as_str()), ("decision", decision)],
            )
            .await?;
        Ok(Consented { tx_id, ret })
    }

    /// The SP-API body received for `tx_id`.
    fn sp_api_body(&self, sp: &Sp, tx_id: &TxId) -> Option<Vec<u8>> {
        self.sp_api_hit(sp, tx_id).map(|h| h.body)
    }

    /// The first SP-API call received for `tx_id`.
    fn sp_api_hit(&self, sp: &Sp, tx_id: &TxId) -> Option<SpHit> {
        let path = listen_addr(&sp.raw.sp_api_url).ok()?.1;
        let hits = self
            .sp_role
            .hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        hits.into_iter()
            .filter(|h| h.method == "POST" && h.path == path)
            .find(|h| {
                serde_json::from_slice::<serde_json::Value>(&h.body)
                    .ok()
                    .and_then(|v| v.get("tx_id").and_then(|t| t.as_str()).map(str::to_string))
                    .is_some_and(|t| t == tx_id.as_str())
            })
    }

    fn check_sp_api(&self, sp: &Sp, tx_id: &TxId) -> Result<Delivery, String> {
        let body = self
            .sp_api_body(sp, tx_id)
            .ok_or_else(|| format!("no SP-API call for tx_id {tx_id} at {}", sp.raw.sp_api_url))?;
        let got =
            mydata_sp::receiver::receive(&body, sp.raw.api_key.as_deref(), &sp.config.cipher())
                .map_err(|e| format!("SP-API body refused ({}): {e}", e.kind()))?;
        if &got.tx_id != tx_id {
            return fail(format!("SP-API tx_id {} is not {tx_id}", got.tx_id));
        }
        match got.content {
            ReceivedContent::SecretKey(k) => Ok(Delivery {
                ticket: got.permission_ticket.as_str().to_string(),
                secret_key: k,
            }),
            ReceivedContent::UnableToDeliver(ids) => fail(format!(
                "the SP-API call carries unable_to_deliver {ids:?} instead of a secret_key"
            )),
        }
    }

    /// The answer to the poll the SP role made with `tx_id`'s ticket before acknowledging its
    /// SP-API call: 429 with an integer `Retry-After` (D25).
    fn live_during_sp_api(&self, tx_id: &TxId) -> Result<(), String> {
        let probes = self
            .sp_role
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(p) = probes.into_iter().find(|p| p.tx_id == tx_id.as_str()) else {
            return fail(format!(
                "the SP role made no poll during the SP-API call of tx_id {tx_id}"
            ));
        };
        let (status, retry_after) = p.answer?;
        if status != 429 {
            return fail(format!(
                "polled while the SP-API call was unanswered, the ticket answered {status}, expected 429"
            ));
        }
        match retry_after.as_deref().map(|v| v.trim().parse::<u64>()) {
            Some(Ok(_)) => Ok(()),
            Some(Err(_)) => fail(format!(
                "the 429 during the SP-API call has Retry-After {retry_after:?}, not an integer"
            )),
            None => fail("the 429 during the SP-API call has no Retry-After"),
        }
    }

    async fn get_data(
        &self,
        ticket: Option<&str>,
        tx_id: Option<&TxId>,
    ) -> Result<DataAnswer, String> {
        let mut req = self
            .client
            .get(format!("{}/service/data", self.p.platform_url))
            .insert_header(("accept", "application/jwe"));
        if let Some(t) = ticket {
            req = req.insert_header(("permission_ticket", t));
        }
        if let Some(t) = tx_id {
            req = req.insert_header(("tx_id", t.as_str()));
        }
        let mut r = req
            .send()
            .await
            .map_err(|e| format!("GET /service/data: {e}"))?;
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = h("content-type");
        let retry_after = h("retry-after");
        let body = r
            .body()
            .limit(512 << 20)
            .await
            .map_err(|e| format!("GET /service/data body: {e}"))?;
        Ok(DataAnswer {
            status: r.status().as_u16(),
            content_type,
            retry_after,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        })
    }

    async fn poll_ready(&self, ticket: &str, tx_id: &TxId) -> Result<DataAnswer, String> {
        let until = Instant::now() + READY_WITHIN;
        loop {
            let a = self.get_data(Some(ticket), Some(tx_id)).await?;
            if a.status != 429 {
                return Ok(a);
            }
            if Instant::now() > until {
                return fail(format!("still 429 after {} s", READY_WITHIN.as_secs()));
            }
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks a 200 answer and opens the package; the check id is the JWE mode's.
    fn open(
        &self,
        sp: &Sp,
        a: &DataAnswer,
        key: &SecretKey,
        what: &[&str],
    ) -> Result<Result<mydata_sp::package::Delivered, String>, String> {
        if a.status != 200 {
            return fail(format!("expected 200 with the package, got {}", a.status));
        }
        let ct = a.content_type.as_deref().unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("application/jwe") {
            return fail(format!("Content-Type {ct:?}, expected application/jwe"));
        }
        let iv = match sp.jwe {
            JweMode::Cbc => Some(&sp.config.cbc_iv),
            JweMode::Gcm => None,
        };
        let zip = mydata_sp::package::decrypt(&a.body, key, sp.jwe, &sp.config.client_id, iv)
            .map_err(|e| format!("the JWE is refused in mode {:?}: {e}", sp.jwe))?;
        let anchors = TrustAnchors::from_pem(&[SANDBOX_ROOT_CA]).map_err(|e| e.to_string())?;
        let requested: Vec<ResourceId> = what.iter().map(|w| self.id(w)).collect();
        let exp = Expectations::now()
            .trust(&anchors)
            .requested(&requested)
            .packaging_mode(sp.packaging);
        Ok(mydata_sp::package::verify(&zip, &exp)
            .map_err(|e| format!("the SP package does not verify: {e}")))
    }
}

/// Posts a form of the current page and loads the next page (or returns the redirect).
async fn submit(
    b: &mut Browser,
    flow: &str,
    action: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> Result<Answer, String> {
    let mut form = vec![("csrf", csrf)];
    form.extend_from_slice(fields);
    let a = b.post(&format!("{flow}/{action}"), &form).await?;
    if a.status == 303 {
        let next = a.location.clone().unwrap_or_default();
        return b.get(&next).await;
    }
    Ok(a)
}

fn jwe_id(mode: JweMode) -> &'static str {
    match mode {
        JweMode::Gcm => "platform.data.jwe_gcm",
        JweMode::Cbc => "platform.data.jwe_cbc",
    }
}

fn is_uuid_v4_lower(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            14 => *c == b'4',
            19 => matches!(c, b'8' | b'9' | b'a' | b'b'),
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// Runs the suite against the platform of `profile` (needs an actix runtime, e.g.
/// `actix_web::rt::System::new().block_on(run(&p))`). A profile or set-up problem (an address
/// the suite cannot listen on) is reported as one failed check `platform.setup`.
pub async fn run(profile: &Profile) -> Report {
    let mut report = Report::new("platform", profile.platform_url.clone());
    let started = Instant::now();
    match setup(profile).await {
        Ok(mut ctx) => {
            ctx.report = report;
            run_checks(&mut ctx).await;
            settle_refusal(&mut ctx).await;
            let Ctx {
                report,
                sp_role,
                dp_role,
                ..
            } = ctx;
            sp_role.stop().await;
            dp_role.stop().await;
            report
        }
        Err(e) => {
            report.push(
                "platform.setup",
                "conformance-platform.md: the profile is valid and the suite can serve the SP and DP URLs",
                Outcome::Fail(e),
                started.elapsed(),
            );
            report
        }
    }
}

async fn setup(p: &Profile) -> Result<Ctx, String> {
    p.validate().map_err(|e| e.to_string())?;
    let sps = p.parsed_sps().map_err(|e| e.to_string())?;
    let main = sps
        .iter()
        .position(|s| s.packaging == mydata_protocol::package::sp::PackagingMode::B)
        .unwrap_or(0);
    let other = sps
        .iter()
        .position(|s| s.jwe != sps[main].jwe)
        .unwrap_or(main);
    let d = &p.datasets;
    let parse = |v: &str| v.parse::<ResourceId>().map_err(|e| format!("{v}: {e}"));
    let ids = Ids {
        instant: parse(&d.instant)?,
        slow: parse(&d.slow)?,
        failing: parse(&d.failing)?,
        tampered: parse(&d.tampered)?,
        unregistered: parse(&d.unregistered)?,
    };
    let mut cfg = SandboxConfig::embedded(&p.platform_url).map_err(|e| e.to_string())?;
    cfg.time_scale = 0.0;
    cfg.behaviours.insert(d.instant.clone(), Behaviour::Instant);
    cfg.behaviours
        .insert(d.slow.clone(), Behaviour::Slow(p.slow_secs));
    cfg.behaviours
        .insert(d.failing.clone(), Behaviour::Fail(500));
    cfg.behaviours
        .insert(d.tampered.clone(), Behaviour::Tampered);
    let dp = SandboxDp::new(&cfg).map_err(|e| e.to_string())?;
    let (dp_listen, _) = listen_addr(&p.dp_url).map_err(|e| e.to_string())?;
    let dp_role = DpRole::start(dp, dp_listen, &p.platform_url)?;
    let addrs: Vec<_> = sps.iter().map(|s| s.listen).collect();
    let sp_role = match SpRole::start(&addrs, &p.platform_url) {
        Ok(r) => r,
        Err(e) => {
            dp_role.stop().await;
            return Err(e);
        }
    };
    Ok(Ctx {
        p: p.clone(),
        sps,
        main,
        other,
        sp_role,
        dp_role,
        report: Report::new("platform", p.platform_url.clone()),
        client: awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_secs(60))
            .finish(),
        ids,
        refusal: None,
    })
}

async fn run_checks(c: &mut Ctx) {
    let sp = c.sps[c.main].clone();
    redirect_checks(c, &sp).await;

    const NO_PAGES: &str = "the profile says the citizen pages do not follow D46";
    if !c.p.d46_pages {
        for (id, _) in CHECKS.iter().skip(3) {
            if !matches!(
                *id,
                "platform.data.no_ticket_400" | "platform.data.unknown_ticket_403"
            ) {
                c.skip(id, NO_PAGES);
            } else {
                ticket_checks(c, id).await;
            }
        }
        return;
    }

    // Refusal and identity conflict. The refusal's quiet window runs on while the later checks
    // do; `settle_refusal` decides at its end.
    let t = Instant::now();
    let r = async {
        let got = c.consent(&sp, &["instant"], "refuse").await?;
        let returned = Instant::now();
        let ret = c.returned(&sp, &got.ret)?;
        if ret.outcome.code() != 205 {
            return fail(format!("code={}, expected 205", ret.outcome.code()));
        }
        ret.check_tx(&got.tx_id).map_err(|e| e.to_string())?;
        if c.sp_api_body(&sp, &got.tx_id).is_some() {
            return fail("the SP-API was called for the refused transaction");
        }
        Ok((got.tx_id, returned))
    }
    .await;
    match r {
        Ok((tx_id, returned)) => {
            let index = c.report.results.len();
            c.record("platform.flow.refusal_205", Outcome::Pass, t);
            c.refusal = Some(PendingRefusal {
                tx_id,
                returned,
                until: returned + Duration::from_secs(c.p.refusal_quiet_secs),
                index,
            });
        }
        Err(e) => c.record("platform.flow.refusal_205", Outcome::Fail(e), t),
    }

    let t = Instant::now();
    let r = async {
        let (_, tx_id, _, end) = c
            .to_consent(&sp, &["instant"], &c.p.citizen.other_id)
            .await?;
        let a = match end {
            Err(a) => a,
            Ok(_) => return fail("another person's ID reached the consent page"),
        };
        let ret = c.returned(&sp, &a)?;
        if ret.outcome.code() != 409 {
            return fail(format!("code={}, expected 409", ret.outcome.code()));
        }
        ret.check_tx(&tx_id).map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    c.record("platform.flow.identity_conflict_409", outcome(r), t);

    // The main transaction: instant, slow, failing, tampered.
    let main_what = ["instant", "slow", "failing", "tampered"];
    let t = Instant::now();
    let consented = c.consent(&sp, &main_what, "agree").await;
    let delivery = match &consented {
        Ok(got) => {
            let d = c.check_sp_api(&sp, &got.tx_id);
            c.record(
                "platform.sp_api.call",
                outcome(d.as_ref().map(|_| ()).map_err(Clone::clone)),
                t,
            );
            let r = c.returned(&sp, &got.ret).and_then(|ret| {
                if ret.outcome.code() != 200 {
                    return fail(format!("code={}, expected 200", ret.outcome.code()));
                }
                ret.check_tx(&got.tx_id)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            c.record("platform.return.success_200", outcome(r), t);
            d.ok()
        }
        Err(e) => {
            let m = format!("the consent flow failed: {e}");
            c.record("platform.sp_api.call", Outcome::Fail(m.clone()), t);
            c.record("platform.return.success_200", Outcome::Fail(m), t);
            None
        }
    };

    ticket_checks(c, "platform.data.no_ticket_400").await;
    ticket_checks(c, "platform.data.unknown_ticket_403").await;

    let Some(delivery) = delivery else {
        const NO_TX: &str = "no ticket: the main transaction failed (see platform.sp_api.call)";
        let after = CHECKS
            .iter()
            .skip_while(|(id, _)| *id != "platform.data.ticket_live_during_sp_api");
        for (id, _) in after {
            c.skip(id, NO_TX);
        }
        return;
    };
    let main_tx = consented.as_ref().map(|g| g.tx_id.clone()).ok();
    let Some(main_tx) = main_tx else { return };

    // The poll the SP role made from inside the main transaction's SP-API call.
    let t = Instant::now();
    let r = c.live_during_sp_api(&main_tx);
    c.record("platform.data.ticket_live_during_sp_api", outcome(r), t);

    // 429 while the slow dataset is pending.
    let t = Instant::now();
    let r = async {
        let a = c.get_data(Some(&delivery.ticket), Some(&main_tx)).await?;
        if a.status != 429 {
            return fail(format!(
                "expected 429 while {} is pending, got {}",
                c.p.datasets.slow, a.status
            ));
        }
        match a.retry_after.as_deref().map(|v| v.trim().parse::<u64>()) {
            Some(Ok(n)) if (5..=600).contains(&n) => Ok(()),
            Some(_) => fail(format!(
                "Retry-After {:?} is not an integer in [5, 600]",
                a.retry_after
            )),
            None => fail("429 without Retry-After"),
        }
    }
    .await;
    c.record("platform.data.not_ready_429", outcome(r), t);

    // The package.
    let t = Instant::now();
    let main_answer = c.poll_ready(&delivery.ticket, &main_tx).await;
    let main_pkg = match main_answer.and_then(|a| c.open(&sp, &a, &delivery.secret_key, &main_what))
    {
        Ok(pkg) => {
            c.record(jwe_id(sp.jwe), Outcome::Pass, t);
            Some(pkg)
        }
        Err(e) => {
            c.record(jwe_id(sp.jwe), Outcome::Fail(e), t);
            None
        }
    };

    // Second SP (other JWE mode), one instant dataset.
    let other = c.sps[c.other].clone();
    let mut other_pkg = None;
    if c.other != c.main {
        let t = Instant::now();
        let r = async {
            let got = c.consent(&other, &["instant"], "agree").await?;
            let ret = c.returned(&other, &got.ret)?;
            if ret.outcome.code() != 200 {
                return fail(format!("the consent returned code={}", ret.outcome.code()));
            }
            let d = c.check_sp_api(&other, &got.tx_id)?;
            let a = c.poll_ready(&d.ticket, &got.tx_id).await?;
            c.open(&other, &a, &d.secret_key, &["instant"])
        }
        .await;
        match r {
            Ok(pkg) => {
                c.record(jwe_id(other.jwe), Outcome::Pass, t);
                other_pkg = Some(pkg);
            }
            Err(e) => c.record(jwe_id(other.jwe), Outcome::Fail(e), t),
        }
    } else {
        let id = jwe_id(match sp.jwe {
            JweMode::Cbc => JweMode::Gcm,
            JweMode::Gcm => JweMode::Cbc,
        });
        c.skip(id, "no SP of this JWE mode in the profile");
    }

    // Package contents.
    let t = Instant::now();
    let Some(main_pkg) = main_pkg else {
        for id in [
            "platform.package.verifies",
            "platform.package.failed_dataset",
            "platform.package.tampered_not_verified",
        ] {
            c.skip(id, "the package could not be opened (see the JWE check)");
        }
        return after_package(c, &delivery, &main_tx).await;
    };
    let r = (|| {
        let pkg = main_pkg.as_ref().map_err(Clone::clone)?;
        for id in ["instant", "slow"] {
            let rid = c.id(id);
            let d = pkg
                .dataset(&rid)
                .ok_or_else(|| format!("{rid} is missing from the manifest"))?;
            let shipped = !d.files.is_empty();
            if sp.packaging == mydata_protocol::package::sp::PackagingMode::B
                && (d.code != 200 || !d.verification.is_verified() || !shipped)
            {
                return fail(format!(
                    "{rid}: code {} verified {} files {} (expected 200, a verified DP package)",
                    d.code,
                    d.verification.is_verified(),
                    d.files.len()
                ));
            }
        }
        // A shipped tampered DP package is platform.package.tampered_not_verified's fault (one
        // fault, one failed check).
        let tampered = c.id("tampered");
        if let Some(e) = pkg
            .datasets
            .iter()
            .filter(|d| d.resource_id != tampered)
            .find_map(|d| match &d.verification {
                Verification::Failed(e) => Some(e),
                _ => None,
            })
        {
            return fail(format!("a shipped DP package fails: {e}"));
        }
        if let Some(Err(e)) = &other_pkg {
            return fail(format!("{}: {e}", other.raw.client_id));
        }
        Ok(())
    })();
    c.record("platform.package.verifies", outcome(r), t);

    // The dataset checks read the manifest of a package that verifies; one that does not is
    // platform.package.verifies' failure alone.
    let main_pkg = match main_pkg {
        Ok(pkg) => pkg,
        Err(_) => {
            for id in [
                "platform.package.failed_dataset",
                "platform.package.tampered_not_verified",
            ] {
                c.skip(
                    id,
                    "the SP package does not verify (see platform.package.verifies)",
                );
            }
            return after_package(c, &delivery, &main_tx).await;
        }
    };

    let t = Instant::now();
    let r = (|| {
        let pkg = &main_pkg;
        let rid = c.id("failing");
        let d = pkg
            .dataset(&rid)
            .ok_or_else(|| format!("{rid} is missing"))?;
        if d.code != 504 || !d.files.is_empty() || d.verification.is_verified() {
            return fail(format!(
                "{rid}: code {} with {} files (expected 504, none)",
                d.code,
                d.files.len()
            ));
        }
        Ok(())
    })();
    c.record("platform.package.failed_dataset", outcome(r), t);

    let t = Instant::now();
    let r = (|| {
        let pkg = &main_pkg;
        let rid = c.id("tampered");
        let d = pkg
            .dataset(&rid)
            .ok_or_else(|| format!("{rid} is missing"))?;
        if !d.is_failure() || d.verification.is_verified() || !d.files.is_empty() {
            return fail(format!(
                "{rid}: code {}, verified {}, {} files: the altered DP package was passed on",
                d.code,
                d.verification.is_verified(),
                d.files.len()
            ));
        }
        Ok(())
    })();
    c.record("platform.package.tampered_not_verified", outcome(r), t);

    after_package(c, &delivery, &main_tx).await;
}

/// The end of the refusal's quiet window: waits for what is left of it, then fails
/// `platform.flow.refusal_205` if the SP-API was called for the refused transaction at any time
/// since the return.
async fn settle_refusal(c: &mut Ctx) {
    let Some(p) = c.refusal.take() else { return };
    let left = p.until.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        actix_web::rt::time::sleep(left).await;
    }
    let sp = c.sps[c.main].clone();
    let Some(hit) = c.sp_api_hit(&sp, &p.tx_id) else {
        return;
    };
    let after = hit.at.saturating_duration_since(p.returned);
    let msg = format!(
        "the SP-API was called for the refused transaction {} {:.1} s after the return (quiet window {} s)",
        p.tx_id,
        after.as_secs_f64(),
        c.p.refusal_quiet_secs
    );
    if let Some(r) = c.report.results.get_mut(p.index)
        && r.id == "platform.flow.refusal_205"
    {
        r.outcome = Outcome::Fail(msg);
    }
}

async fn after_package(c: &mut Ctx, delivery: &Delivery, main_tx: &TxId) {
    let sp = c.sps[c.main].clone();
    let t = Instant::now();
    let r = match c.get_data(Some(&delivery.ticket), Some(main_tx)).await {
        Ok(a) if a.status == 201 => Ok(()),
        Ok(a) => fail(format!(
            "the second take answered {}, expected 201",
            a.status
        )),
        Err(e) => fail(e),
    };
    c.record("platform.data.one_shot_201", outcome(r), t);

    // After the take: a platform that ignored the source address has nothing left to give.
    let t = Instant::now();
    let r = match get_data_from(&c.p.platform_url, c.p.foreign_source, &delivery.ticket).await {
        Ok(401) => Ok(()),
        Ok(s) => fail(format!(
            "from {} the answer is {s}, expected 401",
            c.p.foreign_source
        )),
        Err(e) => fail(e),
    };
    c.record("platform.data.foreign_ip_401", outcome(r), t);

    let t = Instant::now();
    let r = async {
        let got = c.consent(&sp, &["failing"], "agree").await?;
        let ret = c.returned(&sp, &got.ret)?;
        if ret.outcome.code() != 200 {
            return fail(format!("the consent returned code={}", ret.outcome.code()));
        }
        let d = c.check_sp_api(&sp, &got.tx_id)?;
        let a = c.poll_ready(&d.ticket, &got.tx_id).await?;
        if a.status != 504 {
            return fail(format!(
                "every dataset failed, the answer is {}, expected 504",
                a.status
            ));
        }
        Ok(())
    }
    .await;
    c.record("platform.data.all_failed_504", outcome(r), t);

    dp_checks(c);

    let t = Instant::now();
    let Some(hook) = c.p.clock_hook.clone() else {
        c.skip(
            "platform.retention.ticket_403_after_8h",
            "the profile has no clock hook",
        );
        return;
    };
    let r = async {
        let mut resp = c
            .client
            .post(format!("{}{hook}", c.p.platform_url))
            .send_json(&serde_json::json!({ "advance_secs": RETENTION_SECS + 1 }))
            .await
            .map_err(|e| format!("clock hook: {e}"))?;
        if !resp.status().is_success() {
            let b = resp.body().await.unwrap_or_default();
            return fail(format!(
                "clock hook answered {}: {}",
                resp.status(),
                String::from_utf8_lossy(&b)
            ));
        }
        let a = c.get_data(Some(&delivery.ticket), Some(main_tx)).await?;
        if a.status != 403 {
            return fail(format!(
                "{} s after consent the ticket answered {}, expected 403",
                RETENTION_SECS + 1,
                a.status
            ));
        }
        Ok(())
    }
    .await;
    c.record("platform.retention.ticket_403_after_8h", outcome(r), t);
}

/// `platform.dp.bearer_and_transaction_uid` over the DP calls (heartbeats left out).
fn bearer_and_transaction_uid(calls: &[DpCall]) -> Result<(), String> {
    if calls.is_empty() {
        return fail("the DP role received no call");
    }
    // A call series is one (transaction, dataset): one Bearer token (§10.1) and one
    // transaction_uid for all its calls (§9.1), and no uid shared with another series.
    let mut uid_by_token: HashMap<String, String> = HashMap::new();
    let mut series_by_uid: HashMap<String, (String, String)> = HashMap::new();
    for k in calls {
        let Some(token) = k
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
        else {
            return fail(format!(
                "a call to {} has Authorization {:?}, expected Bearer",
                k.resource_id, k.authorization
            ));
        };
        if k.active != Some(true) {
            return fail(format!(
                "the Bearer token of a call to {} does not introspect active ({:?})",
                k.resource_id, k.active
            ));
        }
        let Some(uid) = k.transaction_uid.as_deref() else {
            return fail(format!(
                "a call to {} has no transaction_uid",
                k.resource_id
            ));
        };
        if !is_uuid_v4_lower(uid) {
            return fail(format!(
                "transaction_uid {uid:?} is not a lowercase UUID v4"
            ));
        }
        if let Some(prev) = uid_by_token.insert(token.to_string(), uid.to_string())
            && prev != uid
        {
            return fail(format!(
                "one call series of {} uses two transaction_uids",
                k.resource_id
            ));
        }
        match series_by_uid.get(uid) {
            Some((other_token, other_rid)) if other_token != token => {
                let what = if *other_rid == k.resource_id {
                    format!("two transactions' call series of {other_rid}")
                } else {
                    format!("the call series of {other_rid} and of {}", k.resource_id)
                };
                return fail(format!(
                    "transaction_uid {uid} is used by {what} (one per (transaction, dataset))"
                ));
            }
            Some(_) => {}
            None => {
                series_by_uid.insert(uid.to_string(), (token.to_string(), k.resource_id.clone()));
            }
        }
    }
    Ok(())
}

fn dp_checks(c: &mut Ctx) {
    let calls: Vec<_> = c
        .dp_role
        .calls()
        .into_iter()
        .filter(|k| !k.heartbeat)
        .collect();
    let t = Instant::now();
    let r = bearer_and_transaction_uid(&calls);
    c.record("platform.dp.bearer_and_transaction_uid", outcome(r), t);

    let t = Instant::now();
    let slow = c.p.datasets.slow.clone();
    let r = (|| {
        let series: Vec<_> = calls.iter().filter(|k| k.resource_id == slow).collect();
        let Some(first) = series.iter().find(|k| k.status == 429) else {
            return fail(format!("no call of {slow} was answered 429"));
        };
        let n = first.retry_after.unwrap_or(0);
        let Some(next) = series
            .iter()
            .find(|k| k.at > first.at && k.transaction_uid == first.transaction_uid)
        else {
            return fail(format!(
                "{slow} was not called again after its 429 (Retry-After {n})"
            ));
        };
        let gap = next.at.duration_since(first.answered);
        // Half a second of slack for the DP's whole-second countdown.
        if gap + Duration::from_millis(500) < Duration::from_secs(n) {
            return fail(format!(
                "{slow} was called again {:.1} s after a 429 with Retry-After {n}",
                gap.as_secs_f64()
            ));
        }
        Ok(())
    })();
    c.record("platform.dp.retry_after_respected", outcome(r), t);
}

async fn ticket_checks(c: &mut Ctx, id: &str) {
    let t = Instant::now();
    let r = match id {
        "platform.data.no_ticket_400" => match c.get_data(None, None).await {
            Ok(a) if a.status == 400 => Ok(()),
            Ok(a) => fail(format!(
                "without permission_ticket the answer is {}, expected 400",
                a.status
            )),
            Err(e) => fail(e),
        },
        _ => match c
            .get_data(Some("00000000-0000-4000-8000-000000000000"), None)
            .await
        {
            Ok(a) if a.status == 403 => Ok(()),
            Ok(a) => fail(format!(
                "an unknown ticket is answered {}, expected 403",
                a.status
            )),
            Err(e) => fail(e),
        },
    };
    c.record(id, outcome(r), t);
}

async fn redirect_checks(c: &mut Ctx, sp: &Sp) {
    // Wrong returnUrl.
    let t = Instant::now();
    let r = async {
        let list = c.list(&["instant"])?;
        let pid = c.pid(&c.p.citizen.id)?;
        let mut other = sp.config.clone();
        other.return_url = format!(
            "http://{}/elsewhere",
            listen_addr(&sp.raw.return_url)
                .map_err(|e| e.to_string())?
                .0
        );
        let r = other
            .redirect(&RedirectRequest::new(&list, &pid))
            .map_err(|e| e.to_string())?;
        let a = Browser::new(&c.p.platform_url).get(&r.url).await?;
        let ret = c.returned(sp, &a)?;
        if ret.outcome.code() != 404 {
            return fail(format!("code={}, expected 404", ret.outcome.code()));
        }
        if ret.tx_id.is_some() {
            return fail("the 404 return carries a tx_id");
        }
        Ok(())
    }
    .await;
    c.record("platform.redirect.return_url_mismatch_404", outcome(r), t);

    // Unregistered dataset.
    let t = Instant::now();
    let r = async {
        let list = c.list(&["unregistered"])?;
        let pid = c.pid(&c.p.citizen.id)?;
        let r = sp
            .config
            .redirect(&RedirectRequest::new(&list, &pid))
            .map_err(|e| e.to_string())?;
        let a = Browser::new(&c.p.platform_url).get(&r.url).await?;
        let ret = c.returned(sp, &a)?;
        if ret.outcome.code() != 401 {
            return fail(format!("code={}, expected 401", ret.outcome.code()));
        }
        ret.check_tx(&r.tx_id).map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    c.record("platform.redirect.unregistered_dataset_401", outcome(r), t);

    // A pid that is no identifier: built by hand (the SDK refuses to encrypt one).
    let t = Instant::now();
    let r = async {
        let list = c.list(&["instant"])?;
        let pid = c.pid(&c.p.citizen.id)?;
        let r = sp
            .config
            .redirect(&RedirectRequest::new(&list, &pid))
            .map_err(|e| e.to_string())?;
        let enc_bad = sp
            .config
            .cipher()
            .encrypt("NOT-AN-ID!")
            .map_err(|e| e.to_string())?;
        let Some(at) = r.url.find("&pid=") else {
            return fail("the redirect has no pid parameter");
        };
        let start = at + "&pid=".len();
        let end = r.url[start..].find('&').map_or(r.url.len(), |k| start + k);
        let url = format!(
            "{}{}{}",
            &r.url[..start],
            mydata_protocol::flow::percent_encode(&enc_bad),
            &r.url[end..]
        );
        if url == r.url {
            return fail("could not build the redirect with a bad pid");
        }
        let a = Browser::new(&c.p.platform_url).get(&url).await?;
        let ret = c.returned(sp, &a)?;
        if ret.outcome.code() != 400 {
            return fail(format!("code={}, expected 400", ret.outcome.code()));
        }
        Ok(())
    }
    .await;
    c.record("platform.redirect.bad_pid_400", outcome(r), t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_rules_cite_the_spec() {
        let mut ids: Vec<_> = CHECKS.iter().map(|(i, _)| *i).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CHECKS.len());
        for (id, r) in CHECKS {
            assert!(id.starts_with("platform."), "{id}");
            assert!(r.contains(".md") || r.contains('D'), "{id}: {r}");
        }
        assert_eq!(rule("nope"), "");
    }

    fn call(rid: &str, token: &str, uid: &str) -> DpCall {
        DpCall {
            resource_id: rid.into(),
            at: Instant::now(),
            answered: Instant::now(),
            heartbeat: false,
            authorization: Some(format!("Bearer {token}")),
            transaction_uid: Some(uid.into()),
            active: Some(true),
            status: 200,
            retry_after: None,
        }
    }

    #[test]
    fn one_transaction_uid_per_series_and_none_shared() {
        const U1: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
        const U2: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        const U3: &str = "16fd2706-8baf-433b-82eb-8c7fada847da";
        // Two series, the first retried: fine.
        let ok = [
            call("API.A", "t1", U1),
            call("API.B", "t2", U2),
            call("API.A", "t1", U1),
        ];
        assert_eq!(bearer_and_transaction_uid(&ok), Ok(()));
        // A retry with another uid.
        let e = bearer_and_transaction_uid(&[call("API.A", "t1", U1), call("API.A", "t1", U3)])
            .unwrap_err();
        assert!(e.contains("two transaction_uids"), "{e}");
        // Two datasets of one transaction with one uid.
        let e = bearer_and_transaction_uid(&[call("API.A", "t1", U1), call("API.B", "t2", U1)])
            .unwrap_err();
        assert!(e.contains("API.A and of API.B"), "{e}");
        // One dataset in two transactions with one uid.
        let e = bearer_and_transaction_uid(&[call("API.A", "t1", U1), call("API.A", "t3", U1)])
            .unwrap_err();
        assert!(e.contains("two transactions"), "{e}");
        // Upper case, no Bearer, inactive, none at all.
        let upper = U1.to_ascii_uppercase();
        assert!(bearer_and_transaction_uid(&[call("API.A", "t1", &upper)]).is_err());
        let mut k = call("API.A", "t1", U1);
        k.authorization = None;
        assert!(bearer_and_transaction_uid(&[k]).is_err());
        let mut k = call("API.A", "t1", U1);
        k.active = Some(false);
        assert!(bearer_and_transaction_uid(&[k]).is_err());
        assert!(bearer_and_transaction_uid(&[]).is_err());
    }

    #[test]
    fn uuid_v4_lowercase() {
        assert!(is_uuid_v4_lower("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!is_uuid_v4_lower("0F8FAD5B-D9CB-469F-A165-70867728950E"));
        assert!(!is_uuid_v4_lower("0f8fad5b-d9cb-169f-a165-70867728950e"));
        assert!(!is_uuid_v4_lower("0f8fad5b-d9cb-469f-c165-70867728950e"));
        assert!(!is_uuid_v4_lower("0f8fad5b"));
    }
}
