//! Integration tests: one test binary (each extra `tests/*.rs` would be another link of the
//! whole crate). Every test starts a real authority over real TLS on a free loopback port,
//! with certificates from sealkit's own CA and a real sled store on disk.

mod audit;
mod bundle;
mod core;
mod durability;
mod guard;
mod harness;
mod keys;
mod lifecycle;
mod monitoring;
mod mtls;
mod operator;
mod people;
mod process;
mod provenance;
mod redis;
mod runbooks;
mod token;
