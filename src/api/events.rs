//! The live event stream (`GET /events`, server-sent events) and the stream
//! tickets browsers open it with. What is stored and how it travels between
//! instances: `notify::events`. Here: who the stream is for, where it
//! resumes, and what each event must pass on its way out: the recipient's
//! basis on its patient *at delivery time* (the one door), a live session,
//! an unexpired token.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, Responder, dev::Payload, web};
use actix_web_lab::sse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

use super::extract::Query;
use crate::auth::AuthUser;
use crate::auth::cache::CachedUser;
use crate::auth::session;
use crate::auth::tokens::{hash_token, random_token};
use crate::domain::role::Role;
use crate::error::{ApiError, Problem};
use crate::metrics::OpenStream;
use crate::notify::events::{
    self, EventKind, EventRow, FORMAT_VERSION, PAGE, ResetReason, Subscription, TICKET_TTL_S,
    Ticket,
};
use crate::state::AppState;
use crate::store::access::basis_of;

/// `GET /events` query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// A stream ticket from `POST /events/ticket`, for clients that cannot
    /// send an `Authorization` header (a browser's `EventSource`); single
    /// use, valid 30 s. Never put the access token in a URL.
    #[param(min_length = 1, max_length = 128)]
    pub ticket: Option<String>,
    /// Where to resume, for a client that cannot send `Last-Event-ID` (a new
    /// `EventSource`); the header wins when both are given.
    #[param(minimum = 0)]
    pub last_event_id: Option<i64>,
}

/// One event as the stream's `data:` line carries it (JSON). Besides `id`,
/// `type`, `at` and `v` it holds only ids: fetch the object through the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamEvent {
    /// The SSE `id:` of the event, to resume from with `Last-Event-ID`.
    /// Absent on `auth.expired` and on a `too_far_behind` reset, which do
    /// not move the client's position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// The SSE `event:` name.
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// The format's version (1).
    pub v: u32,
    /// `stream.reset` only: why. `retention` and `unknown_position`: refetch
    /// what you show; `too_far_behind`: reconnect with your last id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ResetReason>,
    /// The patient it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub patient_id: Option<String>,
    /// `message.created`, `thread.read`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub thread_id: Option<String>,
    /// `message.created`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub message_id: Option<String>,
    /// `thread.read`: the caller's read marker.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub last_read_id: Option<String>,
    /// `notification.created`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub notification_id: Option<String>,
    /// `handover.*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub handover_id: Option<String>,
    /// `consultation.*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub consultation_id: Option<String>,
    /// `care_plan.version_created`: the new version's number (as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `observation.alert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub alert_id: Option<String>,
    /// `observation.alert`: the observation that raised it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub observation_id: Option<String>,
    /// `access_request.*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub access_request_id: Option<String>,
    /// `emergency_access.granted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub emergency_access_id: Option<String>,
}

impl StreamEvent {
    /// A frame the stream makes itself (`stream.*`, `auth.expired`).
    fn control(kind: EventKind, id: Option<i64>, reason: Option<ResetReason>) -> Self {
        Self {
            id,
            kind,
            at: Utc::now(),
            v: FORMAT_VERSION,
            reason,
            patient_id: None,
            thread_id: None,
            message_id: None,
            last_read_id: None,
            notification_id: None,
            handover_id: None,
            consultation_id: None,
            version: None,
            alert_id: None,
            observation_id: None,
            access_request_id: None,
            emergency_access_id: None,
        }
    }

    fn frame(&self) -> sse::Event {
        let data = serde_json::to_string(self).unwrap_or_default();
        let mut frame = sse::Data::new(data).event(self.kind.as_str());
        if let Some(id) = self.id {
            frame = frame.id(id.to_string());
        }
        frame.into()
    }
}

/// A stored event as a frame.
fn frame_of(row: &EventRow) -> sse::Event {
    sse::Data::new(row.payload().to_string())
        .event(row.kind.clone())
        .id(row.id.to_string())
        .into()
}

/// Who a stream is for, and until when.
#[derive(Clone)]
struct StreamCaller {
    user: AuthUser,
    session_id: String,
    token_version: i32,
    /// When the access token (or the ticket's) expires.
    expires_at: SystemTime,
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The caller of a bearer-authenticated request, with the token's session,
/// version and expiry (checked as every route checks it).
async fn bearer_caller(req: &HttpRequest, state: &AppState) -> Result<StreamCaller, ApiError> {
    let user = AuthUser::from_request(req, &mut Payload::None).await?;
    let token = bearer(req).ok_or(ApiError::Unauthorized("a bearer access token is required"))?;
    let claims = state.jwt.verify(&token)?;
    Ok(StreamCaller {
        user,
        session_id: claims.sid,
        token_version: claims.ver,
        expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
    })
}

/// Whether the session is still live for this user and token version (a
/// sign-out, a password change, a deactivation end it), trusting the
/// session cache as every request does.
async fn session_live(
    state: &AppState,
    caller: &StreamCaller,
) -> Result<Option<AuthUser>, ApiError> {
    let lets_through = |u: &CachedUser| {
        u.user_id == caller.user.id && u.active && u.token_version == caller.token_version
    };
    if let Some(user) = state.users.get(&caller.session_id).filter(lets_through) {
        return Ok(Some(AuthUser {
            id: user.user_id,
            role: user.role,
            organization_id: user.organization_id,
        }));
    }
    let epoch = state.users.epoch();
    let sid = caller.session_id.clone();
    let found = state
        .db
        .read(move |conn| Ok(session::lookup(conn, &sid)?))
        .await?;
    let Some(s) = found.filter(|s| s.revoked_at.is_none()) else {
        return Ok(None);
    };
    let role = Role::parse(&s.role)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("unknown stored role")))?;
    let user = CachedUser {
        user_id: s.user_id,
        token_version: s.token_version,
        active: s.active,
        role,
        organization_id: s.organization_id,
        enrol_only: s.mfa_enrol_only,
    };
    state.users.put(&caller.session_id, user.clone(), epoch);
    Ok(lets_through(&user).then_some(AuthUser {
        id: user.user_id,
        role: user.role,
        organization_id: user.organization_id,
    }))
}

/// The caller a ticket stands for (used up here, whatever the outcome).
async fn ticket_caller(state: &AppState, secret: &str) -> Result<StreamCaller, ApiError> {
    let invalid = ApiError::Unauthorized("invalid, used or expired stream ticket");
    let hash = hash_token(secret);
    let now = state.clock.now_naive();
    let ticket = state
        .db
        .write(move |conn| Ok(events::redeem_ticket(conn, &hash, now)?))
        .await?
        .ok_or(invalid)?;
    let expires_at = UNIX_EPOCH
        + Duration::from_secs(
            u64::try_from(ticket.token_expires_at.and_utc().timestamp()).unwrap_or(0),
        );
    let mut caller = StreamCaller {
        user: AuthUser {
            id: ticket.user_id,
            role: Role::Nurse,
            organization_id: None,
        },
        session_id: ticket.session_id,
        token_version: ticket.token_version,
        expires_at,
    };
    caller.user = session_live(state, &caller)
        .await?
        .ok_or(ApiError::Unauthorized("the access token has been revoked"))?;
    if caller.expires_at <= SystemTime::now() {
        return Err(ApiError::Unauthorized("invalid or expired access token"));
    }
    Ok(caller)
}

/// `Last-Event-ID` (the header, else `?last_event_id=`): a non-negative integer.
fn resume_point(req: &HttpRequest, query: &StreamQuery) -> Result<Option<i64>, ApiError> {
    let from_query = match query.last_event_id {
        Some(id) if id < 0 => {
            return Err(ApiError::malformed(
                "last_event_id",
                "must be an event id (a non-negative integer)",
            ));
        }
        other => other,
    };
    let Some(value) = req.headers().get("last-event-id") else {
        return Ok(from_query);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(from_query);
    }
    text.parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::malformed(
                "Last-Event-ID",
                "must be an event id (a non-negative integer)",
            )
        })
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "The id of the last event received: the events after it are replayed first (within `events.retention_h`; older: one `stream.reset`)"),
    ),
    responses(
        (status = 200, description = "A stream of server-sent events (`text/event-stream`), one `event:` per type \
            of `StreamEvent.type`, each with an `id:` (but `auth.expired`) and one `data:` line holding a \
            `StreamEvent`; a comment line every `events.heartbeat_s`. It starts with `stream.ready` (no \
            `Last-Event-ID`: the current position), a replay, or one `stream.reset`. Events about a patient \
            reach you only while you have a basis on them. It ends with `auth.expired` when the access token \
            (or the session) does: reconnect with a fresh token and `Last-Event-ID`.",
            body = StreamEvent, content_type = "text/event-stream"),
        (status = 400, description = "Malformed `Last-Event-ID` or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token or ticket", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`events.max_streams_per_user` streams are open already", body = Problem, content_type = "application/problem+json"),
    ),
    // A browser passes `?ticket=` instead of the bearer token (see `StreamQuery`).
    security(("bearer" = [])))]
/// The caller's live events (server-sent events), resumable with `Last-Event-ID`.
pub async fn stream_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    Query(query): Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let resume = resume_point(&req, &query)?;
    let caller = match &query.ticket {
        Some(ticket) => ticket_caller(&state, ticket).await?,
        None => bearer_caller(&req, &state).await?,
    };
    let too_many = |_| ApiError::TooManyRequests { retry_after_s: 5 };
    let mut subscription = state.events.subscribe(&caller.user.id).map_err(too_many)?;
    // PostgreSQL: the limit among all instances' streams of the user.
    state
        .events
        .lease(&mut subscription, state.clock.now_naive())
        .await?
        .map_err(too_many)?;
    let position = state.db.read(|conn| Ok(events::position(conn)?)).await?;
    let (first, last, replay) = match resume {
        None => (
            Some((EventKind::StreamReady, position.head, None)),
            position.head,
            Replay::Done,
        ),
        Some(id) if id < position.purged_through => (
            Some((
                EventKind::StreamReset,
                position.head,
                Some(ResetReason::Retention),
            )),
            position.head,
            Replay::Done,
        ),
        Some(id) if id > position.head => (
            Some((
                EventKind::StreamReset,
                position.head,
                Some(ResetReason::UnknownPosition),
            )),
            position.head,
            Replay::Done,
        ),
        Some(id) => (None, id, Replay::More),
    };
    let stream = EventStream::new(
        state.into_inner(),
        caller,
        subscription,
        first,
        last,
        replay,
    );
    Ok(sse::Sse::from_infallible_stream(stream)
        .respond_to(&req)
        .map_into_boxed_body())
}

/// A database read or check in flight for one stream.
type Pending<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// Where a resuming stream's replay stands.
enum Replay {
    /// A page is being read.
    Reading(Pending<Vec<EventRow>>),
    /// The last page was full (or none was read yet): read the next one once
    /// the rows in hand are out.
    More,
    /// Replayed: the subscription carries the rest.
    Done,
}

/// One stream, as the response body itself: actix polls it when the
/// connection can take more, when one of its reads or checks completes,
/// when its hub subscription has a row, and at its timer (heartbeat or
/// expiry). No task and no channel of its own: an idle stream is this
/// struct, its subscription's buffer and its timer (issue 15's memory
/// target; the spawned task and the frame channel it replaces were ≈ 6 KiB
/// of each idle stream). When the client goes, actix drops it, and the
/// subscription leaves the hub.
struct EventStream {
    state: Arc<AppState>,
    caller: StreamCaller,
    subscription: Subscription,
    /// The frame to send before anything else (`stream.ready`/`stream.reset`
    /// at a position), kept small: a `StreamEvent` is ≈ 0.4 KiB.
    first: Option<(EventKind, i64, Option<ResetReason>)>,
    /// The id of the last row delivered or passed over.
    last: i64,
    replay: Replay,
    /// Rows to deliver, oldest first (a replay page, or a live row).
    pending: VecDeque<Arc<EventRow>>,
    /// The basis check of `pending`'s first row, in flight.
    check: Option<Pending<bool>>,
    /// The session check of a heartbeat, in flight.
    session: Option<Pending<Option<AuthUser>>>,
    /// When the access token expires (the stream ends with `auth.expired`).
    deadline: Instant,
    /// Fires at the next heartbeat or at `deadline`, whichever comes first.
    timer: Pin<Box<tokio::time::Sleep>>,
    next_heartbeat: Instant,
    every: Duration,
    finished: bool,
    /// `relais_event_streams_open` counts this stream until it is dropped.
    _open: OpenStream,
}

impl EventStream {
    fn new(
        state: Arc<AppState>,
        caller: StreamCaller,
        subscription: Subscription,
        first: Option<(EventKind, i64, Option<ResetReason>)>,
        last: i64,
        replay: Replay,
    ) -> Self {
        let remaining = caller
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let now = Instant::now();
        let deadline = now + remaining;
        let every = Duration::from_secs(state.settings.events.heartbeat_s);
        let next_heartbeat = now + every;
        Self {
            _open: state.metrics.stream_opened(),
            timer: Box::pin(tokio::time::sleep_until(next_heartbeat.min(deadline))),
            state,
            caller,
            subscription,
            first,
            last,
            replay,
            pending: VecDeque::new(),
            check: None,
            session: None,
            deadline,
            next_heartbeat,
            every,
            finished: false,
        }
    }

    /// The last frame: the stream ends after it.
    fn end_with(&mut self, frame: Option<sse::Event>) -> Poll<Option<sse::Event>> {
        self.finished = true;
        self.pending = VecDeque::new();
        self.check = None;
        self.session = None;
        Poll::Ready(frame)
    }

    fn expired(&mut self) -> Poll<Option<sse::Event>> {
        let frame = StreamEvent::control(EventKind::AuthExpired, None, None).frame();
        self.end_with(Some(frame))
    }

    /// The next row of `pending` that may go out now (its recipient's basis
    /// on its patient checked at this moment), or what stops the stream.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Option<sse::Event>>> {
        while let Some(row) = self.pending.front().cloned() {
            let allowed = match &row.patient_id {
                None => true,
                Some(patient) => {
                    let check = self.check.get_or_insert_with(|| {
                        Box::pin(deliverable(
                            self.state.clone(),
                            self.caller.user.id.clone(),
                            patient.clone(),
                        ))
                    });
                    let Poll::Ready(outcome) = check.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    self.check = None;
                    match outcome {
                        Ok(allowed) => allowed,
                        Err(_) => return Poll::Ready(None),
                    }
                }
            };
            self.pending.pop_front();
            if self.pending.is_empty() && self.pending.capacity() > 4 {
                // A replay page's room is not kept by an idle stream.
                self.pending = VecDeque::new();
            }
            self.last = row.id;
            if allowed {
                return Poll::Ready(Some(Some(frame_of(&row))));
            }
        }
        Poll::Ready(Some(None))
    }
}

impl futures_core::Stream for EventStream {
    type Item = sse::Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<sse::Event>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some((kind, id, reason)) = this.first.take() {
                return Poll::Ready(Some(StreamEvent::control(kind, Some(id), reason).frame()));
            }
            if Instant::now() >= this.deadline {
                return this.expired();
            }
            match this.poll_pending(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return this.end_with(None),
                Poll::Ready(Some(Some(frame))) => return Poll::Ready(Some(frame)),
                Poll::Ready(Some(None)) => {}
            }
            // The replay, from the rows; the subscription holds what commits meanwhile.
            match &mut this.replay {
                Replay::Reading(read) => match read.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(rows)) => {
                        let full = rows.len() as i64 == PAGE;
                        this.pending.extend(rows.into_iter().map(Arc::new));
                        this.replay = if full { Replay::More } else { Replay::Done };
                        continue;
                    }
                    Poll::Ready(Err(_)) => return this.end_with(None),
                },
                Replay::More => {
                    let (state, user, after) =
                        (this.state.clone(), this.caller.user.id.clone(), this.last);
                    this.replay = Replay::Reading(Box::pin(async move {
                        state
                            .db
                            .read(move |conn| {
                                Ok(events::rows_of_user_after(conn, &user, after, PAGE)?)
                            })
                            .await
                    }));
                    continue;
                }
                Replay::Done => {}
            }
            if let Some(check) = &mut this.session {
                let Poll::Ready(outcome) = check.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.session = None;
                return match outcome {
                    Ok(Some(_)) => Poll::Ready(Some(sse::Event::Comment("heartbeat".into()))),
                    Ok(None) => this.expired(),
                    Err(_) => this.end_with(None),
                };
            }
            match this.subscription.poll_row(cx) {
                Poll::Ready(Some(row)) => {
                    if row.id > this.last {
                        this.pending.push_back(row);
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    let reset = this.subscription.lagged().then(|| {
                        StreamEvent::control(
                            EventKind::StreamReset,
                            None,
                            Some(ResetReason::TooFarBehind),
                        )
                        .frame()
                    });
                    return this.end_with(reset);
                }
                Poll::Pending => {}
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now < this.deadline {
                // A heartbeat: the session is checked first (a sign-out, a
                // password change, a deactivation end the stream).
                let (state, caller) = (this.state.clone(), this.caller.clone());
                this.session = Some(Box::pin(async move { session_live(&state, &caller).await }));
                this.next_heartbeat = now + this.every;
                let at = this.next_heartbeat.min(this.deadline);
                this.timer.as_mut().reset(at);
            }
        }
    }
}

/// Whether an event about `patient` may go to `user_id` now: their basis
/// on the patient at this moment.
async fn deliverable(
    state: Arc<AppState>,
    user_id: String,
    patient: String,
) -> Result<bool, ApiError> {
    let now = state.clock.now();
    state
        .db
        .read(move |conn| Ok(basis_of(conn, &patient, &user_id, now)?.is_some()))
        .await
}

/// A stream ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamTicket {
    /// Pass as `GET /api/v1/events?ticket=`; single use.
    pub ticket: String,
    /// Seconds it may wait to be used.
    pub expires_in: i64,
}

#[utoipa::path(post, path = "/api/v1/events/ticket", tag = "events",
    responses(
        (status = 201, description = "A single-use ticket to open the event stream without an \
            `Authorization` header (a browser's `EventSource`); the stream it opens ends when this \
            request's access token expires", body = StreamTicket),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Makes a stream ticket (for `EventSource`, which cannot send a bearer token).
pub async fn create_stream_ticket(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = bearer_caller(&req, &state).await?;
    let secret = random_token();
    let hash = hash_token(&secret);
    let expires = caller
        .expires_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let token_expires_at = DateTime::<Utc>::from_timestamp(i64::try_from(expires).unwrap_or(0), 0)
        .unwrap_or_default()
        .naive_utc();
    let ticket = Ticket {
        user_id: caller.user.id,
        session_id: caller.session_id,
        token_version: caller.token_version,
        token_expires_at,
    };
    let now = state.clock.now_naive();
    state
        .db
        .write(move |conn| Ok(events::create_ticket(conn, &hash, &ticket, now)?))
        .await?;
    Ok(HttpResponse::Created().json(StreamTicket {
        ticket: secret,
        expires_in: TICKET_TTL_S,
    }))
}
