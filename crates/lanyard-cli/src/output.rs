//! Printing results as text or JSON.

use serde_json::Value;

use crate::cli::Output;

/// Prints `value` as pretty JSON, or calls `text` to print it for humans.
pub fn print(output: Output, value: &Value, text: impl FnOnce(&Value)) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        ),
        Output::Text => text(value),
    }
}

/// A Unix time as RFC 3339 UTC, or `-`.
pub fn time(v: &Value) -> String {
    v.as_i64()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// A string field or empty.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}
