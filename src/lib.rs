//! sealkit: an OAuth 2.0 Authority appliance for sealed (air-gapped) sites.
//!
//! It issues sender-constrained access tokens (DPoP, RFC 9449; mutual-TLS certificate
//! binding, RFC 8705) over rustls, keeps nonces, replay claims and token records in an
//! embedded sled store, and is operated entirely through the `sealkit` command line.
//!
//! Data flows one way: `server` → `core` (the gate: proofs, nonces, the restart fence,
//! certificate binding; issuance) → (`policy`, `dpop`, `mtls`) → `token` → `store`. Nothing
//! below `server` knows HTTP; nothing below `cli` prints.
// No unsafe code, except in `allocator` (the global allocator cannot be written without)
// and `memmove` (the static binary's memcpy is assembly).
#![deny(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[allow(unsafe_code)]
pub mod allocator;
pub mod archive;
pub mod bench;
pub mod build_info;
pub mod bundle;
pub mod ca;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod core;
pub mod demo;
pub mod dn;
pub mod dpop;
pub mod drill;
pub mod es256;
pub mod grants;
pub mod guard;
pub mod keyset;
pub mod kit;
pub mod listener;
#[allow(unsafe_code)]
pub mod memmove;
pub mod monitoring;
pub mod mtls;
pub mod people;
pub mod policy;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;
