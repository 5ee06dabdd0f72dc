//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`): what each connected proxy holds, per resource,
//! from the server's side. Read from the registry (what the streams report) and the newest snapshot; nothing here
//! touches a stream.
//!
//! Per resource (`GenericXdsConfig`), from what the stream was sent, what it ACKed, its last NACK, and what the
//! newest snapshot offers it:
//!
//! | the proxy...                                   | config_status | client_status  | xds_config        |
//! |------------------------------------------------|---------------|----------------|-------------------|
//! | ACKed it, nothing newer sent                   | SYNCED        | ACKED          | as held           |
//! | was sent a newer one, no answer yet            | STALE         | REQUESTED      | as sent           |
//! | NACKed the newer one (keeps its last good one) | ERROR         | NACKED         | the rejected one  |
//! | should get it, not sent yet (make-before-break)| NOT_SENT      | REQUESTED      | none              |
//! | named it, it does not exist                    | NOT_SENT      | DOES_NOT_EXIST | none              |
//!
//! `version_info`: Delta, the resource's content version (what Envoy's config_dump shows); SotW, the `version_info`
//! of the last response of its type, as the CSDS proto defines it (ACKed, or the one sent for STALE/ERROR). `error_state.details` holds the NACK's reason.
//! `node_matchers` select proxies by node id (`exact`, `prefix`, `suffix`, `contains`, with `ignore_case`); several
//! matchers are OR-ed, as the protocol says. Metadata matchers and regexes are refused with the field named.

use super::contain::Refused;
use super::registry::{ProxyStatus, Registry, TypeStatus};
use super::resource::Resource;
use super::snapshot::Snapshot;
use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Timestamp;
use futures::StreamExt;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// The CSDS service; cheap to clone.
#[derive(Clone)]
pub struct Csds {
    registry: Registry,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
}

impl Csds {
    pub fn new(registry: Registry, snapshots: watch::Receiver<Option<Arc<Snapshot>>>) -> Self {
        Self { registry, snapshots }
    }

    pub fn server(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// The answer to one request: one `ClientConfig` per matching node (its streams merged), by node id.
    pub fn answer(&self, req: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        check_matchers(&req.node_matchers)?;
        let snapshot = self.snapshots.borrow().clone();
        let mut configs: Vec<ClientConfig> = Vec::new();
        for stream in self.registry.list() {
            if !req.node_matchers.is_empty() && !req.node_matchers.iter().any(|m| node_matches(m, &stream.node_id)) {
                continue;
            }
            let resources = stream_configs(&stream, snapshot.as_deref(), req.exclude_resource_contents);
            match configs.last_mut() {
                Some(last) if last.node.as_ref().is_some_and(|n| n.id == stream.node_id) => {
                    last.generic_xds_configs.extend(resources)
                }
                _ => configs.push(ClientConfig {
                    node: Some(with_certificate((*stream.node).clone(), &self.registry)),
                    generic_xds_configs: resources,
                    ..Default::default()
                }),
            }
        }
        Ok(ClientStatusResponse { config: configs })
    }
}

/// The node's metadata gains `CERT_NOT_AFTER`, `CERT_SERIAL` and `CERT_IDENTITY` when Sluice's CA issued its
/// workload certificate (what `sluice proxy-status` shows; Envoy's own node metadata never has these keys).
fn with_certificate(
    mut node: envoy_types::pb::envoy::config::core::v3::Node,
    registry: &Registry,
) -> envoy_types::pb::envoy::config::core::v3::Node {
    use envoy_types::pb::google::protobuf::{Value, value::Kind};
    let Some(cert) = registry.certificate(&node.id) else { return node };
    let meta = node.metadata.get_or_insert_with(Default::default);
    for (k, v) in [(CERT_NOT_AFTER, cert.not_after), ("CERT_SERIAL", cert.serial), ("CERT_IDENTITY", cert.identity)] {
        meta.fields.insert(k.into(), Value { kind: Some(Kind::StringValue(v)) });
    }
    node
}

/// The node metadata key carrying the workload certificate's end (RFC 3339) in CSDS answers.
pub const CERT_NOT_AFTER: &str = "CERT_NOT_AFTER";

type Out = Pin<Box<dyn futures::Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream = Out;

    async fn stream_client_status(
        &self,
        req: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Out>, Status> {
        let this = self.clone();
        let answers = req.into_inner().map(move |r| r.and_then(|r| this.answer(&r)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        req: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.answer(req.get_ref()).map(Response::new)
    }
}

fn check_matchers(matchers: &[NodeMatcher]) -> Result<(), Status> {
    for (i, m) in matchers.iter().enumerate() {
        if !m.node_metadatas.is_empty() {
            return Err(Status::invalid_argument(format!(
                "node_matchers[{i}].node_metadatas: not supported; match on node_id"
            )));
        }
        if let Some(StringMatcher { match_pattern: Some(p), .. }) = &m.node_id
            && matches!(p, MatchPattern::SafeRegex(_) | MatchPattern::Custom(_))
        {
            return Err(Status::invalid_argument(format!(
                "node_matchers[{i}].node_id: only exact, prefix, suffix and contains are supported"
            )));
        }
    }
    Ok(())
}

fn node_matches(m: &NodeMatcher, id: &str) -> bool {
    let Some(StringMatcher { match_pattern: Some(pattern), ignore_case }) = &m.node_id else { return true };
    let fold = |s: &str| if *ignore_case { s.to_lowercase() } else { s.to_string() };
    let id = fold(id);
    match pattern {
        MatchPattern::Exact(p) => id == fold(p),
        MatchPattern::Prefix(p) => id.starts_with(&fold(p)),
        MatchPattern::Suffix(p) => id.ends_with(&fold(p)),
        MatchPattern::Contains(p) => id.contains(&fold(p)),
        MatchPattern::SafeRegex(_) | MatchPattern::Custom(_) => false,
    }
}

/// Every resource one stream holds, was sent, or should get, with its status.
fn stream_configs(stream: &ProxyStatus, snapshot: Option<&Snapshot>, exclude: bool) -> Vec<GenericXdsConfig> {
    let view = snapshot.map(|s| s.view(&stream.proxy));
    let mut out = Vec::new();
    for (kind, status) in &stream.types {
        let offered = view.as_ref().map(|v| v.get(*kind));
        let offers = |name: &str| wants(status, name) && offered.is_some_and(|o| o.contains_key(name));
        let held = status.held.upgrade().unwrap_or_default();
        let mut names: BTreeSet<&String> = held.keys().chain(status.sent_set.keys()).collect();
        names.extend(offered.into_iter().flat_map(|o| o.keys()).filter(|n| wants(status, n)));
        if !status.wildcard {
            names.extend(status.names.iter());
        }
        let delta = stream.protocol == "delta";
        names.extend(status.refused.iter().map(|r| &r.unit.resource));
        for name in names {
            let entry = Entry { held: held.get(name), sent: status.sent_set.get(name), exists: offers(name) };
            let refused = status.refused.iter().find(|r| r.unit.resource == *name);
            out.push(match refused {
                Some(r) => entry.refused(kind.type_url(), name, r, delta, exclude),
                None => entry.config(kind.type_url(), name, status, delta, exclude),
            });
        }
    }
    out
}

fn wants(status: &TypeStatus, name: &str) -> bool {
    status.wildcard || status.names.contains(name)
}

/// One resource name on one stream.
struct Entry<'a> {
    held: Option<&'a Arc<Resource>>,
    sent: Option<&'a Arc<Resource>>,
    /// The newest snapshot offers it to this proxy.
    exists: bool,
}

impl Entry<'_> {
    fn config(&self, type_url: &str, name: &str, st: &TypeStatus, delta: bool, exclude: bool) -> GenericXdsConfig {
        let newer = self.sent.filter(|s| self.held.is_none_or(|h| h.version != s.version));
        let (config, client, shown, at, version) = match (newer, self.held) {
            (Some(sent), _) if st.pending => {
                (ConfigStatus::Stale, ClientResourceStatus::Requested, Some(sent), st.sent_at, st.sent.as_deref())
            }
            (Some(sent), _) if st.last_nack.is_some() => {
                (ConfigStatus::Error, ClientResourceStatus::Nacked, Some(sent), st.sent_at, st.sent.as_deref())
            }
            (Some(sent), _) => {
                (ConfigStatus::Stale, ClientResourceStatus::Unknown, Some(sent), st.sent_at, st.sent.as_deref())
            }
            (None, Some(held)) => {
                (ConfigStatus::Synced, ClientResourceStatus::Acked, Some(held), st.acked_at, st.acked.as_deref())
            }
            (None, None) if self.exists => (ConfigStatus::NotSent, ClientResourceStatus::Requested, None, None, None),
            (None, None) => (ConfigStatus::NotSent, ClientResourceStatus::DoesNotExist, None, None, None),
        };
        let version_info = match (shown, delta) {
            (Some(r), true) => r.version.clone(),
            (_, _) => version.unwrap_or_default().to_string(),
        };
        let error_state =
            (client == ClientResourceStatus::Nacked).then_some(st.last_nack.as_ref()).flatten().map(|nack| {
                UpdateFailureState {
                    failed_configuration: shown.filter(|_| !exclude).map(|r| r.to_any()),
                    last_update_attempt: Some(timestamp(nack.at)),
                    details: nack.reason.clone(),
                    version_info: nack.version.clone(),
                }
            });
        GenericXdsConfig {
            type_url: type_url.to_string(),
            name: name.to_string(),
            version_info,
            xds_config: shown.filter(|_| !exclude).map(|r| r.to_any()),
            last_updated: at.map(timestamp),
            config_status: config as i32,
            client_status: client as i32,
            error_state,
            is_static_resource: false,
        }
    }
}

impl Entry<'_> {
    /// A resource with a part the proxy refused (see `xds::contain`): ERROR and NACKED, with the refused content
    /// and the proxy's reason; what the proxy keeps meanwhile is its last good content of that part.
    fn refused(&self, type_url: &str, name: &str, r: &Refused, delta: bool, exclude: bool) -> GenericXdsConfig {
        let shown = r.rejected.as_ref().filter(|_| !exclude).map(|res| res.to_any());
        let version_info = match (&r.rejected, delta) {
            (Some(res), true) => res.version.clone(),
            _ => r.version.clone(),
        };
        GenericXdsConfig {
            type_url: type_url.to_string(),
            name: name.to_string(),
            version_info,
            xds_config: shown.clone(),
            last_updated: self.held.map(|_| timestamp(r.at)),
            config_status: ConfigStatus::Error as i32,
            client_status: ClientResourceStatus::Nacked as i32,
            error_state: Some(UpdateFailureState {
                failed_configuration: shown,
                last_update_attempt: Some(timestamp(r.at)),
                details: match &r.unit.virtual_host {
                    Some(_) => format!("{}: {}", r.unit, r.reason),
                    None => r.reason.clone(),
                },
                version_info: r.version.clone(),
            }),
            is_static_resource: false,
        }
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_matcher(p: MatchPattern, ignore_case: bool) -> NodeMatcher {
        NodeMatcher { node_id: Some(StringMatcher { match_pattern: Some(p), ignore_case }), node_metadatas: vec![] }
    }

    #[test]
    fn node_id_matchers() {
        assert!(node_matches(&id_matcher(MatchPattern::Exact("envoy-1".into()), false), "envoy-1"));
        assert!(!node_matches(&id_matcher(MatchPattern::Exact("envoy-1".into()), false), "envoy-10"));
        assert!(node_matches(&id_matcher(MatchPattern::Prefix("envoy-".into()), false), "envoy-10"));
        assert!(node_matches(&id_matcher(MatchPattern::Suffix("-10".into()), false), "envoy-10"));
        assert!(node_matches(&id_matcher(MatchPattern::Contains("voy".into()), false), "envoy-10"));
        assert!(node_matches(&id_matcher(MatchPattern::Exact("ENVOY-1".into()), true), "envoy-1"));
        assert!(node_matches(&NodeMatcher::default(), "anything"));
    }

    #[test]
    fn unsupported_matchers_name_the_field() {
        let regex = id_matcher(MatchPattern::SafeRegex(Default::default()), false);
        let e = check_matchers(&[NodeMatcher::default(), regex]).unwrap_err();
        assert!(e.message().contains("node_matchers[1].node_id"), "{}", e.message());
    }
}
