//! The one place the core asks the operating system for randomness.

use crate::error::{Error, Result};

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Random(e.to_string()))
}
