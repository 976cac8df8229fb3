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

/// Whether `sp` registered `ip` as a MyData-API source.
pub(crate) fn allows(sp: &SpRecord, ip: IpAddr) -> bool {
    sp.allowed_ips
        .iter()
        .any(|a| a.parse::<IpAddr>().is_ok_and(|a| a == ip))
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
