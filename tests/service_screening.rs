//! Screening over gRPC against a real server on a loopback port: verdicts on
//! real clips, client-side fingerprints, garbage input, limits, load shedding
//! and cancelled calls.

mod service_support;

use std::time::Duration;

use earmark::fingerprint::file::FingerprintFile;
use earmark::proto as pb;
use earmark::registry::Role;
use service_support::*;
use tonic::Code;
use tonic_types::StatusExt;

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_on_real_clips_and_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &default_seeds());
    let screener = key(&data, Role::Screener, None);
    let server = start(config(&data)).await;
    let mut client = screening(&server, Some(&screener)).await;

    // Block: an opted-out work, under noise and MP3.
    let r = screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Block, "{:?}", r.verdict);
    assert_eq!(matched_works(&r), vec![HEROES]);
    assert!(r.attributions_recorded.is_empty());
    let audio = r.audio.as_ref().unwrap();
    assert!((audio.duration_s - 10.0).abs() < 0.5, "{audio:?}");
    assert_eq!(audio.sha256.len(), 64);
    // The JSON document is the CLI's verdict.
    let json: serde_json::Value = serde_json::from_str(&r.verdict_json).unwrap();
    assert_eq!(json["decision"], "block");
    assert_eq!(json["evidence"][0]["work_id"], HEROES);
    assert_eq!(
        r.verdict.as_ref().unwrap().submission_id,
        format!("sha256:{}", audio.sha256)
    );
    assert!(!r.request_id.is_empty());

    // Allow with an attribution: an opted-in work, pitched up.
    let r = screen(&mut client, "submissions/pitched.ogg")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Allow, "{:?}", r.verdict);
    assert_eq!(matched_works(&r), vec![SECTOID]);
    assert_eq!(r.attributions_recorded.len(), 1);
    assert_eq!(r.attributions_recorded[0].work_id, SECTOID);
    assert_eq!(r.new_ledger_entries, 1);
    // The ledger is idempotent per submission.
    let again = screen(&mut client, "submissions/pitched.ogg")
        .await
        .unwrap();
    assert_eq!(again.new_ledger_entries, 0);

    // Flag: an opted-in and an unknown-consent work in one mix.
    let r = screen(&mut client, "submissions/mix-two-works.ogg")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Flag, "{:?}", r.verdict);
    assert_eq!(matched_works(&r), vec![ARMYGEDDON, NORTHERNERS]);
    assert!(
        r.attributions_recorded.is_empty(),
        "flagged: attributed after review"
    );

    // Allow: nothing registered in it.
    let r = screen(&mut client, "submissions/unrelated.ogg")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Allow);
    assert!(matched_works(&r).is_empty());

    // ScreenFingerprints: same verdict, no audio sent.
    let fp = FingerprintFile::from_audio(&audio_path("submissions/speed.wav"), &Default::default())
        .unwrap();
    let r = client
        .screen_fingerprints(tokio_stream::iter(fp.requests(pb::Scope::AiTraining, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision(&r), pb::Decision::Block);
    assert_eq!(matched_works(&r), vec![HEROES]);
    assert_eq!(
        r.audio.as_ref().unwrap().prints,
        fp.fingerprint.prints.len() as u64
    );

    // A fingerprint made with another config is refused with details.
    let mut wrong = fp.requests(pb::Scope::AiTraining, "");
    if let Some(pb::screen_fingerprints_request::Part::Header(h)) = &mut wrong[0].part {
        h.config_id ^= 1;
    }
    let err = client
        .screen_fingerprints(tokio_stream::iter(wrong))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.get_details_precondition_failure().is_some());

    // Prints whose anchor frames lie outside the declared length are refused
    // (a far-away frame would make the matcher's histograms huge).
    let mut hostile = fp.requests(pb::Scope::AiTraining, "");
    if let Some(pb::screen_fingerprints_request::Part::Prints(b)) = &mut hostile[1].part {
        b.t_frames[0] = u32::MAX;
    }
    let err = client
        .screen_fingerprints(tokio_stream::iter(hostile))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let bad = err.get_details_bad_request().expect("BadRequest details");
    assert_eq!(bad.field_violations[0].field, "prints.t_frames");
    // A declared length over the duration limit is refused up front.
    let mut long = fp.requests(pb::Scope::AiTraining, "");
    if let Some(pb::screen_fingerprints_request::Part::Header(h)) = &mut long[0].part {
        h.frames = u64::from(u32::MAX);
    }
    let err = client
        .screen_fingerprints(tokio_stream::iter(long))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Garbage bytes are INVALID_ARGUMENT with a reason, and the server carries on.
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = screen_bytes(
        &mut client,
        metadata("noise.mp3", pb::Scope::AiTraining),
        &garbage,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        ["UNSUPPORTED_FORMAT", "UNDECODABLE_AUDIO", "EMPTY_AUDIO"].contains(&reason(&err).as_str()),
        "{err:?}"
    );
    // The message names the input and says what is wrong with it.
    assert!(err.message().contains("noise.mp3"), "{}", err.message());
    assert!(
        ["not a recognised audio format", "corrupt", "no audio"]
            .iter()
            .any(|m| err.message().contains(m)),
        "{}",
        err.message()
    );
    let bad = err.get_details_bad_request().expect("BadRequest details");
    assert_eq!(bad.field_violations[0].field, "audio");
    assert!(err.get_details_request_info().is_some());
    // Plain text is not audio either.
    let err = screen_bytes(
        &mut client,
        metadata("notes.txt", pb::Scope::AiTraining),
        b"these are my meeting notes, not an audio file at all",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(reason(&err), "UNSUPPORTED_FORMAT", "{err:?}");
    assert!(err.message().contains("notes.txt"), "{}", err.message());
    let err = screen(&mut client, "formats/bad/truncated.ogg")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Missing purpose.
    let err = screen_bytes(
        &mut client,
        metadata("x.ogg", pb::Scope::Unspecified),
        &read_audio("submissions/speech.ogg"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.get_details_bad_request().is_some());

    server.shutdown().await.unwrap();
}

fn audio_path(rel: &str) -> std::path::PathBuf {
    audio(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_shedding_and_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &[]);
    let mut cfg = config(&data);
    insecure(&mut cfg);
    cfg.limits.max_upload_bytes = 150_000;
    cfg.limits.max_audio_s = 12.0;
    cfg.limits.max_in_flight = 1;
    cfg.limits.max_uploads = 1;
    let server = start(cfg).await;
    let mut client = screening(&server, None).await;

    // Over the byte limit: refused while streaming, with quota details.
    let err = screen(&mut client, "submissions/speed.wav")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(reason(&err), "UPLOAD_TOO_LARGE");
    assert!(err.get_details_quota_failure().is_some());
    // Declared too large: refused before any byte.
    let mut meta = metadata("big.wav", pb::Scope::AiTraining);
    meta.total_bytes = 1 << 40;
    let err = screen_bytes(&mut client, meta, b"x").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // One message over the message size limit.
    let huge = vec![0u8; 5 * 1024 * 1024];
    let requests = vec![
        pb::ScreenRequest {
            part: Some(pb::screen_request::Part::Metadata(metadata(
                "h.wav",
                pb::Scope::AiTraining,
            ))),
        },
        pb::ScreenRequest {
            part: Some(pb::screen_request::Part::Chunk(huge)),
        },
    ];
    let err = client
        .screen(tokio_stream::iter(requests))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Over the duration limit (15 s > 12 s).
    let err = screen(&mut client, "submissions/unrelated.ogg")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(reason(&err), "AUDIO_TOO_LONG");
    // Within limits: fine.
    let r = screen(&mut client, "submissions/pitched.ogg")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Allow);

    // Load shedding: one upload being received; a second is refused at
    // once, not queued.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Metadata(metadata(
            "slow.ogg",
            pb::Scope::AiTraining,
        ))),
    })
    .await
    .unwrap();
    let mut slow_client = screening(&server, None).await;
    let slow = tokio::spawn(async move {
        slow_client
            .screen(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    // Let it take the upload slot (it then waits for its audio, holding it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let t0 = std::time::Instant::now();
            match screen(&mut client, "submissions/pitched.ogg").await {
                Err(e) if e.code() == Code::ResourceExhausted => return (e, t0.elapsed()),
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    })
    .await
    .expect("second request shed");
    // Refused at once (the held slot stays busy until we send its audio, so a
    // queued request would still be waiting).
    let (shed, took) = shed;
    assert!(took < Duration::from_secs(1), "shedding took {took:?}");
    assert_eq!(reason(&shed), "OVERLOADED");
    assert!(shed.get_details_retry_info().is_some());
    assert!(
        server
            .stats()
            .uploads_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // Finish the slow upload; it succeeds.
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Chunk(read_audio(
            "submissions/speech.ogg",
        ))),
    })
    .await
    .unwrap();
    drop(tx);
    let r = slow.await.unwrap().unwrap().into_inner();
    assert_eq!(decision(&r), pb::Decision::Allow);
    server.shutdown().await.unwrap();

    // Per-connection limit: one call at a time per connection; a second call
    // on the same connection is shed, another connection is served.
    let mut cfg = config(&data);
    insecure(&mut cfg);
    cfg.limits.per_connection = 1;
    let server = start(cfg).await;
    let channel = earmark::client::connect(&url(&server), None).await.unwrap();
    let client_on = |channel: tonic::transport::Channel| {
        earmark::client::screening(channel, None, CLIENT_MAX_MESSAGE).unwrap()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Metadata(metadata(
            "held.ogg",
            pb::Scope::AiTraining,
        ))),
    })
    .await
    .unwrap();
    let mut holder = client_on(channel.clone());
    let held = tokio::spawn(async move {
        holder
            .screen(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = std::time::Instant::now();
    let err = screen(&mut client_on(channel.clone()), "submissions/pitched.ogg")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let other = screen(
        &mut screening(&server, None).await,
        "submissions/pitched.ogg",
    )
    .await
    .unwrap();
    assert_eq!(decision(&other), pb::Decision::Allow);
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Chunk(read_audio(
            "submissions/speech.ogg",
        ))),
    })
    .await
    .unwrap();
    drop(tx);
    assert!(held.await.unwrap().is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_call_abandons_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &default_seeds()[..1]);
    let mut cfg = config(&data);
    insecure(&mut cfg);
    let server = start(cfg).await;
    let mut client = screening(&server, None).await;
    // Forty minutes of noise: uploaded in a fraction of a second, fingerprinted in
    // seconds even by a fast build (the deadline must fall while the job runs).
    let bytes = noise_wav(2_400, 8_000);

    // The caller gives up (deadline) while the audio is being fingerprinted.
    // How long the job takes depends on the machine: a deadline the job
    // beats is halved and the call made again.
    let mut abandoned = Err(());
    for deadline_ms in [700, 350, 175, 90] {
        let mut request = tonic::Request::new(tokio_stream::iter(client_requests(&bytes)));
        request.set_timeout(Duration::from_millis(deadline_ms));
        let err = match client.screen(request).await {
            Ok(_) => continue,
            Err(err) => err,
        };
        assert!(
            matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{err:?}"
        );
        abandoned = tokio::time::timeout(Duration::from_secs(10), async {
            while server
                .stats()
                .abandoned
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .map_err(|_| ());
        break;
    }
    assert!(abandoned.is_ok(), "the server did not abandon the job");

    // A dropped call (client goes away mid-upload) leaves the server healthy.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ScreenRequest {
        part: Some(pb::screen_request::Part::Metadata(metadata(
            "gone.ogg",
            pb::Scope::AiTraining,
        ))),
    })
    .await
    .unwrap();
    let mut gone_client = screening(&server, None).await;
    let call = tokio::spawn(async move {
        gone_client
            .screen(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    drop(tx);
    let r = screen(&mut client, "submissions/excerpt-mp3.mp3")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Block);

    server.shutdown().await.unwrap();
}

fn client_requests(bytes: &[u8]) -> Vec<pb::ScreenRequest> {
    earmark::client::screen_requests(metadata("noise.wav", pb::Scope::AiTraining), bytes)
}
