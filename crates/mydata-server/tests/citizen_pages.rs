//! The citizen pages as a citizen meets them (issue 14, item 6), over real HTTP on 127.0.0.1 and
//! in headless Chromium: readable contrast on every page (WCAG 2 AA, from the styles Chromium
//! computes), format checks before a try counts toward the lock, typed values kept after an
//! error, errors tied to their inputs and focused, one lock message in Taiwan time, one name for
//! the national ID number, and datasets shown by name.

mod common;

use common::*;
use mydata_protocol::package::sp::PackagingMode;
use mydata_server::platform::NewDp;
use mydata_server::storage::DpMethod;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Reading pages

/// The page's text as a reader gets it: tags dropped, entities decoded, spaces collapsed.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(ch),
            _ => {}
        }
    }
    let out = out
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The start tag of the element with this `id`, e.g. `<input id="code" …>`.
fn tag_with_id<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let at = html.find(&format!(" id=\"{id}\""))?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    Some(&html[start..=end])
}

/// An attribute of a start tag: `Some("")` for a bare attribute such as `autofocus`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let quoted = format!(" {name}=\"");
    if let Some(i) = tag.find(&quoted) {
        let rest = &tag[i + quoted.len()..];
        return Some(rest[..rest.find('"')?].to_string());
    }
    let bare = format!(" {name}");
    tag.match_indices(&bare)
        .any(|(i, _)| matches!(tag[i + bare.len()..].chars().next(), Some(' ' | '>' | '/')))
        .then(String::new)
}

/// The text of the element with this `id` (up to its closing tag; no nesting of the same tag).
fn text_by_id(html: &str, id: &str) -> Option<String> {
    let tag = tag_with_id(html, id)?;
    let name: String = tag[1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let start = html.find(tag)? + tag.len();
    let end = start + html[start..].find(&format!("</{name}>"))?;
    Some(text_of(&html[start..end]))
}

/// Checks, on one answer, that the input `id` is tied to an error that says `says` and that it
/// is the page's one focused input.
fn assert_error_on(page: &Answer, id: &str, error_id: &str, says: &str) {
    let input = tag_with_id(&page.body, id).unwrap_or_else(|| panic!("no #{id}: {}", page.body));
    assert_eq!(
        attr(input, "aria-invalid").as_deref(),
        Some("true"),
        "{input}"
    );
    let described = attr(input, "aria-describedby").unwrap_or_default();
    assert!(
        described.split_whitespace().any(|d| d == error_id),
        "#{id} is not described by #{error_id}: {input}"
    );
    let error = text_by_id(&page.body, error_id).unwrap_or_else(|| panic!("no #{error_id}"));
    assert!(error.contains(says), "#{error_id} says {error:?}");
    assert_eq!(page.body.matches(" autofocus").count(), 1, "{}", page.body);
}

fn value_of(page: &Answer, id: &str) -> String {
    let input = tag_with_id(&page.body, id).unwrap_or_else(|| panic!("no #{id}"));
    attr(input, "value").unwrap_or_default()
}

/// To the basic-information page of a new transaction.
async fn to_basic(w: &World, ids: &[String], tx: &str) -> (Browser, String, Answer) {
    let creds = w.register(PackagingMode::B, ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, ids, tx, CITIZEN)).await;
    let p = b.submit(&flow, "terms", &page.csrf(), &[]).await;
    assert_eq!(p.step(), "basic");
    (b, flow, p)
}

async fn basic(b: &mut Browser, flow: &str, p: &Answer, id: &str, roc: &str) -> Answer {
    b.submit(
        flow,
        "basic",
        &p.csrf(),
        &[("national_id", id), ("birth_date", roc)],
    )
    .await
}

async fn documents(b: &mut Browser, flow: &str, p: &Answer, nhi: &str, household: &str) -> Answer {
    b.submit(
        flow,
        "pii",
        &p.csrf(),
        &[("nhi_card_number", nhi), ("household_number", household)],
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Format checks and the lock

/// A malformed national ID or birth date, NHI card number or household number gets an error on
/// its input but is not a try: ten malformed posts lock nothing, and the first well-formed wrong
/// answer after them leaves 4 tries.
#[actix_web::test]
async fn malformed_input_is_answered_but_never_counts_toward_the_lock() {
    let w = world().await;
    let ids = pii_datasets(1);
    let (mut b, flow, mut p) = to_basic(&w, &ids, "tx-format").await;
    for (id, roc) in [
        ("A123456788", "0770101"), // wrong check digit
        ("A12345", "0770101"),     // too short
        ("A320345672", "0770101"), // no such second digit
        ("12345678", "0770101"),   // a business number, for a person
        (CITIZEN, "0771301"),      // month 13
        (CITIZEN, "0770230"),      // 30 February
        (CITIZEN, "77-1-1"),
        (CITIZEN, "abcdefg"),
        ("", ""),
    ] {
        p = basic(&mut b, &flow, &p, id, roc).await;
        assert_eq!(p.step(), "basic", "{id} {roc}: {}", p.body);
        assert!(p.body.contains("class=\"error\""), "{id} {roc}: no error");
        assert!(!p.body.contains("attempts left"), "{id} {roc}: counted");
        assert!(!p.body.contains("id=\"locked\""), "{id} {roc}: locked");
    }
    // A well-formed wrong answer is the first try.
    p = basic(&mut b, &flow, &p, CITIZEN, "0770102").await;
    assert!(p.body.contains("4 attempts left"), "{}", p.body);
    p = basic(&mut b, &flow, &p, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "identity");

    // The same on the two-documents form.
    for (nhi, household) in [
        ("00001834276", "A2034517"),   // 11 digits
        ("00001834276X", "A2034517"),  // a letter
        ("000018342761", "A203451"),   // 7 characters
        ("000018342761", "A203451!"),  // a symbol
        ("000018342761", "A20345170"), // 9 characters
        ("", ""),
    ] {
        p = documents(&mut b, &flow, &p, nhi, household).await;
        assert_eq!(p.step(), "identity", "{nhi} {household}");
        assert!(p.body.contains("class=\"error\""), "{nhi} {household}");
        assert!(
            !p.body.contains("attempts left"),
            "{nhi} {household}: counted"
        );
        assert!(
            !p.body.contains("id=\"locked\""),
            "{nhi} {household}: locked"
        );
    }
    // Well-formed and wrong: the second try of this transaction.
    p = documents(&mut b, &flow, &p, "000018342762", "A2034517").await;
    assert!(p.body.contains("3 attempts left"), "{}", p.body);
    p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
}

/// Five well-formed wrong birth dates lock the transaction's checks; the lock is announced once,
/// with its end in Taiwan time and the zone named, and the right answer is not judged meanwhile.
#[actix_web::test]
async fn well_formed_wrong_answers_lock_with_one_message_in_taiwan_time() {
    let w = world().await;
    let ids = pii_datasets(1);
    let (mut b, flow, mut p) = to_basic(&w, &ids, "tx-lock-msg").await;
    for left in (0..5).rev() {
        p = basic(&mut b, &flow, &p, CITIZEN, "0770102").await;
        assert_eq!(p.step(), "basic");
        if left > 0 {
            assert!(
                p.body.contains(&format!("{left} attempts left")),
                "{}",
                p.body
            );
            assert!(!p.body.contains("id=\"locked\""));
        }
    }
    let text = text_of(&p.body);
    // One message: the lock itself, in both languages, and nothing else about it.
    assert_eq!(text.matches("鎖定").count(), 1, "{text}");
    assert_eq!(text.to_lowercase().matches("locked").count(), 1, "{text}");
    assert_eq!(p.body.matches("role=\"alert\"").count(), 1, "{}", p.body);
    assert!(!p.body.contains("role=\"status\""), "{}", p.body);
    assert!(!p.body.contains("class=\"error\""), "{}", p.body);
    // Its end: 900 s after the fifth failure, rounded up to the minute, in UTC+8.
    let until = w.p.now().0 + 900;
    let s = (until + 8 * 3600 + 59).rem_euclid(86_400);
    let shown = format!("{:02}:{:02} (UTC+8)", s / 3600, s / 60 % 60);
    let lock = text_by_id(&p.body, "locked").expect("the lock message");
    assert_eq!(lock.matches(&shown).count(), 2, "{lock} (expected {shown})");
    // Locked: the right answer is not judged.
    p = basic(&mut b, &flow, &p, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "basic");
    assert_eq!(text_of(&p.body).matches("鎖定").count(), 1);
    w.clock.advance(900);
    let p = b.get(&flow).await;
    assert!(!p.body.contains("id=\"locked\""));
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "identity");
}

// ---------------------------------------------------------------------------------------------
// Typed values, errors tied to inputs

/// After an error the form shows again what was typed, once (a reload shows it empty); a
/// one-time password is never shown again.
#[actix_web::test]
async fn typed_values_are_kept_after_an_error_but_never_a_code() {
    let w = world().await;
    let ids = pii_datasets(1);
    let (mut b, flow, p) = to_basic(&w, &ids, "tx-kept").await;
    // Malformed: the value as typed comes back, to be corrected.
    let p = basic(&mut b, &flow, &p, "a12034567", "0770101").await;
    assert_eq!(value_of(&p, "national_id"), "a12034567");
    assert_eq!(value_of(&p, "birth_date"), "0770101");
    // Well-formed and wrong.
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770102").await;
    assert_eq!(value_of(&p, "national_id"), CITIZEN);
    assert_eq!(value_of(&p, "birth_date"), "0770102");
    // Shown once: a reload has an empty form.
    let p = b.get(&flow).await;
    assert_eq!(value_of(&p, "national_id"), "");
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "identity");
    assert_eq!(value_of(&p, "nhi_card_number"), "", "nothing carried over");
    let p = documents(&mut b, &flow, &p, "000018342762", "a2034517").await;
    assert_eq!(value_of(&p, "nhi_card_number"), "000018342762");
    assert_eq!(value_of(&p, "household_number"), "a2034517");
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    assert!(!p.body.contains("000018342761") && !p.body.contains(CITIZEN));

    // One-time passwords.
    let ids = vec!["API.OTPDEMO001".to_string()];
    let (mut b, flow, p) = to_basic(&w, &ids, "tx-kept-otp").await;
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770101").await;
    let p = b
        .submit(&flow, "otp-send", &p.csrf(), &[("channel", "email")])
        .await;
    let code = code_in(&w.mails.lock().unwrap().last().cloned().expect("a mail"));
    let p = b
        .submit(&flow, "otp", &p.csrf(), &[("code", "12345")])
        .await;
    assert_error_on(&p, "code", "code-error", "6 digits");
    assert_eq!(value_of(&p, "code"), "");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let p = b.submit(&flow, "otp", &p.csrf(), &[("code", wrong)]).await;
    assert_error_on(&p, "code", "code-error", "4 attempts left");
    assert_eq!(value_of(&p, "code"), "");
    assert!(!p.body.contains(wrong), "the wrong code is not shown again");
}

/// Each error stands before its input, which names it in `aria-describedby`, is marked
/// `aria-invalid` and has the page's one `autofocus` (no script needed to focus it).
#[actix_web::test]
async fn errors_are_tied_to_their_inputs_and_focused() {
    let w = world().await;
    let ids = pii_datasets(1);
    let (mut b, flow, p) = to_basic(&w, &ids, "tx-tied").await;
    // No error: no autofocus, nothing invalid.
    assert!(!p.body.contains(" autofocus") && !p.body.contains("aria-invalid"));

    let p = basic(&mut b, &flow, &p, "A123456788", "0770101").await;
    assert_error_on(&p, "national_id", "national_id-error", "national ID number");
    assert!(attr(tag_with_id(&p.body, "national_id").unwrap(), "autofocus").is_some());
    assert!(attr(tag_with_id(&p.body, "birth_date").unwrap(), "aria-invalid").is_none());
    // The error comes before its input, after its label.
    let (label, error, input) = (
        p.body.find("<label for=\"national_id\"").unwrap(),
        p.body.find("id=\"national_id-error\"").unwrap(),
        p.body.find("<input id=\"national_id\"").unwrap(),
    );
    assert!(label < error && error < input);

    // Both malformed: two errors, the first input focused.
    let p = basic(&mut b, &flow, &p, "A12", "0771340").await;
    assert_error_on(&p, "national_id", "national_id-error", "national ID number");
    let birth = tag_with_id(&p.body, "birth_date").unwrap();
    assert_eq!(
        attr(birth, "aria-describedby").as_deref(),
        Some("birth_date-error")
    );
    assert!(attr(birth, "autofocus").is_none());

    // A wrong birth date: on the birth date.
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770102").await;
    assert_error_on(&p, "birth_date", "birth_date-error", "does not match");
    assert!(attr(tag_with_id(&p.body, "national_id").unwrap(), "aria-invalid").is_none());

    // Wrong documents: one error, on both inputs; the first focused.
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770101").await;
    let p = documents(&mut b, &flow, &p, "000018342762", "A2034517").await;
    assert_error_on(
        &p,
        "nhi_card_number",
        "nhi_card_number-error",
        "does not match",
    );
    let household = tag_with_id(&p.body, "household_number").unwrap();
    assert_eq!(
        attr(household, "aria-describedby").as_deref(),
        Some("nhi_card_number-error")
    );
    assert!(attr(household, "autofocus").is_none());
    // A malformed household number: on it alone.
    let p = documents(&mut b, &flow, &p, "000018342761", "A20").await;
    assert_error_on(
        &p,
        "household_number",
        "household_number-error",
        "8 letters or digits",
    );
    assert!(
        attr(
            tag_with_id(&p.body, "nhi_card_number").unwrap(),
            "aria-invalid"
        )
        .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// Words

/// Every page, and every error, calls the national ID the same: 身分證統一編號 and "national ID
/// number" (no 身分證字號, no bare "ID").
#[actix_web::test]
async fn one_name_for_the_national_id_on_every_page() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, terms) = b.open(&w.redirect(&creds, &ids, "tx-name", CITIZEN)).await;
    let mut pages = vec![terms.body.clone()];
    let p = b.submit(&flow, "terms", &terms.csrf(), &[]).await;
    pages.push(p.body.clone());
    let p = basic(&mut b, &flow, &p, "A123456788", "0770101").await;
    pages.push(p.body.clone());
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770102").await;
    pages.push(p.body.clone());
    let p = basic(&mut b, &flow, &p, CITIZEN, "0770101").await;
    pages.push(p.body.clone());
    let p = documents(&mut b, &flow, &p, "000018342762", "A2034517").await;
    pages.push(p.body.clone());
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    pages.push(p.body.clone());
    pages.push(Browser::new(&w.srv.url).get(&flow).await.body);
    let mut named = 0;
    for page in &pages {
        let text = text_of(page);
        assert!(!text.contains("身分證字號"), "{text}");
        for (i, _) in text.match_indices("身分證") {
            assert!(text[i..].starts_with("身分證統一編號"), "{text}");
            named += 1;
        }
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|s| !s.is_empty())
            .collect();
        for (i, word) in words.iter().enumerate() {
            if word.eq_ignore_ascii_case("id") {
                assert!(
                    i > 0 && words[i - 1].eq_ignore_ascii_case("national"),
                    "a bare \"{word}\": {text}"
                );
                assert_eq!(words.get(i + 1).copied(), Some("number"), "{text}");
            }
        }
    }
    // The form and both errors about it name it.
    assert!(named >= 3, "{named}");
}

/// The consent page names each dataset and its provider; the internal code (`API.…`) is not
/// shown where a name exists (it stays in an attribute for tools), only for a dataset without one.
#[actix_web::test]
async fn datasets_are_shown_by_name_not_by_internal_code() {
    let w = world().await;
    let mut ids = pii_datasets(2);
    w.p.register_dp(NewDp {
        tls_ca: None,
        resource_id: Some("API.NONAME0001".parse().unwrap()),
        name: String::new(),
        provider: "沙盒".into(),
        scopes: vec!["sandbox.noname".into()],
        endpoint: "http://127.0.0.1:1/dp".into(),
        method: DpMethod::Get,
        identity_methods: vec!["PII".into()],
        secret: None,
        claims: Vec::new(),
        template: None,
    })
    .unwrap();
    ids.push("API.NONAME0001".into());
    let creds = w.register(PackagingMode::B, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-names", CITIZEN)).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    let table = text_by_id(&p.body, "datasets").expect("the dataset table");
    for id in &ids[..2] {
        let dp = w.p.store.get_dp(id).unwrap().unwrap();
        assert!(!dp.name.is_empty());
        assert!(table.contains(&dp.name), "{} missing: {table}", dp.name);
        assert!(!table.contains(id.as_str()), "{id} shown: {table}");
        // Tools still find the row by its id.
        assert!(p.body.contains(&format!("data-resource=\"{id}\"")));
    }
    // Without a name, the code is all there is to show.
    assert!(table.contains("API.NONAME0001"), "{table}");
    assert_eq!(text_of(&p.body).matches("API.").count(), 1, "{table}");
}

// ---------------------------------------------------------------------------------------------
// Contrast in headless Chromium

/// An sRGB colour with alpha, channels 0–1.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rgba([f64; 4]);

/// Parses a computed colour: `rgb(r, g, b)` or `rgba(r, g, b, a)`.
fn parse_color(s: &str) -> Option<Rgba> {
    let inner = s
        .strip_prefix("rgba(")
        .or_else(|| s.strip_prefix("rgb("))?
        .strip_suffix(')')?;
    let v: Vec<f64> = inner
        .split([',', ' ', '/'])
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        [r, g, b] => Some(Rgba([r / 255.0, g / 255.0, b / 255.0, 1.0])),
        [r, g, b, a] => Some(Rgba([r / 255.0, g / 255.0, b / 255.0, a])),
        _ => None,
    }
}

/// `top` painted over the opaque `bottom`.
fn over(top: Rgba, bottom: [f64; 3]) -> [f64; 3] {
    let a = top.0[3];
    [0, 1, 2].map(|i| top.0[i] * a + bottom[i] * (1.0 - a))
}

fn mix(behind: [f64; 3], front: [f64; 3], opacity: f64) -> [f64; 3] {
    [0, 1, 2].map(|i| front[i] * opacity + behind[i] * (1.0 - opacity))
}

/// WCAG 2 relative luminance.
fn luminance(c: [f64; 3]) -> f64 {
    let lin = |v: f64| {
        if v <= 0.03928 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
}

/// WCAG 2 contrast ratio, 1–21.
fn contrast(a: [f64; 3], b: [f64; 3]) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// Large text (WCAG 2): at least 18 pt (24 px), or 14 pt (18.67 px) and bold.
fn large(font_size_px: f64, weight: f64) -> bool {
    font_size_px >= 24.0 || (font_size_px >= 18.66 && weight >= 700.0)
}

/// The text and background colours of one element as painted on a white canvas: its colour over
/// the composited backgrounds of its ancestors, and both faded by the opacity of any ancestor.
fn painted(e: &Value) -> Result<([f64; 3], [f64; 3]), String> {
    let layers = e["layers"].as_array().ok_or("no layers")?;
    let mut bgs = Vec::new();
    for l in layers.iter().rev() {
        if l["image"].as_str() != Some("none") {
            return Err(format!(
                "a background image ({}) cannot be judged",
                l["image"]
            ));
        }
        let bg = l["background"]
            .as_str()
            .and_then(parse_color)
            .ok_or("colour")?;
        let opacity: f64 = l["opacity"]
            .as_str()
            .unwrap_or("1")
            .parse()
            .map_err(|_| "opacity")?;
        bgs.push((bg, opacity));
    }
    // From <html> down to the element.
    let mut bg = [1.0; 3];
    let mut behind = None;
    let mut opacity = 1.0;
    for (layer, o) in &bgs {
        if *o < 1.0 && behind.is_none() {
            behind = Some(bg);
        }
        opacity *= o;
        bg = over(*layer, bg);
    }
    let fg = over(
        e["color"].as_str().and_then(parse_color).ok_or("colour")?,
        bg,
    );
    Ok(match behind {
        Some(behind) => (mix(behind, fg, opacity), mix(behind, bg, opacity)),
        None => (fg, bg),
    })
}

#[test]
fn contrast_follows_wcag() {
    let white = [1.0; 3];
    let black = [0.0; 3];
    assert!((contrast(white, black) - 21.0).abs() < 1e-9);
    assert!((contrast(white, white) - 1.0).abs() < 1e-9);
    let c = |s: &str| over(parse_color(s).unwrap(), white);
    // #777 on white is just under 4.5:1; #767676 just over.
    assert!(contrast(c("rgb(119, 119, 119)"), white) < 4.5);
    assert!(contrast(c("rgb(118, 118, 118)"), white) > 4.5);
    // The English half of a primary button before issue 14: #555 on #0b5394, about 1.05:1.
    let r = contrast(c("rgb(85, 85, 85)"), c("rgb(11, 83, 148)"));
    assert!((r - 1.05).abs() < 0.02, "{r}");
    // Half-transparent black on white is grey: 0.5 of the way.
    assert_eq!(c("rgba(0, 0, 0, 0.5)"), [0.5; 3]);
    assert!(parse_color("color(srgb 1 0 0)").is_none());
    assert!(large(24.0, 400.0) && large(18.67, 700.0) && !large(18.67, 400.0));
    // An element at half opacity: both colours fade toward what is behind.
    let e = serde_json::json!({
        "color": "rgb(255, 255, 255)",
        "layers": [
            {"background": "rgb(0, 0, 0)", "image": "none", "opacity": "0.5"},
            {"background": "rgb(255, 255, 255)", "image": "none", "opacity": "1"},
        ]
    });
    let (fg, bg) = painted(&e).unwrap();
    assert_eq!(fg, [1.0; 3]);
    assert_eq!(bg, [0.5; 3]);
}

/// Every visible text and control on every page of the flow, as headless Chromium paints it
/// (JavaScript disabled for the pages): the terms, the basic-information form, its errors, the
/// identity page with both methods, a code sent, its error, the lock, the consent page (with a
/// dataset unavailable) and a message page. Each reaches WCAG 2 AA contrast: 4.5:1, 3:1 for
/// large text. Chromium also shows that the errored input has the focus.
#[actix_web::test]
async fn every_page_has_aa_contrast_in_headless_chromium() {
    let w = world().await;
    // The identity page with both methods: a dataset that two documents and OTP unlock.
    w.p.register_dp(NewDp {
        tls_ca: None,
        resource_id: Some("API.PAGESOTP01".parse().unwrap()),
        name: "頁面測試資料".into(),
        provider: "沙盒".into(),
        scopes: vec!["sandbox.pages".into()],
        endpoint: "http://127.0.0.1:1/dp".into(),
        method: DpMethod::Get,
        identity_methods: vec!["PII".into(), "OTP".into()],
        secret: None,
        claims: Vec::new(),
        template: None,
    })
    .unwrap();
    let both = vec!["API.PAGESOTP01".to_string()];
    let sp_both = w.register(PackagingMode::A, &both);
    // The consent page with a dataset unavailable (mode B).
    let ids = pii_datasets(2);
    let sp_b = w.register(PackagingMode::B, &ids);
    let mut stopped = w.p.store.get_dp(&ids[1]).unwrap().unwrap();
    stopped.status = "stopped".into();
    w.p.store.update_dp(&stopped).unwrap();

    let wrong_docs = serde_json::json!({"type": {
        "nhi_card_number": "000018342762", "household_number": "A2034517"}});
    let mut actions = vec![
        // Never authenticated in this browser: the identity page is shown.
        serde_json::json!({"get": w.redirect(&sp_both, &both, "tx-css-otp", CITIZEN)}),
        serde_json::json!({"click": "accept-terms"}),
        serde_json::json!({"type": {"national_id": CITIZEN, "birth_date": "0770101"}}),
        serde_json::json!({"click": "submit-basic"}),
        serde_json::json!({"collect": "identity-both"}),
        serde_json::json!({"click": "send-email"}),
        serde_json::json!({"collect": "code-sent"}),
        serde_json::json!({"type": {"code": "12345"}}),
        serde_json::json!({"click": "submit-otp"}),
        serde_json::json!({"collect": "code-error"}),
    ];
    for _ in 0..5 {
        actions.push(wrong_docs.clone());
        actions.push(serde_json::json!({"click": "submit-pii"}));
    }
    actions.extend([
        serde_json::json!({"collect": "locked"}),
        serde_json::json!({"get": w.redirect(&sp_b, &ids, "tx-css-b", CITIZEN)}),
        serde_json::json!({"collect": "terms"}),
        serde_json::json!({"click": "accept-terms"}),
        serde_json::json!({"collect": "basic"}),
        serde_json::json!({"type": {"national_id": "A123456788", "birth_date": "0771301"}}),
        serde_json::json!({"click": "submit-basic"}),
        serde_json::json!({"collect": "basic-malformed"}),
        serde_json::json!({"type": {"national_id": CITIZEN, "birth_date": "0770102"}}),
        serde_json::json!({"click": "submit-basic"}),
        serde_json::json!({"collect": "basic-wrong"}),
        serde_json::json!({"type": {"national_id": CITIZEN, "birth_date": "0770101"}}),
        serde_json::json!({"click": "submit-basic"}),
        serde_json::json!({"collect": "identity"}),
        wrong_docs.clone(),
        serde_json::json!({"click": "submit-pii"}),
        serde_json::json!({"collect": "identity-wrong"}),
        serde_json::json!({"type": {
            "nhi_card_number": "000018342761", "household_number": "A2034517"}}),
        serde_json::json!({"click": "submit-pii"}),
        serde_json::json!({"collect": "consent"}),
        serde_json::json!({"get": format!("{}/flow/no-such-flow", w.srv.url)}),
        serde_json::json!({"collect": "message"}),
    ]);
    let args = serde_json::json!({ "actions": actions });
    let r: Value = common::run_interop("page_styles.py", args).await;
    let pages = r["pages"].as_array().unwrap();
    let page = |label: &str| -> &Value {
        pages
            .iter()
            .find(|p| p["label"] == label)
            .unwrap_or_else(|| panic!("no page {label}"))
    };
    let has = |label: &str, path_part: &str| {
        page(label)["elements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap_or("").contains(path_part))
    };
    // The scenario reached every state it means to judge.
    for (label, step) in [
        ("identity-both", "identity"),
        ("code-sent", "identity"),
        ("code-error", "identity"),
        ("locked", "identity"),
        ("terms", "terms"),
        ("basic", "basic"),
        ("basic-malformed", "basic"),
        ("basic-wrong", "basic"),
        ("identity", "identity"),
        ("identity-wrong", "identity"),
        ("consent", "consent"),
    ] {
        assert_eq!(page(label)["step"], step, "{label}: {}", page(label)["url"]);
    }
    // Contrast of every element.
    let mut judged = 0;
    let mut failures = Vec::new();
    for p in pages {
        for e in p["elements"].as_array().unwrap() {
            let (fg, bg) = match painted(e) {
                Ok(c) => c,
                Err(why) => {
                    failures.push(format!("{} {}: {why}", p["label"], e["path"]));
                    continue;
                }
            };
            let size: f64 = e["font_size"]
                .as_str()
                .and_then(|s| s.strip_suffix("px"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0);
            let weight: f64 = e["font_weight"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(400.0);
            let need = if large(size, weight) { 3.0 } else { 4.5 };
            let ratio = contrast(fg, bg);
            judged += 1;
            if ratio < need {
                failures.push(format!(
                    "{}: {} {:?} (color {}, {size}px, weight {weight}): {ratio:.2}:1 < {need}:1",
                    p["label"], e["path"], e["text"], e["color"]
                ));
            }
        }
    }
    assert!(judged > 100, "only {judged} elements judged");
    assert!(
        failures.is_empty(),
        "contrast below WCAG AA:\n{}",
        failures.join("\n")
    );

    // The pages showed what they were meant to.
    assert!(
        has("identity-both", "button#send-email") && has("identity-both", "input#nhi_card_number")
    );
    assert!(has("code-sent", "p#notice") && has("code-error", "p#code-error"));
    assert!(has("locked", "p#locked") && has("locked", "button#submit-pii"));
    assert!(
        has("basic-malformed", "p#national_id-error")
            && has("basic-malformed", "p#birth_date-error")
    );
    assert!(has("identity-wrong", "p#nhi_card_number-error"));
    assert!(has("consent", "tr.unavailable") && has("consent", "button#agree"));
    assert!(
        page("message")["elements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "h1#message")
    );

    // The errored input has the focus, and its description is the error.
    for (label, focused, says) in [
        ("basic-malformed", "national_id", "national ID number"),
        ("basic-wrong", "birth_date", "does not match"),
        ("code-error", "code", "6 digits"),
        ("identity-wrong", "nhi_card_number", "does not match"),
    ] {
        let p = page(label);
        assert_eq!(p["focused"], focused, "{label}");
        let described = p["described"].as_array().expect("aria-describedby");
        assert!(
            described
                .iter()
                .any(|d| d.as_str().unwrap_or("").contains(says)),
            "{label}: {described:?}"
        );
    }
    // Nothing is focused by force without an error, nor on the locked page.
    for label in ["basic", "identity", "locked"] {
        assert!(
            page(label)["focused"].is_null(),
            "{label}: {}",
            page(label)["focused"]
        );
    }
}
