//! The audit hash chain (INV-4).
//!
//! Each event's hash is SHA-256 over the previous hash and the event's fields
//! in a fixed order (a JSON array, so field boundaries are unambiguous).
//! Changing, removing or reordering any event breaks every hash after it;
//! [`verify_chain`] names the first sequence number where that happens.

use aws_lc_rs::digest;
use lanyard_core::Decision;
use serde::Serialize;

/// The previous-hash of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit event before the store gives it a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditDraft {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Correlation id, also returned to the caller as `x-correlation-id`.
    pub correlation_id: String,
    /// Who acted: `admin:<token id>`, `system`, a SPIFFE ID.
    pub actor: String,
    /// What was done, e.g. `tenant.create`, `key.rotate`.
    pub action: String,
    /// What it was done to.
    pub subject: String,
    /// The tenant concerned, if any.
    pub tenant: Option<String>,
    /// Allow or deny.
    pub decision: Decision,
    /// Why (a stable code for denials).
    pub reason: String,
    /// SHA-256 of the evidence presented, never the evidence itself.
    pub evidence_digest: Option<String>,
}

/// An event in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1, gapless.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub draft: AuditDraft,
    /// Hash of the event before it ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The hash of the event at `seq` following `prev_hash`.
pub fn chain_hash(prev_hash: &str, seq: i64, d: &AuditDraft) -> String {
    let fields = serde_json::json!([
        seq,
        d.at_ms,
        d.correlation_id,
        d.actor,
        d.action,
        d.subject,
        d.tenant,
        d.decision.as_str(),
        d.reason,
        d.evidence_digest,
    ]);
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"\n");
    ctx.update(fields.to_string().as_bytes());
    lanyard_core::hex::encode(ctx.finish().as_ref())
}

/// Where a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at sequence {seq}: {why}")]
pub struct ChainBreak {
    /// The first sequence number that does not verify.
    pub seq: i64,
    /// What is wrong there.
    pub why: &'static str,
}

/// Verifies `events` (ascending, starting right after `start_seq` whose hash is
/// `start_hash`). Returns the last hash on success.
///
/// # Errors
/// [`ChainBreak`] naming the first bad sequence number.
pub fn verify_chain<'a>(
    start_seq: i64,
    start_hash: &str,
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Result<String, ChainBreak> {
    let mut prev = start_hash.to_owned();
    for (expected_seq, ev) in (start_seq + 1..).zip(events) {
        if ev.seq != expected_seq {
            return Err(ChainBreak {
                seq: expected_seq,
                why: "event missing or out of order",
            });
        }
        if ev.prev_hash != prev {
            return Err(ChainBreak {
                seq: ev.seq,
                why: "previous hash does not match",
            });
        }
        if chain_hash(&prev, ev.seq, &ev.draft) != ev.hash {
            return Err(ChainBreak {
                seq: ev.seq,
                why: "event content does not match its hash",
            });
        }
        prev.clone_from(&ev.hash);
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(i: i64) -> AuditDraft {
        AuditDraft {
            at_ms: i,
            correlation_id: format!("c{i}"),
            actor: "system".into(),
            action: "test".into(),
            subject: "s".into(),
            tenant: None,
            decision: Decision::Allow,
            reason: "ok".into(),
            evidence_digest: None,
        }
    }

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let hash = chain_hash(&prev, seq, &draft(seq));
                let ev = AuditEvent {
                    seq,
                    draft: draft(seq),
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                ev
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies_and_every_tamper_is_located() {
        let events = chain(5);
        assert!(verify_chain(0, GENESIS_HASH, &events).is_ok());

        let mut edited = events.clone();
        edited[2].draft.decision = Decision::Deny;
        assert_eq!(
            verify_chain(0, GENESIS_HASH, &edited).map_err(|b| b.seq),
            Err(3)
        );

        let mut dropped = events.clone();
        dropped.remove(1);
        assert_eq!(
            verify_chain(0, GENESIS_HASH, &dropped).map_err(|b| b.seq),
            Err(2)
        );

        let mut rehashed = events.clone();
        rehashed[3].draft.reason = "forged".into();
        rehashed[3].hash = chain_hash(&rehashed[3].prev_hash, 4, &rehashed[3].draft);
        assert_eq!(
            verify_chain(0, GENESIS_HASH, &rehashed).map_err(|b| b.seq),
            Err(5),
            "re-hashing one event breaks the next"
        );
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = draft(1);
        let mut b = draft(1);
        a.actor = "ab".into();
        a.action = "c".into();
        b.actor = "a".into();
        b.action = "bc".into();
        assert_ne!(
            chain_hash(GENESIS_HASH, 1, &a),
            chain_hash(GENESIS_HASH, 1, &b)
        );
    }
}
