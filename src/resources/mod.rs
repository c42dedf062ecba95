//! resources (being built).
