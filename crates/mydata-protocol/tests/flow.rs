//! The flow rules against the worked examples of protocol.md §16, and arbitrary input.

use std::net::IpAddr;

use mydata_protocol::codes::{IdentityMethod, ReturnCode};
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{
    self, ApplicationMode, Availability, DataAnswer, Lifecycle, RedirectRequest, Rejection,
    ServiceStatus, ServiceView, SpApiBody, SpApiDelivery, TicketFacts, TxSlot,
};
use mydata_protocol::ids::PermissionTicket;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::{ParamCipher, ParamMode};

const NOW: UnixTime = UnixTime(1_767_225_600);

fn service(mode: ParamMode) -> ServiceView {
    ServiceView {
        return_url: "https://sp.example/mydata/return".into(),
        status: ServiceStatus::Active,
        maintenance: vec![],
        lifecycle: Lifecycle::Online,
        application_mode: ApplicationMode::Person,
        cipher: ParamCipher::from_raw("Kx7pQ2mN9vR4tL8w", "Hj3kM6nP9qS2uV5x", mode).unwrap(),
        datasets: vec![
            (
                "API.HOUSEHOLD1".parse().unwrap(),
                vec![IdentityMethod::CitizenCertificate, IdentityMethod::TwFido],
            ),
            (
                "API.LANDREC001".parse().unwrap(),
                vec![IdentityMethod::CitizenCertificate],
            ),
        ],
    }
}

/// Form decoding as an HTTP framework does it: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn worked_example_end_to_end() {
    // §16.1, split as the HTTP layer would.
    let url = "https://mydata.example/service/CLI.SANDBOX001/QVBJLkhPVVNFSE9MRDE6QVBJLkxBTkRSRUMwMDE=/3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e?returnUrl=https%3A%2F%2Fsp.example%2Fmydata%2Freturn%3Fstep%3D2&pid=5fRhnjLWuQPMiB1e9Rsy0Q%3D%3D";
    let (path, query) = url.split_once('?').unwrap();
    let segs: Vec<&str> = path.rsplitn(4, '/').collect();
    let (tx_id, resources, client_id) = (segs[0], segs[1], segs[2]);
    let params: Vec<(String, String)> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (form_decode(k), form_decode(v))
        })
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let req = RedirectRequest {
        client_id,
        resources,
        tx_id,
        return_url: get("returnUrl"),
        pid: get("pid"),
        case_number: get("caseNumber"),
        browser_ip: IpAddr::from([198, 51, 100, 7]),
    };
    let svc = service(ParamMode::Cbc);
    let accepted = flow::validate_redirect(&req, Some(&svc), NOW).unwrap();
    assert_eq!(accepted.pid.as_str(), "A123456789");
    assert_eq!(accepted.methods, [IdentityMethod::CitizenCertificate]);

    let admission = flow::admit(
        &accepted,
        None,
        PackagingMode::A,
        |_| Availability::Available,
        None,
        NOW,
    )
    .unwrap();
    assert_eq!(admission.slot, TxSlot::New);
    flow::check_authenticated(&accepted, &accepted.pid, IdentityMethod::CitizenCertificate)
        .unwrap();

    // §16.3: the SP-API body, byte for byte.
    let body = SpApiBody {
        tx_id: accepted.tx_id.clone(),
        api_key: None,
        permission_ticket: "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44".parse().unwrap(),
        delivery: SpApiDelivery::SecretKey(
            svc.cipher
                .encrypt("Zq8VtY3cR1mK6wN0pL4sH9dB2fJ7xG5a")
                .unwrap(),
        ),
    };
    assert_eq!(
        body.to_json(),
        r#"{"tx_id":"3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e","permission_ticket":"6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44","secret_key":"2qnf5bRDsCWdks4CUhiCdkhTKFcBcKU1DyFIdXYLRhAO3xA69wkNSapclltSlmcU"}"#
    );

    // §16.2: the return.
    assert_eq!(
        accepted
            .return_location(&svc.return_url, &svc.cipher, ReturnCode::Success)
            .unwrap(),
        "https://sp.example/mydata/return?code=200&tx_id=NuW8pQFamqiqoIStUPQJZpAOVicZfW1B6RYMWwW8dh9BpgGZgpZr706aZ7Fi9c1f&step=2"
    );

    // §16.4: polling.
    let ticket = flow::data_ticket(true, Some("6B1F0E52-2C1D-4F7A-9A57-0F3C1D2E8B44"))
        .unwrap()
        .unwrap();
    assert_eq!(ticket, body.permission_ticket);
    let mut facts = TicketFacts {
        service_allows_ip: true,
        tx_id: accepted.tx_id.clone(),
        created_at: NOW,
        consent_at: Some(UnixTime(NOW.0 + 60)),
        sp_api_acknowledged: true,
        unable_to_deliver: false,
        all_failed: false,
        taken: false,
        ready: false,
        retry_estimate: None,
    };
    let poll = |f: &TicketFacts, t: i64| {
        flow::data_answer(
            true,
            Some(ticket.as_str()),
            Some(accepted.tx_id.as_str()),
            Some(f),
            UnixTime(NOW.0 + t),
        )
    };
    assert_eq!(
        poll(&facts, 120),
        DataAnswer::NotReady429 { retry_after: 60 }
    );
    facts.ready = true;
    assert_eq!(poll(&facts, 180), DataAnswer::Ready200);
    facts.taken = true;
    assert_eq!(poll(&facts, 240), DataAnswer::AlreadyTaken201);
    assert_eq!(poll(&facts, 60 + 28_801), DataAnswer::Forbidden403);
}

#[test]
fn gcm_service_round_trip() {
    let svc = service(ParamMode::Gcm);
    let enc_pid = svc.cipher.encrypt("a123456789").unwrap();
    let req = RedirectRequest {
        client_id: "CLI.SANDBOX001",
        resources: "QVBJLkhPVVNFSE9MRDE6QVBJLkxBTkRSRUMwMDE",
        tx_id: "t-1",
        return_url: Some("https://sp.example/mydata/return"),
        pid: Some(&enc_pid.replace('+', " ")),
        case_number: None,
        browser_ip: IpAddr::from([198, 51, 100, 7]),
    };
    let a = flow::validate_redirect(&req, Some(&svc), NOW).unwrap();
    assert_eq!(a.pid.as_str(), "A123456789");
    let e = flow::admit(
        &a,
        None,
        PackagingMode::B,
        |_| Availability::Stopped,
        None,
        NOW,
    )
    .unwrap_err();
    let Rejection::Redirect {
        code,
        unable_to_deliver,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*code, ReturnCode::DpServiceStopped);
    assert_eq!(unable_to_deliver.len(), 2);
    let loc = e.location(&svc.return_url, &svc.cipher).unwrap().unwrap();
    let enc = loc
        .strip_prefix("https://sp.example/mydata/return?code=501&tx_id=")
        .unwrap();
    let enc = form_decode(enc);
    assert_eq!(svc.cipher.decrypt(&enc).unwrap(), "t-1");
    let body = SpApiBody {
        tx_id: a.tx_id.clone(),
        api_key: Some("k".repeat(32)),
        permission_ticket: PermissionTicket::generate().unwrap(),
        delivery: SpApiDelivery::UnableToDeliver(unable_to_deliver.clone()),
    };
    assert_eq!(
        SpApiBody::from_json(body.to_json().as_bytes()).unwrap(),
        body
    );
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "A",
            "1",
            "%",
            "%2",
            "%2F",
            "%3D",
            "=",
            "+",
            "/",
            " ",
            "?",
            "#",
            "&",
            ":",
            "-",
            ".",
            "API.",
            "CLI.",
            "王",
            "\u{0}",
            "QVBJ",
            "https://sp.example/mydata/return",
            "\"",
            "{",
            "}",
            "[",
            "]",
            ",",
            "tx_id",
            "secret_key",
            "unable_to_deliver",
            "null",
        ];
        let n = (self.next() % 24) as usize;
        (0..n)
            .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
            .collect()
    }
    fn opt(&mut self) -> Option<String> {
        (!self.next().is_multiple_of(4)).then(|| self.text())
    }
}

#[test]
fn arbitrary_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut svc = service(ParamMode::Cbc);
    for i in 0..20_000 {
        svc.application_mode = match i % 3 {
            0 => ApplicationMode::Person,
            1 => ApplicationMode::LegalPerson,
            _ => ApplicationMode::PersonOrLegalPerson,
        };
        svc.lifecycle = match i % 4 {
            0 => Lifecycle::Trial {
                case_number: rng.text(),
            },
            1 => Lifecycle::Test { ips: vec![] },
            _ => Lifecycle::Online,
        };
        let (c, r, t) = (rng.text(), rng.text(), rng.text());
        let (u, p, k) = (rng.opt(), rng.opt(), rng.opt());
        let req = RedirectRequest {
            client_id: if i % 2 == 0 { "CLI.SANDBOX001" } else { &c },
            resources: &r,
            tx_id: if i % 3 == 0 { "t-1" } else { &t },
            return_url: if i % 5 < 3 {
                Some("https://sp.example/mydata/return?x")
            } else {
                u.as_deref()
            },
            pid: p.as_deref(),
            case_number: k.as_deref(),
            browser_ip: IpAddr::from([0, 0, 0, 0]),
        };
        let now = UnixTime(rng.next() as i64);
        if let Err(e) = flow::validate_redirect(&req, Some(&svc), now) {
            let _ = e.location(&svc.return_url, &svc.cipher);
        }
        let _ = SpApiBody::from_json(rng.text().as_bytes());
        let h = rng.opt();
        let _ = flow::data_answer(true, h.as_deref(), Some(&t), None, now);
        let _ = flow::return_url(&c, ReturnCode::Success, Some(&r), u.as_deref());
    }
}
