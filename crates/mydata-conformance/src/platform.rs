//! The `platform` suite (PLACEHOLDER: being written).
