//! The checks of the `dp` suite and their order (spec `conformance-dp.md`).

use std::collections::BTreeSet;
use std::io::Cursor;
use std::time::{Duration, Instant};

use mydata_protocol::Error as ProtocolError;
use mydata_protocol::date::{CivilDate, UnixTime};
use mydata_protocol::ids::PermissionTicket;
use mydata_protocol::package::dp::{self, TrustAnchors, VerifyOptions};
use mydata_protocol::package::names::{CERTIFICATE, MANIFEST, SIGNATURE};
use mydata_protocol::template::{self, Method, Rendered, Template, Values};

use super::platform::{PlatformRole, Shape, now};
use super::profile::{DatasetProfile, Person, Profile};
use crate::report::{Outcome, Report};

/// Every check of the suite: its stable id and the rule it tests, in report order.
pub const CHECKS: [(&str, &str); 18] = [
    (
        "dp.heartbeat",
        "protocol.md §9.4: GET {endpoint}?heartbeat=true without Authorization answers 200, without personal data, and without asking the platform about any token",
    ),
    (
        "dp.token.missing_401",
        "conformance-dp.md R1, RFC 6750: a call without a bearer token is answered 401",
    ),
    (
        "dp.token.inactive_refused",
        "protocol.md §10.2, conformance-dp.md R2: a token the platform answers {\"active\":false} for is refused (401 or 403), never served",
    ),
    (
        "dp.token.audience",
        "protocol.md §10.1–§10.2, D31: an active token whose aud names another dataset is refused (401 or 403)",
    ),
    (
        "dp.token.scope",
        "protocol.md §10.2: an active token without aud whose scope is not one of the dataset's is refused (401 or 403)",
    ),
    (
        "dp.no_data_204",
        "protocol.md §9.3, D34: a citizen the DP has no data for is answered 204 with an empty body",
    ),
    (
        "dp.introspect.request",
        "protocol.md §10.2: before serving a token the DP asks POST {platform}/connect/introspect, application/x-www-form-urlencoded token=…, with Basic resource_id:resource_secret",
    ),
    (
        "dp.answer.zip",
        "protocol.md §9.1, §11: a call with Accept: application/zip is answered 200 with Content-Type: application/zip",
    ),
    (
        "dp.package.format",
        "packages.md, D9 steps 1, 2, 6, 7: the package is a zip with META-INFO/manifest.xml, manifest.sha256withrsa and certificate.cer, safe names, every data file listed with its SHA-256, nothing missing or extra",
    ),
    (
        "dp.package.signature",
        "packages.md, D9 step 5: META-INFO/manifest.sha256withrsa is RSASSA-PKCS1-v1_5 SHA-256 over the raw manifest bytes, by the key of META-INFO/certificate.cer",
    ),
    (
        "dp.package.certificate",
        "packages.md, D9 steps 3–4, D35: the signing certificate is valid now and chains to the profile's DP CA",
    ),
    (
        "dp.uid.same_request",
        "protocol.md §9.3: a repeated transaction_uid is the same request: answered again with the same package, byte for byte",
    ),
    (
        "dp.uid.distinct",
        "protocol.md §9.1, §9.3, conformance-dp.md R3: another transaction_uid for another citizen gets that citizen's own package, never one made for an earlier transaction_uid",
    ),
    (
        "dp.userinfo.bearer",
        "protocol.md §10.3: a DP that asks /connect/userinfo does so with the call's bearer token",
    ),
    (
        "dp.token.expired",
        "protocol.md §10.1, conformance-dp.md R4: a token past its exp is refused (401 or 403), even if an earlier introspection said active",
    ),
    (
        "dp.token.revoked",
        "protocol.md §10.1, conformance-dp.md R4: a token the platform ended is refused (401 or 403) at the latest cache_secs after it ended, also for a transaction_uid it was served before",
    ),
    (
        "dp.slow.retry_after",
        "protocol.md §9.3: while its work is in progress the DP answers 429 (or 426) with Retry-After; calls with the same transaction_uid continue that work and end in 200 with the package, answered again byte for byte",
    ),
    (
        "dp.template.received",
        "protocol.md §9.2, conformance-dp.md R5: a call built from the dataset's template is served (200), and the DP reads the items where the template puts them: the same call without them is refused with 400",
    ),
];

fn rule(id: &str) -> &'static str {
    CHECKS
        .iter()
        .find(|(i, _)| *i == id)
        .map_or("", |(_, r)| *r)
}

fn outcome(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Pass,
        Err(m) => Outcome::Fail(m),
    }
}

/// An answer of the DP.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn refused(&self) -> bool {
        matches!(self.status, 401 | 403)
    }
}

fn describe(a: &Answer) -> String {
    let kind = if a.body.starts_with(b"PK") {
        " (a zip)".to_owned()
    } else if a.body.is_empty() {
        String::new()
    } else {
        format!(" ({} bytes)", a.body.len())
    };
    format!("{}{kind}", a.status)
}

/// How a call is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// As the platform builds it (§9.1), the template included.
    Full,
    /// Without the template's items.
    Bare,
}

struct Suite<'a> {
    p: &'a Profile,
    platform: PlatformRole,
    client: awc::Client,
    ca: TrustAnchors,
}

fn fresh_uid() -> String {
    PermissionTicket::generate().map_or_else(
        |_| format!("00000000-0000-4000-8000-{:012x}", now()),
        |t| t.as_str().to_owned(),
    )
}

fn values(d: &DatasetProfile, person: &Person, uid: &str) -> Values {
    Values {
        transaction_uid: uid.to_owned(),
        resource_id: d.resource_id.clone(),
        pid: Some(person.id.to_ascii_uppercase()),
        pid_type: Some(super::platform::uid_type(&person.id).into()),
        birthdate: person
            .birth_date
            .as_deref()
            .and_then(|b| b.parse::<CivilDate>().ok()),
        name: person.name.clone(),
        email: person.email.clone(),
        params: Default::default(),
    }
}

impl Suite<'_> {
    /// One DP-API call.
    async fn call(
        &self,
        d: &DatasetProfile,
        person: &Person,
        uid: &str,
        token: Option<&str>,
        build: Build,
    ) -> Result<Answer, String> {
        let method = if d.method == "POST" {
            Method::Post
        } else {
            Method::Get
        };
        let rendered: Option<Rendered> = match (&d.template, build) {
            (Some(t), Build::Full) => {
                let t = Template::from_json(&t.to_string()).map_err(|e| e.to_string())?;
                Some(
                    t.render(method, &values(d, person, uid))
                        .map_err(|e| format!("template: {e}"))?,
                )
            }
            _ => None,
        };
        let url = template::call_url(&d.endpoint, uid, rendered.as_ref());
        let mut req = match method {
            Method::Get => self.client.get(&url),
            Method::Post => self.client.post(&url),
        };
        req = req.insert_header(("Accept", "application/zip"));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let mut body = None;
        if let Some(r) = &rendered {
            for (n, v) in &r.headers {
                req = req.append_header((n.as_str(), v.as_str()));
            }
            if let Some(b) = &r.body {
                req = req.insert_header(("Content-Type", b.content_type()));
                body = Some(b.as_str().to_owned());
            }
        }
        let sent = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        };
        let mut res = sent.map_err(|e| format!("calling {}: {e}", d.endpoint))?;
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, retry_after) = (header("content-type"), header("retry-after"));
        let body = res
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", d.endpoint))?;
        Ok(Answer {
            status: res.status().as_u16(),
            content_type,
            retry_after,
            body: body.to_vec(),
        })
    }

    /// A token for `person` and a fresh series of `d`, and the series' first answer.
    async fn first_call(
        &self,
        d: &DatasetProfile,
        person: &Person,
        lifetime: i64,
    ) -> Result<(String, String, Answer), String> {
        let uid = fresh_uid();
        let token = self
            .platform
            .issue(d, person, &uid, lifetime, Shape::Normal);
        let a = self
            .call(d, person, &uid, Some(&token), Build::Full)
            .await?;
        Ok((uid, token, a))
    }

    /// Refusal checks: a token answered as `shape` must not be served.
    async fn refused_with(&self, shape: Shape) -> Result<(), String> {
        let d = &self.p.instant;
        let uid = fresh_uid();
        let token = self.platform.issue(d, &self.p.citizen, &uid, 7_200, shape);
        let a = self
            .call(d, &self.p.citizen, &uid, Some(&token), Build::Full)
            .await?;
        if a.refused() {
            Ok(())
        } else {
            Err(format!("expected 401 or 403, got {}", describe(&a)))
        }
    }

    async fn heartbeat(&self) -> Result<(), String> {
        let d = &self.p.instant;
        let before = self.platform.introspections().len();
        let sep = if d.endpoint.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}heartbeat=true", d.endpoint);
        let mut res = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let body = res
            .body()
            .limit(1 << 20)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if res.status().as_u16() != 200 {
            return Err(format!("expected 200, got {}", res.status().as_u16()));
        }
        let text = String::from_utf8_lossy(&body).to_ascii_uppercase();
        for person in [&self.p.citizen, &self.p.other_citizen] {
            let mut needles = vec![person.id.to_ascii_uppercase()];
            needles.extend(person.name.iter().map(|n| n.to_ascii_uppercase()));
            needles.extend(person.email.iter().map(|n| n.to_ascii_uppercase()));
            if let Some(n) = needles.iter().find(|n| !n.is_empty() && text.contains(*n)) {
                return Err(format!("the heartbeat answer contains personal data ({n})"));
            }
        }
        if body.starts_with(b"PK") {
            return Err("the heartbeat answer is a zip".into());
        }
        if self.platform.introspections().len() != before {
            return Err("the DP asked the platform about a token during the heartbeat".into());
        }
        Ok(())
    }

    async fn missing_token(&self) -> Result<(), String> {
        let d = &self.p.instant;
        let a = self
            .call(d, &self.p.citizen, &fresh_uid(), None, Build::Full)
            .await?;
        if a.status == 401 {
            Ok(())
        } else {
            Err(format!("expected 401, got {}", describe(&a)))
        }
    }

    async fn no_data(&self) -> Result<(), String> {
        let person = Person {
            id: self.p.no_data_id.clone(),
            birth_date: None,
            name: None,
            email: None,
        };
        let (_, _, a) = self.first_call(&self.p.instant, &person, 7_200).await?;
        match (a.status, a.body.is_empty()) {
            (204, true) => Ok(()),
            (204, false) => Err(format!("204 with a {}-byte body", a.body.len())),
            _ => Err(format!("expected 204, got {}", describe(&a))),
        }
    }
}

/// The result of the package checks on one package.
struct PackageVerdict {
    format: Outcome,
    signature: Outcome,
    certificate: Outcome,
}

fn is_certificate_error(e: &ProtocolError) -> bool {
    matches!(
        e,
        ProtocolError::Certificate(_)
            | ProtocolError::CertificateExpired { .. }
            | ProtocolError::UntrustedCertificate(_)
    )
}

fn judge_package(bytes: &[u8], ca: &TrustAnchors) -> PackageVerdict {
    let at = UnixTime(now());
    let opts = VerifyOptions {
        at,
        trust: Some(ca),
        limits: Default::default(),
    };
    let content = dp::verify_content(Cursor::new(bytes), &opts);
    let (format, signature) = match &content {
        Ok(_) => (Outcome::Pass, Outcome::Pass),
        Err(ProtocolError::BadSignature) => (
            Outcome::Skip(
                "the manifest's signature did not verify: see dp.package.signature".into(),
            ),
            Outcome::Fail(format!(
                "the signature does not verify with the key of {CERTIFICATE}"
            )),
        ),
        Err(e) if is_certificate_error(e) => (
            Outcome::Skip(format!(
                "{CERTIFICATE} could not be read: see dp.package.certificate"
            )),
            Outcome::Fail(format!("{CERTIFICATE}: {e}")),
        ),
        Err(e) => (
            Outcome::Fail(e.to_string()),
            Outcome::Skip(format!(
                "the package is not well-formed ({MANIFEST}, {SIGNATURE}): see dp.package.format"
            )),
        ),
    };
    let certificate = match dp::verify(Cursor::new(bytes), &opts) {
        Ok(_) => Outcome::Pass,
        Err(e) if is_certificate_error(&e) => Outcome::Fail(e.to_string()),
        Err(_) => Outcome::Skip(
            "the package failed before its certificate could be judged: see dp.package.format and dp.package.signature".into(),
        ),
    };
    PackageVerdict {
        format,
        signature,
        certificate,
    }
}

/// The SHA-256 of each data file of a zip (every entry outside `META-INFO/`), read straight from
/// the zip without verifying anything: packages that fail the package checks still compare. At
/// most 64 entries and 64 MiB each are read.
fn data_digests(bytes: &[u8]) -> BTreeSet<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let Ok(mut zip) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for i in 0..zip.len().min(64) {
        let Ok(f) = zip.by_index(i) else { continue };
        let meta = f
            .name()
            .is_ok_and(|n| n.starts_with("META-INFO/") || n.starts_with("META-INFO\\"));
        if meta || f.is_dir() {
            continue;
        }
        let mut data = Vec::new();
        if f.take(64 << 20).read_to_end(&mut data).is_ok() {
            out.insert(hex::encode(sha2::Sha256::digest(&data)));
        }
    }
    out
}

/// `Retry-After` as delay-seconds or an HTTP-date (protocol.md §9.3), in seconds from now, at
/// least 1; `None` when it is neither.
fn retry_after_secs(v: &str) -> Option<u64> {
    mydata_protocol::dpapi::parse_retry_after(v, UnixTime(now()))
        .map(|d| u64::try_from(d.max(1)).unwrap_or(1))
}

async fn sleep_secs(secs: u64) {
    actix_web::rt::time::sleep(Duration::from_secs(secs)).await;
}

/// The lifetime of the expiry check's token, in seconds.
pub(crate) const EXPIRY_LIFETIME_SECS: i64 = 3;

/// Results gathered by one part of the run.
type Results = Vec<(&'static str, Outcome, Duration)>;

async fn main_series(s: &Suite<'_>) -> Results {
    let mut out: Results = Vec::new();
    let d = &s.p.instant;
    let t = Instant::now();
    let before = s.platform.introspections().len();
    let first = s.first_call(d, &s.p.citizen, 7_200).await;
    let (uid, token, a) = match first {
        Ok(x) if x.2.status == 200 => x,
        other => {
            let m = match other {
                Ok((_, _, a)) => format!(
                    "the first call for the profile's citizen was answered {} (expected 200)",
                    describe(&a)
                ),
                Err(m) => m,
            };
            for id in [
                "dp.introspect.request",
                "dp.answer.zip",
                "dp.package.format",
                "dp.package.signature",
                "dp.package.certificate",
                "dp.uid.same_request",
                "dp.uid.distinct",
            ] {
                out.push((id, Outcome::Fail(m.clone()), t.elapsed()));
            }
            let o = if d.template.is_none() {
                Outcome::Skip("the profile's instant dataset declares no template".into())
            } else {
                Outcome::Fail(m)
            };
            out.push(("dp.template.received", o, t.elapsed()));
            return out;
        }
    };
    // dp.introspect.request
    let hits: Vec<_> = s.platform.introspections()[before..]
        .iter()
        .filter(|h| h.token.as_deref() == Some(token.as_str()))
        .cloned()
        .collect();
    let r = if hits.is_empty() {
        Err("the DP served the token without asking /connect/introspect about it".into())
    } else if let Some(p) = hits.iter().find_map(|h| h.problem.clone()) {
        Err(format!("introspection request: {p}"))
    } else if hits
        .iter()
        .any(|h| h.authenticated.as_deref() != Some(d.resource_id.as_str()) || !h.form_post)
    {
        Err("introspection request not authenticated as this dataset".into())
    } else {
        Ok(())
    };
    out.push(("dp.introspect.request", outcome(r), t.elapsed()));
    // dp.answer.zip
    let ct = a.content_type.clone().unwrap_or_default();
    let r = if ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/zip"))
    {
        Ok(())
    } else {
        Err(format!("Content-Type {ct:?}, expected application/zip"))
    };
    out.push(("dp.answer.zip", outcome(r), t.elapsed()));
    // the package
    let v = judge_package(&a.body, &s.ca);
    out.push(("dp.package.format", v.format, t.elapsed()));
    out.push(("dp.package.signature", v.signature, t.elapsed()));
    out.push(("dp.package.certificate", v.certificate, t.elapsed()));
    // dp.uid.same_request
    let t = Instant::now();
    let r = match s
        .call(d, &s.p.citizen, &uid, Some(&token), Build::Full)
        .await
    {
        Ok(b) if b.status == 200 && b.body == a.body => Ok(()),
        Ok(b) if b.status == 200 => Err(format!(
            "the repeated transaction_uid got a different package ({} bytes, first {} bytes)",
            b.body.len(),
            a.body.len()
        )),
        Ok(b) => Err(format!(
            "the repeated transaction_uid was answered {}, expected 200 with the same package",
            describe(&b)
        )),
        Err(m) => Err(m),
    };
    out.push(("dp.uid.same_request", outcome(r), t.elapsed()));
    // dp.uid.distinct
    let t = Instant::now();
    let r = match s.first_call(d, &s.p.other_citizen, 7_200).await {
        Ok((_, _, b)) if b.status == 200 => {
            if b.body == a.body {
                Err(
                    "another citizen's new transaction_uid got the package made for the first one"
                        .into(),
                )
            } else {
                let (x, y) = (data_digests(&a.body), data_digests(&b.body));
                if x == y {
                    Err("another citizen's package holds the same data files as the first citizen's".into())
                } else {
                    Ok(())
                }
            }
        }
        Ok((_, _, b)) => Err(format!(
            "the other citizen's call was answered {} (expected 200; the profile's other_citizen must have data)",
            describe(&b)
        )),
        Err(m) => Err(m),
    };
    out.push(("dp.uid.distinct", outcome(r), t.elapsed()));
    // dp.template.received
    let t = Instant::now();
    let o = if d.template.is_none() {
        Outcome::Skip("the profile's instant dataset declares no template".into())
    } else {
        let uid = fresh_uid();
        let token = s
            .platform
            .issue(d, &s.p.citizen, &uid, 7_200, Shape::Normal);
        outcome(
            match s
                .call(d, &s.p.citizen, &uid, Some(&token), Build::Bare)
                .await
            {
                Ok(b) if b.status == 400 => Ok(()),
                Ok(b) => Err(format!(
                    "the templated call was served (200), but the same call without the template's items was answered {} (expected 400): the DP does not read the items where the template puts them",
                    describe(&b)
                )),
                Err(m) => Err(m),
            },
        )
    };
    out.push(("dp.template.received", o, t.elapsed()));
    out
}

/// The expiry check's first call was answered after the token's `exp`: it cannot judge.
const SLOW_FIRST: &str =
    "the DP answered the first call only after the token's exp: the expiry check cannot judge";

/// A token served once, then refused after `wait` seconds (expired or revoked).
async fn later_refused(s: &Suite<'_>, id: &'static str, lifetime: i64, revoke: bool) -> Results {
    let t = Instant::now();
    let d = &s.p.instant;
    let r = async {
        let (uid, token, a) = s.first_call(d, &s.p.citizen, lifetime).await?;
        if a.status != 200 {
            return Err(format!(
                "the first call with a live token was answered {} (expected 200)",
                describe(&a)
            ));
        }
        let wait = if revoke {
            s.platform.revoke(&token);
            s.p.cache_secs + 1
        } else {
            // Until 1 s past the token's exp, measured from its issue (not from the answer).
            let exp = s.platform.exp_of(&token).unwrap_or_else(now);
            if now() >= exp {
                return Err(SLOW_FIRST.into());
            }
            u64::try_from(exp + 1 - now()).unwrap_or(1)
        };
        sleep_secs(wait).await;
        let b = s
            .call(d, &s.p.citizen, &uid, Some(&token), Build::Full)
            .await?;
        if b.refused() {
            Ok(())
        } else if revoke {
            Err(format!(
                "{wait} s after the platform ended the token the DP still answered {}",
                describe(&b)
            ))
        } else {
            Err(format!(
                "1 s after the token's exp the DP still answered {}",
                describe(&b)
            ))
        }
    }
    .await;
    let o = match r {
        Err(m) if m == SLOW_FIRST => Outcome::Skip(m),
        r => outcome(r),
    };
    vec![(id, o, t.elapsed())]
}

async fn slow_series(s: &Suite<'_>) -> Results {
    let t = Instant::now();
    let Some(d) = &s.p.slow else {
        return vec![(
            "dp.slow.retry_after",
            Outcome::Skip("the profile names no slow dataset".into()),
            Duration::ZERO,
        )];
    };
    let r = async {
        let deadline = Instant::now() + Duration::from_secs(s.p.slow_max_secs);
        let (uid, token, mut a) = s.first_call(d, &s.p.citizen, 7_200).await?;
        if a.status == 200 {
            return Err(
                "the first call was answered 200 at once: the profile's slow dataset must still be working (429)"
                    .into(),
            );
        }
        let mut waits = 0u32;
        while matches!(a.status, 429 | 426) {
            let Some(secs) = a.retry_after.as_deref().and_then(retry_after_secs) else {
                return Err(format!(
                    "{} without a valid Retry-After ({:?})",
                    a.status, a.retry_after
                ));
            };
            if Instant::now() + Duration::from_secs(secs) > deadline {
                return Err(format!(
                    "still {} after {waits} calls and {} s (slow_max_secs {}): a repeated transaction_uid must continue the same work",
                    a.status,
                    t.elapsed().as_secs(),
                    s.p.slow_max_secs
                ));
            }
            sleep_secs(secs).await;
            waits += 1;
            a = s.call(d, &s.p.citizen, &uid, Some(&token), Build::Full).await?;
        }
        if a.status != 200 {
            return Err(format!(
                "after {waits} waits the series ended with {} (expected 200)",
                describe(&a)
            ));
        }
        let b = s.call(d, &s.p.citizen, &uid, Some(&token), Build::Full).await?;
        if b.status == 200 && b.body == a.body {
            Ok(())
        } else {
            Err(format!(
                "the finished series, called again, was answered {} instead of the same package",
                describe(&b)
            ))
        }
    }
    .await;
    vec![("dp.slow.retry_after", outcome(r), t.elapsed())]
}

/// Runs every check against the DP the profile describes, serving the platform's side at the
/// profile's `platform_url`.
pub async fn run(p: &Profile) -> Report {
    let listener = p.listen().map_err(|e| e.to_string()).and_then(|a| {
        std::net::TcpListener::bind(a).map_err(|e| format!("platform role: listen on {a}: {e}"))
    });
    match listener {
        Ok(l) => run_on(l, p).await,
        Err(m) => {
            let mut report = Report::new("dp", p.instant.endpoint.clone());
            report.push(
                "dp.setup",
                "the suite could start its platform role",
                Outcome::Fail(m),
                Duration::ZERO,
            );
            report
        }
    }
}

/// [`run`], with the platform's side served on `listener` (bound by the caller, so that no one
/// else takes the address meanwhile; it should be the address of the profile's `platform_url`).
pub async fn run_on(listener: std::net::TcpListener, p: &Profile) -> Report {
    let target = p.instant.endpoint.clone();
    let mut report = Report::new("dp", target);
    let setup = Instant::now();
    let started = async {
        p.validate().map_err(|e| e.to_string())?;
        let pem = p.dp_ca_pem.as_deref().ok_or("dp_ca: no CA")?;
        let ca = TrustAnchors::from_pem(&[pem]).map_err(|e| format!("dp_ca: {e}"))?;
        let platform = PlatformRole::start(p, listener)?;
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_secs(60))
            .finish();
        Ok::<_, String>(Suite {
            p,
            platform,
            client,
            ca,
        })
    }
    .await;
    let s = match started {
        Ok(s) => s,
        Err(m) => {
            report.push(
                "dp.setup",
                "the suite could start its platform role",
                Outcome::Fail(m),
                setup.elapsed(),
            );
            return report;
        }
    };
    let mut results: Results = Vec::new();
    let timed = |id: &'static str, r: Result<(), String>, t: Instant| (id, outcome(r), t.elapsed());
    let t = Instant::now();
    results.push(timed("dp.heartbeat", s.heartbeat().await, t));
    let t = Instant::now();
    results.push(timed("dp.token.missing_401", s.missing_token().await, t));
    let t = Instant::now();
    results.push(timed(
        "dp.token.inactive_refused",
        s.refused_with(Shape::Unknown).await,
        t,
    ));
    let other = if p.instant.resource_id == "API.ZZZZZZZZZZ" {
        "API.YYYYYYYYYY"
    } else {
        "API.ZZZZZZZZZZ"
    };
    let t = Instant::now();
    results.push(timed(
        "dp.token.audience",
        s.refused_with(Shape::ForeignAud(other.into())).await,
        t,
    ));
    let t = Instant::now();
    results.push(timed(
        "dp.token.scope",
        s.refused_with(Shape::ForeignScope("conformance.other.dataset.read".into()))
            .await,
        t,
    ));
    let t = Instant::now();
    results.push(timed("dp.no_data_204", s.no_data().await, t));
    // The rest at once: the waits of the expiry, revocation and slow checks overlap.
    let (main, expired, revoked, slow) = tokio::join!(
        main_series(&s),
        later_refused(&s, "dp.token.expired", EXPIRY_LIFETIME_SECS, false),
        later_refused(&s, "dp.token.revoked", 7_200, true),
        slow_series(&s),
    );
    results.extend(main);
    // Evaluated last: every userinfo request the DP made during the run.
    let t = Instant::now();
    let infos = s.platform.userinfos();
    let o = if infos.is_empty() {
        Outcome::Skip("the DP did not ask /connect/userinfo".into())
    } else if let Some(h) = infos.iter().find(|h| !h.in_header) {
        Outcome::Fail(format!(
            "a /connect/userinfo request without Authorization: Bearer (token {})",
            if h.token.is_some() {
                "in the query string"
            } else {
                "absent"
            }
        ))
    } else {
        Outcome::Pass
    };
    results.push(("dp.userinfo.bearer", o, t.elapsed()));
    results.extend(expired);
    results.extend(revoked);
    results.extend(slow);
    // Report order: the CHECKS order.
    for (id, _) in CHECKS {
        if let Some((_, o, dur)) = results.iter().find(|(i, _, _)| *i == id) {
            report.push(id, rule(id), o.clone(), *dur);
        }
    }
    s.platform.stop().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_every_rule_cites_the_spec() {
        let ids: BTreeSet<_> = CHECKS.iter().map(|c| c.0).collect();
        assert_eq!(ids.len(), CHECKS.len());
        for (id, r) in CHECKS {
            assert!(id.starts_with("dp."), "{id}");
            assert!(r.contains(".md") || r.contains("RFC"), "{id}: {r}");
        }
        assert_eq!(rule("dp.heartbeat"), CHECKS[0].1);
    }

    #[test]
    fn retry_after_is_delay_seconds_or_an_http_date() {
        assert_eq!(retry_after_secs("3"), Some(3));
        assert_eq!(retry_after_secs("0"), Some(1));
        assert_eq!(retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT"), Some(1));
        assert_eq!(retry_after_secs("soon"), None);
        assert_eq!(retry_after_secs("Xed, 99 Foo 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_secs(""), None);
    }
}
