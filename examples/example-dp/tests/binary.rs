//! Runs the example-dp binary against a small stand-in of the platform's introspection
//! endpoint on 127.0.0.1 (the end-to-end test against the real platform lives in
//! `crates/mydata-server`'s tests).

use std::io::{Cursor, Read};
use std::process::{Child, Command};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use mydata_protocol::date::UnixTime;
use mydata_protocol::package::dp::{self, VerifyOptions};

const TX: &str = "c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801";

/// Kills the child process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn introspect(form: web::Form<Vec<(String, String)>>) -> HttpResponse {
    let token = form
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    match token {
        Some("good") => HttpResponse::Ok().json(serde_json::json!({
            "active": true, "aud": "API.ARPPI3VTCB", "sub": "s1", "uid": "A120345672",
            "transaction_uid": TX, "exp": i64::MAX / 2,
        })),
        _ => HttpResponse::Ok().json(serde_json::json!({"active": false})),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_091)
}

async fn call(url: &str, token: &str) -> Option<(u16, Vec<u8>)> {
    let mut r = awc::Client::default()
        .get(url)
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .ok()?;
    let body = r.body().await.ok()?.to_vec();
    Some((r.status().as_u16(), body))
}

#[actix_web::test]
async fn serves_a_signed_transcript_in_slow_mode() {
    let srv =
        HttpServer::new(|| App::new().route("/connect/introspect", web::post().to(introspect)))
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
    let platform = format!("http://{}", srv.addrs()[0]);
    actix_web::rt::spawn(srv.run());

    let pki = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/pki");
    let port = free_port();
    let _dp = Running(
        Command::new(env!("CARGO_BIN_EXE_example-dp"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--platform",
                &platform,
            ])
            .args(["--resource-id", "API.ARPPI3VTCB", "--slow", "1"])
            .args([
                "--key",
                &format!("{pki}/dp-moi.key"),
                "--cert",
                &format!("{pki}/dp-moi.pem"),
            ])
            .env("MYDATA_RESOURCE_SECRET", "0123456789abcdef")
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/dp/household-transcript?transaction_uid={TX}");
    // Wait for the binary to listen.
    let start = std::time::Instant::now();
    let first = loop {
        if let Some(r) = call(&url, "bad").await {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "example-dp did not listen within 60 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.0, 401);
    // Slow mode: 429 first, then the package.
    let (status, _) = call(&url, "good").await.unwrap();
    assert_eq!(status, 429);
    // Until the slow lookup is done: a deadline that fails the test, not a count of rounds.
    let start = std::time::Instant::now();
    let answer = loop {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        let answer = call(&url, "good").await.unwrap();
        if answer.0 != 429 {
            break answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "still 429 after 120 s"
        );
    };
    assert_eq!(answer.0, 200);
    let v = dp::verify(
        Cursor::new(&answer.1),
        &VerifyOptions::at(UnixTime(1_798_761_600)),
    )
    .unwrap();
    let names: Vec<_> = v.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["transcript.json", "members.csv"]);
    let mut z = zip::ZipArchive::new(Cursor::new(&answer.1)).unwrap();
    let mut json = String::new();
    z.by_name("transcript.json")
        .unwrap()
        .read_to_string(&mut json)
        .unwrap();
    assert!(
        json.contains("王大明") && json.contains("戶籍謄本"),
        "{json}"
    );
}
