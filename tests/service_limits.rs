//! Service limits under hostile clients, on the loopback: a stalled upload
//! and a trickling upload are cut, streams that never send do not exhaust the
//! CPU pool, and a flood of parallel streams keeps the upload and CPU limits
//! (every call ends, with a verdict or a clear refusal).

mod service_support;

use std::time::Duration;

use earmark::proto as pb;
use service_support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Longest any call of these tests may take before the test fails.
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// A data directory with one registered work, opted out of AI training.
fn one_work(dir: &std::path::Path) -> earmark::data_dir::DataDir {
    seed(
        dir,
        &[Seed {
            id: HEROES,
            holder: WESNOTH,
            consent: Some(earmark::registry::ConsentStatus::OptedOut),
        }],
    )
}

fn metadata_message(name: &str) -> pb::ScreenRequest {
    pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Metadata(metadata(
            name,
            pb::Scope::AiTraining,
        ))),
    }
}

fn chunk_message(bytes: Vec<u8>) -> pb::ScreenRequest {
    pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Chunk(bytes)),
    }
}

/// Opens a `Screen` call that sends its metadata and then whatever the
/// returned sender sends; the call's result arrives on the join handle.
async fn open_upload(
    server: &earmark::service::ServerHandle,
) -> (
    mpsc::Sender<pb::ScreenRequest>,
    tokio::task::JoinHandle<Result<pb::ScreenResponse, tonic::Status>>,
) {
    let mut client = screening(server, None).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(metadata_message("stalled.ogg"))
        .await
        .expect("send");
    let call = tokio::spawn(async move {
        client
            .screen(ReceiverStream::new(rx))
            .await
            .map(tonic::Response::into_inner)
    });
    (tx, call)
}

async fn ends(
    call: tokio::task::JoinHandle<Result<pb::ScreenResponse, tonic::Status>>,
) -> Result<pb::ScreenResponse, tonic::Status> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .expect("the call ended")
        .expect("the call's task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_cut_after_the_idle_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = one_work(dir.path());
    let mut config = config(&data);
    insecure(&mut config);
    config.limits.upload_idle = Duration::from_millis(400);
    let server = start(config).await;

    let (tx, call) = open_upload(&server).await;
    tx.send(chunk_message(vec![0u8; 1024])).await.expect("send");
    // Then nothing, with the stream held open.
    let status = ends(call).await.expect_err("a stalled upload must fail");
    drop(tx);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("no data for 400ms"), "{status:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upload_is_cut_after_the_upload_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = one_work(dir.path());
    let mut config = config(&data);
    insecure(&mut config);
    config.limits.upload_idle = Duration::from_secs(2);
    config.limits.max_upload_time = Duration::from_millis(1_500);
    let server = start(config).await;

    let (tx, call) = open_upload(&server).await;
    // One byte every 100 ms: never idle, never done.
    let trickle = tokio::spawn(async move {
        while tx.send(chunk_message(vec![0u8])).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let status = ends(call).await.expect_err("a trickle must fail");
    trickle.abort();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("still arriving after 1.5s"),
        "{status:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_never_send_do_not_exhaust_the_pool() {
    const MAX_IN_FLIGHT: usize = 2;
    const MAX_UPLOADS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let data = one_work(dir.path());
    let mut config = config(&data);
    insecure(&mut config);
    config.limits.max_in_flight = MAX_IN_FLIGHT;
    config.limits.max_uploads = MAX_UPLOADS;
    config.limits.upload_idle = Duration::from_secs(3);
    let server = start(config).await;

    // More silent streams than CPU slots, one upload slot left free.
    let mut idle = Vec::new();
    for _ in 0..MAX_UPLOADS - 1 {
        idle.push(open_upload(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut client = screening(&server, None).await;
    let response = tokio::time::timeout(
        CALL_LIMIT,
        screen(&mut client, "submissions/excerpt-mp3.mp3"),
    )
    .await
    .expect("in time")
    .expect("a real screening goes through while silent streams are open");
    assert_eq!(decision(&response), pb::Decision::Block);
    assert!(
        server
            .stats()
            .peak_uploads
            .load(std::sync::atomic::Ordering::Relaxed)
            >= MAX_UPLOADS - 1
    );

    // All upload slots taken: one more upload is refused at once, and calls
    // that are not uploads still work.
    let last = open_upload(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio::time::timeout(
        CALL_LIMIT,
        screen(&mut client, "submissions/excerpt-mp3.mp3"),
    )
    .await
    .expect("in time")
    .expect_err("no upload slot is left");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("uploads already in progress"),
        "{refused:?}"
    );
    let mut registry = registry(&server, None).await;
    registry
        .get_work(pb::GetWorkRequest {
            work_id: HEROES.into(),
        })
        .await
        .expect("a unary call is not an upload");

    // The silent streams are cut at the idle time, which frees their slots.
    for (tx, call) in idle.into_iter().chain(std::iter::once(last)) {
        let status = ends(call).await.expect_err("silent stream cut");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        drop(tx);
    }
    let response = screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .expect("slots are free again");
    assert_eq!(decision(&response), pb::Decision::Block);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_parallel_streams_keeps_the_limits() {
    use std::sync::atomic::Ordering::Relaxed;
    const MAX_IN_FLIGHT: usize = 2;
    const MAX_UPLOADS: usize = 4;
    const LEGIT: usize = 24;
    const OVERSIZED: usize = 8;
    const MAX_UPLOAD_BYTES: u64 = 1 << 20;
    const CHUNKS: usize = 8;
    const CHUNK_GAP: Duration = Duration::from_millis(15);
    let dir = tempfile::tempdir().unwrap();
    let data = one_work(dir.path());
    let mut config = config(&data);
    insecure(&mut config);
    config.limits.max_in_flight = MAX_IN_FLIGHT;
    config.limits.max_uploads = MAX_UPLOADS;
    config.limits.max_upload_bytes = MAX_UPLOAD_BYTES;
    let server = start(config).await;
    let clip = read_audio("submissions/excerpt-mp3.mp3");
    let oversized = vec![0u8; MAX_UPLOAD_BYTES as usize + 4096];

    // Every upload arrives in chunks a few milliseconds apart, so the
    // streams overlap and compete for the upload slots.
    let mut calls = Vec::new();
    for i in 0..LEGIT + OVERSIZED {
        let mut client = screening(&server, None).await;
        let bytes = if i < LEGIT {
            clip.clone()
        } else {
            oversized.clone()
        };
        calls.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(async move {
                let _ = tx.send(metadata_message("flood.mp3")).await;
                for chunk in bytes.chunks(bytes.len().div_ceil(CHUNKS)) {
                    tokio::time::sleep(CHUNK_GAP).await;
                    if tx.send(chunk_message(chunk.to_vec())).await.is_err() {
                        break;
                    }
                }
            });
            let call = client.screen(ReceiverStream::new(rx));
            tokio::time::timeout(CALL_LIMIT, call)
                .await
                .map(|r| r.map(tonic::Response::into_inner))
        }));
    }
    let (mut blocked, mut shed, mut too_large) = (0, 0, 0);
    for (i, call) in calls.into_iter().enumerate() {
        let result = call.await.expect("task").expect("every call ends in time");
        match result {
            Ok(response) if i < LEGIT => {
                assert_eq!(decision(&response), pb::Decision::Block);
                blocked += 1;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                if status.message().contains("exceeds") || status.message().contains("limit of") {
                    too_large += 1;
                } else {
                    shed += 1;
                }
            }
            other => panic!("call {i}: unexpected outcome {other:?}"),
        }
    }
    let stats = server.stats();
    eprintln!(
        "flood: {blocked} screened, {shed} refused (slots), {too_large} over the size limit; \
         peak uploads {}, peak admitted jobs {}, uploads refused {}, jobs shed {}",
        stats.peak_uploads.load(Relaxed),
        stats.peak_admitted.load(Relaxed),
        stats.uploads_refused.load(Relaxed),
        stats.shed.load(Relaxed)
    );
    assert!(blocked > 0, "some legitimate calls must get through");
    assert!(stats.peak_uploads.load(Relaxed) <= MAX_UPLOADS);
    assert!(stats.peak_admitted.load(Relaxed) <= MAX_IN_FLIGHT);
    assert!(
        stats.uploads_refused.load(Relaxed) > 0,
        "the flood must reach the upload limit"
    );
    assert_eq!(blocked + shed + too_large, LEGIT + OVERSIZED);
    // The server is still healthy afterwards.
    let mut client = screening(&server, None).await;
    let response = screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .expect("after the flood");
    assert_eq!(decision(&response), pb::Decision::Block);
    server.shutdown().await.unwrap();
}
