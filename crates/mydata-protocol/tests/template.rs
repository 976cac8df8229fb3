//! DP request templates (spec §9.2, D28) through the public API: a template document as an
//! operator writes it, the call URL, and the round trip of hostile values through each encoding.

use std::collections::BTreeMap;

use mydata_protocol::date::CivilDate;
use mydata_protocol::template::{
    Body, BodyKind, Item, Location, Method, Placeholder, Template, TemplateError, Values, call_url,
    form_urlencode,
};
use serde_json::{Value, json};

const UID: &str = "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d01";

/// Values hostile to every location: separators, quotes, backslashes, CR/LF, non-ASCII.
const HOSTILE: &[&str] = &[
    "王大明",
    "A&B=C#D",
    "a+b c%20d",
    "\"},\"admin\":true,\"x\":\"",
    "back\\slash\\\"",
    "line\r\nX-Injected: 1",
    "nul\0byte",
    "{{pid}}",
    "?transaction_uid=00000000-0000-4000-8000-000000000000",
    "😀 emoji",
    "",
];

fn citizen(name: &str) -> Values {
    Values {
        transaction_uid: UID.into(),
        resource_id: "API.ABCDEFGHIJ".into(),
        pid: Some("a120345672".into()),
        pid_type: Some("NID".into()),
        birthdate: Some(CivilDate::new(1990, 2, 28).unwrap()),
        name: Some(name.into()),
        email: Some("wang+tag@example.tw".into()),
        params: BTreeMap::from([("year".to_string(), "113".to_string())]),
    }
}

/// Decodes `application/x-www-form-urlencoded` (test oracle, written independently of the
/// encoder: `+` is space, `%XX` a byte).
fn decode(s: &str) -> Vec<(String, String)> {
    fn one(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                c => {
                    assert!(
                        c.is_ascii_alphanumeric() || b"*-._".contains(&c),
                        "unencoded byte {c:#x} in {s:?}"
                    );
                    out.push(c)
                }
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    if s.is_empty() {
        return Vec::new();
    }
    s.split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (one(k), one(v))
        })
        .collect()
}

#[test]
fn operator_document_renders_a_get_call() {
    let t = Template::from_json(
        r#"{"items": [
            {"location": "query",  "name": "id",       "value": "{{pid}}"},
            {"location": "query",  "name": "birth",    "value": "{{birthdate:roc7}}"},
            {"location": "query",  "name": "who",      "value": "{{name}} <{{email}}>"},
            {"location": "header", "name": "X-Id-Type","value": "{{pid_type}}"},
            {"location": "header", "name": "X-Dataset","value": "{{resource_id}}/{{transaction_uid}}"}
        ]}"#,
    )
    .unwrap();
    assert_eq!(t.body_kind(), None);
    t.check_method(Method::Get).unwrap();
    let r = t
        .render(Method::Get, &citizen("陳 \"小明\" & Co."))
        .unwrap();
    let url = call_url("https://dp.example.tw/api/v1?src=mydata", UID, Some(&r));
    assert_eq!(
        url,
        format!(
            "https://dp.example.tw/api/v1?src=mydata&transaction_uid={UID}\
             &id=A120345672&birth=0790228\
             &who=%E9%99%B3+%22%E5%B0%8F%E6%98%8E%22+%26+Co.+%3Cwang%2Btag%40example.tw%3E"
        )
    );
    assert_eq!(
        r.headers,
        vec![
            ("X-Id-Type".to_string(), "NID".to_string()),
            ("X-Dataset".to_string(), format!("API.ABCDEFGHIJ/{UID}")),
        ]
    );
    // transaction_uid is the platform's, first, once.
    let query = url.split_once('?').unwrap().1;
    let pairs = decode(query);
    assert_eq!(
        pairs.iter().filter(|(k, _)| k == "transaction_uid").count(),
        1
    );
    assert_eq!(pairs[1], ("transaction_uid".to_string(), UID.to_string()));
}

#[test]
fn hostile_values_round_trip_through_query_and_form() {
    let t = Template::new(vec![
        Item::new(Location::Form, "n", "{{name}}"),
        Item::new(Location::Form, "y", "{{param:year}}"),
    ])
    .unwrap();
    let q = Template::new(vec![Item::new(Location::Query, "n", "[{{name}}]")]).unwrap();
    for &h in HOSTILE {
        let r = t.render(Method::Post, &citizen(h)).unwrap();
        let Some(Body::Form(body)) = &r.body else {
            panic!("form body expected")
        };
        assert_eq!(
            decode(body),
            vec![
                ("n".to_string(), h.to_string()),
                ("y".to_string(), "113".to_string())
            ],
            "{h:?}"
        );
        let r = q.render(Method::Get, &citizen(h)).unwrap();
        let url = call_url("http://127.0.0.1:9/dp", UID, Some(&r));
        assert!(!url.contains('#') && !url.contains(' ') && !url.contains('\n'));
        let pairs = decode(url.split_once('?').unwrap().1);
        assert_eq!(pairs.len(), 2, "{h:?} adds no query pair");
        assert_eq!(pairs[1].1, format!("[{h}]"));
    }
}

#[test]
fn hostile_values_stay_json_strings() {
    let t = Template::from_json(
        r#"{"items": [
            {"location": "json", "name": "/citizen/name", "value": "{{name}}"},
            {"location": "json", "name": "/citizen/id",   "value": "{{pid}}"}
        ], "skeleton": {"apiVersion": 3, "citizen": {"role": "owner"}, "flags": [true]}}"#,
    )
    .unwrap();
    assert!(matches!(
        t.check_method(Method::Get),
        Err(TemplateError::BodyNeedsPost {
            location: Location::Json
        })
    ));
    for &h in HOSTILE {
        let r = t.render(Method::Post, &citizen(h)).unwrap();
        let body = r.body.unwrap();
        assert_eq!(body.kind(), BodyKind::Json);
        let v: Value = serde_json::from_str(body.as_str()).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": 3, "citizen": {"role": "owner", "name": h, "id": "A120345672"},
                   "flags": [true]}),
            "{h:?}"
        );
    }
}

#[test]
fn header_values_with_line_breaks_are_never_sent() {
    let t = Template::new(vec![Item::new(Location::Header, "X-Name", "{{name}}")]).unwrap();
    for &h in HOSTILE {
        let r = t.render(Method::Get, &citizen(h));
        let has_ctl = h.chars().any(|c| c.is_control() && c != '\t');
        match r {
            Ok(r) => {
                assert!(!has_ctl, "{h:?} was rendered into a header");
                assert_eq!(r.headers[0].1, h);
            }
            Err(e) => {
                assert!(has_ctl, "{h:?}: {e}");
                assert_eq!(
                    e,
                    TemplateError::HeaderValue {
                        name: "X-Name".into()
                    }
                );
            }
        }
    }
}

#[test]
fn registration_refusals_name_the_item() {
    let e = Template::from_json(
        r#"[{"location":"query","name":"a","value":"ok"},
            {"location":"query","name":"b","value":"{{citizen_id}}"}]"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "template item 1: {{citizen_id}}: unknown placeholder"
    );
    let e = Template::from_json(r#"[{"location":"header","name":"X-A","value":"{{ {{pid}}"}]"#)
        .unwrap_err();
    assert!(e.to_string().contains("literal '{{'"), "{e}");
    let e =
        Template::from_json(r#"[{"location":"header","name":"Authorization","value":"Basic x"}]"#)
            .unwrap_err();
    assert_eq!(
        e.to_string(),
        "template item 0: Authorization is set by the platform"
    );
    // The placeholders a template uses, for the consent page and the operator.
    let t = Template::from_json(
        r#"[{"location":"query","name":"p","value":"{{param:plate}}-{{param:year}}-{{param:plate}}"}]"#,
    )
    .unwrap();
    assert_eq!(
        t.param_keys().into_iter().collect::<Vec<_>>(),
        ["plate", "year"]
    );
    assert_eq!(
        t.placeholders()
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["param:plate", "param:year"]
    );
    assert_eq!(
        Placeholder::parse("birthdate:gregorian_slash")
            .unwrap()
            .to_string(),
        "birthdate:gregorian_slash"
    );
    assert_eq!(form_urlencode("王"), "%E7%8E%8B");
}

/// Every combination of a few hostile fragments as names and values, in every location: the
/// checks never panic, and what passes renders without a control character in any header, with
/// a JSON body that parses and a query string that decodes to the same number of pairs.
#[test]
fn no_panic_on_hostile_templates() {
    const PARTS: &[&str] = &[
        "",
        "{{",
        "}}",
        "{",
        "pid",
        "param:",
        "birthdate:",
        "iso",
        "name",
        "/",
        "~",
        "~1",
        "\r\n",
        "\0",
        "王",
        "&=#",
        "\"",
        "\\",
        " ",
    ];
    let mut checked = 0;
    let mut accepted = 0;
    for a in PARTS {
        for b in PARTS {
            for c in PARTS {
                let text = format!("{a}{b}{c}");
                for loc in [
                    Location::Query,
                    Location::Header,
                    Location::Form,
                    Location::Json,
                ] {
                    for (name, value) in [
                        (text.clone(), "{{name}}".to_string()),
                        (
                            match loc {
                                Location::Json => "/v".to_string(),
                                _ => "v".to_string(),
                            },
                            text.clone(),
                        ),
                    ] {
                        checked += 1;
                        let Ok(t) = Template::new(vec![Item::new(loc, name, value)]) else {
                            continue;
                        };
                        accepted += 1;
                        for &h in HOSTILE {
                            let Ok(r) = t.render(Method::Post, &citizen(h)) else {
                                assert_eq!(loc, Location::Header);
                                continue;
                            };
                            for (_, v) in &r.headers {
                                assert!(!v.chars().any(|c| c.is_control() && c != '\t'));
                            }
                            match &r.body {
                                Some(Body::Json(j)) => {
                                    serde_json::from_str::<Value>(j).unwrap();
                                }
                                Some(Body::Form(f)) => assert_eq!(decode(f).len(), 1),
                                None => {}
                            }
                            assert_eq!(decode(&r.query_string()).len(), r.query.len());
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 50_000 && accepted > 1_000, "{checked} {accepted}");
}
