//! The parameter-encryption test vectors of spec protocol.md §3 (issue 20, "§3 GCM test
//! vectors"): every row of the table, read from the spec itself so that the two cannot drift, is
//! checked exactly in both modes, encrypting and decrypting. The vectors were computed
//! independently with Python `cryptography` (AESGCM and AES-CBC with PKCS#7).

use mydata_protocol::param::{GCM_NONCE_LEN, GCM_TAG_LEN, ParamCipher, ParamMode};

const SPEC: &str = include_str!("../../../spec/protocol.md");
const CLIENT_SECRET: &str = "Kx7pQ2mN9vR4tL8w";
const CBC_IV: &str = "Hj3kM6nP9qS2uV5x";
/// The test-only nonce of the GCM column.
const NONCE: [u8; GCM_NONCE_LEN] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// One row of the §3 table.
#[derive(Debug)]
struct Vector {
    plaintext: String,
    cbc: String,
    gcm: String,
}

/// The §3 section of the spec.
fn section3() -> &'static str {
    let start = SPEC
        .find("## 3. Parameter encryption")
        .expect("protocol.md has §3");
    let rest = &SPEC[start..];
    let end = rest.find("\n## 4.").expect("§4 follows §3");
    &rest[..end]
}

/// The table rows after the "**Test vectors.**" paragraph: `| `p` | `cbc` | `gcm` |`.
fn vectors() -> Vec<Vector> {
    let s = section3();
    let table = &s[s.find("**Test vectors.**").expect("§3 has test vectors")..];
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            assert_eq!(cells.len(), 3, "row {l:?}");
            Vector {
                plaintext: cells[0].to_owned(),
                cbc: cells[1].to_owned(),
                gcm: cells[2].to_owned(),
            }
        })
        .collect()
}

fn cipher(mode: ParamMode) -> ParamCipher {
    ParamCipher::from_raw(CLIENT_SECRET, CBC_IV, mode).unwrap()
}

#[test]
fn the_spec_states_the_key_material_and_nonce_used_here() {
    let s = section3();
    assert!(s.contains(&format!("`client_secret` = `{CLIENT_SECRET}`")));
    assert!(s.contains(&format!("`cbc_iv` = `{CBC_IV}`")));
    assert!(s.contains(&format!("`K` = `{CLIENT_SECRET}{CLIENT_SECRET}`")));
    assert!(s.contains("nonce `000102030405060708090a0b`"));
    let v = vectors();
    assert_eq!(v.len(), 3, "{v:?}");
    // A national ID (shorter than one AES block), a tx_id (a UUID, 36 bytes) and a secret_key
    // (32 bytes: whole blocks, so CBC adds a full block of padding).
    assert_eq!(v[0].plaintext, "A123456789");
    assert_eq!(v[1].plaintext.len(), 36);
    assert_eq!(v[2].plaintext.len(), 32);
}

#[test]
fn cbc_vectors_encrypt_and_decrypt_exactly() {
    let c = cipher(ParamMode::Cbc);
    for v in vectors() {
        assert_eq!(c.encrypt(&v.plaintext).unwrap(), v.cbc, "{v:?}");
        assert_eq!(c.decrypt(&v.cbc).unwrap(), v.plaintext, "{v:?}");
        // The input leniency of §3: a space for `+`, missing padding.
        let lenient = v.cbc.replace('+', " ");
        assert_eq!(
            c.decrypt(lenient.trim_end_matches('=')).unwrap(),
            v.plaintext
        );
    }
}

#[test]
fn gcm_vectors_encrypt_and_decrypt_exactly() {
    let c = cipher(ParamMode::Gcm);
    for v in vectors() {
        assert_eq!(
            c.encrypt_gcm_with_nonce(&v.plaintext, NONCE).unwrap(),
            v.gcm,
            "{v:?}"
        );
        assert_eq!(c.decrypt(&v.gcm).unwrap(), v.plaintext, "{v:?}");
        let lenient = v.gcm.replace('+', " ");
        assert_eq!(
            c.decrypt(lenient.trim_end_matches('=')).unwrap(),
            v.plaintext
        );
    }
}

/// The wire form of §3: nonce first, then the ciphertext (as long as the plaintext, no padding)
/// and the 16-byte tag; a changed byte anywhere fails as the one detail-free error.
#[test]
fn gcm_vectors_have_the_documented_layout_and_are_authenticated() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let c = cipher(ParamMode::Gcm);
    for v in vectors() {
        let raw = STANDARD.decode(&v.gcm).unwrap();
        assert_eq!(raw[..GCM_NONCE_LEN], NONCE);
        assert_eq!(
            raw.len(),
            GCM_NONCE_LEN + v.plaintext.len() + GCM_TAG_LEN,
            "{v:?}"
        );
        for i in [0, GCM_NONCE_LEN, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let e = c.decrypt(&STANDARD.encode(&bad)).unwrap_err();
            assert_eq!(e.kind(), "param_decrypt", "{v:?} byte {i}");
        }
        // The CBC vector is not a GCM message under the same key, nor the other way round.
        assert!(c.decrypt(&v.cbc).is_err());
        assert!(cipher(ParamMode::Cbc).decrypt(&v.gcm).is_err());
    }
}
