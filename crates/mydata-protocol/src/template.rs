//! DP-API request templates (spec §9.2, D28).
//!
//! A dataset's template is a list of (location, name, value) [`Item`]s. Each value is text with
//! `{{placeholder}}` substitutions. [`Template::new`] checks a template once, at registration;
//! [`Template::render`] builds the typed description of one call ([`Rendered`]) from the
//! [`Values`] of one call series, encoding every value for its location:
//!
//! - `query` and `form` values are percent-encoded as `application/x-www-form-urlencoded`;
//! - `json` values are JSON string values, placed at the item's JSON Pointer in the template's
//!   JSON skeleton;
//! - `header` values are sent as they are, and a header value that would contain CR, LF, NUL or
//!   any other control character except HTAB is never sent ([`TemplateError::HeaderValue`]).
//!
//! No value is ever parsed as syntax: injection into a header, the query string or the JSON body
//! is impossible by construction. The platform's own `transaction_uid` query parameter and its
//! `Authorization` and `Accept` headers are not part of a template: see [`call_url`] and
//! [`RESERVED_HEADERS`].
//!
//! A template is stored as JSON:
//!
//! ```json
//! {"items": [
//!    {"location": "query",  "name": "id",     "value": "{{pid}}"},
//!    {"location": "header", "name": "X-Name", "value": "{{name}}"},
//!    {"location": "json",   "name": "/who/birth", "value": "{{birthdate:roc7}}"}
//!  ],
//!  "skeleton": {"version": 2, "who": {}}}
//! ```
//!
//! [`Template::from_json`] also accepts a bare array of items (no skeleton).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::date::{CivilDate, DateFormat};

/// Most items in one template.
pub const MAX_ITEMS: usize = 64;
/// Longest item name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest item value (the template text, before substitution), in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// Longest JSON Pointer, in reference tokens.
pub const MAX_POINTER_DEPTH: usize = 16;
/// Deepest nesting of the JSON skeleton.
pub const MAX_SKELETON_DEPTH: usize = 16;
/// Most values (object members, array elements, scalars) in the JSON skeleton.
pub const MAX_SKELETON_NODES: usize = 1024;
/// Longest `KEY` of a `{{param:KEY}}` placeholder.
pub const MAX_PARAM_KEY_LEN: usize = 32;

/// Header names a template may not set (case-insensitive): the platform sends `Authorization`,
/// `Accept` and `Content-Type` itself, and the others belong to the HTTP connection.
pub const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "accept",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "cookie",
];

/// Query names a template may not use: the platform's `transaction_uid`, and `heartbeat`, which
/// turns a call into a heartbeat (§9.4).
pub const RESERVED_QUERY_NAMES: &[&str] = &["transaction_uid", "heartbeat"];

/// Where an item goes in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// A query parameter, appended after `transaction_uid`.
    Query,
    /// A request header.
    Header,
    /// A field of an `application/x-www-form-urlencoded` body (POST only).
    Form,
    /// A string value in an `application/json` body (POST only); the name is a JSON Pointer.
    Json,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Location::Query => "query",
            Location::Header => "header",
            Location::Form => "form",
            Location::Json => "json",
        })
    }
}

/// The HTTP method of a DP endpoint, as far as templates are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET: no body, so no `form` or `json` items.
    Get,
    /// POST.
    Post,
}

/// One (location, name, value) item, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Where the item goes.
    pub location: Location,
    /// The query, header or form field name, or the JSON Pointer for `json`. Never substituted.
    pub name: String,
    /// Text with `{{placeholder}}` substitutions.
    pub value: String,
}

impl Item {
    /// An item.
    pub fn new(location: Location, name: impl Into<String>, value: impl Into<String>) -> Self {
        Item {
            location,
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A `{{placeholder}}` of D28.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `{{transaction_uid}}`.
    TransactionUid,
    /// `{{resource_id}}`.
    ResourceId,
    /// `{{pid}}`: the citizen's identifier, upper case.
    Pid,
    /// `{{pid_type}}`: `NID`, `ARC` or `BAN`.
    PidType,
    /// `{{birthdate:FORMAT}}`.
    Birthdate(DateFormat),
    /// `{{name}}`.
    Name,
    /// `{{email}}`.
    Email,
    /// `{{param:KEY}}`: a value the citizen entered.
    Param(String),
}

impl Placeholder {
    /// Parses the text between `{{` and `}}`.
    pub fn parse(s: &str) -> Result<Self, PlaceholderError> {
        Ok(match s {
            "transaction_uid" => Placeholder::TransactionUid,
            "resource_id" => Placeholder::ResourceId,
            "pid" => Placeholder::Pid,
            "pid_type" => Placeholder::PidType,
            "name" => Placeholder::Name,
            "email" => Placeholder::Email,
            "birthdate" => return Err(PlaceholderError::BirthdateWithoutFormat),
            _ => {
                if let Some(f) = s.strip_prefix("birthdate:") {
                    Placeholder::Birthdate(date_format(f).ok_or(PlaceholderError::DateFormat)?)
                } else if let Some(k) = s.strip_prefix("param:") {
                    if !is_param_key(k) {
                        return Err(PlaceholderError::ParamKey);
                    }
                    Placeholder::Param(k.to_string())
                } else {
                    return Err(PlaceholderError::Unknown);
                }
            }
        })
    }
}

impl Placeholder {
    /// The userinfo claim whose value this placeholder reveals (`uid`, `uid_type`, `birthdate`,
    /// `name` or `email`), if any. A platform sends a DP through its template only what the
    /// dataset may see.
    pub fn claim(&self) -> Option<&'static str> {
        match self {
            Placeholder::Pid => Some("uid"),
            Placeholder::PidType => Some("uid_type"),
            Placeholder::Birthdate(_) => Some("birthdate"),
            Placeholder::Name => Some("name"),
            Placeholder::Email => Some("email"),
            Placeholder::TransactionUid | Placeholder::ResourceId | Placeholder::Param(_) => None,
        }
    }
}

impl fmt::Display for Placeholder {
    /// The placeholder's text, without braces (`birthdate:roc7`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placeholder::TransactionUid => f.write_str("transaction_uid"),
            Placeholder::ResourceId => f.write_str("resource_id"),
            Placeholder::Pid => f.write_str("pid"),
            Placeholder::PidType => f.write_str("pid_type"),
            Placeholder::Birthdate(d) => write!(f, "birthdate:{}", date_format_name(*d)),
            Placeholder::Name => f.write_str("name"),
            Placeholder::Email => f.write_str("email"),
            Placeholder::Param(k) => write!(f, "param:{k}"),
        }
    }
}

/// Why the text of a placeholder is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    /// Not one of the D28 names.
    #[error("unknown placeholder")]
    Unknown,
    /// `{{birthdate}}` needs a format: `{{birthdate:iso}}`.
    #[error("birthdate needs a format: roc7, roc_slash, gregorian8, iso or gregorian_slash")]
    BirthdateWithoutFormat,
    /// `{{birthdate:X}}` with X not a D12 format.
    #[error("unknown birth date format: use roc7, roc_slash, gregorian8, iso or gregorian_slash")]
    DateFormat,
    /// `{{param:KEY}}` with KEY not matching `[A-Za-z0-9_]{1,32}`.
    #[error("param key must match [A-Za-z0-9_]{{1,32}}")]
    ParamKey,
}

fn date_format(s: &str) -> Option<DateFormat> {
    Some(match s {
        "roc7" => DateFormat::Roc7,
        "roc_slash" => DateFormat::RocSlash,
        "gregorian8" => DateFormat::Gregorian8,
        "iso" => DateFormat::Iso,
        "gregorian_slash" => DateFormat::GregorianSlash,
        _ => return None,
    })
}

fn date_format_name(d: DateFormat) -> &'static str {
    match d {
        DateFormat::Roc7 => "roc7",
        DateFormat::RocSlash => "roc_slash",
        DateFormat::Gregorian8 => "gregorian8",
        DateFormat::Iso => "iso",
        DateFormat::GregorianSlash => "gregorian_slash",
    }
}

fn is_param_key(k: &str) -> bool {
    (1..=MAX_PARAM_KEY_LEN).contains(&k.len())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a template is refused, or why one call cannot be built from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template document is not valid JSON or not of the documented shape.
    #[error("template: {0}")]
    Json(String),
    /// More than [`MAX_ITEMS`] items.
    #[error("template: more than {MAX_ITEMS} items")]
    TooManyItems,
    /// An item's name or value is longer than allowed.
    #[error("template item {index}: {what} longer than {limit} bytes")]
    TooLong {
        /// 0-based item index.
        index: usize,
        /// `name` or `value`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// An item's name is empty or contains a control character.
    #[error("template item {index}: the name is empty or holds a control character")]
    BadName {
        /// 0-based item index.
        index: usize,
    },
    /// A name, a value or the skeleton holds `{{` that does not open a placeholder.
    #[error("template item {index}: literal '{{{{' (only placeholders may use it)")]
    LiteralBraces {
        /// 0-based item index (`None` for the skeleton).
        index: ItemRef,
    },
    /// A `{{…}}` names no D28 placeholder.
    #[error("template item {index}: {{{{{text}}}}}: {reason}")]
    UnknownPlaceholder {
        /// 0-based item index.
        index: usize,
        /// The text between the braces (truncated to 64 bytes).
        text: String,
        /// Why.
        reason: PlaceholderError,
    },
    /// A `form` or `json` item (or a skeleton) in the template of a GET endpoint.
    #[error("template: {location} items need the POST method")]
    BodyNeedsPost {
        /// The body location.
        location: Location,
    },
    /// Both `form` and `json` items (or `form` items and a skeleton).
    #[error("template: form and json cannot be mixed (one body per request)")]
    MixedBody,
    /// A header name that is not an HTTP token.
    #[error("template item {index}: header name is not an HTTP token")]
    BadHeaderName {
        /// 0-based item index.
        index: usize,
    },
    /// A header or query name the platform sets itself.
    #[error("template item {index}: {name} is set by the platform")]
    ReservedName {
        /// 0-based item index.
        index: usize,
        /// The name.
        name: String,
    },
    /// The same header twice.
    #[error("template item {index}: header {name} appears twice")]
    DuplicateHeader {
        /// 0-based item index.
        index: usize,
        /// The name.
        name: String,
    },
    /// A `json` name that is not a usable JSON Pointer into the skeleton.
    #[error("template item {index}: JSON Pointer {pointer:?}: {reason}")]
    BadJsonPointer {
        /// 0-based item index.
        index: usize,
        /// The pointer.
        pointer: String,
        /// Why.
        reason: &'static str,
    },
    /// The JSON skeleton is not an object, or too deep or too large.
    #[error("template skeleton: {0}")]
    BadSkeleton(&'static str),
    /// A literal part of a header value holds a control character.
    #[error("template item {index}: header value holds a control character")]
    HeaderLiteral {
        /// 0-based item index.
        index: usize,
    },
    /// At rendering: a header value would contain CR, LF, NUL or another control character, so
    /// the request is not sent. The value is not reported (it may be personal data).
    #[error("header {name}: the value would contain a control character; not sent")]
    HeaderValue {
        /// The header name.
        name: String,
    },
}

/// Which part of a template an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemRef {
    /// The item at this 0-based index.
    Item(usize),
    /// The JSON skeleton.
    Skeleton,
}

impl fmt::Display for ItemRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemRef::Item(i) => write!(f, "{i}"),
            ItemRef::Skeleton => f.write_str("skeleton"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Compiled {
    segments: Vec<Segment>,
    /// For `json`: the pointer's reference tokens, unescaped.
    pointer: Vec<String>,
}

/// A checked template. Build it with [`Template::new`], [`Template::with_skeleton`] or
/// [`Template::from_json`]; deserialising runs the same checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TemplateDoc", into = "TemplateDoc")]
pub struct Template {
    items: Vec<Item>,
    skeleton: Option<Map<String, Value>>,
    compiled: Vec<Compiled>,
    /// The skeleton with an empty string at every `json` item's pointer.
    body_skeleton: Map<String, Value>,
}

/// The stored form of a template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum TemplateDoc {
    Full {
        items: Vec<Item>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skeleton: Option<Map<String, Value>>,
    },
    Items(Vec<Item>),
}

impl TryFrom<TemplateDoc> for Template {
    type Error = TemplateError;
    fn try_from(d: TemplateDoc) -> Result<Self, TemplateError> {
        match d {
            TemplateDoc::Full { items, skeleton } => Template::with_skeleton(items, skeleton),
            TemplateDoc::Items(items) => Template::new(items),
        }
    }
}

impl From<Template> for TemplateDoc {
    fn from(t: Template) -> Self {
        TemplateDoc::Full {
            items: t.items,
            skeleton: t.skeleton,
        }
    }
}

/// The body a template gives a POST request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json`.
    Json,
}

impl BodyKind {
    /// The `Content-Type` header value.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyKind::Form => "application/x-www-form-urlencoded",
            BodyKind::Json => "application/json",
        }
    }
}

impl Template {
    /// Checks `items` as a template without a JSON skeleton.
    pub fn new(items: Vec<Item>) -> Result<Self, TemplateError> {
        Self::with_skeleton(items, None)
    }

    /// Checks `items` with a JSON skeleton (the fixed part of a JSON body, D28). `json` items'
    /// names are JSON Pointers (RFC 6901) into it: missing object members on the way are
    /// created, the pointer may pass through objects only, and its target must be absent, a
    /// string or null (it becomes the item's string value).
    pub fn with_skeleton(
        items: Vec<Item>,
        skeleton: Option<Map<String, Value>>,
    ) -> Result<Self, TemplateError> {
        if items.len() > MAX_ITEMS {
            return Err(TemplateError::TooManyItems);
        }
        if let Some(s) = &skeleton {
            let mut nodes = 0;
            check_skeleton(&Value::Object(s.clone()), 0, &mut nodes)?;
        }
        let mut body_skeleton = skeleton.clone().unwrap_or_default();
        let mut compiled = Vec::with_capacity(items.len());
        let mut headers = BTreeSet::new();
        let mut pointers = BTreeSet::new();
        for (index, item) in items.iter().enumerate() {
            if item.name.len() > MAX_NAME_LEN {
                return Err(TemplateError::TooLong {
                    index,
                    what: "name",
                    limit: MAX_NAME_LEN,
                });
            }
            if item.value.len() > MAX_VALUE_LEN {
                return Err(TemplateError::TooLong {
                    index,
                    what: "value",
                    limit: MAX_VALUE_LEN,
                });
            }
            if item.name.is_empty() || item.name.chars().any(char::is_control) {
                return Err(TemplateError::BadName { index });
            }
            if item.name.contains("{{") {
                return Err(TemplateError::LiteralBraces {
                    index: ItemRef::Item(index),
                });
            }
            let segments = parse_value(index, &item.value)?;
            let mut pointer = Vec::new();
            match item.location {
                Location::Query => {
                    if RESERVED_QUERY_NAMES.contains(&item.name.as_str()) {
                        return Err(TemplateError::ReservedName {
                            index,
                            name: item.name.clone(),
                        });
                    }
                }
                Location::Header => {
                    if !item.name.bytes().all(is_tchar) {
                        return Err(TemplateError::BadHeaderName { index });
                    }
                    let lower = item.name.to_ascii_lowercase();
                    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                        return Err(TemplateError::ReservedName {
                            index,
                            name: item.name.clone(),
                        });
                    }
                    if !headers.insert(lower) {
                        return Err(TemplateError::DuplicateHeader {
                            index,
                            name: item.name.clone(),
                        });
                    }
                    let literal_ctl = segments.iter().any(|s| match s {
                        Segment::Literal(l) => l.chars().any(is_header_ctl),
                        Segment::Placeholder(_) => false,
                    });
                    if literal_ctl {
                        return Err(TemplateError::HeaderLiteral { index });
                    }
                }
                Location::Form => {}
                Location::Json => {
                    let bad = |reason| TemplateError::BadJsonPointer {
                        index,
                        pointer: item.name.clone(),
                        reason,
                    };
                    pointer = parse_pointer(&item.name).map_err(bad)?;
                    if !pointers.insert(pointer.clone()) {
                        return Err(bad("appears twice"));
                    }
                    place(&mut body_skeleton, &pointer).map_err(bad)?;
                }
            }
            compiled.push(Compiled { segments, pointer });
        }
        let t = Template {
            items,
            skeleton,
            compiled,
            body_skeleton,
        };
        let has_form = t.items.iter().any(|i| i.location == Location::Form);
        let has_json = t.skeleton.is_some() || t.items.iter().any(|i| i.location == Location::Json);
        if has_form && has_json {
            return Err(TemplateError::MixedBody);
        }
        Ok(t)
    }

    /// Parses a template document: `{"items": [...], "skeleton": {...}}` or a bare array of
    /// items, then checks it.
    pub fn from_json(text: &str) -> Result<Self, TemplateError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| TemplateError::Json(e.to_string()))?;
        let (items, skeleton) = match v {
            Value::Array(_) => (v, None),
            Value::Object(mut m) => {
                if let Some(k) = m.keys().find(|k| *k != "items" && *k != "skeleton") {
                    return Err(TemplateError::Json(format!("unknown field {k:?}")));
                }
                let items = m
                    .remove("items")
                    .ok_or_else(|| TemplateError::Json("missing field \"items\"".into()))?;
                let skeleton = match m.remove("skeleton") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(s)) => Some(s),
                    Some(_) => return Err(TemplateError::BadSkeleton("must be a JSON object")),
                };
                (items, skeleton)
            }
            _ => {
                return Err(TemplateError::Json(
                    "expected an array of items or an object with \"items\"".into(),
                ));
            }
        };
        let items: Vec<Item> =
            serde_json::from_value(items).map_err(|e| TemplateError::Json(e.to_string()))?;
        Self::with_skeleton(items, skeleton)
    }

    /// The items, as registered.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The JSON skeleton, as registered.
    pub fn skeleton(&self) -> Option<&Map<String, Value>> {
        self.skeleton.as_ref()
    }

    /// The body this template gives a request, if any.
    pub fn body_kind(&self) -> Option<BodyKind> {
        if self.items.iter().any(|i| i.location == Location::Form) {
            Some(BodyKind::Form)
        } else if self.skeleton.is_some() || self.items.iter().any(|i| i.location == Location::Json)
        {
            Some(BodyKind::Json)
        } else {
            None
        }
    }

    /// Checks that the template fits an endpoint called with `method`: `form` and `json` only
    /// with POST.
    pub fn check_method(&self, method: Method) -> Result<(), TemplateError> {
        match (method, self.body_kind()) {
            (Method::Get, Some(BodyKind::Form)) => Err(TemplateError::BodyNeedsPost {
                location: Location::Form,
            }),
            (Method::Get, Some(BodyKind::Json)) => Err(TemplateError::BodyNeedsPost {
                location: Location::Json,
            }),
            _ => Ok(()),
        }
    }

    /// Every placeholder the template uses, once each.
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut out: Vec<&Placeholder> = Vec::new();
        for c in &self.compiled {
            for s in &c.segments {
                if let Segment::Placeholder(p) = s
                    && !out.contains(&p)
                {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The userinfo claims the template's placeholders reveal ([`Placeholder::claim`]).
    pub fn claims(&self) -> BTreeSet<&'static str> {
        self.placeholders()
            .into_iter()
            .filter_map(Placeholder::claim)
            .collect()
    }

    /// The `KEY`s of the `{{param:KEY}}` placeholders: the values the citizen must enter.
    pub fn param_keys(&self) -> BTreeSet<&str> {
        self.placeholders()
            .into_iter()
            .filter_map(|p| match p {
                Placeholder::Param(k) => Some(k.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Builds one call for an endpoint called with `method`. Missing values render as empty
    /// strings. Fails only when a header value would hold a control character, or when the
    /// template does not fit `method`.
    pub fn render(&self, method: Method, values: &Values) -> Result<Rendered, TemplateError> {
        self.check_method(method)?;
        let mut out = Rendered::default();
        let mut form = Vec::new();
        let mut json = self.body_skeleton.clone();
        for (index, (item, c)) in self.items.iter().zip(&self.compiled).enumerate() {
            let v = substitute(&c.segments, values);
            match item.location {
                Location::Query => out.query.push((item.name.clone(), v)),
                Location::Header => {
                    if v.chars().any(is_header_ctl) {
                        return Err(TemplateError::HeaderValue {
                            name: item.name.clone(),
                        });
                    }
                    out.headers.push((item.name.clone(), v));
                }
                Location::Form => form.push((item.name.clone(), v)),
                Location::Json => {
                    if !set(&mut json, &c.pointer, v) {
                        return Err(TemplateError::BadJsonPointer {
                            index,
                            pointer: item.name.clone(),
                            reason: "does not resolve in the skeleton",
                        });
                    }
                }
            }
        }
        out.body = match self.body_kind() {
            None => None,
            Some(BodyKind::Form) => Some(Body::Form(encode_pairs(&form))),
            Some(BodyKind::Json) => Some(Body::Json(Value::Object(json).to_string())),
        };
        Ok(out)
    }
}

/// The values of one call series (D28's placeholder table). Its `Debug` output shows which
/// personal values are present, never the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Values {
    /// The call series' `transaction_uid`.
    pub transaction_uid: String,
    /// The dataset's `resource_id`.
    pub resource_id: String,
    /// The citizen's identifier (rendered in upper case).
    pub pid: Option<String>,
    /// `NID`, `ARC` or `BAN`.
    pub pid_type: Option<String>,
    /// The birth date.
    pub birthdate: Option<CivilDate>,
    /// The citizen's name.
    pub name: Option<String>,
    /// The citizen's e-mail address.
    pub email: Option<String>,
    /// Values the citizen entered, by `KEY`.
    pub params: BTreeMap<String, String>,
}

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = |o: bool| if o { "<present>" } else { "<absent>" };
        f.debug_struct("Values")
            .field("transaction_uid", &self.transaction_uid)
            .field("resource_id", &self.resource_id)
            .field("pid", &present(self.pid.is_some()))
            .field("pid_type", &self.pid_type)
            .field("birthdate", &present(self.birthdate.is_some()))
            .field("name", &present(self.name.is_some()))
            .field("email", &present(self.email.is_some()))
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Values {
    fn get(&self, p: &Placeholder) -> String {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        match p {
            Placeholder::TransactionUid => self.transaction_uid.clone(),
            Placeholder::ResourceId => self.resource_id.clone(),
            Placeholder::Pid => self
                .pid
                .as_deref()
                .map(str::to_uppercase)
                .unwrap_or_default(),
            Placeholder::PidType => s(&self.pid_type),
            Placeholder::Birthdate(f) => self.birthdate.map(|d| d.render(*f)).unwrap_or_default(),
            Placeholder::Name => s(&self.name),
            Placeholder::Email => s(&self.email),
            Placeholder::Param(k) => self.params.get(k).cloned().unwrap_or_default(),
        }
    }
}

/// A request body built from a template.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// `application/x-www-form-urlencoded`, already encoded.
    Form(String),
    /// `application/json`.
    Json(String),
}

impl Body {
    /// The body's kind.
    pub fn kind(&self) -> BodyKind {
        match self {
            Body::Form(_) => BodyKind::Form,
            Body::Json(_) => BodyKind::Json,
        }
    }

    /// The `Content-Type` header value.
    pub fn content_type(&self) -> &'static str {
        self.kind().content_type()
    }

    /// The body text.
    pub fn as_str(&self) -> &str {
        match self {
            Body::Form(s) | Body::Json(s) => s,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Body::{:?}(<{} bytes>)",
            self.kind(),
            self.as_str().len()
        )
    }
}

/// One call, built from a template: what to add to the platform's fixed request. Its `Debug`
/// output shows names only (the values may be personal data).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Query pairs (not encoded), in template order, to append after `transaction_uid`.
    pub query: Vec<(String, String)>,
    /// Headers (name, value), in template order.
    pub headers: Vec<(String, String)>,
    /// The body, for POST.
    pub body: Option<Body>,
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field(
                "query",
                &self.query.iter().map(|p| &p.0).collect::<Vec<_>>(),
            )
            .field(
                "headers",
                &self.headers.iter().map(|p| &p.0).collect::<Vec<_>>(),
            )
            .field("body", &self.body)
            .finish()
    }
}

impl Rendered {
    /// The query pairs, form-urlencoded and joined with `&` (empty when there are none).
    pub fn query_string(&self) -> String {
        encode_pairs(&self.query)
    }
}

/// The URL of one DP-API call: `endpoint`, then `transaction_uid={uid}`, then the template's
/// query pairs (spec §9.1). `endpoint` must not hold a fragment (registration refuses one).
pub fn call_url(endpoint: &str, transaction_uid: &str, rendered: Option<&Rendered>) -> String {
    let mut url = String::with_capacity(endpoint.len() + 64);
    url.push_str(endpoint);
    url.push(if endpoint.contains('?') { '&' } else { '?' });
    url.push_str("transaction_uid=");
    url.push_str(&form_urlencode(transaction_uid));
    if let Some(r) = rendered.filter(|r| !r.query.is_empty()) {
        url.push('&');
        url.push_str(&r.query_string());
    }
    url
}

/// `application/x-www-form-urlencoded` encoding of one name or value (UTF-8): ASCII letters,
/// digits and `*-._` are kept, space becomes `+`, every other byte becomes `%XX`.
pub fn form_urlencode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out
}

fn encode_pairs(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&form_urlencode(k));
        out.push('=');
        out.push_str(&form_urlencode(v));
    }
    out
}

fn substitute(segments: &[Segment], values: &Values) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Literal(l) => out.push_str(l),
            Segment::Placeholder(p) => out.push_str(&values.get(p)),
        }
    }
    out
}

/// Splits a value into literals and placeholders. Every `{{` must open a placeholder closed by
/// the next `}}`.
fn parse_value(index: usize, value: &str) -> Result<Vec<Segment>, TemplateError> {
    let mut segments = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            segments.push(Segment::Literal(rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(TemplateError::LiteralBraces {
                index: ItemRef::Item(index),
            });
        };
        let text = &after[..close];
        if text.contains("{{") {
            return Err(TemplateError::LiteralBraces {
                index: ItemRef::Item(index),
            });
        }
        let p = Placeholder::parse(text).map_err(|reason| TemplateError::UnknownPlaceholder {
            index,
            text: truncate(text, 64),
            reason,
        })?;
        segments.push(Segment::Placeholder(p));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_string()));
    }
    Ok(segments)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Characters never sent in a header value: every control character except HTAB (CR, LF and NUL
/// included).
fn is_header_ctl(c: char) -> bool {
    (c.is_ascii_control() && c != '\t') || c == '\u{7f}'
}

/// RFC 6901 reference tokens of a pointer; refuses the whole-document pointer `""` and empty
/// tokens.
fn parse_pointer(p: &str) -> Result<Vec<String>, &'static str> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err("must start with '/'");
    };
    let mut tokens = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            return Err("empty reference token");
        }
        let mut t = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '~' {
                match chars.next() {
                    Some('0') => t.push('~'),
                    Some('1') => t.push('/'),
                    _ => return Err("'~' must be followed by 0 or 1"),
                }
            } else {
                t.push(c);
            }
        }
        tokens.push(t);
    }
    if tokens.len() > MAX_POINTER_DEPTH {
        return Err("too deep");
    }
    Ok(tokens)
}

/// Puts an empty string at `tokens` in `root`, creating missing object members on the way.
fn place(root: &mut Map<String, Value>, tokens: &[String]) -> Result<(), &'static str> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err("must not be empty");
    };
    let mut cur = root;
    for t in parents {
        let next = cur
            .entry(t.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = match next {
            Value::Object(m) => m,
            Value::Array(_) => return Err("arrays of the skeleton cannot be filled"),
            _ => return Err("passes through a value that is not an object"),
        };
    }
    match cur.get(last) {
        None | Some(Value::String(_)) | Some(Value::Null) => {
            cur.insert(last.clone(), Value::String(String::new()));
            Ok(())
        }
        Some(_) => Err("points at an object, array, number or boolean of the skeleton"),
    }
}

/// Sets the string at `tokens` (placed by [`place`]); `false` if it does not resolve.
fn set(root: &mut Map<String, Value>, tokens: &[String], v: String) -> bool {
    let Some((last, parents)) = tokens.split_last() else {
        return false;
    };
    let mut cur = root;
    for t in parents {
        match cur.get_mut(t) {
            Some(Value::Object(m)) => cur = m,
            _ => return false,
        }
    }
    match cur.get_mut(last) {
        Some(slot @ Value::String(_)) => {
            *slot = Value::String(v);
            true
        }
        _ => false,
    }
}

fn check_skeleton(v: &Value, depth: usize, nodes: &mut usize) -> Result<(), TemplateError> {
    *nodes += 1;
    if *nodes > MAX_SKELETON_NODES {
        return Err(TemplateError::BadSkeleton("too many values"));
    }
    if depth > MAX_SKELETON_DEPTH {
        return Err(TemplateError::BadSkeleton("nested too deep"));
    }
    let braces = || TemplateError::LiteralBraces {
        index: ItemRef::Skeleton,
    };
    match v {
        Value::String(s) if s.contains("{{") => Err(braces()),
        Value::Object(m) => {
            for (k, v) in m {
                if k.contains("{{") {
                    return Err(braces());
                }
                check_skeleton(v, depth + 1, nodes)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            for v in a {
                check_skeleton(v, depth + 1, nodes)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, value: &str) -> Item {
        Item::new(Location::Query, name, value)
    }
    fn h(name: &str, value: &str) -> Item {
        Item::new(Location::Header, name, value)
    }
    fn j(name: &str, value: &str) -> Item {
        Item::new(Location::Json, name, value)
    }
    fn f(name: &str, value: &str) -> Item {
        Item::new(Location::Form, name, value)
    }

    fn values() -> Values {
        Values {
            transaction_uid: "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d01".into(),
            resource_id: "API.ABCDEFGHIJ".into(),
            pid: Some("a120345672".into()),
            pid_type: Some("NID".into()),
            birthdate: Some(CivilDate::new(1988, 1, 1).unwrap()),
            name: Some("王大明".into()),
            email: Some("wang@example.tw".into()),
            params: BTreeMap::from([("plate".to_string(), "ABC-1234".to_string())]),
        }
    }

    #[test]
    fn every_placeholder_renders() {
        let t = Template::new(vec![
            q("uid", "{{transaction_uid}}"),
            q("rid", "{{resource_id}}"),
            q("pid", "{{pid}}"),
            q("type", "{{pid_type}}"),
            q("b1", "{{birthdate:roc7}}"),
            q("b2", "{{birthdate:roc_slash}}"),
            q("b3", "{{birthdate:gregorian8}}"),
            q("b4", "{{birthdate:iso}}"),
            q("b5", "{{birthdate:gregorian_slash}}"),
            q("n", "{{name}}"),
            q("e", "{{email}}"),
            q("plate", "{{param:plate}}"),
            q("mix", "id={{pid}};t={{pid_type}}"),
        ])
        .unwrap();
        let r = t.render(Method::Get, &values()).unwrap();
        let got: Vec<&str> = r.query.iter().map(|p| p.1.as_str()).collect();
        assert_eq!(
            got,
            [
                "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d01",
                "API.ABCDEFGHIJ",
                "A120345672",
                "NID",
                "0770101",
                "077/01/01",
                "19880101",
                "1988-01-01",
                "1988/01/01",
                "王大明",
                "wang@example.tw",
                "ABC-1234",
                "id=A120345672;t=NID",
            ]
        );
        assert!(r.headers.is_empty() && r.body.is_none());
        assert_eq!(t.param_keys().into_iter().collect::<Vec<_>>(), ["plate"]);
        assert_eq!(
            t.claims().into_iter().collect::<Vec<_>>(),
            ["birthdate", "email", "name", "uid", "uid_type"]
        );
        let none = Template::new(vec![q(
            "a",
            "{{transaction_uid}}{{resource_id}}{{param:x}}",
        )]);
        assert!(none.unwrap().claims().is_empty());
        assert_eq!(t.placeholders().len(), 12);
    }

    #[test]
    fn missing_values_render_empty() {
        let t = Template::new(vec![
            q("e", "<{{email}}>"),
            q("p", "{{param:year}}"),
            h("X-Birth", "{{birthdate:iso}}"),
        ])
        .unwrap();
        let r = t.render(Method::Get, &Values::default()).unwrap();
        assert_eq!(r.query[0].1, "<>");
        assert_eq!(r.query[1].1, "");
        assert_eq!(r.headers, [("X-Birth".to_string(), String::new())]);
    }

    #[test]
    fn query_values_are_form_urlencoded() {
        let t = Template::new(vec![q("n&x=", "{{name}}")]).unwrap();
        let mut v = values();
        v.name = Some("a&b=c#d e+f%王".into());
        let r = t.render(Method::Get, &v).unwrap();
        assert_eq!(r.query_string(), "n%26x%3D=a%26b%3Dc%23d+e%2Bf%25%E7%8E%8B");
        assert_eq!(
            call_url("http://127.0.0.1:1/dp?x=1", "u-1", Some(&r)),
            "http://127.0.0.1:1/dp?x=1&transaction_uid=u-1&n%26x%3D=a%26b%3Dc%23d+e%2Bf%25%E7%8E%8B"
        );
        assert_eq!(
            call_url("http://h/dp", "u", None),
            "http://h/dp?transaction_uid=u"
        );
        assert_eq!(form_urlencode("*-._~ !"), "*-._%7E+%21");
    }

    #[test]
    fn header_injection_is_refused() {
        let t = Template::new(vec![h("X-Name", "{{name}}")]).unwrap();
        for evil in [
            "x\r\nX-Admin: 1",
            "x\nSet-Cookie: a",
            "x\rb",
            "a\0b",
            "a\u{1b}b",
            "a\u{7f}",
        ] {
            let mut v = values();
            v.name = Some(evil.into());
            let e = t.render(Method::Get, &v).unwrap_err();
            assert_eq!(
                e,
                TemplateError::HeaderValue {
                    name: "X-Name".into()
                }
            );
            assert!(!e.to_string().contains(evil), "the value is not reported");
        }
        let mut v = values();
        v.name = Some("王\t大明".into());
        assert_eq!(t.render(Method::Get, &v).unwrap().headers[0].1, "王\t大明");
        // The same value in the query is encoded, not refused.
        let t = Template::new(vec![q("n", "{{name}}")]).unwrap();
        v.name = Some("x\r\nX-Admin: 1".into());
        assert_eq!(
            t.render(Method::Get, &v).unwrap().query_string(),
            "n=x%0D%0AX-Admin%3A+1"
        );
        // A literal control character in a header value is refused at registration.
        assert_eq!(
            Template::new(vec![h("X-A", "a\r\nb: {{pid}}")]).unwrap_err(),
            TemplateError::HeaderLiteral { index: 0 }
        );
    }

    #[test]
    fn json_values_are_escaped_and_placed() {
        let mut sk = Map::new();
        sk.insert("version".into(), Value::from(2));
        sk.insert(
            "who".into(),
            serde_json::json!({"kind": "person", "name": null}),
        );
        let t = Template::with_skeleton(
            vec![
                j("/who/name", "{{name}}"),
                j("/who/id", "{{pid}}"),
                j("/query/a~1b/c~0d", "{{param:plate}}"),
            ],
            Some(sk),
        )
        .unwrap();
        assert_eq!(t.body_kind(), Some(BodyKind::Json));
        let mut v = values();
        v.name = Some("\"},\"admin\":true,\"x\":\"\\".into());
        let r = t.render(Method::Post, &v).unwrap();
        let body = r.body.clone().unwrap();
        assert_eq!(body.content_type(), "application/json");
        let parsed: Value = serde_json::from_str(body.as_str()).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "version": 2,
                "who": {"kind": "person", "name": "\"},\"admin\":true,\"x\":\"\\", "id": "A120345672"},
                "query": {"a/b": {"c~d": "ABC-1234"}}
            })
        );
        assert!(parsed.get("admin").is_none());
        assert!(body.as_str().contains(r#"\"},\"admin\":true"#));
        assert!(!format!("{body:?}").contains("admin"));
    }

    #[test]
    fn form_body() {
        let t = Template::new(vec![f("name", "{{name}}"), f("year", "{{param:year}}")]).unwrap();
        assert_eq!(
            t.check_method(Method::Get),
            Err(TemplateError::BodyNeedsPost {
                location: Location::Form
            })
        );
        assert!(t.render(Method::Get, &values()).is_err());
        let mut v = values();
        v.params.insert("year".into(), "113&x=1".into());
        let r = t.render(Method::Post, &v).unwrap();
        assert_eq!(
            r.body,
            Some(Body::Form(
                "name=%E7%8E%8B%E5%A4%A7%E6%98%8E&year=113%26x%3D1".into()
            ))
        );
        assert_eq!(
            r.body.unwrap().content_type(),
            "application/x-www-form-urlencoded"
        );
    }

    #[test]
    fn refused_at_registration() {
        let unknown = |t: Result<Template, TemplateError>, want: PlaceholderError| match t {
            Err(TemplateError::UnknownPlaceholder { reason, .. }) => assert_eq!(reason, want),
            other => panic!("{other:?}"),
        };
        unknown(
            Template::new(vec![q("a", "{{ssn}}")]),
            PlaceholderError::Unknown,
        );
        unknown(
            Template::new(vec![q("a", "{{ pid }}")]),
            PlaceholderError::Unknown,
        );
        unknown(
            Template::new(vec![q("a", "{{PID}}")]),
            PlaceholderError::Unknown,
        );
        unknown(
            Template::new(vec![q("a", "{{}}")]),
            PlaceholderError::Unknown,
        );
        unknown(
            Template::new(vec![q("a", "{{birthdate}}")]),
            PlaceholderError::BirthdateWithoutFormat,
        );
        unknown(
            Template::new(vec![q("a", "{{birthdate:roc}}")]),
            PlaceholderError::DateFormat,
        );
        for bad_key in ["", "a-b", "王", &"k".repeat(33), "a b"] {
            unknown(
                Template::new(vec![q("a", &format!("{{{{param:{bad_key}}}}}"))]),
                PlaceholderError::ParamKey,
            );
        }
        assert!(Template::new(vec![q("a", &format!("{{{{param:{}}}}}", "k".repeat(32)))]).is_ok());
        for literal in ["{{", "a{{b", "{{pid", "{{pid}}{{", "{{a{{pid}}", "}}{{"] {
            assert_eq!(
                Template::new(vec![q("a", literal)]).unwrap_err(),
                TemplateError::LiteralBraces {
                    index: ItemRef::Item(0)
                },
                "{literal}"
            );
        }
        assert!(matches!(
            Template::new(vec![q("ok", "}}{pid}"), q("x{{", "1")]),
            Err(TemplateError::LiteralBraces {
                index: ItemRef::Item(1)
            })
        ));
        assert!(matches!(
            Template::new(vec![q("transaction_uid", "x")]),
            Err(TemplateError::ReservedName { .. })
        ));
        assert!(matches!(
            Template::new(vec![q("heartbeat", "true")]),
            Err(TemplateError::ReservedName { .. })
        ));
        for name in [
            "Authorization",
            "accept",
            "Content-Type",
            "Host",
            "Proxy-Foo",
        ] {
            assert!(
                matches!(
                    Template::new(vec![h(name, "x")]),
                    Err(TemplateError::ReservedName { .. })
                ),
                "{name}"
            );
        }
        for name in ["X Name", "X:Name", "王", "X\r\nY", "", "X(1)"] {
            assert!(Template::new(vec![h(name, "x")]).is_err(), "{name:?}");
        }
        assert!(matches!(
            Template::new(vec![h("X-A", "1"), h("x-a", "2")]),
            Err(TemplateError::DuplicateHeader { index: 1, .. })
        ));
        assert_eq!(
            Template::new(vec![f("a", "1"), j("/a", "1")]).unwrap_err(),
            TemplateError::MixedBody
        );
        assert_eq!(
            Template::with_skeleton(vec![f("a", "1")], Some(Map::new())).unwrap_err(),
            TemplateError::MixedBody
        );
        assert!(matches!(
            Template::new(vec![q("", "1")]),
            Err(TemplateError::BadName { index: 0 })
        ));
        assert_eq!(
            Template::new(vec![q("a", "x"); MAX_ITEMS + 1]).unwrap_err(),
            TemplateError::TooManyItems
        );
        assert!(matches!(
            Template::new(vec![q("a", &"x".repeat(MAX_VALUE_LEN + 1))]),
            Err(TemplateError::TooLong { what: "value", .. })
        ));
    }

    #[test]
    fn json_pointers() {
        let bad = |items: Vec<Item>, sk: Option<Value>| {
            let sk = sk.map(|v| match v {
                Value::Object(m) => m,
                _ => unreachable!(),
            });
            match Template::with_skeleton(items, sk) {
                Err(TemplateError::BadJsonPointer { reason, .. }) => reason,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            Template::new(vec![j("", "x")]).unwrap_err(),
            TemplateError::BadName { index: 0 }
        );
        assert_eq!(bad(vec![j("a/b", "x")], None), "must start with '/'");
        assert_eq!(bad(vec![j("/a//b", "x")], None), "empty reference token");
        assert_eq!(
            bad(vec![j("/a~2", "x")], None),
            "'~' must be followed by 0 or 1"
        );
        assert_eq!(bad(vec![j("/a", "1"), j("/a", "2")], None), "appears twice");
        assert!(bad(vec![j("/a", "1"), j("/a/b", "2")], None).contains("not an object"));
        assert!(bad(vec![j("/a/b", "1"), j("/a", "2")], None).starts_with("points at"));
        let sk = serde_json::json!({"n": 1, "arr": ["x"], "o": {}});
        assert!(bad(vec![j("/n", "1")], Some(sk.clone())).starts_with("points at"));
        assert!(bad(vec![j("/o", "1")], Some(sk.clone())).starts_with("points at"));
        assert!(bad(vec![j("/n/x", "1")], Some(sk.clone())).contains("not an object"));
        assert!(bad(vec![j("/arr/0", "1")], Some(sk.clone())).contains("arrays"));
        let deep = format!("/{}", vec!["a"; MAX_POINTER_DEPTH + 1].join("/"));
        assert_eq!(bad(vec![j(&deep, "x")], None), "too deep");
        // The skeleton cannot smuggle a placeholder or be unbounded.
        let sk = |v: Value| match v {
            Value::Object(m) => Some(m),
            _ => None,
        };
        assert_eq!(
            Template::with_skeleton(vec![], sk(serde_json::json!({"a": "{{pid}}"}))).unwrap_err(),
            TemplateError::LiteralBraces {
                index: ItemRef::Skeleton
            }
        );
        assert!(Template::with_skeleton(vec![], sk(serde_json::json!({"{{pid}}": 1}))).is_err());
        let mut deep = Value::Null;
        for _ in 0..=MAX_SKELETON_DEPTH {
            deep = serde_json::json!({ "a": deep });
        }
        assert_eq!(
            Template::with_skeleton(vec![], sk(deep)).unwrap_err(),
            TemplateError::BadSkeleton("nested too deep")
        );
        let wide: Map<String, Value> = (0..=MAX_SKELETON_NODES)
            .map(|i| (i.to_string(), Value::Null))
            .collect();
        assert_eq!(
            Template::with_skeleton(vec![], Some(wide)).unwrap_err(),
            TemplateError::BadSkeleton("too many values")
        );
        // A skeleton alone gives a JSON body: POST only.
        let t = Template::with_skeleton(vec![], sk(serde_json::json!({"v": 1}))).unwrap();
        assert!(t.check_method(Method::Get).is_err());
        assert_eq!(
            t.render(Method::Post, &values()).unwrap().body,
            Some(Body::Json(r#"{"v":1}"#.into()))
        );
    }

    #[test]
    fn serde_round_trip_runs_the_checks() {
        let t = Template::with_skeleton(
            vec![q("id", "{{pid}}"), j("/a/b", "{{name}}")],
            Some(Map::new()),
        )
        .unwrap();
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(
            s,
            r#"{"items":[{"location":"query","name":"id","value":"{{pid}}"},{"location":"json","name":"/a/b","value":"{{name}}"}],"skeleton":{}}"#
        );
        let back: Template = serde_json::from_str(&s).unwrap();
        assert_eq!(back, t);
        assert_eq!(Template::from_json(&s).unwrap(), t);
        let bare: Template =
            serde_json::from_str(r#"[{"location":"header","name":"X-A","value":"{{pid}}"}]"#)
                .unwrap();
        assert_eq!(bare.items()[0].location, Location::Header);
        assert!(
            serde_json::from_str::<Template>(
                r#"[{"location":"query","name":"a","value":"{{x}}"}]"#
            )
            .is_err()
        );
        assert!(matches!(
            Template::from_json(r#"{"items":[],"extra":1}"#),
            Err(TemplateError::Json(_))
        ));
        assert!(matches!(
            Template::from_json(r#"{"items":[{"location":"cookie","name":"a","value":"b"}]}"#),
            Err(TemplateError::Json(_))
        ));
        assert!(matches!(
            Template::from_json(r#"{"items":[],"skeleton":[1]}"#),
            Err(TemplateError::BadSkeleton(_))
        ));
        assert!(matches!(
            Template::from_json("3"),
            Err(TemplateError::Json(_))
        ));
        assert!(matches!(
            Template::from_json("{"),
            Err(TemplateError::Json(_))
        ));
    }

    #[test]
    fn debug_hides_personal_values() {
        let v = values();
        let d = format!("{v:?}");
        assert!(!d.contains("A120345672") && !d.contains("a120345672"));
        assert!(!d.contains("王大明") && !d.contains("wang@"));
        assert!(d.contains("API.ABCDEFGHIJ"));
        let t = Template::new(vec![q("n", "{{name}}"), h("X-P", "{{pid}}")]).unwrap();
        let r = t.render(Method::Get, &v).unwrap();
        let d = format!("{r:?}");
        assert!(!d.contains("A120345672") && !d.contains("王大明"), "{d}");
        assert!(d.contains("X-P"));
    }
}
