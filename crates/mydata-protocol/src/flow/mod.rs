//! The online-service flow rules (spec protocol.md §5–§8, §14; decisions D17–D27, D37, D39), as pure
//! functions over facts the caller looked up.
//!
//! The server's handlers stay thin: they read the request, look up the facts in storage, call the
//! functions here with the current time, and turn the verdict into an HTTP answer.
//!
//! * **Redirect** (`GET /service/{client_id}/{resources}/{tx_id}`, §5.3): [`validate_redirect`] runs
//!   steps 1–8 and gives an [`AcceptedRedirect`]; [`admit`] then runs steps 9–12, which need stored
//!   and session state. Each of the later steps is also available alone ([`check_resume`],
//!   [`availability`], [`check_methods`], [`check_session_identity`]). A failure is a [`Rejection`].
//! * **Return** (§6): [`return_url`] builds `{registered}?code=…&tx_id=…&{original query}`.
//! * **SP-API** (§7): [`SpApiBody`] writes and reads the JSON body.
//! * **MyData-API** (§8.1): [`data_answer`] evaluates `GET /service/data` in the order of D25;
//!   [`TxState::status_body`] gives the `txid_status` body (§8.3).
//! * **Retention** (§14, D37): [`purge_due`], [`pre_consent_expired`], [`record_expired`].
//!
//! Time checks use whole seconds: a period of *n* seconds has run out once **more** than *n* seconds
//! have passed since its start.
//!
//! The rules live in one private submodule per protocol step, each with its own unit tests, and
//! every item is re-exported here: `mydata_protocol::flow::X` is the only path. The submodules
//! depend on one another in one direction only: `admit` (steps 9–12) builds on `redirect` (steps
//! 1–8), `pid` and `retention`; `redirect` on `service`, `pid`, `return_to_sp` and `percent`;
//! `mydata_api` on `retention` and `limits`; `retention` on `limits`. `sp_api` needs none.

mod admit;
mod limits;
mod mydata_api;
mod percent;
mod pid;
mod redirect;
mod retention;
mod return_to_sp;
mod service;
mod source;
mod sp_api;
#[cfg(test)]
mod test_support;

pub use admit::{
    Admission, Availability, StatusBody, TxFacts, TxSlot, TxState, Undeliverable, admit,
    availability, check_authenticated, check_methods, check_resume, check_session_identity,
};
pub use limits::{
    IDLE_EXPIRY_SECS, RECORD_LIFETIME_SECS, RETENTION_SECS, RETRY_AFTER_DEFAULT, RETRY_AFTER_MAX,
    RETRY_AFTER_MIN, TOTAL_EXPIRY_SECS,
};
pub use mydata_api::{DataAnswer, TicketFacts, clamp_retry_after, data_answer, data_ticket};
pub use percent::percent_encode;
pub use pid::{ApplicationMode, Pid};
pub use redirect::{AcceptedRedirect, RedirectRequest, Rejection, validate_redirect};
pub use retention::{
    RetentionFacts, pre_consent_expired, purge_due, record_deadline, record_expired,
    retention_deadline,
};
pub use return_to_sp::return_url;
pub use service::{Lifecycle, MaintenanceWindow, ServiceStatus, ServiceView};
pub use source::{TrustedProxies, forwarded_for, source_ip};
pub use sp_api::{SpApiBody, SpApiDelivery};
