//! Audit vocabulary shared by every crate that records decisions (INV-4).

use std::fmt;

/// The outcome of a decision, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The request was granted or the change was applied.
    Allow,
    /// The request was refused.
    Deny,
}

impl Decision {
    /// The stable lowercase name stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
