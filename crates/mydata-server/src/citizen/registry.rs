//! The citizen registry (spec D46): national ID → birth date, NHI card number, household number
//! and contacts. The reference server reads it from a file in the format of
//! `fixtures/citizens.json`; in sandbox mode the fixture itself is used.

use std::collections::HashMap;
use std::fmt;

use mydata_protocol::date::CivilDate;
use serde::Deserialize;

use crate::error::{ServerError, ServerResult};

/// The sandbox citizens, compiled in.
pub const SANDBOX_CITIZENS: &str = include_str!("../../../../fixtures/citizens.json");

/// What the registry knows of one citizen.
#[derive(Clone, Deserialize)]
pub struct RegistryEntry {
    /// National ID (upper case).
    pub national_id: String,
    /// Name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Birth date.
    #[serde(deserialize_with = "iso_date")]
    pub birth_date: CivilDate,
    /// NHI card number (12 digits).
    #[serde(default, deserialize_with = "nullable")]
    pub nhi_card_number: String,
    /// Household registration number (8 characters).
    #[serde(default, deserialize_with = "nullable")]
    pub household_number: String,
    /// E-mail address.
    #[serde(default, deserialize_with = "nullable")]
    pub email: String,
    /// Mobile number.
    #[serde(default, deserialize_with = "nullable")]
    pub mobile: String,
}

impl fmt::Debug for RegistryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistryEntry(..)")
    }
}

fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn iso_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CivilDate, D::Error> {
    let s = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("birth_date {s:?}: expected YYYY-MM-DD"));
    let mut it = s.splitn(3, '-');
    let (Some(y), Some(m), Some(dd)) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let (y, m, dd) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        dd.parse().map_err(|_| bad())?,
    );
    CivilDate::new(y, m, dd).map_err(|_| bad())
}

#[derive(Deserialize)]
struct File {
    citizens: Vec<RegistryEntry>,
}

/// The registry, by national ID.
#[derive(Clone, Default)]
pub struct Registry {
    by_id: HashMap<String, RegistryEntry>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registry({} citizens)", self.by_id.len())
    }
}

impl Registry {
    /// Parses a registry in the format of `fixtures/citizens.json` (`citizens[]`).
    pub fn from_json(text: &str) -> ServerResult<Self> {
        let file: File = serde_json::from_str(text)
            .map_err(|e| ServerError::Config(format!("citizen registry: {e}")))?;
        let by_id = file
            .citizens
            .into_iter()
            .map(|mut c| {
                c.national_id = c.national_id.to_ascii_uppercase();
                (c.national_id.clone(), c)
            })
            .collect();
        Ok(Registry { by_id })
    }

    /// The sandbox fixture.
    pub fn sandbox() -> ServerResult<Self> {
        Self::from_json(SANDBOX_CITIZENS)
    }

    /// The entry of a national ID (any case).
    pub fn get(&self, national_id: &str) -> Option<&RegistryEntry> {
        self.by_id.get(&national_id.to_ascii_uppercase())
    }

    /// How many citizens it holds.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_registry_reads_the_fixture() {
        let r = Registry::sandbox().unwrap();
        assert!(r.len() >= 5);
        let e = r.get("a120345672").unwrap();
        assert_eq!(e.birth_date.iso(), "1988-01-01");
        assert_eq!(e.nhi_card_number, "000018342761");
        assert_eq!(e.household_number, "A2034517");
        assert!(format!("{e:?}").find("A120").is_none());
    }

    #[test]
    fn bad_dates_are_refused() {
        let t = r#"{"citizens":[{"national_id":"A120345672","birth_date":"1988-13-01"}]}"#;
        assert!(Registry::from_json(t).is_err());
    }
}
