//! A real PostgreSQL server for tests: one cluster per test process, a fresh database per call.
//!
//! Starting a cluster takes a second or two, so the first call to [`fresh_database`] creates a
//! throwaway cluster (in a temporary directory, on a free port of 127.0.0.1, trust
//! authentication, durability off) and every later call in the same process reuses it; each
//! call gets its own empty database, so tests never see each other's rows.
//!
//! The server binaries are taken from `/usr/lib/postgresql/<version>/bin` (Debian's layout,
//! not on `PATH`; the highest version wins). PostgreSQL refuses to run as root, and CI runs as
//! root: then the directory is handed to the `postgres` user and the server tools run through
//! `runuser -u postgres --`.
//!
//! Statics are never dropped, so a detached watchdog shell stops the server and removes its
//! directory once the test process is gone, however it ended (panics included). It has its
//! own process group (Ctrl-C does not kill it) and no handle on the test's stdout/stderr (so
//! `cargo test` does not wait for it).
//!
//! Only `std` is used: the file is also included by integration tests with `#[path]`.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const NOT_INSTALLED: &str = "PostgreSQL is not installed: apt-get install -y postgresql \
     (the tests start their own server; see README)";

/// Where Debian/Ubuntu install the server binaries, one folder per major version.
const INSTALL_ROOT: &str = "/usr/lib/postgresql";

/// The operating-system user the server runs as when the tests run as root, and its superuser.
const SERVER_USER: &str = "postgres";

/// The one role that must log in with a password (SCRAM), to test passwords end to end; every
/// other connection is trusted.
pub const PASSWORD_ROLE: &str = "router_pw";

/// Tries at starting the server, each on a new port, when the chosen port got taken meanwhile.
const START_ATTEMPTS: usize = 5;

/// Lines of the server log quoted when the server does not start.
const LOG_TAIL_LINES: usize = 30;

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty database on the test run's PostgreSQL cluster: its `postgres://` URL.
pub fn fresh_database() -> String {
    let cluster = cluster();
    let name = database_name();
    cluster.create_database(&name);
    format!("postgres://{SERVER_USER}@127.0.0.1:{}/{name}", cluster.port)
}

/// The certificate authority that signed the test cluster's TLS certificate (for `localhost`
/// and 127.0.0.1): connect with `sslmode=verify-full&sslrootcert=<this>`.
pub fn ca_certificate() -> PathBuf {
    cluster().tls_dir().join("ca.pem")
}

/// The test process's cluster, started on first use (panics with why it could not start).
fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(cluster) => cluster,
        Err(message) => panic!("{message}"),
    }
}

/// Whether PostgreSQL's server binaries are installed (tests may use it to print a clear message).
pub fn installed() -> bool {
    bin_dir().is_some()
}

/// The running cluster: its binaries, its temporary directory and its port.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_root: bool,
}

impl Cluster {
    /// Creates the directory, the watchdog, the cluster, and starts the server.
    fn start() -> Result<Cluster, String> {
        let bin = bin_dir().ok_or_else(|| NOT_INSTALLED.to_string())?;
        let as_root = is_root();
        let dir = make_temp_dir()?;
        let mut cluster = Cluster {
            bin,
            dir,
            port: 0,
            as_root,
        };
        cluster.spawn_watchdog()?;
        cluster.make_certificates()?;
        if as_root {
            let owner = format!("{SERVER_USER}:{SERVER_USER}");
            run(
                Command::new("chown").arg("-R").arg(owner).arg(&cluster.dir),
                "chown",
            )?;
        }
        cluster.init()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// Certificates in [`Cluster::tls_dir`], so the server also speaks TLS.
    fn make_certificates(&self) -> Result<(), String> {
        make_certificates(&self.tls_dir())
    }

    /// A server tool (`initdb`, `pg_ctl`, `createdb`), through `runuser` when running as root.
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_root {
            let mut command = Command::new(runuser());
            command.args(["-u", SERVER_USER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    /// Runs `initdb` for a UTF-8, C-locale cluster with a trusted `postgres` superuser, and
    /// asks [`PASSWORD_ROLE`] for its password.
    fn init(&self) -> Result<(), String> {
        let mut command = self.tool("initdb");
        command.arg("-D").arg(self.data_dir()).args([
            "-U",
            SERVER_USER,
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(&mut command, "initdb")?;
        let hba = self.data_dir().join("pg_hba.conf");
        let rest = fs::read_to_string(&hba).map_err(|e| format!("{}: {e}", hba.display()))?;
        let first = format!(
            "host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\nhost all {PASSWORD_ROLE} ::1/128 scram-sha-256\n"
        );
        fs::write(&hba, first + &rest).map_err(|e| format!("{}: {e}", hba.display()))
    }

    /// Starts the server on a free port, trying another port when the chosen one got taken.
    fn start_server(&mut self) -> Result<(), String> {
        let mut failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let log_start = fs::metadata(self.log_file()).map_or(0, |m| m.len());
            let output = self.pg_ctl_start(port)?;
            if output.status.success() {
                self.port = port;
                return Ok(());
            }
            let log = read_from(&self.log_file(), log_start);
            failure = format!(
                "pg_ctl start failed ({}): {}\nserver log ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log_file().display(),
                tail(&log, LOG_TAIL_LINES),
            );
            if !port_taken(&log) {
                break;
            }
        }
        Err(failure)
    }

    /// `pg_ctl start` (waiting until it accepts connections) on `port`, with durability off.
    fn pg_ctl_start(&self, port: u16) -> Result<Output, String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=200 -c ssl=on -c ssl_cert_file={tls}/server.pem \
             -c ssl_key_file={tls}/server.key",
            self.dir.display(),
            tls = self.tls_dir().display(),
        );
        let mut command = self.tool("pg_ctl");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-o", &options, "start"]);
        // Its own process group: Ctrl-C on `cargo test` leaves the server to the watchdog.
        command.process_group(0);
        command
            .output()
            .map_err(|e| format!("could not run pg_ctl: {e}"))
    }

    /// Creates the database `name` (owned by `postgres`).
    fn create_database(&self, name: &str) {
        let port = self.port.to_string();
        let mut command = self.tool("createdb");
        command.args(["-h", "127.0.0.1", "-p", &port, "-U", SERVER_USER, name]);
        if let Err(message) = run(&mut command, "createdb") {
            panic!("could not create test database {name}: {message}");
        }
    }

    /// Starts the detached shell that stops the server and removes the directory once this
    /// process is gone.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(self.watchdog_script())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        command
            .spawn()
            .map(drop)
            .map_err(|e| format!("could not start the cleanup watchdog: {e}"))
    }

    /// The watchdog's shell script: poll this process, then `pg_ctl stop` and `rm -rf`.
    fn watchdog_script(&self) -> String {
        let runuser_prefix = if self.as_root {
            format!(
                "{} -u {SERVER_USER} -- ",
                quote(&runuser().display().to_string())
            )
        } else {
            String::new()
        };
        format!(
            "trap '' HUP INT\n\
             while kill -0 {pid} 2>/dev/null; do sleep 0.5; done\n\
             {runuser_prefix}{pg_ctl} -D {data} stop -m immediate -w >/dev/null 2>&1\n\
             rm -rf {dir}\n",
            pid = std::process::id(),
            pg_ctl = quote(&self.bin.join("pg_ctl").display().to_string()),
            data = quote(&self.data_dir().display().to_string()),
            dir = quote(&self.dir.display().to_string()),
        )
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that holds `initdb` and `pg_ctl`.
fn bin_dir() -> Option<PathBuf> {
    let entries = fs::read_dir(INSTALL_ROOT).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            let complete = ["initdb", "pg_ctl", "createdb"]
                .iter()
                .all(|b| bin.join(b).is_file());
            complete.then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// A version folder's name as numbers (`15` → `[15]`, `9.6` → `[9, 6]`); `None` otherwise.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Whether this process's effective user is root (from `/proc/self/status`, else `id -u`).
fn is_root() -> bool {
    let from_proc = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
            // Real, effective, saved, filesystem.
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        });
    from_proc.unwrap_or_else(|| {
        Command::new("id")
            .arg("-u")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
    })
}

/// `runuser`, from `/usr/sbin` or `/sbin` when present (often not on a non-root `PATH`).
fn runuser() -> PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// A new, empty directory under the system's temporary directory, named after this process.
fn make_temp_dir() -> Result<PathBuf, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("pg-test-{}-{nanos}-{count}", std::process::id());
    let dir = std::env::temp_dir().join(name);
    fs::create_dir(&dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("could not find a free port: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("could not read the free port: {e}"))?;
    Ok(port.port())
}

/// `t_<counter>_<random hex>`: unique within the process, unlikely to repeat across runs.
fn database_name() -> String {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one((count, std::process::id())) & 0xffff_ffff;
    format!("t_{count}_{random:08x}")
}

/// Runs `command` to completion; its output, or an error naming `what` with its stderr.
fn run(command: &mut Command, what: &str) -> Result<Output, String> {
    command.stdin(Stdio::null());
    let output = command
        .output()
        .map_err(|e| format!("could not run {what}: {e}"))?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    Err(format!(
        "{what} failed ({}): {} {}",
        output.status,
        stderr.trim(),
        stdout.trim()
    ))
}

/// Whether a server log says its port was in use.
fn port_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("already in use")
}

/// The contents of `path` from byte `offset` on (empty when unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `text` single-quoted for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A throwaway certificate authority (`ca.pem`) and a server certificate it signed for
/// `localhost` and 127.0.0.1 (`server.pem`, `server.key`; elliptic-curve keys: quick to make)
/// in `tls`, made with `openssl`.
pub fn make_certificates(tls: &Path) -> Result<(), String> {
    fs::create_dir_all(tls).map_err(|e| format!("{}: {e}", tls.display()))?;
    fs::write(
        tls.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .map_err(|e| format!("{}: {e}", tls.display()))?;
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [&[&str]; 3] = [
        &[
            &["req", "-x509"][..],
            &key[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3",
                "-subj",
                "/CN=intent-router test CA",
            ][..],
        ]
        .concat(),
        &[
            &["req"][..],
            &key[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ][..],
        ]
        .concat(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3",
            "-extfile",
            "san.ext",
        ],
    ];
    for args in steps {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(tls).stdin(Stdio::null());
        run(&mut command, "openssl (apt-get install -y openssl)")?;
    }
    let mut chmod = Command::new("chmod");
    chmod.arg("600").arg(tls.join("server.key"));
    run(&mut chmod, "chmod").map(drop)
}
