//! A small data provider (DP) built on the `mydata-dp` SDK: copy it to start your own.
//!
//! It serves one dataset, a household registration transcript (戶籍謄本), at one endpoint.
//! For each call from the platform the SDK checks the bearer token at the platform's
//! `/connect/introspect`, and this program answers with the transcript of the citizen the
//! token names (`uid`): `transcript.json` and `members.csv`, signed with the agency's key.
//! A citizen without a record gets 204.
//!
//! ```text
//! MYDATA_RESOURCE_SECRET=… example-dp --platform https://mydata.example \
//!     --resource-id API.ARPPI3VTCB --key dp.key --cert dp.pem [--data records.json] [--slow 20] \
//!     [--introspection-cache-secs 30]
//! ```
//!
//! `--platform`, `--resource-id` and `--resource-secret` may also come from the environment
//! variables `MYDATA_PLATFORM`, `MYDATA_RESOURCE_ID` and `MYDATA_RESOURCE_SECRET` (prefer the
//! environment for the secret: command lines are visible to other users).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer};
use clap::Parser;
use mydata_dp::actix::DpApi;
use mydata_dp::{CacheConfig, DataFile, Deferred, DpService, Outcome, ResourceSecret, from_fn};
use mydata_protocol::package::dp::DpSigner;
use serde_json::{Value, json};

/// Serve a household registration transcript dataset to the MyData platform.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// URL path of the endpoint registered at the platform.
    #[arg(long, default_value = "/dp/household-transcript")]
    path: String,
    /// The platform's base URL [env: MYDATA_PLATFORM].
    #[arg(long)]
    platform: Option<String>,
    /// This dataset's resource_id [env: MYDATA_RESOURCE_ID].
    #[arg(long)]
    resource_id: Option<String>,
    /// This dataset's resource_secret [env: MYDATA_RESOURCE_SECRET].
    #[arg(long)]
    resource_secret: Option<String>,
    /// PEM private key that signs the packages.
    #[arg(long)]
    key: PathBuf,
    /// PEM certificate of that key.
    #[arg(long)]
    cert: PathBuf,
    /// JSON file of records: {"<national id>": {"name": …, "members": [...]}, …}.
    /// Default: two demo records of sandbox citizens.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Simulate a slow back office: each lookup takes SECONDS, and the platform is told to
    /// come back later (429 + Retry-After) meanwhile.
    #[arg(long, value_name = "SECONDS")]
    slow: Option<u64>,
    /// How long an active introspection answer is reused (seconds, default 30): a token the
    /// platform ends is refused at the latest this long afterwards.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    introspection_cache_secs: u64,
}

/// A flag, else an environment variable.
fn flag_or_env(flag: Option<String>, name: &str, var: &str) -> Result<String, String> {
    flag.or_else(|| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("missing --{name} or {var}"))
}

/// Demo records (sandbox citizens; invented data).
fn demo_records() -> HashMap<String, Value> {
    let wang = json!({"name": "王大明", "birth_date": "1988-01-01", "household_number": "A2034517",
        "address": "臺北市中正區示範里1鄰範例路1號",
        "members": [{"relation": "戶長", "name": "王大明", "birth_date": "1988-01-01"},
                    {"relation": "母", "name": "王林美", "birth_date": "1960-05-05"}]});
    let lee = json!({"name": "李佳穎", "birth_date": "1995-12-07", "household_number": "A3329047",
        "address": "新北市板橋區範例里2鄰示範街2號",
        "members": [{"relation": "戶長", "name": "李佳穎", "birth_date": "1995-12-07"}]});
    HashMap::from([("A120345672".into(), wang), ("A240177369".into(), lee)])
}

/// The answer for one citizen: the transcript as JSON, and its members as CSV.
fn transcript(records: &HashMap<String, Value>, uid: Option<&str>) -> Outcome {
    let Some(record) = uid.and_then(|u| records.get(&u.to_ascii_uppercase())) else {
        return Outcome::NoData; // 204: nothing on record for this citizen
    };
    let mut csv = String::from("relation,name,birth_date\r\n");
    for m in record["members"].as_array().into_iter().flatten() {
        let cell = |k: &str| {
            m[k].as_str()
                .unwrap_or("")
                .replace([',', '"', '\r', '\n'], " ")
        };
        csv += &format!(
            "{},{},{}\r\n",
            cell("relation"),
            cell("name"),
            cell("birth_date")
        );
    }
    let doc = json!({"document": "戶籍謄本", "national_id": uid, "record": record});
    Outcome::Ready(vec![
        DataFile::new("transcript.json", doc.to_string()),
        DataFile::new("members.csv", csv),
    ])
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let platform = flag_or_env(args.platform, "platform", "MYDATA_PLATFORM")?;
    let resource_id = flag_or_env(args.resource_id, "resource-id", "MYDATA_RESOURCE_ID")?;
    let secret = ResourceSecret::new(flag_or_env(
        args.resource_secret,
        "resource-secret",
        "MYDATA_RESOURCE_SECRET",
    )?);
    let signer = DpSigner::from_pem(&std::fs::read(&args.key)?, &std::fs::read(&args.cert)?)?;
    let records = Arc::new(match &args.data {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => demo_records(),
    });

    // The SDK does the protocol: token introspection (cached), transaction_uid bookkeeping,
    // 429/Retry-After for slow work, packaging and signing.
    let service = DpService::builder(&resource_id)
        .platform(&platform, secret)
        .signer(Arc::new(signer))
        .cache(CacheConfig {
            ttl_secs: args.introspection_cache_secs,
            ..CacheConfig::default()
        });
    let service = match args.slow {
        // Slow mode: the lookup runs on a background thread; the first call starts it.
        Some(secs) => service.dataset(Deferred::new(
            move |call| {
                std::thread::sleep(Duration::from_secs(secs));
                transcript(&records, call.uid())
            },
            u32::try_from(secs.clamp(1, 600)).unwrap_or(600),
        )),
        None => service.dataset(from_fn(move |call| transcript(&records, call.uid()))),
    }
    .build()?;

    let api = DpApi::new(service);
    let path = args.path.clone();
    eprintln!(
        "example-dp: serving {resource_id} at http://{}{path}",
        args.listen
    );
    HttpServer::new(move || App::new().configure(api.configure(&path)))
        .bind(args.listen)?
        .run()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_files() {
        let records = demo_records();
        let Outcome::Ready(files) = transcript(&records, Some("a120345672")) else {
            panic!("expected files");
        };
        assert_eq!(files[0].name, "transcript.json");
        let csv = String::from_utf8(files[1].bytes.clone()).unwrap();
        assert_eq!(csv.lines().count(), 3, "{csv}");
        assert!(matches!(
            transcript(&records, Some("Z199999999")),
            Outcome::NoData
        ));
        assert!(matches!(transcript(&records, None), Outcome::NoData));
    }
}
