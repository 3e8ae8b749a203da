//! `scimrelayctl`: the operator CLI of scimrelay. Sends events in bulk to ingest, shows what the
//! status service knows (events, subjects, targets), watches outcomes live, and acts on dead
//! letters and held events, and makes API keys. Human output by default, `--json` for
//! scripts; every error names the bad input and exits non-zero.
//!
//! The API key and TLS options (`--api-key`, `--ca-file`, `--client-cert`, …) are global and
//! apply to ingest and status alike; see [`access`].

mod access;
mod input;
mod keys;
mod output;
mod send;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};

use access::{Access, rpc_error};
use scimrelay_proto::v1::{
    GetEventRequest, GetSubjectRequest, GetTargetRequest, HeldSelection, ListDeadLettersRequest,
    ListHeldRequest, ListTargetsRequest, OutcomeFilter, OutcomeResult, ReplayDeadLettersRequest,
    WatchOutcomesRequest,
};

/// Operate scimrelay: send events, inspect status, watch outcomes, handle dead letters and held
/// events.
#[derive(Parser)]
#[command(name = "scimrelayctl", version, about)]
struct Cli {
    /// Ingest's HTTP base URL.
    #[arg(
        long,
        global = true,
        env = "SCIMRELAY_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    ingest: String,
    /// The status service's gRPC URL.
    #[arg(
        long,
        global = true,
        env = "SCIMRELAY_STATUS_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    status: String,
    /// Print JSON (one document, or one line per item for `watch`) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    access: access::AccessArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a file of users/groups (JSON, NDJSON or CSV) to ingest in batches, with a progress
    /// bar. Resumable: after Ctrl-C, run the same command again.
    ///
    /// CSV columns: kind (default user.upserted), id, tenant, version (required), targets
    /// (;-separated), subject_id (required), userName, displayName, givenName, familyName,
    /// email, active, title, department, employeeNumber, members (;-separated, for groups).
    Send(SendArgs),
    /// Run a file of events in plan mode against one target and print the requests it would send.
    Plan(PlanArgs),
    /// Show what the status service knows.
    #[command(subcommand)]
    Status(StatusCommand),
    /// Print outcomes as they are recorded (Ctrl-C to stop).
    Watch(WatchArgs),
    /// The dead-letter queue (parking lot).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Events held by the mass-deprovisioning guard.
    #[command(subcommand)]
    Held(HeldCommand),
    /// API keys for ingest and status (the keys file, SCIMRELAY_API_KEYS_FILE).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a random key and print it once, with its entry for the keys file (which keeps only
    /// the key's SHA-256).
    New(keys::NewArgs),
}

/// A subject kind, as `--kind` takes it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SubjectKindArg {
    /// A user.
    User,
    /// A group.
    Group,
}

#[derive(Args)]
struct InputArgs {
    /// The events file.
    file: PathBuf,
    /// Its format; by default from the extension (.json, .ndjson/.jsonl, .csv).
    #[arg(long, value_enum)]
    format: Option<input::Format>,
    /// Tenant for events that name none.
    #[arg(long)]
    tenant: Option<String>,
    /// Events per request (at most 1000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch_size: u32,
}

#[derive(Args)]
struct SendArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Targets for events that name none (repeatable); default: every target of the tenant.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// The state file that makes the send resumable (default: FILE.scimrelayctl-state).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Ignore the state file and send from the first line.
    #[arg(long)]
    restart: bool,
    /// Priority of events that name none: bulk (the subject's shard queue) or interactive (the
    /// target's interactive lane, for a person waiting; a bulk_only key is refused).
    #[arg(long, value_enum, default_value_t = Priority::Bulk)]
    priority: Priority,
    /// For a file of one event: wait up to SECS for its outcome at every target and print them
    /// (HTTP `Prefer: wait`). Exit status 0 when all succeeded or were superseded, 1 when one
    /// failed, 4 when the wait ran out first (the event is accepted; see `status event ID`).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=3600))]
    wait: Option<u32>,
}

/// An event's priority (docs/design.md, "Login-time provisioning").
#[derive(Clone, Copy, clap::ValueEnum)]
enum Priority {
    /// A person is waiting: the target's interactive lane, served first.
    Interactive,
    /// A sync or a load: the subject's shard queue.
    Bulk,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        }
    }
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The target to plan against.
    #[arg(long)]
    target: String,
    /// How long to wait for the plans.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
}

#[derive(Subcommand)]
enum StatusCommand {
    /// The outcome history of one event.
    Event {
        /// The event id.
        id: String,
        /// Only this tenant's event (event ids are unique per tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// One subject (user or group id) across targets: its state of record at each.
    Subject {
        /// The subject id.
        id: String,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only this tenant (subjects of two tenants may share an id).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this kind (a user and a group may share an id).
        #[arg(long, value_enum)]
        kind: Option<SubjectKindArg>,
    },
    /// Every target's health (or one target's).
    Targets {
        /// Only this target.
        target: Option<String>,
    },
}

#[derive(Args)]
struct WatchArgs {
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// Only this subject.
    #[arg(long)]
    subject: Option<String>,
    /// Only this result (succeeded, superseded, unsupported, failed, dead-lettered, planned).
    #[arg(long)]
    result: Option<String>,
    /// Resume after this cursor (the #seq of the last line seen); default: only new outcomes.
    #[arg(long)]
    cursor: Option<String>,
    /// Start with the oldest stored outcome instead of only new ones.
    #[arg(long, conflicts_with = "cursor")]
    from_start: bool,
    /// Stop after this many outcomes.
    #[arg(long)]
    count: Option<usize>,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Messages in the parking lot (left in place).
    List {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Most messages to show (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Move parked messages back to their shard queues.
    Replay {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only these events (repeatable).
        #[arg(long = "event")]
        events: Vec<String>,
        /// Most messages to replay (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

#[derive(Args)]
struct Selection {
    /// These events (repeatable).
    #[arg(long = "event")]
    events: Vec<String>,
    /// Every held event of this target.
    #[arg(long)]
    target: Option<String>,
    /// Every held event.
    #[arg(long)]
    all: bool,
    /// Only this tenant's events (event ids are unique per tenant).
    #[arg(long)]
    tenant: Option<String>,
}

#[derive(Subcommand)]
enum HeldCommand {
    /// Held events.
    List {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Deliver held events.
    Release(Selection),
    /// Discard held events (each gets a failed outcome "dropped by operator").
    Drop(Selection),
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A listing's answer: `as_json()` pretty-printed with `--json`, else the text `as_text()`
/// builds (tables end with their own newline).
fn show(
    json: bool,
    as_json: impl FnOnce() -> Value,
    as_text: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&as_json());
    } else {
        print!("{}", as_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(
    args: &InputArgs,
    targets: Vec<String>,
    priority: Option<&'static str>,
) -> anyhow::Result<Vec<input::Record>> {
    let format = match args.format.or_else(|| input::Format::from_path(&args.file)) {
        Some(f) => f,
        None => anyhow::bail!(
            "{}: unknown format; name it with --format json|ndjson|csv",
            args.file.display()
        ),
    };
    let defaults = input::Defaults {
        tenant: args.tenant.clone(),
        targets,
        priority,
    };
    Ok(input::read(&args.file, format, &defaults)?)
}

fn parse_result(name: &str) -> anyhow::Result<i32> {
    for r in [
        OutcomeResult::Succeeded,
        OutcomeResult::Superseded,
        OutcomeResult::Unsupported,
        OutcomeResult::Failed,
        OutcomeResult::DeadLettered,
        OutcomeResult::Planned,
    ] {
        if r.name() == name {
            return Ok(r as i32);
        }
    }
    anyhow::bail!(
        "--result {name:?}: one of succeeded, superseded, unsupported, failed, dead-lettered, planned"
    )
}

/// Builds the access options and runs one subcommand.
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    // Making a key talks to no service, so it needs none of the access options.
    let access = match &cli.command {
        Command::Keys(_) => Access::default(),
        _ => Access::from_args(&cli.access)?,
    };
    let status = cli.status.as_str();
    match cli.command {
        Command::Keys(KeysCommand::New(a)) => keys::new(&a, json),
        Command::Send(a) => send_file(&access, &cli.ingest, a, json).await,
        Command::Plan(a) => plan(&access, &cli.ingest, status, a, json).await,
        Command::Status(StatusCommand::Event { id, tenant }) => {
            status_event(&access, status, id, tenant, json).await
        }
        Command::Status(StatusCommand::Subject {
            id,
            target,
            tenant,
            kind,
        }) => {
            let query = GetSubjectRequest {
                subject_id: id,
                target: target.unwrap_or_default(),
                tenant: tenant.unwrap_or_default(),
                kind: subject_kind(kind) as i32,
            };
            status_subject(&access, status, query, json).await
        }
        Command::Status(StatusCommand::Targets { target }) => {
            status_targets(&access, status, target, json).await
        }
        Command::Watch(a) => watch(&access, status, a, json).await,
        Command::Dlq(DlqCommand::List { target, limit }) => {
            let query = ListDeadLettersRequest {
                target: target.unwrap_or_default(),
                limit,
            };
            dlq_list(&access, status, query, json).await
        }
        Command::Dlq(DlqCommand::Replay {
            target,
            events,
            limit,
        }) => {
            let query = ReplayDeadLettersRequest {
                target: target.unwrap_or_default(),
                event_ids: events,
                limit,
            };
            dlq_replay(&access, status, query, json).await
        }
        Command::Held(HeldCommand::List { target }) => {
            held_list(&access, status, target, json).await
        }
        Command::Held(HeldCommand::Release(sel)) => {
            let sel = held_selection(sel)?;
            let mut c = access.status(status).await?;
            let r = c
                .release_held(sel)
                .await
                .map_err(|s| rpc_error("held release", s))?
                .into_inner();
            held_done("released", &r.event_ids, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Held(HeldCommand::Drop(sel)) => {
            let sel = held_selection(sel)?;
            let mut c = access.status(status).await?;
            let r = c
                .drop_held(sel)
                .await
                .map_err(|s| rpc_error("held drop", s))?
                .into_inner();
            held_done("dropped", &r.event_ids, json);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints the answer of a single event sent with `--wait`; the exit status says how it went.
fn show_waited(answer: &serde_json::Value, secs: u32, json: bool) -> ExitCode {
    let outcomes = answer["outcomes"].as_array().cloned().unwrap_or_default();
    let complete = answer["complete"].as_bool().unwrap_or(false);
    let failed = outcomes
        .iter()
        .any(|o| !matches!(o["result"].as_str(), Some("succeeded" | "superseded")));
    if json {
        print_json(answer);
    } else {
        for o in &outcomes {
            let field = |k: &str| o[k].as_str().unwrap_or("-").to_owned();
            let detail = field("detail");
            println!(
                "{}  {}  {}  remote id {}  {} ms{}",
                field("target"),
                field("result"),
                field("operation"),
                if field("remoteId").is_empty() {
                    "-".into()
                } else {
                    field("remoteId")
                },
                o["latencyMs"].as_u64().unwrap_or_default(),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!("  {detail}")
                },
            );
        }
        if !complete {
            let ids: Vec<&str> = answer["accepted"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
                .unwrap_or_default();
            println!(
                "accepted ({}); not every target answered within {secs} s: see `scimrelayctl status event ID`",
                ids.join(", ")
            );
        }
    }
    if !complete {
        ExitCode::from(4)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `send`: posts the file to ingest in batches, resumably; 130 when interrupted.
async fn send_file(
    access: &Access,
    ingest: &str,
    a: SendArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let records = read_input(&a.input, a.targets, Some(a.priority.as_str()))?;
    let to = send::Ingest {
        http: access.http(send::REQUEST_TIMEOUT)?,
        url: ingest.to_owned(),
    };
    if let Some(secs) = a.wait {
        let [record] = records.as_slice() else {
            anyhow::bail!(
                "--wait: for a file of one event ({} holds {})",
                a.input.file.display(),
                records.len()
            );
        };
        let file = a.input.file.display().to_string();
        let answer = send::post_waiting(&to, &file, record, secs).await?;
        return Ok(show_waited(&answer, secs, json));
    }
    let state = a.state.unwrap_or_else(|| send::state_path(&a.input.file));
    let progress = !json;
    let sent = send::send(
        &to,
        &a.input.file,
        &records,
        a.input.batch_size as usize,
        &state,
        a.restart,
        progress,
    )
    .await?;
    let rate = sent.sent as f64 / sent.elapsed.as_secs_f64().max(0.001);
    if json {
        print_json(
            &json!({"sent": sent.sent, "skipped": sent.skipped, "total": records.len(),
            "interrupted": sent.interrupted, "seconds": sent.elapsed.as_secs_f64(), "eventIds": sent.ids}),
        );
    } else {
        let skipped = if sent.skipped > 0 {
            format!(" ({} sent by an earlier run)", sent.skipped)
        } else {
            String::new()
        };
        println!(
            "sent {} of {} events{skipped} in {:.1} s ({rate:.0}/s)",
            sent.sent,
            records.len(),
            sent.elapsed.as_secs_f64()
        );
    }
    if sent.interrupted {
        eprintln!(
            "interrupted; run the same command again to resume (state in {})",
            state.display()
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// `status event`: the outcome history of one event, and where it is held.
async fn status_event(
    access: &Access,
    status: &str,
    id: String,
    tenant: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut c = access.status(status).await?;
    let ev = c
        .get_event(GetEventRequest {
            event_id: id.clone(),
            tenant: tenant.unwrap_or_default(),
        })
        .await
        .map_err(|s| rpc_error("status event", s))?
        .into_inner();
    if ev.history.is_empty() && ev.held.is_empty() {
        anyhow::bail!("event {id:?}: no outcome recorded (unknown id, or not processed yet)");
    }
    show(
        json,
        || {
            json!({"eventId": ev.event_id,
                "history": ev.history.iter().map(output::recorded_json).collect::<Vec<_>>(),
                "held": ev.held.iter().map(output::held_json).collect::<Vec<_>>()})
        },
        || {
            let mut text = format!(
                "event {}\n{}",
                ev.event_id,
                output::history_table(&ev.history)
            );
            if !ev.held.is_empty() {
                text.push_str("held:\n");
                text.push_str(&output::held_table(&ev.held));
            }
            text
        },
    )
}

/// The proto subject kind for `--kind` (unspecified when not given).
fn subject_kind(kind: Option<SubjectKindArg>) -> scimrelay_proto::v1::SubjectKind {
    match kind {
        None => scimrelay_proto::v1::SubjectKind::Unspecified,
        Some(SubjectKindArg::User) => scimrelay_proto::v1::SubjectKind::User,
        Some(SubjectKindArg::Group) => scimrelay_proto::v1::SubjectKind::Group,
    }
}

/// `status subject`: one subject's state of record at each target.
async fn status_subject(
    access: &Access,
    status: &str,
    query: GetSubjectRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut c = access.status(status).await?;
    let s = c
        .get_subject(query)
        .await
        .map_err(|s| rpc_error("status subject", s))?
        .into_inner();
    show(
        json,
        || {
            json!(
                s.targets
                    .iter()
                    .map(output::subject_json)
                    .collect::<Vec<_>>()
            )
        },
        || output::subject_table(&s.targets),
    )
}

/// `status targets`: every target's health, or one target's.
async fn status_targets(
    access: &Access,
    status: &str,
    target: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut c = access.status(status).await?;
    let targets = match target {
        Some(t) => vec![
            c.get_target(GetTargetRequest { target: t })
                .await
                .map_err(|s| rpc_error("status targets", s))?
                .into_inner(),
        ],
        None => {
            c.list_targets(ListTargetsRequest {})
                .await
                .map_err(|s| rpc_error("status targets", s))?
                .into_inner()
                .targets
        }
    };
    show(
        json,
        || json!(targets.iter().map(output::target_json).collect::<Vec<_>>()),
        || output::targets_table(&targets),
    )
}

/// `watch`: prints outcomes as they are recorded, until Ctrl-C or `--count`.
async fn watch(
    access: &Access,
    status: &str,
    a: WatchArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let filter = OutcomeFilter {
        target: a.target.unwrap_or_default(),
        subject_id: a.subject.unwrap_or_default(),
        result: a
            .result
            .as_deref()
            .map(parse_result)
            .transpose()?
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut c = access.status(status).await?;
    let req = WatchOutcomesRequest {
        filter: Some(filter),
        from_now: a.cursor.is_none() && !a.from_start,
        cursor: a.cursor.unwrap_or_default(),
    };
    let mut stream = c
        .watch_outcomes(req)
        .await
        .map_err(|s| rpc_error("watch", s))?
        .into_inner();
    let mut seen = 0usize;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while a.count.is_none_or(|n| seen < n) {
        let item = tokio::select! {
            _ = &mut ctrl_c => break,
            i = stream.next() => i,
        };
        let Some(item) = item else {
            anyhow::bail!(
                "watch: the status service closed the stream (restarting?); resume with --cursor"
            )
        };
        let r = item.map_err(|s| rpc_error("watch", s))?;
        if json {
            println!("{}", output::recorded_json(&r));
        } else {
            println!("{}", output::outcome_line(&r));
        }
        seen += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq list`: messages in the parking lot, left in place.
async fn dlq_list(
    access: &Access,
    status: &str,
    query: ListDeadLettersRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut c = access.status(status).await?;
    let l = c
        .list_dead_letters(query)
        .await
        .map_err(|s| rpc_error("dlq list", s))?
        .into_inner();
    show(
        json,
        || json!({"total": l.total, "messages": l.messages.iter().map(output::dead_json).collect::<Vec<_>>()}),
        || {
            format!(
                "{}{} shown, {} parked in all\n",
                output::dead_table(&l.messages),
                l.messages.len(),
                l.total
            )
        },
    )
}

/// `dlq replay`: moves parked messages back to their shard queues.
async fn dlq_replay(
    access: &Access,
    status: &str,
    query: ReplayDeadLettersRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut c = access.status(status).await?;
    let r = c
        .replay_dead_letters(query)
        .await
        .map_err(|s| rpc_error("dlq replay", s))?
        .into_inner();
    show(
        json,
        || json!({"replayed": r.replayed, "skipped": r.skipped, "skipReasons": r.skip_reasons, "eventIds": r.event_ids}),
        || {
            let mut text = format!("replayed {}, skipped {}\n", r.replayed, r.skipped);
            for reason in &r.skip_reasons {
                text.push_str(&format!("  skipped: {reason}\n"));
            }
            text
        },
    )
}

/// `held list`: every held event (of one target), read page by page.
async fn held_list(
    access: &Access,
    status: &str,
    target: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut c = access.status(status).await?;
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_held(ListHeldRequest {
                target: target.clone().unwrap_or_default(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .map_err(|s| rpc_error("held list", s))?
            .into_inner();
        all.extend(page.held);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    show(
        json,
        || json!(all.iter().map(output::held_json).collect::<Vec<_>>()),
        || output::held_table(&all),
    )
}

/// The held events `held release` or `held drop` acts on; an error when none are named.
fn held_selection(sel: Selection) -> anyhow::Result<HeldSelection> {
    if sel.events.is_empty() && sel.target.is_none() && !sel.all {
        anyhow::bail!("name the held events: --event ID (repeatable), --target TARGET or --all");
    }
    Ok(HeldSelection {
        event_ids: sel.events,
        target: sel.target.unwrap_or_default(),
        all: sel.all,
        tenant: sel.tenant.unwrap_or_default(),
    })
}

fn held_done(verb: &str, ids: &[String], json: bool) {
    if json {
        print_json(&json!({verb: ids}));
    } else {
        println!(
            "{verb} {} held event(s){}{}",
            ids.len(),
            if ids.is_empty() { "" } else { ": " },
            ids.join(", ")
        );
    }
}

/// Sends the file with `"plan": true` to one target, waits for every plan, prints the requests.
async fn plan(
    access: &Access,
    ingest: &str,
    status: &str,
    a: PlanArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut records = read_input(&a.input, vec![], None)?;
    let file = a.input.file.display().to_string();
    for r in &mut records {
        if let Some(m) = r.event.as_object_mut() {
            m.insert("plan".into(), json!(true));
            m.insert("targets".into(), json!([a.target]));
        }
    }
    let mut client = access.status(status).await?;
    let to = send::Ingest {
        http: access.http(send::REQUEST_TIMEOUT)?,
        url: ingest.to_owned(),
    };
    let mut ids = Vec::new();
    for batch in records.chunks(a.input.batch_size as usize) {
        ids.extend(send::post_batch(&to, &file, batch).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(a.wait_secs);
    let mut plans = Vec::new();
    for id in &ids {
        let outcome = loop {
            let ev = client
                .get_event(GetEventRequest {
                    event_id: id.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|s| rpc_error("plan", s))?
                .into_inner();
            if let Some(o) = ev.outcomes.into_iter().find(|o| o.target == a.target) {
                break o;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "plan: no outcome for event {id} from target {} within {} s (is its connector running?)",
                    a.target,
                    a.wait_secs
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        plans.push(outcome);
    }
    if json {
        print_json(&json!(
            plans.iter().map(output::outcome_json).collect::<Vec<_>>()
        ));
    } else {
        for o in &plans {
            println!(
                "event {} ({} {} v{}) → {}: {}",
                o.event_id,
                output::result_name(o.result),
                o.subject_id,
                o.version,
                o.target,
                o.detail
            );
            if o.planned.is_empty() {
                println!("  (no request: nothing to change)");
            }
            for p in &o.planned {
                println!("  {} {}", p.method, p.path);
                if !p.body.is_empty() {
                    println!("    {}", p.body);
                }
            }
        }
    }
    let not_planned = plans
        .iter()
        .filter(|o| o.result != OutcomeResult::Planned as i32)
        .count();
    if not_planned > 0 {
        eprintln!("{not_planned} event(s) were not planned (see their result)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scimrelayctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
