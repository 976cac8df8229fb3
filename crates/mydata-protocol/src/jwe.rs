//! The MyData-API's JWE (brief §9.5, spec D2), built on the `josekit` crate.
//!
//! * [`JweMode::Cbc`]: `alg` A256KW, `enc` A256CBC-HS512. The content IV is
//!   the SP's `cbc_iv` by default (as in service; safe because every message has
//!   a fresh random 64-byte content key), or random on request.
//! * [`JweMode::Gcm`]: `alg` A256GCMKW (random wrap IV per message, carried in
//!   the header), `enc` A256GCM (random content IV).
//!
//! josekit always draws a random content IV when it serialises, so encryption
//! assembles the compact form here from josekit's key-wrap and content
//! encryption primitives; decryption is josekit's own, after this module has
//! checked that the header names exactly the SP's registered algorithms, no
//! compression (`zip`) and no critical extensions (`crit`, which josekit would
//! not refuse on its own).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use josekit::jwe::{self, JweContentEncryption, JweEncrypter, JweHeader};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{CbcIv, ClientId, SecretKey};
use crate::random::random_bytes;

/// The JWE algorithms an SP registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JweMode {
    /// A256KW + A256CBC-HS512 (default).
    #[default]
    Cbc,
    /// A256GCMKW + A256GCM.
    Gcm,
}

impl std::fmt::Display for JweMode {
    /// As registered and stored: `cbc` or `gcm`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JweMode::Cbc => "cbc",
            JweMode::Gcm => "gcm",
        })
    }
}

impl JweMode {
    /// The `alg` header value.
    pub const fn alg(self) -> &'static str {
        match self {
            JweMode::Cbc => "A256KW",
            JweMode::Gcm => "A256GCMKW",
        }
    }

    /// The `enc` header value.
    pub const fn enc(self) -> &'static str {
        match self {
            JweMode::Cbc => "A256CBC-HS512",
            JweMode::Gcm => "A256GCM",
        }
    }

    fn content(self) -> &'static dyn JweContentEncryption {
        match self {
            JweMode::Cbc => &jwe::enc::A256CBC_HS512,
            JweMode::Gcm => &jwe::enc::A256GCM,
        }
    }
}

/// Where the content IV of a CBC-mode JWE comes from (D2, §12). The platform passes
/// [`ContentIv::SpCbcIv`] by default and [`ContentIv::Random`] under its `jwe_random_iv` option.
/// A GCM-mode JWE always gets a random 96-bit IV, whichever is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentIv<'a> {
    /// The UTF-8 bytes of the SP's `cbc_iv`, as the platform in service does.
    SpCbcIv(&'a CbcIv),
    /// Fresh random bytes for every message (16 for `A256CBC-HS512`), from the operating system.
    Random,
}

/// The decrypted MyData-API payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredZip {
    /// `{client_id}.zip`.
    pub filename: String,
    /// The zip bytes.
    pub zip: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    filename: String,
    data: String,
}

const DATA_PREFIX: &str = "application/zip;data:";

/// Builds the payload JSON `{"filename":"{client_id}.zip","data":"application/zip;data:{base64url}"}`.
pub fn payload_json(client_id: &ClientId, zip: &[u8]) -> String {
    let p = Payload {
        filename: format!("{client_id}.zip"),
        data: format!("{DATA_PREFIX}{}", URL_SAFE_NO_PAD.encode(zip)),
    };
    // Serialising two strings cannot fail.
    serde_json::to_string(&p).unwrap_or_default()
}

/// Parses a payload JSON; the filename must be `{client_id}.zip` when `client_id` is given.
pub fn parse_payload(json: &[u8], client_id: Option<&ClientId>) -> Result<DeliveredZip> {
    let p: Payload = serde_json::from_slice(json)
        .map_err(|e| Error::JwePayload(format!("not the {{filename, data}} object: {e}")))?;
    if let Some(c) = client_id
        && p.filename != format!("{c}.zip")
    {
        return Err(Error::JwePayload(format!(
            "filename {:?} is not {c}.zip",
            p.filename
        )));
    }
    if !p.filename.ends_with(".zip") {
        return Err(Error::JwePayload(format!(
            "filename {:?} does not end in .zip",
            p.filename
        )));
    }
    let b64 = p
        .data
        .strip_prefix(DATA_PREFIX)
        .ok_or_else(|| Error::JwePayload(format!("data does not start with {DATA_PREFIX:?}")))?;
    let zip = URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| Error::JwePayload("data is not base64url".into()))?;
    Ok(DeliveredZip {
        filename: p.filename,
        zip,
    })
}

fn jose(e: josekit::JoseError) -> Error {
    Error::Jwe(e.to_string())
}

/// Encrypts a raw plaintext as a compact JWE under the SP's `secret_key`.
pub fn encrypt_compact(
    plaintext: &[u8],
    key: &SecretKey,
    mode: JweMode,
    iv: ContentIv<'_>,
) -> Result<String> {
    let kek = key.as_str().as_bytes();
    let encrypter: Box<dyn JweEncrypter> = match mode {
        JweMode::Cbc => Box::new(jwe::A256KW.encrypter_from_bytes(kek).map_err(jose)?),
        JweMode::Gcm => Box::new(jwe::A256GCMKW.encrypter_from_bytes(kek).map_err(jose)?),
    };
    let content = mode.content();
    let mut cek = vec![0u8; content.key_len()];
    random_bytes(&mut cek)?;
    let mut civ = vec![0u8; content.iv_len()];
    match (mode, iv) {
        (JweMode::Cbc, ContentIv::SpCbcIv(sp)) => civ.copy_from_slice(sp.as_str().as_bytes()),
        _ => random_bytes(&mut civ)?,
    }

    let mut header = JweHeader::new();
    header.set_algorithm(mode.alg());
    header.set_content_encryption(mode.enc());
    let mut out_header = header.clone();
    let wrapped = encrypter
        .encrypt(&cek, &header, &mut out_header)
        .map_err(jose)?
        .ok_or_else(|| Error::Jwe("key wrap produced no encrypted key".into()))?;
    let header_json =
        serde_json::to_string(out_header.claims_set()).map_err(|e| Error::Jwe(e.to_string()))?;
    let header_b64 = URL_SAFE_NO_PAD.encode(header_json);
    let (ct, tag) = content
        .encrypt(&cek, Some(&civ), plaintext, header_b64.as_bytes())
        .map_err(jose)?;
    let tag = tag.ok_or_else(|| Error::Jwe("content encryption produced no tag".into()))?;
    Ok(format!(
        "{header_b64}.{}.{}.{}.{}",
        URL_SAFE_NO_PAD.encode(wrapped),
        URL_SAFE_NO_PAD.encode(civ),
        URL_SAFE_NO_PAD.encode(ct),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// Encrypts a delivered zip for an SP: the MyData-API response body.
pub fn encrypt_package(
    client_id: &ClientId,
    zip: &[u8],
    key: &SecretKey,
    mode: JweMode,
    iv: ContentIv<'_>,
) -> Result<String> {
    encrypt_compact(payload_json(client_id, zip).as_bytes(), key, mode, iv)
}

/// Decrypts a compact JWE, accepting only the SP's registered mode and neither a `zip` nor a
/// `crit` header parameter (§12, D2). Every refusal is [`Error::Jwe`] (kind `jwe`).
pub fn decrypt_compact(compact: &str, key: &SecretKey, mode: JweMode) -> Result<Vec<u8>> {
    let compact = compact.trim();
    let header_b64 = compact.split('.').next().unwrap_or_default();
    let header_raw = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| Error::Jwe("protected header is not base64url".into()))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header_raw)
        .map_err(|_| Error::Jwe("protected header is not a JSON object".into()))?;
    let field = |k: &str| header.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if field("alg") != mode.alg() || field("enc") != mode.enc() {
        return Err(Error::Jwe(format!(
            "alg/enc {}/{} is not the registered {}/{}",
            field("alg"),
            field("enc"),
            mode.alg(),
            mode.enc()
        )));
    }
    if header.contains_key("zip") {
        return Err(Error::Jwe("compressed JWE (zip header) is refused".into()));
    }
    // The platform never sets `crit` (§12, D2), and this reader understands no extension, so
    // any `crit` (even an empty or malformed one) is refused, before any key is used.
    if header.contains_key("crit") {
        return Err(Error::Jwe(
            "critical header parameters (crit header) are refused".into(),
        ));
    }
    let kek = key.as_str().as_bytes();
    let (plain, _) = match mode {
        JweMode::Cbc => jwe::deserialize_compact(
            compact,
            &jwe::A256KW.decrypter_from_bytes(kek).map_err(jose)?,
        ),
        JweMode::Gcm => jwe::deserialize_compact(
            compact,
            &jwe::A256GCMKW.decrypter_from_bytes(kek).map_err(jose)?,
        ),
    }
    .map_err(jose)?;
    Ok(plain)
}

/// Decrypts a MyData-API response body into the delivered zip.
pub fn decrypt_package(
    compact: &str,
    key: &SecretKey,
    mode: JweMode,
    client_id: Option<&ClientId>,
) -> Result<DeliveredZip> {
    parse_payload(&decrypt_compact(compact, key, mode)?, client_id)
}

/// The content IV of a compact JWE (its third part), for SPs that check it equals their `cbc_iv`.
pub fn content_iv(compact: &str) -> Result<Vec<u8>> {
    let part = compact
        .trim()
        .split('.')
        .nth(2)
        .ok_or_else(|| Error::Jwe("not five parts".into()))?;
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Error::Jwe("IV is not base64url".into()))
}

/// Standard Base64 of bytes (re-exported helper for tools that print binary values).
pub fn to_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(jwe: &str) -> serde_json::Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwe.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    fn key() -> SecretKey {
        "abcdefghijABCDEFGHIJ0123456789xy".parse().unwrap()
    }

    #[test]
    fn cbc_round_trip_with_sp_iv() {
        let cid: ClientId = "CLI.abcdefghij".parse().unwrap();
        let iv: CbcIv = "0123456789abcdef".parse().unwrap();
        let seal = || {
            encrypt_package(
                &cid,
                b"PK\x03\x04zip",
                &key(),
                JweMode::Cbc,
                ContentIv::SpCbcIv(&iv),
            )
            .unwrap()
        };
        let jwe = seal();
        assert_eq!(jwe.split('.').count(), 5);
        assert_eq!(content_iv(&jwe).unwrap(), b"0123456789abcdef");
        let header = header(&jwe);
        assert_eq!(header["alg"], "A256KW");
        assert_eq!(header["enc"], "A256CBC-HS512");
        let d = decrypt_package(&jwe, &key(), JweMode::Cbc, Some(&cid)).unwrap();
        assert_eq!(d.zip, b"PK\x03\x04zip");
        assert_eq!(d.filename, "CLI.abcdefghij.zip");
        // A fresh content key each time even with the same IV.
        let again = seal();
        assert_ne!(jwe.split('.').nth(1), again.split('.').nth(1));
    }

    #[test]
    fn cbc_random_iv_is_fresh_per_message() {
        let iv: CbcIv = "0123456789abcdef".parse().unwrap();
        let a = encrypt_compact(b"same", &key(), JweMode::Cbc, ContentIv::Random).unwrap();
        let b = encrypt_compact(b"same", &key(), JweMode::Cbc, ContentIv::Random).unwrap();
        let (ia, ib) = (content_iv(&a).unwrap(), content_iv(&b).unwrap());
        assert_eq!((ia.len(), ib.len()), (16, 16));
        assert_ne!(ia, ib);
        assert_ne!(ia, iv.as_str().as_bytes());
        for jwe in [&a, &b] {
            assert_eq!(decrypt_compact(jwe, &key(), JweMode::Cbc).unwrap(), b"same");
        }
        let fixed =
            encrypt_compact(b"same", &key(), JweMode::Cbc, ContentIv::SpCbcIv(&iv)).unwrap();
        assert_eq!(content_iv(&fixed).unwrap(), iv.as_str().as_bytes());
    }

    #[test]
    fn gcm_round_trip_random_ivs() {
        let a = encrypt_compact(b"hello", &key(), JweMode::Gcm, ContentIv::Random).unwrap();
        let b = encrypt_compact(b"hello", &key(), JweMode::Gcm, ContentIv::Random).unwrap();
        assert_eq!(content_iv(&a).unwrap().len(), 12);
        assert_ne!(content_iv(&a).unwrap(), content_iv(&b).unwrap());
        let ha = header(&a);
        let hb = header(&b);
        assert_eq!(ha["alg"], "A256GCMKW");
        assert_ne!(
            ha["iv"], hb["iv"],
            "the key-wrap IV must be fresh per message"
        );
        assert_eq!(decrypt_compact(&a, &key(), JweMode::Gcm).unwrap(), b"hello");
    }

    #[test]
    fn refuses_wrong_mode_key_tamper_and_zip() {
        let a = encrypt_compact(b"hello", &key(), JweMode::Cbc, ContentIv::Random).unwrap();
        assert!(matches!(
            decrypt_compact(&a, &key(), JweMode::Gcm),
            Err(Error::Jwe(_))
        ));
        let other: SecretKey = "zzzzzzzzzzABCDEFGHIJ0123456789xy".parse().unwrap();
        assert!(matches!(
            decrypt_compact(&a, &other, JweMode::Cbc),
            Err(Error::Jwe(_))
        ));
        let mut parts: Vec<String> = a.split('.').map(str::to_owned).collect();
        let mut ct = URL_SAFE_NO_PAD.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = URL_SAFE_NO_PAD.encode(ct);
        assert!(matches!(
            decrypt_compact(&parts.join("."), &key(), JweMode::Cbc),
            Err(Error::Jwe(_))
        ));
        let zip_header =
            URL_SAFE_NO_PAD.encode(r#"{"alg":"A256KW","enc":"A256CBC-HS512","zip":"DEF"}"#);
        parts[0] = zip_header;
        let e = decrypt_compact(&parts.join("."), &key(), JweMode::Cbc).unwrap_err();
        assert!(e.to_string().contains("zip"), "{e}");
        for junk in ["", "a.b", "!!!.a.b.c.d", "e30.a.b.c.d"] {
            assert!(
                matches!(
                    decrypt_compact(junk, &key(), JweMode::Cbc),
                    Err(Error::Jwe(_))
                ),
                "{junk}"
            );
        }
    }

    /// A JWE that is valid in every other respect (josekit builds it, the tag verifies) but whose
    /// protected header carries `crit` is refused in both modes, with the same error kind as a
    /// `zip` header (§12, D2).
    #[test]
    fn refuses_crit_in_both_modes() {
        let kek = key();
        for mode in [JweMode::Cbc, JweMode::Gcm] {
            // Even an empty list (which RFC 7516 forbids) is refused.
            for crit in [serde_json::json!(["exp"]), serde_json::json!([])] {
                let mut h = JweHeader::new();
                h.set_algorithm(mode.alg());
                h.set_content_encryption(mode.enc());
                h.set_claim("crit", Some(crit.clone())).unwrap();
                h.set_claim("exp", Some(serde_json::json!(1))).unwrap();
                let bytes = kek.as_str().as_bytes();
                let jwe = match mode {
                    JweMode::Cbc => jwe::serialize_compact(
                        b"hello",
                        &h,
                        &jwe::A256KW.encrypter_from_bytes(bytes).unwrap(),
                    ),
                    JweMode::Gcm => jwe::serialize_compact(
                        b"hello",
                        &h,
                        &jwe::A256GCMKW.encrypter_from_bytes(bytes).unwrap(),
                    ),
                }
                .unwrap();
                assert!(header(&jwe).get("crit").is_some(), "{mode:?} {crit}");
                let e = decrypt_compact(&jwe, &kek, mode).unwrap_err();
                assert!(matches!(e, Error::Jwe(_)), "{mode:?} {crit}: {e:?}");
                assert_eq!(e.kind(), "jwe");
                assert!(e.to_string().contains("crit"), "{e}");
                // Without `crit`, the same construction decrypts: the refusal is the header's.
                let mut plain = JweHeader::new();
                plain.set_algorithm(mode.alg());
                plain.set_content_encryption(mode.enc());
                let ok = match mode {
                    JweMode::Cbc => jwe::serialize_compact(
                        b"hello",
                        &plain,
                        &jwe::A256KW.encrypter_from_bytes(bytes).unwrap(),
                    ),
                    JweMode::Gcm => jwe::serialize_compact(
                        b"hello",
                        &plain,
                        &jwe::A256GCMKW.encrypter_from_bytes(bytes).unwrap(),
                    ),
                }
                .unwrap();
                assert_eq!(decrypt_compact(&ok, &kek, mode).unwrap(), b"hello");
            }
        }
    }

    #[test]
    fn payload_rules() {
        let cid: ClientId = "CLI.abcdefghij".parse().unwrap();
        let other: ClientId = "CLI.zzzzzzzzzz".parse().unwrap();
        let json = payload_json(&cid, &[0xfb, 0xff]);
        assert_eq!(
            json,
            r#"{"filename":"CLI.abcdefghij.zip","data":"application/zip;data:-_8"}"#
        );
        assert_eq!(
            parse_payload(json.as_bytes(), Some(&cid)).unwrap().zip,
            [0xfb, 0xff]
        );
        assert!(parse_payload(json.as_bytes(), Some(&other)).is_err());
        let padded = r#"{"filename":"x.zip","data":"application/zip;data:-_8="}"#;
        assert_eq!(
            parse_payload(padded.as_bytes(), None).unwrap().zip,
            [0xfb, 0xff]
        );
        for bad in [
            r#"{"filename":"x.zip","data":"data:AA"}"#,
            r#"{"filename":"x.txt","data":"application/zip;data:AA"}"#,
            "[]",
            r#"{"filename":"x.zip","data":"application/zip;data:*"}"#,
        ] {
            assert!(
                matches!(
                    parse_payload(bad.as_bytes(), None),
                    Err(Error::JwePayload(_))
                ),
                "{bad}"
            );
        }
    }
}
