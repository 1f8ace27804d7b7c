//! Opening a store from a URL: connect, check, migrate.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::sql::SqlStore;
use crate::{Store, StoreError};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// How long to wait for a connection before reporting the store as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether opening may create a new, empty store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the database (SQLite file, or the schema in an empty
    /// PostgreSQL database) when it is missing: `lanyard server init`,
    /// `lanyard dev` on a fresh directory, tests.
    Create,
    /// Only open a store that already holds Lanyard's schema (migrating it
    /// forward): `lanyard server`. A missing, 0-byte or foreign database is
    /// an error, never silently re-initialised with new keys, a new CA and
    /// an audit log restarting at 1.
    Existing,
}

/// Opens the store at `url`, creating it when missing, and brings its
/// schema up to date. See [`open_with`].
///
/// # Errors
/// As [`open_with`].
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, OpenMode::Create).await
}

/// Opens the store at `url` and brings its schema up to date.
///
/// `sqlite:///abs/path.db` (or `sqlite://relative.db`); a file it creates
/// is mode 0600 (and an existing one is tightened to it, as its WAL and
/// shared-memory files inherit it). `postgres://…` connects to an existing
/// database.
///
/// # Errors
/// [`StoreError::UnsupportedUrl`], [`StoreError::Connect`] (store down),
/// [`StoreError::Corrupt`] (not a database, or not Lanyard's),
/// [`StoreError::NotInitialised`] (with [`OpenMode::Existing`]), or
/// [`StoreError::Migrate`]. A failed open writes nothing.
pub async fn open_with(url: &str, mode: OpenMode) -> Result<Arc<dyn Store>, StoreError> {
    let shown = redact_url(url);
    if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
            url: shown.clone(),
            source,
        })?;
        prepare_sqlite_file(opts.get_filename(), mode, &shown)?;
        let opts = opts
            .create_if_missing(mode == OpenMode::Create)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the caller is answered (audit
            // events are durable before the response); group commit keeps
            // the fsyncs few.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| classify(&shown, e))?;
        // Touch the schema before migrating so a corrupt file is reported as
        // such and left alone.
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&pool)
        .await
        .map_err(|e| classify(&shown, e))?;
        if mode == OpenMode::Existing && tables == 0 {
            return Err(StoreError::NotInitialised { url: shown });
        }
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| migrate_error(&shown, e))?;
        Ok(Arc::new(SqlStore::Sqlite(pool)))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let opts = PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
            url: shown.clone(),
            source,
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| classify(&shown, e))?;
        if mode == OpenMode::Existing {
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            )
            .fetch_one(&pool)
            .await
            .map_err(|e| classify(&shown, e))?;
            if tables == 0 {
                return Err(StoreError::NotInitialised { url: shown });
            }
        }
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| migrate_error(&shown, e))?;
        Ok(Arc::new(SqlStore::Postgres(pool)))
    } else {
        Err(StoreError::UnsupportedUrl { url: shown })
    }
}

/// Creates a missing SQLite file as 0600 (mode `Create`), refuses a missing
/// or empty one (mode `Existing`), and tightens an existing file to 0600.
fn prepare_sqlite_file(path: &Path, mode: OpenMode, shown: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let io = |source: std::io::Error| StoreError::File {
        path: path.display().to_string(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            if mode == OpenMode::Existing && meta.len() == 0 {
                return Err(StoreError::NotInitialised {
                    url: shown.to_owned(),
                });
            }
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match mode {
            OpenMode::Existing => Err(StoreError::NotInitialised {
                url: shown.to_owned(),
            }),
            OpenMode::Create => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map(drop)
                .map_err(io),
        },
        Err(e) => Err(io(e)),
    }
}

fn classify(url: &str, e: sqlx::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("file is not a database") || text.contains("malformed") {
        StoreError::Corrupt {
            url: url.to_owned(),
            detail: text,
        }
    } else {
        StoreError::Connect {
            url: url.to_owned(),
            source: e,
        }
    }
}

fn migrate_error(url: &str, e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::VersionMissing(v) => StoreError::Corrupt {
            url: url.to_owned(),
            detail: format!("it was migrated to schema version {v}, which this build of Lanyard does not know; run a newer lanyard"),
        },
        M::VersionMismatch(v) => StoreError::Corrupt {
            url: url.to_owned(),
            detail: format!("schema migration {v} differs from the one this build ships"),
        },
        M::Execute(err) if err.to_string().contains("file is not a database") => {
            StoreError::Corrupt { url: url.to_owned(), detail: err.to_string() }
        }
        other => StoreError::Migrate { url: url.to_owned(), source: other },
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query parameters can carry passwords too (`?password=`).
    let tail = match tail.split_once('?') {
        Some((path, query)) if query.contains("password") => format!("{path}?***"),
        _ => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=secret"),
            "postgres://u@h/db?***"
        );
        assert_eq!(
            redact_url("postgres://u:p%40ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/lanyard.db"),
            "sqlite:///var/lib/lanyard.db"
        );
    }
}
