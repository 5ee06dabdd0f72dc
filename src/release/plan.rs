//! What a change would do, before it is done: the console's confirm steps and `?dryRun=All` on the REST API.
//! A child module of the controller, so it reads the controller's records without taking them out.
//!
//! ```text
//!  verb ──▶ clone of the record ──act()──▶ state after ──▶ model with that state ──translate──▶ clusters after
//!                                                        model as served ───────translate──▶ clusters now
//!  Plan { phase, weights, versions that keep traffic, clusters that leave / arrive, the loser's Deployment }
//!  spec ──▶ the same checks as apply ──▶ the view the release would have (nothing stored)
//! ```
//! Both run the code the real change runs (`Record::act`, `translate::service_clusters`, the apply checks), so a
//! plan cannot promise what the change would not do.

use super::*;
use crate::model::{Loser, Phase, TOTAL_WEIGHT};
use serde::Serialize;

/// What a verb would do to one release.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub verb: &'static str,
    /// The phase before and after.
    pub phase: Phase,
    pub next_phase: Phase,
    /// Share per version after the change, in basis points.
    pub weights: BTreeMap<String, u32>,
    /// The versions that still get traffic after the change.
    pub keeps: Vec<String>,
    /// Envoy clusters of the release's Service that proxies drop, and that they gain.
    pub clusters_removed: Vec<String>,
    pub clusters_added: Vec<String>,
    /// Finalize only: what happens to the losing version's workloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loser: Option<LoserPlan>,
}

/// The losing version of a finalized release and what becomes of its Deployment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoserPlan {
    pub version: String,
    /// `Keep`, `ScaleToZero` or `Delete` (`spec.finalize.loser`; only cluster-owned policies can ask for more
    /// than `Keep`).
    pub deployment: Loser,
    /// The same in words, for the confirm step.
    pub message: String,
}

impl ReleaseController {
    /// What `verb` would do to the release at `key`, or why its phase refuses it (the error the verb would give).
    pub fn plan(&self, key: &ObjectKey, verb: Verb) -> Result<Plan, ReleaseError> {
        let before = self.record(key).ok_or_else(|| ReleaseError::NotFound(key.clone()))?;
        let mut after = before.clone();
        after.act(verb, now_ms())?;
        let model = self.store.model();
        let service = ObjectKey::new(&key.namespace, &before.spec.service);
        let clusters = |m: &Model| -> BTreeSet<String> {
            crate::translate::service_clusters(m, &service, false).into_iter().map(|c| c.name).collect()
        };
        let now = clusters(&model);
        let mut changed = (*model).clone();
        if let Some(p) = changed.policies.get_mut(key) {
            p.state = after.state.clone();
        }
        let then = clusters(&changed);
        let spec = &after.spec;
        let canary = after.canary_weight();
        let weights: BTreeMap<String, u32> =
            [(spec.stable.clone(), TOTAL_WEIGHT - canary), (spec.canary.clone(), canary)].into();
        let keeps = weights.iter().filter(|(_, w)| **w > 0).map(|(v, _)| v.clone()).collect();
        let loser = (verb == Verb::Finalize).then(|| {
            let version = if canary == TOTAL_WEIGHT { &spec.stable } else { &spec.canary };
            let deployment = spec.finalize.as_ref().map(|f| f.loser()).unwrap_or_default();
            let message = match deployment {
                Loser::Keep => format!("the workloads of {version} are left as they are"),
                Loser::ScaleToZero => format!("the Deployment of {version} is scaled to 0 replicas (it stays)"),
                Loser::Delete => format!("the Deployment of {version} is deleted"),
            };
            LoserPlan { version: version.clone(), deployment, message }
        });
        Ok(Plan {
            verb: verb.name(),
            phase: before.state.phase,
            next_phase: after.state.phase,
            weights,
            keeps,
            clusters_removed: now.difference(&then).cloned().collect(),
            clusters_added: then.difference(&now).cloned().collect(),
            loser,
        })
    }

    /// The view the release at `key` would have with `spec`, after every check [`Self::apply`] makes; nothing is
    /// stored or served.
    pub fn apply_dry_run(&self, key: &ObjectKey, spec: ReleasePolicySpec) -> Result<ReleaseView, ReleaseError> {
        let writes = self.check_spec(key, &spec)?;
        let model = self.store.model();
        self.check_apply(key, &spec, &model, writes)?;
        let record = match self.record(key) {
            Some(mut r) => {
                r.respec(spec, now_ms());
                r
            }
            None => Record::new(spec, now_ms()),
        };
        Ok(status::view(key, &record, &model, Proxies::default(), writes, &BTreeMap::new()))
    }
}
