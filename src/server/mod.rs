//! The HTTP channel (`intent-router serve`): the state (settings, tokens and the services'
//! handles), startup, the router with its middleware (request ids, metrics, time limit, body
//! limit) and graceful shutdown. Handlers translate HTTP to the services and back: `api`
//! (tickets), `rules_api` (rules), `learn_api` (feedback, intents, models), `console`.

pub mod api;
pub mod auth;
pub mod connectors_api;
pub mod console;
pub mod error;
pub mod extract;
pub mod incidents_api;
pub mod jobs_api;
pub mod learn_api;
pub mod openapi;
pub mod rules_api;
pub mod thresholds_api;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use chrono::{DateTime, Utc};
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::Auth;
use self::error::{ApiError, Code};
use crate::config::{self, Settings};
use crate::metrics::Metrics;
use crate::model::source;
use crate::nats::NatsChannel;
use crate::registry::{self, ModelRegistry};
use crate::rules::live::LiveRules;
use crate::service::{
    ConnectorService, ErasureService, FeedbackService, IncidentService, Jobs, RoutePolicy,
    RouteService,
};
use crate::serving::LiveModels;
use crate::store::Store;

/// Everything the handlers share: settings, tokens, the database and the live handles.
pub struct AppState {
    /// Settings.
    pub settings: Settings,
    /// Tokens.
    pub auth: Auth,
    /// The database.
    pub store: Arc<Store>,
    /// Metrics (the batching worker holds a handle too).
    pub metrics: Arc<Metrics>,
    /// The active and shadow models.
    pub models: LiveModels,
    /// The active rules.
    pub rules: LiveRules,
    /// Routing, classification and dry runs.
    pub route: RouteService,
    /// Model versions: activation, rollback, shadow, retraining.
    pub registry: ModelRegistry,
    /// Long operations (retraining over HTTP and by the schedule).
    pub jobs: Jobs,
    /// Agents' corrections and taxonomy additions.
    pub feedback: FeedbackService,
    /// Data-subject erasure (and the embedding cache it cleans).
    pub erasure: Arc<ErasureService>,
    /// Incidents: linking on the request path, the detector off it.
    pub incidents: IncidentService,
    /// Helpdesk connectors: webhooks in, write-backs out.
    pub connectors: ConnectorService,
    /// The NATS queue channel, when configured.
    pub nats: Option<NatsChannel>,
    /// Set once the model is warmed and the rules are active.
    pub ready: AtomicBool,
}

/// Builds the state: database, model (warmed), rules.
pub async fn build_state(settings: Settings) -> anyhow::Result<Arc<AppState>> {
    let auth = Auth::new(
        &settings.tokens,
        settings.dev_no_auth,
        settings.limits.rate_per_minute,
    )
    .map_err(anyhow::Error::msg)?;
    let store = Store::connect(&settings.database, &settings.connect)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", settings.database))?;
    let store = Arc::new(store);
    let auth = auth.with_sessions(Arc::clone(&store));
    let metrics = Arc::new(Metrics::new());
    let registry_config = settings.registry().map_err(anyhow::Error::msg)?;
    let configured = match &settings.model {
        Some(d) => d.clone(),
        None => source::find_default_model()?,
    };
    let (model, shadow) =
        registry::bootstrap(&store, &configured, &registry_config, &metrics).await?;
    let rules = LiveRules::start(
        Arc::clone(&store),
        Arc::clone(&metrics),
        settings.rules.as_deref(),
        &model.engine.classifier().tree,
    )
    .await?;
    let models = LiveModels::new(model, shadow, Arc::clone(&metrics));
    let registry = ModelRegistry::serving(
        Arc::clone(&store),
        rules.clone(),
        models.clone(),
        Arc::clone(&metrics),
        registry_config,
    );
    if let Some(path) = &settings.thresholds {
        registry.import_thresholds(path).await?;
    }
    let jobs = Jobs::new(Arc::clone(&store), registry.clone(), error::job_error);
    let feedback = FeedbackService::new(Arc::clone(&store), models.clone(), rules.clone());
    jobs.fail_interrupted().await?;
    let incidents = IncidentService::new(
        Arc::clone(&store),
        models.clone(),
        settings.incidents.clone(),
        Arc::clone(&metrics),
    );
    incidents.reload().await?;
    let route = RouteService::new(
        models.clone(),
        rules.clone(),
        Arc::clone(&store),
        Arc::clone(&metrics),
        RoutePolicy {
            max_ticket_chars: settings.limits.max_ticket_chars,
            max_batch_tickets: settings.limits.max_batch_tickets,
            keep_text: !settings.text_retention.is_zero(),
            redact_stored_text: settings.redact_stored_text,
            assignment: settings.assignment.clone(),
        },
        incidents.clone(),
    );
    let erasure = Arc::new(ErasureService::new(
        Arc::clone(&store),
        settings.learning.learn.cache_dir.clone(),
        settings.text_retention,
    ));
    let connectors = ConnectorService::new(
        settings.connectors.clone(),
        Arc::clone(&store),
        route.clone(),
        feedback.clone(),
        Arc::clone(&metrics),
        settings.claim_lease,
    );
    let nats = settings
        .nats
        .clone()
        .map(|n| NatsChannel::new(n, route.clone(), Arc::clone(&metrics)));
    let state = Arc::new(AppState {
        incidents,
        erasure,
        connectors,
        nats,
        settings,
        auth,
        store,
        metrics,
        models,
        rules,
        route,
        registry,
        jobs,
        feedback,
        ready: AtomicBool::new(false),
    });
    state.ready.store(true, Ordering::Release);
    Ok(state)
}

/// Every operation of the API: the router and the OpenAPI document are both made from this
/// list and the handlers' annotations, so nothing is routed that is not documented.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(api::healthz))
        .routes(routes!(api::readyz))
        .routes(routes!(api::metrics))
        .routes(routes!(api::openapi))
        .routes(routes!(api::route))
        .routes(routes!(api::route_batch))
        .routes(routes!(api::dry_run))
        .routes(routes!(api::classify))
        .routes(routes!(api::intents, learn_api::add_intent))
        .routes(routes!(console::decisions))
        .routes(routes!(api::decision))
        .routes(routes!(api::erase_ticket))
        .routes(routes!(api::assignments))
        .routes(routes!(api::close_assignment))
        .routes(routes!(console::stats))
        .routes(routes!(rules_api::get_rules, rules_api::put_rules))
        .routes(routes!(rules_api::validate))
        .routes(routes!(rules_api::versions))
        .routes(routes!(rules_api::version))
        .routes(routes!(rules_api::rollback))
        .routes(routes!(rules_api::simulate))
        .routes(routes!(learn_api::feedback))
        .routes(routes!(learn_api::feedback_report))
        .routes(routes!(learn_api::review))
        .routes(routes!(learn_api::list_models))
        .routes(routes!(learn_api::retrain))
        .routes(routes!(incidents_api::list))
        .routes(routes!(incidents_api::get, incidents_api::update))
        .routes(routes!(incidents_api::link_report))
        .routes(routes!(incidents_api::unlink))
        .routes(routes!(incidents_api::split))
        .routes(routes!(incidents_api::merge))
        .routes(routes!(incidents_api::unmerge))
        .routes(routes!(incidents_api::alerts))
        .routes(routes!(incidents_api::retry_alert))
        .routes(routes!(incidents_api::series))
        .routes(routes!(jobs_api::list))
        .routes(routes!(jobs_api::get))
        .routes(routes!(jobs_api::cancel))
        .routes(routes!(learn_api::rollback))
        .routes(routes!(learn_api::activate))
        .routes(routes!(learn_api::set_shadow))
        .routes(routes!(learn_api::shadow_report))
        .routes(routes!(
            thresholds_api::get_thresholds,
            thresholds_api::put_thresholds
        ))
        .routes(routes!(thresholds_api::thresholds_history))
        .routes(routes!(console::model_report))
        .routes(routes!(console::index))
        .routes(routes!(console::asset))
        .routes(routes!(console::login))
        .routes(routes!(console::session))
        .routes(routes!(console::logout))
        .routes(routes!(connectors_api::receive))
        .routes(routes!(connectors_api::list))
        .routes(routes!(connectors_api::events))
        .routes(routes!(connectors_api::write_backs))
        .routes(routes!(connectors_api::retry_write_back))
        .routes(routes!(connectors_api::retry_event))
}

/// The router with its middleware, declared as layers (outermost first): a request id (the
/// client's sane `X-Request-Id`, else a new UUID v7) on the request, the response and the log
/// span; the request's span and its log line; authentication once per request (the caller in
/// the request's extensions), the console's CSRF check and the request metrics; the time limit
/// (503 `timeout`); the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let limits = &state.settings.limits;
    let (body_limit, time_limit) = (limits.max_body_bytes, limits.request_timeout);
    let (routes, _) = routes().split_for_parts();
    let layers = ServiceBuilder::new()
        .layer(middleware::map_request(drop_insane_request_id))
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .layer(HandleErrorLayer::new(move |_: BoxError| async move {
            timed_out(time_limit)
        }))
        .layer(TimeoutLayer::new(time_limit))
        .layer(DefaultBodyLimit::max(body_limit));
    routes
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(layers)
        .with_state(state)
}

/// Request ids made here: UUID v7 (they sort by time).
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Drops a client's `X-Request-Id` that is empty, over 128 characters or has characters other
/// than letters, digits and `-_.:`, so that a new one is made for the request.
async fn drop_insane_request_id(mut req: Request) -> Request {
    let sane = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    if !sane {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The endpoint a request matched (its route pattern), for spans and metrics.
fn endpoint<B>(req: &axum::http::Request<B>) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |m| m.as_str().to_string())
}

/// The log span of a request: its id, method and endpoint.
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", request_id = %id, method = %req.method(), endpoint = %endpoint(req))
}

/// The log line of a finished request.
fn log_response<B>(resp: &axum::http::Response<B>, took: Duration, _: &tracing::Span) {
    tracing::info!(
        status = resp.status().as_u16(),
        ms = took.as_secs_f64() * 1e3,
        "request done"
    );
}

/// The answer to a request over the time limit.
fn timed_out(limit: Duration) -> ApiError {
    let mut e = ApiError::new(
        Code::Timeout,
        format!("the request took longer than {} ms", limit.as_millis()),
    );
    e.retry_after = Some(1);
    e
}

/// Per request: who calls (once; requests that need a token and have no known one stop here,
/// before any body is read), the CSRF check of changes made with the console's session cookie,
/// and the request metrics.
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let endpoint = endpoint(&req);
    let method = req.method().to_string();
    let protected = auth::needs_token(req.uri().path());
    let refusal = match state.auth.identify(req.headers()).await {
        Ok(Some(caller)) => {
            let csrf = caller.session_csrf().and_then(|csrf| {
                console::csrf_violation(csrf, req.method(), req.uri().path(), req.headers())
            });
            req.extensions_mut().insert(caller);
            csrf
        }
        Ok(None) if protected => Some(auth::unauthenticated()),
        Err(e) if protected => Some(e),
        // Public endpoints take no token; a wrong one is no reason to refuse them.
        Ok(None) | Err(_) => None,
    };
    let resp = match refusal {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    };
    let seconds = start.elapsed().as_secs_f64();
    state
        .metrics
        .request(&endpoint, &method, resp.status().as_u16(), seconds);
    resp
}

/// The longest a replica waits between two sweeps of its embedding cache (erasures announced
/// by other replicas are applied at once).
const ERASURE_SWEEP: Duration = Duration::from_secs(60);

/// How long finished jobs are kept.
const JOB_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// How often the connector workers look for retries that came due and for work a replica
/// that died left (new work wakes them at once).
const CONNECTOR_POLL: Duration = Duration::from_secs(1);

/// How long processed connector events, finished write-backs and finished incident alerts are
/// kept (a delivery sent again within it is still recognised as a duplicate).
const CONNECTOR_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Purges ticket texts, idempotency keys, finished jobs, connector events, incident alerts and
/// ended console sessions past their retention, now and every hour.
fn spawn_retention(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let now = Utc::now();
            let ago = |d: std::time::Duration| -> DateTime<Utc> {
                now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
            };
            match state
                .store
                .purge_texts(ago(state.settings.text_retention))
                .await
            {
                Ok(n) if n > 0 => tracing::info!(n, "purged ticket texts past retention"),
                Ok(_) => {}
                Err(e) => tracing::error!("purging ticket texts: {e}"),
            }
            if let Err(e) = state
                .store
                .purge_idempotency(ago(state.settings.idempotency_ttl))
                .await
            {
                tracing::error!("purging idempotency keys: {e}");
            }
            if let Err(e) = state
                .store
                .purge_erasures(ago(state.settings.text_retention))
                .await
            {
                tracing::error!("purging the record of erasures: {e}");
            }
            if let Err(e) = state.store.purge_jobs(ago(JOB_RETENTION)).await {
                tracing::error!("purging finished jobs: {e}");
            }
            if let Err(e) = state
                .store
                .purge_connector_events(ago(CONNECTOR_RETENTION))
                .await
            {
                tracing::error!("purging connector events and write-backs: {e}");
            }
            if let Err(e) = state.store.purge_alerts(ago(CONNECTOR_RETENTION)).await {
                tracing::error!("purging incident alerts: {e}");
            }
            if let Err(e) = state.store.purge_sessions(now).await {
                tracing::error!("purging ended console sessions: {e}");
            }
        }
    });
}

/// Re-reads the tokens and connectors of the config file on SIGHUP (rotation without restart).
fn spawn_token_reload(state: Arc<AppState>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let Some(path) = &state.settings.config_path else {
                tracing::warn!("SIGHUP: no config file to reload tokens from");
                continue;
            };
            let reloaded = config::read_reloadable(path).and_then(|(tokens, connectors)| {
                let n = state.auth.reload(&tokens)?;
                state.connectors.reload(connectors);
                Ok(n)
            });
            match reloaded {
                Ok(n) => tracing::info!(tokens = n, "SIGHUP: tokens and connectors reloaded"),
                Err(e) => tracing::error!(
                    "SIGHUP: tokens and connectors not reloaded, the old ones stay: {e}"
                ),
            }
        }
    });
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Starts the service's background work: retention, following changes made elsewhere (other
/// replicas, the CLI), the retraining schedule, the connectors' inbox and outbox, token and
/// connector reload on SIGHUP.
pub async fn start_background(state: &Arc<AppState>) -> anyhow::Result<()> {
    spawn_retention(Arc::clone(state));
    let every = state.settings.follow_every;
    state
        .registry
        .spawn_follow(state.store.changes().await?, every);
    // Erasures are announced; the periodic sweep only expires old cache entries.
    state
        .erasure
        .spawn_follow(state.store.changes().await?, every.max(ERASURE_SWEEP));
    state.incidents.spawn(state.store.changes().await?, every);
    state.jobs.spawn_schedule(state.settings.schedule());
    state.jobs.spawn_sweep(every);
    state.connectors.spawn_workers(CONNECTOR_POLL.min(every));
    if let Some(nats) = &state.nats {
        nats.spawn();
    }
    spawn_token_reload(Arc::clone(state));
    Ok(())
}

/// Runs the service until SIGINT / SIGTERM; requests in flight finish first.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.listen;
    let state = build_state(settings).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    start_background(&state).await?;
    let rules = state.rules.current();
    eprintln!(
        "intent-router listening on http://{addr} (model {}, rules v{}{})",
        state.models.active().id,
        rules.stored.version,
        if state.auth.is_dev() {
            ", DEV MODE: no tokens"
        } else {
            ""
        }
    );
    let stopping = Arc::clone(&state);
    axum::serve(listener, router(Arc::clone(&state)))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // No new queue messages while HTTP requests in flight finish.
            if let Some(nats) = &stopping.nats {
                nats.stop_pulling();
            }
        })
        .await?;
    if let Some(nats) = &state.nats {
        nats.stop().await;
    }
    state.jobs.shutdown().await;
    state.store.close().await;
    Ok(())
}
