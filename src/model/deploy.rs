//! The Deployment side of a release (Kubernetes mode only): `spec.deploy` (create the canary's Deployment as a
//! copy of the stable one with new images) and `spec.finalize` (what happens to the losing version's Deployment).
//!
//! ```yaml
//! spec:
//!   service: reviews
//!   stable: v1
//!   canary: v3
//!   deploy:                 # the issue's `canary.deploy`: beside `canary`, which is the version name
//!     from: reviews-v1      # optional: the stable Deployment (default: the one behind the Service with version=v1)
//!     images: {reviews: docker.io/istio/examples-bookinfo-reviews-v3:1.20}
//!     replicas: 2           # optional: default the stable's
//!   finalize:
//!     loser: ScaleToZero    # ScaleToZero | Delete | Keep (default Keep)
//!     # scaleDownLoser: true  is the shorthand for `loser: ScaleToZero`
//! ```
//! `deploy` sits beside `canary` rather than under it: `canary` is the version's name (a string), and a CRD's
//! structural schema cannot hold a field that is a string or an object. The checks here are pure; the cluster
//! side is `source::kube::deploy`.

use super::{FieldError, ReleasePolicySpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most replicas a policy may ask for: a typo (`replicas: 300`) should be refused, not scheduled.
pub const MAX_REPLICAS: i32 = 100;

/// The canary's Deployment, made by Sluice as a copy of the stable one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deploy {
    /// The stable Deployment's name. Default: the one Deployment in the policy's namespace whose pod template
    /// carries `versionLabel: <stable>` and whose selector matches the stable pods behind the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// New image per container name; every other container keeps the stable's image. At least one.
    pub images: BTreeMap<String, String>,
    /// The canary's replica count. Default: the stable Deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// What happens to the version that lost, once no proxy routes to it any more.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Finalize {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loser: Option<Loser>,
    /// Shorthand for `loser: ScaleToZero`; with `loser` set, it must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_loser: Option<bool>,
}

/// The losing version's Deployment after the release: after promote + finalize the stable one, after abort the
/// canary's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Loser {
    /// Left as it is (Sluice touches nothing the policy does not name).
    #[default]
    Keep,
    /// `spec.replicas: 0` (merge patch); the Deployment stays for a quick way back.
    ScaleToZero,
    Delete,
}

impl Finalize {
    /// The action asked for, with `scaleDownLoser` read as `loser: ScaleToZero` (validation refuses a mismatch).
    pub fn loser(&self) -> Loser {
        match (self.loser, self.scale_down_loser) {
            (Some(l), _) => l,
            (None, Some(true)) => Loser::ScaleToZero,
            (None, _) => Loser::Keep,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        match (self.loser, self.scale_down_loser) {
            (Some(Loser::ScaleToZero), Some(false)) | (Some(Loser::Keep | Loser::Delete), Some(true)) => {
                Err(FieldError::new(
                    "spec.finalize.scaleDownLoser",
                    format!(
                        "disagrees with `loser: {:?}`; `scaleDownLoser: true` is the shorthand for `loser: \
                         ScaleToZero`: set one of them",
                        self.loser.unwrap_or_default()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Deploy {
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(from) = &self.from
            && !super::is_dns_subdomain(from)
        {
            return Err(FieldError::new("spec.deploy.from", format!("`{from}` is not a Deployment name")));
        }
        if self.images.is_empty() {
            return Err(FieldError::new("spec.deploy.images", "needs at least one `container: image`"));
        }
        for (container, image) in &self.images {
            let path = format!("spec.deploy.images.{container}");
            if !super::is_dns_label(container) {
                return Err(FieldError::new(path, format!("`{container}` is not a container name (a DNS label)")));
            }
            if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(FieldError::new(path, "must be an image reference without spaces"));
            }
        }
        if let Some(r) = self.replicas
            && !(0..=MAX_REPLICAS).contains(&r)
        {
            return Err(FieldError::new("spec.deploy.replicas", format!("must be between 0 and {MAX_REPLICAS}")));
        }
        Ok(())
    }
}

impl ReleasePolicySpec {
    /// What happens to the losing version's Deployment.
    pub fn loser(&self) -> Loser {
        self.finalize.as_ref().map(Finalize::loser).unwrap_or_default()
    }

    /// Refuses what needs Deployments, for a policy outside a cluster (a config file or the API): `spec.deploy`
    /// and a `spec.finalize` loser action other than Keep.
    pub fn check_without_deployments(&self, mode: &str) -> Result<(), FieldError> {
        let why = format!("{mode} has no Deployments; only a ReleasePolicy in the cluster (sluice serve --kube) can");
        if self.deploy.is_some() {
            return Err(FieldError::new("spec.deploy", format!("{why} deploy the canary")));
        }
        match self.finalize.as_ref().map(|f| (f.loser.is_some(), f.loser())) {
            Some((explicit, l)) if l != Loser::Keep => {
                let path = if explicit { "spec.finalize.loser" } else { "spec.finalize.scaleDownLoser" };
                Err(FieldError::new(path, format!("{why} scale or delete the loser")))
            }
            _ => Ok(()),
        }
    }
}

/// The canary Deployment's name: the stable's with its `-<stable>` suffix replaced, else `<stable name>-<canary>`
/// (`reviews-v1` → `reviews-v3`). Kubernetes names are at most 253 characters; validation keeps versions short.
pub fn canary_name(stable_deployment: &str, stable: &str, canary: &str) -> String {
    match stable_deployment.strip_suffix(stable).and_then(|base| base.strip_suffix('-')) {
        Some(base) => format!("{base}-{canary}"),
        None => format!("{stable_deployment}-{canary}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finalize(yaml: &str) -> Finalize {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn scale_down_loser_is_the_shorthand_for_scale_to_zero() {
        assert_eq!(finalize("scaleDownLoser: true").loser(), Loser::ScaleToZero);
        assert_eq!(finalize("scaleDownLoser: false").loser(), Loser::Keep);
        assert_eq!(finalize("loser: Delete").loser(), Loser::Delete);
        assert_eq!(finalize("{}").loser(), Loser::Keep);
        assert_eq!(finalize("{loser: ScaleToZero, scaleDownLoser: true}").validate(), Ok(()));
        assert_eq!(finalize("{loser: Keep, scaleDownLoser: false}").validate(), Ok(()));
        for bad in ["{loser: Delete, scaleDownLoser: true}", "{loser: ScaleToZero, scaleDownLoser: false}"] {
            let err = finalize(bad).validate().unwrap_err();
            assert_eq!(err.path, "spec.finalize.scaleDownLoser", "{bad}");
            assert!(err.message.contains("shorthand"), "{err}");
        }
        assert!(serde_yaml::from_str::<Finalize>("loser: Scale").is_err(), "an unknown action is refused");
    }

    #[test]
    fn deploy_checks_name_the_field() {
        let deploy = |yaml: &str| serde_yaml::from_str::<Deploy>(yaml).unwrap().validate().map_err(|e| e.path);
        assert_eq!(deploy("images: {reviews: 'reviews:v3'}"), Ok(()));
        assert_eq!(deploy("images: {}"), Err("spec.deploy.images".into()));
        assert_eq!(deploy("images: {reviews: 'a b'}"), Err("spec.deploy.images.reviews".into()));
        assert_eq!(deploy("images: {Reviews_: x}"), Err("spec.deploy.images.Reviews_".into()));
        assert_eq!(deploy("{images: {r: x}, replicas: -1}"), Err("spec.deploy.replicas".into()));
        assert_eq!(deploy("{images: {r: x}, from: 'Not/A/Name'}"), Err("spec.deploy.from".into()));
    }

    #[test]
    fn outside_a_cluster_deploy_and_loser_actions_are_refused() {
        let mut s = ReleasePolicySpec {
            service: "reviews".into(),
            stable: "v1".into(),
            canary: "v3".into(),
            ..Default::default()
        };
        assert_eq!(s.check_without_deployments("the release API"), Ok(()));
        s.finalize = Some(Finalize { loser: Some(Loser::Keep), scale_down_loser: None });
        assert_eq!(s.check_without_deployments("the release API"), Ok(()), "Keep is what happens anyway");
        s.finalize = Some(Finalize { loser: None, scale_down_loser: Some(true) });
        let err = s.check_without_deployments("the release API").unwrap_err();
        assert_eq!(err.path, "spec.finalize.scaleDownLoser");
        assert!(err.message.starts_with("the release API has no Deployments"), "{err}");
        s.deploy = Some(Deploy { images: [("r".into(), "r:v3".into())].into(), ..Default::default() });
        assert_eq!(s.check_without_deployments("a config file").unwrap_err().path, "spec.deploy");
    }

    #[test]
    fn the_canary_name_replaces_the_version_suffix() {
        assert_eq!(canary_name("reviews-v1", "v1", "v3"), "reviews-v3");
        assert_eq!(canary_name("reviews", "v1", "v3"), "reviews-v3");
        assert_eq!(canary_name("reviewsv1", "v1", "v3"), "reviewsv1-v3");
    }
}
