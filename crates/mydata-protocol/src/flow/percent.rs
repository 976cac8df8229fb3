//! Percent coding of URL components (spec protocol.md §3, §5.2, §6; README "Base64 and hex
//! variants"): decoding the redirect's `{resources}` segment (§5.3 step 7) and encoding the
//! Base64 `tx_id` of the return (§6).

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `%XX` sequences; anything else, including a stray `%`, is kept as is.
pub(super) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_value),
                b.get(i + 2).copied().and_then(hex_value),
            )
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Percent-encodes every byte outside the URI unreserved set (`A–Z a–z 0–9 - . _ ~`).
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding() {
        assert_eq!(
            percent_encode("aZ09-._~+/= %é"),
            "aZ09-._~%2B%2F%3D%20%25%C3%A9"
        );
        assert_eq!(percent_decode("a%2Bb%2fc%3D%zz%4"), b"a+b/c=%zz%4");
        assert_eq!(percent_decode("%"), b"%");
    }
}
