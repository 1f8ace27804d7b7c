//! RFC 6902 JSON Patch: the webhook's answer is the difference between the
//! pod it was given and the pod it made ([`diff`]); [`apply`] is the API
//! server's side, used by `lanyard webhook render` to show the resulting pod
//! and by the tests to prove the patch says what the mutation did.
//!
//! The diff is structural and small: new object keys are `add`, changed
//! scalars are `replace`, arrays that grew at the end get `add` at each new
//! index, arrays that grew at the front (EKS prepends its volume) get `add`
//! at the front. Mutations here never remove anything, so `remove` only
//! appears if an input changed shape, which the tests rule out.

use serde_json::{json, Value};

/// The operations that turn `old` into `new`.
pub fn diff(old: &Value, new: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    diff_at(old, new, &mut String::new(), &mut out);
    out
}

fn diff_at(old: &Value, new: &Value, path: &mut String, out: &mut Vec<Value>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, nv) in n {
                let len = path.len();
                path.push('/');
                path.push_str(&escape(k));
                match o.get(k) {
                    Some(ov) => diff_at(ov, nv, path, out),
                    None => out.push(json!({"op": "add", "path": path.as_str(), "value": nv})),
                }
                path.truncate(len);
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.push(json!({"op": "remove", "path": format!("{path}/{}", escape(k))}));
            }
        }
        (Value::Array(o), Value::Array(n)) if n.len() > o.len() && n.ends_with(o) => {
            let grown = n.len() - o.len();
            for (i, v) in n.iter().take(grown).enumerate() {
                out.push(json!({"op": "add", "path": format!("{path}/{i}"), "value": v}));
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            for (i, (ov, nv)) in o.iter().zip(n).enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                diff_at(ov, nv, path, out);
                path.truncate(len);
            }
            for (i, v) in n.iter().enumerate().skip(o.len()) {
                out.push(json!({"op": "add", "path": format!("{path}/{i}"), "value": v}));
            }
            for i in (n.len()..o.len()).rev() {
                out.push(json!({"op": "remove", "path": format!("{path}/{i}")}));
            }
        }
        _ if path.is_empty() => out.push(json!({"op": "replace", "path": "", "value": new})),
        _ => out.push(json!({"op": "replace", "path": path.as_str(), "value": new})),
    }
}

/// RFC 6901 escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatchError {
    /// An operation is not an object with `op` and `path`.
    #[error("patch operation {index} is malformed")]
    Malformed {
        /// Its index.
        index: usize,
    },
    /// The path does not exist (or its parent does not, for `add`).
    #[error("patch operation {index}: path {path:?} does not exist")]
    NoPath {
        /// Its index.
        index: usize,
        /// The path.
        path: String,
    },
    /// An operation other than add, remove, replace.
    #[error("patch operation {index}: op {op:?} is not supported")]
    Unsupported {
        /// Its index.
        index: usize,
        /// The op.
        op: String,
    },
}

/// Applies `add`, `remove` and `replace` operations to `doc`.
///
/// # Errors
/// [`PatchError`] naming the first operation that does not apply.
pub fn apply(doc: &mut Value, ops: &[Value]) -> Result<(), PatchError> {
    for (index, op) in ops.iter().enumerate() {
        let (Some(kind), Some(path)) = (
            op.get("op").and_then(Value::as_str),
            op.get("path").and_then(Value::as_str),
        ) else {
            return Err(PatchError::Malformed { index });
        };
        let no_path = || PatchError::NoPath {
            index,
            path: path.to_owned(),
        };
        let value = op.get("value").cloned();
        if path.is_empty() {
            match (kind, value) {
                ("replace" | "add", Some(v)) => *doc = v,
                _ => return Err(PatchError::Malformed { index }),
            }
            continue;
        }
        let Some((parent_path, last)) = path.rsplit_once('/') else {
            return Err(no_path());
        };
        let last = unescape(last);
        let parent = doc.pointer_mut(parent_path).ok_or_else(no_path)?;
        match (kind, parent) {
            ("add", Value::Object(m)) => {
                m.insert(last, value.ok_or(PatchError::Malformed { index })?);
            }
            ("replace", Value::Object(m)) => {
                let slot = m.get_mut(&last).ok_or_else(no_path)?;
                *slot = value.ok_or(PatchError::Malformed { index })?;
            }
            ("remove", Value::Object(m)) => {
                m.remove(&last).ok_or_else(no_path)?;
            }
            ("add", Value::Array(a)) => {
                let v = value.ok_or(PatchError::Malformed { index })?;
                if last == "-" {
                    a.push(v);
                } else {
                    let i: usize = last.parse().map_err(|_| no_path())?;
                    if i > a.len() {
                        return Err(no_path());
                    }
                    a.insert(i, v);
                }
            }
            ("replace", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| no_path())?;
                let slot = a.get_mut(i).ok_or_else(no_path)?;
                *slot = value.ok_or(PatchError::Malformed { index })?;
            }
            ("remove", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| no_path())?;
                if i >= a.len() {
                    return Err(no_path());
                }
                a.remove(i);
            }
            ("add" | "replace" | "remove", _) => return Err(no_path()),
            (other, _) => {
                return Err(PatchError::Unsupported {
                    index,
                    op: other.to_owned(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(old: Value, new: Value) -> Vec<Value> {
        let ops = diff(&old, &new);
        let mut doc = old;
        assert_eq!(apply(&mut doc, &ops), Ok(()));
        assert_eq!(doc, new);
        ops
    }

    #[test]
    fn appends_are_adds_at_new_indexes() {
        let ops = round_trip(json!({"a": [1, 2]}), json!({"a": [1, 2, 3, 4]}));
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/a/2", "value": 3}),
                json!({"op": "add", "path": "/a/3", "value": 4}),
            ]
        );
    }

    #[test]
    fn prepends_are_adds_at_the_front() {
        let ops = round_trip(json!({"v": [{"n": 1}]}), json!({"v": [{"n": 0}, {"n": 1}]}));
        assert_eq!(
            ops,
            vec![json!({"op": "add", "path": "/v/0", "value": {"n": 0}})]
        );
    }

    #[test]
    fn new_keys_are_escaped_adds_and_nothing_is_removed() {
        let ops = round_trip(
            json!({"metadata": {}}),
            json!({"metadata": {"labels": {"a/b~c": "x"}}}),
        );
        assert_eq!(
            ops,
            vec![json!({"op": "add", "path": "/metadata/labels", "value": {"a/b~c": "x"}})]
        );
        let ops = round_trip(json!({"l": {"a/b~c": "x"}}), json!({"l": {"a/b~c": "y"}}));
        assert_eq!(
            ops,
            vec![json!({"op": "replace", "path": "/l/a~1b~0c", "value": "y"})]
        );
    }

    #[test]
    fn shrinking_and_root_changes_round_trip() {
        round_trip(json!([1, 2, 3]), json!([1]));
        round_trip(json!({"a": 1, "b": 2}), json!({"a": 1}));
        round_trip(json!(1), json!({"x": 1}));
    }

    #[test]
    fn bad_patches_are_errors_not_panics() {
        let mut doc = json!({"a": [1]});
        assert!(apply(
            &mut doc,
            &[json!({"op": "add", "path": "/a/9", "value": 1})]
        )
        .is_err());
        assert!(apply(&mut doc, &[json!({"op": "move", "path": "/a"})]).is_err());
        assert!(apply(&mut doc, &[json!("x")]).is_err());
        assert!(apply(&mut doc, &[json!({"op": "remove", "path": "/nope/x"})]).is_err());
    }
}
