//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary
//! directory, the server on a free loopback port (its socket directory inside
//! the temporary directory), run as an unprivileged user (`nobody` when the
//! tests run as root: the server refuses root). Stopped by its PID, and its
//! directory removed, when the [`PgCluster`] is dropped; the server also gets
//! SIGQUIT if the thread that started it ends first (`setpriv --pdeathsig`).
//!
//! The server binaries come from `$EARMARK_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package, installed by
//! `scripts/setup.sh`), else `PATH`. Without them the tests that need a
//! server are skipped with a message, unless `EARMARK_REQUIRE_POSTGRES=1`
//! (set by `.ci/run`), which turns the absence into a failure.
//!
//! Shared by the library's unit tests and the integration tests (included
//! with `#[path]`); std and the `postgres` client only.

#![allow(dead_code)] // each includer uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the directory of the server binaries.
pub const PG_BIN_ENV: &str = "EARMARK_PG_BIN";
/// Environment variable that makes missing server binaries a test failure.
pub const REQUIRE_ENV: &str = "EARMARK_REQUIRE_POSTGRES";
/// The cluster's superuser.
const SUPERUSER: &str = "postgres";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Unprivileged account the server runs as when the tests run as root.
const UNPRIVILEGED_USER: &str = "nobody";

static DATABASES: AtomicU32 = AtomicU32::new(0);

/// A running throwaway cluster.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    server: Option<Child>,
}

/// The directory holding `initdb`, `postgres` and `pg_isready`, if any.
pub fn server_binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
    })
}

/// Whether missing server binaries must fail the tests.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// A started cluster, or `None` (with a message) when the binaries are
/// absent and not [`required`].
pub fn start_or_skip(test: &str) -> Option<PgCluster> {
    match server_binaries() {
        Some(bin) => Some(PgCluster::start(&bin)),
        None if required() => panic!(
            "{test}: PostgreSQL server binaries not found (set {PG_BIN_ENV} or run scripts/setup.sh); \
             {REQUIRE_ENV}=1 makes this a failure"
        ),
        None => {
            eprintln!(
                "{test}: skipped: PostgreSQL server binaries not found (scripts/setup.sh installs them)"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command running `program` as the unprivileged user when root, with
/// SIGQUIT to it when the calling thread ends.
fn unprivileged(program: &Path, root: bool) -> Command {
    let mut cmd = Command::new("setpriv");
    if root {
        cmd.args([
            "--reuid",
            UNPRIVILEGED_USER,
            "--regid",
            "nogroup",
            "--clear-groups",
        ]);
    }
    cmd.args(["--pdeathsig", "QUIT"]).arg(program);
    cmd
}

impl PgCluster {
    /// `initdb` and start a server; panics with the server's log on failure.
    pub fn start(bin: &Path) -> Self {
        let root = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("earmark-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = dir.join("data");
        if root {
            let chown = Command::new("chown")
                .args([&format!("{UNPRIVILEGED_USER}:nogroup")])
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(chown.success(), "chown of {}", dir.display());
        }
        let out = unprivileged(&bin.join("initdb"), root)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cluster = Self {
            dir,
            bin: bin.to_owned(),
            port: free_port(),
            server: None,
        };
        cluster.start_server();
        cluster
    }

    /// Starts the server on the cluster's port (again, after [`stop`]).
    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "server already running");
        let root = running_as_root();
        let log = std::fs::File::create(self.dir.join("server.log")).expect("server log");
        let child = unprivileged(&self.bin.join("postgres"), root)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.server = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(status) = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits
    /// for it to exit; the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SIGINT: fast shutdown.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Restarts the server with TLS on (`ssl = on`), presenting `cert_pem`
    /// (its chain) and `key_pem`.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.stop();
        let data = self.dir.join("data");
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, text).expect("writing the server's TLS files");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("key file mode");
            if running_as_root() {
                let chown = Command::new("chown")
                    .arg(format!("{UNPRIVILEGED_USER}:nogroup"))
                    .arg(&path)
                    .status()
                    .expect("chown runs");
                assert!(chown.success(), "chown of {}", path.display());
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str("\nssl = on\n");
        std::fs::write(&conf, text).expect("postgresql.conf");
        self.start_server();
    }

    /// The temporary directory holding data, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// PID of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connecting to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a test database");
        self.url(&name)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SIGQUIT: immediate shutdown; the data is thrown away anyway.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
