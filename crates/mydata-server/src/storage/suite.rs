//! The test suite every storage backend must pass (call [`run_all`] on a fresh store).

use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{self, RETENTION_SECS, RetentionFacts};

use super::{DpMethod, DpRecord, SpRecord, Store, TransferRecord, TxPhase, TxRecord};
use crate::auth::TokenRecord;
use crate::error::ServerError;

/// A sample dataset registration.
pub fn sample_dp(id: &str) -> DpRecord {
    DpRecord {
        tls_ca: None,
        resource_id: id.into(),
        name: "個人戶籍資料".into(),
        provider: "內政部".into(),
        scopes: vec!["moi.ris.ds001.read".into()],
        secret_hash: "00".repeat(32),
        endpoint: "http://127.0.0.1:1/dp".into(),
        method: DpMethod::Get,
        claims: vec!["sub".into(), "uid".into()],
        identity_methods: vec!["PII".into()],
        status: "active".into(),
        template: None,
    }
}

/// A sample SP registration.
pub fn sample_sp(id: &str) -> SpRecord {
    SpRecord {
        tls_ca: None,
        client_id: id.into(),
        name: "Sandbox SP".into(),
        purpose: "Testing".into(),
        return_url: "http://127.0.0.1:2/return".into(),
        sp_api_url: "http://127.0.0.1:2/sp-api".into(),
        api_key_sealed: None,
        client_secret_sealed: "aa".into(),
        cbc_iv_sealed: "bb".into(),
        allowed_ips: vec!["127.0.0.1".into()],
        client_cert_sha256: Vec::new(),
        resources: vec!["API.AAAAAAAAAA".into()],
        jwe_mode: mydata_protocol::jwe::JweMode::Cbc,
        packaging_mode: mydata_protocol::package::sp::PackagingMode::A,
        status: "active".into(),
    }
}

/// A sample token of transaction `tx`, expiring at `exp`.
pub fn token(hash: &str, tx: &str, exp: i64) -> TokenRecord {
    TokenRecord {
        token_hash: hash.into(),
        tx_id: tx.into(),
        client_id: "CLI.AAAAAAAAAA".into(),
        resource_id: "API.AAAAAAAAAA".into(),
        transaction_uid: "u".into(),
        scope: "s".into(),
        sub: "sub".into(),
        uid: "A120345672".into(),
        claims: "{}".into(),
        iat: exp - 7200,
        exp,
    }
}

/// Runs every check; panics on the first failure.
pub fn run_all(s: &dyn Store) {
    registrations(s);
    registration_lifecycle(s);
    tokens(s);
    transactions(s);
    retention_boundary(s);
    transfers(s);
}

/// A sample transaction.
pub fn sample_tx(id: &str, client_id: &str, tx_id: &str, purge_at: i64) -> TxRecord {
    TxRecord {
        return_query: Some("a=1".into()),
        pid_sealed: Some("sealed".into()),
        purge_at,
        return_url: Some("https://sp.example/return?a=1".into()),
        ..TxRecord::created(
            id.into(),
            client_id,
            tx_id,
            &["API.AAAAAAAAAA"],
            TxPhase::Redirected,
            UnixTime(purge_at - 28_800),
        )
    }
}

fn transactions(s: &dyn Store) {
    let mut a = sample_tx("t-a", "CLI.AAAAAAAAAA", "tx-1", 1000);
    s.insert_tx(&a).unwrap();
    assert!(matches!(
        s.insert_tx(&sample_tx("t-b", "CLI.AAAAAAAAAA", "tx-1", 1000)),
        Err(ServerError::Conflict(_))
    ));
    s.insert_tx(&sample_tx("t-c", "CLI.BBBBBBBBBB", "tx-1", 2000))
        .unwrap();
    assert_eq!(s.find_tx_any("tx-1").unwrap().len(), 2);
    a.state = TxPhase::Fetching;
    a.ticket_hash = Some("th".into());
    a.sp_api_ack = true;
    a.consent_at = Some(900);
    a.return_query = None;
    s.update_tx(&a).unwrap();
    assert_eq!(s.get_tx("t-a").unwrap().unwrap(), a);
    assert_eq!(s.find_tx("CLI.AAAAAAAAAA", "tx-1").unwrap().unwrap(), a);
    assert_eq!(s.find_tx_by_ticket("th").unwrap().unwrap().id, "t-a");
    assert!(s.find_tx_by_ticket("nope").unwrap().is_none());
    assert!(matches!(
        s.update_tx(&sample_tx("t-z", "CLI.AAAAAAAAAA", "tx-9", 1)),
        Err(ServerError::NotFound(_))
    ));
    // Every other column is replaced, to a value or to null; the identity stays as inserted.
    let mut b = a.clone();
    b.state = TxPhase::Ended;
    b.code = Some(410);
    b.case_number = Some("case-1".into());
    b.pid_sealed = None;
    b.citizen_sealed = Some("claims".into());
    b.identity_method = Some("PII".into());
    b.ticket_hash = None;
    b.secret_key_sealed = Some("key".into());
    b.sp_api_ack = false;
    b.datasets = "[{\"code\":200}]".into();
    b.package_path = Some("packages/t-a.zip".into());
    b.consent_at = None;
    b.taken_at = Some(950);
    b.purge_at = 990;
    b.return_url = None;
    b.last_activity = 960;
    s.update_tx(&b).unwrap();
    assert_eq!(s.get_tx("t-a").unwrap().unwrap(), b);
    assert!(s.find_tx_by_ticket("th").unwrap().is_none());
    let mut renamed = b.clone();
    renamed.client_id = "CLI.BBBBBBBBBB".into();
    renamed.tx_id = "tx-2".into();
    renamed.resources = "[]".into();
    renamed.created_at = 1;
    renamed.state = TxPhase::Taken;
    s.update_tx(&renamed).unwrap();
    let stored = s.get_tx("t-a").unwrap().unwrap();
    assert_eq!(stored.state, TxPhase::Taken);
    assert_eq!(
        (stored.client_id.as_str(), stored.tx_id.as_str()),
        ("CLI.AAAAAAAAAA", "tx-1")
    );
    assert_eq!(
        (stored.resources, stored.created_at),
        (b.resources, b.created_at)
    );
    assert!(s.find_tx("CLI.BBBBBBBBBB", "tx-2").unwrap().is_none());
    let due: Vec<_> = s
        .txs_due(UnixTime(1000))
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(due, vec!["t-a"]);
    let taken: Vec<_> = s
        .txs_in_state(TxPhase::Taken)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(taken, vec!["t-a"]);
    assert_eq!(s.txs_in_state(TxPhase::Redirected).unwrap().len(), 1);
    assert!(s.txs_in_state(TxPhase::Fetching).unwrap().is_empty());
    // The count by state agrees with the rows: every state listed, in flow order.
    let counts = s.count_txs_by_state().unwrap();
    assert_eq!(
        counts.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        TxPhase::ALL.to_vec()
    );
    for (phase, n) in &counts {
        assert_eq!(*n, s.txs_in_state(*phase).unwrap().len() as u64, "{phase}");
    }
    assert_eq!(
        counts.iter().find(|(p, _)| *p == TxPhase::Taken).unwrap().1,
        1
    );
    s.delete_tx("t-a").unwrap();
    assert!(s.get_tx("t-a").unwrap().is_none());
    s.delete_tx("t-c").unwrap();
}

/// `txs_due` and the core's `purge_due` agree to the second on a consented transaction (§14,
/// D37): still kept 28,800 s after consent, due from the next second on.
fn retention_boundary(s: &dyn Store) {
    let consent = UnixTime(10_000);
    let mut tx = sample_tx(
        "t-r",
        "CLI.AAAAAAAAAA",
        "tx-r",
        flow::retention_deadline(consent).0,
    );
    tx.state = TxPhase::Fetching;
    tx.created_at = consent.0 - 60;
    tx.last_activity = consent.0;
    tx.consent_at = Some(consent.0);
    s.insert_tx(&tx).unwrap();
    let facts = RetentionFacts {
        created_at: UnixTime(tx.created_at),
        consent_at: Some(consent),
        ended_at: None,
        taken_at: None,
    };
    let listed = |now: i64| {
        s.txs_due(UnixTime(now))
            .unwrap()
            .iter()
            .any(|t| t.id == "t-r")
    };
    let boundary = consent.0 + RETENTION_SECS;
    assert!(!listed(boundary), "not due 28,800 s after consent");
    assert!(listed(boundary + 1), "due 28,801 s after consent");
    for now in boundary - 2..=boundary + 2 {
        assert_eq!(
            listed(now),
            flow::purge_due(&facts, UnixTime(now)),
            "txs_due and purge_due at consent + {} s",
            now - consent.0
        );
    }
    s.delete_tx("t-r").unwrap();
}

fn transfers(s: &dyn Store) {
    for (at, subject) in [(10, "s1"), (20, "s2"), (30, "s1")] {
        s.insert_transfer(&TransferRecord {
            at,
            kind: "dp_call".into(),
            client_id: "CLI.AAAAAAAAAA".into(),
            resource_id: Some("API.AAAAAAAAAA".into()),
            subject_hash: subject.into(),
            code: 200,
            case_number: None,
            identity_method: Some("PII".into()),
        })
        .unwrap();
    }
    let mine = s.transfers_of("s1").unwrap();
    assert_eq!(mine.iter().map(|t| t.at).collect::<Vec<_>>(), vec![10, 30]);
    assert_eq!(s.delete_transfers_before(UnixTime(20)).unwrap(), 1);
    assert_eq!(s.transfers_of("s1").unwrap().len(), 1);
}

fn registrations(s: &dyn Store) {
    let now = UnixTime(1_767_225_600);
    let mut dp = sample_dp("API.BBBBBBBBBB");
    s.insert_dp(&sample_dp("API.CCCCCCCCCC"), now).unwrap();
    s.insert_dp(&dp, now).unwrap();
    assert!(matches!(
        s.insert_dp(&dp, now),
        Err(ServerError::Conflict(_))
    ));
    dp.status = "stopped".into();
    s.update_dp(&dp).unwrap();
    assert_eq!(s.get_dp("API.BBBBBBBBBB").unwrap().unwrap(), dp);
    assert!(s.get_dp("API.ZZZZZZZZZZ").unwrap().is_none());
    assert!(matches!(
        s.update_dp(&sample_dp("API.ZZZZZZZZZZ")),
        Err(ServerError::NotFound(_))
    ));
    let ids: Vec<_> = s
        .list_dps()
        .unwrap()
        .into_iter()
        .map(|d| d.resource_id)
        .collect();
    assert_eq!(ids, vec!["API.BBBBBBBBBB", "API.CCCCCCCCCC"]);

    let mut sp = sample_sp("CLI.BBBBBBBBBB");
    s.insert_sp(&sp, now).unwrap();
    assert!(matches!(
        s.insert_sp(&sp, now),
        Err(ServerError::Conflict(_))
    ));
    sp.status = "suspended".into();
    s.update_sp(&sp).unwrap();
    assert_eq!(s.get_sp("CLI.BBBBBBBBBB").unwrap().unwrap(), sp);
    assert!(s.get_sp("CLI.ZZZZZZZZZZ").unwrap().is_none());
    s.insert_sp(&sample_sp("CLI.AAAAAAAAAA"), now).unwrap();
    assert_eq!(s.list_sps().unwrap().len(), 2);
    assert_eq!(s.list_sps().unwrap()[0].client_id, "CLI.AAAAAAAAAA");
}

/// Suspending and rotating are updates of the record; deleting removes it, and only it
/// (`mydata sp|dp suspend|delete|rotate`, issue 14).
fn registration_lifecycle(s: &dyn Store) {
    let now = UnixTime(1_767_225_600);
    let before_dps = s.list_dps().unwrap().len();
    let before_sps = s.list_sps().unwrap().len();
    let mut dp = sample_dp("API.DDDDDDDDDD");
    s.insert_dp(&dp, now).unwrap();
    dp.secret_hash = "11".repeat(32);
    s.update_dp(&dp).unwrap();
    assert_eq!(
        s.get_dp("API.DDDDDDDDDD").unwrap().unwrap().secret_hash,
        dp.secret_hash
    );
    s.delete_dp("API.DDDDDDDDDD").unwrap();
    assert!(s.get_dp("API.DDDDDDDDDD").unwrap().is_none());
    assert_eq!(s.list_dps().unwrap().len(), before_dps);
    assert!(matches!(
        s.delete_dp("API.DDDDDDDDDD"),
        Err(ServerError::NotFound(_))
    ));
    // Deleted, the id may be registered again.
    s.insert_dp(&dp, now).unwrap();
    s.delete_dp("API.DDDDDDDDDD").unwrap();

    let mut sp = sample_sp("CLI.DDDDDDDDDD");
    s.insert_sp(&sp, now).unwrap();
    sp.client_secret_sealed = "rotated".into();
    sp.status = "suspended".into();
    s.update_sp(&sp).unwrap();
    assert_eq!(s.get_sp("CLI.DDDDDDDDDD").unwrap().unwrap(), sp);
    s.delete_sp("CLI.DDDDDDDDDD").unwrap();
    assert!(s.get_sp("CLI.DDDDDDDDDD").unwrap().is_none());
    assert_eq!(s.list_sps().unwrap().len(), before_sps);
    assert!(matches!(
        s.delete_sp("CLI.DDDDDDDDDD"),
        Err(ServerError::NotFound(_))
    ));
}

fn tokens(s: &dyn Store) {
    s.insert_token(&token("h1", "tx1", 100)).unwrap();
    s.insert_token(&token("h2", "tx1", 200)).unwrap();
    s.insert_token(&token("h3", "tx2", 300)).unwrap();
    assert!(s.insert_token(&token("h3", "tx2", 300)).is_err());
    assert_eq!(s.live_tokens(UnixTime(100)).unwrap().len(), 2);
    assert_eq!(s.live_tokens(UnixTime(99)).unwrap()[0].uid, "A120345672");
    assert_eq!(s.delete_expired_tokens(UnixTime(100)).unwrap(), 1);
    assert_eq!(s.delete_tokens_of_tx("tx1").unwrap(), 1);
    s.delete_token("h3").unwrap();
    assert!(s.live_tokens(UnixTime(0)).unwrap().is_empty());
}
