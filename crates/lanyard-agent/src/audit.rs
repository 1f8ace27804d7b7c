//! The agent's audit sink for decisions it makes on its own: today the
//! Delegated Identity API ([`crate::delegated`]), where one local process
//! obtains another's SVIDs.
//!
//! INV-4 wants every decision in the server's hash-chained audit log. The
//! agent has no way to append there yet (the node API carries no audit
//! events), so decisions go to an [`AuditSink`]; the one shipped,
//! [`TracingAuditSink`], emits one structured event per decision on the
//! tracing target `lanyard::audit` (caller, delegate, selectors, decision,
//! reason), which the operator's log pipeline keeps. A sink that forwards to
//! the server over the node API plugs in here without touching the API code.

use lanyard_core::Decision;

/// One decision of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// What was asked, e.g. `delegated.SubscribeToX509SVIDs`.
    pub action: &'static str,
    /// The process that asked: `pid=P uid=U`.
    pub caller: String,
    /// Why the caller counts as a delegate (`spiffe_id:ID` or
    /// `selectors:[…]`); `None` when it does not.
    pub delegate: Option<String>,
    /// The workload named: its selectors, or `pid:P` then its attested selectors.
    pub selectors: Vec<String>,
    /// SPIFFE IDs handed out.
    pub spiffe_ids: Vec<String>,
    /// Allow or deny.
    pub decision: Decision,
    /// A stable reason code, e.g. `not_a_delegate`, `no_entry_matches`, `granted`.
    pub reason: &'static str,
}

/// Where the agent's audit events go.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Records one event. Must not block for long (it runs on the request path).
    fn record(&self, event: &AuditEvent);
}

/// Structured events on the tracing target `lanyard::audit`, at `info`
/// (grants) and `warn` (denials).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAuditSink;

impl AuditSink for TracingAuditSink {
    fn record(&self, e: &AuditEvent) {
        let delegate = e.delegate.as_deref().unwrap_or("");
        match e.decision {
            Decision::Allow => tracing::info!(
                target: "lanyard::audit",
                action = e.action,
                caller = %e.caller,
                delegate,
                selectors = ?e.selectors,
                spiffe_ids = ?e.spiffe_ids,
                decision = e.decision.as_str(),
                reason = e.reason,
                "delegated identity decision"
            ),
            Decision::Deny => tracing::warn!(
                target: "lanyard::audit",
                action = e.action,
                caller = %e.caller,
                delegate,
                selectors = ?e.selectors,
                spiffe_ids = ?e.spiffe_ids,
                decision = e.decision.as_str(),
                reason = e.reason,
                "delegated identity decision"
            ),
        }
    }
}
