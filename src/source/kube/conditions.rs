//! Kubernetes conditions in a status Sluice writes, as JSON: `observedGeneration` on each, `lastTransitionTime`
//! kept while a condition keeps its status, and the comparison that decides whether a status needs writing.
//!
//! ```text
//!  desired status (no times) ──observe(generation)──▶ same(current)? ── yes ─▶ nothing to write
//!                                                         │ no
//!                                                         ▼
//!                          stamp(previous): per condition, the previous time if type and status are unchanged,
//!                          else now ─▶ merge patch
//! ```
//! Conditions are found wherever a `conditions` list sits (`status.conditions`, `status.listeners[].conditions`,
//! `status.parents[].conditions`); list entries are matched to the previous ones by `name` (a listener) or by
//! `parentRef` and `controllerName` (a route parent), conditions by `type`. Pure.

use serde_json::{Map, Value};

/// Sets `observedGeneration` on every condition in `status` (left out when the object has no generation).
pub fn observe(status: &mut Value, generation: Option<i64>) {
    match status {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v, generation) {
                    ("conditions", Value::Array(conditions), Some(g)) => {
                        for c in conditions.iter_mut().filter_map(Value::as_object_mut) {
                            c.insert("observedGeneration".into(), g.into());
                        }
                    }
                    (_, v, _) => observe(v, generation),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| observe(v, generation)),
        _ => {}
    }
}

/// Whether `current` (an object's whole status) already says what `desired` says, under each of its keys,
/// timestamps aside. A missing key, `null` and `[]` are the same (nothing).
pub fn same(current: Option<&Value>, desired: &Value) -> bool {
    let Some(fields) = desired.as_object() else { return false };
    fields.iter().all(|(k, want)| {
        let have = current.and_then(|c| c.get(k)).unwrap_or(&Value::Null);
        unstamped(have) == unstamped(want)
    })
}

/// `v` without `lastTransitionTime`, and with `null` and `[]` values of objects left out.
fn unstamped(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| *k != "lastTransitionTime" && !is_nothing(v))
                .map(|(k, v)| (k.clone(), unstamped(v)))
                .collect(),
        ),
        Value::Array(items) if items.is_empty() => Value::Null,
        Value::Array(items) => Value::Array(items.iter().map(unstamped).collect()),
        other => other.clone(),
    }
}

fn is_nothing(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(|a| a.is_empty())
}

/// `desired` with `lastTransitionTime` on every condition: the one the matching condition of `previous` has
/// when its status is unchanged, else `now`.
pub fn stamp(mut desired: Value, previous: Option<&Value>, now: &Value) -> Value {
    stamp_in(&mut desired, previous, now);
    desired
}

fn stamp_in(v: &mut Value, previous: Option<&Value>, now: &Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                let before = previous.and_then(|p| p.get(k));
                if k == "conditions"
                    && let Value::Array(conditions) = child
                {
                    let before: &[Value] = before.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                    conditions.iter_mut().filter_map(Value::as_object_mut).for_each(|c| stamp_one(c, before, now));
                } else {
                    stamp_in(child, before, now);
                }
            }
        }
        Value::Array(items) => {
            let before: &[Value] = previous.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for item in items.iter_mut() {
                let id = identity(item);
                stamp_in(item, before.iter().find(|b| identity(b) == id), now);
            }
        }
        _ => {}
    }
}

fn stamp_one(c: &mut Map<String, Value>, before: &[Value], now: &Value) {
    let kept = before
        .iter()
        .find(|b| b.get("type") == c.get("type") && b.get("status") == c.get("status"))
        .and_then(|b| b.get("lastTransitionTime"))
        .filter(|t| t.is_string());
    c.insert("lastTransitionTime".into(), kept.unwrap_or(now).clone());
}

/// What tells list entries apart: a listener's `name`, a route parent's `parentRef` and `controllerName`.
fn identity(v: &Value) -> [Option<&Value>; 3] {
    [v.get("name"), v.get("parentRef"), v.get("controllerName")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(kind: &str, status: &str) -> Value {
        json!({"type": kind, "status": status, "reason": kind, "message": ""})
    }

    #[test]
    fn every_condition_observes_the_generation() {
        let mut s = json!({"conditions": [condition("Accepted", "True")],
                           "listeners": [{"name": "http", "conditions": [condition("Programmed", "True")]}]});
        observe(&mut s, Some(4));
        assert_eq!(s["conditions"][0]["observedGeneration"], 4);
        assert_eq!(s["listeners"][0]["conditions"][0]["observedGeneration"], 4);
        let mut none = json!({"conditions": [condition("Accepted", "True")]});
        observe(&mut none, None);
        assert!(none["conditions"][0].get("observedGeneration").is_none());
    }

    #[test]
    fn a_condition_keeps_its_time_while_its_status_holds() {
        let old = json!({"listeners": [
            {"name": "https", "conditions": [{"type": "ResolvedRefs", "status": "False", "lastTransitionTime": "t0"},
                                              {"type": "Accepted", "status": "True", "lastTransitionTime": "t0"}]}]});
        let new = json!({"listeners": [
            {"name": "http", "conditions": [condition("Accepted", "True")]},
            {"name": "https", "conditions": [condition("ResolvedRefs", "True"), condition("Accepted", "True")]}]});
        let now = json!("t1");
        let s = stamp(new, Some(&old), &now);
        let time = |l: usize, c: usize| s["listeners"][l]["conditions"][c]["lastTransitionTime"].clone();
        assert_eq!((time(0, 0), time(1, 0), time(1, 1)), (now.clone(), now, json!("t0")));
    }

    #[test]
    fn sameness_ignores_times_and_other_fields() {
        let current = json!({"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "t0"}],
                             "addresses": null, "other": 1});
        assert!(same(Some(&current), &json!({"conditions": [{"type": "Accepted", "status": "True"}]})));
        assert!(same(
            Some(&current),
            &json!({"conditions": [{"type": "Accepted", "status": "True"}], "addresses": []})
        ));
        assert!(!same(Some(&current), &json!({"conditions": [{"type": "Accepted", "status": "False"}]})));
        assert!(!same(None, &json!({"parents": [{"controllerName": "x"}]})));
        assert!(same(None, &json!({"parents": []})), "nothing to say, and nothing said");
    }
}
