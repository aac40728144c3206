//! Tunnels: byte streams to a TCP port (`direct-tcpip`) or a unix socket
//! (`direct-streamlocal@openssh.com`, e.g. the host's `/var/run/docker.sock`) on the host.
//! A local listener carrying connections through them is [`crate::runner::tunnel`].

use super::session::SshSession;
use crate::backends::remote::ByteStream;
use crate::backends::BackendResult;

impl SshSession {
    pub(crate) async fn tcp_stream(
        &self,
        host: &str,
        port: u16,
    ) -> BackendResult<Box<dyn ByteStream>> {
        let what = format!("a TCP tunnel to {host}:{port}");
        let host = host.to_string();
        let (_live, channel) = self
            .open_channel(&what, false, |live| {
                let host = host.clone();
                async move {
                    live.handle
                        .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
                        .await
                }
            })
            .await?;
        Ok(Box::new(channel.into_stream()))
    }

    pub(crate) async fn unix_stream(&self, path: &str) -> BackendResult<Box<dyn ByteStream>> {
        let what = format!("a tunnel to the unix socket {path}");
        let path = path.to_string();
        let (_live, channel) = self
            .open_channel(&what, false, |live| {
                let path = path.clone();
                async move { live.handle.channel_open_direct_streamlocal(path).await }
            })
            .await?;
        Ok(Box::new(channel.into_stream()))
    }
}
