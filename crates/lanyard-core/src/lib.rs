//! Lanyard's domain types and policy, with no I/O.
//!
//! Everything here is pure: no tokio, no database, no clock or RNG of its own
//! (a [`Clock`] is passed in). The types are newtypes whose constructors
//! validate, so a value that exists is valid: a [`TenantId`] is a DNS label, a
//! [`TrustDomain`] is a lowercase SPIFFE trust domain name, a [`SpiffeId`] has
//! a trust domain and a path that the SPIFFE ID specification allows.
//!
//! It also holds the identity policy (INV-10): [`policy`] decides every token
//! and certificate the server issues, [`entry::validate`] decides what a
//! registration entry may say, [`naming`] keeps `spiffe://TD/lanyard/` for
//! the server and its nodes, [`revocation`] and [`delegation`] type what
//! those decisions read.
//!
//! Start reading at [`SpiffeId`] and [`TenantId`], then [`policy`]; the TTL
//! defaults and their reasons are in [`ttl`].

#![warn(missing_docs)]

pub mod audience;
pub mod audit;
pub mod claims;
pub mod clock;
pub mod delegation;
pub mod deny;
pub mod entry;
pub mod evidence;
pub mod hex;
pub mod key;
pub mod naming;
pub mod policy;
pub mod revocation;
pub mod selector;
pub mod spiffe;
pub mod tenant;
pub mod text;
pub mod ttl;

pub use audience::{AudienceProfile, ProfileSet, SubjectTemplate};
pub use audit::Decision;
pub use claims::JwtSvidClaims;
pub use clock::{Clock, SystemClock};
pub use delegation::ActChain;
pub use deny::{Denial, DenyReason};
pub use entry::{Entry, EntryIndex, WorkloadMatch};
pub use evidence::Evidence;
pub use key::KeyState;
pub use policy::{Policy, Principal};
pub use revocation::{RevocationKey, RevocationKind, RevocationSet};
pub use selector::{Selector, SelectorError};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use tenant::{TenantId, TenantIdError};
