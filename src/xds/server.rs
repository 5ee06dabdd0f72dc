//! The tonic services: ADS (SotW and Delta), the per-type CDS/EDS/LDS/RDS services and CSDS, on one gRPC server.

use super::delta::Delta;
use super::resource::TypeKind;
use super::sotw::Sotw;
use super::stream::{Protocol, StreamCtx, run};
use super::trust::Trust;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::{
    RouteDiscoveryService, RouteDiscoveryServiceServer,
};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest request Sluice decodes (a DiscoveryRequest with many names, or a NACK with a long error).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest response Sluice encodes (a whole CDS or EDS set).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

type Out<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// Every xDS service, sharing one [`StreamCtx`].
#[derive(Clone)]
pub struct Xds {
    ctx: StreamCtx,
    /// Set on the mTLS port: every stream must carry a client certificate identity, which scopes what it sees.
    trust: Option<Arc<Trust>>,
}

impl Xds {
    /// The plaintext services: no identity, every namespace visible.
    pub fn new(ctx: StreamCtx) -> Self {
        Self { ctx, trust: None }
    }

    /// The mTLS services: a stream without a SPIFFE identity from its certificate is refused.
    pub fn mtls(ctx: StreamCtx, trust: Arc<Trust>) -> Self {
        Self { ctx, trust: Some(trust) }
    }

    fn spawn<P: Protocol>(
        &self,
        req: Request<Streaming<P::Req>>,
        only: Option<TypeKind>,
    ) -> Result<Response<Out<P::Resp>>, Status> {
        let peer = self.trust.as_ref().map(|t| t.peer(&req)).transpose()?;
        // At most one response per type is in flight, so 8 slots never fill: a stalled proxy holds no more.
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(run::<P>(self.ctx.clone(), req.into_inner(), tx, only, peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Adds every xDS service to a tonic router. CSDS (every proxy's config status) is left off the mTLS port: a
    /// proxy certificate would otherwise read other namespaces' config through it.
    pub fn add_to(self, router: tonic::service::RoutesBuilder) -> tonic::service::RoutesBuilder {
        let mut router = router;
        if self.trust.is_none() {
            router.add_service(super::csds::Csds::new(self.ctx.registry.clone(), self.ctx.snapshots.clone()).server());
        }
        router
            .add_service(limit(AggregatedDiscoveryServiceServer::new(self.clone())))
            .add_service(ClusterDiscoveryServiceServer::new(self.clone()))
            .add_service(EndpointDiscoveryServiceServer::new(self.clone()))
            .add_service(ListenerDiscoveryServiceServer::new(self.clone()))
            .add_service(RouteDiscoveryServiceServer::new(self));
        router
    }
}

fn limit<T>(s: AggregatedDiscoveryServiceServer<T>) -> AggregatedDiscoveryServiceServer<T>
where
    T: AggregatedDiscoveryService,
{
    s.max_decoding_message_size(MAX_REQUEST_BYTES).max_encoding_message_size(MAX_RESPONSE_BYTES)
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Xds {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.spawn::<Sotw>(req, None)
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.spawn::<Delta>(req, None)
    }
}

/// Implements one per-type service: SotW and Delta streams restricted to `$kind`; no unary fetch.
macro_rules! per_type_service {
    ($trait:ident, $kind:expr, $stream:ident, $delta:ident, $fetch:ident, $sotw_ty:ident, $delta_ty:ident) => {
        #[tonic::async_trait]
        impl $trait for Xds {
            type $sotw_ty = Out<DiscoveryResponse>;
            type $delta_ty = Out<DeltaDiscoveryResponse>;

            async fn $stream(
                &self,
                req: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<Self::$sotw_ty>, Status> {
                self.spawn::<Sotw>(req, Some($kind))
            }

            async fn $delta(
                &self,
                req: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<Self::$delta_ty>, Status> {
                self.spawn::<Delta>(req, Some($kind))
            }

            async fn $fetch(&self, _: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
                Err(Status::unimplemented("REST/unary fetch is not served; use a gRPC stream"))
            }
        }
    };
}

per_type_service!(
    ClusterDiscoveryService,
    TypeKind::Cluster,
    stream_clusters,
    delta_clusters,
    fetch_clusters,
    StreamClustersStream,
    DeltaClustersStream
);
per_type_service!(
    EndpointDiscoveryService,
    TypeKind::Endpoint,
    stream_endpoints,
    delta_endpoints,
    fetch_endpoints,
    StreamEndpointsStream,
    DeltaEndpointsStream
);
per_type_service!(
    ListenerDiscoveryService,
    TypeKind::Listener,
    stream_listeners,
    delta_listeners,
    fetch_listeners,
    StreamListenersStream,
    DeltaListenersStream
);
per_type_service!(
    RouteDiscoveryService,
    TypeKind::Route,
    stream_routes,
    delta_routes,
    fetch_routes,
    StreamRoutesStream,
    DeltaRoutesStream
);
