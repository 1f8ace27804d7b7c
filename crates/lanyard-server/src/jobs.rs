//! Background jobs that must run on one replica at a time (key and CA
//! rotation, the broker's lease reaper, audit checkpoints) hold a lease in
//! the store's `job_leaders` table.
//!
//! Two rules make the lease safe, as leases with fencing tokens are:
//!
//! - every write a job commits carries a [`Fence`]: inside the transaction
//!   the store checks that this replica still holds the job (and holds the
//!   job's row until the commit), so a replica that lost the job cannot
//!   write after another took it over;
//! - before any action outside the store (dropping a PostgreSQL role), the
//!   job checks [`JobLease::held`], which is this replica's own deadline:
//!   [`MARGIN`] before the lease it last renewed runs out. A replica cut off
//!   from the database therefore stops acting before another replica can
//!   claim the job (which it can only once the stored lease has expired).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use lanyard_core::Clock;
use lanyard_store::{Fence, Store, StoreError};

/// How long before the stored expiry a holder stops acting on its own.
pub const MARGIN: i64 = 5;

/// One job's lease as this replica holds it.
#[derive(Debug)]
pub struct JobLease {
    name: &'static str,
    holder: String,
    seconds: i64,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Unix seconds until which this replica may act; 0 when not held.
    acting_until: AtomicI64,
}

impl JobLease {
    /// A lease on job `name`, renewed for `seconds` at each [`JobLease::claim`].
    pub fn new(
        name: &'static str,
        holder: &str,
        seconds: i64,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            name,
            holder: holder.to_owned(),
            seconds: seconds.max(MARGIN * 2),
            store,
            clock,
            acting_until: AtomicI64::new(0),
        }
    }

    /// Claims or renews the job. True when this replica holds it now.
    ///
    /// # Errors
    /// Store errors; the job is then not held (this replica stops acting).
    pub async fn claim(&self) -> Result<bool, StoreError> {
        let now = self.clock.unix_seconds();
        let claimed = self
            .store
            .claim_job(
                self.name,
                &self.holder,
                now,
                now.saturating_add(self.seconds),
            )
            .await;
        let until = match claimed {
            Ok(true) => now.saturating_add(self.seconds - MARGIN),
            Ok(false) | Err(_) => 0,
        };
        self.acting_until.store(until, Ordering::Relaxed);
        claimed
    }

    /// Whether this replica may still act for the job (checked before every
    /// action outside the store).
    pub fn held(&self) -> bool {
        self.clock.unix_seconds() < self.acting_until.load(Ordering::Relaxed)
    }

    /// The fence each of the job's writes carries.
    pub fn fence(&self) -> Fence {
        Fence {
            job: self.name.to_owned(),
            holder: self.holder.clone(),
            now: self.clock.unix_seconds(),
        }
    }

    /// The job's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}
