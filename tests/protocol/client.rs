//! Tonic clients that play Envoy on ADS, SotW and Delta, for the protocol tests.
#![allow(dead_code)] // each test binary that includes this file uses a different part

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
#[allow(dead_code)] // not every test binary including this file uses it
pub const VHDS: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

/// A node in listen mode on a made-up port (no Envoy binds it; the config only names it).
pub fn node(id: &str) -> Node {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("NAMESPACE".to_string(), Value { kind: Some(Kind::StringValue("default".into())) });
    fields.insert("SLUICE_LISTEN".to_string(), Value { kind: Some(Kind::StringValue("127.0.0.1:15999".into())) });
    Node { id: id.into(), metadata: Some(Struct { fields: fields.into_iter().collect() }), ..Default::default() }
}

pub struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl Sotw {
    pub async fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let rx = client.stream_aggregated_resources(ReceiverStream::new(rx)).await.expect("open ADS").into_inner();
        Self { tx, rx, node: Some(node(id)) }
    }

    /// Sends a request; the node goes on the first one only (as Envoy's `set_node_on_first_message_only`).
    pub async fn send(&mut self, type_url: &str, names: &[&str], version: &str, nonce: &str, nack: Option<&str>) {
        let req = DiscoveryRequest {
            node: self.node.take(),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            error_detail: nack.map(|m| RpcStatus { code: 3, message: m.into(), details: vec![] }),
            ..Default::default()
        };
        self.tx.send(req).await.expect("request stream open");
    }

    #[track_caller]
    pub fn recv(&mut self) -> impl std::future::Future<Output = DiscoveryResponse> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.try_recv(Duration::from_secs(5)).await {
                Some(r) => r,
                None => panic!("no response within 5 s (awaited at {caller})"),
            }
        }
    }

    /// The response stream, to read its end.
    pub fn stream(&mut self) -> &mut Streaming<DiscoveryResponse> {
        &mut self.rx
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<DiscoveryResponse> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            Ok(other) => panic!("stream ended: {other:?}"),
            Err(_) => None,
        }
    }

    /// Subscribes like Envoy (CDS, EDS for its clusters, LDS, RDS for its route), ACKing each step; returns the
    /// cluster names.
    pub async fn sync_like_envoy(&mut self) -> Vec<String> {
        self.send(CDS, &[], "", "", None).await;
        let cds = self.recv().await;
        self.ack(&cds, &[]).await;
        let clusters = names(&cds);
        let eds_names: Vec<&str> = clusters.iter().map(String::as_str).collect();
        self.send(EDS, &eds_names, "", "", None).await;
        let eds = self.recv().await;
        assert_eq!(eds.type_url, EDS);
        self.ack(&eds, &eds_names).await;
        self.send(LDS, &[], "", "", None).await;
        let lds = self.recv().await;
        assert_eq!(lds.type_url, LDS);
        self.ack(&lds, &[]).await;
        self.send(RDS, &["sluice-listen"], "", "", None).await;
        let rds = self.recv().await;
        assert_eq!(names(&rds), vec!["sluice-listen"]);
        self.ack(&rds, &["sluice-listen"]).await;
        clusters
    }

    /// ACKs a response (names as the subscription stands).
    pub async fn ack(&mut self, r: &DiscoveryResponse, names: &[&str]) {
        let (t, v, n) = (r.type_url.clone(), r.version_info.clone(), r.nonce.clone());
        self.send(&t, names, &v, &n, None).await;
    }
}

pub struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: Option<Node>,
}

impl Delta {
    pub async fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let rx = client.delta_aggregated_resources(ReceiverStream::new(rx)).await.expect("open delta").into_inner();
        Self { tx, rx, node: Some(node(id)) }
    }

    pub async fn subscribe(&mut self, type_url: &str, names: &[&str], initial: HashMap<String, String>) {
        let req = DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            initial_resource_versions: initial,
            ..Default::default()
        };
        self.tx.send(req).await.expect("request stream open");
    }

    #[allow(dead_code)] // not every test binary including this file uses it
    pub async fn unsubscribe(&mut self, type_url: &str, names: &[&str]) {
        let req = DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_unsubscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.tx.send(req).await.expect("request stream open");
    }

    pub async fn reply(&mut self, r: &DeltaDiscoveryResponse, nack: Option<&str>) {
        let req = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: nack.map(|m| RpcStatus { code: 3, message: m.into(), details: vec![] }),
            ..Default::default()
        };
        self.tx.send(req).await.expect("request stream open");
    }

    #[track_caller]
    pub fn recv(&mut self) -> impl std::future::Future<Output = DeltaDiscoveryResponse> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.try_recv(Duration::from_secs(5)).await {
                Some(r) => r,
                None => panic!("no delta response within 5 s (awaited at {caller})"),
            }
        }
    }

    /// The response stream, to read its end.
    pub fn stream(&mut self) -> &mut Streaming<DeltaDiscoveryResponse> {
        &mut self.rx
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<DeltaDiscoveryResponse> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            Ok(other) => panic!("delta stream ended: {other:?}"),
            Err(_) => None,
        }
    }
}

/// Names of the resources in a SotW response, decoded from their `Any`s.
pub fn names(r: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    r.resources
        .iter()
        .map(|any| match any.type_url.as_str() {
            CDS => envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(any.value.as_slice()).unwrap().name,
            EDS => {
                envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(any.value.as_slice())
                    .unwrap()
                    .cluster_name
            }
            LDS => envoy_types::pb::envoy::config::listener::v3::Listener::decode(any.value.as_slice()).unwrap().name,
            RDS => {
                envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(any.value.as_slice())
                    .unwrap()
                    .name
            }
            other => panic!("unexpected type {other}"),
        })
        .collect()
}
