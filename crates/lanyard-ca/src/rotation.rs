//! The signing-key rotation planner: pure, driven by a clock passed in.
//!
//! Invariants the plan keeps, per enabled algorithm:
//! - exactly one `Active` key signs;
//! - a `Next` key exists and is published for at least
//!   [`RotationPolicy::publish_lead`] before it is promoted, so relying
//!   parties that cache the JWKS (for at most the `Cache-Control` max-age we
//!   send, which is shorter) already know it when the first token arrives;
//! - a demoted key stays published as `Previous` for
//!   [`RotationPolicy::retain_after`] (the longest token lifetime plus clock
//!   skew), then is deleted.

use std::time::{Duration, SystemTime};

use lanyard_core::KeyState;
use lanyard_jose::Algorithm;

/// How often keys rotate and how long they are published around their use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a key signs before the next one takes over.
    pub rotation_period: Duration,
    /// How long the next key is published before it signs.
    pub publish_lead: Duration,
    /// How long a demoted key stays published (max token TTL + skew).
    pub retain_after: Duration,
}

impl Default for RotationPolicy {
    /// A daily rotation, published an hour ahead, kept a day after.
    fn default() -> Self {
        Self {
            rotation_period: Duration::from_secs(24 * 3600),
            publish_lead: Duration::from_secs(3600),
            retain_after: Duration::from_secs(24 * 3600 + 300),
        }
    }
}

/// What the planner needs to know about a stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// Rotation state.
    pub state: KeyState,
    /// When the key was created (and first published).
    pub created_at: SystemTime,
    /// When the key starts (or started) signing.
    pub activate_at: SystemTime,
    /// When a `Previous` key is removed.
    pub retire_at: Option<SystemTime>,
}

/// One step of a plan, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    /// Generate a key in `state` that signs from `activate_at`.
    Create {
        /// Algorithm.
        alg: Algorithm,
        /// `Active` (first key) or `Next`.
        state: KeyState,
        /// When it signs.
        activate_at: SystemTime,
    },
    /// `Next` → `Active`.
    Promote {
        /// Key id.
        kid: String,
    },
    /// `Active` → `Previous`, removed at `retire_at`.
    Demote {
        /// Key id.
        kid: String,
        /// When it is deleted.
        retire_at: SystemTime,
    },
    /// Change when a `Next` key takes over.
    Reschedule {
        /// Key id.
        kid: String,
        /// New activation time.
        activate_at: SystemTime,
    },
    /// Remove the key from the store and the JWKS.
    Delete {
        /// Key id.
        kid: String,
    },
}

/// Plans the actions that bring `keys` in line with `policy` at `now` for the
/// enabled algorithms `algs`. Applying the plan and planning again at the same
/// `now` yields an empty plan.
pub fn plan(
    now: SystemTime,
    keys: &[KeyMeta],
    algs: &[Algorithm],
    policy: &RotationPolicy,
) -> Vec<KeyAction> {
    let mut actions = Vec::new();
    for key in keys {
        if key.state == KeyState::Previous && key.retire_at.is_none_or(|t| t <= now) {
            actions.push(KeyAction::Delete {
                kid: key.kid.clone(),
            });
        }
    }
    for alg in Algorithm::ALL {
        let of = |state| {
            keys.iter()
                .filter(move |k| k.alg == alg && k.state == state)
        };
        let enabled = algs.contains(&alg);
        let retire_at = now + policy.retain_after;
        if !enabled {
            // A disabled algorithm stops signing but its tokens stay verifiable.
            actions.extend(of(KeyState::Active).map(|k| KeyAction::Demote {
                kid: k.kid.clone(),
                retire_at,
            }));
            actions.extend(of(KeyState::Next).map(|k| KeyAction::Delete { kid: k.kid.clone() }));
            continue;
        }
        let active: Vec<&KeyMeta> = of(KeyState::Active).collect();
        // The newest next key wins; any extra ones (a race between replicas) go.
        let mut nexts: Vec<&KeyMeta> = of(KeyState::Next).collect();
        nexts.sort_by_key(|k| (k.activate_at, k.created_at));
        let next = nexts.pop();
        actions.extend(
            nexts
                .iter()
                .map(|k| KeyAction::Delete { kid: k.kid.clone() }),
        );

        let due = next.filter(|n| n.activate_at <= now || active.is_empty());
        match (due, next) {
            (Some(n), _) => {
                actions.push(KeyAction::Promote { kid: n.kid.clone() });
                actions.extend(active.iter().map(|k| KeyAction::Demote {
                    kid: k.kid.clone(),
                    retire_at,
                }));
                actions.push(KeyAction::Create {
                    alg,
                    state: KeyState::Next,
                    activate_at: now + policy.rotation_period.max(policy.publish_lead),
                });
            }
            (None, Some(_)) => {
                // Keep one signer: if replicas raced to two actives, the newest stays.
                let mut sorted = active.clone();
                sorted.sort_by_key(|k| (k.activate_at, k.created_at));
                sorted.pop();
                actions.extend(sorted.iter().map(|k| KeyAction::Demote {
                    kid: k.kid.clone(),
                    retire_at,
                }));
            }
            (None, None) => {
                let newest = active.iter().map(|k| k.activate_at).max();
                if newest.is_none() {
                    actions.push(KeyAction::Create {
                        alg,
                        state: KeyState::Active,
                        activate_at: now,
                    });
                }
                let from_schedule = newest.unwrap_or(now) + policy.rotation_period;
                actions.push(KeyAction::Create {
                    alg,
                    state: KeyState::Next,
                    activate_at: from_schedule.max(now + policy.publish_lead),
                });
            }
        }
    }
    actions
}

/// Plans an emergency rotation of `alg` after its signing key was
/// compromised: the active key is deleted at once (tokens it signed stop
/// verifying as soon as relying parties refetch the JWKS), the next key
/// signs immediately even though it may have been published for less than
/// the lead, and a new next key is created.
pub fn plan_compromised(
    now: SystemTime,
    keys: &[KeyMeta],
    alg: Algorithm,
    policy: &RotationPolicy,
) -> Vec<KeyAction> {
    let mut actions: Vec<KeyAction> = keys
        .iter()
        .filter(|k| k.alg == alg && k.state == KeyState::Active)
        .map(|k| KeyAction::Delete { kid: k.kid.clone() })
        .collect();
    let next = keys
        .iter()
        .filter(|k| k.alg == alg && k.state == KeyState::Next)
        .max_by_key(|k| (k.activate_at, k.created_at));
    match next {
        Some(n) => actions.push(KeyAction::Promote { kid: n.kid.clone() }),
        None => actions.push(KeyAction::Create {
            alg,
            state: KeyState::Active,
            activate_at: now,
        }),
    }
    actions.push(KeyAction::Create {
        alg,
        state: KeyState::Next,
        activate_at: now + policy.rotation_period.max(policy.publish_lead),
    });
    actions
}

/// Plans an operator-requested rotation of `alg`: the next key takes over as
/// soon as it has been published for `publish_lead` (now, if it already has).
/// Returns the reschedule action, if any, and when the rotation happens.
pub fn plan_rotate_now(
    now: SystemTime,
    keys: &[KeyMeta],
    alg: Algorithm,
    policy: &RotationPolicy,
) -> Option<(KeyAction, SystemTime)> {
    let next = keys
        .iter()
        .filter(|k| k.alg == alg && k.state == KeyState::Next)
        .max_by_key(|k| (k.activate_at, k.created_at))?;
    let when = now.max(next.created_at + policy.publish_lead);
    Some((
        KeyAction::Reschedule {
            kid: next.kid.clone(),
            activate_at: when,
        },
        when,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Applies a plan to an in-memory key list, as the server does to the store.
    fn apply(keys: &mut Vec<KeyMeta>, actions: &[KeyAction], now: SystemTime, counter: &mut u32) {
        for a in actions {
            match a {
                KeyAction::Create {
                    alg,
                    state,
                    activate_at,
                } => {
                    *counter += 1;
                    keys.push(KeyMeta {
                        kid: format!("k{counter}"),
                        alg: *alg,
                        state: *state,
                        created_at: now,
                        activate_at: *activate_at,
                        retire_at: None,
                    });
                }
                KeyAction::Promote { kid } => keys
                    .iter_mut()
                    .filter(|k| &k.kid == kid)
                    .for_each(|k| k.state = KeyState::Active),
                KeyAction::Demote { kid, retire_at } => {
                    keys.iter_mut().filter(|k| &k.kid == kid).for_each(|k| {
                        k.state = KeyState::Previous;
                        k.retire_at = Some(*retire_at);
                    })
                }
                KeyAction::Reschedule { kid, activate_at } => keys
                    .iter_mut()
                    .filter(|k| &k.kid == kid)
                    .for_each(|k| k.activate_at = *activate_at),
                KeyAction::Delete { kid } => keys.retain(|k| &k.kid != kid),
            }
        }
    }

    fn state_of(keys: &[KeyMeta], state: KeyState) -> Vec<&str> {
        keys.iter()
            .filter(|k| k.state == state)
            .map(|k| k.kid.as_str())
            .collect()
    }

    #[test]
    fn first_start_creates_active_and_next_then_settles() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 1000;
        let policy = RotationPolicy::default();
        let (mut keys, mut n) = (Vec::new(), 0);
        let p = plan(now, &keys, &[Algorithm::Es256], &policy);
        apply(&mut keys, &p, now, &mut n);
        assert_eq!(state_of(&keys, KeyState::Active), ["k1"]);
        assert_eq!(state_of(&keys, KeyState::Next), ["k2"]);
        assert_eq!(
            plan(now, &keys, &[Algorithm::Es256], &policy),
            [],
            "a settled ring plans nothing"
        );
    }

    #[test]
    fn next_key_is_published_for_the_lead_before_it_signs_and_previous_outlives_its_tokens() {
        let policy = RotationPolicy {
            rotation_period: 6 * HOUR,
            publish_lead: HOUR,
            retain_after: 2 * HOUR,
        };
        let start = SystemTime::UNIX_EPOCH + HOUR * 1000;
        let (mut keys, mut n) = (Vec::new(), 0);
        // Step a fake clock through two days in 10-minute ticks, checking the
        // invariants at every tick.
        let mut signed_by: Vec<(String, SystemTime)> = Vec::new();
        for tick in 0..(48 * 6) {
            let now = start + Duration::from_secs(600) * tick;
            let p = plan(now, &keys, &[Algorithm::Es256], &policy);
            apply(&mut keys, &p, now, &mut n);
            let active = state_of(&keys, KeyState::Active);
            assert_eq!(active.len(), 1, "exactly one signer at {tick}");
            let signer = keys.iter().find(|k| k.state == KeyState::Active).cloned();
            if let Some(s) = signer {
                assert!(
                    now.duration_since(s.created_at).unwrap_or_default() >= policy.publish_lead
                        || s.kid == "k1",
                    "{} signs at tick {tick} but was published only at {:?}",
                    s.kid,
                    s.created_at
                );
                signed_by.push((s.kid.clone(), now));
            }
            assert_eq!(
                state_of(&keys, KeyState::Next).len(),
                1,
                "next key published at {tick}"
            );
            // Every key that signed within retain_after is still published.
            for (kid, at) in &signed_by {
                if now.duration_since(*at).unwrap_or_default() < policy.retain_after {
                    assert!(
                        keys.iter().any(|k| &k.kid == kid),
                        "{kid} vanished while its tokens live"
                    );
                }
            }
        }
        // Ticks span 47h50m at a 6-hour period: k1 plus 7 rotations (6h..42h) signed.
        let distinct: std::collections::BTreeSet<_> =
            signed_by.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(distinct.len(), 8);
        assert!(keys.len() <= 4, "old keys are pruned: {}", keys.len());
    }

    #[test]
    fn manual_rotation_waits_for_the_publish_lead() {
        let policy = RotationPolicy {
            rotation_period: 24 * HOUR,
            publish_lead: HOUR,
            retain_after: HOUR,
        };
        let t0 = SystemTime::UNIX_EPOCH + HOUR * 1000;
        let (mut keys, mut n) = (Vec::new(), 0);
        let p = plan(t0, &keys, &[Algorithm::Es256], &policy);
        apply(&mut keys, &p, t0, &mut n);
        // Right after start the next key is brand new: rotation is scheduled an hour out.
        let (action, when) = plan_rotate_now(t0, &keys, Algorithm::Es256, &policy)
            .unwrap_or((KeyAction::Delete { kid: String::new() }, t0));
        assert_eq!(when, t0 + HOUR);
        apply(&mut keys, &[action], t0, &mut n);
        assert_eq!(
            plan(
                t0 + HOUR - Duration::from_secs(1),
                &keys,
                &[Algorithm::Es256],
                &policy
            ),
            []
        );
        let later = t0 + HOUR;
        let p = plan(later, &keys, &[Algorithm::Es256], &policy);
        apply(&mut keys, &p, later, &mut n);
        assert_eq!(state_of(&keys, KeyState::Active), ["k2"]);
        assert_eq!(state_of(&keys, KeyState::Previous), ["k1"]);
        // Two hours later the next key has been published long enough: immediate.
        let t2 = later + 2 * HOUR;
        let (_, when) = plan_rotate_now(t2, &keys, Algorithm::Es256, &policy)
            .unwrap_or((KeyAction::Delete { kid: String::new() }, t0));
        assert_eq!(when, t2);
    }

    #[test]
    fn a_compromised_key_is_removed_and_the_next_key_signs_at_once() {
        let policy = RotationPolicy::default();
        let t0 = SystemTime::UNIX_EPOCH + HOUR * 1000;
        let (mut keys, mut n) = (Vec::new(), 0);
        let p = plan(t0, &keys, &[Algorithm::Es256], &policy);
        apply(&mut keys, &p, t0, &mut n);
        let p = plan_compromised(t0, &keys, Algorithm::Es256, &policy);
        apply(&mut keys, &p, t0, &mut n);
        assert!(!keys.iter().any(|k| k.kid == "k1"), "compromised key gone");
        assert_eq!(state_of(&keys, KeyState::Active), ["k2"]);
        assert_eq!(state_of(&keys, KeyState::Next), ["k3"]);
        assert_eq!(plan(t0, &keys, &[Algorithm::Es256], &policy), [], "settled");
    }

    #[test]
    fn disabling_an_algorithm_retires_its_keys_and_races_resolve() {
        let policy = RotationPolicy::default();
        let t0 = SystemTime::UNIX_EPOCH + HOUR * 1000;
        let (mut keys, mut n) = (Vec::new(), 0);
        let p = plan(t0, &keys, &Algorithm::ALL, &policy);
        apply(&mut keys, &p, t0, &mut n);
        assert_eq!(state_of(&keys, KeyState::Active).len(), 2);
        let p = plan(t0, &keys, &[Algorithm::Es256], &policy);
        apply(&mut keys, &p, t0, &mut n);
        let rs: Vec<_> = keys
            .iter()
            .filter(|k| k.alg == Algorithm::Rs256)
            .map(|k| k.state)
            .collect();
        assert_eq!(
            rs,
            [KeyState::Previous],
            "RS256 active demoted, next deleted"
        );
        // Two replicas both created an active key: one is demoted.
        let mut dup = keys.clone();
        let Some(mut extra) = dup
            .iter()
            .find(|k| k.alg == Algorithm::Es256 && k.state == KeyState::Active)
            .cloned()
        else {
            panic!("no ES256 active key");
        };
        extra.kid = "dup".into();
        extra.activate_at += Duration::from_secs(1);
        dup.push(extra);
        let p = plan(t0, &dup, &[Algorithm::Es256], &policy);
        apply(&mut dup, &p, t0, &mut n);
        let es_active: Vec<_> = dup
            .iter()
            .filter(|k| k.alg == Algorithm::Es256 && k.state == KeyState::Active)
            .collect();
        assert_eq!(es_active.len(), 1);
    }
}
