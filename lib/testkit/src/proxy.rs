//! [`OutageProxy`]: a TCP forwarder in front of ClickHouse that a test can cut, stall
//! and restore, to play a ClickHouse outage or hang without stopping the server other
//! tests share.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Close every connection; new ones are accepted and dropped at once.
    Cut,
    /// Close every connection; new ones are accepted and then never answered.
    Stall,
}

/// Forwards connections to a target while up; cut or stalled, it closes the open
/// connections and then drops (cut) or holds unanswered (stall) new ones.
#[derive(Debug)]
pub struct OutageProxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl OutageProxy {
    /// Starts forwarding from a free local port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let address = listener.local_addr().expect("local addr");
        let (mode, mode_receiver) = watch::channel(Mode::Forward);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut mode = mode_receiver.clone();
                let current = *mode.borrow_and_update();
                tokio::spawn(async move {
                    match current {
                        Mode::Cut => drop(client),
                        // Held, unanswered, until the mode changes.
                        Mode::Stall => {
                            let _ = mode.changed().await;
                            drop(client);
                        }
                        Mode::Forward => {
                            let Ok(mut server) = TcpStream::connect(target).await else {
                                return;
                            };
                            let mut client = client;
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = mode.wait_for(|mode| *mode != Mode::Forward) => {}
                            }
                        }
                    }
                });
            }
        });
        Self {
            address,
            mode,
            task,
        }
    }

    /// `http://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Cuts every connection and refuses new ones until [`OutageProxy::restore`].
    pub fn cut(&self) {
        let _ = self.mode.send(Mode::Cut);
    }

    /// Cuts every connection and leaves new ones unanswered (a hung server) until
    /// [`OutageProxy::restore`].
    pub fn stall(&self) {
        let _ = self.mode.send(Mode::Stall);
    }

    /// Forwards again.
    pub fn restore(&self) {
        let _ = self.mode.send(Mode::Forward);
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
