//! The domain: keys, secrets, parameters, rotation and policy, independent of store and front end.
pub mod policy;
