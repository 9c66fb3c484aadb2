//! Several `serve` replicas on one PostgreSQL database, end to end over real HTTP: the real
//! binary twice, on a server the test run starts itself (`src/store/pg_cluster.rs`), with the
//! periodic check set to a minute so that what reaches the other replica within seconds came
//! through the database's change notification.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pg_cluster;
use crate::server::{self, Server, ADMIN_TOKEN};

/// A replica's config: the shared registry, its own embedding cache (in its directory).
fn config(dir: &Path, registry: &Path) -> String {
    format!(
        "[learning]\nregistry = \"{}\"\ncache_dir = \"{}\"\n\n[replicas]\ncheck_every_seconds = 60\n",
        registry.display(),
        dir.join("cache").display()
    )
}

fn replica(dir: &Path, url: &str, registry: &Path) -> Server {
    server::start_full(dir, &["--database", url], &config(dir, registry), &[])
}

/// An embedding-cache entry, as a retraining leaves it: the embeddings and the tickets they
/// were made from.
fn cache_entry(dir: &Path, key: &str, tickets: &[&str]) {
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(format!("{key}.safetensors")), b"embeddings").unwrap();
    std::fs::write(
        cache.join(format!("{key}.tickets.json")),
        serde_json::to_vec(tickets).unwrap(),
    )
    .unwrap();
}

fn billing(id: &str) -> Value {
    json!({"id": id, "subject": "Refund please", "body": "You charged my card twice for the same order, I want my money back"})
}

/// Waits until `check` holds (10 s at most).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_replicas_on_one_postgresql_database_agree() {
    let url = pg_cluster::fresh_database();
    let (da, db, shared) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = replica(da.path(), &url, shared.path());
    let b = replica(db.path(), &url, shared.path());
    let both = [&a, &b];

    // Round-robin through both replicas, concurrently: billing's two agents get half each.
    let assignees: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let r = both[i % 2];
                s.spawn(move || {
                    let d = r.post("/v1/route", &billing(&format!("rr-{i}")));
                    assert_eq!(d.status, 200, "{}", d.body);
                    d.body["assignee"].as_str().unwrap().to_string()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let ann = assignees.iter().filter(|a| *a == "ann").count();
    assert_eq!((ann, assignees.len() - ann), (10, 10), "{assignees:?}");

    // One Idempotency-Key sent to both: one decision.
    let key = [("Idempotency-Key", "same-on-both")];
    let body = billing("idem-1").to_string();
    let first = a.call("POST", "/v1/route", server::ROUTE_TOKEN, Some(&body), &key);
    let again = b.call("POST", "/v1/route", server::ROUTE_TOKEN, Some(&body), &key);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(again.body["decision_id"], first.body["decision_id"]);

    // A rules change on one replica is live on the other through the notification.
    let current = a.admin("GET", "/v1/rules", None, &[]);
    let text = current.body["text"].as_str().unwrap().replace(
        "then = { team = \"sales\", status = \"open\" }",
        "then = { team = \"sales-emea\", status = \"open\" }",
    );
    let saved = a.admin(
        "PUT",
        "/v1/rules",
        Some(&json!({"text": text, "note": "EMEA"})),
        &[("If-Match", current.header["etag"].as_str())],
    );
    assert_eq!(saved.status, 200, "{}", saved.body);
    let version = saved.header["etag"].clone();
    eventually("the rules change reached the other replica", || {
        b.admin("GET", "/v1/rules", None, &[]).header["etag"] == version
    });
    let routed = b.post("/v1/route", &billing("after-change"));
    assert_eq!(routed.body["rules_version"], version.trim_matches('"'));

    // A console login on one replica works on the other.
    let login = a.call(
        "POST",
        "/console/login",
        "",
        Some(&json!({"token": ADMIN_TOKEN}).to_string()),
        &[],
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = login.header["set-cookie"]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let session = b.call("GET", "/console/session", "", None, &[("Cookie", &cookie)]);
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(session.body["csrf"], login.body["csrf"]);

    // A ticket erased through one replica leaves the other's embedding cache too.
    cache_entry(db.path(), "made-from-idem-1", &["rr-0", "idem-1"]);
    cache_entry(db.path(), "made-from-others", &["rr-0", "rr-1"]);
    let erased = a.admin("DELETE", "/v1/tickets/idem-1", None, &[]);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.body["removed"]["decisions"], 1);
    let cache_b = db.path().join("cache");
    eventually("the erasure reached the other replica's cache", || {
        !cache_b.join("made-from-idem-1.safetensors").exists()
    });
    assert!(!cache_b.join("made-from-idem-1.tickets.json").exists());
    assert!(cache_b.join("made-from-others.safetensors").exists());

    // SIGKILL one replica under load: every acknowledged decision is logged, the other replica
    // keeps serving, and the killed one catches up when it comes back.
    let acknowledged: Vec<String> = std::thread::scope(|s| {
        let load = s.spawn(|| {
            (0..40)
                .filter_map(|i| {
                    let d = a.post("/v1/route", &billing(&format!("load-a-{i}")));
                    (d.status == 200).then(|| d.body["decision_id"].as_str().unwrap().to_string())
                })
                .collect::<Vec<_>>()
        });
        let victim = s.spawn(|| {
            let mut ok = Vec::new();
            for i in 0.. {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                let r = agent
                    .post(&format!("{}/v1/route", b.base))
                    .set("Authorization", &format!("Bearer {}", server::ROUTE_TOKEN))
                    .send_string(&billing(&format!("load-b-{i}")).to_string());
                match r {
                    Ok(r) => {
                        let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
                        ok.push(v["decision_id"].as_str().unwrap().to_string());
                    }
                    Err(_) => return ok,
                }
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY-free: SIGKILL through the shell's kill, as an OOM killer would.
        std::process::Command::new("kill")
            .args(["-KILL", &b.pid().to_string()])
            .status()
            .unwrap();
        let mut all = load.join().unwrap();
        all.extend(victim.join().unwrap());
        all
    });
    assert!(
        acknowledged.len() > 40,
        "both replicas acknowledged decisions"
    );
    for id in &acknowledged {
        let logged = a.call(
            "GET",
            &format!("/v1/decisions/{id}"),
            server::ROUTE_TOKEN,
            None,
            &[],
        );
        assert_eq!(
            logged.status, 200,
            "acknowledged decision {id} is in the log"
        );
    }
    let still = a.post("/v1/route", &billing("after-kill"));
    assert_eq!(still.status, 200, "the other replica kept serving");

    // While it is down the rules change again; it comes back with them.
    let current = a.admin("GET", "/v1/rules", None, &[]);
    let text = current.body["text"]
        .as_str()
        .unwrap()
        .replace("sales-emea", "sales-apac");
    let saved = a.admin(
        "PUT",
        "/v1/rules",
        Some(&json!({"text": text})),
        &[("If-Match", current.header["etag"].as_str())],
    );
    assert_eq!(saved.status, 200, "{}", saved.body);
    drop(b);
    let b = replica(db.path(), &url, shared.path());
    assert_eq!(
        b.admin("GET", "/v1/rules", None, &[]).header["etag"],
        saved.header["etag"]
    );
    let back = b.call("GET", "/console/session", "", None, &[("Cookie", &cookie)]);
    assert_eq!(back.status, 200, "sessions outlive a replica");
}

#[test]
fn an_sqlite_database_moves_to_postgresql_with_db_copy() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("router.db");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/router-ebbae75.db"
    );
    std::fs::copy(fixture, &from).unwrap();
    let from = from.display().to_string();
    let to = pg_cluster::fresh_database();
    let (ok, out, err) = crate::common::run(&["db", "copy", "--from", &from, "--to", &to]);
    assert!(ok, "{err}");
    assert!(out.contains("| decisions | 9 |"), "{out}");
    assert!(out.contains("| rules_versions | 3 |"), "{out}");
    let (ok, _, err) = crate::common::run(&["db", "copy", "--from", &from, "--to", &to]);
    assert!(!ok);
    assert!(
        err.contains("the target database is not empty (rules_versions has 3 rows)"),
        "{err}"
    );
    // A URL of a scheme we do not serve is refused before anything is created.
    let (ok, _, err) = crate::common::run(&["serve", "--database", "mysql://root:pw@db/router"]);
    assert!(!ok);
    assert!(
        err.contains("database \"mysql://root:***@db/router\": unsupported scheme \"mysql\""),
        "{err}"
    );
}

#[test]
fn two_replicas_share_the_connectors_inbox_and_outbox() {
    use crate::common::helpdesk::Helpdesk;
    use crate::connectors::{connector, created, send};
    let desk = Helpdesk::start();
    let url = pg_cluster::fresh_database();
    let (da, db, shared) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let more = |dir: &Path| config(dir, shared.path()) + &connector("desk", &desk.base);
    let a = server::start_full(da.path(), &["--database", &url], &more(da.path()), &[]);
    let b = server::start_full(db.path(), &["--database", &url], &more(db.path()), &[]);
    // Each event to one replica, and its retry (the same delivery) to the other, at once.
    std::thread::scope(|s| {
        for i in 0..20 {
            let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let event = created(&format!("ev-{i}"), &format!("T-{i}"));
            let again = event.clone();
            s.spawn(move || assert_eq!(send(first, "desk", &event).status, 202));
            s.spawn(move || assert_eq!(send(second, "desk", &again).status, 202));
        }
    });
    let got = desk.wait_for(20, 60);
    std::thread::sleep(Duration::from_secs(2));
    let mut tickets: Vec<String> = desk
        .requests()
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["ticket_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tickets.sort();
    tickets.dedup();
    assert_eq!(
        (got.len(), desk.requests().len(), tickets.len()),
        (20, 20, 20),
        "every ticket written back once"
    );
    // One decision per ticket, whichever replica routed it.
    let all = a.admin("GET", "/v1/decisions?limit=1000", None, &[]).body;
    let decided: Vec<&str> = all["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["ticket_id"].as_str())
        .collect();
    assert_eq!(decided.len(), 20, "{decided:?}");
    let status = b.admin("GET", "/v1/connectors", None, &[]).body;
    assert_eq!(status["connectors"][0]["outbox_delivered"], 20);
    assert_eq!(status["connectors"][0]["inbox_pending"], 0);
}

#[test]
fn two_replicas_share_the_nats_consumer_and_one_dying_leaves_its_messages_to_the_other() {
    use crate::common::nats::Nats;
    use crate::nats::{decisions, metric, operator_streams, section, ticket};
    let n = Nats::start();
    operator_streams(&n, Duration::from_secs(120));
    let total: usize = 200;
    let messages: Vec<(Option<&str>, String)> = (0..total)
        .map(|i| (None, ticket(&format!("Q-{i}"))))
        .collect();
    let url = pg_cluster::fresh_database();
    let (da, db, shared) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let more = |dir: &Path| {
        config(dir, shared.path()) + &section(&n.url, "max_in_flight = 8\nmax_deliver = 10")
    };
    // Replica a commits decisions and never publishes them: killed, it leaves them in hand.
    let pause = [("INTENT_ROUTER_FAILPOINTS", "nats.publish=pause")];
    let a = server::start_full(da.path(), &["--database", &url], &more(da.path()), &pause);
    let b = server::start_full(db.path(), &["--database", &url], &more(db.path()), &[]);
    a.wait_log("NATS queue channel consuming");
    b.wait_log("NATS queue channel consuming");
    n.publish("helpdesk.tickets.created", &messages);
    a.wait_log("failpoint nats.publish reached");
    Nats::eventually("b routing", 60, || metric(&b, "routed") > 0);
    // One replica dies with messages in hand; the other is given them after ack_wait, and
    // publishes the decisions a committed.
    a.crash();
    Nats::eventually("every message handled", 120, || {
        n.stream_messages("OUTCOMES") >= total as u64
            && n.consumer_backlog("TICKETS", "intent-router") == (0, 0)
    });
    let logged = decisions(&b);
    let mut tickets: Vec<&str> = logged
        .iter()
        .map(|d| d["ticket_id"].as_str().unwrap())
        .collect();
    tickets.sort_unstable();
    tickets.dedup();
    assert_eq!((logged.len(), tickets.len()), (total, total));
    assert_eq!(n.read("OUTCOMES", "helpdesk.decisions").len(), total);
    assert!(metric(&b, "replayed") > 0);
}

/// Whether a replica took the incident watch (it logs its rebuild from the decision log).
fn watches(r: &Server) -> bool {
    r.log
        .lock()
        .unwrap()
        .contains("detector rebuilt from the decision log")
}

#[test]
fn one_replica_watches_for_incidents_and_every_replica_links_their_tickets() {
    use crate::incidents::{route, wave, CONFIG, USUAL};
    let url = pg_cluster::fresh_database();
    let (da, db, shared) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let start = |dir: &Path| {
        let config = config(dir, shared.path()) + CONFIG;
        server::start_full(dir, &["--database", &url], &config, &[])
    };
    let a = start(da.path());
    let b = start(db.path());
    eventually("a replica watches", || watches(&a) || watches(&b));
    // The periodic check is a minute: what the other replica links within seconds, it heard
    // through the database's notification.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!(watches(&a) && watches(&b)), "one watch at a time");
    let (watcher, other) = if watches(&a) { (a, b) } else { (b, a) };
    for (i, text) in USUAL.iter().enumerate() {
        route(&other, &format!("usual-{i}"), text);
    }
    // The wave reaches the replica that does not watch; its tickets join the incident there.
    let mut linked = None;
    for i in 0..80 {
        let d = route(&other, &format!("wave-{i}"), &wave(i));
        if let Some(id) = d.get("incident_id") {
            linked = Some(id.clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let incident = linked.expect("the wave opened an incident that the other replica links to");
    assert_eq!(
        route(&watcher, "wave-w", &wave(81))["incident_id"],
        incident
    );
    // The watcher dies: the other replica takes the watch over and links on.
    watcher.crash();
    // It tries every 6 checks (1 s here): a minute by default.
    other.wait_log("detector rebuilt from the decision log");
    assert_eq!(route(&other, "wave-x", &wave(82))["incident_id"], incident);
}
