//! Lanyard's domain types and policy, with no I/O.
//!
//! Everything here is pure: no tokio, no database, no clock or RNG of its own
//! (a [`Clock`] is passed in). The types are newtypes whose constructors
//! validate, so a value that exists is valid: a [`TenantId`] is a DNS label, a
//! [`TrustDomain`] is a lowercase SPIFFE trust domain name, a [`SpiffeId`] has
//! a trust domain and a path that the SPIFFE ID specification allows.
//!
//! Start reading at [`SpiffeId`] and [`TenantId`]; the TTL defaults and their
//! reasons are in [`ttl`].

#![warn(missing_docs)]
#![warn(clippy::indexing_slicing)]

pub mod audit;
pub mod clock;
pub mod deny;
pub mod entry;
pub mod evidence;
pub mod hex;
pub mod key;
pub mod selector;
pub mod spiffe;
pub mod tenant;
pub mod ttl;

pub use audit::Decision;
pub use clock::{Clock, SystemClock};
pub use deny::{Denial, DenyReason};
pub use entry::{Entry, EntryIndex, WorkloadMatch};
pub use evidence::Evidence;
pub use key::KeyState;
pub use selector::{Selector, SelectorError};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use tenant::{TenantId, TenantIdError};
