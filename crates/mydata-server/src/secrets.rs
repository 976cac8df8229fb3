//! Secrets at rest (spec D44): a 32-byte master key, from which two sub-keys are derived.
//!
//! - a **hash key** for keyed hashes (HMAC-SHA-256) of secrets the platform only has to
//!   recognise: `resource_secret` and access tokens. These are long and random, so a keyed fast
//!   hash is as strong as a password hash, and keeps introspection fast;
//! - a **seal key** for AES-256-GCM of secrets the platform must use again: an SP's
//!   `client_secret`, `cbc_iv` and SP-API key.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{ServerError, ServerResult};

type HmacSha256 = Hmac<Sha256>;

/// The master key and its derived sub-keys.
#[derive(Clone)]
pub struct MasterKey {
    hash_key: [u8; 32],
    seal_key: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

fn derive(master: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as hmac::KeyInit>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl MasterKey {
    /// A master key from its 32 raw bytes.
    pub fn from_bytes(master: [u8; 32]) -> Self {
        MasterKey {
            hash_key: derive(&master, "mydata hash key v1"),
            seal_key: derive(&master, "mydata seal key v1"),
        }
    }

    /// A fresh random master key.
    pub fn generate() -> ServerResult<Self> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| ServerError::Internal(format!("random: {e}")))?;
        Ok(Self::from_bytes(b))
    }

    /// Reads `master.key` (64 hex characters) from `dir`, creating it (mode 0600) if absent.
    pub fn load_or_create(dir: &Path) -> ServerResult<Self> {
        let path = dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b)
                    .map_err(|e| ServerError::Internal(format!("random: {e}")))?;
                write_private(&path, hex::encode(b).as_bytes())?;
                Ok(Self::from_bytes(b))
            }
            Err(e) => Err(ServerError::Config(format!("{}: {e}", path.display()))),
        }
    }

    /// A master key from 64 hex characters.
    pub fn from_hex(text: &str) -> ServerResult<Self> {
        let v = hex::decode(text)
            .map_err(|_| ServerError::Config("master key: expected 64 hex characters".into()))?;
        let b: [u8; 32] = v
            .try_into()
            .map_err(|_| ServerError::Config("master key: expected 64 hex characters".into()))?;
        Ok(Self::from_bytes(b))
    }

    /// HMAC-SHA-256 of `parts` (length-prefixed, so parts cannot run into each other).
    pub fn keyed_hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac();
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Checks `expected` against the keyed hash of `parts` in constant time.
    pub fn verify_keyed_hash(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        let mut mac = self.mac();
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.verify_slice(expected).is_ok()
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.hash_key)
            .expect("HMAC takes any key length")
    }

    /// AES-256-GCM of `plain` with a random nonce, bound to `context`: hex(nonce ‖ ct ‖ tag).
    pub fn seal(&self, context: &str, plain: &str) -> ServerResult<String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| ServerError::Internal(format!("random: {e}")))?;
        let cipher = Aes256Gcm::new(&self.seal_key.into());
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                aes_gcm::aead::Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| ServerError::Internal("seal failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(hex::encode(out))
    }

    /// Opens what [`MasterKey::seal`] produced under the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> ServerResult<String> {
        let bad = || ServerError::Internal(format!("sealed value for {context} does not open"));
        let raw = hex::decode(sealed).map_err(|_| bad())?;
        if raw.len() < 12 + 16 {
            return Err(bad());
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| bad())?;
        let cipher = Aes256Gcm::new(&self.seal_key.into());
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                aes_gcm::aead::Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| bad())?;
        String::from_utf8(plain).map_err(|_| bad())
    }
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, data: &[u8]) -> ServerResult<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        // Exactly 0600 even under a umask that takes owner bits away (spec D48).
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(crate::datadir::FILE_MODE))
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
    }
    f.write_all(data)
        .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
}

/// Fresh random bytes.
pub fn random_bytes<const N: usize>() -> ServerResult<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| ServerError::Internal(format!("random: {e}")))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_context_binding() {
        let k = MasterKey::from_bytes([7; 32]);
        let s = k.seal("sp:CLI.A", "secret").unwrap();
        assert_eq!(k.open("sp:CLI.A", &s).unwrap(), "secret");
        assert!(k.open("sp:CLI.B", &s).is_err());
        assert_ne!(s, k.seal("sp:CLI.A", "secret").unwrap());
        let other = MasterKey::from_bytes([8; 32]);
        assert!(other.open("sp:CLI.A", &s).is_err());
    }

    #[test]
    fn keyed_hash_is_length_prefixed() {
        let k = MasterKey::from_bytes([1; 32]);
        assert_ne!(k.keyed_hash(&[b"ab", b"c"]), k.keyed_hash(&[b"a", b"bc"]));
        let h = k.keyed_hash(&[b"x"]);
        assert!(k.verify_keyed_hash(&[b"x"], &h));
        assert!(!k.verify_keyed_hash(&[b"y"], &h));
        assert!(!MasterKey::from_bytes([2; 32]).verify_keyed_hash(&[b"x"], &h));
    }
}
