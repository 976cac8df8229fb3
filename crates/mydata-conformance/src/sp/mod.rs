//! The `sp` suite (PLACEHOLDER: being written).
