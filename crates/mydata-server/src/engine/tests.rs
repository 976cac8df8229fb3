//! Unit tests of the engine's steps over a real SQLite store (in memory) and a manual clock:
//! what used to be reachable only through whole-server tests. No HTTP server is started; the
//! SP-API call of [`consent`](super::consent) goes to a closed port on 127.0.0.1.

use std::net::IpAddr;
use std::sync::Arc;

use mydata_protocol::clock::{Clock, ManualClock};
use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{self, IDLE_EXPIRY_SECS, RECORD_LIFETIME_SECS, TxState};
use mydata_protocol::ids::{ClientId, TxId};

use super::{DataAnswer, DataStep, StatusAnswer, StatusQuery};
use crate::auth::CitizenClaims;
use crate::config::Config;
use crate::platform::{NewSp, Platform, SANDBOX_CATALOGUE};
use crate::secrets::MasterKey;
use crate::storage::sqlite::SqliteStore;
use crate::storage::{SpRecord, TxPhase, TxRecord};

const T0: i64 = 1_780_000_000;
const CITIZEN: &str = "A120345672";

struct Fixture {
    p: Arc<Platform>,
    clock: ManualClock,
    sp: SpRecord,
    other_sp: SpRecord,
    _dir: tempfile::TempDir,
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// The sandbox registrations, and two SPs on 127.0.0.1 whose SP-API is a closed port.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UnixTime(T0));
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        sandbox: true,
        package_memory_mb: 0,
        ..Config::default()
    };
    let p = Arc::new(
        Platform::new(
            Arc::new(SqliteStore::in_memory().unwrap()),
            MasterKey::generate().unwrap(),
            Arc::new(clock.clone()),
            config,
        )
        .unwrap(),
    );
    p.load_sandbox_at("http://127.0.0.1:1").unwrap();
    let first = mydata_protocol::catalogue::Catalogue::from_json(SANDBOX_CATALOGUE)
        .unwrap()
        .datasets[0]
        .resource_id
        .clone();
    let register = |name: &str| {
        p.register_sp(NewSp {
            tls_ca: None,
            name: name.into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url: "http://127.0.0.1:1/sp-api".into(),
            allowed_ips: vec![local().into()],
            client_cert_sha256: Vec::new(),
            resources: vec![first.clone()],
            ..NewSp::default()
        })
        .unwrap()
        .0
    };
    let sp = register("one");
    let other_sp = register("two");
    Fixture {
        p,
        clock,
        sp,
        other_sp,
        _dir: dir,
    }
}

/// A transaction of `sp` in `state`, with its citizen's `pid` sealed and `ticket` recorded.
fn stored(f: &Fixture, sp: &SpRecord, id: &str, tx_id: &str, state: TxPhase) -> TxRecord {
    let now = f.clock.now().0;
    let t = TxRecord {
        id: id.into(),
        client_id: sp.client_id.clone(),
        tx_id: tx_id.into(),
        state,
        code: None,
        resources: serde_json::to_string(&sp.resources).unwrap(),
        return_query: None,
        case_number: Some("case-7".into()),
        pid_sealed: Some(f.p.key.seal(&format!("tx:{id}:pid"), CITIZEN).unwrap()),
        citizen_sealed: None,
        identity_method: Some("PII".into()),
        ticket_hash: Some(f.p.ticket_hash(&format!("ticket-{id}"))),
        secret_key_sealed: None,
        sp_api_ack: !matches!(state, TxPhase::Redirected | TxPhase::Authenticated),
        datasets: "[]".into(),
        package_path: None,
        created_at: now,
        consent_at: (!matches!(state, TxPhase::Redirected | TxPhase::Authenticated)).then_some(now),
        taken_at: None,
        purge_at: flow::record_deadline(UnixTime(now)).0,
        return_url: None,
        last_activity: now,
    };
    f.p.store.insert_tx(&t).unwrap();
    t
}

fn status(f: &Fixture, tx_id: &str, client: Option<&SpRecord>, q: StatusQuery) -> StatusAnswer {
    let tx_id: TxId = tx_id.parse().unwrap();
    let client: Option<ClientId> = client.map(|s| s.client_id.parse().unwrap());
    super::status(&f.p, local(), &tx_id, client.as_ref(), q).unwrap()
}

#[test]
fn status_lookup_sees_its_source_and_client_and_forgets_after_8_hours() {
    let f = fixture();
    stored(&f, &f.sp, "t-1", "tx-1", TxPhase::Fetching);
    // Another source IP is registered by no SP: 401 before anything is said.
    let stranger: IpAddr = "192.0.2.7".parse().unwrap();
    let tx_id: TxId = "tx-1".parse().unwrap();
    assert_eq!(
        super::status(&f.p, stranger, &tx_id, None, StatusQuery::TxidStatus).unwrap(),
        StatusAnswer::Unregistered
    );
    let StatusAnswer::Found(body) = status(&f, "tx-1", None, StatusQuery::TxidStatus) else {
        panic!("tx-1 not found");
    };
    let want = TxState::Consented.status_body();
    assert_eq!(body["code"], want.code.as_str());
    assert_eq!(body["text"], want.text.as_str());
    assert_eq!(
        status(&f, "tx-9", None, StatusQuery::TxidStatus),
        StatusAnswer::NotFound
    );
    // The same tx_id of a second SP on the same source: ambiguous until client_id says which.
    stored(&f, &f.other_sp, "t-2", "tx-1", TxPhase::Redirected);
    assert_eq!(
        status(&f, "tx-1", None, StatusQuery::TxidStatus),
        StatusAnswer::Ambiguous
    );
    let StatusAnswer::Found(body) = status(&f, "tx-1", Some(&f.other_sp), StatusQuery::TypeValid)
    else {
        panic!("tx-1 of the second SP not found");
    };
    assert_eq!(body["code"], "200");
    assert_eq!(body["type"], "PII");
    // More than 8 hours after creation the record is gone for the MyData-API (D19).
    f.clock.advance(RECORD_LIFETIME_SECS + 1);
    assert_eq!(
        status(&f, "tx-1", Some(&f.sp), StatusQuery::TxidStatus),
        StatusAnswer::NotFound
    );
}

#[test]
fn data_decision_follows_the_stored_state() {
    let f = fixture();
    let decide = |id: &str| -> DataAnswer {
        match super::data_decide(&f.p, local(), Some(&ticket_of(id)), None).unwrap() {
            DataStep::Answer(a) => a,
            DataStep::Take(_) => panic!("{id}: served"),
        }
    };
    // The tickets are UUIDs on the wire: the fixture's `ticket-{id}` is not, so store real ones.
    let cases = [
        ("t-f", TxPhase::Fetching, None, "429"),
        ("t-t", TxPhase::Taken, Some(201), "201"),
        ("t-u", TxPhase::Undeliverable, Some(404), "504"),
        ("t-e", TxPhase::Ended, Some(504), "504"),
        ("t-c", TxPhase::CallingSp, Some(200), "429"),
    ];
    for (id, state, code, want) in cases {
        let mut t = stored(&f, &f.sp, id, &format!("tx-{id}"), state);
        t.code = code;
        t.ticket_hash = Some(f.p.ticket_hash(&ticket_of(id)));
        f.p.store.update_tx(&t).unwrap();
        let got = match decide(id) {
            DataAnswer::Status(a) => a.status().to_string(),
            other => panic!("{id}: {other:?}"),
        };
        assert_eq!(got, want, "{id} in {state}");
    }
    // Before the SP-API answered, a ticket of a redirected transaction is unknown (403).
    let mut t = stored(&f, &f.sp, "t-r", "tx-t-r", TxPhase::Redirected);
    t.ticket_hash = Some(f.p.ticket_hash(&ticket_of("t-r")));
    f.p.store.update_tx(&t).unwrap();
    assert!(matches!(
        decide("t-r"),
        DataAnswer::Status(flow::DataAnswer::Forbidden403)
    ));
}

/// A UUID ticket per test transaction.
fn ticket_of(id: &str) -> String {
    let n: u128 = id
        .bytes()
        .fold(7u128, |a, b| a.wrapping_mul(131).wrapping_add(b as u128));
    let h = format!(
        "{:032x}",
        n & ((1u128 << 122) - 1) | (4u128 << 76) | (2u128 << 62)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[test]
fn purge_expires_before_consent_then_deletes_at_the_deadline() {
    let f = fixture();
    stored(&f, &f.sp, "t-idle", "tx-idle", TxPhase::Authenticated);
    // Not yet idle for more than 1,200 s: nothing happens.
    f.clock.advance(IDLE_EXPIRY_SECS);
    let r = super::purge(&f.p).unwrap();
    assert_eq!((r.expired, r.purged), (0, 0));
    assert_eq!(
        super::reported_state(&f.p.store.get_tx("t-idle").unwrap().unwrap(), f.clock.now()),
        TxState::Authenticated
    );
    // One second more: 408 at once for txid_status, then ended by the purge, pid gone (D21, D37).
    f.clock.advance(1);
    let t = f.p.store.get_tx("t-idle").unwrap().unwrap();
    assert_eq!(
        super::reported_state(&t, f.clock.now()),
        TxState::Ended(ReturnCode::Timeout)
    );
    let r = super::purge(&f.p).unwrap();
    assert_eq!((r.expired, r.purged), (1, 0));
    let t = f.p.store.get_tx("t-idle").unwrap().unwrap();
    assert_eq!((t.state, t.code), (TxPhase::Ended, Some(408)));
    assert!(t.pid_sealed.is_none());
    // The record stays for its 8 hours from creation (D19), then goes.
    f.clock.set(UnixTime(T0 + RECORD_LIFETIME_SECS));
    assert_eq!(super::purge(&f.p).unwrap().purged, 0);
    f.clock.set(UnixTime(t.purge_at));
    let r = super::purge(&f.p).unwrap();
    assert_eq!(r.purged, 1);
    assert!(r.complete(), "{:?}", r.not_erased);
    assert!(f.p.store.get_tx("t-idle").unwrap().is_none());
}

#[test]
fn ending_takes_the_personal_data_and_records_the_outcome() {
    let f = fixture();
    let mut t = stored(&f, &f.sp, "t-end", "tx-end", TxPhase::Fetching);
    t.citizen_sealed = Some(f.p.key.seal("tx:t-end:citizen", "{}").unwrap());
    t.return_url = Some("http://127.0.0.1:1/return?x=1".into());
    t.purge_at = T0 + 100_000;
    super::end(&f.p, &mut t, ReturnCode::DpSystemError, f.clock.now()).unwrap();
    let stored = f.p.store.get_tx("t-end").unwrap().unwrap();
    assert_eq!((stored.state, stored.code), (TxPhase::Ended, Some(504)));
    assert!(stored.pid_sealed.is_none() && stored.citizen_sealed.is_none());
    assert!(stored.return_url.is_none());
    assert_eq!(stored.purge_at, flow::retention_deadline(f.clock.now()).0);
    // After the SP was told 200, the ending is recorded as `ended`, under the citizen's hash.
    let records = f.p.store.transfers_of(&f.p.subject_hash(CITIZEN)).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].kind.as_str(),
            records[0].code,
            records[0].case_number.as_deref()
        ),
        ("ended", 504, Some("case-7"))
    );
}

#[actix_web::test]
async fn consent_with_an_sp_that_does_not_answer_ends_410_and_withdraws_the_ticket() {
    let f = fixture();
    let t = stored(&f, &f.sp, "t-410", "tx-410", TxPhase::Authenticated);
    let citizen = CitizenClaims {
        sub: f.p.citizen_sub(CITIZEN),
        uid: CITIZEN.into(),
        uid_type: "NID".into(),
        birthdate: Some("1988-01-01".into()),
        name: None,
        email: None,
    };
    let code = super::consent(f.p.clone(), t, citizen.clone())
        .await
        .unwrap();
    assert_eq!(code, ReturnCode::SpApiFailed);
    let stored = f.p.store.get_tx("t-410").unwrap().unwrap();
    assert_eq!((stored.state, stored.code), (TxPhase::Ended, Some(410)));
    assert!(stored.ticket_hash.is_none() && stored.secret_key_sealed.is_none());
    let kinds: Vec<(String, i32)> =
        f.p.store
            .transfers_of(&f.p.subject_hash(CITIZEN))
            .unwrap()
            .into_iter()
            .map(|r| (r.kind, r.code))
            .collect();
    assert_eq!(kinds, vec![("return".to_string(), 410)]);
    // A second consent on the ended transaction is refused, not made again.
    let again = super::consent(f.p.clone(), stored, citizen).await;
    assert!(
        matches!(again, Err(crate::ServerError::Conflict(_))),
        "{again:?}"
    );
}
