//! An in-process driver for one xDS stream's state machine, for `cargo fuzz` (`fuzz/`) and its regression tests.
//! Hidden from the docs and built only with the `fuzzing` feature (or in tests): it adds no public API.
//!
//! ```text
//!  requests (SotW or Delta) ──▶ the stream's own apply + push_dirty ──▶ send queue ──▶ responses (checked)
//!  snapshot edits ────────────▶ Session::set_snapshot
//! ```
//! Each step runs exactly what a stream task runs between two awaits, without tonic or a runtime.

use super::delta::Delta;
use super::limits::Limits;
use super::node;
use super::queue::{self, Outbound, SendQueue};
use super::registry::Registry;
use super::resource::TypeKind;
use super::session::Session;
use super::snapshot::Snapshot;
use super::sotw::Sotw;
use super::stream::{Protocol, apply, push_dirty};
use crate::model::{Endpoint, Model, ObjectKey, ReleasePolicy, ReleasePolicySpec, Service};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;

/// One stream of protocol `P` against a built-in model, its responses kept for inspection.
struct Driver<P: Protocol> {
    session: Session,
    limits: Limits,
    tx: SendQueue<bytes::Bytes>,
    out: Outbound<bytes::Bytes>,
    snapshot: Arc<Snapshot>,
    /// Set once the stream would have ended (a refused request or response): later steps are no-ops.
    ended: Option<tonic::Status>,
    /// Responses sent so far, per type (their nonces are what a well-behaved proxy ACKs).
    responses: Vec<P::Resp>,
}

macro_rules! driver {
    ($(#[$doc:meta])* $name:ident, $proto:ty, $req:ty, $resp:ty) => {
        $(#[$doc])*
        pub struct $name(Driver<$proto>);

        impl $name {
            /// Opens a stream for `node` (refused as the server refuses it), on one type's service if `only`.
            pub fn new(node: &Node, only: Option<TypeKind>, limits: Limits) -> Result<Self, String> {
                Driver::new(node, only, limits).map(Self)
            }
            /// One request, then the pushes it leads to (as the stream task does).
            pub fn request(&mut self, req: $req) {
                self.0.request(req)
            }
            /// A new snapshot of [`model`]`(variant)`, built on the previous one.
            pub fn publish(&mut self, variant: u8) {
                self.0.publish(variant)
            }
            /// The proxy reads what is queued (not calling it: the proxy stops reading).
            pub fn read(&mut self) {
                self.0.read()
            }
            /// Whether nothing is in flight.
            pub fn quiet(&self) -> bool {
                self.0.quiet()
            }
            /// The status the stream ended with, if it did.
            pub fn ended(&self) -> Option<&tonic::Status> {
                self.0.ended.as_ref()
            }
            /// Every response read so far.
            pub fn responses(&self) -> &[$resp] {
                &self.0.responses
            }
            /// The nonce of `kind`'s response in flight, if any.
            pub fn inflight_nonce(&self, kind: TypeKind) -> Option<String> {
                self.0.inflight_nonce(kind)
            }
        }
    };
}

driver!(
    /// A SotW stream.
    SotwDriver, Sotw, DiscoveryRequest, DiscoveryResponse
);
driver!(
    /// A Delta stream.
    DeltaDriver, Delta, DeltaDiscoveryRequest, DeltaDiscoveryResponse
);

/// The model the driver serves at `variant` (the base Bookinfo example, edited a little per variant).
pub fn model(variant: u8) -> Model {
    let mut m = crate::source::parse_str(crate::source::DEFAULT_CONFIG, "bookinfo.yaml").expect("the example loads");
    let reviews = ObjectKey::new("default", "reviews");
    match variant % 4 {
        0 => {}
        1 => {
            let extra = m.insert_service(Service::http("default", "extra", 9080));
            m.push_endpoint(&extra, Endpoint::ready("extra-v1", "127.0.0.1", 9080, 20001).with_label("app", "extra"));
        }
        2 => {
            let spec = ReleasePolicySpec::split("reviews", "v1", "v2", u32::from(variant) * 39 % 10_001);
            m.insert_policy(ReleasePolicy::new("default", "reviews-v3", spec));
        }
        _ => {
            let port = 20_000 + u16::from(variant);
            let ep = Endpoint::ready(&format!("reviews-v1-{port}"), "127.0.0.1", 9080, port)
                .with_label("app", "reviews")
                .with_label("version", "v1");
            m.push_endpoint(&reviews, ep);
        }
    }
    m
}

impl<P: Protocol> Driver<P> {
    /// Opens a stream for `node` (refused like the server refuses it), on one type's service if `only`.
    pub fn new(node: &Node, only: Option<TypeKind>, limits: Limits) -> Result<Self, String> {
        let proxy = node::proxy_info(Some(node)).map_err(|e| e.to_string())?;
        let registry = Registry::new();
        let guard = registry.connect(node.clone(), proxy.clone(), P::NAME);
        let mut session = Session::new(proxy, only, guard);
        let snapshot = Arc::new(Snapshot::build(1, Arc::new(model(0)), None).map_err(|e| e.to_string())?);
        session.set_snapshot(snapshot.clone());
        let (tx, out) = queue::channel(limits.send_queue, limits.send_queue_bytes);
        Ok(Self { session, limits, tx, out, snapshot, ended: None, responses: Vec::new() })
    }

    /// One request, then the pushes it leads to (as the stream task does).
    pub fn request(&mut self, req: P::Req) {
        if self.ended.is_some() {
            return;
        }
        if let Err(status) = apply::<P>(&mut self.session, &self.limits, req) {
            self.ended = Some(status);
            return;
        }
        self.push();
    }

    /// A new snapshot of model `variant`, built on the previous one (so the endpoint fast path runs too).
    pub fn publish(&mut self, variant: u8) {
        let version = self.snapshot.version + 1;
        if let Ok(next) = Snapshot::build(version, Arc::new(model(variant)), Some(&self.snapshot)) {
            self.snapshot = Arc::new(next);
            self.session.set_snapshot(self.snapshot.clone());
        }
        self.push();
    }

    /// The proxy reads what is queued (`false`: it stops reading, so the queue fills and coalesces).
    pub fn read(&mut self) {
        while let Some(Some(item)) = self.out.next().now_or_never() {
            match item {
                Ok(frame) => match super::wire::unframe::<P::Resp>(&frame) {
                    Ok(resp) => self.responses.push(resp),
                    Err(e) => panic!("a queued response does not decode: {e}"),
                },
                Err(status) => self.ended = Some(status),
            }
        }
        self.push();
    }

    fn push(&mut self) {
        if self.ended.is_some() {
            return;
        }
        if let Err(status) = push_dirty::<P>(&mut self.session, &self.limits, &self.tx) {
            self.ended = Some(status);
        }
        self.session.report();
    }

    /// Whether every type's response was answered (nothing in flight).
    pub fn quiet(&self) -> bool {
        self.session.types.iter().all(|st| st.inflight.is_none())
    }

    /// The nonce of `kind`'s response in flight, if any.
    pub fn inflight_nonce(&self, kind: TypeKind) -> Option<String> {
        self.session.types[kind.index()].inflight.as_ref().map(|i| i.nonce.clone())
    }
}

impl SotwDriver {
    /// ACKs every response in flight (names as subscribed), as a well-behaved proxy would.
    pub fn ack_all(&mut self) {
        for kind in TypeKind::ALL {
            let st = &self.0.session.types[kind.index()];
            let Some(inflight) = &st.inflight else { continue };
            let req = DiscoveryRequest {
                type_url: kind.type_url().to_string(),
                version_info: inflight.version.clone(),
                response_nonce: inflight.nonce.clone(),
                resource_names: if st.wildcard { vec![] } else { st.names.iter().cloned().collect() },
                ..Default::default()
            };
            self.request(req);
        }
    }
}

impl DeltaDriver {
    /// ACKs every response in flight, as a well-behaved proxy would.
    pub fn ack_all(&mut self) {
        for kind in TypeKind::ALL {
            let Some(nonce) = self.inflight_nonce(kind) else { continue };
            let req = DeltaDiscoveryRequest {
                type_url: kind.type_url().to_string(),
                response_nonce: nonce,
                ..Default::default()
            };
            self.request(req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    pub(super) fn node(meta: &[(&str, &str)]) -> Node {
        let fields =
            meta.iter().map(|(k, v)| (k.to_string(), Value { kind: Some(Kind::StringValue(v.to_string())) })).collect();
        Node { id: "fuzz".into(), metadata: Some(Struct { fields }), ..Default::default() }
    }

    fn cds(nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: TypeKind::Cluster.type_url().into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_behaving_proxy_goes_quiet_and_a_blind_acker_is_held_to_the_queue() {
        let limits = Limits { send_queue: 2, ..Limits::default() };
        let mut s = SotwDriver::new(&node(&[]), None, limits).unwrap();
        s.request(cds(""));
        for _ in 0..4 {
            s.read();
            s.ack_all();
        }
        assert!(s.quiet() && s.ended().is_none());
        assert_eq!(s.responses().len(), 1);

        // ACKing every response without reading it: at most `send_queue` are queued; the rest coalesce.
        for v in 0..20u8 {
            s.publish(v % 2 + 1);
            s.ack_all();
        }
        s.read();
        assert!(s.responses().len() <= 1 + 2, "{} responses queued", s.responses().len());
    }
}
