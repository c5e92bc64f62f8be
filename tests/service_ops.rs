//! Operations: health transitions, reflection, Prometheus metrics, graceful
//! shutdown with a request in flight.

mod service_support;

use std::time::Duration;

use earmark::index::IndexWriter;
use earmark::registry::Role;
use earmark::service::pb;
use service_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn health(
    server: &earmark::service::ServerHandle,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let channel = earmark::service::client::connect(&url(server), None)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(r.into_inner().status())
}

async fn wait_health(server: &earmark::service::ServerHandle, want: ServingStatus) {
    let ok = tokio::time::timeout(READY_TIMEOUT, async {
        while health(server, "").await.ok() != Some(want) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "health never became {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_transitions_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &default_seeds()[..1]);
    let screener = key(&data, Role::Screener, None);

    // Another process holds the index write lock: the server listens but is
    // NOT_SERVING, and calls are UNAVAILABLE with a retry hint.
    let lock = IndexWriter::open(&data.index_dir()).unwrap();
    let mut cfg = config(&data);
    cfg.drain_grace = Duration::from_millis(500);
    let server = start_unready(cfg).await;
    assert_eq!(
        health(&server, "").await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(
        health(&server, "earmark.v1.Screening").await.unwrap(),
        ServingStatus::NotServing
    );
    let mut client = screening(&server, Some(&screener)).await;
    let err = screen(&mut client, "submissions/speech.ogg")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Lock released: the server opens the data directory and serves.
    drop(lock);
    wait_health(&server, ServingStatus::Serving).await;
    assert_eq!(
        health(&server, "earmark.v1.Registry").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health(&server, "no.such.Service").await.unwrap_err().code(),
        Code::NotFound
    );
    // While it runs, the CLI cannot write to the same data directory.
    assert!(IndexWriter::open(&data.index_dir()).is_err());

    // Shutdown with a request in flight: health goes NOT_SERVING during the
    // drain, the in-flight request completes, then the listener closes.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Metadata(metadata(
            "late.mp3",
            pb::Scope::AiTraining,
        ))),
    })
    .await
    .unwrap();
    let mut late_client = screening(&server, Some(&screener)).await;
    let in_flight = tokio::spawn(async move {
        late_client
            .screen(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.trigger_shutdown();
    wait_health(&server, ServingStatus::NotServing).await;
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Chunk(read_audio(
            "submissions/excerpt-mp3.mp3",
        ))),
    })
    .await
    .unwrap();
    drop(tx);
    let r = in_flight
        .await
        .unwrap()
        .expect("in-flight request finished")
        .into_inner();
    assert_eq!(decision(&r), pb::Decision::Block);
    let addr = server.local_addr();
    tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("server stopped")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_services_and_metrics_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &default_seeds()[..1]);
    let screener = key(&data, Role::Screener, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = earmark::service::start(config(&data), listener, Some(metrics_listener))
        .await
        .unwrap();
    assert!(server.wait_ready(READY_TIMEOUT).await);

    // Reflection: a generic client discovers every service and can fetch the
    // descriptors of the earmark ones.
    let channel = earmark::service::client::connect(&url(&server), None)
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "earmark.v1.Screening".into(),
            )),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "earmark.v1.Registry.AuditLog".into(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut services = Vec::new();
    let mut descriptor_files = 0;
    while let Some(r) = responses.next().await {
        match r.unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                services = list.service.into_iter().map(|s| s.name).collect();
            }
            Some(MessageResponse::FileDescriptorResponse(fd)) => {
                assert!(!fd.file_descriptor_proto.is_empty());
                descriptor_files += 1;
            }
            other => panic!("unexpected reflection response {other:?}"),
        }
    }
    for wanted in [
        "earmark.v1.Screening",
        "earmark.v1.Registry",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.iter().any(|s| s == wanted),
            "{wanted} not in {services:?}"
        );
    }
    assert_eq!(descriptor_files, 2);

    // Some traffic, then scrape.
    let mut client = screening(&server, Some(&screener)).await;
    screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .unwrap();
    let _ = screen(
        &mut screening(&server, None).await,
        "submissions/speech.ogg",
    )
    .await;
    let text = scrape(server.metrics_addr().unwrap()).await;
    for wanted in [
        r#"earmark_grpc_requests_total{method="Screen",code="OK"} 1"#,
        r#"earmark_grpc_requests_total{method="Screen",code="UNAUTHENTICATED"} 1"#,
        "earmark_grpc_request_duration_seconds_bucket",
        r#"earmark_verdicts_total{decision="block"} 1"#,
        "earmark_audio_seconds_screened_total 10",
        "earmark_index_works 1",
        "earmark_ready 1",
    ] {
        assert!(text.contains(wanted), "{wanted} missing from:\n{text}");
    }
    server.shutdown().await.unwrap();
}

/// GET /metrics over plain HTTP/1.1.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}
