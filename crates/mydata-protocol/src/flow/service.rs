//! The service as registered, as the redirect checks see it (spec protocol.md §5.3 steps 1, 3,
//! 5–8; decisions D20, D40): operator status, lifecycle state, maintenance windows, parameter
//! cipher and datasets.

use std::net::IpAddr;

use crate::codes::IdentityMethod;
use crate::date::UnixTime;
use crate::ids::ResourceId;
use crate::param::ParamCipher;

use super::pid::ApplicationMode;

/// The operator status of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceStatus {
    /// In service.
    #[default]
    Active,
    /// Suspended by the operator: redirects get code 423 (§5.3 step 5).
    Suspended,
    /// Taken down: the service is treated as unknown (plain 404, §5.3 step 1).
    TakenDown,
}

/// The lifecycle state of a service, with what its state check needs (D20).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// Online (production): no state check.
    #[default]
    Online,
    /// Test: the browser must come from one of these IPs.
    Test {
        /// The registered test IPs (at most 3).
        ips: Vec<IpAddr>,
    },
    /// Trial: `caseNumber` is required and must equal the approved application number.
    Trial {
        /// The approved trial application number, compared byte for byte.
        case_number: String,
    },
}

/// One maintenance window of the service, resolved to instants: `start` ≤ t < `end` (D40).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaintenanceWindow {
    /// First second inside the window.
    pub start: UnixTime,
    /// First second after the window.
    pub end: UnixTime,
}

impl MaintenanceWindow {
    /// Whether `t` is inside the window.
    pub fn contains(&self, t: UnixTime) -> bool {
        self.start <= t && t < self.end
    }
}

/// What the redirect checks need to know about the service the `client_id` names.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The registered return_url, exactly as registered.
    pub return_url: String,
    /// Operator status.
    pub status: ServiceStatus,
    /// The service's own maintenance windows around now (weekly or monthly rules resolved by the
    /// caller, D40).
    pub maintenance: Vec<MaintenanceWindow>,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// Which kinds of `pid` the service admits.
    pub application_mode: ApplicationMode,
    /// The service's parameter cipher (`client_secret`, `cbc_iv`, mode), for `pid` and `tx_id`.
    pub cipher: ParamCipher,
    /// Every dataset the service may request, with the identity methods that dataset lists now.
    pub datasets: Vec<(ResourceId, Vec<IdentityMethod>)>,
}
