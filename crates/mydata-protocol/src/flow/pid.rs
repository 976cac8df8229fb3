//! The citizen named by `pid` (spec protocol.md §2.2, §5.3 step 8; decision D39): a natural
//! person or a legal person, and which kinds a service's application mode admits.

use std::fmt;

use crate::codes::IdentityMethod;
use crate::error::Result;
use crate::person::{BusinessNumber, PersonalId};

/// The application mode of a service (D39): which kinds of `pid` it admits.
///
/// "Several persons" services use [`ApplicationMode::Person`]: each person completes a separate
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ApplicationMode {
    /// A national ID or resident certificate number, with a natural-person method.
    #[default]
    Person,
    /// A business number, with the business certificate (`MOE`).
    LegalPerson,
    /// Either, with the matching method.
    PersonOrLegalPerson,
}

/// The identifier that `pid` names: a natural person or a legal person (§2.2, D39).
///
/// `Debug` does not print the identifier.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Pid {
    /// A national ID or a resident certificate number.
    Person(PersonalId),
    /// A business number.
    LegalPerson(BusinessNumber),
}

impl Pid {
    /// Parses a decrypted `pid` as a kind the application mode admits (D39).
    ///
    /// In [`ApplicationMode::PersonOrLegalPerson`], 8 characters are read as a business number and
    /// anything else as a personal identifier.
    pub fn parse_for(mode: ApplicationMode, s: &str) -> Result<Self> {
        match mode {
            ApplicationMode::Person => s.parse().map(Pid::Person),
            ApplicationMode::LegalPerson => s.parse().map(Pid::LegalPerson),
            ApplicationMode::PersonOrLegalPerson if s.len() == 8 => s.parse().map(Pid::LegalPerson),
            ApplicationMode::PersonOrLegalPerson => s.parse().map(Pid::Person),
        }
    }

    /// The identifier in canonical form (upper case).
    pub fn as_str(&self) -> &str {
        match self {
            Pid::Person(p) => p.as_str(),
            Pid::LegalPerson(b) => b.as_str(),
        }
    }

    /// The kind as the wire names it (`uid_type`, `{{pid_type}}`): `NID`, `ARC` or `BAN`.
    pub fn uid_type(&self) -> &'static str {
        match self {
            Pid::Person(PersonalId::National(_)) => "NID",
            Pid::Person(PersonalId::Resident(_)) => "ARC",
            Pid::LegalPerson(_) => "BAN",
        }
    }

    /// Whether an authentication `method` is of the kind that matches this identifier (D39): the
    /// business certificate for a legal person, any other method for a natural person.
    pub fn admits(&self, method: IdentityMethod) -> bool {
        let business = method == IdentityMethod::BusinessCertificate;
        match self {
            Pid::Person(_) => !business,
            Pid::LegalPerson(_) => business,
        }
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({}, <redacted>)", self.uid_type())
    }
}
