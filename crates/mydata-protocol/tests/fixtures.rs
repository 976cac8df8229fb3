//! The fixtures in fixtures/ obey the protocol core's own rules.

use std::path::PathBuf;

use mydata_protocol::catalogue::{Catalogue, Delivery};
use mydata_protocol::codes::{IdentityMethod, required_level};
use mydata_protocol::date::CivilDate;
use mydata_protocol::person::{BusinessNumber, NationalId, PersonalId};
use serde_json::Value;

fn read(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn catalogue_has_the_105_datasets_of_seed_002() {
    let c = Catalogue::from_json(&read("catalogue.json")).unwrap();
    assert_eq!(c.datasets.len(), 105);
    let idx: Vec<u32> = c.datasets.iter().map(|d| d.index).collect();
    assert_eq!(idx, (1..=105).collect::<Vec<_>>());
    let first = &c.datasets[0];
    assert_eq!(first.name, "個人戶籍資料");
    assert_eq!(
        first.identity_methods,
        [IdentityMethod::CitizenCertificate, IdentityMethod::TwFido]
    );
    assert_eq!(first.delivery, Delivery::Instant);
    assert_eq!(c.get(&first.resource_id).unwrap().index, 1);
    // Some datasets accept the two-documents method; none is unlockable only by OTP.
    assert!(
        c.datasets
            .iter()
            .any(|d| d.identity_methods.contains(&IdentityMethod::TwoDocuments))
    );
    for d in &c.datasets {
        assert!(
            required_level(&[&d.identity_methods]).is_some(),
            "{}",
            d.resource_id
        );
        assert!(
            d.formats
                .iter()
                .all(|f| ["json", "pdf", "csv", "xml", "zip"].contains(&f.as_str())),
            "{}: {:?}",
            d.resource_id,
            d.formats
        );
    }
}

#[test]
fn catalogue_rules_catch_duplicates() {
    let mut v: Value = serde_json::from_str(&read("catalogue.json")).unwrap();
    let dup = v["datasets"][0]["resource_id"].clone();
    v["datasets"][1]["resource_id"] = dup;
    assert!(Catalogue::from_json(&v.to_string()).is_err());
    assert!(Catalogue::from_json("{\"version\":2,\"datasets\":[]}").is_err());
    assert!(Catalogue::from_json("[]").is_err());
}

#[test]
fn sandbox_citizens_are_valid() {
    let v: Value = serde_json::from_str(&read("citizens.json")).unwrap();
    let citizens = v["citizens"].as_array().unwrap();
    assert!(citizens.len() >= 6);
    let mut tags = Vec::new();
    for c in citizens {
        let id: PersonalId = c["national_id"].as_str().unwrap().parse().unwrap();
        let roc = CivilDate::parse_roc(c["birth_date_roc"].as_str().unwrap()).unwrap();
        let iso: CivilDate = c["birth_date"].as_str().unwrap().parse().unwrap();
        assert_eq!(roc, iso, "{id}");
        if let PersonalId::National(n) = &id {
            assert_eq!(n.is_male(), c["sex"] == "M", "{id}");
        }
        tags.extend(
            c["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned()),
        );
    }
    for t in [
        "ordinary",
        "low_income",
        "disability",
        "no_data",
        "resident",
    ] {
        assert!(tags.iter().any(|x| x == t), "no citizen tagged {t}");
    }
    for lp in v["legal_persons"].as_array().unwrap() {
        lp["business_number"]
            .as_str()
            .unwrap()
            .parse::<BusinessNumber>()
            .unwrap();
        let rep: NationalId = lp["representative_national_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(citizens.iter().any(|c| c["national_id"] == rep.as_str()));
    }
}
