//! Operations (issue 14 items 1 and 2, spec `operations.md`) on the real `mydata serve
//! --sandbox` binary over HTTP on 127.0.0.1: the JSON log of whole flows carries one event per
//! step with the transaction's id and `client_id`, and nothing of the citizen or of a secret;
//! `/metrics` parses with the Python reference client's parser and its counters move with a
//! flow; `/readyz` turns 503 when the database file is gone; `admin_listen` moves the operator's
//! endpoints to their own address.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_protocol::resources::ResourceList;
use mydata_sp::redirect::RedirectRequest;
use serde_json::Value;

mod common;

use common::*;

/// The JSON lines of the server's log; every line must be one JSON object. A last line without
/// its newline is still being written (the log has its own writer thread) and is left out.
fn json_log(p: &Platform) -> Vec<Value> {
    let text = p.log();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The transaction events (target `mydata::tx`) named `event`.
fn events<'a>(log: &'a [Value], event: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|v| v["target"] == "mydata::tx" && v["fields"]["event"] == event)
        .collect()
}

/// Waits until the log holds a transaction event `event` of transaction `tx`.
fn wait_event(p: &Platform, event: &str, tx: &str) {
    let start = Instant::now();
    loop {
        let log = json_log(p);
        if events(&log, event).iter().any(|v| v["fields"]["tx"] == tx) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {event} event of {tx}: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `/metrics` shows no write queued and not yet committed
/// (`mydata_write_behind_pending 0`).
fn wait_committed(p: &Platform) {
    let start = Instant::now();
    loop {
        let r = http("GET", &format!("{}/metrics", p.url), None, None);
        if r.status == 200 && r.body.lines().any(|l| l == "mydata_write_behind_pending 0") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "writes still queued after 60 s: {} {}",
            r.status,
            r.body
                .lines()
                .filter(|l| l.starts_with("mydata_write_behind"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `mydata sp fetch --delivery FILE` with the SP's credentials: it must succeed.
fn fetch(p: &Platform, creds: &Value, body: &str, dir: &std::path::Path, name: &str) {
    let delivery = dir.join(format!("{name}.json"));
    std::fs::write(&delivery, body).unwrap();
    let args = [
        vec!["sp".to_string(), "fetch".into(), "--delivery".into()],
        vec![delivery.display().to_string()],
        vec![
            "--out".into(),
            dir.join(name).display().to_string(),
            "--json".into(),
        ],
        cred_args(p, creds, "cbc", "A"),
    ]
    .concat();
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new redirect of the SP for the sandbox citizen and `rid`.
fn redirect(p: &Platform, creds: &Value, sp_port: u16, rid: &str) -> mydata_sp::redirect::Redirect {
    let cfg = sp_config(p, creds, sp_port, JweMode::Cbc);
    let list = ResourceList::new(vec![rid.parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap()
}

/// The internal id of the transaction whose redirect was accepted `n`-th (0 first) for this SP.
fn accepted_tx(p: &Platform, client_id: &str, n: usize) -> String {
    let log = json_log(p);
    let ids: Vec<String> = events(&log, "redirect_accepted")
        .iter()
        .filter(|v| v["fields"]["client_id"] == client_id)
        .map(|v| v["fields"]["tx"].as_str().unwrap().to_string())
        .collect();
    ids.get(n)
        .unwrap_or_else(|| panic!("no accepted redirect #{n}: {}", p.log()))
        .clone()
}

#[test]
fn json_log_of_whole_flows_has_every_step_and_no_personal_data() {
    let ids = pii_instant_datasets();
    let rid = ids[0].as_str();
    let mut p = start_platform_with(
        None,
        &[
            ("MYDATA_LOG_FORMAT", "json"),
            ("MYDATA_SANDBOX_CLOCK", "1"),
            ("RUST_LOG", "info"),
        ],
    );
    let (sp_port, seen) = sp_stub();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let creds = register(&p, sp_port, rid, "a", "cbc");
    let client_id = creds["client_id"].as_str().unwrap().to_string();

    // A: consented, fetched and taken by the SP (polls until ready), then refused on reuse.
    let ra = redirect(&p, &creds, sp_port, rid);
    let back = Browser::new(&p.url).consent(&ra.url);
    assert!(back.contains("code=200"), "{back}");
    let body_a = wait_for_body(&seen, 0);
    let tx_a = accepted_tx(&p, &client_id, 0);
    fetch(&p, &creds, &body_a, w, "a");
    wait_event(&p, "taken", &tx_a);
    let again = Browser::new(&p.url).send("GET", &ra.url, None);
    assert_eq!(again.status, 302, "{again:?}");

    // B: consented; its package is ready in memory when the process is killed; the restart
    // resumes it and the SP takes it afterwards.
    let rb = redirect(&p, &creds, sp_port, rid);
    let back = Browser::new(&p.url).consent(&rb.url);
    assert!(back.contains("code=200"), "{back}");
    let body_b = wait_for_body(&seen, 1);
    let tx_b = accepted_tx(&p, &client_id, 1);
    wait_event(&p, "packaged", &tx_b);
    // `ready` is queued before that event is logged: once the write-behind queue is empty it
    // is committed, however long the commit took.
    wait_committed(&p);
    p.kill9_and_restart();
    wait_event(&p, "resumed", &tx_b);
    wait_event(&p, "packaged", &tx_b);
    fetch(&p, &creds, &body_b, w, "b");
    wait_event(&p, "taken", &tx_b);

    // D: another SP whose SP-API answers 500.
    let (bad_port, _bad_seen) = sp_stub_answering(500);
    let creds_d = register(&p, bad_port, rid, "a", "cbc");
    let client_d = creds_d["client_id"].as_str().unwrap().to_string();
    let rd = redirect(&p, &creds_d, bad_port, rid);
    let back = Browser::new(&p.url).consent(&rd.url);
    assert!(back.contains("code=410"), "{back}");
    let tx_d = accepted_tx(&p, &client_d, 0);

    // C: the citizen refuses consent.
    let rc = redirect(&p, &creds, sp_port, rid);
    let back = Browser::new(&p.url).decide(&rc.url, "refuse");
    assert!(!back.contains("code=200"), "{back}");
    let tx_c = accepted_tx(&p, &client_id, 2);

    // Nine hours later the purge deletes all three.
    let purged = post_json(&p.url, "/sandbox/clock", r#"{"advance_secs": 32400}"#);
    assert!(purged["purged"].as_u64().unwrap() >= 3, "{purged}");

    let status = p.terminate();
    assert!(status.success(), "{status:?}");
    let log = json_log(&p);

    // Every step's event, with the transaction's id and client_id.
    let has = |event: &str, tx: &str| {
        let found = events(&log, event)
            .into_iter()
            .find(|v| v["fields"]["tx"] == tx)
            .unwrap_or_else(|| panic!("no {event} event of {tx}"));
        let of = if tx == tx_d { &client_d } else { &client_id };
        assert_eq!(
            found["fields"]["client_id"],
            of.as_str(),
            "{event} without its client_id: {found}"
        );
        found
    };
    for tx in [&tx_a, &tx_b] {
        has("redirect_accepted", tx);
        assert_eq!(has("identity", tx)["fields"]["result"], "verified");
        has("consent", tx);
        assert_eq!(has("sp_api", tx)["fields"]["acknowledged"], true);
        let dp = has("dp_call", tx);
        assert_eq!(dp["fields"]["dataset"], rid);
        assert_eq!(dp["fields"]["code"], 200);
        assert_eq!(has("packaged", tx)["fields"]["code"], 200);
        let polls: Vec<_> = events(&log, "poll")
            .into_iter()
            .filter(|v| v["fields"]["tx"] == tx.as_str())
            .collect();
        assert!(
            polls.iter().any(|v| v["fields"]["status"] == 200),
            "no poll answered 200 for {tx}"
        );
        has("taken", tx);
        has("purged", tx);
    }
    has("resumed", &tx_b);
    has("redirect_accepted", &tx_c);
    assert_eq!(
        has("consent", &tx_c)["fields"]["agreed"],
        false,
        "the refusal is a consent event"
    );
    assert_eq!(has("ended", &tx_c)["fields"]["code"], 205);
    assert!(
        events(&log, "redirect_refused")
            .iter()
            .any(|v| v["fields"]["client_id"] == client_id.as_str()),
        "the reused redirect is refused"
    );
    assert!(!events(&log, "purge").is_empty());
    // D: the SP-API answers 500: the transaction ends with 410, and the warning of the `log`
    // macros reaches the subscriber (the bridge).
    assert_eq!(has("sp_api", &tx_d)["fields"]["acknowledged"], false);
    assert_eq!(has("ended", &tx_d)["fields"]["code"], 410);
    assert!(
        log.iter()
            .any(|v| v["target"] == "mydata_server::engine::sp_api"
                && v["level"] == "WARN"
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&client_d) && m.contains("410"))),
        "no warning of the failed SP-API call through the log bridge"
    );
    // Start (twice: before and after the kill) and shutdown lines.
    let serve = |event: &str| {
        log.iter()
            .filter(|v| v["target"] == "mydata::serve" && v["fields"]["event"] == event)
            .count()
    };
    assert_eq!(serve("start"), 2);
    assert_eq!(serve("shutdown"), 1);
    // An access line per request: method, path without its query, status, duration.
    let access: Vec<&Value> = log
        .iter()
        .filter(|v| v["target"] == "mydata::access")
        .collect();
    assert!(
        access.iter().any(|v| v["fields"]["path"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("/service/{client_id}/")))
            && v["fields"]["status"] == 303),
        "the redirect's access line"
    );
    for a in &access {
        let f = &a["fields"];
        assert!(f["method"].is_string() && f["status"].is_u64(), "{a}");
        assert!(f["duration_ms"].is_number(), "{a}");
        assert!(!f["path"].as_str().unwrap().contains('?'), "a query: {a}");
    }

    // Nothing of the citizen, no ticket, key, token or credential anywhere in the log.
    let text = p.log();
    let cipher = ParamCipher::from_raw(
        creds["client_secret"].as_str().unwrap(),
        creds["cbc_iv"].as_str().unwrap(),
        ParamMode::Cbc,
    )
    .unwrap();
    let mut forbidden: Vec<String> = vec![
        CITIZEN.into(),
        CITIZEN.to_ascii_lowercase(),
        "王大明".into(),
        "WANG, DA-MING".into(),
        "0770101".into(),
        "1988-01-01".into(),
        "000018342761".into(),
        "A2034517".into(),
        "wang.daming@example.test".into(),
        "0912000001".into(),
        creds["client_secret"].as_str().unwrap().into(),
        creds["api_key"].as_str().unwrap().into(),
        creds_d["client_secret"].as_str().unwrap().into(),
        creds_d["api_key"].as_str().unwrap().into(),
        "Bearer".into(),
        "access_token".into(),
    ];
    for body in [&body_a, &body_b] {
        let sent: Value = serde_json::from_str(body).unwrap();
        let ticket = sent["permission_ticket"].as_str().unwrap();
        let key_sealed = sent["secret_key"].as_str().unwrap();
        forbidden.push(ticket.into());
        forbidden.push(key_sealed.into());
        forbidden.push(cipher.decrypt(key_sealed).unwrap());
    }
    for s in &forbidden {
        assert!(!text.contains(s.as_str()), "{s:?} is in the log");
    }
    // Access tokens are 43 characters of base64url (32 random bytes): no such run anywhere.
    let runs = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|t| t.len() >= 43)
        .collect::<Vec<_>>();
    assert!(runs.is_empty(), "token-like values in the log: {runs:?}");
}

/// POSTs a JSON body; it must be answered 200; the JSON answer.
fn post_json(base: &str, path: &str, json: &str) -> Value {
    use std::io::{Read, Write};
    let u = url::Url::parse(base).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", u.port().unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = out.split_once("\r\n\r\n").unwrap().1;
    let body = if out
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        String::from_utf8(dechunk(body.as_bytes())).unwrap()
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MYDATA_PYTHON") {
        return p.into();
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the metrics parser needs the Python venv: run `bash tests/run.sh` (it creates \
         target/interop-venv and installs tests/requirements.txt)"
    );
    venv
}

fn interop_dir() -> PathBuf {
    std::env::var("MYDATA_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop"))
}

/// `GET /metrics` parsed by `prometheus_client.parser`: (name, labels, value) of each sample.
fn scrape(url: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let r = http("GET", &format!("{url}/metrics"), None, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{r:?}"
    );
    let body = if r.header("transfer-encoding") == Some("chunked") {
        String::from_utf8(dechunk(r.body.as_bytes())).unwrap()
    } else {
        r.body
    };
    let mut child = Command::new(python())
        .arg(interop_dir().join("prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v.is_empty());
    v
}

/// The sum of the samples named `name` whose labels include `labels`.
fn sum(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_move_with_a_flow_and_readyz_follows_the_database() {
    let ids = pii_instant_datasets();
    let rid = ids[0].as_str();
    let p = start_platform_with(None, &[("MYDATA_SANDBOX_CLOCK", "1")]);
    let (sp_port, seen) = sp_stub();
    let work = tempfile::tempdir().unwrap();
    let creds = register(&p, sp_port, rid, "a", "cbc");

    assert_eq!(
        http("GET", &format!("{}/healthz", p.url), None, None).status,
        200
    );
    assert_eq!(
        http("GET", &format!("{}/readyz", p.url), None, None).status,
        200
    );
    let before = scrape(&p.url);
    assert_eq!(
        sum(
            &before,
            "mydata_transactions_final_total",
            &[("code", "201")]
        ),
        0.0
    );

    let r = redirect(&p, &creds, sp_port, rid);
    let back = Browser::new(&p.url).consent(&r.url);
    assert!(back.contains("code=200"), "{back}");
    let body = wait_for_body(&seen, 0);
    fetch(&p, &creds, &body, work.path(), "a");
    // Transactions by stored state (a gauge counted at scrape time): none before the flow, the
    // one taken now, none once the purge has deleted it.
    let stored = |s: &[(String, serde_json::Map<String, Value>, f64)], state: &str| {
        sum(s, "mydata_transactions_stored", &[("state", state)])
    };
    assert_eq!(stored(&before, "taken"), 0.0);
    assert!(
        before
            .iter()
            .any(|(n, l, _)| n == "mydata_transactions_stored"
                && l.get("state").and_then(Value::as_str) == Some("fetching")),
        "every state is listed, 0 included"
    );
    // The take is recorded once the package's last byte is served: a few scrapes may precede it.
    let mut taken = 0.0;
    for _ in 0..100 {
        let mid = scrape(&p.url);
        taken = stored(&mid, "taken");
        if taken == 1.0 {
            assert_eq!(sum(&mid, "mydata_transactions_stored", &[]), 1.0);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(taken, 1.0, "the taken transaction is counted");
    post_json(&p.url, "/sandbox/clock", r#"{"advance_secs": 32400}"#);

    let after = scrape(&p.url);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        let (b, a) = (sum(&before, name, labels), sum(&after, name, labels));
        assert!(a > b, "{name} {labels:?}: {b} -> {a}");
    };
    moved("mydata_transactions_started_total", &[]);
    moved("mydata_consents_total", &[]);
    moved("mydata_transactions_final_total", &[("code", "201")]);
    moved("mydata_packages_taken_total", &[]);
    moved(
        "mydata_dp_calls_total",
        &[("dataset", rid), ("code", "200")],
    );
    moved("mydata_mydata_api_answers_total", &[("status", "200")]);
    moved("mydata_purged_transactions_total", &[]);
    moved("mydata_http_requests_total", &[("method", "GET")]);
    moved("mydata_http_request_duration_seconds_count", &[]);
    assert_eq!(stored(&after, "taken"), 0.0, "purged");
    // The sandbox DP's endpoints are known to the heartbeat, none unreachable.
    assert_eq!(
        sum(&after, "mydata_dp_endpoints", &[("state", "unreachable")]),
        0.0
    );
    assert!(sum(&after, "mydata_dp_endpoints", &[("state", "reachable")]) > 0.0);
    // Requests are counted by route pattern, never by raw path.
    let routes: Vec<&str> = after
        .iter()
        .filter(|(n, _, _)| n == "mydata_http_requests_total")
        .filter_map(|(_, l, _)| l.get("route").and_then(Value::as_str))
        .collect();
    assert!(
        routes.iter().any(|r| r.starts_with("/service/{")),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("CLI.") && !r.contains('?')),
        "{routes:?}"
    );
    assert!(
        after
            .iter()
            .any(|(n, _, _)| n == "mydata_write_behind_pending"),
        "the write-behind queue depth"
    );
    assert!(
        sum(&after, "mydata_write_behind_commits_total", &[]) > 0.0,
        "write-behind commits"
    );

    // The database file gone: not ready (503), though the process still answers.
    for suffix in ["", "-wal", "-shm"] {
        let f = p.data_dir.join(format!("mydata.sqlite{suffix}"));
        if f.exists() {
            std::fs::remove_file(&f).unwrap();
        }
    }
    let r = http("GET", &format!("{}/readyz", p.url), None, None);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("not ready"), "{r:?}");
    assert!(
        !r.body.contains("mydata.sqlite"),
        "the reason is logged, not answered: {r:?}"
    );
    let log = p.log_with("readyz: not ready");
    assert!(
        log.contains("readyz: not ready") && log.contains("mydata.sqlite"),
        "{log}"
    );
    assert_eq!(
        http("GET", &format!("{}/healthz", p.url), None, None).status,
        200
    );
    // The default format is human-readable lines, not JSON.
    let text = p.log();
    assert!(text.contains("mydata serve started"), "{text}");
    assert!(text.contains("redirect accepted"), "{text}");
    assert!(!text.trim_start().starts_with('{'), "{text}");
}

#[test]
fn admin_listen_moves_the_operator_endpoints() {
    let admin = free_port();
    let addr = format!("127.0.0.1:{admin}");
    // RUST_LOG filters (EnvFilter syntax): access lines only.
    let p = start_platform_with(
        None,
        &[
            ("MYDATA_ADMIN_LISTEN", addr.as_str()),
            ("RUST_LOG", "off,mydata::access=info"),
        ],
    );
    let admin_url = format!("http://{addr}");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http("GET", &format!("{admin_url}{path}"), None, None).status,
            200,
            "{path} on the admin address"
        );
        assert_eq!(
            http("GET", &format!("{}{path}", p.url), None, None).status,
            404,
            "{path} not on the main listener"
        );
    }
    // The platform's own routes stay on the main listener only.
    let meta = "/.well-known/oauth-authorization-server";
    assert_eq!(
        http("GET", &format!("{}{meta}", p.url), None, None).status,
        200
    );
    assert_eq!(
        http("GET", &format!("{admin_url}{meta}"), None, None).status,
        404
    );
    let log = p.log_with("GET /metrics 404");
    assert!(log.contains("GET /metrics 404"), "{log}");
    assert!(!log.contains("mydata serve started"), "{log}");
}

#[test]
fn metrics_false_counts_nothing_and_serves_no_metrics() {
    let p = start_platform_with(None, &[("MYDATA_METRICS", "0")]);
    assert_eq!(
        http("GET", &format!("{}/metrics", p.url), None, None).status,
        404
    );
    // Health stays.
    assert_eq!(
        http("GET", &format!("{}/readyz", p.url), None, None).status,
        200
    );
}
