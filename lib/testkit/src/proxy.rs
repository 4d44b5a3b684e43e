//! [`OutageProxy`]: a TCP forwarder in front of ClickHouse that a test can cut and
//! restore, to play a ClickHouse outage without stopping the server other tests share.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// Forwards connections to `target` while up; while down it closes every open
/// connection and refuses new ones (accepts and drops them at once).
#[derive(Debug)]
pub struct OutageProxy {
    address: SocketAddr,
    down: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl OutageProxy {
    /// Starts forwarding from a free local port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let address = listener.local_addr().expect("local addr");
        let (down, down_receiver) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *down_receiver.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = down_receiver.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|is_down| *is_down) => {}
                    }
                });
            }
        });
        Self {
            address,
            down,
            task,
        }
    }

    /// `http://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Cuts every connection and refuses new ones until [`OutageProxy::restore`].
    pub fn cut(&self) {
        let _ = self.down.send(true);
    }

    /// Forwards again.
    pub fn restore(&self) {
        let _ = self.down.send(false);
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
