//! SQL templates with `{{name}}`, `{{password}}` and `{{expiration}}`.
//!
//! ```sql
//! CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
//! GRANT readonly TO "{{name}}";
//! ```
//!
//! A template is checked when the role is added, not when it first runs:
//! only the three placeholders exist; `{{name}}` stands inside `"…"` (an
//! identifier) or `'…'` (a literal); `{{password}}` and `{{expiration}}`
//! inside `'…'`. The values Lanyard substitutes contain no quote, backslash
//! or other special character ([`crate::generate`]), so a checked template
//! renders to SQL in which each value is exactly one quoted token.

use crate::BrokerError;

/// Longest template accepted.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

/// A checked SQL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
}

/// Where a template is used, which decides what it must and may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Creation: must use `{{name}}` and `{{password}}`.
    Creation,
    /// Revocation: may use `{{name}}` only (it runs long after the password
    /// is forgotten).
    Revocation,
}

impl Use {
    fn as_str(self) -> &'static str {
        match self {
            Self::Creation => "creation",
            Self::Revocation => "revocation",
        }
    }
}

const PLACEHOLDERS: [(&str, &[char]); 3] = [
    ("name", &['"', '\'']),
    ("password", &['\'']),
    ("expiration", &['\'']),
];

impl Template {
    /// Checks `text` for use `used`.
    ///
    /// # Errors
    /// [`BrokerError::Template`] naming the first problem and its fix.
    pub fn parse(text: &str, used: Use) -> Result<Self, BrokerError> {
        let err = |detail: String| BrokerError::Template {
            what: used.as_str(),
            detail,
        };
        if text.trim().is_empty() {
            return Err(err("is empty".into()));
        }
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(err(format!("is longer than {MAX_TEMPLATE_BYTES} bytes")));
        }
        let mut seen = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            let after = rest.get(start + 2..).unwrap_or_default();
            let end = after
                .find("}}")
                .ok_or_else(|| err(format!("unclosed {{{{ at byte {}", offset + start)))?;
            let name = after.get(..end).unwrap_or_default().trim();
            let Some((_, quotes)) = PLACEHOLDERS.iter().find(|(p, _)| *p == name) else {
                return Err(err(format!(
                    "unknown placeholder {{{{{}}}}}; use {{{{name}}}}, {{{{password}}}} or {{{{expiration}}}}",
                    name.chars().take(32).collect::<String>()
                )));
            };
            if used == Use::Revocation && name != "name" {
                return Err(err(format!(
                    "{{{{{name}}}}} is not available when revoking; only {{{{name}}}} is"
                )));
            }
            let before = text.get(..offset + start).and_then(|s| s.chars().last());
            let close = offset + start + 2 + end + 2;
            let behind = text.get(close..).and_then(|s| s.chars().next());
            let quoted =
                matches!((before, behind), (Some(b), Some(a)) if b == a && quotes.contains(&b));
            if !quoted {
                let want = quotes
                    .iter()
                    .map(|q| format!("{q}{{{{{name}}}}}{q}"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                return Err(err(format!(
                    "{{{{{name}}}}} must be written {want}, so the value is one quoted token"
                )));
            }
            seen.push(name.to_owned());
            offset = close;
            rest = text.get(close..).unwrap_or_default();
        }
        let needs: &[&str] = match used {
            Use::Creation => &["name", "password"],
            Use::Revocation => &["name"],
        };
        if let Some(missing) = needs.iter().find(|n| !seen.iter().any(|s| s == *n)) {
            return Err(err(format!("must use {{{{{missing}}}}}")));
        }
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The template text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Substitutes the values. Each must be free of quotes, backslashes and
    /// control characters (generated values always are).
    ///
    /// # Errors
    /// [`BrokerError::Template`] if a value is unsafe (a bug upstream).
    pub fn render(
        &self,
        name: &str,
        password: Option<&str>,
        expiration: Option<&str>,
    ) -> Result<zeroize::Zeroizing<String>, BrokerError> {
        let needs_quoting = |v: &str| {
            v.is_empty()
                || v.chars()
                    .any(|c| matches!(c, '"' | '\'' | '\\' | '$' | ';') || c.is_control())
        };
        // A SCRAM verifier has `$` (never `$$`, and no `$tag$` a dollar
        // quote could close on); it is let through for `{{password}}` only,
        // and only in exactly the shape `scram::verifier` makes.
        if needs_quoting(name)
            || expiration.is_some_and(needs_quoting)
            || password.is_some_and(|p| needs_quoting(p) && !crate::scram::is_verifier(p))
        {
            return Err(BrokerError::Template {
                what: "render",
                detail: "a substituted value contains a character that needs quoting".into(),
            });
        }
        let mut out = self.text.replace("{{name}}", name);
        if let Some(p) = password {
            out = out.replace("{{password}}", p);
        }
        if let Some(e) = expiration {
            out = out.replace("{{expiration}}", e);
        }
        Ok(zeroize::Zeroizing::new(out))
    }
}

/// The templates of one broker role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleTemplates {
    /// The broker role's name (`readonly`), used as a hint in generated names.
    pub role: String,
    /// Runs to create a credential.
    pub creation: Template,
    /// Runs before the user is dropped; `None`: only the drop.
    pub revocation: Option<Template>,
}

/// PostgreSQL's `VALID UNTIL` text for Unix seconds `at` (UTC).
pub fn expiration(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]+00"
            ))
            .ok()
        })
        .unwrap_or_else(|| "1970-01-01 00:00:00+00".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';\nGRANT readonly TO \"{{name}}\";";

    #[test]
    fn accepts_the_documented_template_and_renders_it() {
        let t = Template::parse(GOOD, Use::Creation).map_err(|e| e.to_string());
        let t = t.as_ref().map_err(String::clone);
        assert!(t.is_ok(), "{t:?}");
        let Ok(t) = t else { return };
        let sql = t
            .render(
                "lanyard_ro_abc",
                Some("Pw123"),
                Some(&expiration(1_767_225_600)),
            )
            .map(|s| s.to_string())
            .unwrap_or_default();
        assert_eq!(
            sql,
            "CREATE ROLE \"lanyard_ro_abc\" LOGIN PASSWORD 'Pw123' VALID UNTIL '2026-01-01 00:00:00+00';\nGRANT readonly TO \"lanyard_ro_abc\";"
        );
    }

    #[test]
    fn refuses_each_bad_template_by_name() {
        let cases: &[(&str, Use, &str)] = &[
            ("", Use::Creation, "is empty"),
            (
                "CREATE ROLE {{name}} PASSWORD '{{password}}'",
                Use::Creation,
                "\"{{name}}\" or '{{name}}'",
            ),
            (
                "CREATE ROLE \"{{name}}\" PASSWORD {{password}}",
                Use::Creation,
                "'{{password}}'",
            ),
            (
                "CREATE ROLE \"{{name}}\" PASSWORD \"{{password}}\"",
                Use::Creation,
                "'{{password}}'",
            ),
            (
                "CREATE ROLE \"{{name}}'",
                Use::Creation,
                "\"{{name}}\" or '{{name}}'",
            ),
            (
                "CREATE ROLE \"{{name}}\"",
                Use::Creation,
                "must use {{password}}",
            ),
            (
                "CREATE ROLE \"{{user}}\" '{{password}}'",
                Use::Creation,
                "unknown placeholder {{user}}",
            ),
            ("CREATE ROLE \"{{name", Use::Creation, "unclosed"),
            (
                "DROP ROLE \"{{name}}\"; -- '{{password}}'",
                Use::Revocation,
                "not available when revoking",
            ),
            (
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC",
                Use::Revocation,
                "must use {{name}}",
            ),
        ];
        for (text, used, want) in cases {
            let got = Template::parse(text, *used)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(
                matches!(&got, Err(m) if m.contains(want)),
                "{text:?}: expected an error containing {want:?}, got {got:?}"
            );
        }
        let huge = format!("{GOOD}{}", " ".repeat(MAX_TEMPLATE_BYTES));
        assert!(Template::parse(&huge, Use::Creation).is_err());
    }

    #[test]
    fn render_refuses_values_that_would_need_quoting() {
        let Ok(t) = Template::parse(GOOD, Use::Creation) else {
            panic!("template rejected")
        };
        for bad in ["a\"b", "a'b", "a\\b", "a;b", "", "a\nb", "a$b", "$$"] {
            assert!(t.render(bad, Some("p"), Some("e")).is_err(), "{bad:?}");
            assert!(t.render("n", Some(bad), Some("e")).is_err(), "{bad:?}");
            assert!(t.render("n", Some("p"), Some(bad)).is_err(), "{bad:?}");
        }
        // A SCRAM verifier's `$` passes for the password, and only there.
        let verifier = "SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg==";
        assert!(t.render("n", Some(verifier), Some("e")).is_ok());
        assert!(t.render(verifier, Some("p"), Some("e")).is_err());
        assert!(t.render("n", Some("p"), Some(verifier)).is_err());
    }

    #[test]
    fn expiration_is_postgres_utc_text() {
        assert_eq!(expiration(0), "1970-01-01 00:00:00+00");
        assert_eq!(expiration(1_767_226_501), "2026-01-01 00:15:01+00");
    }
}
