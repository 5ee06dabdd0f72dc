//! A release as the API shows it: Kubernetes-shaped (`apiVersion`, `kind`, `metadata`, `spec`, `status`).

use super::analysis::Outcome;
use super::machine::Record;
use super::replicas::Freshness;
use crate::model::{Model, ObjectKey, Phase, ReleasePolicySpec, Step, TOTAL_WEIGHT};
use crate::telemetry::WindowStats;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseView {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ReleasePolicySpec,
    pub status: ReleaseStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    pub phase: Phase,
    /// Share per version in basis points, as routed now (a version without ready endpoints gets none).
    pub weights: BTreeMap<String, u32>,
    /// Index of the current step and how many there are.
    pub step: usize,
    pub steps: usize,
    pub proxies: Proxies,
    pub versions: Vec<VersionStatus>,
    pub conditions: Vec<Condition>,
    /// Where the spec comes from: `file`, `api`, or `local` (set from code).
    pub source: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Proxies {
    /// Connected proxies that hold the current traffic config (ACKed), of `total` connected.
    pub acked: usize,
    pub total: usize,
    /// What proxies refused (NACKed) of this release's Service, one line each (`proxy: part: Envoy's reason`); each
    /// such part stays at the proxy's last good content until the config changes, so those proxies are not ACKed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Proxies that do not hold it yet (`replica/proxy` where several replicas serve), at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// Where several replicas serve (Kubernetes mode): each replica's share, this one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaProxies>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One replica's proxies for a release, as its last report said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaProxies {
    pub name: String,
    pub acked: usize,
    pub total: usize,
    /// `Fresh`; `Stale` (two heartbeats missed: its proxies count as not holding the state); `Expired` (its lease
    /// passed: the replica is gone and its proxies are not counted).
    pub report: Freshness,
    /// Age of that report (ms); in the REST view only (a ReleasePolicy status is written when it changes, and
    /// this changes every second).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub age_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub name: String,
    pub weight: u32,
    pub endpoints: usize,
    pub ready: usize,
    /// Requests per second over the last 10 s, summed over every proxy's stats (absent: no proxy reported it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// Share of those requests not answered 5xx, 0..1 (absent without requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    fn new(kind: &str, ok: bool, reason: &str, message: String) -> Self {
        let status = if ok { "True" } else { "False" };
        Self { kind: kind.into(), status: status.into(), reason: reason.into(), message }
    }
}

/// Builds the view of one release from its record, the model (endpoints), the proxies' ACK counts and the
/// traffic per version (by version name) over the last window.
pub fn view(
    key: &ObjectKey,
    record: &Record,
    model: &Model,
    proxies: Proxies,
    source: &str,
    traffic: &BTreeMap<String, WindowStats>,
) -> ReleaseView {
    let spec = &record.spec;
    let versions = [&spec.stable, &spec.canary].map(|v| version(model, key, spec, v));
    let canary = routed_canary_weight(record, versions[0].ready, versions[1].ready);
    let weights = BTreeMap::from([(spec.stable.clone(), TOTAL_WEIGHT - canary), (spec.canary.clone(), canary)]);
    let versions: Vec<VersionStatus> =
        versions.into_iter().map(|v| with_traffic(VersionStatus { weight: weights[&v.name], ..v }, traffic)).collect();
    let conditions = conditions(record, &versions, &proxies);
    ReleaseView {
        api_version: "sluice.dev/v1alpha1".into(),
        kind: "ReleasePolicy".into(),
        metadata: Metadata { name: key.name.clone(), namespace: key.namespace.clone() },
        spec: spec.clone(),
        status: ReleaseStatus {
            phase: record.state.phase,
            weights,
            step: record.state.step,
            steps: spec.steps.len(),
            proxies,
            versions,
            conditions,
            source: source.into(),
        },
    }
}

fn with_traffic(v: VersionStatus, traffic: &BTreeMap<String, WindowStats>) -> VersionStatus {
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    match traffic.get(&v.name) {
        Some(w) => VersionStatus {
            rps: Some(round(w.rps, 2)),
            success_rate: w.measured.success_rate.map(|r| round(r, 4)),
            latency_p50_ms: w.measured.latency_p50_ms.map(|l| round(l, 2)),
            latency_p99_ms: w.measured.latency_p99_ms.map(|l| round(l, 2)),
            ..v
        },
        None => v,
    }
}

fn version(model: &Model, key: &ObjectKey, spec: &ReleasePolicySpec, name: &str) -> VersionStatus {
    let svc = ObjectKey::new(&key.namespace, &spec.service);
    let eps: Vec<_> = model.endpoints_of(&svc).iter().filter(|e| e.label(spec.version_label()) == Some(name)).collect();
    let ready = eps.iter().filter(|e| e.ready).count();
    VersionStatus {
        name: name.into(),
        weight: 0,
        endpoints: eps.len(),
        ready,
        rps: None,
        success_rate: None,
        latency_p50_ms: None,
        latency_p99_ms: None,
    }
}

/// The canary's share as translate routes it: a side with no ready endpoint gives its share to the other.
fn routed_canary_weight(record: &Record, stable_ready: usize, canary_ready: usize) -> u32 {
    let w = record.canary_weight();
    if !record.state.phase.is_split() {
        return w;
    }
    match (stable_ready > 0, canary_ready > 0) {
        (true, false) => 0,
        (false, true) => TOTAL_WEIGHT,
        _ => w,
    }
}

/// `ReplicasReporting`: whether every replica's report is current, and what a stale or expired one means for the
/// proxy count (and so for the finalize gate).
fn replicas_condition(replicas: &[ReplicaProxies]) -> Condition {
    // No report ages in the messages: the condition goes to the ReleasePolicy status, written only on a change
    // (the ages are in the REST view's `proxies.replicas`).
    let stale: Vec<String> = replicas
        .iter()
        .filter(|r| r.report == Freshness::Stale)
        .map(|r| format!("{} ({} proxies, two heartbeats missed)", r.name, r.total))
        .collect();
    let expired: Vec<String> = replicas
        .iter()
        .filter(|r| r.report == Freshness::Expired)
        .map(|r| format!("{} (no report for longer than its lease; its {} proxies)", r.name, r.total))
        .collect();
    if !stale.is_empty() {
        let msg = format!(
            "replicas not reporting: {}; their proxies count as not holding the current traffic config until they \
             report again or their report expires",
            stale.join(", ")
        );
        return Condition::new("ReplicasReporting", false, "ReplicaStale", msg);
    }
    if !expired.is_empty() {
        let msg = format!(
            "replica reports expired, those replicas are taken as gone and their proxies no longer counted: {}",
            expired.join(", ")
        );
        return Condition::new("ReplicasReporting", false, "ReplicaExpired", msg);
    }
    let msg = format!("{} replicas report their proxies", replicas.len());
    Condition::new("ReplicasReporting", true, "AllReporting", msg)
}

fn conditions(record: &Record, versions: &[VersionStatus], proxies: &Proxies) -> Vec<Condition> {
    let mut out = Vec::new();
    let applied = proxies.acked == proxies.total;
    out.push(Condition::new(
        "TrafficApplied",
        applied,
        if applied { "AllProxiesAcked" } else { "WaitingForProxies" },
        format!("{} of {} connected proxies hold the current traffic config", proxies.acked, proxies.total),
    ));
    if proxies.replicas.len() > 1 {
        out.push(replicas_condition(&proxies.replicas));
    }
    if let Some(first) = proxies.refused.first() {
        let more = proxies.refused.len() - 1;
        let tail = if more > 0 { format!(" (and {more} more)") } else { String::new() };
        let msg = format!(
            "a proxy refused this Service's config, kept at its last good version there until the policy changes: \
             {first}{tail}"
        );
        out.push(Condition::new("Refused", true, "ProxyRejectedConfig", msg));
    }
    for v in versions {
        let ok = v.ready > 0;
        let reason = if ok { "EndpointsReady" } else { "NoReadyEndpoints" };
        let msg = format!("{} of {} endpoints of {} are ready", v.ready, v.endpoints, v.name);
        out.push(Condition::new(&format!("Ready/{}", v.name), ok, reason, msg));
    }
    if let [stable, canary] = versions
        && record.state.phase.is_split()
        && record.canary_weight() > 0
        && canary.ready == 0
    {
        let msg = format!(
            "{} has no ready endpoints: its {} basis points go to {} until it has",
            canary.name,
            record.canary_weight(),
            stable.name
        );
        out.push(Condition::new("CanaryWeightHeld", true, "CanaryNotReady", msg));
    }
    if record.waiting_for_person() {
        let msg = format!("step {} is `pause: {{}}`: resume or promote to go on", record.state.step);
        out.push(Condition::new("Waiting", true, "PausedForPromotion", msg));
    } else if let (Some(due), Some(Step::Pause(_))) = (record.next_due(), record.spec.steps.get(record.state.step)) {
        let gate = if record.spec.analysis.is_some() { " and a passing analysis check" } else { "" };
        out.push(Condition::new("Waiting", true, "PauseDuration", format!("the next step is due at {due} ms{gate}")));
    }
    if record.waiting_for_analysis() {
        let msg = "the plan is done: a passing analysis check promotes the canary".to_string();
        out.push(Condition::new("Waiting", true, "WaitingForAnalysis", msg));
    }
    if let Some(reason) = &record.analysis.aborted {
        out.push(Condition::new("Analysis", false, "FailureLimitReached", reason.clone()));
    } else if let Some(check) = &record.analysis.last {
        let (ok, reason) = match check.outcome {
            Outcome::Pass => (true, "Passed"),
            Outcome::Hold => (false, "NotEnoughData"),
            Outcome::Fail => (false, "Failed"),
        };
        let msg = match check.outcome {
            Outcome::Fail => format!("{} ({} failed in a row)", check.message, record.analysis.failures),
            _ => check.message.clone(),
        };
        out.push(Condition::new("Analysis", ok, reason, msg));
    }
    out
}
