//! From one file's text to typed objects: split into documents, recognise each by `apiVersion`/`kind`, then
//! deserialize it into its wire type. Every failure becomes a [`LoadError`] with a file line.
//!
//! ```text
//!  text ─split_documents─▶ chunks ─serde_yaml::Value─▶ kind, name ─typed serde─▶ Located<Object> + LoadErrors
//! ```
//! Each document is parsed on its own, so serde_yaml's positions count from the document; adding the document's
//! first line makes them file lines.

use super::error::{LoadError, split_yaml_error};
use super::lines::{Chunk, key_line, split_documents};
use super::objects::{
    ApiGatewayObject, DEFAULT_NAMESPACE, DestinationRuleObject, GatewayClassObject, GatewayObject, HttpRouteObject,
    Kind, PeerAuthenticationObject, PolicyObject, ReferenceGrantObject, SecretObject, ServiceObject, SidecarObject,
    VirtualServiceObject, WorkloadObject,
};
use crate::model::ObjectKey;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Where an object was written: enough to point an error found later at a line.
#[derive(Debug)]
pub(crate) struct Doc {
    pub file: Arc<str>,
    pub start_line: usize,
    pub text: String,
    /// Position among every document of one load (files in load order, documents top to bottom): "the first
    /// loaded" wins a conflict between routing objects.
    pub seq: u64,
}

impl Doc {
    /// An error about `field` of `object` in this document, at the field's line.
    pub fn error(&self, object: &str, field: &str, message: impl Into<String>) -> LoadError {
        let chunk = Chunk { start_line: self.start_line, text: &self.text };
        LoadError {
            file: self.file.to_string(),
            line: key_line(&chunk, field),
            object: object.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Where and when (in load order) the object was written, for choosing between conflicting objects.
    pub fn provenance(&self) -> crate::model::mesh::Provenance {
        crate::model::mesh::Provenance { created: None, seq: self.seq, at: self.name_at() }
    }

    /// `file:line` of the object's name, for "first defined at" messages.
    pub fn name_at(&self) -> String {
        let chunk = Chunk { start_line: self.start_line, text: &self.text };
        format!("{}:{}", self.file, key_line(&chunk, "metadata.name"))
    }
}

#[derive(Debug)]
pub(crate) enum Object {
    Service(ServiceObject),
    Workload(WorkloadObject),
    Policy(Box<PolicyObject>),
    VirtualService(VirtualServiceObject),
    DestinationRule(Box<DestinationRuleObject>),
    HttpRoute(HttpRouteObject),
    PeerAuthentication(PeerAuthenticationObject),
    Gateway(Box<GatewayObject>),
    GatewayClass(GatewayClassObject),
    ApiGateway(ApiGatewayObject),
    ReferenceGrant(ReferenceGrantObject),
    Secret(SecretObject),
    Sidecar(SidecarObject),
}

#[derive(Debug)]
pub(crate) struct Located {
    pub doc: Arc<Doc>,
    pub object: Object,
}

/// Everything read from a set of files, before cross-object checks.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub objects: Vec<Located>,
    pub errors: Vec<LoadError>,
    /// Fields written but not translated (mesh routing objects): reported, never silently ignored.
    pub warnings: Vec<LoadError>,
    /// Services that exist but failed to parse: a policy naming one is not told "no such Service" as well.
    pub broken_services: BTreeSet<ObjectKey>,
    /// Documents read so far (the next document's `seq`).
    pub documents: u64,
}

/// Parses one file's text into `out`, collecting every error.
pub(crate) fn parse_file(text: &str, origin: &str, out: &mut Parsed) {
    if let Err((line, message)) = super::shape::check(text) {
        let e = LoadError { file: origin.to_string(), line, object: String::new(), field: String::new(), message };
        out.errors.push(e);
        return;
    }
    let file: Arc<str> = Arc::from(origin);
    let docs: Vec<Arc<Doc>> = split_documents(text)
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let seq = out.documents + i as u64;
            Arc::new(Doc { file: file.clone(), start_line: chunk.start_line, text: chunk.text.to_string(), seq })
        })
        .collect();
    out.documents += docs.len() as u64;
    // Documents parse independently: contiguous runs on threads of their own, joined in order, so objects,
    // errors and warnings come out exactly as a single pass gives them.
    let parts = crate::parallel::runs(&docs, PARALLEL_FROM, |run| {
        let mut part = Parsed::default();
        run.iter().for_each(|doc| parse_document(doc.clone(), &mut part));
        part
    });
    for part in parts {
        out.objects.extend(part.objects);
        out.errors.extend(part.errors);
        out.warnings.extend(part.warnings);
        out.broken_services.extend(part.broken_services);
    }
}

/// Files of fewer documents parse on the calling thread (a thread costs more than they do).
const PARALLEL_FROM: usize = 256;

fn parse_document(doc: Arc<Doc>, out: &mut Parsed) {
    let value: Value = match serde_yaml::from_str(&doc.text) {
        Ok(v) => v,
        Err(e) => return out.errors.push(yaml_error(&doc, "", &e)),
    };
    if value.is_null() {
        return; // an empty document, or only comments
    }
    let head = Head::of(&value);
    let (Some(api_version), Some(kind)) = (head.api_version, head.kind) else {
        let msg = "expected an object with string fields apiVersion and kind";
        return out.errors.push(doc.error("", "", msg));
    };
    let Some(known) = Kind::of(api_version, kind) else {
        let msg = format!("unknown kind `{kind}` of apiVersion `{api_version}`; {}", Kind::EXPECTED);
        return out.errors.push(doc.error("", "kind", msg));
    };
    let label = head.label(kind);
    let object = match known {
        Kind::Service => typed(&doc, &value, &label, out).map(Object::Service),
        Kind::Workload => typed(&doc, &value, &label, out).map(Object::Workload),
        Kind::ReleasePolicy => typed(&doc, &value, &label, out).map(|p| Object::Policy(Box::new(p))),
        Kind::VirtualService => mesh_typed(&doc, &label, known, &value, out).map(Object::VirtualService),
        Kind::DestinationRule => {
            mesh_typed(&doc, &label, known, &value, out).map(|d| Object::DestinationRule(Box::new(d)))
        }
        Kind::HttpRoute => mesh_typed(&doc, &label, known, &value, out).map(Object::HttpRoute),
        Kind::PeerAuthentication => mesh_typed(&doc, &label, known, &value, out).map(Object::PeerAuthentication),
        Kind::Gateway => mesh_typed(&doc, &label, known, &value, out).map(|g| Object::Gateway(Box::new(g))),
        Kind::GatewayClass => mesh_typed(&doc, &label, known, &value, out).map(Object::GatewayClass),
        Kind::ApiGateway => mesh_typed(&doc, &label, known, &value, out).map(Object::ApiGateway),
        Kind::ReferenceGrant => mesh_typed(&doc, &label, known, &value, out).map(Object::ReferenceGrant),
        Kind::Secret => typed(&doc, &value, &label, out).map(Object::Secret),
        Kind::Sidecar => mesh_typed(&doc, &label, known, &value, out).map(Object::Sidecar),
    };
    match object {
        Some(object) => out.objects.push(Located { doc, object }),
        None if known == Kind::Service => {
            if let Some(name) = head.name {
                out.broken_services.insert(ObjectKey::new(head.namespace, name));
            }
        }
        None => {}
    }
}

/// Deserializes the document into its wire type, recording the error (with its line) on failure.
/// The document as `T`, from the value already parsed; only when that fails is the text parsed again, for the
/// error's line (a value has no positions). Parsing each document once halves loading a large file.
fn typed<T: DeserializeOwned>(doc: &Doc, value: &Value, label: &str, out: &mut Parsed) -> Option<T> {
    if let Ok(t) = T::deserialize(value) {
        return Some(t);
    }
    match serde_yaml::from_str(&doc.text) {
        Ok(t) => Some(t),
        Err(e) => {
            out.errors.push(yaml_error(doc, label, &e));
            None
        }
    }
}

/// [`typed`] for a mesh routing object, recording the fields of its `spec` that Sluice does not translate as
/// warnings at their lines, or as errors for the security fields that fail closed (the object is then refused).
fn mesh_typed<S>(
    doc: &Doc,
    label: &str,
    kind: Kind,
    value: &Value,
    out: &mut Parsed,
) -> Option<super::objects::Envelope<S>>
where
    S: DeserializeOwned + serde::Serialize,
{
    let object: super::objects::Envelope<S> = typed(doc, value, label, out)?;
    let raw = value.get("spec").map(serde_json::to_value).and_then(Result::ok).unwrap_or_default();
    let mut refused = false;
    for u in crate::model::mesh::untranslated(kind.name(), "spec", &raw, &object.spec) {
        refused |= u.refused;
        let problem = doc.error(label, &u.path, u.message);
        if u.refused { out.errors.push(problem) } else { out.warnings.push(problem) }
    }
    (!refused).then_some(object)
}

/// A serde_yaml error, its document-relative line turned into a file line.
fn yaml_error(doc: &Doc, object: &str, err: &serde_yaml::Error) -> LoadError {
    let (line, field, message) = split_yaml_error(err);
    // libyaml may place an error at the end of input, one line past the last; keep it on the document's lines.
    let last_line = doc.start_line + doc.text.lines().count().max(1) - 1;
    let line = match line {
        Some(l) => (doc.start_line + l.max(1) - 1).min(last_line),
        None => doc.error("", &field, "").line,
    };
    LoadError { file: doc.file.to_string(), line, object: object.to_string(), field, message }
}

/// What is readable of an object before its kind's type is known: enough to name it in errors.
struct Head<'a> {
    api_version: Option<&'a str>,
    kind: Option<&'a str>,
    name: Option<&'a str>,
    namespace: &'a str,
}

impl<'a> Head<'a> {
    fn of(value: &'a Value) -> Self {
        let meta = value.get("metadata");
        let meta_str = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        Head {
            api_version: value.get("apiVersion").and_then(Value::as_str),
            kind: value.get("kind").and_then(Value::as_str),
            name: meta_str("name").filter(|n| !n.is_empty()),
            namespace: meta_str("namespace").unwrap_or(DEFAULT_NAMESPACE),
        }
    }

    /// `Kind namespace/name`, or just `Kind` while the name is missing.
    fn label(&self, kind: &str) -> String {
        match self.name {
            Some(name) => format!("{kind} {}/{name}", self.namespace),
            None => kind.to_string(),
        }
    }
}
