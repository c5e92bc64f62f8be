//! Reflection and Prometheus metrics. In a test binary of its own: the
//! metrics recorder is process-global, so servers of other tests running in
//! parallel would add to (or reset) the series asserted here.

mod service_support;

use earmark::registry::Role;
use service_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

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
    let channel = earmark::client::connect(&url(&server), None).await.unwrap();
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
