//! The Registry service and every auth rule, against a real server.

mod service_support;

use earmark::client;
use earmark::proto as pb;
use earmark::registry::{Registry, Role};
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

/// Every method of both services, for the auth matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Screen,
    ScreenFingerprints,
    RegisterWork,
    SetConsent,
    GetWork,
    ListWorks,
    RemoveWork,
    ConsentHistory,
    AuditLog,
}

const ALL_METHODS: [Method; 9] = [
    Method::Screen,
    Method::ScreenFingerprints,
    Method::RegisterWork,
    Method::SetConsent,
    Method::GetWork,
    Method::ListWorks,
    Method::RemoveWork,
    Method::ConsentHistory,
    Method::AuditLog,
];

/// Wraps `message` with `authorization: <value>` (the raw header value, so
/// malformed schemes can be sent too).
fn authorized<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

/// Calls `method` with the raw `authorization` value on `work` (or, for
/// RegisterWork, a new work `work` of `holder`); returns OK or the code.
async fn attempt(
    server: &earmark::service::ServerHandle,
    authorization: Option<&str>,
    method: Method,
    work: &str,
    holder: &str,
    prints: &earmark::fingerprint::file::FingerprintFile,
) -> Code {
    let mut screen = screening(server, None).await;
    let mut reg = registry(server, None).await;
    let auth = authorization;
    let result: Result<(), tonic::Status> = match method {
        Method::Screen => {
            let requests = client::screen_requests(
                metadata("speech.ogg", pb::Scope::AiTraining),
                &read_audio("submissions/speech.ogg"),
            );
            screen
                .screen(authorized(tokio_stream::iter(requests), auth))
                .await
                .map(drop)
        }
        Method::ScreenFingerprints => screen
            .screen_fingerprints(authorized(
                tokio_stream::iter(prints.requests(pb::Scope::AiTraining, "")),
                auth,
            ))
            .await
            .map(drop),
        Method::RegisterWork => {
            let requests = client::register_requests(
                work_metadata(work, holder, Some(pb::ConsentStatus::OptedOut)),
                &read_audio(&format!("refs/{HEROES}.ogg")),
            );
            reg.register_work(authorized(tokio_stream::iter(requests), auth))
                .await
                .map(drop)
        }
        Method::SetConsent => reg
            .set_consent(authorized(
                set_consent(work, pb::ConsentStatus::OptedIn),
                auth,
            ))
            .await
            .map(drop),
        Method::GetWork => reg
            .get_work(authorized(
                pb::GetWorkRequest {
                    work_id: work.into(),
                },
                auth,
            ))
            .await
            .map(drop),
        Method::ListWorks => reg
            .list_works(authorized(pb::ListWorksRequest::default(), auth))
            .await
            .map(drop),
        Method::RemoveWork => reg
            .remove_work(authorized(
                pb::RemoveWorkRequest {
                    work_id: work.into(),
                },
                auth,
            ))
            .await
            .map(drop),
        Method::ConsentHistory => reg
            .consent_history(authorized(
                pb::ConsentHistoryRequest {
                    work_id: work.into(),
                },
                auth,
            ))
            .await
            .map(drop),
        Method::AuditLog => match reg
            .audit_log(authorized(pb::AuditLogRequest::default(), auth))
            .await
        {
            Ok(r) => {
                let mut stream = r.into_inner();
                let mut result = Ok(());
                while let Some(entry) = stream.next().await {
                    if let Err(e) = entry {
                        result = Err(e);
                        break;
                    }
                }
                result
            }
            Err(e) => Err(e),
        },
    };
    result.map_or_else(|s| s.code(), |()| Code::Ok)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
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
    let prints = earmark::fingerprint::file::FingerprintFile::from_audio(
        &audio("submissions/speech.ogg"),
        &Default::default(),
    )
    .unwrap();

    // UNAUTHENTICATED on every method: no key, another scheme, malformed,
    // forged (right id, wrong secret), revoked.
    let last = if admin.ends_with('0') { '1' } else { '0' };
    let forged = bearer(&format!("{}{last}", &admin[..admin.len() - 1]));
    let basic = format!("Basic {admin}");
    let revoked = bearer(&revoked);
    for auth in [
        None,
        Some(basic.as_str()),
        Some("Bearer not-a-key"),
        Some(forged.as_str()),
        Some(revoked.as_str()),
    ] {
        for method in ALL_METHODS {
            let code = attempt(&server, auth, method, NORTHERNERS, WESNOTH, &prints).await;
            assert_eq!(code, Code::Unauthenticated, "{method:?} with {auth:?}");
        }
    }

    // The matrix. Rights holder = Wesnoth; "own" work NORTHERNERS (Wesnoth),
    // "other" work SECTOID (Frets on Fire). RegisterWork registers a new work
    // for the named holder; RemoveWork removes what that row registered.
    use Code::{Ok as OK, PermissionDenied as DENIED};
    let (screener_h, wesnoth_h, admin_h) = (bearer(&screener), bearer(&wesnoth), bearer(&admin));
    struct Row<'a> {
        who: &'a str,
        auth: &'a str,
        work: &'a str,
        holder: &'a str,
        new_work: &'a str,
        // Screen, ScreenFingerprints, RegisterWork, SetConsent, GetWork,
        // ListWorks, RemoveWork, ConsentHistory, AuditLog
        expect: [Code; 9],
    }
    let rows = [
        Row {
            who: "screener",
            auth: &screener_h,
            work: NORTHERNERS,
            holder: WESNOTH,
            new_work: "by-screener",
            expect: [
                OK, OK, DENIED, DENIED, DENIED, DENIED, DENIED, DENIED, DENIED,
            ],
        },
        Row {
            who: "rights holder, another holder's work",
            auth: &wesnoth_h,
            work: SECTOID,
            holder: FOF,
            new_work: "wesnoth-for-fof",
            // ListWorks and AuditLog are allowed, filtered (checked below).
            expect: [
                DENIED, DENIED, DENIED, DENIED, DENIED, OK, DENIED, DENIED, OK,
            ],
        },
        Row {
            who: "rights holder, own work",
            auth: &wesnoth_h,
            work: NORTHERNERS,
            holder: WESNOTH,
            new_work: "wesnoth-new",
            expect: [DENIED, DENIED, OK, OK, OK, OK, OK, OK, OK],
        },
        Row {
            who: "admin, any holder's work",
            auth: &admin_h,
            work: SECTOID,
            holder: FOF,
            new_work: "admin-for-fof",
            expect: [OK, OK, OK, OK, OK, OK, OK, OK, OK],
        },
    ];
    for row in &rows {
        for (method, want) in ALL_METHODS.into_iter().zip(row.expect) {
            // A successful RemoveWork removes what this row registered; a
            // refused one targets the row's existing work.
            let work = match (method, want) {
                (Method::RegisterWork, _) | (Method::RemoveWork, OK) => row.new_work,
                _ => row.work,
            };
            let code = attempt(&server, Some(row.auth), method, work, row.holder, &prints).await;
            assert_eq!(code, want, "{}: {method:?} {work}", row.who);
        }
    }

    // Denied calls changed nothing: the other holder's work keeps its one
    // consent record, the denied registrations do not exist, and the audit log
    // holds no entry by the screener's key.
    let mut admin_reg = registry(&server, Some(&admin)).await;
    let history = admin_reg
        .consent_history(pb::ConsentHistoryRequest {
            work_id: SECTOID.into(),
        })
        .await
        .unwrap()
        .into_inner();
    // The seed's opt-in, then the admin's row; never the rights holder's.
    assert_eq!(history.records.len(), 2, "{history:?}");
    assert!(
        history
            .records
            .iter()
            .all(|r| !r.asserted_by.contains(WESNOTH)),
        "{history:?}"
    );
    for denied in ["by-screener", "wesnoth-for-fof"] {
        let err = admin_reg
            .get_work(pb::GetWorkRequest {
                work_id: denied.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{denied}");
    }
    let mut entries = admin_reg
        .audit_log(pb::AuditLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    let screener_id = screener
        .trim_start_matches("emk_")
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    while let Some(e) = entries.next().await {
        let e = e.unwrap();
        assert!(!e.actor.contains(&screener_id), "{e:?}");
    }

    // A rights holder's listings are filtered to its own works.
    let mut reg = registry(&server, Some(&wesnoth)).await;
    let listed = reg
        .list_works(pb::ListWorksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.works.iter().map(|w| w.work_id.as_str()).collect();
    assert_eq!(ids, vec![HEROES, NORTHERNERS], "wesnoth-new was removed");
    let mut entries = reg
        .audit_log(pb::AuditLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    while let Some(e) = entries.next().await {
        let subject = e.unwrap().subject;
        assert!(
            [HEROES, NORTHERNERS].contains(&subject.as_str()),
            "{subject}"
        );
    }

    // The other holder can change its own work; the admin sees every work.
    let mut fof_reg = registry(&server, Some(&fof)).await;
    assert!(
        fof_reg
            .set_consent(set_consent(SECTOID, pb::ConsentStatus::OptedOut))
            .await
            .is_ok()
    );
    let all = admin_reg
        .list_works(pb::ListWorksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.works.len(), 4, "admin-for-fof was removed again");
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
