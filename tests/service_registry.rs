//! The Registry service and every auth rule, against a real server.

mod service_support;

use earmark::registry::{Registry, Role};
use earmark::service::client;
use earmark::service::pb;
use service_support::*;
use tokio_stream::StreamExt;
use tonic::Code;

fn work_metadata(id: &str, holder: &str, consent: Option<pb::ConsentStatus>) -> pb::WorkMetadata {
    pb::WorkMetadata {
        work_id: id.into(),
        title: format!("Title of {id}"),
        artists: vec!["Band".into()],
        isrc: Some("GB-XYZ-24-00001".into()),
        holder: holder.into(),
        file_name: format!("{id}.ogg"),
        initial_consents: consent
            .map(|c| pb::ConsentStatement {
                scope: pb::Scope::AiTraining.into(),
                status: c.into(),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

async fn register(
    client: &mut client::RegistryClient,
    meta: pb::WorkMetadata,
    ref_id: &str,
) -> Result<pb::Work, tonic::Status> {
    let bytes = read_audio(&format!("refs/{ref_id}.ogg"));
    client
        .register_work(tokio_stream::iter(client::register_requests(meta, &bytes)))
        .await
        .map(tonic::Response::into_inner)
}

fn set_consent(id: &str, status: pb::ConsentStatus) -> pb::SetConsentRequest {
    pb::SetConsentRequest {
        work_id: id.into(),
        consent: Some(pb::ConsentStatement {
            scope: pb::Scope::AiTraining.into(),
            status: status.into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_screen_consent_remove_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &[]);
    let screener = key(&data, Role::Screener, None);
    let wesnoth = key(&data, Role::RightsHolder, Some(WESNOTH));
    let admin = key(&data, Role::Admin, None);
    let server = start(config(&data)).await;
    let mut reg = registry(&server, Some(&wesnoth)).await;
    let mut screen_client = screening(&server, Some(&screener)).await;

    // Register with streamed reference audio and initial opt-out; the next
    // screening sees it at once.
    let work = register(
        &mut reg,
        work_metadata(HEROES, "", Some(pb::ConsentStatus::OptedOut)),
        HEROES,
    )
    .await
    .unwrap();
    assert_eq!(work.holder, WESNOTH, "holder defaults to the key's");
    assert_eq!(work.isrc.as_deref(), Some("GBXYZ2400001"));
    assert!(work.reference.as_ref().unwrap().duration_s > 27.0);
    let r = screen(&mut screen_client, "submissions/excerpt-mp3.mp3")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Block);

    // Registering the same id again.
    let err = register(&mut reg, work_metadata(HEROES, WESNOTH, None), HEROES)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // Garbage reference audio.
    let err = reg
        .register_work(tokio_stream::iter(client::register_requests(
            work_metadata("junk", WESNOTH, None),
            b"definitely not audio at all, just text",
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A consent change takes effect on the next request.
    let record = reg
        .set_consent(set_consent(HEROES, pb::ConsentStatus::OptedIn))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.status(), pb::ConsentStatus::OptedIn);
    let r = screen(&mut screen_client, "submissions/excerpt-mp3.mp3")
        .await
        .unwrap();
    assert_eq!(decision(&r), pb::Decision::Allow);
    assert_eq!(r.attributions_recorded.len(), 1);

    let history = reg
        .consent_history(pb::ConsentHistoryRequest {
            work_id: HEROES.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<_> = history.records.iter().map(|r| r.status()).collect();
    assert_eq!(
        statuses,
        vec![pb::ConsentStatus::OptedOut, pb::ConsentStatus::OptedIn]
    );

    // Listing, paged.
    register(
        &mut reg,
        work_metadata(NORTHERNERS, WESNOTH, None),
        NORTHERNERS,
    )
    .await
    .unwrap();
    let page = reg
        .list_works(pb::ListWorksRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.works.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let page2 = reg
        .list_works(pb::ListWorksRequest {
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.works.len(), 1);
    assert!(page2.next_page_token.is_empty());
    let ids: Vec<_> = page
        .works
        .iter()
        .chain(&page2.works)
        .map(|w| w.work_id.as_str())
        .collect();
    assert_eq!(ids, vec![HEROES, NORTHERNERS]);

    let got = reg
        .get_work(pb::GetWorkRequest {
            work_id: HEROES.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.title, format!("Title of {HEROES}"));
    let err = reg
        .get_work(pb::GetWorkRequest {
            work_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Removal: its fingerprints stop matching at once.
    let removed = reg
        .remove_work(pb::RemoveWorkRequest {
            work_id: HEROES.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.index_generation > 0);
    let r = screen(&mut screen_client, "submissions/excerpt-mp3.mp3")
        .await
        .unwrap();
    assert!(matched_works(&r).is_empty(), "{:?}", r.verdict);

    // Audit log, streamed: the admin sees everything, in order, hash-chained.
    let mut admin_reg = registry(&server, Some(&admin)).await;
    let mut stream = admin_reg
        .audit_log(pb::AuditLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut entries = Vec::new();
    while let Some(e) = stream.next().await {
        entries.push(e.unwrap());
    }
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for wanted in [
        "key-created",
        "work-added",
        "consent-recorded",
        "work-removed",
    ] {
        assert!(actions.contains(&wanted), "{actions:?}");
    }
    assert!(entries.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    assert!(entries.iter().any(|e| e.actor.starts_with("api-key:")));
    // The rights holder sees only entries about its current works.
    let mut stream = reg
        .audit_log(pb::AuditLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    while let Some(e) = stream.next().await {
        assert_eq!(e.unwrap().subject, NORTHERNERS);
    }
    // Paging by sequence number.
    let mut stream = admin_reg
        .audit_log(pb::AuditLogRequest {
            after_seq: 2,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.seq, 3);
    assert!(stream.next().await.is_none());

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_rule() {
    let dir = tempfile::tempdir().unwrap();
    let data = seed(dir.path(), &default_seeds());
    let screener = key(&data, Role::Screener, None);
    let wesnoth = key(&data, Role::RightsHolder, Some(WESNOTH));
    let fof = key(&data, Role::RightsHolder, Some(FOF));
    let admin = key(&data, Role::Admin, None);
    let (revoked_id, revoked) = Registry::open(&data.root)
        .unwrap()
        .create_key(Role::Admin, None, "test")
        .unwrap();
    Registry::open(&data.root)
        .unwrap()
        .revoke_key(&revoked_id, "test")
        .unwrap();
    let server = start(config(&data)).await;

    // UNAUTHENTICATED: no key, malformed, unknown, revoked; on both services.
    let last = if screener.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &screener[..screener.len() - 1]);
    for k in [
        None,
        Some("not-a-key"),
        Some(forged.as_str()),
        Some(revoked.as_str()),
    ] {
        let err = screen(&mut screening(&server, k).await, "submissions/speech.ogg")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{k:?}: {err:?}");
        let err = registry(&server, k)
            .await
            .get_work(pb::GetWorkRequest {
                work_id: HEROES.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{k:?}");
    }

    // A screener may only screen.
    assert!(
        screen(
            &mut screening(&server, Some(&screener)).await,
            "submissions/speech.ogg"
        )
        .await
        .is_ok()
    );
    let mut reg = registry(&server, Some(&screener)).await;
    let err = reg
        .get_work(pb::GetWorkRequest {
            work_id: HEROES.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = reg
        .list_works(pb::ListWorksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = reg
        .set_consent(set_consent(HEROES, pb::ConsentStatus::OptedIn))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = reg
        .audit_log(pb::AuditLogRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A rights holder: not screening; its own works only.
    let err = screen(
        &mut screening(&server, Some(&wesnoth)).await,
        "submissions/speech.ogg",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut reg = registry(&server, Some(&wesnoth)).await;
    assert!(
        reg.set_consent(set_consent(NORTHERNERS, pb::ConsentStatus::OptedOut))
            .await
            .is_ok()
    );
    let err = reg
        .set_consent(set_consent(SECTOID, pb::ConsentStatus::OptedOut))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "another holder's work");
    let err = reg
        .get_work(pb::GetWorkRequest {
            work_id: SECTOID.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = reg
        .remove_work(pb::RemoveWorkRequest {
            work_id: ARMYGEDDON.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = reg
        .consent_history(pb::ConsentHistoryRequest {
            work_id: SECTOID.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = register(&mut reg, work_metadata("fof-new", FOF, None), SECTOID)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "registering for another holder"
    );
    let listed = reg
        .list_works(pb::ListWorksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut holders: Vec<_> = listed.works.iter().map(|w| w.holder.as_str()).collect();
    holders.dedup();
    assert_eq!(holders, vec![WESNOTH]);
    assert_eq!(listed.works.len(), 2);

    // The other holder can change its own work; the admin can do everything.
    let mut fof_reg = registry(&server, Some(&fof)).await;
    assert!(
        fof_reg
            .set_consent(set_consent(SECTOID, pb::ConsentStatus::OptedOut))
            .await
            .is_ok()
    );
    let mut admin_reg = registry(&server, Some(&admin)).await;
    assert!(
        admin_reg
            .set_consent(set_consent(HEROES, pb::ConsentStatus::OptedIn))
            .await
            .is_ok()
    );
    assert_eq!(
        admin_reg
            .list_works(pb::ListWorksRequest::default())
            .await
            .unwrap()
            .into_inner()
            .works
            .len(),
        4
    );
    assert!(
        admin_reg
            .remove_work(pb::RemoveWorkRequest {
                work_id: ARMYGEDDON.into()
            })
            .await
            .is_ok()
    );
    assert!(
        screen(
            &mut screening(&server, Some(&admin)).await,
            "submissions/speech.ogg"
        )
        .await
        .is_ok()
    );
    server.shutdown().await.unwrap();

    // Insecure dev mode: no key needed (and the audit log names the mode).
    let mut cfg = config(&data);
    insecure(&mut cfg);
    let server = start(cfg).await;
    let mut reg = registry(&server, None).await;
    let record = reg
        .set_consent(set_consent(HEROES, pb::ConsentStatus::OptedOut))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.asserted_by, "insecure-no-auth");
    assert!(
        screen(
            &mut screening(&server, None).await,
            "submissions/speech.ogg"
        )
        .await
        .is_ok()
    );
    server.shutdown().await.unwrap();
}
