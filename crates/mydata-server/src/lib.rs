//! # mydata-server
//!
//! The MyData reference platform: the authorization server for DPs, storage behind traits, and
//! the actix-web server that wraps the protocol core.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod citizen;
pub mod clock;
pub mod config;
pub mod config_layers;
pub mod datadir;
pub mod dp_health;

pub mod engine;
pub mod error;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod observe;
pub mod packages;
pub mod platform;
pub mod secrets;
pub mod sources;
pub mod storage;
pub mod trust;

pub use engine::dpcall;
pub use error::{ServerError, ServerResult};
