//! The retention deadline at its boundary second (§8.1 step 3, §14, D37): the ticket still answers
//! and the purge is not yet due 28,800 s after consent; from 28,801 s both have turned, and
//! [`flow::retention_deadline`] names exactly that second.
//!
//! Also that the core never reads the time (D15): only `clock.rs`, which defines the clock the
//! layers above inject, mentions the system clock.

use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{self, DataAnswer, RETENTION_SECS, RetentionFacts, TicketFacts};

const CONSENT: UnixTime = UnixTime(1_767_225_600);
const TICKET: &str = "6B1F0E52-2C1D-4F7A-9A57-0F3C1D2E8B44";

fn ticket_at(now: i64) -> DataAnswer {
    let facts = TicketFacts {
        service_allows_ip: true,
        tx_id: "tx-1".parse().unwrap(),
        created_at: UnixTime(CONSENT.0 - 60),
        consent_at: Some(CONSENT),
        sp_api_acknowledged: true,
        unable_to_deliver: false,
        all_failed: false,
        taken: false,
        ready: true,
        retry_estimate: None,
    };
    flow::data_answer(true, Some(TICKET), None, Some(&facts), UnixTime(now))
}

fn purge_due_at(now: i64) -> bool {
    let facts = RetentionFacts {
        created_at: UnixTime(CONSENT.0 - 60),
        consent_at: Some(CONSENT),
        ended_at: None,
        taken_at: None,
    };
    flow::purge_due(&facts, UnixTime(now))
}

#[test]
fn retention_ends_after_the_28800th_second() {
    assert_eq!(RETENTION_SECS, 28_800);
    let boundary = CONSENT.0 + 28_800;
    assert_eq!(ticket_at(boundary), DataAnswer::Ready200);
    assert!(!purge_due_at(boundary));
    assert_eq!(ticket_at(boundary + 1), DataAnswer::Forbidden403);
    assert!(purge_due_at(boundary + 1));

    let deadline = flow::retention_deadline(CONSENT);
    assert_eq!(deadline, UnixTime(boundary + 1));
    // A store deleting rows with `deadline <= now` agrees with the core at every second.
    for now in boundary - 2..=boundary + 2 {
        assert_eq!(
            deadline.0 <= now,
            purge_due_at(now),
            "at consent + {}",
            now - CONSENT.0
        );
        assert_eq!(
            deadline.0 <= now,
            ticket_at(now) == DataAnswer::Forbidden403,
            "at consent + {}",
            now - CONSENT.0
        );
    }
    assert_eq!(
        flow::retention_deadline(UnixTime(i64::MAX - 5)),
        UnixTime(i64::MAX)
    );
}

#[test]
fn only_the_injected_clock_mentions_the_system_clock() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path != src.join("clock.rs")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .contains("SystemTime")
            {
                offenders.push(path.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the core reads the clock in {offenders:?}"
    );
}
