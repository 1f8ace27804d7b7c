//! Fuzzes the admission webhooks with untrusted AdmissionReview bodies.
//!
//! The bytes go to `Webhook::review_pod` and `review_spinapp` (every
//! convention on, one service account, no I/O). Neither may panic; when a
//! pod is admitted with a patch, the patch must apply to the pod sent, and
//! admitting the result again must change nothing (re-admission is a no-op).

#![no_main]

use std::sync::{Arc, OnceLock};

use lanyard_k8s::config::{FailureMode, RawFile};
use lanyard_k8s::metrics::Metrics;
use lanyard_k8s::mutate::Mutator;
use lanyard_k8s::{ServiceAccounts, Webhook};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

struct Fixture {
    webhook: Webhook,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let config = "[webhook.azure]\ntenant_id = \"t\"\n[webhook.aws]\nregion = \"eu-west-1\"\n";
        let mutation = RawFile::parse(config, "fuzz")
            .and_then(RawFile::mutation)
            .expect("valid configuration");
        let sa = serde_json::from_value(json!({"metadata": {"name": "default", "namespace": "default",
            "annotations": {"azure.workload.identity/client-id": "c",
                "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/r"}}}))
        .expect("valid service account");
        Fixture {
            webhook: Webhook::new(
                Mutator::new(mutation, true),
                ServiceAccounts::Fixed(vec![sa]),
                FailureMode::Deny,
                Arc::new(Metrics::new()),
            ),
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let _ = f.runtime.block_on(f.webhook.review_spinapp(data));
    let Ok(r) = f.runtime.block_on(f.webhook.review_pod(data)) else {
        return;
    };
    if !r.allowed || r.patch.is_empty() {
        return;
    }
    let mut pod = r.object.clone();
    lanyard_k8s::patch::apply(&mut pod, &r.patch).expect("the webhook's patch applies");
    // The same review (namespace, kind, operation), with the mutated pod.
    // (Bytes the webhook skips, such as invalid UTF-8 in an ignored field,
    // do not parse as a whole `Value`; there is then no review to repeat.)
    let Ok(mut again) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    again["request"]["object"] = pod;
    let body = serde_json::to_vec(&again).expect("serialises");
    let r2 = f.runtime.block_on(f.webhook.review_pod(&body)).expect("answerable");
    assert!(r2.allowed && r2.patch.is_empty(), "re-admission changed the pod: {:?}", r2.patch);
});
