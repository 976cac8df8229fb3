//! `META-INFO/manifest.xml` of DP and SP packages: writing, and parsing that refuses DTDs and entities.
//!
//! DP form: `<files><file><filename/><digest/></file>…</files>`.
//! SP form: `<files><file><filename/><resource_id/><resource_name/><code/></file>…</files>`.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;

use crate::codes::DatasetCode;
use crate::error::{Error, Result};

const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// One line of a DP manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DpManifestEntry {
    /// Path of the data file inside the package.
    pub filename: String,
    /// SHA-256 of the file, lowercase hex.
    pub digest: String,
}

/// One line of an SP manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpManifestEntry {
    /// `{resource_id}.zip`, or empty when no file ships for this dataset.
    pub filename: String,
    /// The dataset.
    pub resource_id: String,
    /// The dataset's name.
    pub resource_name: String,
    /// The dataset's outcome code.
    pub code: u16,
}

/// Writes a DP manifest.
pub fn write_dp(entries: &[DpManifestEntry]) -> String {
    let mut s = String::from(DECL);
    s.push_str("<files>");
    for e in entries {
        s.push_str("<file><filename>");
        s.push_str(&escape(e.filename.as_str()));
        s.push_str("</filename><digest>");
        s.push_str(&e.digest);
        s.push_str("</digest></file>");
    }
    s.push_str("</files>\n");
    s
}

/// Writes an SP manifest.
pub fn write_sp(entries: &[SpManifestEntry]) -> String {
    let mut s = String::from(DECL);
    s.push_str("<files>");
    for e in entries {
        s.push_str("<file><filename>");
        s.push_str(&escape(e.filename.as_str()));
        s.push_str("</filename><resource_id>");
        s.push_str(&escape(e.resource_id.as_str()));
        s.push_str("</resource_id><resource_name>");
        s.push_str(&escape(e.resource_name.as_str()));
        s.push_str("</resource_name><code>");
        s.push_str(&e.code.to_string());
        s.push_str("</code></file>");
    }
    s.push_str("</files>\n");
    s
}

fn err(msg: impl Into<String>) -> Error {
    Error::Manifest(msg.into())
}

/// Parses `<files><file><k>v</k>…</file>…</files>` into one map per `<file>`.
///
/// Refuses a DTD, entity references other than the five predefined ones,
/// processing instructions, elements nested deeper than `<file>`'s children,
/// and repeated children.
pub fn parse_records(bytes: &[u8]) -> Result<Vec<BTreeMap<String, String>>> {
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
        .map_err(|_| err("not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    let mut records = Vec::new();
    // Path of open elements: files / file / field.
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut current: Option<BTreeMap<String, String>> = None;
    let mut field: Option<(String, String)> = None;
    loop {
        let ev = reader.read_event().map_err(|e| err(e.to_string()))?;
        match ev {
            Event::Decl(_) | Event::Comment(_) => {}
            Event::DocType(_) => return Err(Error::XmlDtd),
            Event::PI(_) => return Err(err("processing instructions are refused")),
            Event::Start(e) => {
                let name = e.name().as_ref().to_owned();
                match (depth, name.as_str()) {
                    (0, "files") if !seen_root => seen_root = true,
                    (0, _) => {
                        return Err(err(format!("root element must be <files>, found <{name}>")));
                    }
                    (1, "file") => current = Some(BTreeMap::new()),
                    (1, _) => {
                        return Err(err(format!("<files> may only hold <file>, found <{name}>")));
                    }
                    (2, _) => field = Some((name, String::new())),
                    _ => return Err(err("elements nested too deep")),
                }
                depth += 1;
            }
            Event::Empty(e) => {
                let name = e.name().as_ref().to_owned();
                match (depth, name.as_str()) {
                    (0, "files") if !seen_root => seen_root = true,
                    (1, "file") => records.push(BTreeMap::new()),
                    (2, _) => insert(current.as_mut(), name, String::new())?,
                    _ => return Err(err(format!("unexpected empty element <{name}/>"))),
                }
            }
            Event::End(_) => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| err("unbalanced end tag"))?;
                match depth {
                    2 => {
                        if let Some((k, v)) = field.take() {
                            insert(current.as_mut(), k, v)?;
                        }
                    }
                    1 => records.extend(current.take()),
                    _ => {}
                }
            }
            Event::Text(t) => {
                let s = t.xml10_content();
                push_text(&mut field, depth, &s)?;
            }
            Event::CData(c) => {
                let s = c.into_inner().into_owned();
                push_text(&mut field, depth, &s)?;
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref().map_err(|e| err(e.to_string()))? {
                        Some(c) => c.to_string(),
                        None => return Err(err("invalid character reference")),
                    }
                } else {
                    let name = r.xml10_content();
                    match resolve_predefined_entity(&name) {
                        Some(v) => v.to_owned(),
                        None => return Err(Error::XmlEntity(name.into_owned())),
                    }
                };
                push_text(&mut field, depth, &resolved)?;
            }
            Event::Eof => break,
        }
    }
    if !seen_root {
        return Err(err("no <files> root element"));
    }
    if depth != 0 {
        return Err(err("document ends inside an element"));
    }
    Ok(records)
}

fn insert(rec: Option<&mut BTreeMap<String, String>>, k: String, v: String) -> Result<()> {
    let rec = rec.ok_or_else(|| err("field outside <file>"))?;
    if rec.insert(k.clone(), v).is_some() {
        return Err(err(format!("<{k}> appears twice in one <file>")));
    }
    Ok(())
}

fn push_text(field: &mut Option<(String, String)>, depth: usize, s: &str) -> Result<()> {
    match field {
        Some((_, v)) if depth == 3 => {
            v.push_str(s);
            Ok(())
        }
        _ if s.trim().is_empty() => Ok(()),
        _ => Err(err("text outside a field element")),
    }
}

fn take(rec: &mut BTreeMap<String, String>, k: &str) -> Result<String> {
    rec.remove(k)
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| err(format!("<file> without <{k}>")))
}

/// Parses a DP manifest. Digests must be 64 hex characters (either case; returned lowercase).
pub fn parse_dp(bytes: &[u8]) -> Result<Vec<DpManifestEntry>> {
    parse_records(bytes)?
        .into_iter()
        .map(|mut r| {
            let filename = take(&mut r, "filename")?;
            let digest = take(&mut r, "digest")?.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(format!(
                    "digest of {filename:?} is not 64 hex characters"
                )));
            }
            Ok(DpManifestEntry { filename, digest })
        })
        .collect()
}

/// Parses an SP manifest.
pub fn parse_sp(bytes: &[u8]) -> Result<Vec<SpManifestEntry>> {
    parse_records(bytes)?
        .into_iter()
        .map(|mut r| {
            let filename = take(&mut r, "filename")?;
            let resource_id = take(&mut r, "resource_id")?;
            let resource_name = r
                .remove("resource_name")
                .unwrap_or_default()
                .trim()
                .to_owned();
            let code_text = take(&mut r, "code")?;
            let code: u16 = code_text.parse().map_err(|_| {
                err(format!(
                    "code {code_text:?} of {resource_id} is not a number"
                ))
            })?;
            if DatasetCode::from_wire(code).is_none() && !(100..=599).contains(&code) {
                return Err(err(format!("code {code} of {resource_id} is out of range")));
            }
            Ok(SpManifestEntry {
                filename,
                resource_id,
                resource_name,
                code,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dp_round_trip_with_escaping() {
        let entries = vec![
            DpManifestEntry {
                filename: "a&b<c>.json".into(),
                digest: "ab".repeat(32),
            },
            DpManifestEntry {
                filename: "戶籍.pdf".into(),
                digest: "00".repeat(32),
            },
        ];
        let xml = write_dp(&entries);
        assert!(xml.contains("a&amp;b&lt;c&gt;.json"));
        assert_eq!(parse_dp(xml.as_bytes()).unwrap(), entries);
    }

    #[test]
    fn sp_round_trip() {
        let entries = vec![
            SpManifestEntry {
                filename: "API.abcdefghij.zip".into(),
                resource_id: "API.abcdefghij".into(),
                resource_name: "個人戶籍資料".into(),
                code: 200,
            },
            SpManifestEntry {
                filename: String::new(),
                resource_id: "API.0123456789".into(),
                resource_name: "x".into(),
                code: 504,
            },
        ];
        assert_eq!(parse_sp(write_sp(&entries).as_bytes()).unwrap(), entries);
    }

    #[test]
    fn tolerant_of_layout_and_case() {
        let xml = "\u{feff}<?xml version=\"1.0\"?>\n<!-- c -->\n<files>\n  <file>\n    <filename> a.json </filename>\n    <digest>ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789</digest>\n  </file>\n</files>\n";
        let p = parse_dp(xml.as_bytes()).unwrap();
        assert_eq!(p[0].filename, "a.json");
        assert_eq!(
            p[0].digest,
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        );
        let refs = "<files><file><filename>a&#x41;&#66;&quot;</filename><digest>".to_owned()
            + &"0".repeat(64)
            + "</digest></file></files>";
        assert_eq!(parse_dp(refs.as_bytes()).unwrap()[0].filename, "aAB\"");
    }

    #[test]
    fn refuses_dtd_and_entities() {
        let dtd = "<?xml version=\"1.0\"?><!DOCTYPE files [<!ENTITY x \"boom\">]><files></files>";
        assert!(matches!(parse_dp(dtd.as_bytes()), Err(Error::XmlDtd)));
        let ent = "<files><file><filename>&x;</filename><digest>0</digest></file></files>";
        assert!(matches!(parse_dp(ent.as_bytes()), Err(Error::XmlEntity(ref n)) if n == "x"));
        let ext = "<!DOCTYPE files SYSTEM \"file:///etc/passwd\"><files/>";
        assert!(matches!(parse_dp(ext.as_bytes()), Err(Error::XmlDtd)));
    }

    #[test]
    fn refuses_malformed() {
        let d = "0".repeat(64);
        for bad in [
            "".to_owned(),
            "<other/>".to_owned(),
            "<files><x/></files>".to_owned(),
            "<files><file><filename>a</filename></file></files>".to_owned(),
            "<files><file><filename>a</filename><digest>zz</digest></file></files>".to_owned(),
            format!(
                "<files><file><filename>a</filename><filename>b</filename><digest>{d}</digest></file></files>"
            ),
            format!(
                "<files><file><filename><b>a</b></filename><digest>{d}</digest></file></files>"
            ),
            format!("<files>text<file><filename>a</filename><digest>{d}</digest></file></files>"),
            "<files><file>".to_owned(),
            "<?pi x?><files/>".to_owned(),
            "<files/><files/>".to_owned(),
        ] {
            assert!(parse_dp(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_dp(b"\xff\xfe").is_err());
        let bad_code = "<files><file><filename/><resource_id>API.x</resource_id><code>abc</code></file></files>";
        assert!(parse_sp(bad_code.as_bytes()).is_err());
    }
}
