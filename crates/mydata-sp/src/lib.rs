//! # mydata-sp
//!
//! The service-provider (SP) side of the MyData online service (spec `protocol.md` §4–§8, §11–§12),
//! built on [`mydata_protocol`]:
//!
//! 1. **Redirect** ([`redirect`]): build
//!    `{platform}/service/{client_id}/{resources}/{tx_id}?returnUrl=…&pid=…[&caseNumber=…]` with a
//!    fresh `tx_id` ([`redirect::new_tx_id`]).
//! 2. **Return** ([`callback`]): read `{return_url}?code=…&tx_id=…`, decrypt the `tx_id`, map the
//!    code to a [`callback::ReturnOutcome`], and check that the `tx_id` is the one this browser
//!    session started ([`callback::Returned::check_tx`]).
//! 3. **SP-API** ([`receiver`], [`actix`]): a framework-free [`receiver::receive`] that checks
//!    `apiKey` in constant time and decrypts `secret_key`, and an actix-web adapter
//!    ([`actix::SpApiReceiver`]) that hands each delivery to a [`actix::SpApiSink`].
//! 4. **MyData-API** ([`poll`]): `GET {platform}/service/data` until the package is ready, with
//!    `Retry-After` (seconds or HTTP-date, 60 s without it), an overall deadline, cancellation and
//!    an injectable [`poll::Timer`].
//! 5. **Package** ([`package`]): JWE decryption, SP package and DP package verification against
//!    trust anchors, and access to each dataset's files.
//!
//! The SDK holds no state of its own: where a `tx_id`, ticket or `secret_key` is kept is the
//! application's choice (see the `example-sp` crate for one way).
//!
//! ```no_run
//! use mydata_sp::SpConfig;
//! use mydata_sp::redirect::RedirectRequest;
//! use mydata_protocol::flow::{ApplicationMode, Pid};
//! use mydata_protocol::resources::ResourceList;
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let sp = SpConfig::new(
//!     "http://127.0.0.1:8080",
//!     "CLI.SANDBOX001".parse()?,
//!     "SandboxSecret001".parse()?,
//!     "SandboxCbcIv0001".parse()?,
//!     "http://127.0.0.1:8090/return",
//! );
//! let resources = ResourceList::new(vec!["API.2RXHOGTXIC".parse()?])?;
//! let pid = Pid::parse_for(ApplicationMode::Person, "F228710436")?;
//! let redirect = sp.redirect(&RedirectRequest::new(&resources, &pid))?;
//! // Bind redirect.tx_id to the browser session, then answer 303 to redirect.url.
//! # let _ = redirect; Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod actix;
pub mod callback;
mod config;
mod error;
pub mod package;
pub mod poll;
pub mod receiver;
pub mod redirect;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::SpConfig;
pub use error::SpError;

/// The protocol core this SDK is built on, re-exported for convenience.
pub use mydata_protocol as protocol;

/// The SP integration guide, `spec/sp-developers.md`, read as documentation so that its Rust
/// example is compiled as a doctest and cannot drift from the SDK (issue 20 item 12).
#[cfg(doctest)]
#[doc = include_str!("../../../spec/sp-developers.md")]
pub struct SpDevelopersGuide;
