//! # mydata-dp
//!
//! The SDK a data provider (DP) uses to answer the MyData platform's DP-API calls
//! (spec protocol.md §9–§10, decisions D28–D31):
//!
//! * [`request`]: parse a call (`transaction_uid`, bearer token, heartbeat, template values);
//! * [`introspect`]: check the token at the platform (`/connect/introspect`, `/connect/userinfo`),
//!   with a short expiry-aware cache;
//! * [`jobs`]: one job per `transaction_uid`, so repeated calls are the same request and slow
//!   datasets answer 429 + `Retry-After` until done;
//! * [`service`]: the [`Dataset`] trait an agency implements and the framework-free
//!   [`DpService`] that ties everything together and signs packages;
//! * [`actix`]: the actix-web adapter;
//! * [`sandbox`]: a sandbox DP serving every dataset of the fixture catalogue.
//!
//! The core never reads the clock except through an injectable [`clock::Clock`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use mydata_dp::{DataFile, DpService, Outcome, ResourceSecret, from_fn};
//! use mydata_protocol::package::dp::DpSigner;
//! # fn demo(signer: DpSigner) -> Result<(), Box<dyn std::error::Error>> {
//! let service = DpService::builder("API.ARPPI3VTCB")
//!     .platform("https://mydata.example", ResourceSecret::new("0123456789abcdef"))
//!     .signer(Arc::new(signer))
//!     .dataset(from_fn(|call| match call.uid() {
//!         Some(uid) => Outcome::Ready(vec![DataFile::new("data.json", format!("{{\"id\":\"{uid}\"}}"))]),
//!         None => Outcome::NoData,
//!     }))
//!     .build()?;
//! let api = mydata_dp::actix::DpApi::new(service);
//! # let _ = api; Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod actix;
pub mod answer;
mod bounded;
pub mod clock;
pub mod introspect;
pub mod jobs;
pub mod request;
pub mod sandbox;
pub mod service;
#[cfg(feature = "tls")]
pub mod tls;

pub use answer::{DataFile, Final, HttpAnswer, Outcome};
pub use clock::{Clock, ManualClock, SystemClock};
pub use introspect::{
    Audience, CacheConfig, CachingIntrospector, HttpIntrospector, Introspection, Introspector,
    ResourceSecret, UserInfo,
};
pub use jobs::{JobStore, JobStoreConfig};
pub use request::{DpRequest, Params, RawRequest, TransactionUid};
pub use service::{CallContext, Dataset, Deferred, DpService, build_package, from_fn};
