//! DiscoveryRequest sequences on one stream (SotW or Delta): arbitrary type URLs, nonces, names, versions, NACKs,
//! snapshot changes and a proxy that stops reading, driven through the stream's own request handling and pushes.
//! Afterwards the proxy behaves (reads and ACKs everything): the stream must go quiet, not push forever.
#![no_main]

use arbitrary::Arbitrary;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use libfuzzer_sys::fuzz_target;
use sluice::xds::fuzzing::{DeltaDriver, SotwDriver};
use sluice::xds::{Limits, TypeKind};

#[derive(Arbitrary, Debug)]
struct Input {
    delta: bool,
    /// Node metadata: namespace, SLUICE_LISTEN, GENERATOR, LABELS (JSON), INBOUND_PORTS.
    meta: [Option<String>; 5],
    only: Option<u8>,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Request {
        type_url: Url,
        names: Vec<Name>,
        unsubscribe: Vec<Name>,
        version: Option<String>,
        nonce: Nonce,
        nack: Option<String>,
    },
    Publish(u8),
    Read,
}

#[derive(Arbitrary, Debug)]
enum Url {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Star,
    /// A name the model has (clusters, assignments, listeners, routes).
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Nonce {
    None,
    /// The nonce of this type's response in flight (an ACK or NACK of it).
    InFlight,
    Other(String),
}

const KNOWN: &[&str] = &[
    "outbound|9080||reviews.default.svc.cluster.local",
    "outbound|9080|v1|reviews.default.svc.cluster.local",
    "outbound|9080|v3|reviews.default.svc.cluster.local",
    "outbound|9080||ratings.default.svc.cluster.local",
    "outbound|9080||extra.default.svc.cluster.local",
    "9080",
    "sluice-listen",
    "0.0.0.0_15001",
];

fn url(u: &Url) -> String {
    match u {
        Url::Known(i) => TypeKind::ALL[usize::from(*i) % 4].type_url().to_string(),
        Url::Other(s) => s.clone(),
    }
}

fn name(n: &Name) -> String {
    match n {
        Name::Star => "*".into(),
        Name::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].into(),
        Name::Other(s) => s.clone(),
    }
}

fn node(meta: &[Option<String>; 5]) -> Node {
    let keys = ["NAMESPACE", "SLUICE_LISTEN", "GENERATOR", "LABELS", "INBOUND_PORTS"];
    let fields = keys
        .iter()
        .zip(meta)
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), Value { kind: Some(Kind::StringValue(v.clone())) })))
        .collect();
    Node { id: "fuzz".into(), metadata: Some(Struct { fields }), ..Default::default() }
}

fn limits() -> Limits {
    Limits {
        send_queue: 2,
        send_queue_bytes: 64 * 1024,
        max_names_per_request: 64,
        max_name_bytes: 256,
        ..Limits::default()
    }
}

fuzz_target!(|input: Input| {
    let node = node(&input.meta);
    let only = input.only.map(|i| TypeKind::ALL[usize::from(i) % 4]);
    if input.delta {
        let Ok(mut d) = DeltaDriver::new(&node, only, limits()) else { return };
        for step in &input.steps {
            match step {
                Step::Publish(v) => d.publish(*v),
                Step::Read => d.read(),
                Step::Request { type_url, names, unsubscribe, nonce, nack, version } => {
                    let type_url = url(type_url);
                    let nonce = match nonce {
                        Nonce::None => String::new(),
                        Nonce::InFlight => {
                            TypeKind::from_type_url(&type_url).and_then(|k| d.inflight_nonce(k)).unwrap_or_default()
                        }
                        Nonce::Other(s) => s.clone(),
                    };
                    let initial = version.iter().flat_map(|v| names.first().map(|n| (name(n), v.clone()))).collect();
                    d.request(DeltaDiscoveryRequest {
                        type_url,
                        resource_names_subscribe: names.iter().map(name).collect(),
                        resource_names_unsubscribe: unsubscribe.iter().map(name).collect(),
                        initial_resource_versions: initial,
                        response_nonce: nonce,
                        error_detail: nack.as_ref().map(|m| RpcStatus { code: 3, message: m.clone(), details: vec![] }),
                        ..Default::default()
                    });
                }
            }
        }
        for _ in 0..16 {
            d.read();
            d.ack_all();
        }
        assert!(d.ended().is_some() || d.quiet(), "a behaving Delta proxy still has responses in flight");
    } else {
        let Ok(mut s) = SotwDriver::new(&node, only, limits()) else { return };
        for step in &input.steps {
            match step {
                Step::Publish(v) => s.publish(*v),
                Step::Read => s.read(),
                Step::Request { type_url, names, unsubscribe: _, nonce, nack, version } => {
                    let type_url = url(type_url);
                    let nonce = match nonce {
                        Nonce::None => String::new(),
                        Nonce::InFlight => {
                            TypeKind::from_type_url(&type_url).and_then(|k| s.inflight_nonce(k)).unwrap_or_default()
                        }
                        Nonce::Other(n) => n.clone(),
                    };
                    s.request(DiscoveryRequest {
                        type_url,
                        resource_names: names.iter().map(name).collect(),
                        version_info: version.clone().unwrap_or_default(),
                        response_nonce: nonce,
                        error_detail: nack.as_ref().map(|m| RpcStatus { code: 3, message: m.clone(), details: vec![] }),
                        ..Default::default()
                    });
                }
            }
        }
        for _ in 0..16 {
            s.read();
            s.ack_all();
        }
        assert!(s.ended().is_some() || s.quiet(), "a behaving SotW proxy still has responses in flight");
    }
});
