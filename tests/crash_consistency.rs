//! Crash consistency: the real binary is killed with SIGKILL at many points
//! during `works add`, `works import`, `works remove`, `index compact`,
//! `consent set` and `scan --allowed`, each on a fresh copy of one seeded data
//! directory. After every kill:
//!
//! * `earmark index verify` and `earmark audit verify` pass;
//! * every registered work has fingerprints in the index (fingerprints of an
//!   interrupted registration may remain without a work until the next
//!   catalog change removes them; they are never reported);
//! * a filtered copy (`--allowed`) holds only items an uninterrupted scan
//!   allows;
//! * the same command run again completes, after which registry and index
//!   agree exactly and both checks pass again.
//!
//! Kill points are spread over the duration of an uninterrupted run of each
//! operation (measured first), half evenly and half in its last third, where
//! the writes happen. `EARMARK_CRASH_POINTS` sets the kill points per
//! operation (default 40). Also: a data directory that cannot be written
//! (read-only, or a full disk on a small tmpfs where mounting is possible)
//! gives a clear error and keeps its last good state.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use earmark::index::Index;
use earmark::registry::Registry;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_earmark");
/// Kill points per operation unless `EARMARK_CRASH_POINTS` says otherwise.
const DEFAULT_POINTS_PER_OPERATION: usize = 40;
/// Seconds of each synthetic reference tune.
const TUNE_S: f64 = 6.0;
/// Sample rate of the synthetic tunes.
const TUNE_RATE_HZ: u32 = 8_000;
/// Works registered in the seeded directory: id, tune seed, consent.
const SEEDED: &[(&str, u32, Option<&str>)] = &[
    ("w1", 11, Some("opted-out")),
    ("w2", 12, Some("opted-in")),
    ("w3", 13, None),
];

/// A tune: notes changing every 125 ms, so it has spectral peaks to match.
fn tune_wav(seconds: f64, seed: u32) -> Vec<u8> {
    let n = (seconds * f64::from(TUNE_RATE_HZ)) as u32;
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let mut freq = 440.0f64;
    let mut pcm = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        if i % (TUNE_RATE_HZ / 8) == 0 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            freq = 200.0 + f64::from(state % 3_000);
        }
        let t = f64::from(i) / f64::from(TUNE_RATE_HZ);
        let s = 0.4 * (2.0 * std::f64::consts::PI * freq * t).sin()
            + 0.2 * (2.0 * std::f64::consts::PI * freq * 1.5 * t).sin();
        pcm.extend_from_slice(&((s * 20_000.0) as i16).to_le_bytes());
    }
    let mut wav = Vec::with_capacity(44 + pcm.len());
    for chunk in [
        &b"RIFF"[..],
        &(36 + pcm.len() as u32).to_le_bytes(),
        b"WAVEfmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &1u16.to_le_bytes(),
        &TUNE_RATE_HZ.to_le_bytes(),
        &(TUNE_RATE_HZ * 2).to_le_bytes(),
        &2u16.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &(pcm.len() as u32).to_le_bytes(),
    ] {
        wav.extend_from_slice(chunk);
    }
    wav.extend_from_slice(&pcm);
    wav
}

fn earmark(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data")
        .arg(data)
        .env("EARMARK_ACTOR", "crash-test")
        .env("CI", "true")
        .env_remove("EARMARK_DATA")
        .env_remove("EARMARK_LOG")
        .stdin(Stdio::null());
    cmd
}

fn run(data: &Path, args: &[&str]) -> Output {
    earmark(data).args(args).output().expect("run earmark")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(out.status.success(), "earmark {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Inputs shared by every trial: tunes, a catalog, a folder to scan.
struct Fixture {
    _dir: TempDir,
    root: PathBuf,
    /// The seeded data directory every trial copies.
    template: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let root = dir.path().to_path_buf();
        let tunes = root.join("tunes");
        std::fs::create_dir_all(&tunes).expect("tunes dir");
        for seed in 10..30u32 {
            std::fs::write(tunes.join(format!("t{seed}.wav")), tune_wav(TUNE_S, seed))
                .expect("write tune");
        }
        let mut catalog = String::from("id,file,title,holder,consent\n");
        for i in 0..6u32 {
            catalog.push_str(&format!(
                "i{i},tunes/t{}.wav,Imported {i},Holder,opted-out\n",
                20 + i
            ));
        }
        std::fs::write(root.join("catalog.csv"), catalog).expect("catalog");
        // The scan folder: two registered tunes (w1 opted out: block; w2
        // opted in: allow), unregistered tunes (allow) and one broken file.
        let subs = root.join("subs");
        std::fs::create_dir_all(&subs).expect("subs dir");
        for (name, seed) in [("a", 11u32), ("b", 12), ("c", 26), ("d", 27), ("e", 28)] {
            std::fs::copy(
                tunes.join(format!("t{seed}.wav")),
                subs.join(format!("{name}.wav")),
            )
            .expect("copy tune");
        }
        std::fs::write(subs.join("broken.wav"), b"RIFF\x10\0\0\0WAVEfmt broken").expect("broken");

        let template = root.join("template");
        for (id, seed, consent) in std::iter::once(("w0", 10, None)).chain(SEEDED.iter().copied()) {
            let file = tunes.join(format!("t{seed}.wav"));
            let mut args = vec!["works", "add", "--id", id, file.to_str().expect("utf-8")];
            if let Some(c) = consent {
                args.extend(["--consent", c]);
            }
            run_ok(&template, &args);
        }
        // A tombstone, so compaction has something to drop.
        run_ok(&template, &["works", "remove", "w0"]);
        Self {
            _dir: dir,
            root,
            template,
        }
    }

    fn tune(&self, seed: u32) -> String {
        self.root
            .join(format!("tunes/t{seed}.wav"))
            .display()
            .to_string()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Registered and indexed work ids.
fn catalog_state(data: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let registered = Registry::open(data)
        .expect("open registry")
        .work_ids()
        .expect("work ids")
        .into_iter()
        .collect();
    let indexed = Index::open(&data.join("index"))
        .expect("open index")
        .work_ids()
        .map(str::to_owned)
        .collect();
    (registered, indexed)
}

/// The checks after a kill; returns the number of orphaned fingerprint sets.
fn check_consistent(data: &Path, context: &str) -> usize {
    let verify = run(data, &["index", "verify"]);
    assert!(
        verify.status.success(),
        "{context}: index verify: {}",
        text(&verify)
    );
    let audit = run(data, &["audit", "verify"]);
    assert!(
        audit.status.success(),
        "{context}: audit verify: {}",
        text(&audit)
    );
    let (registered, indexed) = catalog_state(data);
    let unprinted: Vec<_> = registered.difference(&indexed).collect();
    assert!(
        unprinted.is_empty(),
        "{context}: registered works without fingerprints: {unprinted:?}"
    );
    indexed.difference(&registered).count()
}

/// One operation under test.
struct Operation {
    name: &'static str,
    args: Vec<String>,
    /// Checks the state once the operation has completed.
    done: fn(&Path),
    /// Exit codes of a re-run that count as completing (besides 0), with a
    /// message the output must hold.
    rerun_ok: Option<&'static str>,
}

fn operations(fx: &Fixture, scan_dir: &Path) -> Vec<Operation> {
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let catalog = fx.root.join("catalog.csv").display().to_string();
    let subs = fx.root.join("subs").display().to_string();
    let report = scan_dir.join("report.jsonl").display().to_string();
    let allowed = scan_dir.join("clean").display().to_string();
    vec![
        Operation {
            name: "works add",
            args: s(&[
                "works",
                "add",
                "--id",
                "new",
                &fx.tune(15),
                "--consent",
                "opted-out",
            ]),
            done: |data| {
                let (registered, indexed) = catalog_state(data);
                assert!(registered.contains("new") && indexed.contains("new"));
            },
            rerun_ok: Some("already"),
        },
        Operation {
            name: "works import",
            args: s(&["works", "import", "--batch", "2", &catalog]),
            done: |data| {
                let (registered, indexed) = catalog_state(data);
                for i in 0..6 {
                    let id = format!("i{i}");
                    assert!(registered.contains(&id) && indexed.contains(&id), "{id}");
                }
            },
            rerun_ok: None,
        },
        Operation {
            name: "works remove",
            args: s(&["works", "remove", "w1"]),
            done: |data| {
                let (registered, indexed) = catalog_state(data);
                assert!(!registered.contains("w1") && !indexed.contains("w1"));
            },
            rerun_ok: Some("w1"),
        },
        Operation {
            name: "index compact",
            args: s(&["index", "compact"]),
            done: |data| {
                let stats = Index::open(&data.join("index")).expect("index").stats();
                assert_eq!(stats.segments, 1, "{stats:?}");
                assert_eq!(stats.tombstoned_works, 0, "{stats:?}");
            },
            rerun_ok: None,
        },
        Operation {
            name: "consent set",
            args: s(&[
                "consent",
                "set",
                "w3",
                "--scope",
                "ai-training",
                "--status",
                "opted-out",
            ]),
            done: |data| {
                let out = run_ok(data, &["consent", "history", "w3", "--json"]);
                assert!(out.contains("opted-out"), "{out}");
            },
            rerun_ok: None,
        },
        Operation {
            name: "scan --allowed",
            args: s(&[
                "scan",
                &subs,
                "--report",
                &report,
                "--allowed",
                &allowed,
                "--quiet",
            ]),
            done: |_| {},
            rerun_ok: None,
        },
    ]
}

/// Files in a filtered copy (relative paths).
fn listed(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            out.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Exit codes of `scan`: found something (1) or some item unscreenable (3)
/// are normal outcomes here (the folder holds a blocked and a broken item).
fn scan_finished(out: &Output) -> bool {
    matches!(out.status.code(), Some(0 | 1 | 3))
}

fn points_per_operation() -> usize {
    std::env::var("EARMARK_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_POINTS_PER_OPERATION)
}

/// Kill delays: half spread evenly over the run, half over its last third.
fn kill_delays(duration: Duration, points: usize) -> Vec<Duration> {
    let even = points / 2;
    let late = points - even;
    let mut out: Vec<Duration> = (0..even)
        .map(|i| duration.mul_f64((i as f64 + 0.5) / even as f64))
        .collect();
    out.extend((0..late).map(|i| duration.mul_f64(0.66 + 0.34 * (i as f64 + 0.5) / late as f64)));
    out
}

/// Uninterrupted runs timed to place the kill points (the median is used).
const TIMING_RUNS: usize = 3;

#[test]
fn sigkill_at_any_point_leaves_a_consistent_data_directory() {
    let fx = Fixture::new();
    let points = points_per_operation();
    let work = fx.root.join("trials");
    let scan_dir = work.join("scan");
    let ops = operations(&fx, &scan_dir);
    let mut total_kills = 0usize;
    let mut summary = Vec::new();

    // What an uninterrupted scan allows (the filtered copies' ground truth).
    let reference_data = work.join("reference");
    copy_dir(&fx.template, &reference_data);
    let reference_scan = work.join("reference-scan");
    std::fs::create_dir_all(&reference_scan).expect("scan dir");
    let reference_report = reference_scan.join("report.jsonl");
    let out = run(
        &reference_data,
        &[
            "scan",
            fx.root.join("subs").to_str().expect("utf-8"),
            "--report",
            reference_report.to_str().expect("utf-8"),
            "--allowed",
            reference_scan.join("clean").to_str().expect("utf-8"),
            "--quiet",
        ],
    );
    assert!(scan_finished(&out), "reference scan: {}", text(&out));
    let allowed_by_reference = listed(&reference_scan.join("clean"));
    let report = std::fs::read_to_string(&reference_report).expect("report");
    assert!(
        report.contains("\"block\""),
        "w1's tune must be blocked: {report}"
    );
    assert!(
        !allowed_by_reference.contains("a.wav"),
        "{allowed_by_reference:?}"
    );
    assert!(
        !allowed_by_reference.contains("broken.wav"),
        "{allowed_by_reference:?}"
    );
    assert!(
        allowed_by_reference.contains("c.wav"),
        "{allowed_by_reference:?}"
    );

    for op in &ops {
        let args: Vec<&str> = op.args.iter().map(String::as_str).collect();
        // Time uninterrupted runs.
        let mut durations = Vec::new();
        for _ in 0..TIMING_RUNS {
            let data = work.join("timing");
            let _ = std::fs::remove_dir_all(&data);
            let _ = std::fs::remove_dir_all(&scan_dir);
            std::fs::create_dir_all(&scan_dir).expect("scan dir");
            copy_dir(&fx.template, &data);
            let started = Instant::now();
            let out = run(&data, &args);
            durations.push(started.elapsed());
            assert!(
                out.status.success() || (op.name == "scan --allowed" && scan_finished(&out)),
                "{}: {}",
                op.name,
                text(&out)
            );
            (op.done)(&data);
        }
        durations.sort();
        let duration = durations[TIMING_RUNS / 2];

        let (mut interrupted, mut orphaned) = (0usize, 0usize);
        for (i, delay) in kill_delays(duration, points).into_iter().enumerate() {
            let context = format!("{} killed after {delay:?} (point {i})", op.name);
            let data = work.join("trial");
            let _ = std::fs::remove_dir_all(&data);
            let _ = std::fs::remove_dir_all(&scan_dir);
            std::fs::create_dir_all(&scan_dir).expect("scan dir");
            copy_dir(&fx.template, &data);
            let mut child = earmark(&data)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            std::thread::sleep(delay);
            // SIGKILL, by PID; the child may have finished already.
            let _ = child.kill();
            let status = child.wait().expect("wait");
            total_kills += 1;
            if !status.success() {
                interrupted += 1;
            }
            if check_consistent(&data, &context) > 0 {
                orphaned += 1;
            }
            if op.name == "scan --allowed" {
                let clean = listed(&scan_dir.join("clean"));
                assert!(
                    clean.is_subset(&allowed_by_reference),
                    "{context}: the filtered copy holds {clean:?}, an uninterrupted scan allows only {allowed_by_reference:?}"
                );
            }
            // The same command again completes the operation.
            let mut rerun_args = args.clone();
            if op.name == "scan --allowed" && scan_dir.join("report.jsonl").exists() {
                rerun_args.push("--resume");
            }
            let out = run(&data, &rerun_args);
            let completed = out.status.success()
                || (op.name == "scan --allowed" && scan_finished(&out))
                || op
                    .rerun_ok
                    .is_some_and(|m| String::from_utf8_lossy(&out.stderr).contains(m));
            assert!(completed, "{context}: re-run: {}", text(&out));
            (op.done)(&data);
            let orphans = check_consistent(&data, &format!("{context}, after the re-run"));
            if op.name.starts_with("works") {
                assert_eq!(orphans, 0, "{context}: orphans left after the re-run");
            }
            if op.name == "scan --allowed" {
                assert_eq!(
                    listed(&scan_dir.join("clean")),
                    allowed_by_reference,
                    "{context}: the resumed scan's filtered copy"
                );
            }
        }
        summary.push(format!(
            "{}: run {:.0} ms, {} kill points, {} interrupted, {} left orphaned fingerprints before the re-run",
            op.name,
            duration.as_secs_f64() * 1e3,
            points,
            interrupted,
            orphaned
        ));
    }
    eprintln!("crash consistency: {total_kills} kill points, 0 inconsistencies");
    for line in summary {
        eprintln!("  {line}");
    }
}

/// Runs `args` as an unprivileged user when the test runs as root (root
/// writes through permission bits), so a read-only directory is read-only.
fn run_unprivileged(data: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = earmark(data);
    cmd.args(args);
    if is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.output().expect("run earmark")
}

const NOBODY: u32 = 65_534;

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn set_mode_recursively(path: &Path, file_mode: u32, dir_mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).expect("metadata");
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            set_mode_recursively(&entry.path(), file_mode, dir_mode);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode)).expect("chmod");
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode)).expect("chmod");
    }
}

#[test]
fn a_read_only_data_directory_is_a_clear_error_and_keeps_its_state() {
    let fx = Fixture::new();
    let data = fx.root.join("ro");
    copy_dir(&fx.template, &data);
    let before = catalog_state(&data);
    // Everything readable by all (the unprivileged user), nothing writable.
    set_mode_recursively(&fx.root, 0o444, 0o555);
    let add = run_unprivileged(
        &data,
        &[
            "works",
            "add",
            "--id",
            "new",
            &fx.tune(15),
            "--consent",
            "opted-out",
        ],
    );
    let remove = run_unprivileged(&data, &["works", "remove", "w1"]);
    let compact = run_unprivileged(&data, &["index", "compact"]);
    let consent = run_unprivileged(
        &data,
        &[
            "consent",
            "set",
            "w3",
            "--scope",
            "ai-training",
            "--status",
            "opted-out",
        ],
    );
    set_mode_recursively(&fx.root, 0o644, 0o755);
    for (what, out) in [
        ("works add", &add),
        ("works remove", &remove),
        ("index compact", &compact),
        ("consent set", &consent),
    ] {
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("read-only, {what}: {}", stderr.trim());
        assert!(
            stderr.contains(&data.display().to_string())
                && (stderr.contains("ermission denied")
                    || stderr.contains("read-only")
                    || stderr.contains("readonly")),
            "{what}: the error must name the data directory and the reason: {stderr}"
        );
    }
    assert_eq!(
        catalog_state(&data),
        before,
        "a refused write changed the catalog"
    );
    check_consistent(&data, "after writes to a read-only directory");
    run_ok(&data, &["works", "add", "--id", "new", &fx.tune(15)]);
    check_consistent(&data, "after a write once writable again");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size_kib: u64) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_the_last_good_state() {
    const DISK_KIB: u64 = 4_096;
    let fx = Fixture::new();
    let mount_point = fx.root.join("disk");
    let Some(_mount) = Mount::tmpfs(&mount_point, DISK_KIB) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)");
        return;
    };
    let data = mount_point.join("data");
    copy_dir(&fx.template, &data);
    let before = catalog_state(&data);
    // Fill the disk, leaving less room than a new segment needs.
    let filler = mount_point.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0xA5u8; 4_096];
        while file.write_all(&block).is_ok() {}
    }
    let add = run(
        &data,
        &[
            "works",
            "add",
            "--id",
            "new",
            &fx.tune(15),
            "--consent",
            "opted-out",
        ],
    );
    let import = run(
        &data,
        &[
            "works",
            "import",
            fx.root.join("catalog.csv").to_str().expect("utf-8"),
        ],
    );
    for (what, out) in [("works add", &add), ("works import", &import)] {
        assert!(!out.status.success(), "{what} succeeded on a full disk");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("full disk, {what}: {}", stderr.trim());
        assert!(
            stderr.contains("No space left") || stderr.contains("full"),
            "{what}: the error must say the disk is full: {stderr}"
        );
    }
    // Free the space: nothing was half-written, and the writes now succeed.
    std::fs::remove_file(&filler).expect("remove filler");
    assert_eq!(
        catalog_state(&data),
        before,
        "a failed write changed the catalog"
    );
    assert_eq!(check_consistent(&data, "after a full disk"), 0);
    run_ok(&data, &["works", "add", "--id", "new", &fx.tune(15)]);
    check_consistent(&data, "after a write once space was freed");
}
