//! The PostgreSQL backend (spec D45) on a real server: the shared storage suite, parity with
//! SQLite where the databases differ by default (key order), concurrent opening and writing, and
//! a whole flow (consent → SP-API → DP calls → MyData-API → purge) over HTTP on 127.0.0.1.
//!
//! `MYDATA_TEST_PG_URL` names the server: a `postgres://` URL whose user may create databases
//! (`bash tests/run.sh` starts a private cluster and sets it). Each test creates its own database
//! and drops it at the end, so the tests run in parallel. Without the variable these tests fail.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use mydata_dp::sandbox::{self, Behaviour, SandboxConfig};
use mydata_protocol::catalogue::Catalogue;
use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::SecretKey;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_server::clock::{Clock, ManualClock};
use mydata_server::config::Config;
use mydata_server::engine::{self, state};
use mydata_server::http::spawn;
use mydata_server::platform::{NewSp, Platform, SANDBOX_CATALOGUE};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::postgres::PgStore;
use mydata_server::storage::sqlite::SqliteStore;
use mydata_server::storage::{self, Store, TransferRecord, suite};

const HOW: &str = "MYDATA_TEST_PG_URL is not set: these tests need a real PostgreSQL. Run them \
    through `bash tests/run.sh` (it starts a private cluster), or set \
    MYDATA_TEST_PG_URL=postgres://USER@127.0.0.1:PORT/postgres naming a server whose user may \
    CREATE DATABASE";

/// A database of its own on the test server, dropped (with its connections) when this is dropped.
struct ScratchDb {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDb {
    fn new() -> Self {
        let admin = match std::env::var("MYDATA_TEST_PG_URL") {
            Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
            _ => panic!("{HOW}"),
        };
        let mut url = url::Url::parse(&admin).unwrap_or_else(|e| {
            panic!("MYDATA_TEST_PG_URL must be a postgres://user@host:port/database URL: {e}")
        });
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "mydata_test_{}_{}_{}",
            std::process::id(),
            nanos,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = PgConnection::establish(&admin)
            .unwrap_or_else(|e| panic!("MYDATA_TEST_PG_URL: cannot connect: {e}\n{HOW}"));
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e} (the user needs CREATEDB)"));
        url.set_path(&format!("/{name}"));
        ScratchDb {
            admin,
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // Best effort: a failure here must not hide the test's own result.
        if let Ok(mut c) = PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[test]
fn shared_suite_on_postgres() {
    let db = ScratchDb::new();
    let store = PgStore::open(&db.url).unwrap();
    suite::run_all(&store);
    // Reopening applies no migration twice and keeps the data.
    drop(store);
    let again = PgStore::open(&db.url).unwrap();
    assert!(!again.list_sps().unwrap().is_empty());
    again.checkpoint().unwrap();
}

#[test]
fn shared_suite_on_postgres_through_the_write_behind_store() {
    // `mydata serve` puts the database behind the write-behind store (spec D47); the suite
    // holds through it, and what it committed is in PostgreSQL.
    let db = ScratchDb::new();
    let pg = Arc::new(PgStore::open(&db.url).unwrap());
    let hot = storage::hot::HotStore::new(pg.clone(), std::time::Duration::from_millis(5)).unwrap();
    suite::run_all(&hot);
    let tx = suite::sample_tx("t-hot", "CLI.AAAAAAAAAA", "tx-hot", 5000);
    hot.insert_tx(&tx).unwrap();
    hot.flush().unwrap();
    assert_eq!(pg.get_tx("t-hot").unwrap().unwrap(), tx);
}

/// `Store::ready` (`GET /readyz`, spec operations.md) on PostgreSQL: ready while the database
/// answers with its migrations applied, not ready (an error, no panic) once the database is gone
/// with its connections, directly and through the write-behind store.
#[test]
fn readiness_follows_the_database() {
    let db = ScratchDb::new();
    let pg = Arc::new(PgStore::open(&db.url).unwrap());
    let hot = storage::hot::HotStore::new(pg.clone(), std::time::Duration::from_millis(5)).unwrap();
    pg.ready().unwrap();
    hot.ready().unwrap();
    // Dropped WITH (FORCE): its connections are terminated, and no new one can be made.
    drop(db);
    let e = pg.ready().expect_err("ready without its database");
    assert!(matches!(e, mydata_server::ServerError::Storage(_)), "{e}");
    assert!(hot.ready().is_err());
}

#[test]
fn keys_list_in_the_same_order_as_on_sqlite() {
    // PostgreSQL sorts text by the cluster's locale unless told otherwise; the registrations'
    // keys are COLLATE "C", SQLite's byte order.
    let db = ScratchDb::new();
    let pg = PgStore::open(&db.url).unwrap();
    let lite = SqliteStore::in_memory().unwrap();
    let ids = [
        "CLI.b", "CLI.B", "CLI.a", "CLI._", "CLI.A", "CLI.Z0", "CLI.z",
    ];
    for s in [&pg as &dyn Store, &lite] {
        for id in ids {
            s.insert_sp(&suite::sample_sp(id), UnixTime(1)).unwrap();
            s.insert_dp(&suite::sample_dp(id), UnixTime(1)).unwrap();
        }
    }
    let order = |s: &dyn Store| {
        let sps: Vec<String> = s
            .list_sps()
            .unwrap()
            .into_iter()
            .map(|r| r.client_id)
            .collect();
        let dps: Vec<String> = s
            .list_dps()
            .unwrap()
            .into_iter()
            .map(|r| r.resource_id)
            .collect();
        (sps, dps)
    };
    let (pg_sps, pg_dps) = order(&pg);
    assert_eq!(
        pg_sps,
        [
            "CLI.A", "CLI.B", "CLI.Z0", "CLI._", "CLI.a", "CLI.b", "CLI.z"
        ]
    );
    assert_eq!(pg_dps, pg_sps);
    assert_eq!(order(&lite), (pg_sps, pg_dps));
}

#[test]
fn servers_opening_one_database_together_and_concurrent_writers() {
    let db = ScratchDb::new();
    // Four stores open a fresh database at once: the migrations run once (advisory lock).
    let stores: Vec<PgStore> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| sc.spawn(|| PgStore::open(&db.url)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    // Eight writers, no writer lock: every row lands, and a duplicate is a Conflict.
    std::thread::scope(|sc| {
        for w in 0..8 {
            let s = &stores[w % stores.len()];
            sc.spawn(move || {
                for i in 0..25 {
                    s.insert_transfer(&TransferRecord {
                        at: i,
                        kind: "dp_call".into(),
                        client_id: "CLI.AAAAAAAAAA".into(),
                        resource_id: None,
                        subject_hash: format!("w{w}"),
                        code: 200,
                        case_number: None,
                        identity_method: None,
                    })
                    .unwrap();
                }
            });
        }
    });
    for w in 0..8 {
        let mine = stores[0].transfers_of(&format!("w{w}")).unwrap();
        let ats: Vec<i64> = mine.iter().map(|t| t.at).collect();
        assert_eq!(ats, (0..25).collect::<Vec<i64>>(), "oldest first");
    }
    assert_eq!(
        stores[1].delete_transfers_before(UnixTime(25)).unwrap(),
        200
    );
    let sp = suite::sample_sp("CLI.CONCURRENT");
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = stores
            .iter()
            .map(|s| sc.spawn(|| s.insert_sp(&sp, UnixTime(1))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.iter().all(|r| match r {
        Ok(()) => true,
        Err(e) => matches!(e, mydata_server::error::ServerError::Conflict(_)),
    }));
}

// --- A whole flow on PostgreSQL -------------------------------------------------------------

use common::Seen;

fn start_sp() -> (String, Seen, actix_web::dev::ServerHandle) {
    common::start_sp_api_answering(200)
}

async fn poll(url: &str, ticket: &str) -> (u16, String) {
    let mut r = awc::Client::default()
        .get(format!("{url}/service/data"))
        .insert_header(("permission_ticket", ticket))
        .send()
        .await
        .unwrap();
    let body = String::from_utf8(r.body().await.unwrap().to_vec()).unwrap();
    (r.status().as_u16(), body)
}

fn count(url: &str, table: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = PgConnection::establish(url).unwrap();
    diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .get_result::<N>(&mut c)
        .unwrap()
        .n
}

#[test]
fn server_flow_on_postgres() {
    let db = ScratchDb::new();
    // The runtime, and with it every task still holding the platform (and so the pool), is gone
    // before the scratch database is dropped.
    actix_web::rt::System::new().block_on(server_flow(&db));
}

async fn server_flow(db: &ScratchDb) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    ));
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: db.url.clone(),
        sandbox: true,
        ..Config::default()
    };
    // Selected by database_url and put behind the write-behind store, as `mydata serve` does.
    let store = storage::open_server(&config).unwrap();
    let p = Arc::new(
        Platform::new(
            store,
            MasterKey::generate().unwrap(),
            Arc::new(clock.clone()),
            config,
        )
        .unwrap(),
    );
    assert!(!dir.path().join(storage::SQLITE_FILE).exists());
    let srv = spawn(p.clone()).unwrap();
    let c = Catalogue::from_json(SANDBOX_CATALOGUE).unwrap();
    let ids: Vec<String> = c.datasets[..3]
        .iter()
        .map(|d| d.resource_id.to_string())
        .collect();
    let mut cfg = SandboxConfig::embedded(&srv.url).unwrap();
    cfg.behaviours.insert(ids[0].clone(), Behaviour::Instant);
    cfg.behaviours.insert(ids[1].clone(), Behaviour::Instant);
    cfg.behaviours.insert(ids[2].clone(), Behaviour::Fail(500));
    let dp = sandbox::spawn(cfg).await.unwrap();
    p.load_sandbox_at(&dp.base_url()).unwrap();
    let (sp_url, seen, sp_h) = start_sp();
    let (sp_b, creds) = p
        .register_sp(NewSp {
            tls_ca: None,
            name: "B".into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url: sp_url,
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
            packaging_mode: PackagingMode::B,
            ..NewSp::default()
        })
        .unwrap();

    let refs: Vec<&str> = ids.iter().map(|i| i.as_ref()).collect();
    let t = common::authenticated_tx(&p, "t-1", &sp_b.client_id, "tx-pg-1", &refs);
    let citizen = common::citizen_claims(&p);
    let code = engine::consent(p.clone(), t, citizen).await.unwrap();
    assert_eq!(code, ReturnCode::Success);
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(body["tx_id"], "tx-pg-1");
    let cipher =
        ParamCipher::from_raw(&creds.client_secret, &creds.cbc_iv, ParamMode::Cbc).unwrap();
    let key: SecretKey = cipher
        .decrypt(body["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let ticket = body["permission_ticket"].as_str().unwrap().to_string();

    let start = std::time::Instant::now();
    let jwe_text = loop {
        let (s, b) = poll(&srv.url, &ticket).await;
        if s == 200 {
            break b;
        }
        assert_eq!(s, 429);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the package was not ready within 120 s"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let reports = common::open_delivery(&jwe_text, &key, &sp_b.client_id, clock.now());
    let codes: Vec<u16> = reports.iter().map(|r| r.entry.code).collect();
    assert_eq!(codes, vec![200, 200, 504]);
    // One-shot: the second poll is 201; the tokens are gone from the database too.
    assert_eq!(poll(&srv.url, &ticket).await.0, 201);
    assert_eq!(p.auth.token_count(), 0);
    // The taking is committed right after the body was written (D25, D47).
    p.store.flush().unwrap();
    assert_eq!(count(&db.url, "tokens"), 0);
    let mine = p.store.transfers_of(&p.subject_hash("A120345672")).unwrap();
    assert_eq!(mine.iter().filter(|t| t.kind == "dp_call").count(), 3);
    assert_eq!(mine.iter().filter(|t| t.kind == "delivery").count(), 1);
    // The code the SP was sent back with (§14, D37).
    assert_eq!(mine.iter().filter(|t| t.kind == "return").count(), 1);
    let taken = p.store.get_tx("t-1").unwrap().unwrap();
    assert_eq!(taken.state, state::TAKEN);
    assert!(taken.pid_sealed.is_none() && taken.secret_key_sealed.is_none());

    // The purge deletes the row (and runs the backend's checkpoint, a VACUUM here).
    clock.advance(engine::RETENTION_SECS + 1);
    let r = engine::purge(&p).unwrap();
    assert_eq!((r.purged, r.complete()), (1, true), "{r:?}");
    assert!(p.store.get_tx("t-1").unwrap().is_none());
    assert_eq!(count(&db.url, "transactions"), 0);
    assert_eq!(
        count(&db.url, "transfers"),
        5,
        "kept: 3 dp_call, 1 return, 1 delivery"
    );

    sp_h.stop(true).await;
    dp.stop().await;
    srv.handle.stop(true).await;
}
