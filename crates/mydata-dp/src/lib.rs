//! DP SDK (placeholder).
