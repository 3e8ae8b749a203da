//! The gRPC API (`scimrelay.v1.StatusService`), a thin adapter over the store and the broker
//! operations, with the standard health service and reflection so `grpcurl` works.
//!
//! Cursors are the decimal `seq` of the last item returned. `seq` grows in commit order (see
//! the store), so "everything after n" never skips an outcome committed later with a smaller
//! seq; that is what makes `WatchOutcomes` gap-free across reconnects and restarts.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use scimrelay_proto::v1::status_service_server::{StatusService, StatusServiceServer};
use scimrelay_proto::v1::{
    GetEventRequest, GetEventResponse, GetLedgerRequest, GetLedgerResponse, GetSubjectRequest,
    GetSubjectResponse, GetTargetRequest, HeldActionResponse, HeldSelection,
    ListDeadLettersRequest, ListDeadLettersResponse, ListEventsRequest, ListEventsResponse,
    ListHeldRequest, ListHeldResponse, ListOutcomesRequest, ListOutcomesResponse,
    ListTargetsRequest, ListTargetsResponse, Outcome, OutcomeFilter, OutcomeResult,
    RecordedOutcome, ReplayDeadLettersRequest, ReplayDeadLettersResponse, SubjectKind,
    TargetSummary, WatchOutcomesRequest,
};

use crate::broker::{Ops, OpsError};
use crate::store::{Record, Store, StoreError, held_key, now_ms};

/// Page size when the request asks for none.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page.
pub const MAX_PAGE: u32 = 1000;
/// Most keys in one ledger lookup.
pub const MAX_LEDGER_KEYS: usize = 1000;
/// Outcomes a watch reads from the store at once.
const WATCH_CHUNK: u32 = 500;
/// How often a watch looks for outcomes written by other replicas (its own are signalled).
const WATCH_POLL: Duration = Duration::from_millis(500);
/// Outcomes buffered per watcher before the stream waits for the client.
const WATCH_BUFFER: usize = 256;
/// The detail of the outcome recorded when an operator drops a held event.
pub const DROPPED_DETAIL: &str = "dropped by operator";

struct Service {
    store: Store,
    ops: Arc<Ops>,
    shutdown: CancellationToken,
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        Status::internal(e.to_string())
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

/// The terminal FAILED outcome of a held event dropped by an operator.
pub fn dropped_outcome(h: &scimrelay_proto::v1::HeldEvent) -> Outcome {
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
        let id = request.into_inner().event_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("event_id: required"));
        }
        let (history, held) = self.store.event(&id).await?;
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
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let after = decode_cursor("page_token", &req.page_token)?;
        let mut filter = req.filter.unwrap_or_default();
        if !req.target.is_empty() {
            filter.target = req.target;
        }
        check_filter(&filter)?;
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
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let after = decode_cursor("page_token", &req.page_token)?;
        let filter = req.filter.unwrap_or_default();
        check_filter(&filter)?;
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
        let req = request.into_inner();
        if req.subject_id.is_empty() {
            return Err(Status::invalid_argument("subject_id: required"));
        }
        let targets = self.store.subject(&req.subject_id, &req.target).await?;
        if targets.is_empty() {
            return Err(Status::not_found(format!(
                "subject_id: no target has seen subject {:?}",
                req.subject_id
            )));
        }
        Ok(Response::new(GetSubjectResponse { targets }))
    }

    type WatchOutcomesStream = WatchStream;

    async fn watch_outcomes(
        &self,
        request: Request<WatchOutcomesRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let req = request.into_inner();
        let filter = req.filter.unwrap_or_default();
        check_filter(&filter)?;
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
        _request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
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

    async fn get_ledger(
        &self,
        request: Request<GetLedgerRequest>,
    ) -> Result<Response<GetLedgerResponse>, Status> {
        let keys = request.into_inner().keys;
        if keys.len() > MAX_LEDGER_KEYS {
            return Err(Status::invalid_argument(format!(
                "keys: at most {MAX_LEDGER_KEYS} per call"
            )));
        }
        if let Some(i) = keys
            .iter()
            .position(|k| k.target.is_empty() || k.subject_id.is_empty())
        {
            return Err(Status::invalid_argument(format!(
                "keys[{i}]: target and subject_id are required"
            )));
        }
        Ok(Response::new(GetLedgerResponse {
            entries: self.store.ledger(&keys).await?,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
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
        let req = request.into_inner();
        let done = self
            .ops
            .replay(&req.target, &req.event_ids, req.limit)
            .await?;
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
        let sel = request.into_inner();
        check_selection(&sel)?;
        let held = self
            .store
            .held_selected(&sel.target, &sel.event_ids)
            .await?;
        let event_ids = self.ops.release(&held).await?;
        tracing::info!(
            released = event_ids.len(),
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
        let sel = request.into_inner();
        check_selection(&sel)?;
        let held = self
            .store
            .held_selected(&sel.target, &sel.event_ids)
            .await?;
        let mut records = Vec::with_capacity(held.len() * 2);
        let mut event_ids = Vec::with_capacity(held.len());
        for h in &held {
            let (event_id, target) = held_key(h);
            records.push(Record::Outcome(dropped_outcome(h)));
            records.push(Record::Unhold {
                event_id: event_id.clone(),
                target,
            });
            event_ids.push(event_id);
        }
        self.store.write(&records).await?;
        tracing::info!(dropped = event_ids.len(), "held events dropped by operator");
        Ok(Response::new(HeldActionResponse {
            affected: u32::try_from(event_ids.len()).unwrap_or(u32::MAX),
            event_ids,
        }))
    }
}

/// One server span per call, continuing the caller's W3C trace context from the metadata.
/// Named by the gRPC path (`scimrelay.v1.StatusService/GetEvent`); no request field is recorded.
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
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let carrier = tonic::metadata::MetadataMap::from_headers(req.headers().clone());
    scimrelay_core::telemetry::set_parent(&span, &carrier);
    span
}

/// Serves gRPC on `listener` until `shutdown`; open watch streams end at shutdown.
pub async fn serve(
    store: Store,
    ops: Arc<Ops>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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
        shutdown: shutdown.clone(),
    };
    tonic::transport::Server::builder()
        .trace_fn(grpc_span)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(StatusServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}
