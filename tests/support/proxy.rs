//! A TCP proxy to the local broker that counts the connections it forwards
//! and can hang: stop forwarding in both directions while keeping every
//! socket open, as a hung broker or a network partition does (nothing is
//! closed, nothing answers).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};

/// A proxy on a free local port in front of 127.0.0.1:5672, forwarding
/// from the start. Dropping it closes every connection it holds.
pub struct HangProxy {
    pub port: u16,
    hung: watch::Sender<bool>,
    accepted: Arc<Mutex<Vec<Instant>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HangProxy {
    pub fn start() -> HangProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hung, hung_rx) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let times = accepted.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept_loop = async {
                    loop {
                        let Ok((inbound, _)) = listener.accept().await else {
                            continue;
                        };
                        times.lock().unwrap().push(Instant::now());
                        let hung = hung_rx.clone();
                        tokio::spawn(async move {
                            // A hung broker still takes the TCP connection
                            // (the kernel does) but never answers.
                            if *hung.borrow() {
                                let _keep = inbound;
                                return std::future::pending::<()>().await;
                            }
                            let Ok(outbound) =
                                tokio::net::TcpStream::connect("127.0.0.1:5672").await
                            else {
                                return;
                            };
                            let (in_r, in_w) = inbound.into_split();
                            let (out_r, out_w) = outbound.into_split();
                            tokio::join!(pump(in_r, out_w, hung.clone()), pump(out_r, in_w, hung));
                        });
                    }
                };
                tokio::select! {
                    _ = accept_loop => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime drops every task and closes its sockets.
        });
        HangProxy {
            port,
            hung,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The guest URI through this proxy.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}//", self.port)
    }

    /// Stops forwarding in both directions, for every connection, now and
    /// later; every socket stays open.
    pub fn hang(&self) {
        self.hung.send_replace(true);
    }

    /// When each connection so far was accepted.
    pub fn accepted(&self) -> Vec<Instant> {
        self.accepted.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

impl Drop for HangProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until either side closes; once the proxy hangs,
/// copies nothing more and holds both halves open until the proxy stops.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut hung: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if *hung.borrow() {
            break;
        }
        tokio::select! {
            n = from.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Bytes read as the hang began are dropped, as a partition
                // drops the packets on the wire.
                if *hung.borrow() {
                    break;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = hung.changed() => if changed.is_err() {
                return;
            },
        }
    }
    let _keep = (from, to);
    std::future::pending::<()>().await
}
