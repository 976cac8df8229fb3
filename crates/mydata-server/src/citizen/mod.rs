//! What the citizen pages need besides the protocol core: the citizen registry that the
//! basic-information and two-documents checks consult, the browser sessions, and the delivery of
//! one-time passwords (spec D46).

pub mod certs;
pub mod flow;
pub mod notify;
pub mod registry;
pub mod session;

pub use certs::CertTrust;
pub use flow::Citizen;
pub use notify::{Channel, Notifier};
pub use registry::{Registry, RegistryEntry};
pub use session::{Field, FieldError, Flow, Session, Sessions, Typed};
