//! Entry-name rules (spec D7): no absolute paths, drive letters, `..`, control characters.

use crate::error::{Error, Result};

/// Longest entry name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The three metadata entries of a DP package, and the prefix they live under.
pub const META_DIR: &str = "META-INFO";
/// `META-INFO/manifest.xml`.
pub const MANIFEST: &str = "META-INFO/manifest.xml";
/// `META-INFO/manifest.sha256withrsa`.
pub const SIGNATURE: &str = "META-INFO/manifest.sha256withrsa";
/// `META-INFO/certificate.cer`.
pub const CERTIFICATE: &str = "META-INFO/certificate.cer";

/// Maps the legacy `META-INFO\name` form to `META-INFO/name`; other names are returned unchanged.
pub fn normalise_meta(name: &str) -> std::borrow::Cow<'_, str> {
    match name.strip_prefix("META-INFO\\") {
        Some(rest) if !rest.contains(['\\', '/']) => format!("{META_DIR}/{rest}").into(),
        _ => name.into(),
    }
}

/// Checks a (normalised) entry name against spec D7.
pub fn check(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::UnsafeEntryName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("longer than 255 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("control character");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return bad("absolute path");
    }
    if name.contains('\\') {
        return bad("backslash outside the META-INFO\\ prefix");
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return bad("drive letter");
    }
    let body = name.strip_suffix('/').unwrap_or(name);
    for seg in body.split('/') {
        match seg {
            "" => return bad("empty path segment"),
            "." | ".." => return bad("'.' or '..' path segment"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in [
            "a.json",
            "資料.pdf",
            "dir/b.csv",
            "META-INFO/manifest.xml",
            "dir/",
            "a..b.txt",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [
            "",
            "/etc/passwd",
            "\\evil",
            "../up",
            "a/../../b",
            "a/./b",
            "C:evil",
            "c:/x",
            "a//b",
            "a\\b",
            "nul\0",
            "tab\tname",
            &"x".repeat(256),
        ] {
            let e = check(bad).unwrap_err();
            assert!(matches!(e, Error::UnsafeEntryName { .. }), "{bad:?}");
            assert_eq!(e.file(), Some(bad));
        }
    }

    #[test]
    fn legacy_backslash_meta() {
        assert_eq!(
            normalise_meta("META-INFO\\manifest.xml"),
            "META-INFO/manifest.xml"
        );
        assert_eq!(normalise_meta("META-INFO\\a\\b"), "META-INFO\\a\\b");
        assert_eq!(normalise_meta("x\\y"), "x\\y");
        assert!(check(&normalise_meta("META-INFO\\..\\x")).is_err());
    }
}
