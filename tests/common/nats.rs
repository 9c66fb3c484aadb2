//! A real `nats-server` with JetStream for the queue channel's tests: started on a random port
//! with its store in a temporary directory (optionally with a password and TLS), stopped when
//! dropped; and a small blocking client to publish tickets and read what we published.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;

/// The server binary (Debian's `nats-server` package).
const SERVER: &str = "nats-server";

/// A running server.
pub struct Nats {
    child: Child,
    /// How it was started (to start it again on the same port and store).
    args: Vec<std::ffi::OsString>,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    /// Its temporary directory (store, certificates), removed when dropped.
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    /// `(user, password)` when it requires them.
    login: Option<(String, String)>,
    /// The CA that signed its certificate, when it speaks TLS.
    pub ca: Option<PathBuf>,
}

/// A message read back from a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its subject.
    pub subject: String,
    /// Its headers (first value of each).
    pub headers: std::collections::HashMap<String, String>,
    /// Its body.
    pub body: String,
}

impl Nats {
    /// A plain server.
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    /// A server requiring `login` and, with `tls`, TLS with a certificate from a throwaway CA.
    pub fn start_with(login: Option<(&str, &str)>, tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(SERVER);
        cmd.args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(dir.path());
        if let Some((user, pass)) = login {
            cmd.args(["--user", user, "--pass", pass]);
        }
        let mut ca = None;
        if tls {
            let certs = dir.path().join("tls");
            crate::pg_cluster::make_certificates(&certs).unwrap();
            cmd.arg("--tls")
                .arg("--tlscert")
                .arg(certs.join("server.pem"))
                .arg("--tlskey")
                .arg(certs.join("server.key"));
            ca = Some(certs.join("ca.pem"));
        }
        let child = spawn(&mut cmd);
        let url = wait_for_port(dir.path(), child.id());
        let port = url.rsplit(':').next().unwrap().to_string();
        let args = cmd
            .get_args()
            .map(|a| {
                if a == "-1" {
                    port.clone().into()
                } else {
                    a.to_os_string()
                }
            })
            .collect();
        let url = if tls {
            url.replace("nats://", "tls://")
        } else {
            url
        };
        Self {
            child,
            args,
            url,
            _dir: dir,
            runtime: tokio::runtime::Runtime::new().unwrap(),
            login: login.map(|(u, p)| (u.to_string(), p.to_string())),
            ca,
        }
    }

    /// A JetStream context on a fresh connection.
    async fn js(&self) -> jetstream::Context {
        let mut options = async_nats::ConnectOptions::new();
        if let Some((u, p)) = &self.login {
            options = options.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        jetstream::new(options.connect(&self.url).await.unwrap())
    }

    /// Runs a future on the helper's runtime.
    pub fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// Creates a file-backed stream over `subjects` (deduplicating within `window`).
    pub fn stream(&self, name: &str, subjects: &[&str], window: Duration) {
        self.block(async {
            self.js()
                .await
                .create_stream(stream::Config {
                    name: name.into(),
                    subjects: subjects.iter().map(|s| s.to_string()).collect(),
                    duplicate_window: window,
                    ..Default::default()
                })
                .await
                .unwrap();
        });
    }

    /// Publishes one body with the given headers on `subject`, waiting for the ack.
    pub fn publish_with_headers(
        &self,
        subject: &str,
        headers: &std::collections::HashMap<String, String>,
        body: &str,
    ) {
        self.block(async {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(k.as_str(), v.as_str());
            }
            self.js()
                .await
                .publish_with_headers(subject.to_string(), map, body.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }

    /// Publishes bodies on `subject` (with `Nats-Msg-Id` where given), waiting for each ack.
    pub fn publish(&self, subject: &str, messages: &[(Option<&str>, String)]) {
        self.block(async {
            let js = self.js().await;
            for (id, body) in messages {
                let mut headers = HeaderMap::new();
                if let Some(id) = id {
                    headers.insert("Nats-Msg-Id", *id);
                }
                js.publish_with_headers(subject.to_string(), headers, body.clone().into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        });
    }

    /// Every message of `stream` on `subject`, in order.
    pub fn read(&self, stream: &str, subject: &str) -> Vec<Stored> {
        self.block(async {
            let js = self.js().await;
            let s = js.get_stream(stream).await.unwrap();
            let consumer = s
                .create_consumer(pull::Config {
                    filter_subject: subject.into(),
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut out = Vec::new();
            loop {
                let mut batch = consumer.fetch().max_messages(500).messages().await.unwrap();
                let mut got = 0;
                while let Some(m) = batch.next().await {
                    let m = m.unwrap();
                    got += 1;
                    out.push(Stored {
                        subject: m.subject.to_string(),
                        headers: m
                            .headers
                            .iter()
                            .flat_map(|h| h.iter())
                            .map(|(k, v)| {
                                let k: &str = k.as_ref();
                                (k.to_string(), v[0].as_str().to_string())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&m.payload).into_owned(),
                    });
                }
                if got == 0 {
                    return out;
                }
            }
        })
    }

    /// How many messages `stream` holds.
    pub fn stream_messages(&self, stream: &str) -> u64 {
        self.block(async {
            let js = self.js().await;
            let mut s = js.get_stream(stream).await.unwrap();
            s.info().await.unwrap().state.messages
        })
    }

    /// `(pending, waiting for an ack)` of a consumer.
    pub fn consumer_backlog(&self, stream: &str, consumer: &str) -> (u64, usize) {
        self.block(async {
            let js = self.js().await;
            let mut c: jetstream::consumer::PullConsumer = js
                .get_stream(stream)
                .await
                .unwrap()
                .get_consumer(consumer)
                .await
                .unwrap();
            let info = c.info().await.unwrap();
            (info.num_pending, info.num_ack_pending)
        })
    }

    /// Polls `check` every 100 ms until it holds (panics with `what` after `secs`).
    pub fn eventually(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("never happened: {what}");
    }
}

impl Nats {
    /// Stops the server and starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut cmd = Command::new(SERVER);
        cmd.args(&self.args);
        self.child = spawn(&mut cmd);
        let port = self.url.rsplit(':').next().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(Instant::now() < deadline, "{SERVER} did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts the server, quiet.
fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{SERVER} does not start ({e}): apt-get install -y nats-server"))
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client URL the server wrote into its ports file (`nats-server_<pid>.ports`).
fn wait_for_port(dir: &Path, pid: u32) -> String {
    let file = dir.join(format!("{SERVER}_{pid}.ports"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(url) = v["nats"][0].as_str() {
                    return url.to_string();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{SERVER} wrote no ports file in {}", dir.display());
}
