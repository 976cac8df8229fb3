//! The online-service flow rules (placeholder, being written).
