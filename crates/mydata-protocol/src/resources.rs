//! The `{resources}` path segment of the redirect (brief §9.2, spec D3).

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

use crate::error::{Error, Result};
use crate::ids::ResourceId;

/// At most this many ids in one request.
pub const MAX_RESOURCES: usize = 32;
/// At most this many characters in the segment.
pub const MAX_SEGMENT_LEN: usize = 1024;

/// An ordered list of distinct `resource_id`s, as carried by the `{resources}` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceList(Vec<ResourceId>);

impl ResourceList {
    /// A list from ids; refuses an empty list, duplicates and more than [`MAX_RESOURCES`].
    pub fn new(ids: Vec<ResourceId>) -> Result<Self> {
        if ids.is_empty() {
            return Err(Error::MalformedResources("no resource_id given"));
        }
        if ids.len() > MAX_RESOURCES {
            return Err(Error::MalformedResources("more than 32 resource_ids"));
        }
        let mut seen = HashSet::new();
        for id in &ids {
            if !seen.insert(id.as_str()) {
                return Err(Error::DuplicateResource(id.to_string()));
            }
        }
        Ok(ResourceList(ids))
    }

    /// Decodes a `{resources}` segment (already percent-decoded by the HTTP layer).
    ///
    /// Accepts standard Base64 with or without padding, the URL-safe alphabet,
    /// and a space in place of `+`.
    pub fn decode(segment: &str) -> Result<Self> {
        if segment.is_empty() {
            return Err(Error::MalformedResources("empty segment"));
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(Error::MalformedResources(
                "segment longer than 1024 characters",
            ));
        }
        let normalised: String = segment
            .chars()
            .map(|c| match c {
                ' ' | '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect();
        let trimmed = normalised.trim_end_matches('=');
        let bytes = STANDARD_NO_PAD
            .decode(trimmed)
            .map_err(|_| Error::MalformedResources("not valid Base64"))?;
        let text =
            String::from_utf8(bytes).map_err(|_| Error::MalformedResources("not valid UTF-8"))?;
        let ids = text
            .split(':')
            .map(|s| s.parse::<ResourceId>())
            .collect::<Result<Vec<_>>>()?;
        Self::new(ids)
    }

    /// Encodes the list as the segment: ids joined with `:`, standard Base64 with padding.
    ///
    /// Valid ids never yield `+` or `/`, so the segment can go into a URL path unescaped
    /// (only `=` padding may need percent-encoding for strict URL builders).
    pub fn encode(&self) -> String {
        let joined: Vec<&str> = self.0.iter().map(ResourceId::as_str).collect();
        STANDARD.encode(joined.join(":"))
    }

    /// Checks every id against the service's registered datasets.
    pub fn check_allowed<'a>(
        &self,
        registered: impl IntoIterator<Item = &'a ResourceId> + Clone,
    ) -> Result<()> {
        for id in &self.0 {
            if !registered.clone().into_iter().any(|r| r == id) {
                return Err(Error::ResourceNotAllowed(id.to_string()));
            }
        }
        Ok(())
    }

    /// The ids in request order.
    pub fn ids(&self) -> &[ResourceId] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::ReturnCode;

    fn ids(v: &[&str]) -> Vec<ResourceId> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn encodes_like_the_platform() {
        let l = ResourceList::new(ids(&["API.HOUSEHOLD1", "API.LANDREC001"])).unwrap();
        let seg = l.encode();
        assert_eq!(seg, STANDARD.encode("API.HOUSEHOLD1:API.LANDREC001"));
        assert_eq!(ResourceList::decode(&seg).unwrap(), l);
    }

    #[test]
    fn tolerant_decoding() {
        let l = ResourceList::new(ids(&["API.abcdefghij"])).unwrap();
        let seg = l.encode();
        assert!(seg.ends_with('='));
        assert_eq!(ResourceList::decode(seg.trim_end_matches('=')).unwrap(), l);
        // ASCII letters, digits, '.' and ':' never produce Base64 sextets 62 or 63,
        // so a valid segment never holds '+' or '/' and is safe in a URL path as is.
        for _ in 0..2000 {
            let l = ResourceList::new(vec![
                ResourceId::generate().unwrap(),
                ResourceId::generate().unwrap(),
            ])
            .unwrap();
            let seg = l.encode();
            assert!(!seg.contains(['+', '/']), "{seg}");
            assert_eq!(ResourceList::decode(&seg).unwrap(), l);
        }
    }

    #[test]
    fn refuses_bad_segments_with_the_right_code() {
        let dup = STANDARD.encode("API.abcdefghij:API.abcdefghij");
        let e = ResourceList::decode(&dup).unwrap_err();
        assert!(matches!(e, Error::DuplicateResource(ref s) if s == "API.abcdefghij"));
        assert_eq!(e.return_code(), ReturnCode::BadRequest);

        for seg in [
            "",
            "!!!",
            &STANDARD.encode([0xff, 0xfe]),
            &STANDARD.encode("API.short"),
            &STANDARD.encode("API.abcdefghij:"),
        ] {
            let e = ResourceList::decode(seg).unwrap_err();
            assert_eq!(e.return_code(), ReturnCode::BadRequest, "{seg}");
        }
        let too_long = "A".repeat(MAX_SEGMENT_LEN + 1);
        assert!(matches!(
            ResourceList::decode(&too_long),
            Err(Error::MalformedResources(_))
        ));
        let many: Vec<String> = (0..33).map(|i| format!("API.{i:010}")).collect();
        let e = ResourceList::decode(&STANDARD.encode(many.join(":"))).unwrap_err();
        assert!(matches!(e, Error::MalformedResources(_)));
    }

    #[test]
    fn unregistered_dataset_is_401() {
        let l = ResourceList::new(ids(&["API.abcdefghij", "API.0123456789"])).unwrap();
        let registered = ids(&["API.abcdefghij"]);
        let e = l.check_allowed(&registered).unwrap_err();
        assert!(matches!(e, Error::ResourceNotAllowed(ref s) if s == "API.0123456789"));
        assert_eq!(e.return_code(), ReturnCode::DatasetNotAllowed);
        let all = ids(&["API.0123456789", "API.abcdefghij", "API.zzzzzzzzzz"]);
        assert!(l.check_allowed(&all).is_ok());
    }
}
