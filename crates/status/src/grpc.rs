//! The gRPC API (`scimrelay.v1.StatusService`), a thin adapter over the store and the broker
//! operations, with the standard health service and reflection so `grpcurl` works.
//!
//! `TakeEvents`, `RecordConverged` and `GetRecords` are the connectors' side of the state of
//! record (see the store's `record` module): the desired state a connector took, what it
//! applied, and the records of other subjects (a group's members).
//!
//! `AdmitDeprovision` is the server side of the connectors' mass-deprovisioning guard: before a
//! connector deactivates or deletes a user it asks here. The guard's settings are the target's
//! `deprovision_guard` in this service's own targets file (`SCIMRELAY_CONFIG`) — never the
//! caller's, so a caller cannot loosen them — and a target missing from that file is
//! `FAILED_PRECONDITION` (the connector waits rather than deprovision unguarded). The user is
//! admitted — and counted in the target's sliding window — when it was already admitted within
//! the window (a retry or redelivery), when the target has fewer than `min_users` users, or when
//! one more stays within floor(max_share × users); otherwise the answer says why it must be held
//! ("30 of 200 users deprovisioned within 600 s (limit 10%)"). Users are the target's user
//! subjects the state of record holds present (active or not), plus those that left within the
//! window. The store decides per target in one transaction, so replicas of the status service
//! and of the connectors never both admit the last slot (see the store's module doc).
//!
//! # Authentication and tenants
//! With a keys file (`SCIMRELAY_API_KEYS_FILE`, see [`scimrelay_core::auth`]) every call of
//! `StatusService` needs the metadata `authorization: Bearer <key>`; the health and reflection
//! services stay open. The key is checked by an interceptor, before the request message is
//! decoded, which puts the caller's [`Principal`] into the request's extensions; each handler
//! then starts with `caller` (the scope) or `operator` (the scope and a key for all tenants),
//! so a refused call does nothing and learns nothing about its arguments. Refusals log the
//! key's id, never the key. Without a keys file every caller is [`Principal::anonymous`].
//!
//! | refusal                                                   | code                        |
//! |-----------------------------------------------------------|-----------------------------|
//! | no key, unknown key, revoked key                          | `UNAUTHENTICATED`           |
//! | over the key's rate                                       | `RESOURCE_EXHAUSTED` + `retry-after` metadata (seconds) |
//! | no `read` scope; no `admin` for ReplayDeadLetters, ReleaseHeld, DropHeld; no `connector` for TakeEvents, RecordConverged; neither `connector` nor `admin` for AdmitDeprovision (`admin` and `connector` imply `read`) | `PERMISSION_DENIED` |
//! | `filter.tenant` names a tenant the key may not read       | `PERMISSION_DENIED`         |
//! | `filter.tenant` empty, key scoped to several tenants      | `INVALID_ARGUMENT`          |
//! | an operational RPC (below) with a key scoped to tenants   | `PERMISSION_DENIED`         |
//!
//! A key scoped to tenants reads only its tenants. `ListOutcomes`, `ListEvents` and
//! `WatchOutcomes` are limited to `filter.tenant`, which defaults to the key's tenant when it has
//! exactly one and must be set when it has several (`INVALID_ARGUMENT`). `GetEvent` and
//! `GetSubject` show only what belongs to the key's tenants, and answer `NOT_FOUND` when
//! nothing does — the same answer as for an id never seen, so a key cannot probe another
//! tenant's ids. (A key for all tenants still gets an empty `GetEvent` answer for an event with
//! nothing recorded yet, which pollers rely on.) Outcomes recorded before the store learnt
//! tenants (migration 4) have the tenant `''` and are visible to keys for all tenants only. The
//! operational RPCs — `ListTargets`, `GetTarget`, `TakeEvents`, `RecordConverged`,
//! `GetRecords`, `AdmitDeprovision`, `ListDeadLetters`, `ReplayDeadLetters`, `ListHeld`,
//! `ReleaseHeld`, `DropHeld` — act on targets and queues shared by tenants and need a key for
//! all tenants.
//! A `WatchOutcomes` stream is authorized when it opens; revoking the key ends new calls, not
//! the open stream.
//!
//! # TLS
//! With [`ServerTls`] the listener speaks TLS only (tonic's rustls with aws-lc), and with a
//! client CA every client must present a certificate it signed (mutual TLS); a failed handshake
//! drops that connection only.
//!
//! # Cursors
//! Cursors are the decimal `seq` of the last item returned. `seq` grows in commit order (see
//! the store), so "everything after n" never skips an outcome committed later with a smaller
//! seq; that is what makes `WatchOutcomes` gap-free across reconnects and restarts.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use scimrelay_core::auth::{AuthError, Authenticator, Principal, Scope};
use scimrelay_core::tls::{CERT_ENV, CLIENT_CA_ENV, KEY_ENV, ServerTls};

use scimrelay_proto::v1::status_service_server::{StatusService, StatusServiceServer};
use scimrelay_proto::v1::{
    AdmitDeprovisionRequest, AdmitDeprovisionResponse, DeprovisionGuard, DueReferencesRequest,
    DueReferencesResponse, GetEventRequest, GetEventResponse, GetRecordsRequest,
    GetRecordsResponse, GetSubjectRequest, GetSubjectResponse, GetTargetRequest,
    HeldActionResponse, HeldEvent, HeldSelection, ListDeadLettersRequest, ListDeadLettersResponse,
    ListEventsRequest, ListEventsResponse, ListHeldRequest, ListHeldResponse, ListOutcomesRequest,
    ListOutcomesResponse, ListTargetsRequest, ListTargetsResponse, Outcome, OutcomeFilter,
    OutcomeResult, RecordConvergedRequest, RecordConvergedResponse, RecordedOutcome,
    ReplayDeadLettersRequest, ReplayDeadLettersResponse, SubjectKey, SubjectKind,
    TakeEventsRequest, TakeEventsResponse, TargetSummary, WatchOutcomesRequest,
};

use crate::broker::{Ops, OpsError};
use crate::store::{KEY_LIMIT, Record, Store, StoreError, held_key, now_ms};

/// Page size when the request asks for none.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page.
pub const MAX_PAGE: u32 = 1000;
/// Outcomes a watch reads from the store at once.
const WATCH_CHUNK: u32 = 500;
/// How often a watch looks for outcomes written by other replicas (its own are signalled).
const WATCH_POLL: Duration = Duration::from_millis(500);
/// Outcomes buffered per watcher before the stream waits for the client.
const WATCH_BUFFER: usize = 256;
/// The detail of the outcome recorded when an operator drops a held event.
pub const DROPPED_DETAIL: &str = "dropped by operator";
/// The metadata entry carrying the seconds to wait after `RESOURCE_EXHAUSTED` for a key's rate.
pub const RETRY_AFTER_METADATA: &str = "retry-after";
/// Longest TLS handshake; a client that stalls longer is dropped, so half-open handshakes do
/// not pile up.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Service {
    store: Store,
    ops: Arc<Ops>,
    /// Each target's mass-deprovisioning guard, from the targets file.
    guards: Arc<Guards>,
    shutdown: CancellationToken,
}

/// The mass-deprovisioning guard of each target, as the status service's targets file
/// (`SCIMRELAY_CONFIG`) sets it: the only source of guard settings `AdmitDeprovision` uses;
/// and when each target's pending references count as stale.
#[derive(Debug, Clone, Default)]
pub struct Guards {
    /// By target id; `None` for a target whose guard is disabled.
    pub by_target: std::collections::HashMap<String, Option<DeprovisionGuard>>,
    /// By target id: `pending_stale_secs`, in ms (a target not in the file: the default).
    pub pending_stale_ms: std::collections::HashMap<String, i64>,
}

impl Guards {
    /// When a reference of `target` pending since `since_ms` is stale.
    fn stale(&self, target: &str, since_ms: i64, now_ms: i64) -> bool {
        let after = self.pending_stale_ms.get(target).copied().unwrap_or(
            i64::try_from(scimrelay_core::config::DEFAULT_PENDING_STALE_SECS * 1000)
                .unwrap_or(i64::MAX),
        );
        now_ms.saturating_sub(since_ms) > after
    }
}

impl Guards {
    /// The guards of every target of a targets file.
    pub fn from_targets(file: &scimrelay_core::config::TargetsFile) -> Self {
        Guards {
            by_target: file
                .targets
                .iter()
                .map(|t| {
                    let g = &t.deprovision_guard;
                    let guard = g.enabled.then(|| DeprovisionGuard {
                        max_share: g.max_share,
                        window_ms: g.window_secs.saturating_mul(1000),
                        min_users: g.min_users,
                    });
                    (t.id.clone(), guard)
                })
                .collect(),
            pending_stale_ms: file
                .targets
                .iter()
                .map(|t| {
                    let ms = t.pending_stale_secs.saturating_mul(1000);
                    (t.id.clone(), i64::try_from(ms).unwrap_or(i64::MAX))
                })
                .collect(),
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => Status::invalid_argument(m),
            e => Status::internal(e.to_string()),
        }
    }
}

impl From<OpsError> for Status {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Amqp(e) => Status::unavailable(e.to_string()),
            OpsError::Store(e) => e.into(),
        }
    }
}

/// A refused key as a gRPC status: the one place `AuthError` becomes a code. The message
/// names the key's id, never the key.
fn auth_status(e: AuthError) -> Status {
    let message = e.to_string();
    match e {
        AuthError::Missing | AuthError::Invalid | AuthError::Revoked(_) => {
            Status::unauthenticated(message)
        }
        AuthError::Scope { .. } | AuthError::Tenant { .. } => Status::permission_denied(message),
        AuthError::RateLimited {
            retry_after_secs, ..
        } => {
            let mut status = Status::resource_exhausted(message);
            status.metadata_mut().insert(
                RETRY_AFTER_METADATA,
                tonic::metadata::MetadataValue::from(retry_after_secs),
            );
            status
        }
    }
}

/// Logs a refusal with the key's id (never the key). Missing keys and rate limiting go to
/// debug: a misconfigured or misbehaving client repeats them at request rate.
fn log_refusal(e: &AuthError) {
    match e {
        AuthError::Missing => tracing::debug!("refused: no API key"),
        AuthError::Invalid => tracing::info!("refused: unknown API key"),
        AuthError::Revoked(key) => tracing::info!(key = %key, "refused: revoked API key"),
        AuthError::Scope { key, scope } => {
            tracing::info!(key = %key, scope, "refused: API key lacks the scope")
        }
        AuthError::Tenant { key, tenant } => {
            tracing::info!(key = %key, tenant = %tenant, "refused: API key may not read the tenant")
        }
        AuthError::RateLimited { key, .. } => {
            tracing::debug!(key = %key, "refused: API key over its rate")
        }
    }
}

/// The interceptor of `StatusService`: checks the key in the `authorization` metadata and its
/// rate before the request message is decoded, and hands the [`Principal`] to the handler in
/// the request's extensions.
fn authenticate(auth: &Authenticator, mut request: Request<()>) -> Result<Request<()>, Status> {
    let principal = match request.metadata().get("authorization").map(|v| v.to_str()) {
        None => auth.authenticate(None),
        Some(Ok(value)) => auth.authenticate(Some(value)),
        // Not visible ASCII: no key of ours looks like that.
        Some(Err(_)) if auth.enabled() => Err(AuthError::Invalid),
        Some(Err(_)) => auth.authenticate(None),
    };
    match principal {
        Ok(p) => {
            request.extensions_mut().insert(p);
            Ok(request)
        }
        Err(e) => {
            log_refusal(&e);
            Err(auth_status(e))
        }
    }
}

/// The caller of `request` (authenticated by [`authenticate`]) when its key has `scope`.
fn caller<T>(request: &Request<T>, scope: Scope) -> Result<Principal, Status> {
    caller_any(request, &[scope])
}

/// The caller of `request` when its key has one of `scopes`.
fn caller_any<T>(request: &Request<T>, scopes: &[Scope]) -> Result<Principal, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        // `serve` installs the interceptor in front of every call of the service.
        .ok_or_else(|| Status::internal("the caller was not authenticated"))?;
    // Handlers run inside the call's span (see `grpc_span`); the interceptor does not.
    tracing::Span::current().record("scimrelay.api_key", principal.key_id.as_str());
    principal.require_any(scopes).map_err(|e| {
        log_refusal(&e);
        auth_status(e)
    })?;
    Ok(principal)
}

/// The caller of an operational RPC (`rpc`, e.g. `ListTargets`): `scope`, and a key for all
/// tenants, since targets, queues and held events are shared by tenants.
fn operator<T>(request: &Request<T>, scope: Scope, rpc: &str) -> Result<Principal, Status> {
    let principal = caller(request, scope)?;
    if !principal.all_tenants() {
        return Err(operator_refusal(&principal, rpc));
    }
    Ok(principal)
}

/// The refusal of an operational RPC to a key scoped to tenants.
fn operator_refusal(principal: &Principal, rpc: &str) -> Status {
    tracing::info!(key = %principal.key_id, rpc, "refused: API key scoped to tenants");
    Status::permission_denied(format!(
        "API key {:?} is scoped to tenants; {rpc} needs a key for all tenants",
        principal.key_id
    ))
}

/// Limits a filtered read to the tenants of `principal`: a key for all tenants reads what the
/// filter says; a key scoped to tenants reads one of its tenants — `filter.tenant`, or its only
/// tenant when that is empty.
fn limit_to_tenants(principal: &Principal, filter: &mut OutcomeFilter) -> Result<(), Status> {
    let Some(tenants) = principal.tenants() else {
        return Ok(());
    };
    if filter.tenant.is_empty() {
        return match tenants {
            [only] => {
                filter.tenant = only.clone();
                Ok(())
            }
            _ => Err(Status::invalid_argument(format!(
                "filter.tenant: required for a key scoped to tenants (API key {:?} may read {})",
                principal.key_id,
                tenants
                    .iter()
                    .map(|t| format!("{t:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    principal.require_tenant(&filter.tenant).map_err(|e| {
        log_refusal(&e);
        Status::permission_denied(format!("filter.tenant: {e}"))
    })
}

/// The tenant of a held event (its event's).
fn held_tenant(h: &HeldEvent) -> &str {
    h.delivery
        .as_ref()
        .and_then(|d| d.event.as_ref())
        .map_or("", |e| e.tenant.as_str())
}

fn decode_cursor(field: &str, token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| {
        Status::invalid_argument(format!("{field}: not a cursor returned by this API"))
    })
}

fn page_size(n: u32) -> Result<u32, Status> {
    match n {
        0 => Ok(DEFAULT_PAGE),
        n if n > MAX_PAGE => Err(Status::invalid_argument(format!(
            "page_size: at most {MAX_PAGE}"
        ))),
        n => Ok(n),
    }
}

fn check_filter(f: &OutcomeFilter) -> Result<(), Status> {
    if OutcomeResult::try_from(f.result).is_err() {
        return Err(Status::invalid_argument(format!(
            "filter.result: unknown result {}",
            f.result
        )));
    }
    if f.from_ms < 0 || f.to_ms < 0 {
        return Err(Status::invalid_argument(
            "filter.from_ms / filter.to_ms: must not be negative",
        ));
    }
    if f.to_ms != 0 && f.from_ms > f.to_ms {
        return Err(Status::invalid_argument(
            "filter.from_ms: after filter.to_ms",
        ));
    }
    Ok(())
}

fn next_token(page: &[RecordedOutcome], size: u32) -> String {
    if page.len() as u32 == size {
        page.last().map(|r| r.seq.to_string()).unwrap_or_default()
    } else {
        String::new()
    }
}

fn check_selection(s: &HeldSelection) -> Result<(), Status> {
    if s.event_ids.is_empty() && s.target.is_empty() && !s.all {
        return Err(Status::invalid_argument(
            "event_ids: name the events, a target, or set all",
        ));
    }
    Ok(())
}

/// Counts one state-of-record call of `items` items (and its duration).
fn observe_record_call(call: &'static str, items: usize, started: std::time::Instant) {
    use scimrelay_core::metrics::metrics;
    let labels = vec![("call", call.to_owned())];
    let m = metrics();
    m.record_calls.get_or_create(&labels).inc();
    m.record_items
        .get_or_create(&labels)
        .inc_by(u64::try_from(items).unwrap_or(u64::MAX));
    m.record_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// A state-of-record batch of a size the service takes.
fn check_batch(n: usize) -> Result<(), Status> {
    if n > KEY_LIMIT {
        return Err(Status::invalid_argument(format!(
            "items: at most {KEY_LIMIT} per call"
        )));
    }
    Ok(())
}

/// A complete subject key (target, tenant, kind and id are all part of it).
fn check_key(field: &str, key: Option<&SubjectKey>) -> Result<(), Status> {
    let Some(key) = key else {
        return Err(Status::invalid_argument(format!("{field}: required")));
    };
    for (name, value) in [
        ("target", &key.target),
        ("tenant", &key.tenant),
        ("subject_id", &key.subject_id),
    ] {
        if value.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{field}.{name}: required"
            )));
        }
    }
    if key.kind() == SubjectKind::Unspecified {
        return Err(Status::invalid_argument(format!(
            "{field}.kind: USER or GROUP"
        )));
    }
    Ok(())
}

/// The terminal FAILED outcome of a held event dropped by an operator.
pub fn dropped_outcome(h: &HeldEvent) -> Outcome {
    let d = h.delivery.clone().unwrap_or_default();
    let e = d.event.clone().unwrap_or_default();
    let now = now_ms();
    Outcome {
        event_id: e.id.clone(),
        target: d.target.clone(),
        provider: d.provider.clone(),
        tenant: e.tenant.clone(),
        subject_kind: if e.kind().is_user() {
            SubjectKind::User as i32
        } else {
            SubjectKind::Group as i32
        },
        subject_id: e.subject_id().to_owned(),
        version: e.version,
        kind: e.kind,
        result: OutcomeResult::Failed as i32,
        attempt: d.attempt + 1,
        detail: DROPPED_DETAIL.into(),
        latency_ms: u64::try_from(now - d.accepted_at_ms).unwrap_or_default(),
        accepted_at_ms: d.accepted_at_ms,
        finished_at_ms: now,
        ..Default::default()
    }
}

impl Service {
    async fn summary(&self, target: &str) -> Result<Option<TargetSummary>, Status> {
        let Some(mut s) = self.store.target_summary(target).await? else {
            return Ok(None);
        };
        if let Some(depth) = self.ops.queue_depth(target).await {
            s.queue_depth = depth;
            s.queue_depth_known = true;
        }
        (s.pending_references, s.oldest_pending_since_ms) =
            self.store.pending_summary(target).await?;
        Ok(Some(s))
    }
}

type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<RecordedOutcome, Status>> + Send>>;

#[tonic::async_trait]
impl StatusService for Service {
    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<GetEventResponse>, Status> {
        let principal = caller(&request, Scope::Read)?;
        let req = request.into_inner();
        let id = req.event_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("event_id: required"));
        }
        if !req.tenant.is_empty() {
            principal.require_tenant(&req.tenant).map_err(|e| {
                log_refusal(&e);
                Status::permission_denied(format!("tenant: {e}"))
            })?;
        }
        let (mut history, mut held) = self.store.event(&id).await?;
        if !req.tenant.is_empty() {
            history.retain(|r| r.outcome.as_ref().is_some_and(|o| o.tenant == req.tenant));
            held.retain(|h| held_tenant(h) == req.tenant);
        }
        if !principal.all_tenants() {
            history.retain(|r| {
                r.outcome
                    .as_ref()
                    .is_some_and(|o| principal.allows_tenant(&o.tenant))
            });
            held.retain(|h| principal.allows_tenant(held_tenant(h)));
            if history.is_empty() && held.is_empty() {
                // The same answer for an unknown id and another tenant's event.
                return Err(Status::not_found(format!(
                    "event_id: nothing recorded for event {id:?} in the tenants of API key {:?}",
                    principal.key_id
                )));
            }
        }
        let outcomes = history
            .iter()
            .filter(|r| r.terminal)
            .filter_map(|r| r.outcome.clone())
            .collect();
        Ok(Response::new(GetEventResponse {
            event_id: id,
            outcomes,
            history,
            held,
        }))
    }

    async fn list_outcomes(
        &self,
        request: Request<ListOutcomesRequest>,
    ) -> Result<Response<ListOutcomesResponse>, Status> {
        let principal = caller(&request, Scope::Read)?;
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let after = decode_cursor("page_token", &req.page_token)?;
        let mut filter = req.filter.unwrap_or_default();
        if !req.target.is_empty() {
            filter.target = req.target;
        }
        check_filter(&filter)?;
        limit_to_tenants(&principal, &mut filter)?;
        let outcomes = self.store.list(&filter, after, size, false).await?;
        let next_page_token = next_token(&outcomes, size);
        Ok(Response::new(ListOutcomesResponse {
            outcomes,
            next_page_token,
        }))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let principal = caller(&request, Scope::Read)?;
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let after = decode_cursor("page_token", &req.page_token)?;
        let mut filter = req.filter.unwrap_or_default();
        check_filter(&filter)?;
        limit_to_tenants(&principal, &mut filter)?;
        let outcomes = self.store.list(&filter, after, size, true).await?;
        let next_page_token = next_token(&outcomes, size);
        Ok(Response::new(ListEventsResponse {
            outcomes,
            next_page_token,
        }))
    }

    async fn get_subject(
        &self,
        request: Request<GetSubjectRequest>,
    ) -> Result<Response<GetSubjectResponse>, Status> {
        let principal = caller(&request, Scope::Read)?;
        let req = request.into_inner();
        if req.subject_id.is_empty() {
            return Err(Status::invalid_argument("subject_id: required"));
        }
        if !req.tenant.is_empty() {
            principal.require_tenant(&req.tenant).map_err(|e| {
                log_refusal(&e);
                Status::permission_denied(format!("tenant: {e}"))
            })?;
        }
        // Another tenant's subject is answered like an unknown one.
        let targets = self
            .store
            .subject(
                &req.subject_id,
                &req.target,
                &req.tenant,
                req.kind(),
                principal.tenants(),
            )
            .await?;
        if targets.is_empty() {
            return Err(Status::not_found(format!(
                "subject_id: no target has seen subject {:?}",
                req.subject_id
            )));
        }
        let mut targets = targets;
        let now = scimrelay_core::now_ms();
        for t in &mut targets {
            let key = SubjectKey {
                target: t.target.clone(),
                tenant: t.tenant.clone(),
                kind: t.subject_kind,
                subject_id: t.subject_id.clone(),
            };
            t.pending = self.store.references_of(&key).await?;
            for p in &mut t.pending {
                p.stale = p.dropped.is_empty() && self.guards.stale(&t.target, p.since_ms, now);
            }
        }
        Ok(Response::new(GetSubjectResponse { targets }))
    }

    type WatchOutcomesStream = WatchStream;

    async fn watch_outcomes(
        &self,
        request: Request<WatchOutcomesRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let principal = caller(&request, Scope::Read)?;
        let req = request.into_inner();
        let mut filter = req.filter.unwrap_or_default();
        check_filter(&filter)?;
        limit_to_tenants(&principal, &mut filter)?;
        let mut cursor = decode_cursor("cursor", &req.cursor)?;
        if req.cursor.is_empty() && req.from_now {
            cursor = self.store.max_seq().await?;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let mut changed = store.subscribe();
        tokio::spawn(async move {
            loop {
                let page = match store.list(&filter, cursor, WATCH_CHUNK, false).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let full = page.len() as u32 == WATCH_CHUNK;
                for r in page {
                    cursor = r.seq;
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep(WATCH_POLL) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_targets(
        &self,
        request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        operator(&request, Scope::Read, "ListTargets")?;
        let mut targets = Vec::new();
        for id in self.store.target_ids().await? {
            if let Some(s) = self.summary(&id).await? {
                targets.push(s);
            }
        }
        Ok(Response::new(ListTargetsResponse { targets }))
    }

    async fn get_target(
        &self,
        request: Request<GetTargetRequest>,
    ) -> Result<Response<TargetSummary>, Status> {
        operator(&request, Scope::Read, "GetTarget")?;
        let target = request.into_inner().target;
        if target.is_empty() {
            return Err(Status::invalid_argument("target: required"));
        }
        match self.summary(&target).await? {
            Some(s) => Ok(Response::new(s)),
            None => Err(Status::not_found(format!(
                "target: nothing known of target {target:?}"
            ))),
        }
    }

    async fn take_events(
        &self,
        request: Request<TakeEventsRequest>,
    ) -> Result<Response<TakeEventsResponse>, Status> {
        operator(&request, Scope::Connector, "TakeEvents")?;
        let items = request.into_inner().items;
        check_batch(items.len())?;
        for (i, item) in items.iter().enumerate() {
            check_key(&format!("items[{i}].key"), item.key.as_ref())?;
            if !item.read_only && item.event.is_none() {
                return Err(Status::invalid_argument(format!(
                    "items[{i}].event: required unless read_only"
                )));
            }
            if item.session.len() > 200 {
                return Err(Status::invalid_argument(format!(
                    "items[{i}].session: at most 200 bytes"
                )));
            }
        }
        let started = std::time::Instant::now();
        let records = self.store.take_events(&items).await?;
        observe_record_call("TakeEvents", items.len(), started);
        Ok(Response::new(TakeEventsResponse { records }))
    }

    async fn record_converged(
        &self,
        request: Request<RecordConvergedRequest>,
    ) -> Result<Response<RecordConvergedResponse>, Status> {
        operator(&request, Scope::Connector, "RecordConverged")?;
        let items = request.into_inner().items;
        check_batch(items.len())?;
        for (i, item) in items.iter().enumerate() {
            check_key(&format!("items[{i}].key"), item.key.as_ref())?;
            if item.release_only && item.session.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "items[{i}].session: required with release_only"
                )));
            }
            if item.version == 0 && !item.release_only {
                return Err(Status::invalid_argument(format!(
                    "items[{i}].version: required"
                )));
            }
        }
        let started = std::time::Instant::now();
        let recorded = self.store.record_converged(&items).await?;
        observe_record_call("RecordConverged", items.len(), started);
        Ok(Response::new(RecordConvergedResponse { recorded }))
    }

    async fn due_references(
        &self,
        request: Request<DueReferencesRequest>,
    ) -> Result<Response<DueReferencesResponse>, Status> {
        operator(&request, Scope::Connector, "DueReferences")?;
        let req = request.into_inner();
        if req.target.is_empty() {
            return Err(Status::invalid_argument("target: required"));
        }
        let started = std::time::Instant::now();
        let due = self
            .store
            .due_references(&req.target, req.lease_ms, req.limit)
            .await?;
        observe_record_call("DueReferences", due.len().max(1), started);
        Ok(Response::new(DueReferencesResponse { due }))
    }

    async fn get_records(
        &self,
        request: Request<GetRecordsRequest>,
    ) -> Result<Response<GetRecordsResponse>, Status> {
        operator(&request, Scope::Read, "GetRecords")?;
        let keys = request.into_inner().keys;
        check_batch(keys.len())?;
        for (i, key) in keys.iter().enumerate() {
            check_key(&format!("keys[{i}]"), Some(key))?;
        }
        let started = std::time::Instant::now();
        let records = self.store.records(&keys).await?;
        observe_record_call("GetRecords", keys.len(), started);
        Ok(Response::new(GetRecordsResponse { records }))
    }

    async fn admit_deprovision(
        &self,
        request: Request<AdmitDeprovisionRequest>,
    ) -> Result<Response<AdmitDeprovisionResponse>, Status> {
        let principal = caller_any(&request, &[Scope::Connector, Scope::Admin])?;
        if !principal.all_tenants() {
            return Err(operator_refusal(&principal, "AdmitDeprovision"));
        }
        let req = request.into_inner();
        if req.target.is_empty() {
            return Err(Status::invalid_argument("target: required"));
        }
        if req.subject_id.is_empty() {
            return Err(Status::invalid_argument("subject_id: required"));
        }
        let guard = match self.guards.by_target.get(&req.target) {
            Some(Some(guard)) => guard,
            // The guard is off for this target in the targets file.
            Some(None) => {
                return Ok(Response::new(AdmitDeprovisionResponse {
                    admitted: true,
                    ..Default::default()
                }));
            }
            None => {
                return Err(Status::failed_precondition(format!(
                    "target: {:?} is not in the status service's targets file \
                     (SCIMRELAY_CONFIG), where the guard takes its settings from",
                    req.target
                )));
            }
        };
        let answer = self
            .store
            .admit_deprovision(
                &req.target,
                &req.tenant,
                &req.subject_id,
                &req.event_id,
                guard,
                now_ms(),
            )
            .await?;
        if !answer.admitted {
            tracing::info!(
                target = %req.target,
                subject_id = %req.subject_id,
                event_id = %req.event_id,
                users = answer.users,
                recent = answer.recent,
                "deprovisioning refused by the mass-deprovisioning guard"
            );
        }
        Ok(Response::new(answer))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        operator(&request, Scope::Read, "ListDeadLetters")?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "limit: at most {MAX_PAGE}"
                )));
            }
            n => n,
        };
        let (messages, total) = self.ops.list_dead(&req.target, limit).await?;
        Ok(Response::new(ListDeadLettersResponse { messages, total }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let principal = operator(&request, Scope::Admin, "ReplayDeadLetters")?;
        let req = request.into_inner();
        let done = self
            .ops
            .replay(&req.target, &req.event_ids, req.limit)
            .await?;
        tracing::info!(
            replayed = done.event_ids.len(),
            skipped = done.skipped,
            key = %principal.key_id,
            "dead letters replayed by operator"
        );
        Ok(Response::new(ReplayDeadLettersResponse {
            replayed: u32::try_from(done.event_ids.len()).unwrap_or(u32::MAX),
            skipped: done.skipped,
            skip_reasons: done.reasons.into_iter().collect(),
            event_ids: done.event_ids,
        }))
    }

    async fn list_held(
        &self,
        request: Request<ListHeldRequest>,
    ) -> Result<Response<ListHeldResponse>, Status> {
        operator(&request, Scope::Read, "ListHeld")?;
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let after = decode_cursor("page_token", &req.page_token)?;
        let held = self.store.held(&req.target, after, size).await?;
        let next_page_token = if held.len() as u32 == size {
            held.last().map(|h| h.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListHeldResponse {
            held,
            next_page_token,
        }))
    }

    async fn release_held(
        &self,
        request: Request<HeldSelection>,
    ) -> Result<Response<HeldActionResponse>, Status> {
        let principal = operator(&request, Scope::Admin, "ReleaseHeld")?;
        let sel = request.into_inner();
        check_selection(&sel)?;
        let held = self
            .store
            .held_selected(&sel.tenant, &sel.target, &sel.event_ids)
            .await?;
        let event_ids = self.ops.release(&held).await?;
        tracing::info!(
            released = event_ids.len(),
            key = %principal.key_id,
            "held events released by operator"
        );
        Ok(Response::new(HeldActionResponse {
            affected: u32::try_from(event_ids.len()).unwrap_or(u32::MAX),
            event_ids,
        }))
    }

    async fn drop_held(
        &self,
        request: Request<HeldSelection>,
    ) -> Result<Response<HeldActionResponse>, Status> {
        let principal = operator(&request, Scope::Admin, "DropHeld")?;
        let sel = request.into_inner();
        check_selection(&sel)?;
        let held = self
            .store
            .held_selected(&sel.tenant, &sel.target, &sel.event_ids)
            .await?;
        let mut records = Vec::with_capacity(held.len() * 2);
        let mut event_ids = Vec::with_capacity(held.len());
        for h in &held {
            let (tenant, event_id, target) = held_key(h);
            records.push(Record::Outcome(dropped_outcome(h)));
            records.push(Record::Unhold {
                tenant,
                event_id: event_id.clone(),
                target,
            });
            event_ids.push(event_id);
        }
        self.store.write(&records).await?;
        tracing::info!(
            dropped = event_ids.len(),
            key = %principal.key_id,
            "held events dropped by operator"
        );
        Ok(Response::new(HeldActionResponse {
            affected: u32::try_from(event_ids.len()).unwrap_or(u32::MAX),
            event_ids,
        }))
    }
}

/// One server span per call, continuing the caller's W3C trace context from the metadata.
/// Named by the gRPC path (`scimrelay.v1.StatusService/GetEvent`); no request field is recorded,
/// only the id of the caller's API key (`scimrelay.api_key`, never the key).
fn grpc_span(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = req.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc",
        "otel.name" = %path,
        "otel.kind" = "server",
        "rpc.system" = "grpc",
        "rpc.service" = %service,
        "rpc.method" = %method,
        "scimrelay.api_key" = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let carrier = tonic::metadata::MetadataMap::from_headers(req.headers().clone());
    scimrelay_core::telemetry::set_parent(&span, &carrier);
    span
}

/// Who may call and how the listener speaks: the status gRPC service's security settings.
#[derive(Clone)]
pub struct Security {
    /// Checks `authorization` metadata; [`Authenticator::disabled`] lets everyone in.
    pub auth: Authenticator,
    /// TLS (mutual with a client CA) on the gRPC listener; plain gRPC when `None`.
    pub tls: Option<ServerTls>,
    /// Each target's mass-deprovisioning guard, from the service's targets file: what
    /// `AdmitDeprovision` enforces (a caller cannot loosen it).
    pub guards: Guards,
}

/// tonic's TLS configuration from the service's TLS material.
fn tls_config(tls: &ServerTls) -> tonic::transport::ServerTlsConfig {
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &tls.cert_pem,
            &tls.key_pem,
        ))
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &tls.client_ca_pem {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    config
}

/// Serves gRPC on `listener` until `shutdown`; open watch streams end at shutdown. Every call
/// of `StatusService` is authenticated by `security.auth` (health and reflection stay open);
/// with `security.tls` the listener speaks TLS only.
pub async fn serve(
    store: Store,
    ops: Arc<Ops>,
    listener: tokio::net::TcpListener,
    security: Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        // tonic builds its rustls configuration with the process-default provider, which rustls
        // picks by itself only while exactly one provider is compiled in; install the one every
        // scimrelay service uses. An error means a default is already installed: fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        builder = builder.tls_config(tls_config(tls)).map_err(|e| {
            anyhow::anyhow!(
                "{CERT_ENV} / {KEY_ENV} / {CLIENT_CA_ENV}: the gRPC listener's TLS configuration \
                 was refused: {}",
                error_chain(&e)
            )
        })?;
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<StatusServiceServer<Service>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(scimrelay_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let service = Service {
        store,
        ops,
        guards: Arc::new(security.guards),
        shutdown: shutdown.clone(),
    };
    let auth = security.auth;
    let status_service =
        StatusServiceServer::with_interceptor(service, move |r| authenticate(&auth, r));
    builder
        .trace_fn(grpc_span)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(status_service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

/// An error and its sources, `: `-separated (tonic's transport error says little on its own).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
