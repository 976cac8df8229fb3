//! `mydata card-agent`: the local signing agent of a sandbox card (spec D51).
//!
//! On a citizen's computer a card reader's software signs the platform's challenge. This agent
//! plays that part with a sandbox card (a PKCS#12 file whose password is the PIN), so the whole
//! certificate login runs with no hardware: the identity page (or any client) posts the challenge
//! and the PIN to `POST /sign` on loopback and gets the detached PKCS#7 signature back. Three
//! wrong PINs in a row lock the card; the count is kept beside the card file
//! (`{card}.wrong-pins`), so a restart does not unlock it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use clap::Args as ClapArgs;
use mydata_protocol::certlogin::{Card, CardError, PIN_TRIES};
use serde::Deserialize;
use serde_json::json;

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `mydata card-agent`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The card: a PKCS#12 file whose password is the PIN (the sandbox cards are
    /// fixtures/pki/identity/*.p12, PIN 123456).
    #[arg(long, value_name = "FILE.p12")]
    card: PathBuf,
    /// Where to listen: a loopback address.
    #[arg(long, default_value = "127.0.0.1:61161")]
    listen: SocketAddr,
    /// An origin whose pages may ask for signatures (repeat) [http://127.0.0.1:8080].
    #[arg(long = "origin", value_name = "URL")]
    origins: Vec<String>,
}

struct Agent {
    card: Mutex<Card>,
    counter: PathBuf,
    origins: Vec<String>,
    name: String,
}

fn counter_path(card: &Path) -> PathBuf {
    let mut p = card.as_os_str().to_owned();
    p.push(".wrong-pins");
    PathBuf::from(p)
}

fn lock(m: &Mutex<Card>) -> std::sync::MutexGuard<'_, Card> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Agent {
    /// `Some(origin)` to echo in `Access-Control-Allow-Origin`; `Err` for an origin not allowed.
    fn origin(&self, req: &HttpRequest) -> Result<Option<String>, ()> {
        match req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        {
            None => Ok(None),
            Some(o) if self.origins.iter().any(|a| a == o) => Ok(Some(o.to_owned())),
            Some(_) => Err(()),
        }
    }

    fn answer(&self, req: &HttpRequest, status: u16, body: serde_json::Value) -> HttpResponse {
        let mut r = HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
        );
        r.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Ok(Some(o)) = self.origin(req) {
            r.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, o));
            r.insert_header((header::VARY, "Origin"));
        }
        r.json(body)
    }
}

async fn status(agent: web::Data<Agent>, req: HttpRequest) -> HttpResponse {
    let card = lock(&agent.card);
    let body = json!({
        "card": agent.name,
        "locked": card.locked(),
        "tries_left": PIN_TRIES.saturating_sub(card.wrong_pins()),
    });
    drop(card);
    agent.answer(&req, 200, body)
}

#[derive(Deserialize)]
struct SignForm {
    #[serde(default)]
    challenge: String,
    #[serde(default)]
    pin: String,
}

async fn sign(
    agent: web::Data<Agent>,
    req: HttpRequest,
    form: web::Form<SignForm>,
) -> HttpResponse {
    if agent.origin(&req).is_err() {
        return agent.answer(&req, 403, json!({"error": "origin_not_allowed"}));
    }
    let f = form.into_inner();
    let challenge = f.challenge.trim();
    if challenge.is_empty() || challenge.len() > 256 || f.pin.is_empty() || f.pin.len() > 64 {
        return agent.answer(&req, 400, json!({"error": "bad_request"}));
    }
    let (result, wrong) = {
        let mut card = lock(&agent.card);
        let r = card.sign(&f.pin, challenge);
        (r, card.wrong_pins())
    };
    // The count survives a restart, as on a card.
    if let Err(e) = std::fs::write(&agent.counter, wrong.to_string()) {
        log::error!("{}: {e}", agent.counter.display());
    }
    match result {
        Ok(der) => agent.answer(
            &req,
            200,
            json!({"signature": base64::engine::general_purpose::STANDARD.encode(der)}),
        ),
        Err(CardError::WrongPin { left }) => {
            agent.answer(&req, 401, json!({"error": "wrong_pin", "tries_left": left}))
        }
        Err(CardError::Locked) => agent.answer(&req, 423, json!({"error": "locked"})),
        Err(e) => {
            log::error!("card: {e}");
            agent.answer(&req, 500, json!({"error": "card"}))
        }
    }
}

/// Runs the agent until interrupted.
pub fn run(a: Args) -> CliResult<i32> {
    if !a.listen.ip().is_loopback() {
        return Err(format!("--listen {}: the agent listens on loopback only", a.listen).into());
    }
    let der = std::fs::read(&a.card)
        .map_err(|e| crate::exit::runtime(format!("--card {}: {e}", a.card.display())))?;
    let counter = counter_path(&a.card);
    let wrong = match std::fs::read_to_string(&counter) {
        Ok(t) => t
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("{}: not a count", counter.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(crate::exit::runtime(format!("{}: {e}", counter.display()))),
    };
    let card = Card::new(der, wrong).map_err(|e| format!("--card {}: {e}", a.card.display()))?;
    let origins = if a.origins.is_empty() {
        vec!["http://127.0.0.1:8080".to_owned()]
    } else {
        a.origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect()
    };
    let agent = web::Data::new(Agent {
        card: Mutex::new(card),
        counter,
        origins,
        name: a
            .card
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    });
    eprintln!(
        "mydata: card agent for {} on http://{}",
        a.card.display(),
        a.listen
    );
    let listen = a.listen;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(agent.clone())
                .app_data(web::FormConfig::default().limit(4096))
                .route("/", web::get().to(status))
                .route("/sign", web::post().to(sign))
        })
        .workers(1)
        .bind(listen)
        .map_err(|e| crate::exit::runtime(format!("--listen {listen}: {e}")))?
        .run()
        .await
        .map_err(|e| crate::exit::runtime(format!("card agent: {e}")))
    })?;
    Ok(0)
}
