//! The gRPC services kubelet calls: Identity and Node. Thin: requests are checked in
//! `request`, volumes handled in `volumes`, errors turned into gRPC codes here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::DRIVER_NAME;
use super::proto::identity_server::Identity;
use super::proto::node_server::Node;
use super::proto::{self, node_service_capability};
use super::request::{self, RequestError};
use super::volumes::{VolumeError, Volumes};

pub struct IdentityService;

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    /// A node plugin only: no controller service, no topology.
    async fn get_plugin_capabilities(
        &self,
        _: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: Vec::<proto::PluginCapability>::new(),
        }))
    }

    async fn probe(
        &self,
        _: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeResponse>, Status> {
        Ok(Response::new(proto::ProbeResponse { ready: Some(true) }))
    }
}

pub struct NodeService {
    pub volumes: Arc<Volumes>,
    pub node_id: String,
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = request.volume_id.clone();
        let publish = request::publish(request, self.volumes.audience()).map_err(|err| {
            tracing::warn!(%volume_id, error = %err, "publish refused");
            request_status(err)
        })?;
        self.volumes.publish(publish).await.map_err(|err| {
            tracing::warn!(%volume_id, error = %err, "publish failed");
            volume_status(err)
        })?;
        Ok(Response::new(proto::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is missing"));
        }
        let target = request::target_path(&request.target_path).map_err(request_status)?;
        self.volumes
            .unpublish(&request.volume_id, &target)
            .await
            .map_err(|err| {
                tracing::warn!(volume_id = %request.volume_id, error = %err, "unpublish failed");
                volume_status(err)
            })?;
        Ok(Response::new(proto::NodeUnpublishVolumeResponse {}))
    }

    /// No staging; VOLUME_MOUNT_GROUP, so that kubelet hands the pod's fsGroup over instead of
    /// changing ownership itself (refreshes write new files it would not have touched).
    async fn node_get_capabilities(
        &self,
        _: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        let rpc = |kind: node_service_capability::rpc::Type| proto::NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc {
                    r#type: kind.into(),
                },
            )),
        };
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: vec![rpc(node_service_capability::rpc::Type::VolumeMountGroup)],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
        }))
    }
}

fn request_status(err: RequestError) -> Status {
    match err {
        RequestError::InvalidArgument(m) => Status::invalid_argument(m),
        RequestError::PermissionDenied(m) => Status::permission_denied(m),
    }
}

fn volume_status(err: VolumeError) -> Status {
    match err {
        VolumeError::InvalidArgument(m) => Status::invalid_argument(m),
        VolumeError::PermissionDenied(m) => Status::permission_denied(m),
        VolumeError::NotFound(m) => Status::not_found(m),
        VolumeError::AlreadyExists(m) => Status::already_exists(m),
        VolumeError::FailedPrecondition(m) => Status::failed_precondition(m),
        VolumeError::Unavailable(m) => Status::unavailable(m),
        VolumeError::Internal(m) => Status::internal(m),
    }
}
