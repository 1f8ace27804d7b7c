//! Credential lifetimes (INV-2): short defaults, and a maximum for every TTL.
//!
//! Why these numbers: a JWT-SVID is a bearer token, so it lives for minutes
//! (5, as SPIRE's default); an X.509-SVID is bound to a key the workload holds
//! and rotates at half-life, so an hour keeps CA load low without widening the
//! window much; brokered database logins are revoked on expiry, 15 minutes.

use std::time::Duration;

/// Default JWT-SVID lifetime.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(5 * 60);
/// Hard ceiling for any JWT-SVID lifetime, whatever the configuration says.
pub const MAX_JWT_SVID_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default X.509-SVID lifetime.
pub const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(60 * 60);
/// Default brokered credential lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);

/// Parses a human duration such as `5m`, `1h30m`, `90s`.
///
/// # Errors
/// A message naming the input and the accepted form.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input.trim())
        .map_err(|e| format!("{input:?} is not a duration ({e}); use a form like 30s, 5m, 1h, 7d"))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        for (s, secs) in [
            ("5m", 300),
            ("1h", 3600),
            ("90s", 90),
            ("1h 30m", 5400),
            ("7days", 604_800),
        ] {
            let d = parse_duration(s);
            assert_eq!(d, Ok(Duration::from_secs(secs)), "{s}");
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(secs))),
                Ok(Duration::from_secs(secs))
            );
        }
        let err = parse_duration("soon").err().unwrap_or_default();
        assert!(err.contains("\"soon\"") && err.contains("5m"), "{err}");
    }
}
