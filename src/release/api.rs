//! What the REST and gRPC front ends share: checking the names in a request and reading a policy document, so
//! both refuse the same things with the same field paths.

use super::ReleaseError;
use crate::model::is_dns_label;
use crate::model::{FieldError, ObjectKey, ReleasePolicySpec};
use serde::Deserialize;
use serde::de::IgnoredAny;

pub const API_VERSION: &str = "sluice.dev/v1alpha1";
pub const KIND: &str = "ReleasePolicy";

/// The key of the release a request names; `namespace` and `name` must be DNS labels, as in Kubernetes.
pub fn key(namespace: &str, name: &str) -> Result<ObjectKey, ReleaseError> {
    for (path, value) in [("metadata.namespace", namespace), ("metadata.name", name)] {
        if !is_dns_label(value) {
            let msg = format!("`{value}` is not a DNS label (1-63 of a-z, 0-9 and '-', alphanumeric at both ends)");
            return Err(FieldError::new(path, msg).into());
        }
    }
    Ok(ObjectKey::new(namespace, name))
}

/// A policy as a client sends it: the config file's shape. Only `spec` is required; `status` is accepted and
/// ignored, so the output of a GET can be sent back.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Option<DocumentMetadata>,
    pub spec: ReleasePolicySpec,
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentMetadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, rename = "labels")]
    _labels: Option<IgnoredAny>,
    #[serde(default, rename = "annotations")]
    _annotations: Option<IgnoredAny>,
}

impl PolicyDocument {
    /// Parses a JSON document; a malformed body or a field of the wrong type is refused with its JSON path.
    pub fn from_json(body: &[u8]) -> Result<Self, FieldError> {
        from_json(body)
    }

    /// The spec for the release at `key`: metadata, when given, must name the same release.
    pub fn into_spec(self, key: &ObjectKey) -> Result<ReleasePolicySpec, FieldError> {
        if let Some(v) = self.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(FieldError::new("apiVersion", format!("must be {API_VERSION}, not `{v}`")));
        }
        if let Some(k) = self.kind.as_deref().filter(|k| *k != KIND) {
            return Err(FieldError::new("kind", format!("must be {KIND}, not `{k}`")));
        }
        let meta = self.metadata.unwrap_or_default();
        for (path, given, want) in
            [("metadata.name", &meta.name, &key.name), ("metadata.namespace", &meta.namespace, &key.namespace)]
        {
            if let Some(given) = given.as_deref().filter(|g| *g != want.as_str()) {
                return Err(FieldError::new(path, format!("`{given}` does not match `{want}` in the request path")));
            }
        }
        Ok(self.spec)
    }
}

/// A spec alone, as gRPC's `spec_json` carries it; paths are reported under `spec.`.
pub fn spec_from_json(body: &[u8]) -> Result<ReleasePolicySpec, FieldError> {
    from_json_under(body, "spec")
}

/// Parses a JSON body; a malformed body or a field of the wrong type is refused with its JSON path.
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    from_json_under(body, "")
}

fn from_json_under<T: serde::de::DeserializeOwned>(body: &[u8], prefix: &str) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = match (prefix, e.path().to_string()) {
            (pre, p) if p == "." || p.is_empty() => pre.to_string(),
            ("", p) => p,
            (pre, p) => format!("{pre}.{p}"),
        };
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if !path.is_empty() => FieldError::new(path, inner.to_string()),
            _ if path.is_empty() || path.contains('?') => FieldError::new("body", format!("not valid JSON: {inner}")),
            _ => FieldError::new("body", format!("not valid JSON (in {path}): {inner}")),
        }
    })?;
    de.end().map_err(|e| FieldError::new("body", format!("not valid JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_names_the_path() {
        let body = br#"{"spec":{"service":"reviews","stable":"v1","canary":"v3","traffic":{"canaryWeight":"x"}}}"#;
        let err = PolicyDocument::from_json(body).unwrap_err();
        assert_eq!(err.path, "spec.traffic.canaryWeight");
    }

    #[test]
    fn spec_json_paths_start_with_spec() {
        let err = spec_from_json(br#"{"service":"reviews","stable":"v1","canary":"v3","bogus":1}"#).unwrap_err();
        assert!(err.to_string().starts_with("spec"), "{err}");
        assert!(err.message.contains("bogus"), "{err}");
    }

    #[test]
    fn metadata_must_match_the_path() {
        let body = br#"{"metadata":{"name":"other"},"spec":{"service":"reviews","stable":"v1","canary":"v3"}}"#;
        let doc = PolicyDocument::from_json(body).unwrap();
        let err = doc.into_spec(&ObjectKey::new("default", "reviews-v3")).unwrap_err();
        assert_eq!(err.path, "metadata.name");
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(key("default", "Bad_Name").is_err());
        assert!(key("default", "reviews-v3").is_ok());
    }
}
