//! Every parser of the core answers arbitrary input with a value or an error, never a panic.

use std::io::Cursor;

use mydata_protocol::date::{CivilDate, UnixTime};
use mydata_protocol::ids::{CbcIv, ClientId, PermissionTicket, ResourceId, SecretKey, TxId};
use mydata_protocol::jwe::{self, JweMode};
use mydata_protocol::package::dp::{self, VerifyOptions};
use mydata_protocol::package::{manifest, sp};
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_protocol::person::{BusinessNumber, PersonalId};
use mydata_protocol::resources::ResourceList;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A string of 0–40 pieces drawn from protocol-looking fragments and odd characters.
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "A",
            "1",
            "2",
            "8",
            "9",
            "0",
            "C",
            "/",
            "-",
            ".",
            ":",
            "=",
            "+",
            " ",
            "T",
            "Z",
            "API.",
            "CLI.",
            "王",
            "１",
            "\u{0}",
            "é",
            "<",
            ">",
            "&",
            ";",
            "<files>",
            "<file>",
            "</file>",
            "</files>",
            "<filename>",
            "</filename>",
            "<digest>",
            "</digest>",
            "<!DOCTYPE",
            "&#x41;",
            "&x;",
            "eyJ",
        ];
        let n = (self.next() % 40) as usize;
        (0..n)
            .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
            .collect()
    }
}

#[test]
fn parsers_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let cbc =
        ParamCipher::from_raw("abcdEFGH12345678", "0123456789abcdef", ParamMode::Cbc).unwrap();
    let gcm =
        ParamCipher::from_raw("abcdEFGH12345678", "0123456789abcdef", ParamMode::Gcm).unwrap();
    let key: SecretKey = "abcdefghijABCDEFGHIJ0123456789xy".parse().unwrap();
    for _ in 0..20_000 {
        let s = rng.text();
        let _ = s.parse::<PersonalId>();
        let _ = s.parse::<BusinessNumber>();
        let _ = s.parse::<ClientId>();
        let _ = s.parse::<ResourceId>();
        let _ = s.parse::<TxId>();
        let _ = s.parse::<PermissionTicket>();
        let _ = s.parse::<CbcIv>();
        let _ = CivilDate::parse_roc(&s);
        let _ = s.parse::<CivilDate>();
        let _ = UnixTime::parse(&s);
        let _ = ResourceList::decode(&s);
        let _ = cbc.decrypt(&s);
        let _ = gcm.decrypt(&s);
        let _ = jwe::decrypt_compact(&s, &key, JweMode::Cbc);
        let _ = jwe::parse_payload(s.as_bytes(), None);
        let _ = manifest::parse_dp(s.as_bytes());
        let _ = manifest::parse_sp(s.as_bytes());
    }
}

#[test]
fn package_readers_never_panic_on_corrupted_zips() {
    let pkg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/packages/sample-sp.zip"
    ))
    .unwrap();
    let opts = VerifyOptions::at(UnixTime(1_798_761_600));
    let mut rng = Rng(42);
    for _ in 0..3_000 {
        let mut bad = pkg.clone();
        for _ in 0..(1 + rng.next() % 4) {
            let i = (rng.next() % bad.len() as u64) as usize;
            bad[i] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(8) {
            bad.truncate((rng.next() % bad.len() as u64) as usize);
        }
        let _ = dp::verify(Cursor::new(&bad), &opts);
        let _ = sp::verify(Cursor::new(&bad), &opts);
    }
}
