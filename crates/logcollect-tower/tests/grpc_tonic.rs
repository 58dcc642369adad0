//! `RequestLogLayer` on a real tonic server, called by a real tonic client
//! over TCP, against the real broker: the access record of a gRPC call
//! carries the `grpc-status` of its trailers (or of a trailers-only
//! response), and its level follows that code, not the HTTP 200.

use std::time::Duration;

use logcollect::{LogcollectLayer, Shipper};
use logcollect_tests::{config, unique, Capture, Msg};
use logcollect_tower::{RequestLogLayer, ACCESS_TARGET};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::ServingStatus;
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(30);

/// The one access record the last call wrote.
fn access(shipper: &Shipper, cap: &Capture) -> Msg {
    shipper.flush(WAIT).unwrap();
    let mut msgs = cap.take(1, WAIT);
    assert!(
        cap.drain(Duration::from_millis(200)).is_empty(),
        "one access record per call"
    );
    let m = msgs.remove(0);
    assert_eq!(m.str("logger"), ACCESS_TARGET);
    m
}

#[test]
fn tonic_calls_get_access_records_with_their_grpc_status() {
    let ex = unique("tower-tonic");
    // Access records only; h2 and tonic log their own chatter at DEBUG and TRACE.
    let cap = Capture::topic(&ex, "logstash.logcollect_tower.access");
    let shipper = Shipper::new(config(&ex).level("info").build().unwrap()).unwrap();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(LogcollectLayer::new(shipper.clone())),
    );
    // One thread runs the server, its connection tasks and the client, all
    // under this test's subscriber (a thread-local default).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(async {
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter
                .set_service_status("demo.Orders", ServingStatus::Serving)
                .await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(RequestLogLayer::new())
                    .add_service(health)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = stop_rx.await;
                        },
                    ),
            );
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = HealthClient::new(channel.clone());

            // OK: the status travels in the trailers after the message.
            let mut req = tonic::Request::new(HealthCheckRequest {
                service: "demo.Orders".into(),
            });
            req.metadata_mut()
                .insert("x-request-id", "grpc-ok-1".parse().unwrap());
            let resp = client.check(req).await.unwrap();
            assert_eq!(
                resp.get_ref().status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
            assert_eq!(resp.metadata().get("x-request-id").unwrap(), "grpc-ok-1");
            let m = access(&shipper, &cap);
            assert_eq!(m.str("request_id"), "grpc-ok-1", "{}", m.body);
            assert_eq!(m.str("method"), "POST");
            assert_eq!(m.str("path"), "/grpc.health.v1.Health/Check");
            assert_eq!(m.field("status").as_u64(), Some(200));
            assert_eq!(m.field("grpc_status").as_i64(), Some(0), "{}", m.body);
            assert_eq!(m.str("levelname"), "INFO");
            let msg = m.str("message");
            assert!(
                msg.starts_with("POST /grpc.health.v1.Health/Check 200 grpc-status 0 ")
                    && msg.ends_with("ms"),
                "{msg}"
            );

            // NOT_FOUND (5): HTTP 200 all the same; a client-side problem, WARNING.
            let err = client
                .check(HealthCheckRequest {
                    service: "demo.Unknown".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::NotFound);
            let m = access(&shipper, &cap);
            assert_eq!(m.field("status").as_u64(), Some(200));
            assert_eq!(m.field("grpc_status").as_i64(), Some(5), "{}", m.body);
            assert_eq!(m.str("levelname"), "WARNING");

            // UNIMPLEMENTED (12): a method the server does not have; ERROR.
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let err = grpc
                .unary::<HealthCheckRequest, HealthCheckResponse, _>(
                    tonic::Request::new(HealthCheckRequest::default()),
                    http::uri::PathAndQuery::from_static("/demo.Nope/Call"),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unimplemented);
            let m = access(&shipper, &cap);
            assert_eq!(m.str("path"), "/demo.Nope/Call");
            assert_eq!(m.field("grpc_status").as_i64(), Some(12), "{}", m.body);
            assert_eq!(m.str("levelname"), "ERROR");
            assert!(
                m.str("message")
                    .starts_with("POST /demo.Nope/Call 200 grpc-status 12 "),
                "{}",
                m.body
            );

            let _ = stop_tx.send(());
            server.await.unwrap().unwrap();
        })
    });
    shipper.shutdown(WAIT).unwrap();
}
