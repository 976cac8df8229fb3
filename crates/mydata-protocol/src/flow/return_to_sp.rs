//! The return to the SP (spec protocol.md §6; decision D18): the `Location` that carries the
//! return code, the encrypted `tx_id` and the SP's original query back to the registered
//! return_url.

use crate::codes::ReturnCode;

use super::percent::percent_encode;

/// The return target (§6, D18): `{registered}?code={code}[&tx_id={enc_tx_id}][&{original_query}]`.
///
/// `enc_tx_id` is the encrypted `tx_id` (standard Base64); it is percent-encoded here. The original
/// query is copied unchanged when non-empty, except for code 404. (A registered return_url that
/// already holds a `?` is continued with `&`.)
pub fn return_url(
    registered: &str,
    code: ReturnCode,
    enc_tx_id: Option<&str>,
    original_query: Option<&str>,
) -> String {
    let mut url = String::with_capacity(registered.len() + 128);
    url.push_str(registered);
    url.push(if registered.contains('?') { '&' } else { '?' });
    url.push_str("code=");
    url.push_str(&code.wire().to_string());
    if let Some(t) = enc_tx_id {
        url.push_str("&tx_id=");
        url.push_str(&percent_encode(t));
    }
    if code != ReturnCode::ReturnUrlMismatch
        && let Some(q) = original_query.filter(|q| !q.is_empty())
    {
        url.push('&');
        url.push_str(q);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::percent::percent_decode;
    use crate::flow::test_support::*;
    use crate::flow::{Availability, Rejection, admit};
    use crate::ids::ResourceId;
    use crate::package::sp::PackagingMode;
    use crate::param::{ParamCipher, ParamMode};

    #[test]
    fn return_url_building() {
        let enc = cipher().encrypt(TX).unwrap();
        assert_eq!(
            return_url(REGISTERED, ReturnCode::Success, Some(&enc), Some("step=2")),
            "https://sp.example/mydata/return?code=200&tx_id=NuW8pQFamqiqoIStUPQJZpAOVicZfW1B6RYMWwW8dh9BpgGZgpZr706aZ7Fi9c1f&step=2"
        );
        assert_eq!(
            return_url(
                REGISTERED,
                ReturnCode::ReturnUrlMismatch,
                Some("x"),
                Some("a=1")
            ),
            "https://sp.example/mydata/return?code=404&tx_id=x",
            "never the query for 404"
        );
        assert_eq!(
            return_url(REGISTERED, ReturnCode::Refused, None, Some("")),
            "https://sp.example/mydata/return?code=205"
        );
        assert_eq!(
            return_url(
                REGISTERED,
                ReturnCode::Refused,
                Some("a+b/c=="),
                Some("code=1&x=%20")
            ),
            "https://sp.example/mydata/return?code=205&tx_id=a%2Bb%2Fc%3D%3D&code=1&x=%20"
        );
        assert_eq!(
            return_url("https://sp.example/r?k=v", ReturnCode::Timeout, None, None),
            "https://sp.example/r?k=v&code=408"
        );
    }

    /// The `tx_id` parameter of a return URL, percent-decoded.
    fn tx_param(url: &str) -> String {
        let q = url.split_once('?').unwrap().1;
        let v = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("tx_id="))
            .unwrap();
        assert!(!v.contains(['+', '/', '=']), "{v}");
        String::from_utf8(percent_decode(v)).unwrap()
    }

    #[test]
    fn returned_tx_id_decrypts_in_both_modes() {
        let a = run(&request(), &service()).unwrap();
        let mut seen_special = false;
        for mode in [ParamMode::Cbc, ParamMode::Gcm] {
            let c = ParamCipher::from_raw(SECRET, IV, mode).unwrap();
            for _ in 0..64 {
                let url = a
                    .return_location(REGISTERED, &c, ReturnCode::Success)
                    .unwrap();
                assert!(url.starts_with("https://sp.example/mydata/return?code=200&tx_id="));
                assert!(url.ends_with("&step=2"));
                let enc = tx_param(&url);
                seen_special |= enc.contains(['+', '/']);
                assert_eq!(c.decrypt(&enc).unwrap(), TX);
            }
        }
        assert!(seen_special, "some ciphertext held + or /");
        let e = admit(
            &a,
            None,
            PackagingMode::A,
            |_: &ResourceId| Availability::Unreachable,
            None,
            NOW,
        )
        .unwrap_err();
        let url = e.location(REGISTERED, &cipher()).unwrap().unwrap();
        assert!(url.starts_with("https://sp.example/mydata/return?code=504&tx_id="));
        assert_eq!(cipher().decrypt(&tx_param(&url)).unwrap(), TX);
        assert_eq!(
            Rejection::PlainNotFound
                .location(REGISTERED, &cipher())
                .unwrap(),
            None
        );
    }
}
