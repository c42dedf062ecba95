//! `coffer csi`: the CSI node plugin of driver `csi.coffer.dev`.
//!
//! kubelet calls it over a Unix socket to publish a pod's ephemeral inline volume: the plugin
//! mounts a fresh tmpfs at the target path, asks a [`ContentSource`] for the volume's files
//! with the pod's own ServiceAccount token, and writes them in kubelet's atomic layout. It
//! keeps them current as the objects they come from change (a [`ChangeFeed`]), with a slow
//! resync besides, and remembers its volumes in a state directory across restarts.
//! docs/csi.md tells the whole story.
//!
//! - [`endpoint`]: the socket, private from the start;
//! - [`request`]: what a publish request must hold (pod, token, ephemeral);
//! - [`writer`]: the `..data` layout, with file names checked again by
//!   [`crate::delivery::names`];
//! - [`mounts`]: tmpfs mounts and mountinfo;
//! - [`state`]: one file per volume, for recovery;
//! - [`volumes`]: publish, unpublish, refresh, recover;
//! - [`feed`]: change notices, from watches in a cluster;
//! - [`service`]: the gRPC Identity and Node services.

pub mod endpoint;
pub mod feed;
pub mod mounts;
pub mod request;
pub mod service;
pub mod state;
#[cfg(test)]
mod through_api;
pub mod volumes;
pub mod writer;

/// The CSI messages and services (`proto/csi.proto`), generated at build time.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;

pub use feed::{ChangeFeed, Notice};

use crate::delivery::ContentSource;
use endpoint::EndpointError;
use state::{StateDir, StateError};
use volumes::{VolumeError, VolumeSettings, Volumes};

/// The driver's name, as in the CSIDriver object and pods' `csi.driver`.
pub const DRIVER_NAME: &str = "csi.coffer.dev";
/// Where kubelet looks for the socket of a plugin registered under [`DRIVER_NAME`].
pub const DEFAULT_ENDPOINT: &str = "unix:///var/lib/kubelet/plugins/csi.coffer.dev/csi.sock";
/// One state file per volume.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kubelet/plugins/csi.coffer.dev/volumes";
/// Size limit of each volume's tmpfs. A secret is at most 64 KiB and a parameter 8 KiB; a
/// refresh holds the old and the new copy at once.
pub const DEFAULT_VOLUME_SIZE_MIB: u64 = 4;
/// Every volume is rewritten this often even without a notice, in case one was missed.
pub const DEFAULT_RESYNC_SECONDS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot recover the volumes of the state directory: {0}")]
    Recover(#[source] VolumeError),
    #[error("serving gRPC failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// How the plugin runs.
#[derive(Debug, Clone)]
pub struct CsiConfig {
    /// `unix:///path` or `/path`.
    pub endpoint: String,
    /// This node's name, answered to NodeGetInfo.
    pub node_id: String,
    pub state_dir: PathBuf,
    pub volume_size_bytes: u64,
    pub resync: Duration,
    /// The audience of the tokens kubelet hands over (the CSIDriver's tokenRequests).
    pub audience: String,
}

/// Runs the plugin until `shutdown` completes: takes back the volumes of the state directory,
/// serves kubelet on the socket, and refreshes volumes on `feed`'s notices and every
/// `config.resync`.
pub async fn run(
    config: CsiConfig,
    source: Arc<dyn ContentSource>,
    feed: ChangeFeed,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CsiError> {
    let socket = endpoint::socket_path(&config.endpoint)?;
    let state = StateDir::open(&config.state_dir)?;
    let volumes = Arc::new(Volumes::new(
        source,
        state,
        VolumeSettings {
            size_bytes: config.volume_size_bytes,
            audience: config.audience.clone(),
        },
    ));
    let recovered = volumes.recover().map_err(CsiError::Recover)?;
    tracing::info!(recovered, state_dir = %config.state_dir.display(), "volumes taken back");

    let listener = endpoint::bind(&socket)?;
    let refresher = tokio::spawn(refresh_loop(volumes.clone(), feed, config.resync));
    tracing::info!(endpoint = %socket.display(), node_id = %config.node_id, "CSI node plugin serving");
    let served = tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::new(
            service::IdentityService,
        ))
        .add_service(proto::node_server::NodeServer::new(service::NodeService {
            volumes,
            node_id: config.node_id,
        }))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    refresher.abort();
    let _ = std::fs::remove_file(&socket);
    served.map_err(CsiError::Serve)
}

/// Refreshes the volumes a notice concerns, and every volume at each resync (the first at
/// once, for volumes taken back from the state directory). Notices that arrive together are
/// handled as one batch, each volume refreshed once per distinct notice.
async fn refresh_loop(volumes: Arc<Volumes>, mut feed: ChangeFeed, resync: Duration) {
    let mut ticker = tokio::time::interval(resync);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed_open = true;
    loop {
        tokio::select! {
            _ = ticker.tick() => volumes.refresh_all().await,
            notice = feed.next(), if feed_open => match notice {
                Some(first) => {
                    let mut batch = vec![first];
                    while let Some(Some(more)) = futures::FutureExt::now_or_never(feed.next()) {
                        if !batch.contains(&more) {
                            batch.push(more);
                        }
                    }
                    for notice in &batch {
                        tracing::debug!(?notice, "change noticed");
                        volumes.refresh_matching(notice).await;
                    }
                }
                None => {
                    tracing::warn!("the change feed ended; volumes refresh on resync only");
                    feed_open = false;
                }
            },
        }
    }
}
