//! Operations: health transitions, graceful shutdown with a request in flight
//! (in process, and `earmark serve` receiving SIGTERM), TLS and mutual TLS.
//! Reflection and metrics are in `service_metrics.rs`.

mod service_support;

use std::time::Duration;

use earmark::index::IndexWriter;
use earmark::proto as pb;
use earmark::registry::Role;
use service_support::*;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(
    server: &earmark::service::ServerHandle,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    health_at(&url(server), service).await
}

async fn health_at(url: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = earmark::client::connect(url, None)
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
    wait_health_at(&url(server), want).await;
}

async fn wait_health_at(url: &str, want: ServingStatus) {
    let ok = tokio::time::timeout(READY_TIMEOUT, async {
        while health_at(url, "").await.ok() != Some(want) {
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

/// A CA, a server certificate for `localhost` and a client certificate, all
/// made here with rcgen: (ca_pem, server (cert, key), client (cert, key)).
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "earmark test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("screening-client", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn tls_client(pki: &Pki, with_identity: bool) -> earmark::client::ClientTls {
    earmark::client::ClientTls {
        ca: Some(pki.ca.clone().into_bytes()),
        identity: with_identity.then(|| {
            (
                pki.client.0.clone().into_bytes(),
                pki.client.1.clone().into_bytes(),
            )
        }),
        domain: Some("localhost".into()),
    }
}

/// Screens a clip over `url` with `tls`; the connection error or status code
/// on failure.
async fn screen_over(
    url: &str,
    tls: Option<&earmark::client::ClientTls>,
    key: &str,
) -> Result<pb::Decision, String> {
    let channel = earmark::client::connect(url, tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = earmark::client::screening(channel, Some(key), CLIENT_MAX_MESSAGE)
        .map_err(|e| e.to_string())?;
    screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .map(|r| decision(&r))
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &default_seeds()[..1]);
    let screener = key(&data, Role::Screener, None);
    let pki = make_pki();

    // Server-authenticated TLS.
    let mut cfg = config(&data);
    cfg.tls = Some(earmark::service::TlsPem {
        cert: pki.server.0.clone().into_bytes(),
        key: pki.server.1.clone().into_bytes(),
        client_ca: None,
    });
    let server = start(cfg).await;
    let https = format!("https://{}", server.local_addr());
    assert_eq!(
        screen_over(&https, Some(&tls_client(&pki, false)), &screener).await,
        Ok(pb::Decision::Block)
    );
    // A plaintext client cannot talk to the TLS server.
    let plain = format!("http://{}", server.local_addr());
    assert!(screen_over(&plain, None, &screener).await.is_err());
    // A client that does not trust the server's CA refuses it.
    let mut stranger = tls_client(&pki, false);
    stranger.ca = Some(make_pki().ca.into_bytes());
    assert!(
        screen_over(&https, Some(&stranger), &screener)
            .await
            .is_err()
    );
    server.shutdown().await.unwrap();

    // Mutual TLS: the client must present a certificate from the client CA.
    let mut cfg = config(&data);
    cfg.tls = Some(earmark::service::TlsPem {
        cert: pki.server.0.clone().into_bytes(),
        key: pki.server.1.clone().into_bytes(),
        client_ca: Some(pki.ca.clone().into_bytes()),
    });
    let server = start(cfg).await;
    let https = format!("https://{}", server.local_addr());
    assert!(
        screen_over(&https, Some(&tls_client(&pki, false)), &screener)
            .await
            .is_err(),
        "no client certificate"
    );
    let other = make_pki();
    let mut forged = tls_client(&pki, false);
    forged.identity = Some((other.client.0.into_bytes(), other.client.1.into_bytes()));
    assert!(
        screen_over(&https, Some(&forged), &screener).await.is_err(),
        "client certificate from another CA"
    );
    assert_eq!(
        screen_over(&https, Some(&tls_client(&pki, true)), &screener).await,
        Ok(pb::Decision::Block)
    );
    // The API key is still required on top of the certificate.
    let err = screen_over(&https, Some(&tls_client(&pki, true)), "emk_no_key")
        .await
        .unwrap_err();
    assert!(err.starts_with("Unauthenticated"), "{err}");
    server.shutdown().await.unwrap();
}

/// `earmark serve` as a process: SIGTERM turns health NOT_SERVING, lets the
/// in-flight request finish, and exits 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &default_seeds()[..1]);
    let screener = key(&data, Role::Screener, None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_earmark"))
        .arg("--data")
        .arg(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--drain-seconds",
            "1",
            "--workers",
            "2",
        ])
        .env_remove("EARMARK_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Collect the log; report the listening address.
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("earmark gRPC server listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(str::to_owned);
                let _ = addr_tx.send(addr);
            }
            lines.push(line);
        }
        lines
    });
    let addr = addr_rx
        .recv_timeout(READY_TIMEOUT)
        .expect("server logged its address")
        .expect("addr= in the log line");
    let url = format!("http://{addr}");
    wait_health_at(&url, ServingStatus::Serving).await;

    // A request in flight: metadata sent, audio held back.
    let channel = earmark::client::connect(&url, None).await.unwrap();
    let mut client =
        earmark::client::screening(channel, Some(&screener), CLIENT_MAX_MESSAGE).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Metadata(metadata(
            "late.mp3",
            pb::Scope::AiTraining,
        ))),
    })
    .await
    .unwrap();
    let in_flight = tokio::spawn(async move {
        client
            .screen(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_health_at(&url, ServingStatus::NotServing).await;
    assert!(child.try_wait().unwrap().is_none(), "still draining");

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
        .expect("the in-flight request finished after SIGTERM")
        .into_inner();
    assert_eq!(decision(&r), pb::Decision::Block);

    let exit = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("server exited after the drain");
    assert!(exit.success(), "{exit:?}");
    let lines = log.join().unwrap();
    let text = lines.join("\n");
    for wanted in [
        "termination signal received",
        "health NOT_SERVING",
        "server stopped",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in the log:\n{text}");
    }
    // One structured line per request: id, method, code, verdict, latency.
    let done = lines
        .iter()
        .find(|l| l.contains("request done") && l.contains("method=\"Screen\""))
        .unwrap_or_else(|| panic!("no request line in:\n{text}"));
    for field in [
        "request_id=",
        "code=\"OK\"",
        "verdict=\"block\"",
        "latency_ms=",
    ] {
        assert!(done.contains(field), "{field} not in {done}");
    }
}
