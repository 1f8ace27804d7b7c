//! Reading and editing a pod as JSON.
//!
//! The webhook edits the pod as it arrived (`serde_json::Value`), not a typed
//! copy: fields this build's API types do not know survive untouched, and the
//! JSON patch only names what changed. The pod was decoded as a typed `Pod`
//! first (see [`crate::admission`]), so the shapes read here are the API's;
//! every accessor still tolerates anything, without panicking.

use serde_json::{Map, Value};

/// The two container lists, in the order the webhooks mutate them.
pub(crate) const CONTAINER_LISTS: [&str; 2] = ["initContainers", "containers"];

/// `metadata.labels[key]`.
pub(crate) fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/labels")?.get(key)?.as_str()
}

/// `metadata.annotations[key]`.
pub(crate) fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// A string field at a JSON pointer.
pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)?.as_str()
}

/// `spec`, created if absent.
fn spec_mut(pod: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = pod.as_object_mut()?;
    let spec = obj
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    if spec.is_null() {
        *spec = Value::Object(Map::new());
    }
    spec.as_object_mut()
}

/// An array field of `obj`, created if absent or null.
fn array_field<'a>(obj: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Vec<Value>> {
    let v = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut()
}

/// `spec.<list>` if present (not created).
pub(crate) fn containers_mut<'a>(pod: &'a mut Value, list: &str) -> Option<&'a mut Vec<Value>> {
    pod.get_mut("spec")?.get_mut(list)?.as_array_mut()
}

/// `spec.<list>`, created if absent.
pub(crate) fn containers_created<'a>(pod: &'a mut Value, list: &str) -> Option<&'a mut Vec<Value>> {
    array_field(spec_mut(pod)?, list)
}

/// Names of the containers in `spec.<list>`.
pub(crate) fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(|c| name(c).to_owned()).collect())
        .unwrap_or_default()
}

/// `spec.volumes`, created if absent.
pub(crate) fn volumes_mut(pod: &mut Value) -> Option<&mut Vec<Value>> {
    array_field(spec_mut(pod)?, "volumes")
}

/// Whether `spec.volumes` has one named `name`.
pub(crate) fn has_volume(pod: &Value, volume: &str) -> bool {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| vs.iter().any(|v| name(v) == volume))
}

/// The `name` of an object, or "".
pub(crate) fn name(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Whether the container has an env var named `env` (by name only: a
/// `valueFrom` entry counts too).
pub(crate) fn has_env(container: &Value, env: &str) -> bool {
    container
        .get("env")
        .and_then(Value::as_array)
        .is_some_and(|es| es.iter().any(|e| name(e) == env))
}

/// Appends `{name, value}` to the container's env.
pub(crate) fn push_env(container: &mut Value, env: &str, value: &str) {
    if let Some(obj) = container.as_object_mut() {
        if let Some(list) = array_field(obj, "env") {
            list.push(serde_json::json!({ "name": env, "value": value }));
        }
    }
}

/// Whether the container mounts a volume named `volume`.
pub(crate) fn has_mount(container: &Value, volume: &str) -> bool {
    container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .is_some_and(|ms| ms.iter().any(|m| name(m) == volume))
}

/// Replaces the container's mount named like `mount` unless it already says
/// everything `mount` says, or appends `mount`.
pub(crate) fn upsert_mount(container: &mut Value, mount: Value) {
    let Some(obj) = container.as_object_mut() else {
        return;
    };
    let Some(list) = array_field(obj, "volumeMounts") else {
        return;
    };
    upsert_by_name(list, mount);
}

/// Appends `mount` unless a mount with its name exists (kept as it is).
pub(crate) fn add_mount_if_absent(container: &mut Value, mount: Value) {
    if has_mount(container, name(&mount)) {
        return;
    }
    if let Some(obj) = container.as_object_mut() {
        if let Some(list) = array_field(obj, "volumeMounts") {
            list.push(mount);
        }
    }
}

/// Replaces the item named like `item` unless it already contains `item`
/// (the API server may have defaulted more fields into it since, e.g.
/// `defaultMode`), or appends `item`. This is upstream v1.6's replace-by-name,
/// made idempotent across re-admission.
pub(crate) fn upsert_by_name(list: &mut Vec<Value>, item: Value) {
    let wanted = name(&item).to_owned();
    match list.iter_mut().find(|v| name(v) == wanted) {
        Some(existing) if contains(existing, &item) => {}
        Some(existing) => *existing = item,
        None => list.push(item),
    }
}

/// Whether `have` says at least everything `want` says: every field of
/// `want` is in `have` with a value that contains it; arrays element-wise.
pub(crate) fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        _ => have == want,
    }
}

/// Splits a container-name list on `sep`, trimming each item when `trim`.
pub(crate) fn split_names(text: &str, sep: char, trim: bool) -> std::collections::HashSet<String> {
    text.split(sep)
        .map(|s| if trim { s.trim() } else { s })
        .map(str::to_owned)
        .collect()
}
