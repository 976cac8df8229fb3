//! sandbox (wip)
