//! The admin console in headless Chromium (Debian's `chromium` and `chromium-driver`, driven
//! over WebDriver by fantoccini): log in, try a ticket, see a validation error at its line,
//! edit and save a rule, simulate, roll back, correct a decision, read a model report, switch
//! to Russian, work the learning loop (review queue, corrections, thresholds, a new intent). With `INTENT_ROUTER_SCREENSHOTS=DIR` it saves a screenshot of each view there.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::server::{self, ADMIN_TOKEN};

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "the console tests need Chromium and ChromeDriver: apt-get install chromium chromium-driver",
        );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, url }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--lang=en-US"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// A browser at a view of the console at `base`, logged in with the admin token.
async fn logged_in(driver: &Driver, base: &str, view: &str) -> Client {
    let c = browser(driver).await;
    c.goto(&format!("{base}/#{view}")).await.unwrap();
    let token = c.wait().for_element(Locator::Css("#token")).await.unwrap();
    token.send_keys(ADMIN_TOKEN).await.unwrap();
    click(&c, "#login-submit").await;
    c
}

/// Waits for an element's text to contain `want` (the page updates asynchronously).
async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            last = e.text().await.unwrap_or_default();
            if last.contains(want) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: waited for {want:?}, last text {last:?}");
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn shot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("INTENT_ROUTER_SCREENSHOTS") {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = c.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// Replaces the editor's text (as a paste would) and lets the page re-render.
async fn set_rules_text(c: &Client, text: &str) {
    c.execute(
        "const t = document.querySelector('#rules-text'); t.value = arguments[0]; t.dispatchEvent(new Event('input'));",
        vec![json!(text)],
    )
    .await
    .unwrap();
}

#[test]
fn console_drives_rules_tickets_decisions_and_models_in_chromium() {
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &server::small_learning(d.path()));
    for (i, body) in [
        "You charged my card twice for the same order, refund the extra charge",
        "Сайт лежит у всех, никто в компании не может зайти, ошибка 503",
        "Сколько стоит тариф для команды из 30 человек? Можно демо?",
        "Where is my parcel? The tracking number has not updated for a week",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            s.post("/v1/route", &json!({"id": format!("W-{i}"), "body": body}))
                .status,
            200
        );
    }
    let driver = chromedriver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&driver).await;
        c.goto(&format!("{}/", s.base)).await.unwrap();

        // Login: a route-only token is refused, the admin token opens a session.
        let token = c.wait().for_element(Locator::Css("#token")).await.unwrap();
        token.send_keys(server::ROUTE_TOKEN).await.unwrap();
        click(&c, "#login-submit").await;
        wait_text(&c, "#login-error", "admin").await;
        shot(&c, "login").await;
        c.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
        click(&c, "#login-submit").await;
        wait_text(&c, "#who", "alice-admin").await;

        // Overview: charts over the logged tickets.
        wait_text(&c, "#ov-total", "4 tickets").await;
        shot(&c, "overview").await;

        // Try a ticket: intent chain, decision and trace; nothing logged.
        click(&c, "button[data-view=try]").await;
        c.find(Locator::Css("#try-body")).await.unwrap()
            .send_keys("Your whole platform is down for everyone in our company since 9am!").await.unwrap();
        click(&c, "#try-submit").await;
        wait_text(&c, "#try-team", "oncall").await;
        wait_text(&c, "#try-decision", "tech.outage").await;
        shot(&c, "try").await;

        // Rules: a mistake is shown at its line; the fix saves a new version that serves.
        click(&c, "button[data-view=rules]").await;
        wait_text(&c, "#rules-version", "version 1").await;
        let text: String = c
            .execute("return document.querySelector('#rules-text').value", vec![])
            .await.unwrap().as_str().unwrap().to_string();
        let broken = text.replace("when.intent = \"sales\"", "when.intent = \"sale\"");
        let line = broken.lines().position(|l| l.contains("\"sale\"")).unwrap() + 1;
        set_rules_text(&c, &broken).await;
        click(&c, "#rules-validate").await;
        let errors = wait_text(&c, "#rules-errors", "unknown intent \"sale\"").await;
        assert!(errors.contains(&format!("line {line}:")), "{errors}");
        let marked = wait_text(&c, "#rules-gutter .err", &line.to_string()).await;
        assert_eq!(marked, line.to_string());
        shot(&c, "rules-error").await;
        let fixed = text.replace(
            "then = { team = \"sales\", status = \"open\" }",
            "then = { team = \"sales-emea\", status = \"open\" }",
        );
        set_rules_text(&c, &fixed).await;
        click(&c, "#rules-simulate").await;
        let sim = wait_text(&c, "#sim-summary", "would change").await;
        assert!(sim.contains("sales-emea"), "{sim}");
        shot(&c, "simulate").await;
        click(&c, "#rules-save").await;
        wait_text(&c, "#rules-status", "version 2").await;
        let routed = s.post("/v1/route", &json!({"body": "Сколько стоит тариф для команды из 30 человек? Можно демо?"}));
        assert_eq!(routed.body["team"], "sales-emea");

        // A conflicting save (someone else saved meanwhile) is explained; the text is kept.
        let other = s.admin("PUT", "/v1/rules", Some(&json!({"text": text})), &[("If-Match", "\"2\"")]);
        assert_eq!(other.status, 200);
        set_rules_text(&c, &format!("{fixed}\n# mine\n")).await;
        click(&c, "#rules-save").await;
        wait_text(&c, "#rules-status", "after you opened version 2").await;
        let kept: String = c
            .execute("return document.querySelector('#rules-text').value", vec![])
            .await.unwrap().as_str().unwrap().to_string();
        assert!(kept.ends_with("# mine\n"));

        // History and rollback: back to version 2's text as version 4.
        click(&c, "#rules-reload").await;
        wait_text(&c, "#rules-version", "version 3").await;
        click(&c, "button[data-rollback='2']").await;
        wait_text(&c, "#rules-status", "version 4").await;
        shot(&c, "rules").await;
        let active = s.admin("GET", "/v1/rules", None, &[]);
        assert_eq!(active.header["etag"], "\"4\"");
        assert_eq!(active.body["text"], fixed);

        // Decisions: filter by intent, correct one.
        click(&c, "button[data-view=decisions]").await;
        c.find(Locator::Css("#f-intent")).await.unwrap().send_keys("billing").await.unwrap();
        click(&c, "#dec-apply").await;
        wait_text(&c, "#dec-table", "W-0").await;
        let table = c.find(Locator::Css("#dec-table")).await.unwrap().text().await.unwrap();
        assert!(!table.contains("W-1"), "the filter keeps billing only: {table}");
        click(&c, "button[data-correct]").await;
        c.find(Locator::Css(".correct-form input[name=agent]")).await.unwrap()
            .send_keys("maria").await.unwrap();
        click(&c, ".correct-form button").await;
        wait_text(&c, "#dec-table", "stored").await;
        shot(&c, "decisions").await;

        // Models: the report with its heat map.
        click(&c, "button[data-view=models]").await;
        click(&c, "button[data-report]").await;
        wait_text(&c, "#report-card", "macro-F1").await;
        assert!(c.find(Locator::Css("#heatmap td[data-heat]")).await.is_ok());
        shot(&c, "models").await;
        // Retraining runs as a job that the table follows to its end.
        click(&c, "#models-retrain").await;
        wait_text(&c, "#jobs-table", "alice-admin").await;
        let mut done = false;
        for _ in 0..600 {
            let rows = c.find_all(Locator::Css("#jobs-table tr[data-status=succeeded]")).await.unwrap();
            if !rows.is_empty() {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(done, "{}", c.find(Locator::Css("#jobs-table")).await.unwrap().text().await.unwrap());
        wait_text(&c, "#models-table", "m-").await;
        // The job's line says what the gate made of the candidate.
        wait_text(&c, "#jobs-table tr[data-status=succeeded]", "gate ").await;
        shot(&c, "models-retrained").await;

        // Russian interface.
        click(&c, "#lang").await;
        wait_text(&c, "button[data-view=rules]", "Правила").await;
        shot(&c, "models-ru").await;

        // A change without the CSRF token is refused even with the session cookie.
        let status = c
            .execute_async(
                "const done = arguments[0]; fetch('/v1/rules/rollback', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{\"version\": 1}'}).then(r => done(r.status));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(status, json!(403));
        c.close().await.unwrap();
    });
    let fb = s.admin("GET", "/v1/feedback/report", None, &[]).body;
    assert_eq!(fb["feedback"], 1, "{fb}");
}

#[test]
fn the_connectors_view_shows_dead_letters_and_retries_them() {
    use crate::common::helpdesk::{Helpdesk, Reply};
    use crate::connectors::{connector, created, send};
    let desk = Helpdesk::start();
    desk.script(vec![Reply::new(
        400,
        r#"{"error":"unknown group billing"}"#,
    )]);
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &connector("usedesk", &desk.base));
    assert_eq!(send(&s, "usedesk", &created("ev-1", "U-1")).status, 202);
    desk.wait_for(1, 30);
    let driver = chromedriver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = logged_in(&driver, &s.base, "connectors").await;
        // The connector's row: its webhook URL and one dead letter.
        let row = wait_text(
            &c,
            "#conn-table tr[data-connector=usedesk]",
            "/v1/connectors/usedesk/events",
        )
        .await;
        assert!(row.contains("generic"), "{row}");
        click(&c, "button[data-show=usedesk]").await;
        wait_text(&c, "#conn-detail", "ticket_created").await;
        let dead = wait_text(
            &c,
            "#conn-detail tr[data-state=dead]",
            "unknown group billing",
        )
        .await;
        assert!(dead.contains("U-1"), "{dead}");
        shot(&c, "connectors").await;
        // Retry: queued again, then delivered.
        click(&c, "#conn-detail [data-retry^=outbox]").await;
        wait_text(&c, "#conn-status", "Queued again").await;
        for _ in 0..100 {
            click(&c, "#conn-refresh").await;
            if c.find(Locator::Css("#conn-detail tr[data-state=delivered]"))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_text(&c, "#conn-detail tr[data-state=delivered]", "U-1").await;
        c.close().await.unwrap();
    });
    assert_eq!(desk.requests().len(), 2);
}

#[test]
fn the_incidents_view_charts_an_incident_and_sets_its_status() {
    use crate::incidents::{route, wave, wave_until_linked, CONFIG};
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], CONFIG);
    let (_, linked) = wave_until_linked(&s);
    let incident = linked["incident_id"].as_str().unwrap().to_string();
    for i in 0..4 {
        route(&s, &format!("wave-more-{i}"), &wave(90 + i));
    }
    let driver = chromedriver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = logged_in(&driver, &s.base, "incidents").await;
        let row = format!("#inc-table tr[data-incident='{incident}']");
        wait_text(&c, &row, "billing.payment_failed").await;
        click(&c, &format!("button[data-show='{incident}']")).await;
        // The chart with the detection marked, what the tickets say, and the linked tickets.
        wait_text(
            &c,
            "#inc-card",
            "tickets per 10 min against the usual share",
        )
        .await;
        c.find(Locator::Css("#inc-chart #inc-detection"))
            .await
            .unwrap();
        wait_text(&c, "#inc-words", "gateway").await;
        wait_text(&c, "#inc-representative", "payment failed at checkout").await;
        wait_text(&c, "#inc-links", "routing").await;
        shot(&c, "incidents").await;
        // Acknowledged from the console: the API says so.
        click(&c, "#inc-card button[data-set=acknowledged]").await;
        wait_text(&c, "#inc-status", "Now acknowledged").await;
        wait_text(&c, "#inc-state", "acknowledged").await;
        // A ticket unlinked from the console leaves it.
        click(&c, "#inc-links button[data-unlink]").await;
        wait_text(&c, "#inc-status", "Unlinked").await;
        c.close().await.unwrap();
    });
    let i = s
        .admin("GET", &format!("/v1/incidents/{incident}"), None, &[])
        .body;
    assert_eq!(i["status"], "acknowledged", "{i}");
    let report = s.admin("GET", "/v1/incidents/link-report", None, &[]).body;
    assert_eq!(report["unlinked"], 1, "{report}");
}

/// Sets a number input's value as typing would, and lets the page react.
async fn set_value(c: &Client, css: &str, value: f64) {
    c.execute(
        "const i = document.querySelector(arguments[0]); i.value = arguments[1]; i.dispatchEvent(new Event('input'));",
        vec![json!(css), json!(value)],
    )
    .await
    .unwrap();
}

#[test]
fn the_learning_view_labels_the_review_queue_edits_thresholds_and_adds_an_intent() {
    let d = tempfile::tempdir().unwrap();
    let s = server::start(d.path(), &[]);
    for (i, body) in [
        "You charged my card twice for the same order, refund the extra charge",
        "Hello, I have a question",
        "Where is my parcel? The tracking number has not updated for a week",
    ]
    .iter()
    .enumerate()
    {
        let r = s.post("/v1/route", &json!({"id": format!("L-{i}"), "body": body}));
        assert_eq!(r.status, 200);
    }
    let model = s.call("GET", "/readyz", "", None, &[]).body["model_version"]
        .as_str()
        .unwrap()
        .to_string();
    let thresholds = format!("/v1/models/{model}/thresholds");
    let driver = chromedriver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = logged_in(&driver, &s.base, "learning").await;
        // The review queue: an agent labels the first ticket from it.
        wait_text(&c, "#learn-review", "L-").await;
        click(&c, "#learn-review button[data-correct]").await;
        c.find(Locator::Css(".correct-form input[name=agent]"))
            .await
            .unwrap()
            .send_keys("maria")
            .await
            .unwrap();
        click(&c, ".correct-form button").await;
        wait_text(&c, "#learn-review", "stored").await;
        click(&c, "button[data-view=learning]").await;
        wait_text(&c, "#learn-counts", "1 corrections").await;

        // Thresholds: a depth's value moves the nodes that follow it; one node gets its own.
        wait_text(&c, "#learn-thresholds", &model).await;
        set_value(&c, "#learn-thresholds [data-depth='1']", 0.45).await;
        set_value(&c, "#learn-thresholds [data-id='billing.refund']", 0.97).await;
        shot(&c, "learning").await;
        click(&c, "#thr-save").await;
        wait_text(&c, "#thr-status", "version 1").await;
        let v = s.admin("GET", &thresholds, None, &[]).body;
        assert_eq!(v["version"], 1, "{v}");
        let depth = v["overrides"]["depth"].as_array().unwrap();
        assert_eq!(depth.len(), 2, "{v}");
        assert!((depth[1].as_f64().unwrap() - 0.45).abs() < 1e-6, "{v}");
        let nodes = v["overrides"]["nodes"].as_object().unwrap();
        assert_eq!(nodes.len(), 1, "only the node given its own value: {v}");
        assert!(
            (nodes["billing.refund"].as_f64().unwrap() - 0.97).abs() < 1e-6,
            "{v}"
        );
        // A value outside 0..1 is refused in the page; nothing is sent.
        set_value(&c, "#learn-thresholds [data-id='billing.refund']", 1.5).await;
        click(&c, "#thr-save").await;
        wait_text(&c, "#thr-status", "a threshold is a number from 0 to 1").await;
        assert_eq!(s.admin("GET", &thresholds, None, &[]).body["version"], 1);
        // Someone else saves meanwhile: the console says so and reloads theirs.
        let other = s.admin(
            "PUT",
            &thresholds,
            Some(&json!({"overrides": {"nodes": {"billing": 0.6}}})),
            &[("If-Match", "\"1\"")],
        );
        assert_eq!(other.status, 200, "{}", other.body);
        set_value(&c, "#learn-thresholds [data-id='billing.refund']", 0.9).await;
        click(&c, "#thr-save").await;
        wait_text(&c, "#thr-status", "Someone saved version 2").await;
        wait_text(&c, "#learn-thresholds h3", "version 2").await;
        // Back to the model as trained.
        click(&c, "#thr-reset").await;
        wait_text(&c, "#thr-status", "version 3").await;

        // A new intent, which agents can label with at once.
        c.find(Locator::Css("#learn-add input[name=intent_id]"))
            .await
            .unwrap()
            .send_keys("billing.crypto")
            .await
            .unwrap();
        c.find(Locator::Css("#learn-add input[name=en]"))
            .await
            .unwrap()
            .send_keys("Paying in cryptocurrency")
            .await
            .unwrap();
        c.find(Locator::Css("#learn-add input[name=ru]"))
            .await
            .unwrap()
            .send_keys("Оплата криптовалютой")
            .await
            .unwrap();
        click(&c, "#learn-add button").await;
        wait_text(&c, "#learn-status", "the next retraining learns it").await;

        // In Russian.
        click(&c, "#lang").await;
        wait_text(&c, "button[data-view=learning]", "Обучение").await;
        wait_text(&c, "#learn-thresholds h3", "Пороги цепочки").await;
        shot(&c, "learning-ru").await;
        c.close().await.unwrap();
    });
    let v = s.admin("GET", &thresholds, None, &[]).body;
    assert_eq!(
        (v["version"].as_i64(), &v["overrides"]),
        (Some(3), &json!({"depth": [], "nodes": {}})),
        "{v}"
    );
    let fb = s.admin("GET", "/v1/feedback/report", None, &[]).body;
    assert_eq!(fb["feedback"], 1, "{fb}");
    let intents = s.admin("GET", "/v1/intents", None, &[]).body;
    assert!(intents.to_string().contains("billing.crypto"), "{intents}");
}
