//! A gRPC channel to a plugin's Unix socket, as kubelet (or kube-apiserver) dials it; shared
//! by the unit and integration tests of the CSI, provider and KMS plugins, and the benches.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Waits (up to 10 s) for the plugin to listen on `socket`, then connects.
pub async fn connect(socket: &Path) -> Channel {
    for _ in 0..400 {
        if socket.exists() {
            let socket = socket.to_owned();
            let channel = Endpoint::try_from("http://[::]:50051")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
                .await;
            if let Ok(channel) = channel {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the plugin never listened on {}", socket.display());
}
