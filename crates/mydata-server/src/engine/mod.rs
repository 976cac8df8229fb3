//! The online service after identity (spec §5.3 step 4 onwards, §7, §8, §10, §11, §14), one file
//! per protocol step, each a function a handler calls once:
//!
//! | Step | File | Entry points |
//! |---|---|---|
//! | SP-API: consent, step 10 | [`sp_api`] | [`consent`], [`undeliverable`] |
//! | DP calls and the SP package | [`dp_calls`] (series in [`dpcall`]) | started by [`consent`] and [`resume`] |
//! | MyData-API | [`mydata_api`] | [`data`] ([`data_decide`] + [`prepare`]), [`Delivered::complete`], [`status`] |
//! | Ending and transfer records | [`outcome`] | [`end`], [`forget`] |
//! | Retention | [`retention`] | [`purge`], [`resume`], [`reported_state`] |
//! | DP heartbeat (§9.4) | [`heartbeat`] | [`heartbeat::spawn`] |
//!
//! The transaction's stored state is [`TxPhase`](crate::storage::TxPhase); its one conversion
//! to the core's [`flow::TxState`](mydata_protocol::flow::TxState) is
//! [`TxRecord::flow_state`](crate::storage::TxRecord::flow_state).

use std::net::IpAddr;

use mydata_protocol::jwe::JweMode;
use mydata_protocol::param::ParamMode;

use crate::storage::SpRecord;

pub mod dp_calls;
pub mod dpcall;
pub mod heartbeat;
pub mod mydata_api;
pub mod outbound;
pub mod outcome;
pub mod retention;
pub mod sp_api;

pub use dp_calls::DatasetResult;
pub use mydata_api::{
    DataAnswer, DataStep, Delivered, Delivery, StatusAnswer, StatusQuery, Take, data, data_decide,
    prepare, status,
};
pub use mydata_protocol::flow::RETENTION_SECS;
pub use outcome::{end, forget};
pub use retention::{PurgeReport, expired_before_consent, purge, reported_state, resume};
pub use sp_api::{
    FD_RETRY_WAIT, SP_API_CONNECT, SP_API_IDLE_KEEP, SP_API_TOTAL, consent, undeliverable,
};

pub use crate::sources::SourceIndex;
pub use crate::storage::state;

/// Who calls the MyData-API: the source IP (spec D26) and, on a TLS listener that asks for
/// them, the SHA-256 fingerprint of the client certificate the connection presented, verified
/// against `tls_client_ca` during the handshake (D50).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The source IP.
    pub ip: IpAddr,
    /// The client certificate's fingerprint, lower-case hex, if one was presented.
    pub cert_sha256: Option<String>,
}

impl From<IpAddr> for Caller {
    /// A caller known by its address only (plain HTTP, or no client certificate).
    fn from(ip: IpAddr) -> Self {
        Caller {
            ip,
            cert_sha256: None,
        }
    }
}

/// Whether `sp` lets `caller` use the MyData-API: the source IP is one of its `allowed_ips`
/// (addresses or CIDR prefixes, D26), and when it registered client-certificate pins
/// (`client_cert_sha256`, D50), the connection presented one of those certificates.
pub(crate) fn allows(sp: &SpRecord, caller: &Caller) -> bool {
    let ip_ok = sp
        .allowed_ips
        .iter()
        .any(|a| crate::sources::entry_contains(a, caller.ip));
    let cert_ok = sp.client_cert_sha256.is_empty()
        || caller.cert_sha256.as_deref().is_some_and(|fp| {
            mydata_protocol::tls::acceptor::pin_matches(fp, &sp.client_cert_sha256)
        });
    ip_ok && cert_ok
}

/// The parameter cipher mode of a registration (the same algorithm family as its JWE).
pub(crate) fn param_mode(sp: &SpRecord) -> ParamMode {
    match sp.jwe_mode {
        JweMode::Gcm => ParamMode::Gcm,
        JweMode::Cbc => ParamMode::Cbc,
    }
}

#[cfg(test)]
mod tests;
