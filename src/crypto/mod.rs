//! crypto (being built).

pub mod asymmetric;
