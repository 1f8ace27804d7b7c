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

/// A string field or empty, for a terminal: stored text (descriptions,
/// reasons, subjects) may hold control characters, which are shown escaped,
/// never raw (they could rewrite the operator's screen).
pub fn s(v: &Value, key: &str) -> String {
    lanyard_core::text::escape_control(raw(v, key))
}

/// A string field or empty, as stored: for values used as data (passwords,
/// URLs), never for printing.
pub fn raw<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_text_is_printed_without_control_characters() {
        let v = serde_json::json!({"d": "ok\u{1b}[2J\u{9b}31m", "n": 5});
        let shown = super::s(&v, "d");
        assert!(
            !lanyard_core::text::has_control(&shown.replace('\n', "")),
            "{shown}"
        );
        assert!(shown.starts_with("ok\\u{1b}"), "{shown}");
        assert_eq!(super::s(&v, "n"), "");
    }
}
