//! The REST API (`/api/v1`) and the Prometheus endpoint (`/metrics`).
//!
//! Reads are served from one load of the published snapshot, so a listing shows one
//! configuration, never half of an edit. Writes take the controller's lock (one writer at a
//! time), build the next configuration with [`crate::control::edit`] and swap it in whole;
//! they need `Authorization: Bearer TOKEN`. The API runs on the control thread's runtime:
//! it never touches a packet.

mod doc;
mod metrics;
pub mod server;
pub mod views;
mod web;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};

use crate::config::{
    ConfigError, RealDef, RealSettings, ServiceDef, ServiceSettings, Sysctl, Timeouts,
    parse_real_addr, parse_service_id,
};
use crate::conn::ConnTable;
use crate::consts::{API_MAX_JSON, API_MAX_PLUGIN};
use crate::control::edit::{Change, EditError};
use crate::control::{ControlError, Controller};
use crate::datapath::DatapathStats;
use crate::schema;
use crate::service::{Dest, Snapshot};

pub use views::*;

/// What the API handlers share.
pub struct ApiState {
    /// The one owner of the configuration; writers take turns.
    pub control: tokio::sync::Mutex<Controller>,
    /// The published snapshot (readers load it once per request).
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The connection table.
    pub conns: Arc<ConnTable>,
    /// The workers' datapath counters.
    pub datapath: Vec<Arc<DatapathStats>>,
    /// The bearer token mutating requests must carry.
    pub token: String,
    /// The datapath clock's origin.
    pub epoch: Instant,
    /// Where the token came from (for messages).
    pub token_source: String,
    /// The bound on tracked connections.
    pub max_conns: usize,
    /// Host names the API answers to besides IP addresses and `localhost` (`--api-host`).
    pub api_hosts: Vec<String>,
    /// The HTTP server's counters.
    pub server: Arc<server::ServerStats>,
    /// One connection-table walk at a time.
    pub conn_walk: tokio::sync::Semaphore,
    /// This balancer's name in a fleet (`--node`): a label on every metric.
    pub node: Option<String>,
    /// With `--announce`: the device and the VIPs it holds now.
    pub announced:
        parking_lot::Mutex<Option<(String, std::collections::BTreeSet<std::net::IpAddr>)>>,
    /// With `--offload tc`: what the program carried.
    pub offload: Option<Arc<crate::io::offload::OffloadCounters>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

type Shared = Arc<ApiState>;

/// An API error: a status and a message saying what is wrong.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What is wrong, for a person.
    pub error: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The status of a refused edit: 404 for what does not exist, 409 for what is well-formed
/// but conflicts with itself or the running configuration, 400 for what is malformed.
fn edit_status(e: &EditError) -> StatusCode {
    match e {
        EditError::NotFound(_) => StatusCode::NOT_FOUND,
        EditError::Exists(_) | EditError::Invalid(ConfigError::Conflict(_)) => StatusCode::CONFLICT,
        EditError::InBatch { source, .. } => edit_status(source),
        EditError::Invalid(_) => StatusCode::BAD_REQUEST,
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Edit(e) => edit_status(e),
            ControlError::InUse { .. } | ControlError::WrongKind(_) => StatusCode::CONFLICT,
            ControlError::Plugin(_) => StatusCode::BAD_REQUEST,
            ControlError::MiscCheck { .. } => StatusCode::FORBIDDEN,
            ControlError::Sync(_) => StatusCode::CONFLICT,
            ControlError::Nft(_)
            | ControlError::Xdp(_)
            | ControlError::State(_)
            | ControlError::PluginFile { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!("change refused: {e}");
        }
        Self::new(status, e.to_string())
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Conflict(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            _ => Self::bad(e.to_string()),
        }
    }
}

/// A JSON body whose rejection is answered with [`ErrorBody`]: 400 for what does not match
/// the document (bad JSON, an unknown field, a wrong type: axum says 422 for the last two,
/// but to a client they are all a request the document forbids), 413 when too large, 415
/// for another content type.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(r) => {
                let status = match r.status() {
                    StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                    s => s,
                };
                Err(ApiError::new(status, r.body_text()))
            }
        }
    }
}

/// The router: `/api/v1/…`, `/metrics`.
pub fn router(state: Shared) -> Router {
    let plugins = Router::new()
        .route(
            "/api/v1/plugins/{name}",
            put(put_plugin).delete(delete_plugin),
        )
        .layer(DefaultBodyLimit::max(API_MAX_PLUGIN));
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/services",
            get(list_services).post(add_service).delete(clear),
        )
        .route(
            "/api/v1/services/{proto}/{addr}",
            get(get_service).put(edit_service).delete(delete_service),
        )
        .route("/api/v1/services/{proto}/{addr}/reals", post(add_real))
        .route(
            "/api/v1/services/{proto}/{addr}/reals/{real}",
            put(edit_real).delete(delete_real),
        )
        .route("/api/v1/batch", post(batch))
        .route("/api/v1/plugins", get(list_plugins))
        .route("/api/v1/connections", get(list_connections))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stats/zero", post(zero_all))
        .route(
            "/api/v1/services/{proto}/{addr}/stats/zero",
            post(zero_service),
        )
        .route("/api/v1/timeouts", get(get_timeouts).put(put_timeouts))
        .route("/api/v1/sysctl", get(get_sysctl).put(put_sysctl))
        .route(
            "/api/v1/mark-rules",
            get(get_mark_rules).put(put_mark_rules),
        )
        .route("/api/v1/settings", get(get_settings).put(put_settings))
        .route("/api/v1/info", get(info))
        .route("/api/v1/daemons", get(list_daemons).post(start_daemon))
        .route(
            "/api/v1/daemons/{state}",
            axum::routing::delete(stop_daemon),
        )
        .route("/metrics", get(metrics::metrics))
        .route("/", get(web::asset))
        .route("/{file}", get(web::asset))
        .layer(DefaultBodyLimit::max(API_MAX_JSON))
        .merge(plugins)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Refuse a mutating request without the right bearer token.
async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(h) = req.headers().get(header::HOST)
        && !host_allowed(h.as_bytes(), &st.api_hosts)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host {:?} is not this API's: it answers to IP addresses, localhost and the \
                 names given with --api-host (a web page on another name could be DNS \
                 rebinding)",
                String::from_utf8_lossy(h.as_bytes())
            ),
        )
        .into_response();
    }
    if needs_no_token(&req) {
        return next.run(req).await;
    }
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if token_eq(t.trim().as_bytes(), st.token.as_bytes()) => {
            if let Some(a) = req.extensions().get::<server::Authed>() {
                a.set();
            }
            next.run(req).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong bearer token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "{} need 'Authorization: Bearer TOKEN' (the token is {})",
                if read {
                    "reads (the tables hold client addresses) and changes"
                } else {
                    "changes"
                },
                st.token_source
            ),
        )
        .into_response(),
    }
}

/// What anyone who can reach the API may read: the OpenAPI document, the dashboard's files
/// (the page asks for the token before it reads), and `/metrics` when asked on a loopback
/// address (a scraper on the machine itself; elsewhere it needs the token like the rest).
fn needs_no_token(req: &Request) -> bool {
    let path = req.uri().path();
    if *req.method() == Method::OPTIONS {
        return true;
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return false;
    }
    match path {
        "/api/v1/openapi.json" => true,
        "/metrics" => req
            .extensions()
            .get::<server::LocalAddr>()
            .is_some_and(|a| a.0.ip().is_loopback()),
        p => !p.starts_with("/api/"),
    }
}

/// Whether a Host header names this API: an IP address (v4, or v6 in brackets), `localhost`,
/// or one of `names`, with or without a port.
pub fn host_allowed(host: &[u8], names: &[String]) -> bool {
    let Ok(h) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Compare tokens in time independent of where they differ.
fn token_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "This API's OpenAPI document", content_type = "application/json")))]
async fn openapi() -> Response {
    axum::Json(doc::document()).into_response()
}

/// Filters of a service listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only the service `proto/vip:port` (e.g. `tcp/198.18.100.1:80`).
    #[param(value_type = Option<schema::ServiceFilter>)]
    pub service: Option<String>,
}

/// How a real server is removed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DrainQuery {
    /// A grace period in seconds: no new connections, and its connections go on until they
    /// end or the period is over (`wvs adm -d --drain`). Absent or 0: at once, as IPVS.
    #[param(minimum = 0, maximum = 86400)]
    pub drain_timeout: Option<u32>,
}

/// A service named in the path (documentation only: the handlers parse the strings).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ServicePath {
    /// `tcp` or `udp`.
    #[param(value_type = schema::ProtocolName)]
    proto: String,
    /// The virtual IP and port.
    #[param(value_type = schema::VipPort)]
    addr: String,
}

/// A real server of a service named in the path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct RealPath {
    /// `tcp` or `udp`.
    #[param(value_type = schema::ProtocolName)]
    proto: String,
    /// The virtual IP and port.
    #[param(value_type = schema::VipPort)]
    addr: String,
    /// The real server's address.
    #[param(value_type = schema::RealAddr)]
    real: String,
}

/// A plugin named in the path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct PluginPath {
    /// The name services use as their scheduler.
    #[param(value_type = schema::PluginName)]
    name: String,
}

/// The service a path names. A protocol and an address that are each well-formed but do
/// not go together (`fwm` and `VIP:PORT`, `tcp` and a mark) name no service: 404.
fn path_id(proto: &str, addr: &str) -> Result<crate::model::ServiceKey, ApiError> {
    parse_service_id(proto, addr).map_err(|e| match e {
        crate::config::ConfigError::Conflict(m) => ApiError::new(StatusCode::NOT_FOUND, m),
        other => other.into(),
    })
}

fn parse_service_filter(s: &str) -> Result<crate::model::ServiceKey, ApiError> {
    let (p, a) = s.split_once('/').ok_or_else(|| {
        ApiError::bad(format!(
            "service {s:?}: write it as PROTO/VIP:PORT, e.g. tcp/198.18.100.1:80"
        ))
    })?;
    Ok(parse_service_id(p, a)?)
}

#[utoipa::path(get, path = "/api/v1/services", params(ListQuery),
    responses((status = 200, body = [ServiceView], description = "Every virtual service, sorted as ipvsadm -L sorts them"), (status = 400, body = ErrorBody, description = "A malformed parameter")))]
async fn list_services(
    State(st): State<Shared>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Vec<ServiceView>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    fresh(&st).await;
    let filter = q.service.as_deref().map(parse_service_filter).transpose()?;
    let snap = st.snapshot.load();
    Ok(axum::Json(
        snap.services_sorted()
            .into_iter()
            .filter(|s| filter.is_none_or(|f| f == s.key))
            .map(|s| ServiceView::of(s, &st.conns))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/services/{proto}/{addr}", params(ServicePath),
    responses((status = 200, body = ServiceView, description = "The service"), (status = 400, body = ErrorBody, description = "A malformed parameter"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin")))]
async fn get_service(
    State(st): State<Shared>,
    Path((proto, addr)): Path<(String, String)>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let id = path_id(&proto, &addr)?;
    fresh(&st).await;
    let snap = st.snapshot.load();
    snap.get(&id)
        .map(|s| axum::Json(ServiceView::of(s, &st.conns)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no service {id}")))
}

/// Apply changes under the controller's lock and answer with the resulting services.
async fn change(st: &Shared, changes: Vec<Change>) -> Result<(), ApiError> {
    let mut c = st.control.lock().await;
    let ops: Vec<&str> = changes.iter().map(Change::op).collect();
    // Addresses, not pointers: the set is held across an await in a Send future.
    let before: HashSet<usize> = st.snapshot.load().dests().map(dest_id).collect();
    c.apply_changes(&changes)?;
    tracing::info!(changes = ?ops, services = c.config().services.len(), "configuration changed");
    drop(c);
    wait_next_hops(st, &before).await;
    Ok(())
}

/// A real server's identity across snapshots (the `Dest` is shared by identity).
fn dest_id(d: &Arc<Dest>) -> usize {
    Arc::as_ptr(d) as usize
}

/// Wait (bounded) until the real servers a change added have a next hop, so that when it is
/// answered they take traffic at once: the first packet of a UDP flow to a server whose MAC
/// address is unknown would be dropped. The resolver fills them in on its next tick; a
/// server that cannot be reached is logged there and holds the answer no longer than the
/// bound. Servers that were there before the change (`before`) are not waited for.
async fn wait_next_hops(st: &Shared, before: &HashSet<usize>) {
    let deadline =
        Instant::now() + std::time::Duration::from_millis(crate::consts::API_RESOLVE_WAIT_MS);
    let missing = || {
        st.snapshot.load().dests().any(|d| {
            d.next_hop().is_none()
                && d.forward() != crate::model::Forward::Local
                && !before.contains(&dest_id(d))
        })
    };
    while missing() && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[utoipa::path(post, path = "/api/v1/services", request_body = ServiceDef,
    responses((status = 201, body = ServiceView, description = "The service as added"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 409, body = ErrorBody, description = "Well-formed, but in conflict with the running configuration or with itself: it exists already, a scheduler that is not loaded, a lower threshold above the upper one, a plugin in use"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn add_service(
    State(st): State<Shared>,
    ApiJson(service): ApiJson<ServiceDef>,
) -> Result<Response, ApiError> {
    let id = parse_service_id(&service.protocol, &service.address)?;
    change(&st, vec![Change::AddService { service }]).await?;
    Ok((StatusCode::CREATED, view_of(&st, id)?).into_response())
}

fn view_of(st: &Shared, id: crate::model::ServiceKey) -> Result<axum::Json<ServiceView>, ApiError> {
    let snap = st.snapshot.load();
    snap.get(&id)
        .map(|s| axum::Json(ServiceView::of(s, &st.conns)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no service {id}")))
}

#[utoipa::path(put, path = "/api/v1/services/{proto}/{addr}", params(ServicePath), request_body = ServiceSettings,
    responses((status = 200, body = ServiceView, description = "The service after the change (ipvsadm -E)"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin"), (status = 409, body = ErrorBody, description = "Well-formed, but in conflict with the running configuration or with itself: it exists already, a scheduler that is not loaded, a lower threshold above the upper one, a plugin in use"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn edit_service(
    State(st): State<Shared>,
    Path((protocol, address)): Path<(String, String)>,
    ApiJson(settings): ApiJson<ServiceSettings>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let id = path_id(&protocol, &address)?;
    change(
        &st,
        vec![Change::EditService {
            protocol,
            address,
            settings,
        }],
    )
    .await?;
    view_of(&st, id)
}

#[utoipa::path(delete, path = "/api/v1/services/{proto}/{addr}", params(ServicePath),
    responses((status = 204, description = "Deleted (ipvsadm -D)"), (status = 400, body = ErrorBody, description = "A malformed parameter"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")), security(("bearer" = [])))]
async fn delete_service(
    State(st): State<Shared>,
    Path((protocol, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    path_id(&protocol, &address)?;
    change(&st, vec![Change::DeleteService { protocol, address }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/services",
    responses((status = 204, description = "Every service deleted (ipvsadm -C)"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")), security(("bearer" = [])))]
async fn clear(State(st): State<Shared>) -> Result<StatusCode, ApiError> {
    change(&st, vec![Change::Clear {}]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/services/{proto}/{addr}/reals", params(ServicePath), request_body = RealDef,
    responses((status = 201, body = ServiceView, description = "The service with the real server added (ipvsadm -a)"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin"), (status = 409, body = ErrorBody, description = "Well-formed, but in conflict with the running configuration or with itself: it exists already, a scheduler that is not loaded, a lower threshold above the upper one, a plugin in use"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn add_real(
    State(st): State<Shared>,
    Path((protocol, address)): Path<(String, String)>,
    ApiJson(real): ApiJson<RealDef>,
) -> Result<Response, ApiError> {
    let id = path_id(&protocol, &address)?;
    change(
        &st,
        vec![Change::AddReal {
            protocol,
            address,
            real,
        }],
    )
    .await?;
    Ok((StatusCode::CREATED, view_of(&st, id)?).into_response())
}

#[utoipa::path(put, path = "/api/v1/services/{proto}/{addr}/reals/{real}", params(RealPath), request_body = RealSettings,
    responses((status = 200, body = ServiceView, description = "The service after the change (ipvsadm -e)"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin"), (status = 409, body = ErrorBody, description = "Well-formed, but in conflict with the running configuration or with itself: it exists already, a scheduler that is not loaded, a lower threshold above the upper one, a plugin in use"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn edit_real(
    State(st): State<Shared>,
    Path((protocol, address, rip)): Path<(String, String, String)>,
    ApiJson(settings): ApiJson<RealSettings>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    parse_real_addr(&rip)?;
    let real = settings.to_def(&rip);
    let id = path_id(&protocol, &address)?;
    change(
        &st,
        vec![Change::EditReal {
            protocol,
            address,
            real,
        }],
    )
    .await?;
    view_of(&st, id)
}

#[utoipa::path(delete, path = "/api/v1/services/{proto}/{addr}/reals/{real}", params(RealPath, DrainQuery),
    responses((status = 204, description = "Removed (ipvsadm -d)"), (status = 400, body = ErrorBody, description = "A malformed parameter"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")), security(("bearer" = [])))]
async fn delete_real(
    State(st): State<Shared>,
    Path((protocol, address, real)): Path<(String, String, String)>,
    q: Result<Query<DrainQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    path_id(&protocol, &address)?;
    change(
        &st,
        vec![Change::DeleteReal {
            protocol,
            address,
            real,
            drain_timeout: q.drain_timeout,
        }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A batch of changes, applied all or nothing.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Batch {
    /// The changes, in order.
    pub changes: Vec<Change>,
}

#[utoipa::path(post, path = "/api/v1/batch", request_body = Batch,
    responses((status = 200, body = [ServiceView], description = "The services after the batch"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin"), (status = 409, body = ErrorBody, description = "Well-formed, but in conflict with the running configuration or with itself: it exists already, a scheduler that is not loaded, a lower threshold above the upper one, a plugin in use"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn batch(
    State(st): State<Shared>,
    ApiJson(b): ApiJson<Batch>,
) -> Result<axum::Json<Vec<ServiceView>>, ApiError> {
    if b.changes.len() > 100_000 {
        return Err(ApiError::bad("a batch holds at most 100000 changes"));
    }
    change(&st, b.changes).await?;
    let snap = st.snapshot.load();
    Ok(axum::Json(
        snap.services_sorted()
            .into_iter()
            .map(|s| ServiceView::of(s, &st.conns))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/plugins", responses((status = 200, body = [PluginView], description = "Every scheduler: the built-in ones and the uploaded plugins")))]
async fn list_plugins(State(st): State<Shared>) -> axum::Json<Vec<PluginView>> {
    let c = st.control.lock().await;
    axum::Json(PluginView::all(&c))
}

#[utoipa::path(put, path = "/api/v1/plugins/{name}", params(PluginPath),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The module (sdk/ABI.md)"),
    responses((status = 201, body = [PluginView], description = "Compiled and loaded; services naming it use it from now on"), (status = 400, body = ErrorBody, description = "A malformed name, or a body that is not a WebAssembly module following the ABI"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn put_plugin(
    State(st): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(ct.starts_with("application/wasm") || ct.starts_with("application/octet-stream")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the module as Content-Type: application/wasm",
        ));
    }
    if !body.starts_with(b"\0asm") {
        return Err(ApiError::bad(
            "the body is not a WebAssembly module (no \\0asm header)",
        ));
    }
    crate::control::check_plugin_name(&name)?;
    // Compiled first, off the control thread and within its budget: the change below
    // finds it compiled, and the API and the timers go on meanwhile.
    let runtime = st.control.lock().await.registry().runtime().clone();
    let (n, b) = (name.clone(), body.clone());
    tokio::task::spawn_blocking(move || runtime.compile_ahead(&n, &b))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ControlError::from)?;
    let mut c = st.control.lock().await;
    c.put_plugin(&name, &body)?;
    tracing::info!(plugin = name, bytes = body.len(), "plugin uploaded");
    Ok((StatusCode::CREATED, axum::Json(PluginView::all(&c))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/plugins/{name}", params(PluginPath),
    responses((status = 204, description = "Deleted with its file"), (status = 400, body = ErrorBody, description = "A malformed parameter"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service, real server or plugin"), (status = 409, body = ErrorBody, description = "A service still uses it"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn delete_plugin(
    State(st): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut c = st.control.lock().await;
    c.delete_plugin(&name)?;
    tracing::info!(plugin = name, "plugin deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of the connection listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnQuery {
    /// Only connections of service `proto/vip:port`.
    #[param(value_type = Option<schema::ServiceFilter>)]
    pub service: Option<String>,
    /// Only connections to real server `ip:port`.
    #[param(value_type = Option<schema::RealAddr>)]
    pub real: Option<String>,
    /// Only connections in this state (ESTABLISHED, TIME_WAIT, UDP, …).
    #[param(value_type = Option<schema::ConnState>)]
    pub state: Option<String>,
    /// At most this many (default 100000, the most).
    #[param(minimum = 0, maximum = 100000)]
    pub limit: Option<u32>,
    /// Go on from here: the `next` of the page before.
    #[param(value_type = Option<schema::ConnCursor>)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/connections", params(ConnQuery),
    responses((status = 200, body = ConnList, description = "The connection table and the persistence templates, as ipvsadm -L -c lists them"), (status = 400, body = ErrorBody, description = "A malformed parameter")))]
async fn list_connections(
    State(st): State<Shared>,
    q: Result<Query<ConnQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<ConnList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    fresh(&st).await;
    let svc = q.service.as_deref().map(parse_service_filter).transpose()?;
    let real = q.real.as_deref().map(parse_real_addr).transpose()?;
    let state = q.state;
    if let Some(s) = &state
        && !crate::schema::state_names().any(|n| n == s)
    {
        return Err(ApiError::bad(format!(
            "state {s:?}: expected one of {}",
            crate::schema::state_names().collect::<Vec<_>>().join(" ")
        )));
    }
    let limit = match q.limit {
        None => crate::consts::API_MAX_CONN_LIST,
        Some(n) if n as usize <= crate::consts::API_MAX_CONN_LIST => n as usize,
        Some(n) => {
            return Err(ApiError::bad(format!(
                "limit {n} is above {}",
                crate::consts::API_MAX_CONN_LIST
            )));
        }
    };
    let from = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(views::ConnCursor::parse(c).ok_or_else(|| {
            ApiError::bad(format!(
                "cursor {c:?}: pass the `next` of the page before, as it was given"
            ))
        })?),
    };
    let filter = views::ConnFilter {
        service: svc,
        real,
        state,
    };
    // One walk at a time (each takes every shard's lock in turn, for a while when the
    // table is large): others wait their turn, within the request timeout.
    let _turn = st
        .conn_walk
        .acquire()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let now = st.epoch.elapsed().as_millis() as u64;
    let conns = st.conns.clone();
    // Walking a large table takes a while: off the control thread.
    let offload = st.offload.clone();
    let list = tokio::task::spawn_blocking(move || {
        let mut list = ConnList::collect(&conns, now, limit, &filter, from);
        if let Some(o) = offload {
            for v in &mut list.connections {
                v.offloaded = v.key.as_ref().is_some_and(|k| o.carries(k));
            }
        }
        list
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(axum::Json(list))
}

#[utoipa::path(get, path = "/api/v1/stats", responses((status = 200, body = StatsView, description = "Totals, rates and datapath counters")))]
async fn stats(State(st): State<Shared>) -> axum::Json<StatsView> {
    fresh(&st).await;
    axum::Json(StatsView::collect(&st).await)
}

/// With `--offload tc`: have the keeper merge what the program carried until now, so that
/// counters, rates' totals and remaining times read as IPVS's do, at once.
pub(crate) async fn fresh(st: &Shared) {
    if let Some(o) = &st.offload {
        o.fresh(std::time::Duration::from_millis(
            crate::consts::OFFLOAD_FRESH_MS,
        ))
        .await;
    }
}

/// What a zeroing did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Zeroed {
    /// Services whose counters (and their real servers') were zeroed.
    pub services: usize,
}

#[utoipa::path(post, path = "/api/v1/stats/zero",
    responses((status = 200, body = Zeroed, description = "Every counter and rate zeroed: the balancer's, each service's and each real server's (ipvsadm -Z)"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one")),
    security(("bearer" = [])))]
async fn zero_all(State(st): State<Shared>) -> axum::Json<Zeroed> {
    fresh(&st).await;
    let snap = st.snapshot.load_full();
    let mut c = st.control.lock().await;
    c.traffic().zero(snap.service_stats());
    for d in snap.dests() {
        d.stats.zero();
    }
    tracing::info!("counters zeroed");
    axum::Json(Zeroed {
        services: snap.services().count(),
    })
}

#[utoipa::path(post, path = "/api/v1/services/{proto}/{addr}/stats/zero",
    params(ServicePath),
    responses((status = 200, body = Zeroed, description = "The service's counters and rates zeroed, and its real servers' (ipvsadm -Z -t|-u SERVICE)"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such service")),
    security(("bearer" = [])))]
async fn zero_service(
    State(st): State<Shared>,
    Path((proto, addr)): Path<(String, String)>,
) -> Result<axum::Json<Zeroed>, ApiError> {
    let id = path_id(&proto, &addr)?;
    fresh(&st).await;
    let snap = st.snapshot.load_full();
    let s = snap
        .get(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no service {id}")))?;
    s.stats.zero();
    for (d, _) in s.reals() {
        d.stats.zero();
    }
    tracing::info!(service = %id, "counters zeroed");
    Ok(axum::Json(Zeroed { services: 1 }))
}

#[utoipa::path(get, path = "/api/v1/timeouts", responses((status = 200, body = Timeouts, description = "The connection timeouts in seconds (ipvsadm -L --timeout)")))]
async fn get_timeouts(State(st): State<Shared>) -> axum::Json<Timeouts> {
    axum::Json(st.control.lock().await.config().timeouts.into())
}

#[utoipa::path(put, path = "/api/v1/timeouts", request_body = Timeouts,
    responses((status = 200, body = Timeouts, description = "The timeouts after the change (ipvsadm --set; an absent value is set to its default)"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn put_timeouts(
    State(st): State<Shared>,
    ApiJson(t): ApiJson<Timeouts>,
) -> Result<axum::Json<Timeouts>, ApiError> {
    t.validate()?;
    change(
        &st,
        vec![Change::SetTimeouts {
            tcp: t.tcp,
            tcpfin: t.tcpfin,
            udp: t.udp,
        }],
    )
    .await?;
    Ok(axum::Json(t))
}

#[utoipa::path(get, path = "/api/v1/mark-rules", responses((status = 200, body = [crate::config::mark::MarkRuleDef], description = "The classifier's mark rules, in order: the marks fwmark services take packets by (the last rule that matches a packet wins)")))]
async fn get_mark_rules(
    State(st): State<Shared>,
) -> axum::Json<Vec<crate::config::mark::MarkRuleDef>> {
    let cfg = st.control.lock().await;
    axum::Json(cfg.config().marks.iter().map(Into::into).collect())
}

#[utoipa::path(put, path = "/api/v1/mark-rules", request_body = [crate::config::mark::MarkRuleDef],
    responses((status = 200, body = [crate::config::mark::MarkRuleDef], description = "The rules after the change: the list given, in its order, replacing every rule at once"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 409, body = ErrorBody, description = "Well-formed, but in conflict with itself: a rule of two families, a range backwards, a rule given twice, more matches than the classifier holds"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn put_mark_rules(
    State(st): State<Shared>,
    ApiJson(rules): ApiJson<Vec<crate::config::mark::MarkRuleDef>>,
) -> Result<axum::Json<Vec<crate::config::mark::MarkRuleDef>>, ApiError> {
    change(&st, vec![Change::SetMarkRules { rules }]).await?;
    let c = st.control.lock().await;
    Ok(axum::Json(
        c.config().marks.iter().map(Into::into).collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/sysctl", responses((status = 200, body = Sysctl, description = "IPVS's switches wvs follows (/proc/sys/net/ipv4/vs/: cache_bypass, nat_icmp_send, pmtu_disc, expire_nodest_conn, expire_quiescent_template, conn_reuse_mode, sloppy_tcp, backup_only, the sync_* settings)")))]
async fn get_sysctl(State(st): State<Shared>) -> axum::Json<Sysctl> {
    axum::Json(st.control.lock().await.config().sysctl.into())
}

#[utoipa::path(put, path = "/api/v1/sysctl", request_body = Sysctl,
    responses((status = 200, body = Sysctl, description = "The switches after the change (an absent one is set to its default)"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 409, body = ErrorBody, description = "Well-formed, but refused as the kernel refuses it: sync_threshold's threshold not below its period (and not period 0)"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn put_sysctl(
    State(st): State<Shared>,
    ApiJson(sysctl): ApiJson<Sysctl>,
) -> Result<axum::Json<Sysctl>, ApiError> {
    change(&st, vec![Change::SetSysctl { sysctl }]).await?;
    Ok(axum::Json(sysctl))
}

/// The balancer's settings: IPVS's timeouts and sysctls, and the defense strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// The connection timeouts (`ipvsadm --set`); an absent value is its default.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// IPVS's switches; an absent one is its default.
    #[serde(default)]
    pub sysctl: Sysctl,
    /// The defense strategies (docs/defense.md); an absent field is its default.
    #[serde(default)]
    pub defense: crate::config::DefenseSettings,
}

#[utoipa::path(get, path = "/api/v1/settings", responses((status = 200, body = Settings, description = "The timeouts, IPVS's switches and the defense strategies")))]
async fn get_settings(State(st): State<Shared>) -> axum::Json<Settings> {
    let c = st.control.lock().await;
    let cfg = c.config();
    axum::Json(Settings {
        timeouts: cfg.timeouts.into(),
        sysctl: cfg.sysctl.into(),
        defense: cfg.defense.into(),
    })
}

#[utoipa::path(put, path = "/api/v1/settings", request_body = Settings,
    responses((status = 200, body = Settings, description = "The settings after the change: all of them, validated and saved as one change"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 409, body = ErrorBody, description = "Well-formed, but refused as the kernel refuses it: sync_threshold's threshold not below its period (and not period 0)"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn put_settings(
    State(st): State<Shared>,
    ApiJson(s): ApiJson<Settings>,
) -> Result<axum::Json<Settings>, ApiError> {
    s.timeouts.validate()?;
    s.defense
        .validate()
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    change(
        &st,
        vec![
            Change::SetTimeouts {
                tcp: s.timeouts.tcp,
                tcpfin: s.timeouts.tcpfin,
                udp: s.timeouts.udp,
            },
            Change::SetSysctl { sysctl: s.sysctl },
            Change::SetDefense { defense: s.defense },
        ],
    )
    .await?;
    Ok(axum::Json(s))
}

/// A sync daemon as `ipvsadm -L --daemon` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct DaemonView {
    /// Its settings, as started.
    #[serde(flatten)]
    pub daemon: crate::config::daemon::SyncDaemon,
    /// Its message size, multicast group, port and TTL with their defaults filled in.
    pub effective: DaemonEffective,
    /// Whether its threads run (one the configuration names may have failed to start:
    /// the log says why).
    pub running: bool,
}

/// A daemon's settings with their defaults filled in.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct DaemonEffective {
    /// Message size in bytes.
    pub sync_maxlen: u16,
    /// Multicast group.
    #[schema(value_type = crate::schema::IpAddress)]
    pub mcast_group: std::net::IpAddr,
    /// UDP port.
    pub mcast_port: u16,
    /// Multicast TTL.
    pub mcast_ttl: u8,
}

pub(crate) fn daemon_views(c: &crate::control::Controller) -> Vec<DaemonView> {
    let running: Vec<_> = c
        .sync()
        .map(|d| d.running().cloned().collect())
        .unwrap_or_default();
    c.config()
        .daemons
        .iter()
        .map(|d| DaemonView {
            daemon: d.clone(),
            effective: DaemonEffective {
                sync_maxlen: d.maxlen(),
                mcast_group: d.group(),
                mcast_port: d.port(),
                mcast_ttl: d.ttl(),
            },
            running: running.contains(d),
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/daemons", responses((status = 200, body = [DaemonView], description = "The sync daemons (ipvsadm -L --daemon)")))]
async fn list_daemons(State(st): State<Shared>) -> axum::Json<Vec<DaemonView>> {
    axum::Json(daemon_views(&*st.control.lock().await))
}

#[utoipa::path(post, path = "/api/v1/daemons", request_body = crate::config::daemon::SyncDaemon,
    responses((status = 201, body = [DaemonView], description = "Started (ipvsadm --start-daemon): every daemon now"), (status = 400, body = ErrorBody, description = "Malformed: the request does not match this document"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 409, body = ErrorBody, description = "A daemon of that state runs already, or it cannot start (no such interface, no IPv4 address on it, a socket refused)"), (status = 413, body = ErrorBody, description = "The body is larger than the limit (1 MiB of JSON, 16 MiB of WebAssembly)"), (status = 415, body = ErrorBody, description = "Not the content type this operation takes"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn start_daemon(
    State(st): State<Shared>,
    ApiJson(daemon): ApiJson<crate::config::daemon::SyncDaemon>,
) -> Result<(StatusCode, axum::Json<Vec<DaemonView>>), ApiError> {
    change(&st, vec![Change::StartDaemon { daemon }]).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(daemon_views(&*st.control.lock().await)),
    ))
}

/// Which daemon.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct DaemonPath {
    /// `master` or `backup`.
    #[param(value_type = crate::config::daemon::DaemonState)]
    pub state: String,
}

#[utoipa::path(delete, path = "/api/v1/daemons/{state}", params(DaemonPath),
    responses((status = 204, description = "Stopped (ipvsadm --stop-daemon)"), (status = 400, body = ErrorBody, description = "A malformed parameter"), (status = 401, body = ErrorBody, description = "No bearer token, or a wrong one"), (status = 404, body = ErrorBody, description = "No such daemon runs"), (status = 500, body = ErrorBody, description = "The change could not be saved or installed (state directory, nftables); nothing of it took effect")),
    security(("bearer" = [])))]
async fn stop_daemon(
    State(st): State<Shared>,
    Path(DaemonPath { state }): Path<DaemonPath>,
) -> Result<StatusCode, ApiError> {
    let state = match state.as_str() {
        "master" => crate::config::daemon::DaemonState::Master,
        "backup" => crate::config::daemon::DaemonState::Backup,
        other => {
            return Err(ApiError::bad(format!(
                "daemon {other:?}: expected master or backup"
            )));
        }
    };
    change(&st, vec![Change::StopDaemon { state }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/info", responses((status = 200, body = InfoView, description = "Versions and the connection table's size")))]
async fn info(State(st): State<Shared>) -> axum::Json<InfoView> {
    let c = st.control.lock().await;
    axum::Json(InfoView {
        version: env!("CARGO_PKG_VERSION").into(),
        ipvs_version: crate::consts::IPVS_VERSION.into(),
        conn_table_size: st.max_conns,
        connections: st.conns.len(),
        state_file: c.state_path().map(|p| p.display().to_string()),
    })
}

/// Serve the API on `listener` until the process stops, over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let stats = state.server.clone();
    server::serve(
        listener,
        router(state),
        server::Limits::default(),
        tls,
        stats,
    )
    .await
}

/// The API token: `WVS_API_TOKEN`, else the `--token-file`, else the token file in the state
/// directory, created with a random token (mode 0600) if missing. Returns the token and a
/// description of where it came from.
pub(crate) fn load_token(
    env: Option<String>,
    token_file: Option<&std::path::Path>,
    state_dir: &crate::control::state::TrustedDir,
) -> Result<(String, String), std::io::Error> {
    use crate::consts::TOKEN_FILE;
    if let Some(t) = env.filter(|t| !t.trim().is_empty()) {
        return Ok((t.trim().to_string(), "WVS_API_TOKEN".into()));
    }
    if let Some(p) = token_file {
        let t = std::fs::read_to_string(p)?;
        let t = t.trim();
        if t.is_empty() {
            return Err(std::io::Error::other(format!(
                "token file {} is empty",
                p.display()
            )));
        }
        return Ok((t.to_string(), format!("in {}", p.display())));
    }
    let p: PathBuf = state_dir.join(TOKEN_FILE);
    // The token wvs made before: its own regular file, for its user alone.
    match state_dir.stat(TOKEN_FILE) {
        Ok(m) => {
            let me = nix::unistd::geteuid().as_raw();
            let kind = m.st_mode & libc::S_IFMT;
            if kind != libc::S_IFREG || m.st_mode & 0o077 != 0 || m.st_uid != me {
                return Err(std::io::Error::other(format!(
                    "token file {} is not safe (a regular file of uid {me}, mode 0600, \
                     is; it is uid {}, mode {:04o}{}): remove it and wvs makes a new one",
                    p.display(),
                    m.st_uid,
                    m.st_mode & 0o7777,
                    if kind == libc::S_IFLNK {
                        ", a symbolic link"
                    } else {
                        ""
                    }
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match state_dir.read_to_string(TOKEN_FILE) {
        Ok(t) if !t.trim().is_empty() => {
            return Ok((t.trim().to_string(), format!("in {}", p.display())));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect()
    };
    // Created exclusively, never through a symbolic link, then renamed into place.
    state_dir.write_atomic(TOKEN_FILE, format!("{token}\n").as_bytes())?;
    tracing::info!(file = %p.display(), "API token created");
    Ok((token, format!("in {}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document as served is the one committed (`src/api/openapi.golden.json`):
    /// a refactoring that changes it changes the API.
    #[test]
    fn the_openapi_document_is_as_committed() {
        let doc = doc::document();
        let out = serde_json::to_string_pretty(&doc).expect("the document as JSON") + "\n";
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.golden.json");
        if std::env::var_os("WVS_BLESS").is_some() {
            std::fs::write(&golden, &out).expect("write the golden file");
        }
        let want = std::fs::read_to_string(&golden).expect("src/api/openapi.golden.json");
        assert!(
            out == want,
            "the OpenAPI document changed: check it, then WVS_BLESS=1 cargo test to accept it"
        );
    }

    #[test]
    fn only_addresses_localhost_and_named_hosts_are_this_apis() {
        let names = ["lb1.example".to_string()];
        for ok in [
            "127.0.0.1:9080",
            "198.18.0.1",
            "[::1]:9080",
            "localhost:9080",
            "LocalHost",
            "lb1.example:9080",
        ] {
            assert!(host_allowed(ok.as_bytes(), &names), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9080",
            "127.0.0.1.evil.example",
            "[nope]",
            "lb1.example.evil",
        ] {
            assert!(!host_allowed(bad.as_bytes(), &names), "{bad}");
        }
    }

    #[test]
    fn tokens_compare() {
        assert!(token_eq(b"abc", b"abc"));
        assert!(!token_eq(b"abc", b"abd"));
        assert!(!token_eq(b"abc", b"abcd"));
        assert!(!token_eq(b"", b"a"));
    }

    #[test]
    fn token_file_is_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("wvs-token-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let td =
            crate::control::state::TrustedDir::open(&dir, nix::unistd::geteuid().as_raw()).unwrap();
        let (t1, _) = load_token(None, None, &td).unwrap();
        assert_eq!(t1.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(crate::consts::TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (t2, _) = load_token(None, None, &td).unwrap();
        assert_eq!(t1, t2, "the same token after a restart");
        // Loose permissions, or a link in its place: refused, not used.
        let file = dir.join(crate::consts::TOKEN_FILE);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_token(None, None, &td).unwrap_err();
        assert!(e.to_string().contains("not safe"), "{e}");
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
        let e = load_token(None, None, &td).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let (t3, src) = load_token(Some("s3cret".into()), None, &td).unwrap();
        assert_eq!((t3.as_str(), src.as_str()), ("s3cret", "WVS_API_TOKEN"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
