//! The store's error type.

/// What went wrong in the store. Messages name the entity, never secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is not a `sqlite://` or `postgres://` URL.
    #[error("store URL {url:?} is not supported; use sqlite:///path/to/lanyard.db or postgres://user@host/db")]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot open the store at {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The file is not a database, or the schema is not Lanyard's.
    #[error("the store at {url} is not a readable Lanyard database ({detail}); nothing was changed. Restore it from a backup or point the store at another path")]
    Corrupt {
        /// The URL, password redacted.
        url: String,
        /// What the driver said.
        detail: String,
    },
    /// `lanyard server` found no Lanyard store where one must exist.
    #[error("there is no Lanyard store at {url} (missing, empty, or without Lanyard's schema); `lanyard server` never creates one, so a lost or truncated database cannot silently restart with new keys and a new audit log. Restore it from a backup, or create a new store with `lanyard server init --config FILE`")]
    NotInitialised {
        /// The URL, password redacted.
        url: String,
    },
    /// A file next to the store could not be prepared.
    #[error("preparing the store file {path}: {source}")]
    File {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Migrations failed.
    #[error("migrating the store at {url} failed: {source}")]
    Migrate {
        /// The URL, password redacted.
        url: String,
        /// The migration error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The row already exists.
    #[error("{what} already exists")]
    Conflict {
        /// What exists, e.g. `tenant "dev"`.
        what: String,
    },
    /// The row is still referenced and cannot be removed.
    #[error("{what}")]
    InUse {
        /// What references it, and what to do.
        what: String,
    },
    /// A background job's write found that this replica no longer holds
    /// the job's lease (another replica took it over); nothing was written.
    #[error("this replica no longer holds the {job} job (another replica took it over); nothing was written")]
    Fenced {
        /// The job.
        job: String,
    },
    /// The row does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What is missing.
        what: String,
    },
    /// A stored value is not what the schema promises.
    #[error("stored {what} is invalid: {detail}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A planner refused to plan.
    #[error("{0}")]
    Planner(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the database cannot be reached or used right now (down,
    /// restarting, connection lost, pool exhausted): the request may be
    /// retried, and nothing was written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                // PostgreSQL: connection exceptions (08…), the server
                // shutting down or starting (57P01..57P03), and SQLite's
                // busy database.
                sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                    c.starts_with("08")
                        || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "5" | "6")
                }),
                _ => false,
            },
            _ => false,
        }
    }

    /// True when the error is about the row's existence, not the database.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. } | Self::NotFound { .. } | Self::InUse { .. }
        )
    }
}
