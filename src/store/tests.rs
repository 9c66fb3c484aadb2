//! The store's tests, each run on both backends (SQLite in a temporary directory, PostgreSQL
//! on the test run's own cluster: `pg_cluster`), and the invariants that several replicas on
//! one PostgreSQL database rely on, with two `Store`s racing on one database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::assign::{self, AssignmentPolicy, Pick};
use crate::rules::Assignee;
use crate::ticket::Customer;

/// A fresh database of each backend (the temporary directory lives as long as the test).
async fn both() -> (tempfile::TempDir, Vec<(DatabaseUrl, Store)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for url in [
        DatabaseUrl::Sqlite(dir.path().join("db/router.db")),
        DatabaseUrl::Postgres(pg_cluster::fresh_database()),
    ] {
        let store = Store::open(&url).await.unwrap();
        out.push((url, store));
    }
    (dir, out)
}

fn decision(id: &str, team: &str, strategy: Assignee) -> NewDecision {
    NewDecision {
        decision_id: id.into(),
        ticket_id: format!("t-{id}"),
        received_at: Utc::now(),
        intent: "billing.refund".into(),
        confidence: 0.9,
        language: "en".into(),
        team: Some(team.into()),
        strategy: Some(strategy),
        assignee: None,
        assignment_note: None,
        status: "open".into(),
        priority: "normal".into(),
        model_version: "m1".into(),
        rules_version: 1,
        channel: Some("email".into()),
        language_given: None,
        kept: Some(KeptTicket {
            subject: None,
            body: format!("body {id}"),
            customer: Customer {
                tier: Some("vip".into()),
            },
            fields: Some([("plan".to_string(), serde_json::json!({"seats": 5}))].into()),
        }),
        vector: None,
        incident: None,
    }
}

fn policy(team: &str, agents: &[&str]) -> AssignmentPolicy {
    AssignmentPolicy {
        rosters: [(
            team.to_string(),
            agents.iter().map(|a| a.to_string()).collect(),
        )]
        .into_iter()
        .collect(),
        close_after: None,
    }
}

/// Logs decisions as the route service does: teams locked, assignment step, one row each,
/// commit; returns the answer (each decision's JSON: its id and assignee) or the first one
/// replayed.
async fn record(
    store: &Store,
    items: &mut [NewDecision],
    idempotency: Option<(&str, &str)>,
    policy: &AssignmentPolicy,
) -> Vec<String> {
    let teams: BTreeSet<String> = items.iter().filter_map(|d| d.team.clone()).collect();
    let mut tx = match store
        .begin_decisions(idempotency, &teams, policy.close_after)
        .await
        .unwrap()
    {
        DecisionLog::Replay(first) => return first.decisions,
        DecisionLog::Open(tx) => tx,
    };
    let mut each = Vec::new();
    for d in items.iter_mut() {
        let (team, strategy) = (d.team.clone().unwrap(), d.strategy.clone().unwrap());
        match assign::assign(&mut tx, policy, &d.decision_id, &team, &strategy)
            .await
            .unwrap()
        {
            Some(Pick::Agent(a)) => d.assignee = Some(a),
            Some(Pick::Unassigned(why)) => d.assignment_note = Some(why),
            None => {}
        }
        let json =
            serde_json::json!({"decision_id": d.decision_id, "assignee": d.assignee}).to_string();
        tx.insert_decision(d, &json).await.unwrap();
        each.push(json);
    }
    match tx.commit(each.len() > 1).await.unwrap() {
        Some(first) => first.decisions,
        None => each,
    }
}

#[tokio::test]
async fn migrates_once_and_keeps_rules_history_with_conflicts() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        assert!(store.current_rules().await.unwrap().is_none(), "{url}");
        let v1 = store
            .save_rules("a", "h1", "seed", "first", Some(0), None)
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
        let err = store
            .save_rules("b", "h2", "ann", "", Some(0), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    expected: 0,
                    current: 1
                }
            ),
            "{url}: {err}"
        );
        store
            .save_rules("b", "h2", "ann", "", Some(1), None)
            .await
            .unwrap();
        let version = store.schema_version().await.unwrap();
        store.close().await;
        // Reopening applies no migration twice and keeps everything.
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), version);
        let history = store.rules_history().await.unwrap();
        assert_eq!(
            history.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(
            store.rules_version(1).await.unwrap(),
            v1,
            "{url}: read back as saved"
        );
        assert!(matches!(
            store.rules_version(9).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn threshold_edits_are_numbered_per_model_with_conflicts_and_read_back() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let none = store.current_thresholds("m1").await.unwrap();
        assert_eq!(none, ThresholdsVersion::as_trained("m1"), "{url}");
        let mut edits = crate::intent::Thresholds::per_depth(vec![0.4, 0.6]);
        edits.nodes.insert("billing.refund".into(), 0.75);
        let v1 = store
            .save_thresholds("m1", &edits, "ann", "stricter", Some(0))
            .await
            .unwrap();
        assert_eq!((v1.version, v1.model.as_str()), (1, "m1"));
        // Another model counts its own versions.
        let other = store
            .save_thresholds("m2", &Default::default(), "bob", "", None)
            .await
            .unwrap();
        assert_eq!(other.version, 1);
        let err = store
            .save_thresholds("m1", &Default::default(), "bob", "", Some(0))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::ThresholdsConflict { model, expected: 0, current: 1 } if model == "m1"
            ),
            "{url}: {err}"
        );
        store
            .save_thresholds("m1", &Default::default(), "bob", "back", None)
            .await
            .unwrap();
        assert_eq!(store.current_thresholds("m1").await.unwrap().version, 2);
        let history = store.thresholds_history("m1").await.unwrap();
        assert_eq!(history.len(), 2, "{url}");
        assert_eq!(history[1], v1, "{url}: read back as saved");
    }
}

#[tokio::test]
async fn assigns_round_robin_and_least_loaded_and_honours_idempotency() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let policy = policy("billing", &["ann", "bob"]);
        let mut batch = vec![
            decision("1", "billing", Assignee::RoundRobin),
            decision("2", "billing", Assignee::RoundRobin),
            decision("3", "billing", Assignee::RoundRobin),
            decision("4", "sales", Assignee::RoundRobin),
        ];
        record(&store, &mut batch, None, &policy).await;
        let picked: Vec<Option<&str>> = batch.iter().map(|d| d.assignee.as_deref()).collect();
        assert_eq!(
            picked,
            vec![Some("ann"), Some("bob"), Some("ann"), None],
            "{url}"
        );
        assert_eq!(
            batch[3].assignment_note.as_deref(),
            Some("team \"sales\" has no roster")
        );
        // ann has 2 open, bob 1: least-loaded picks bob, then (after closing ann's) ann.
        let mut one = vec![decision("5", "billing", Assignee::LeastLoaded)];
        record(&store, &mut one, None, &policy).await;
        assert_eq!(one[0].assignee.as_deref(), Some("bob"));
        store.close_assignment("1", "api:test").await.unwrap();
        let closed = store.close_assignment("3", "api:test").await.unwrap();
        assert_eq!(closed.closed_by.as_deref(), Some("api:test"));
        let mut one = vec![decision("6", "billing", Assignee::LeastLoaded)];
        let first = record(&store, &mut one, Some(("key-1", "h")), &policy).await;
        assert_eq!(one[0].assignee.as_deref(), Some("ann"));
        // The retry returns the first response and assigns nobody again.
        let mut retry = vec![decision("7", "billing", Assignee::LeastLoaded)];
        let again = record(&store, &mut retry, Some(("key-1", "h")), &policy).await;
        assert_eq!(again, first);
        assert_eq!(retry[0].assignee, None);
        assert!(matches!(
            store.idempotent_response("key-1", "other").await,
            Err(StoreError::IdempotencyMismatch(_))
        ));
        let open = store.assignments(Some("billing"), true, 100).await.unwrap();
        assert_eq!(open.len(), 3, "{url}");
        let recent = store.recent_decisions(2).await.unwrap();
        assert_eq!(recent[0].decision_id, "6");
        assert_eq!(recent[0].kept, decision("6", "", Assignee::Nobody).kept);
        let later = Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(store.purge_texts(later).await.unwrap(), 6);
        assert!(store.recent_decisions(1).await.unwrap()[0].kept.is_none());
        assert_eq!(store.purge_idempotency(later).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn old_assignments_expire() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let mut policy = policy("t", &["ann", "bob"]);
        let mut a = vec![decision("1", "t", Assignee::LeastLoaded)];
        record(&store, &mut a, None, &policy).await;
        policy.close_after = Some(Duration::ZERO);
        let mut b = vec![decision("2", "t", Assignee::LeastLoaded)];
        record(&store, &mut b, None, &policy).await;
        assert_eq!(
            b[0].assignee.as_deref(),
            Some("ann"),
            "{url}: ann's first ticket expired"
        );
        let all = store.assignments(None, false, 10).await.unwrap();
        let expired = all
            .iter()
            .filter(|a| a.closed_by.as_deref() == Some("expired"));
        assert_eq!(expired.count(), 1);
    }
}

fn correction(decision_id: &str, intent: &str) -> NewFeedback {
    NewFeedback {
        decision_id: decision_id.into(),
        ticket_id: format!("t-{decision_id}"),
        agent: "ann".into(),
        author: "api".into(),
        correct_intent: Some(intent.into()),
        correct_team: None,
        correct_assignee: None,
        predicted_intent: "billing.refund".into(),
        predicted_team: Some("billing".into()),
        rule_ids: vec!["r1".into()],
        language: "en".into(),
        text: Some((Some("subject".into()), "body".into())),
    }
}

#[tokio::test]
async fn corrections_are_stored_once_and_become_labels() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let (first, new) = store
            .insert_feedback(&correction("d1", "billing.invoice"))
            .await
            .unwrap();
        assert!(new, "{url}");
        let (again, new) = store
            .insert_feedback(&correction("d1", "billing.invoice"))
            .await
            .unwrap();
        assert!(!new);
        assert_eq!(again.feedback_id, first.feedback_id);
        assert_eq!(
            again.created_at, first.created_at,
            "{url}: times read back as written"
        );
        store
            .insert_feedback(&correction("d1", "billing.other"))
            .await
            .unwrap();
        assert_eq!(store.feedback().await.unwrap().len(), 2);
        let labels = store.corrections().await.unwrap();
        assert_eq!(labels.len(), 1, "{url}: one label per ticket, the newest");
        assert_eq!(labels[0].intent, "billing.other");
        let since = first.created_at - chrono::Duration::seconds(1);
        assert_eq!(store.corrections_since(since).await.unwrap(), 2);
        let intent = AddedIntent {
            id: "billing.crypto".into(),
            en: "Paying in crypto".into(),
            ru: "Оплата криптовалютой".into(),
            author: "admin".into(),
            created_at: now(),
        };
        assert!(store.add_intent(&intent).await.unwrap());
        let again = AddedIntent {
            en: "Another replica's".into(),
            ..intent.clone()
        };
        assert!(
            !store.add_intent(&again).await.unwrap(),
            "{url}: added once"
        );
        assert_eq!(store.added_intents().await.unwrap(), vec![intent]);
    }
}

fn model(id: &str, status: ModelStatus) -> ModelRecord {
    ModelRecord {
        id: id.into(),
        parent: None,
        path: format!("/models/{id}"),
        data_hash: "h".into(),
        metrics: crate::learn::ModelMetrics::read(serde_json::json!({})),
        status,
        shadow: false,
        note: String::new(),
        created_at: now(),
        activated_at: None,
    }
}

#[tokio::test]
async fn one_model_is_active_and_the_previous_one_is_the_rollback_target() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        store
            .insert_model(&model("m1", ModelStatus::Candidate))
            .await
            .unwrap();
        store
            .insert_model(&model("m2", ModelStatus::Candidate))
            .await
            .unwrap();
        store
            .activate_model("m1", Some("first"), None)
            .await
            .unwrap();
        store
            .update_candidate("m2", true, "shadowing")
            .await
            .unwrap();
        assert!(store.model("m2").await.unwrap().shadow, "{url}");
        let m2 = store.activate_model("m2", None, None).await.unwrap();
        assert_eq!((m2.status, m2.shadow), (ModelStatus::Active, false));
        assert_eq!(m2.note, "shadowing");
        assert_eq!(
            store.model("m1").await.unwrap().status,
            ModelStatus::Retired
        );
        let back = store.previous_active_model().await.unwrap().unwrap();
        assert_eq!(back.id, "m1");
        assert!(matches!(
            store.activate_model("m9", None, None).await,
            Err(StoreError::NotFound(_))
        ));
        store
            .insert_shadow("d1", "m2", "billing", 0.5)
            .await
            .unwrap();
        store
            .insert_shadow("d1", "m2", "billing", 0.5)
            .await
            .unwrap();
        assert_eq!(store.shadow_intents("m2").await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn erasing_a_ticket_removes_its_rows_and_nothing_else() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let policy = policy("billing", &["ann"]);
        let mut a = vec![decision("1", "billing", Assignee::RoundRobin)];
        record(&store, &mut a, Some(("k1", "h")), &policy).await;
        let mut b = vec![decision("2", "billing", Assignee::RoundRobin)];
        record(&store, &mut b, Some(("k2", "h")), &policy).await;
        let mut batch = vec![
            decision("3", "billing", Assignee::RoundRobin),
            decision("1b", "billing", Assignee::RoundRobin),
            decision("4", "billing", Assignee::RoundRobin),
        ];
        batch[1].ticket_id = "t-1".into();
        let answer = record(&store, &mut batch, Some(("k3", "h")), &policy).await;
        store
            .insert_feedback(&correction("1", "billing"))
            .await
            .unwrap();
        store
            .insert_shadow("1", "m2", "billing", 0.5)
            .await
            .unwrap();
        let before = now();
        let removed = store.erase_ticket("t-1").await.unwrap();
        let expect = [
            ("assignments", 2),
            ("connector_events", 0),
            ("decisions", 2),
            ("feedback", 1),
            ("idempotency_keys", 2),
            ("incident_links", 0),
            ("incident_unlinks", 0),
            ("shadow_results", 1),
            ("ticket_texts", 1),
            ("ticket_vectors", 0),
            ("write_backs", 0),
        ];
        assert_eq!(removed, expect.into_iter().collect(), "{url}");
        assert_eq!(store.recent_decisions(10).await.unwrap().len(), 3);
        // The key of the ticket's own request goes; the batch's key keeps the other tickets,
        // in order, so a retry replays them and assigns nobody again.
        assert_eq!(store.idempotent_response("k1", "h").await.unwrap(), None);
        assert!(store
            .idempotent_response("k2", "h")
            .await
            .unwrap()
            .is_some());
        let replay = store.idempotent_response("k3", "h").await.unwrap().unwrap();
        assert!(replay.batch);
        assert_eq!(
            replay.decisions,
            [answer[0].clone(), answer[2].clone()],
            "{url}"
        );
        // The erasure is recorded for the replicas' caches; erasing nothing records nothing.
        let erased = store.erased_since(before).await.unwrap();
        assert_eq!(
            erased.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["t-1"]
        );
        assert!(store
            .erase_ticket("t-9")
            .await
            .unwrap()
            .values()
            .all(|n| *n == 0));
        assert_eq!(store.erased_since(before).await.unwrap().len(), 1);
        let later = now() + chrono::Duration::seconds(1);
        assert_eq!(store.purge_erasures(later).await.unwrap(), 1);
        assert_eq!(store.purge_idempotency(later).await.unwrap(), 2);
        assert_eq!(store.idempotent_response("k3", "h").await.unwrap(), None);
    }
}

/// Runs one statement on a database behind the store's back (what a race or a crash leaves):
/// a count (`SELECT COUNT(*) …`) or the rows a change touched.
async fn raw_scalar(url: &DatabaseUrl, sql: &str) -> i64 {
    macro_rules! on {
        ($pool:expr) => {{
            let pool = $pool.await.unwrap();
            let n = if sql.starts_with("SELECT") {
                sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
            } else {
                let done = sqlx::query(sql).execute(&pool).await.unwrap();
                done.rows_affected() as i64
            };
            pool.close().await;
            n
        }};
    }
    match url {
        DatabaseUrl::Sqlite(path) => {
            on!(sqlx::SqlitePool::connect(&format!(
                "sqlite:{}",
                path.display()
            )))
        }
        DatabaseUrl::Postgres(u) => on!(sqlx::PgPool::connect(u)),
    }
}

#[tokio::test]
async fn a_key_left_without_its_decisions_is_taken_by_the_next_request() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let p = policy("t", &["ann"]);
        let mut d = vec![decision("k-1", "t", Assignee::RoundRobin)];
        record(&store, &mut d, Some(("stale", "h")), &p).await;
        // The key without its decisions (what an erasure racing another once left).
        let gone = raw_scalar(&url, "DELETE FROM decisions WHERE decision_id = 'k-1'").await;
        assert_eq!(gone, 1);
        assert_eq!(store.idempotent_response("stale", "h").await.unwrap(), None);
        let mut again = vec![decision("k-2", "t", Assignee::RoundRobin)];
        let answer = record(&store, &mut again, Some(("stale", "h")), &p).await;
        let replay = store.idempotent_response("stale", "h").await.unwrap();
        assert_eq!(replay.unwrap().decisions, answer, "{url}");
    }
}

#[tokio::test]
async fn replicas_erasing_a_batchs_tickets_at_once_leave_no_empty_key() {
    let (a, b) = replicas().await;
    let p = policy("t", &["ann"]);
    for round in 0..8 {
        let key = format!("batch-{round}");
        let mut batch = vec![
            decision(&format!("x{round}"), "t", Assignee::RoundRobin),
            decision(&format!("y{round}"), "t", Assignee::RoundRobin),
        ];
        record(&a, &mut batch, Some((&key, "h")), &p).await;
        let (tx, ty) = (format!("t-x{round}"), format!("t-y{round}"));
        let (x, y) = tokio::join!(a.erase_ticket(&tx), b.erase_ticket(&ty));
        assert_eq!((x.unwrap()["decisions"], y.unwrap()["decisions"]), (1, 1));
        let url = a.url().clone();
        let left = raw_scalar(
            &url,
            &format!("SELECT COUNT(*) FROM idempotency_keys WHERE key = '{key}'"),
        )
        .await;
        assert_eq!(left, 0, "round {round}: the key went with its last ticket");
    }
}

fn job(id: &str) -> Job {
    Job {
        id: id.into(),
        kind: JobKind::Retrain,
        status: JobStatus::Running,
        params: serde_json::json!({"fine_tune": false}),
        progress: None,
        result: None,
        error: None,
        cancel_requested: false,
        created_by: "admin".into(),
        created_at: now(),
        finished_at: None,
    }
}

#[tokio::test]
async fn a_job_runs_reports_progress_and_ends_once() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        store.insert_job(&job("j1")).await.unwrap();
        let p = JobProgress {
            stage: "embedding".into(),
            done: 256,
            total: 1000,
        };
        assert!(!store.job_progress("j1", &p).await.unwrap(), "{url}");
        assert_eq!(store.job("j1").await.unwrap().progress, Some(p.clone()));
        let asked = store.request_job_cancel("j1").await.unwrap();
        assert!(asked.cancel_requested);
        assert!(store.job_progress("j1", &p).await.unwrap());
        store
            .finish_job("j1", JobStatus::Cancelled, None, None)
            .await
            .unwrap();
        // A finished job stays as it ended.
        let ok = serde_json::json!({"outcome": "activated"});
        store
            .finish_job("j1", JobStatus::Succeeded, Some(&ok), None)
            .await
            .unwrap();
        let j = store.job("j1").await.unwrap();
        assert_eq!((j.status, j.result), (JobStatus::Cancelled, None));
        assert!(j.finished_at.is_some());
        assert!(matches!(
            store.job("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn a_restart_fails_the_jobs_it_cut_off() {
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        store.insert_job(&job("a")).await.unwrap();
        store.insert_job(&job("b")).await.unwrap();
        let done = serde_json::json!({});
        store
            .finish_job("b", JobStatus::Succeeded, Some(&done), None)
            .await
            .unwrap();
        store.close().await;
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.fail_interrupted_jobs().await.unwrap(), 1, "{url}");
        let a = store.job("a").await.unwrap();
        assert_eq!(a.status, JobStatus::Failed);
        assert_eq!(a.error.unwrap().code, INTERRUPTED);
        assert_eq!(store.job("b").await.unwrap().status, JobStatus::Succeeded);
        assert_eq!(store.jobs(10).await.unwrap().len(), 2);
        // Purging keeps what ended after the cutoff.
        let day = chrono::Duration::days(1);
        assert_eq!(store.purge_jobs(Utc::now() - day).await.unwrap(), 0);
        assert_eq!(store.purge_jobs(Utc::now() + day).await.unwrap(), 2);
    }
}

/// Two `Store`s on one PostgreSQL database: what two replicas are.
async fn replicas() -> (Arc<Store>, Arc<Store>) {
    let url = DatabaseUrl::Postgres(pg_cluster::fresh_database());
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    (Arc::new(a), Arc::new(b))
}

#[tokio::test]
async fn replicas_never_save_one_rules_version_twice() {
    let (a, b) = replicas().await;
    a.save_rules("v1", "h", "seed", "", Some(0), None)
        .await
        .unwrap();
    // Checked saves based on version 1: exactly one wins, the others are told the version.
    let tries = (0..8).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            s.save_rules(&format!("x{i}"), "h", "ann", "", Some(1), None)
                .await
        })
    });
    let mut won = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v.version, 2);
                won += 1;
            }
            Err(StoreError::Conflict {
                expected: 1,
                current: 2,
            }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    // Unchecked saves all land, each with its own number.
    let tries = (0..8).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { s.save_rules("y", "h", "ann", "", None, None).await })
    });
    for t in tries {
        t.await.unwrap().unwrap();
    }
    let versions: Vec<i64> = a
        .rules_history()
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, (1..=10).rev().collect::<Vec<_>>());
}

/// A rules save checked against the active model on one replica and a model activation
/// checked against the newest rules on another, at once: never both (the database serialises
/// them and each re-checks the other side), so the rules and the model that serve always
/// were checked together.
#[tokio::test]
async fn replicas_never_pair_rules_and_a_model_that_were_not_checked_together() {
    let (a, b) = replicas().await;
    for id in ["m1", "m2"] {
        a.insert_model(&model(id, ModelStatus::Candidate))
            .await
            .unwrap();
    }
    a.activate_model("m1", None, None).await.unwrap();
    a.save_rules("v1", "h", "seed", "", None, None)
        .await
        .unwrap();
    // Each side alone: a stale check is refused.
    assert!(matches!(
        a.save_rules("v2", "h", "ann", "", Some(1), Some("m2"))
            .await,
        Err(StoreError::ModelChanged { .. })
    ));
    assert!(matches!(
        b.activate_model("m2", None, Some(0)).await,
        Err(StoreError::RulesChanged { current: 1, .. })
    ));
    for round in 0..12 {
        let active = a.active_model_id().await;
        let other = if active == "m1" { "m2" } else { "m1" };
        let version = a.current_rules().await.unwrap().unwrap().version;
        let text = format!("round {round}");
        let (saved, activated) = tokio::join!(
            a.save_rules(&text, "h", "ann", "", Some(version), Some(&active)),
            b.activate_model(other, None, Some(version)),
        );
        match (&saved, &activated) {
            (Ok(_), Err(StoreError::RulesChanged { .. }))
            | (Err(StoreError::ModelChanged { .. }), Ok(_)) => {}
            _ => panic!("round {round}: exactly one passes: {saved:?} / {activated:?}"),
        }
    }
}

impl Store {
    /// The active model's id (tests).
    async fn active_model_id(&self) -> String {
        self.models()
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.status == ModelStatus::Active)
            .unwrap()
            .id
    }
}

#[tokio::test]
async fn replicas_share_round_robin_turns_and_least_loaded_counts() {
    let (a, b) = replicas().await;
    let agents = ["ann", "bob", "cid"];
    let rr = Arc::new(policy("t", &agents));
    let calls = (0..30).map(|i| {
        let (s, p) = (if i % 2 == 0 { a.clone() } else { b.clone() }, rr.clone());
        tokio::spawn(async move {
            let mut d = vec![decision(&format!("rr{i}"), "t", Assignee::RoundRobin)];
            record(&s, &mut d, None, &p).await;
            d.remove(0).assignee.unwrap()
        })
    });
    let mut counts = std::collections::BTreeMap::new();
    for c in calls {
        *counts.entry(c.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
    let ll = Arc::new(policy("u", &agents));
    let calls = (0..30).map(|i| {
        let (s, p) = (if i % 2 == 0 { a.clone() } else { b.clone() }, ll.clone());
        tokio::spawn(async move {
            let mut d = vec![decision(&format!("ll{i}"), "u", Assignee::LeastLoaded)];
            record(&s, &mut d, None, &p).await;
        })
    });
    for c in calls {
        c.await.unwrap();
    }
    let open = a.assignments(Some("u"), true, 100).await.unwrap();
    for agent in agents {
        let n = open.iter().filter(|x| x.agent == agent).count();
        assert_eq!(n, 10, "{agent}: least-loaded never read stale loads");
    }
}

#[tokio::test]
async fn replicas_answer_one_idempotency_key_once() {
    let (a, b) = replicas().await;
    let p = Arc::new(policy("t", &["ann", "bob"]));
    let calls = (0..8).map(|i| {
        let (s, p) = (if i % 2 == 0 { a.clone() } else { b.clone() }, p.clone());
        tokio::spawn(async move {
            let mut d = vec![decision(&format!("d{i}"), "t", Assignee::RoundRobin)];
            record(&s, &mut d, Some(("same-key", "h")), &p).await
        })
    });
    let mut answers = BTreeSet::new();
    for c in calls {
        answers.insert(c.await.unwrap());
    }
    assert_eq!(
        answers.len(),
        1,
        "every retry got the first answer: {answers:?}"
    );
    assert_eq!(a.recent_decisions(10).await.unwrap().len(), 1);
    assert_eq!(b.assignments(None, false, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn replicas_store_a_correction_once_and_keep_one_active_and_one_shadow_model() {
    let (a, b) = replicas().await;
    let calls = (0..8).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { s.insert_feedback(&correction("d1", "billing")).await })
    });
    let mut new = 0;
    for c in calls {
        new += usize::from(c.await.unwrap().unwrap().1);
    }
    assert_eq!((new, a.feedback().await.unwrap().len()), (1, 1));
    for id in ["m1", "m2", "m3", "m4"] {
        a.insert_model(&model(id, ModelStatus::Candidate))
            .await
            .unwrap();
    }
    let calls = ["m1", "m2", "m3", "m4"].map(|id| {
        let s = if id < "m3" { a.clone() } else { b.clone() };
        tokio::spawn(async move { s.activate_model(id, None, None).await })
    });
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let active = a.models().await.unwrap();
    let active = active.iter().filter(|m| m.status == ModelStatus::Active);
    assert_eq!(active.count(), 1);
    for id in ["c1", "c2", "c3", "c4"] {
        a.insert_model(&model(id, ModelStatus::Candidate))
            .await
            .unwrap();
    }
    let calls = ["c1", "c2", "c3", "c4"].map(|id| {
        let s = if id < "c3" { a.clone() } else { b.clone() };
        tokio::spawn(async move { s.update_candidate(id, true, "shadow").await })
    });
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let shadows = a.models().await.unwrap();
    assert_eq!(shadows.iter().filter(|m| m.shadow).count(), 1, "one shadow");
}

#[tokio::test]
async fn an_unsupported_or_unreachable_database_is_a_clear_error() {
    let err = DatabaseUrl::parse("mysql://h/db", None).unwrap_err();
    assert!(err.to_string().contains("unsupported scheme \"mysql\""));
    // A server that is not there: the error names the database, never the password.
    let url = DatabaseUrl::parse("postgres://app:hunter2@127.0.0.1:1/db", None).unwrap();
    let err = Store::open(&url).await.unwrap_err();
    let shown = format!("{url}: {err}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.starts_with("postgres://app:***@127.0.0.1:1/db: database: "),
        "{shown}"
    );
}

/// A password given apart from the URL (`database_password_file` or the environment) logs in
/// to a server that asks for one; a wrong or missing one is refused, and no error shows it.
#[tokio::test]
async fn a_password_from_the_settings_logs_in_and_never_shows() {
    let url = pg_cluster::fresh_database();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let role = pg_cluster::PASSWORD_ROLE;
    let secret = "s3cret/@:pw";
    let create = format!("CREATE ROLE {role} LOGIN PASSWORD '{secret}'");
    if let Err(e) = sqlx::query(&create).execute(&pool).await {
        // Made by an earlier test of this run: the same password.
        assert!(e.to_string().contains("already exists"), "{e}");
    }
    let db = url.rsplit('/').next().unwrap();
    sqlx::query(&format!("ALTER DATABASE {db} OWNER TO {role}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let as_role =
        DatabaseUrl::Postgres(url.replace("postgres://postgres@", &format!("postgres://{role}@")));
    let with = |p: Option<&str>| Connect {
        password: p.map(str::to_string),
    };
    let store = Store::connect(&as_role, &with(Some(secret))).await.unwrap();
    store
        .save_rules("v1", "h", "seed", "", None, None)
        .await
        .unwrap();
    store.close().await;
    for wrong in [None, Some("hunter2")] {
        let err = Store::connect(&as_role, &with(wrong)).await.unwrap_err();
        let shown = format!("{as_role}: {err}");
        assert!(shown.contains("password"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains(secret),
            "{shown}"
        );
    }
}

/// A copy of a database written by the release before the storage port (commit ebbae75,
/// schema 3: `serve` with the shipped model; nine decisions, three rules versions, two
/// idempotency keys, five assignments, two corrections, an added intent, a cancelled job).
fn release_ebbae75(dir: &std::path::Path) -> DatabaseUrl {
    let path = dir.join("router.db");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/router-ebbae75.db"
    );
    std::fs::copy(fixture, &path).unwrap();
    DatabaseUrl::Sqlite(path)
}

#[tokio::test]
async fn a_database_of_the_previous_release_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let url = release_ebbae75(dir.path());
    let raw_url = format!("sqlite:{}", dir.path().join("router.db").display());
    let raw = sqlx::SqlitePool::connect(&raw_url).await.unwrap();
    let answers: Vec<(String, String, String)> =
        sqlx::query_as("SELECT key, request_hash, response FROM idempotency_keys ORDER BY key")
            .fetch_all(&raw)
            .await
            .unwrap();
    raw.close().await;
    assert_eq!(answers.len(), 2);
    let store = Store::open(&url).await.unwrap();
    let newest = store.schema_version().await.unwrap();
    assert!(newest > 3, "migrated past schema 3 to {newest}");
    assert_eq!(store.rules_history().await.unwrap().len(), 3);
    let log = store
        .decisions(&DecisionFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 9);
    let fx5 = log
        .iter()
        .find(|d| d.ticket_id.as_deref() == Some("fx-5"))
        .unwrap();
    assert_eq!(fx5.assignee.as_deref(), Some("ivan"));
    // The release's idempotent answers replay byte for byte, rebuilt from the decisions.
    for (key, hash, response) in &answers {
        let replay = store.idempotent_response(key, hash).await.unwrap().unwrap();
        let body = if replay.batch {
            format!("{{\"decisions\":[{}]}}", replay.decisions.join(","))
        } else {
            replay.decisions.concat()
        };
        assert_eq!(&body, response, "{key}");
    }
    // The rule inputs became columns (channel, language given); the customer facts and
    // fields logged unredacted are gone and not kept (a simulation reports them missing); the
    // texts stay.
    for d in store.recent_decisions(100).await.unwrap() {
        if d.ticket_id == "fx-1" {
            assert_eq!(d.channel.as_deref(), Some("email"));
        }
        let kept = d.kept.unwrap();
        assert_eq!((kept.customer.tier, kept.fields), (None, None));
    }
    assert_eq!(store.feedback().await.unwrap().len(), 2);
    assert_eq!(store.added_intents().await.unwrap()[0].id, "billing.crypto");
    let jobs = store.jobs(10).await.unwrap();
    assert_eq!((jobs.len(), jobs[0].status), (1, JobStatus::Cancelled));
    let active = store.models().await.unwrap();
    assert_eq!(
        (active[0].id.as_str(), active[0].status),
        ("c5bcb0ad9675", ModelStatus::Active)
    );
    assert_eq!(store.assignments(None, true, 10).await.unwrap().len(), 4);
    // The release's round-robin cursor goes on: billing gave anna then boris.
    let policy = policy("billing", &["anna", "boris"]);
    let mut next = vec![decision("new-1", "billing", Assignee::RoundRobin)];
    record(&store, &mut next, None, &policy).await;
    assert_eq!(next[0].assignee.as_deref(), Some("anna"));
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    store.close().await;

    // The release reads its own table: it must see the new schema (and refuse it).
    let raw = sqlx::SqlitePool::connect(&raw_url).await.unwrap();
    let legacy: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(legacy, newest);
    // A database from a newer release is refused, with both versions named.
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99, 'future', TRUE, x'00', 0)")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    let err = Store::open(&url).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the database has schema version 99, newer than this binary knows ({newest}); upgrade intent-router")
    );
}

fn tracked(id: &str, at: chrono::DateTime<Utc>) -> crate::incident::TrackedIncident {
    use crate::incident::track::Spread;
    crate::incident::TrackedIncident {
        id: id.into(),
        intent: "billing.refund".into(),
        language: Some("en".into()),
        centroid: crate::incident::Embedding::new(&[0.5, -0.25, 1.0]),
        members: Spread {
            mean: 0.9,
            sd: 0.02,
        },
        usual: Spread {
            mean: 0.8,
            sd: 0.05,
        },
        usual_rate: 0.5,
        recent: [at].into(),
        opened_at: at,
        last_at: at,
        revision: 0,
    }
}

fn incident_link(
    decision: &str,
    incident: &str,
    by: crate::incident::track::LinkedBy,
) -> IncidentLink {
    IncidentLink {
        decision_id: decision.into(),
        incident_id: incident.into(),
        linked_at: now(),
        probability: 0.75,
        similarity: 0.875,
        linked_by: by,
        reason: format!("{decision} is {incident}'s"),
        merged_from: None,
    }
}

fn stored_incident(id: &str, at: chrono::DateTime<Utc>) -> StoredIncident {
    StoredIncident {
        tracked: tracked(id, at),
        status: IncidentStatus::Open,
        detection: Detection {
            stream: crate::incident::Stream::Intent {
                intent: "billing.refund".into(),
            },
            at,
            window_minutes: 60,
            count: 9,
            volume: 20,
            expected: 2.5,
            p_value: 1e-7,
        },
        updated_at: at,
        merged_into: None,
        split_from: None,
        remodel_marks: 0,
        alerted_tickets: 0,
    }
}

#[tokio::test]
async fn incidents_their_links_and_vectors_are_kept_read_back_in_log_order_and_erased() {
    use crate::incident::track::LinkedBy;
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let policy = policy("billing", &["ann"]);
        let vector = crate::incident::Embedding::new(&[0.1, 0.2, -0.3]).to_bytes();
        let mut first = vec![decision("1", "billing", Assignee::RoundRobin)];
        first[0].vector = Some(vector.clone());
        record(&store, &mut first, None, &policy).await;
        let mut second = vec![decision("2", "billing", Assignee::RoundRobin)];
        second[0].incident = Some(incident_link("2", "inc-1", LinkedBy::Routing));
        let opened = now();
        let incident = stored_incident("inc-1", opened);
        store.open_incident(&incident, &[], false).await.unwrap();
        assert_eq!(store.incident("inc-1").await.unwrap(), incident, "{url}");
        record(&store, &mut second, None, &policy).await;
        // The detector links the first ticket late; the second keeps its routing link.
        let late = [
            incident_link("1", "inc-1", LinkedBy::Detection),
            incident_link("2", "inc-1", LinkedBy::Detection),
        ];
        store
            .update_incident(&incident.tracked, &late, false)
            .await
            .unwrap();
        let links = store.incident_links("inc-1").await.unwrap();
        let by: Vec<_> = links
            .iter()
            .map(|l| (l.decision_id.as_str(), l.linked_by))
            .collect();
        assert_eq!(
            by,
            [("2", LinkedBy::Routing), ("1", LinkedBy::Detection)],
            "{url}"
        );
        assert_eq!(links[0], second[0].incident.clone().unwrap());
        // The detector reads the log in order, a page after a row.
        let rows = store
            .detector_rows(opened - chrono::Duration::days(1), "", 10)
            .await
            .unwrap();
        let seen: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.decision_id.as_str(),
                    r.vector.is_some(),
                    r.incident_id.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [("1", true, Some("inc-1")), ("2", false, Some("inc-1"))],
            "{url}"
        );
        assert_eq!(rows[0].vector.as_deref(), Some(vector.as_slice()));
        assert_eq!(
            (rows[0].intent.as_str(), rows[0].language.as_str()),
            ("billing.refund", "en")
        );
        let after = store
            .detector_rows(rows[0].decided_at, "1", 10)
            .await
            .unwrap();
        assert_eq!(after, rows[1..], "{url}");
        // Live: open with a ticket since; a later save moves what the detector owns.
        let live = store.live_incidents(opened).await.unwrap();
        assert_eq!(live.len(), 1, "{url}");
        assert_eq!(live[0].tracked, incident.tracked);
        let later = opened + chrono::Duration::hours(49);
        assert!(store.live_incidents(later).await.unwrap().is_empty());
        let mut grown = incident.clone();
        grown.tracked.last_at = later;
        grown.tracked.recent = [later].into();
        store
            .update_incident(&grown.tracked, &[], false)
            .await
            .unwrap();
        let live = store.live_incidents(later).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].tracked, grown.tracked, "{url}");
        assert_eq!(live[0].detection, incident.detection);
        assert!(live[0].updated_at >= opened);
        let gone = store
            .update_incident(&tracked("inc-9", later), &[], false)
            .await;
        assert_eq!(gone.unwrap_err().to_string(), "no incident inc-9");
        // Vectors go with texts' retention; an erasure takes the ticket's vector and link.
        let mut third = vec![decision("3", "billing", Assignee::RoundRobin)];
        third[0].vector = Some(vector.clone());
        third[0].incident = Some(incident_link("3", "inc-1", LinkedBy::Routing));
        record(&store, &mut third, None, &policy).await;
        let removed = store.erase_ticket("t-3").await.unwrap();
        assert_eq!(
            (removed["ticket_vectors"], removed["incident_links"]),
            (1, 1),
            "{url}"
        );
        store
            .purge_texts(now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        let rows = store
            .detector_rows(opened - chrono::Duration::days(1), "", 10)
            .await
            .unwrap();
        assert!(rows.iter().all(|r| r.vector.is_none()), "{url}");
        assert_eq!(store.incident_links("inc-1").await.unwrap().len(), 2);
        // People move its status; the detector's updates leave it.
        let listed = store.incidents(None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0.tracked.id.as_str(), listed[0].1), ("inc-1", 2));
        store
            .set_incident_status("inc-1", IncidentStatus::Dismissed)
            .await
            .unwrap();
        let done = store.incident("inc-1").await.unwrap();
        assert_eq!(done.status, IncidentStatus::Dismissed);
        store
            .update_incident(&grown.tracked, &[], false)
            .await
            .unwrap();
        assert_eq!(
            store.incident("inc-1").await.unwrap().status,
            IncidentStatus::Dismissed
        );
        assert!(
            store.live_incidents(opened).await.unwrap().is_empty(),
            "{url}"
        );
        let open = store
            .incidents(Some(IncidentStatus::Open), 10)
            .await
            .unwrap();
        assert!(open.is_empty());
        let missing = store
            .set_incident_status("inc-9", IncidentStatus::Open)
            .await;
        assert_eq!(missing.unwrap_err().to_string(), "no incident inc-9");
        let missing = store.incident("inc-9").await.unwrap_err();
        assert_eq!(missing.to_string(), "no incident inc-9");
    }
}

#[tokio::test]
async fn incidents_are_corrected_unlinked_merged_unmerged_and_split() {
    use crate::incident::track::LinkedBy;
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let policy = policy("billing", &["ann"]);
        let v = |x: f32| crate::incident::Embedding::new(&[x, 1.0, 0.0]).to_bytes();
        for k in 1..=7 {
            let mut d = vec![decision(&k.to_string(), "billing", Assignee::RoundRobin)];
            d[0].vector = Some(v(k as f32 / 10.0));
            record(&store, &mut d, None, &policy).await;
        }
        let at = now();
        let since = at - chrono::Duration::hours(1);
        let links = |ids: &[&str], inc: &str| -> Vec<IncidentLink> {
            ids.iter()
                .map(|d| incident_link(d, inc, LinkedBy::Detection))
                .collect()
        };
        store
            .open_incident(
                &stored_incident("a", at),
                &links(&["1", "2", "3"], "a"),
                false,
            )
            .await
            .unwrap();
        let mut b = stored_incident("b", at + chrono::Duration::seconds(1));
        b.tracked.intent = "billing.invoice".into();
        store
            .open_incident(&b, &links(&["4", "5", "6"], "b"), false)
            .await
            .unwrap();
        let ids = |inc: &str| {
            let store = &store;
            let inc = inc.to_string();
            async move {
                let l = store.incident_links(&inc).await.unwrap();
                l.into_iter().map(|l| l.decision_id).collect::<Vec<_>>()
            }
        };
        let members = store.incident_members("a").await.unwrap();
        assert_eq!(members.len(), 3, "{url}");
        assert!(members.iter().all(|(_, v)| v.is_some()));
        // The usual tickets of an intent: linked ones and other intents left out.
        let usual = |intent: &'static str, lang: Option<&'static str>| {
            let store = &store;
            async move {
                let found = store.usual_vectors(intent, lang, since, 10).await.unwrap();
                found.len()
            }
        };
        assert_eq!(usual("billing", None).await, 1, "{url}");
        assert_eq!(usual("billing.refund", Some("en")).await, 1);
        assert_eq!(usual("billing.refund", Some("ru")).await, 0);
        assert_eq!(usual("bill", None).await, 0, "a whole segment");
        // An unlink is kept for the report, and that ticket never links there again.
        store.unlink_tickets("a", &["1".into()]).await.unwrap();
        assert_eq!(ids("a").await, ["2", "3"], "{url}");
        assert_eq!(usual("billing", None).await, 2);
        assert_eq!(store.incidents_to_remodel().await.unwrap(), ["a"]);
        store
            .update_incident(&tracked("a", at), &links(&["1"], "a"), false)
            .await
            .unwrap();
        assert_eq!(ids("a").await, ["2", "3"], "not linked again: {url}");
        assert_eq!(store.unlinked_since(since).await.unwrap(), ["1"], "{url}");
        let outcomes = store.link_outcomes(since).await.unwrap();
        assert_eq!(outcomes.len(), 6, "{url}");
        assert_eq!(outcomes.iter().filter(|o| o.unlinked).count(), 1);
        assert_eq!(
            (outcomes[0].probability, outcomes[0].similarity),
            (0.75, 0.875)
        );
        let wrong = store.unlink_tickets("a", &["2".into(), "4".into()]).await;
        assert_eq!(
            wrong.unwrap_err().to_string(),
            "decision 4 is not linked to incident a"
        );
        assert_eq!(ids("a").await, ["2", "3"], "nothing unlinked: {url}");
        // A new picture is saved only if no change came since its tickets were read.
        let marks = store.incident("a").await.unwrap().remodel_marks;
        assert_eq!(marks, 1, "{url}");
        let mut picture = tracked("a", at);
        picture.centroid = crate::incident::Embedding::new(&[1.0, 0.0, 0.0]);
        picture.revision = 1;
        assert!(!store.save_incident_model(&picture, 0).await.unwrap());
        assert!(store.save_incident_model(&picture, marks).await.unwrap());
        let a = store.incident("a").await.unwrap();
        assert_eq!((a.tracked, a.remodel_marks), (picture.clone(), 0));
        assert!(store.incidents_to_remodel().await.unwrap().is_empty());
        // The watch's count of an older revision adds only its tickets after the newest.
        let mut watched = tracked("a", at);
        watched.recent.push_back(at + chrono::Duration::seconds(1));
        let merged = store.update_incident(&watched, &[], false).await.unwrap();
        assert_eq!((merged.recent.len(), merged.revision), (2, 1), "{url}");
        // A merge moves b's tickets to a, each remembering b; b takes no more.
        store.merge_incidents("a", &["b".into()]).await.unwrap();
        assert_eq!(ids("a").await, ["2", "3", "4", "5", "6"], "{url}");
        let moved = store.incident_links("a").await.unwrap();
        assert_eq!(moved[2].merged_from.as_deref(), Some("b"));
        assert_eq!(moved[0].merged_from, None);
        assert_eq!(
            store.incident("b").await.unwrap().merged_into.as_deref(),
            Some("a")
        );
        let live = store.live_incidents(since).await.unwrap();
        assert_eq!(live.len(), 1, "{url}");
        assert_eq!(live[0].tracked.recent.len(), 3, "the rates add up");
        let open = store
            .incidents(Some(IncidentStatus::Open), 10)
            .await
            .unwrap();
        assert_eq!(open.len(), 1, "a merged one is not listed as open: {url}");
        assert_eq!(store.incidents(None, 10).await.unwrap().len(), 2);
        // A link to a merged incident goes where it was merged.
        let mut late = vec![decision("8", "billing", Assignee::RoundRobin)];
        late[0].incident = Some(incident_link("8", "b", LinkedBy::Routing));
        record(&store, &mut late, None, &policy).await;
        let redirected = store.incident_links("a").await.unwrap();
        let eight = redirected
            .iter()
            .find(|l| l.decision_id == "8")
            .expect("linked to a");
        assert_eq!(eight.merged_from.as_deref(), Some("b"), "{url}");
        assert_eq!(
            store.incident_origins("a").await.unwrap(),
            [
                ("billing.refund".to_string(), Some("en".to_string())),
                ("billing.invoice".to_string(), Some("en".to_string()))
            ]
        );
        assert_eq!(store.incidents_to_remodel().await.unwrap(), ["a"]);
        let again = store.merge_incidents("a", &["b".into()]).await;
        assert_eq!(
            again.unwrap_err().to_string(),
            "incident b was merged into a already"
        );
        // An unmerge brings them back.
        assert_eq!(store.unmerge_incident("b").await.unwrap(), "a");
        assert_eq!(ids("b").await, ["4", "5", "6", "8"], "{url}");
        assert_eq!(store.incident("b").await.unwrap().merged_into, None);
        assert_eq!(store.incidents_to_remodel().await.unwrap(), ["a", "b"]);
        let not = store.unmerge_incident("b").await;
        assert_eq!(
            not.unwrap_err().to_string(),
            "incident b is not merged into another"
        );
        // A split moves tickets to a new incident, as a person's links.
        let mut c = stored_incident("c", at);
        c.split_from = Some("b".into());
        store.split_incident("b", &["5".into()], &c).await.unwrap();
        assert_eq!(
            (ids("b").await, ids("c").await),
            (
                vec!["4".to_string(), "6".into(), "8".into()],
                vec!["5".to_string()]
            )
        );
        let split = &store.incident_links("c").await.unwrap()[0];
        assert_eq!(split.linked_by, LinkedBy::Person);
        assert!(
            split
                .reason
                .starts_with("split from incident b by a person; before: 5 is b's"),
            "{}",
            split.reason
        );
        let stored = store.incident("c").await.unwrap();
        assert_eq!(
            (stored.tracked, stored.split_from),
            (c.tracked, c.split_from),
            "{url}"
        );
        let bad = store
            .split_incident("b", &["9".into()], &stored_incident("d", at))
            .await;
        assert_eq!(
            bad.unwrap_err().to_string(),
            "decision 9 is not linked to incident b"
        );
        assert!(store.incident("d").await.is_err(), "nothing stored: {url}");
        // An erasure marks the incidents its ticket was part of, and takes its unlink too.
        for id in ["a", "b", "c"] {
            let i = store.incident(id).await.unwrap();
            let saved = store.save_incident_model(&i.tracked, i.remodel_marks).await;
            assert!(saved.unwrap());
        }
        let removed = store.erase_ticket("t-1").await.unwrap();
        assert_eq!(removed["incident_unlinks"], 1, "{url}");
        assert!(store.incidents_to_remodel().await.unwrap().is_empty());
        store.erase_ticket("t-6").await.unwrap();
        assert_eq!(store.incidents_to_remodel().await.unwrap(), ["b"], "{url}");
        // So does a purge of the embeddings.
        store
            .purge_texts(now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(
            store.incidents_to_remodel().await.unwrap(),
            ["a", "b", "c"],
            "{url}"
        );
    }
}

#[tokio::test]
async fn incident_alerts_are_queued_with_the_change_claimed_once_retried_and_given_up() {
    use crate::incident::track::LinkedBy;
    use crate::store::{AlertOutcome, AlertState};
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let policy = policy("billing", &["ann"]);
        for k in 1..=9 {
            let mut d = vec![decision(&k.to_string(), "billing", Assignee::RoundRobin)];
            record(&store, &mut d, None, &policy).await;
        }
        let at = now();
        let links = |ids: &[&str]| -> Vec<IncidentLink> {
            ids.iter()
                .map(|d| incident_link(d, "a", LinkedBy::Detection))
                .collect()
        };
        let a = stored_incident("a", at);
        store
            .open_incident(&a, &links(&["1", "2"]), true)
            .await
            .unwrap();
        // Grown by one ticket: not yet twice the alerted ones; by two more: alerted.
        store
            .update_incident(&a.tracked, &links(&["3"]), true)
            .await
            .unwrap();
        assert_eq!(store.alerts(None, 10).await.unwrap().len(), 1, "{url}");
        store
            .update_incident(&a.tracked, &links(&["4"]), true)
            .await
            .unwrap();
        let queued = store.alerts(None, 10).await.unwrap();
        let events: Vec<(&str, i64)> = queued
            .iter()
            .map(|q| (q.event.as_str(), q.body["tickets"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            events,
            [("incident.grew", 4), ("incident.opened", 2)],
            "{url}"
        );
        assert_eq!(queued[1].body["detection"]["count"], 9);
        // Without alerts configured, or once dismissed: none.
        store
            .update_incident(&a.tracked, &links(&["5", "6", "7", "8"]), false)
            .await
            .unwrap();
        store
            .set_incident_status("a", IncidentStatus::Dismissed)
            .await
            .unwrap();
        store
            .update_incident(&a.tracked, &links(&["9"]), true)
            .await
            .unwrap();
        assert_eq!(store.alerts(None, 10).await.unwrap().len(), 2, "{url}");
        // A claim takes each due alert once, until its lease ends, an incident's in order.
        let lease = now() + chrono::Duration::seconds(60);
        let claimed = store.claim_alerts(lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 1, "the later waits for the earlier: {url}");
        let opened = &claimed[0];
        assert_eq!(
            (opened.event.as_str(), opened.attempts),
            ("incident.opened", 1)
        );
        assert_eq!(opened.next_at, lease);
        assert!(store.claim_alerts(lease, 10).await.unwrap().is_empty());
        let retry_at = now() - chrono::Duration::seconds(1);
        let retry = AlertOutcome::Retry {
            at: retry_at,
            status: Some(503),
            error: "busy".into(),
        };
        store.finish_alert(&opened.id, lease, &retry).await.unwrap();
        let again = store.claim_alerts(lease, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (
                again[0].id.as_str(),
                again[0].attempts,
                again[0].last_status
            ),
            (opened.id.as_str(), 2, Some(503))
        );
        // A finish with a lease that is not the claim's changes nothing.
        let delivered = AlertOutcome::Delivered(200);
        store
            .finish_alert(&opened.id, now(), &delivered)
            .await
            .unwrap();
        let by = |state| {
            let store = &store;
            async move { store.alerts(Some(state), 10).await.unwrap() }
        };
        assert!(by(AlertState::Delivered).await.is_empty(), "{url}");
        let dead = AlertOutcome::Dead {
            status: Some(410),
            error: "gone".into(),
        };
        store.finish_alert(&opened.id, lease, &dead).await.unwrap();
        // Given up, it no longer holds the next back.
        let grew = store.claim_alerts(lease, 10).await.unwrap();
        assert_eq!(grew.len(), 1);
        assert_eq!(grew[0].event, "incident.grew", "{url}");
        store
            .finish_alert(&grew[0].id, lease, &delivered)
            .await
            .unwrap();
        assert_eq!(
            by(AlertState::Dead).await[0].last_error.as_deref(),
            Some("gone")
        );
        assert_eq!(by(AlertState::Delivered).await.len(), 1, "{url}");
        let back = store.retry_alert(&opened.id).await.unwrap();
        assert_eq!((back.state, back.attempts), (AlertState::Pending, 0));
        let err = store.retry_alert(&grew[0].id).await.unwrap_err();
        assert_eq!(err.to_string(), format!("no dead alert {}", grew[0].id));
        // Finished alerts go with retention; a pending one stays.
        let later = now() + chrono::Duration::seconds(1);
        assert_eq!(store.purge_alerts(later).await.unwrap(), 1, "{url}");
        assert_eq!(store.alerts(None, 10).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn console_sessions_are_shared_and_end() {
    let (a, b) = replicas().await;
    let s = ConsoleSession {
        name: "ann".into(),
        csrf: "c".into(),
        expires_at: now() + chrono::Duration::hours(8),
    };
    a.insert_session("h1", &s).await.unwrap();
    assert_eq!(
        b.console_session("h1", Utc::now()).await.unwrap(),
        Some(s.clone())
    );
    let later = s.expires_at + chrono::Duration::seconds(1);
    assert_eq!(b.console_session("h1", later).await.unwrap(), None, "ended");
    b.end_session("h1").await.unwrap();
    assert_eq!(a.console_session("h1", Utc::now()).await.unwrap(), None);
    a.insert_session("h2", &s).await.unwrap();
    assert_eq!(a.purge_sessions(later).await.unwrap(), 1);
}

#[tokio::test]
async fn changes_are_announced_to_other_replicas_and_one_retrains_at_a_time() {
    let (a, b) = replicas().await;
    let mut heard = b
        .changes()
        .await
        .unwrap()
        .expect("PostgreSQL announces changes");
    a.save_rules("v1", "h", "seed", "", None, None)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await;
    assert_eq!(got.unwrap(), Some(Some(Topic::Rules)));
    a.insert_model(&model("m1", ModelStatus::Candidate))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await;
    assert_eq!(got.unwrap(), Some(Some(Topic::Models)));
    // One process retrains at a time; the right goes with its holder.
    let held = a.try_exclusive(Exclusive::Retrain).await.unwrap().unwrap();
    assert!(b.try_exclusive(Exclusive::Retrain).await.unwrap().is_none());
    drop(held);
    let mut again = None;
    for _ in 0..50 {
        again = b.try_exclusive(Exclusive::Retrain).await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "released when its connection closed");
    // A holder whose connection dies knows it has lost the right, which another takes.
    let mut watch = a
        .try_exclusive(Exclusive::Incidents)
        .await
        .unwrap()
        .unwrap();
    assert!(watch.still_held().await);
    assert!(b
        .try_exclusive(Exclusive::Incidents)
        .await
        .unwrap()
        .is_none());
    // The key 0x6972_696e_6364 is classid 0x6972, objid 0x696e_6364 in pg_locks.
    let killed = raw_scalar(
        a.url(),
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND classid = 26994 AND objid = 1768842084) t",
    )
    .await;
    assert_eq!(killed, 1);
    assert!(!watch.still_held().await);
    assert!(b
        .try_exclusive(Exclusive::Incidents)
        .await
        .unwrap()
        .is_some());
}

/// Every row of every table, as cells.
async fn everything(store: &Store) -> Vec<Vec<Vec<copy::Cell>>> {
    let mut all = Vec::new();
    let mut snapshot = store.snapshot().await.unwrap();
    for t in copy::TABLES {
        all.push(snapshot.rows(t, None, 100_000).await.unwrap());
    }
    all
}

#[tokio::test]
async fn a_database_is_copied_whole_into_an_empty_one_and_never_into_a_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let from = Store::open(&release_ebbae75(dir.path())).await.unwrap();
    from.insert_shadow("d-x", "c5bcb0ad9675", "billing", 0.25)
        .await
        .unwrap();
    let pg = Store::open(&DatabaseUrl::Postgres(pg_cluster::fresh_database()))
        .await
        .unwrap();
    let copied = copy::copy(&from, &pg).await.unwrap();
    assert_eq!(
        (
            copied["decisions"],
            copied["rules_versions"],
            copied["feedback"],
            copied["jobs"]
        ),
        (9, 3, 2, 1)
    );
    assert_eq!(copied.len(), copy::TABLES.len());
    assert_eq!(
        everything(&pg).await,
        everything(&from).await,
        "row for row, times and flags included"
    );
    // The copy serves: the same history, the same log, and the cursors go on.
    assert_eq!(
        pg.rules_history().await.unwrap(),
        from.rules_history().await.unwrap()
    );
    assert_eq!(pg.models().await.unwrap(), from.models().await.unwrap());
    let policy = policy("billing", &["anna", "boris"]);
    let mut next = vec![decision("pg-1", "billing", Assignee::RoundRobin)];
    record(&pg, &mut next, None, &policy).await;
    assert_eq!(next[0].assignee.as_deref(), Some("anna"));
    // Never into a database that holds data.
    let err = copy::copy(&from, &pg).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the target database is not empty (rules_versions has 3 rows); copy into a new, empty database"
    );
    // And back, into a new SQLite file.
    let back = Store::open(&DatabaseUrl::Sqlite(dir.path().join("back.db")))
        .await
        .unwrap();
    copy::copy(&pg, &back).await.unwrap();
    assert_eq!(everything(&back).await, everything(&pg).await);
    assert_eq!(
        back.recent_decisions(100).await.unwrap().len(),
        10,
        "nine and the new one"
    );
}

/// A copy made while a replica keeps routing on the source reads one snapshot: every row it
/// copied refers only to rows it copied too (an assignment to its decision, a shadow result to
/// its decision), across pages of the composite keys as well.
#[tokio::test]
async fn a_copy_reads_one_snapshot_while_the_source_keeps_serving() {
    let from = Arc::new(
        Store::open(&DatabaseUrl::Postgres(pg_cluster::fresh_database()))
            .await
            .unwrap(),
    );
    let policy = Arc::new(policy("t", &["ann", "bob"]));
    for i in 0..600 {
        let mut d = vec![decision(&format!("s{i:04}"), "t", Assignee::RoundRobin)];
        record(&from, &mut d, None, &policy).await;
        for m in ["m1", "m2"] {
            from.insert_shadow(&format!("s{i:04}"), m, "billing", 0.5)
                .await
                .unwrap();
        }
    }
    let writing = {
        let (from, policy) = (Arc::clone(&from), Arc::clone(&policy));
        tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{i:05}");
                let mut d = vec![decision(&id, "t", Assignee::RoundRobin)];
                record(&from, &mut d, None, &policy).await;
                from.insert_shadow(&id, "m1", "billing", 0.5).await.unwrap();
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let to = Store::open(&DatabaseUrl::Sqlite(dir.path().join("copy.db")))
        .await
        .unwrap();
    let copied = copy::copy(&from, &to).await.unwrap();
    writing.abort();
    assert!(copied["decisions"] >= 600 && copied["shadow_results"] >= 1200);
    let tables = everything(&to).await;
    let rows_of = |name: &str| &tables[copy::TABLES.iter().position(|t| t.name == name).unwrap()];
    let decisions: BTreeSet<String> = rows_of("decisions")
        .iter()
        .map(|r| match &r[0] {
            copy::Cell::Text(Some(id)) => id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(decisions.len() as u64, copied["decisions"]);
    for name in ["assignments", "shadow_results"] {
        for row in rows_of(name) {
            let copy::Cell::Text(Some(id)) = &row[0] else {
                panic!("{row:?}")
            };
            assert!(
                decisions.contains(id),
                "{name} of {id}, a decision not copied"
            );
        }
    }
    assert_eq!(
        rows_of("assignments").len(),
        decisions.len(),
        "every copied decision's assignment"
    );
}

#[tokio::test]
async fn postgresql_is_reached_over_tls_with_the_certificate_checked() {
    let plain = pg_cluster::fresh_database();
    let ca = pg_cluster::ca_certificate();
    let host = plain.replace("@127.0.0.1:", "@localhost:");
    let verified = format!("{host}?sslmode=verify-full&sslrootcert={}", ca.display());
    let store = Store::open(&DatabaseUrl::Postgres(verified.clone()))
        .await
        .unwrap();
    store
        .save_rules("v1", "h", "seed", "", None, None)
        .await
        .unwrap();
    store.close().await;
    // The connection is encrypted (the server says so).
    let pool = sqlx::PgPool::connect(&verified).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl);
    pool.close().await;
    // A certificate no trusted authority signed is refused, and the error says why.
    let untrusted = format!("{host}?sslmode=verify-full");
    let err = Store::open(&DatabaseUrl::Postgres(untrusted))
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // `require` encrypts without checking the certificate.
    let required = format!("{host}?sslmode=require");
    Store::open(&DatabaseUrl::Postgres(required)).await.unwrap();
}

/// A PostgreSQL database at schema 3 (the first release of that backend) holding answers stored
/// as response bodies and rule inputs (with customer facts) as JSON: schema 4 keeps the answers
/// (now rebuilt from the decisions), the channel and language as columns, and drops the facts.
#[tokio::test]
async fn a_postgres_database_of_schema_3_is_upgraded_in_place() {
    let url = DatabaseUrl::Postgres(pg_cluster::fresh_database());
    let pool = sqlx::PgPool::connect(&url.to_string()).await.unwrap();
    let first_three = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            postgres::MIGRATOR
                .iter()
                .filter(|m| m.version <= 3)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    first_three.run(&pool).await.unwrap();
    let one = r#"{"decision_id":"d1","ticket_id":"t1","team":"billing"}"#;
    let two = r#"{"decision_id":"d2","ticket_id":"t2","team":null}"#;
    let inputs = r#"{"ticket":{"id":"t1","body":"","channel":"email","language":"ru","customer":{"tier":"vip"},"fields":{"email":"a@b.c"}},"received_at":"2026-12-01T09:30:00Z"}"#;
    for (id, decision) in [("d1", one), ("d2", two)] {
        sqlx::query(
            "INSERT INTO decisions VALUES ($1, $1, now(), now(), 'billing', 0.9, 'en', NULL, NULL, \
             'open', 'normal', 'm', 1, $2, $3)",
        )
        .bind(id)
        .bind(inputs)
        .bind(decision)
        .execute(&pool)
        .await
        .unwrap();
    }
    for (key, response) in [
        ("one", one.to_string()),
        ("batch", format!(r#"{{"decisions":[{two},{one}]}}"#)),
    ] {
        sqlx::query("INSERT INTO idempotency_keys VALUES ($1, 'h', $2, now())")
            .bind(key)
            .bind(response)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let store = Store::open(&url).await.unwrap();
    let replay = |batch, decisions: &[&str]| StoredReply {
        batch,
        decisions: decisions.iter().map(|d| d.to_string()).collect(),
    };
    assert_eq!(
        store.idempotent_response("one", "h").await.unwrap(),
        Some(replay(false, &[one]))
    );
    assert_eq!(
        store.idempotent_response("batch", "h").await.unwrap(),
        Some(replay(true, &[two, one]))
    );
    let logged = store.recent_decisions(1).await.unwrap().remove(0);
    assert_eq!(
        (logged.channel.as_deref(), logged.language_given.as_deref()),
        (Some("email"), Some("ru"))
    );
}

/// Two replicas' transactions that deadlock: PostgreSQL aborts one, and that error is one a
/// retry clears (the API answers it with 503 `storage_failed` and `Retry-After`, not 500).
#[tokio::test]
async fn a_deadlock_between_replicas_is_a_busy_database() {
    let url = pg_cluster::fresh_database();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for sql in [
        "CREATE TABLE t (id INT PRIMARY KEY, n INT)",
        "INSERT INTO t VALUES (1, 0), (2, 0)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let (mut one, mut two) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
    let bump = "UPDATE t SET n = n + 1 WHERE id = $1";
    sqlx::query(bump).bind(1).execute(&mut *one).await.unwrap();
    sqlx::query(bump).bind(2).execute(&mut *two).await.unwrap();
    let (a, b) = tokio::join!(
        sqlx::query(bump).bind(2).execute(&mut *one),
        sqlx::query(bump).bind(1).execute(&mut *two),
    );
    let err = a.err().or(b.err()).expect("one of the two is aborted");
    let err = StoreError::from(err);
    assert!(err.is_busy(), "{err}");
    assert!(!StoreError::NotFound("x".into()).is_busy());
}

fn event(delivery: &str, ticket: &str) -> connectors::NewInboxEvent {
    connectors::NewInboxEvent {
        connector: "desk".into(),
        delivery_id: delivery.into(),
        kind: connectors::EventKind::Created,
        event_type: "created".into(),
        ticket_id: ticket.into(),
        ticket: Some(r#"{"body":"refund"}"#.into()),
        context: None,
        received_at: now(),
    }
}

fn write_back(decision: &str, ticket: &str) -> connectors::NewWriteBack {
    connectors::NewWriteBack {
        connector: "desk".into(),
        ticket_id: ticket.into(),
        decision_id: decision.into(),
        requests: vec![connectors::HttpCall {
            merge_tags_from: None,
            method: "POST".into(),
            path: "http://127.0.0.1:9/hook".into(),
            body: Some(serde_json::json!({"decision": decision})),
        }],
        context: None,
        dead: None,
    }
}

#[tokio::test]
async fn an_event_is_stored_once_claimed_under_a_lease_and_queues_its_write_back_once() {
    use connectors::{Delivery, InboxOutcome, InboxState, OutboxState};
    let (_dir, stores) = both().await;
    for (url, store) in stores {
        let (id, new) = store.insert_inbox(&event("d1", "t1")).await.unwrap();
        assert!(new);
        // The same delivery again: the first event, nothing new.
        assert_eq!(
            store.insert_inbox(&event("d1", "t1")).await.unwrap(),
            (id.clone(), false)
        );
        let lease = now() + chrono::Duration::seconds(60);
        let claimed = store.claim_inbox(lease, 10).await.unwrap();
        assert_eq!((claimed.len(), claimed[0].attempts), (1, 1), "{url}");
        // Claimed: nobody else gets it until the lease ends.
        assert!(store.claim_inbox(lease, 10).await.unwrap().is_empty());
        let done = InboxOutcome::Done {
            decision_id: Some("dec1".into()),
            note: None,
            write_back: Some(write_back("dec1", "t1")),
        };
        // A replica whose claim ran out (another claim since) changes nothing.
        let stale = lease - chrono::Duration::seconds(1);
        store.finish_inbox(&id, stale, &done).await.unwrap();
        assert_eq!(
            store.inbox_event(&id).await.unwrap().state,
            InboxState::Pending
        );
        store.finish_inbox(&id, lease, &done).await.unwrap();
        // Finishing twice changes nothing, queues nothing.
        store.finish_inbox(&id, lease, &done).await.unwrap();
        let e = store.inbox_event(&id).await.unwrap();
        assert_eq!(
            (e.state, e.ticket, e.decision_id.as_deref()),
            (InboxState::Done, None, Some("dec1"))
        );
        let out = store.claim_outbox(lease, 10).await.unwrap();
        assert_eq!(out.len(), 1, "{url}");
        assert_eq!(out[0].requests, write_back("dec1", "t1").requests);
        let retry_at = now() - chrono::Duration::seconds(1);
        let failed = Delivery::Retry {
            step: 0,
            at: retry_at,
            status: Some(500),
            error: "boom".into(),
        };
        store
            .finish_write_back(&out[0].id, lease, &failed)
            .await
            .unwrap();
        // Due again: claimed again, the attempt counted; a rate-limit wait is not an attempt.
        let again = store.claim_outbox(lease, 10).await.unwrap();
        assert_eq!((again[0].attempts, again[0].last_status), (2, Some(500)));
        store
            .finish_write_back(&out[0].id, lease, &Delivery::Postponed { at: retry_at })
            .await
            .unwrap();
        let again = store.claim_outbox(lease, 10).await.unwrap();
        assert_eq!(again[0].attempts, 2);
        let dead = Delivery::Dead {
            step: 0,
            status: Some(400),
            error: "bad group".into(),
        };
        store
            .finish_write_back(&out[0].id, lease, &dead)
            .await
            .unwrap();
        let counts = store.queue_counts("desk").await.unwrap();
        assert_eq!(
            (
                counts.outbox_dead,
                counts.outbox_pending,
                counts.inbox_pending
            ),
            (1, 0, 0)
        );
        // A dead letter is retried once asked; a pending one is not "retried".
        let w = store
            .retry_write_back("desk", &out[0].id, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((w.state, w.attempts), (OutboxState::Pending, 0));
        assert!(store
            .retry_write_back("desk", &out[0].id, None)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .retry_write_back("other", &out[0].id, None)
            .await
            .unwrap()
            .is_none());
        let delivered = Delivery::Delivered {
            step: 1,
            status: 200,
        };
        let w = store.claim_outbox(lease, 10).await.unwrap().remove(0);
        store
            .finish_write_back(&w.id, lease, &delivered)
            .await
            .unwrap();
        let listed = store
            .write_backs("desk", Some(OutboxState::Delivered), 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        // A failed event goes back to the queue when asked, keeping its ticket.
        let (other, _) = store.insert_inbox(&event("d2", "t2")).await.unwrap();
        store.claim_inbox(lease, 10).await.unwrap();
        let failed = InboxOutcome::Failed {
            error: "model down".into(),
        };
        store.finish_inbox(&other, lease, &failed).await.unwrap();
        assert_eq!(store.queue_counts("desk").await.unwrap().inbox_failed, 1);
        assert!(
            store.retry_inbox("desk", &id).await.unwrap().is_none(),
            "done, not failed"
        );
        let e = store.retry_inbox("desk", &other).await.unwrap().unwrap();
        assert_eq!(
            (e.state, e.attempts, e.ticket.is_some()),
            (InboxState::Pending, 0, true)
        );
        // A ticket's events are processed in order: the second waits for the first.
        let (first, _) = store.insert_inbox(&event("d3", "t3")).await.unwrap();
        let (second, _) = store.insert_inbox(&event("d4", "t3")).await.unwrap();
        let of_t3 = |claimed: Vec<connectors::InboxEvent>| -> Vec<String> {
            claimed
                .into_iter()
                .filter(|e| e.ticket_id == "t3")
                .map(|e| e.id)
                .collect()
        };
        let claimed = store.claim_inbox(lease, 10).await.unwrap();
        assert_eq!(of_t3(claimed), std::slice::from_ref(&first), "{url}");
        let done = InboxOutcome::Done {
            decision_id: None,
            note: None,
            write_back: None,
        };
        store.finish_inbox(&first, lease, &done).await.unwrap();
        let claimed = store.claim_inbox(lease, 10).await.unwrap();
        assert_eq!(of_t3(claimed), [second], "{url}");
        // Erasing the ticket removes its event and write-back.
        let removed = store.erase_ticket("t1").await.unwrap();
        assert_eq!(
            (removed["connector_events"], removed["write_backs"]),
            (1, 1),
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_write_back_rate_limit_holds_across_replicas() {
    let (a, b) = replicas().await;
    let window = now();
    let mut taken = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        taken += usize::from(s.take_rate("desk", window, 4, 1).await.unwrap());
    }
    assert_eq!(taken, 4);
    // The next window starts afresh.
    let next = window + chrono::Duration::seconds(60);
    // Several uses at once (a write-back of several requests), no more than are left.
    assert!(a.take_rate("desk", next, 4, 3).await.unwrap());
    assert!(!b.take_rate("desk", next, 4, 2).await.unwrap());
    assert!(b.take_rate("desk", next, 4, 1).await.unwrap());
}

#[tokio::test]
async fn replicas_claim_different_events() {
    let (a, b) = replicas().await;
    for i in 0..40 {
        a.insert_inbox(&event(&format!("d{i}"), &format!("t{i}")))
            .await
            .unwrap();
    }
    let lease = now() + chrono::Duration::seconds(60);
    let claims = (0..8).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { s.claim_inbox(lease, 5).await.unwrap() })
    });
    let mut ids = Vec::new();
    for c in claims {
        ids.extend(c.await.unwrap().into_iter().map(|e| e.id));
    }
    let unique: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!((ids.len(), unique.len()), (40, 40));
}
