//! `send`: posts a file of events to ingest (`POST /v1/events`) in batches, with a progress bar
//! (rate, ETA), resumable after Ctrl-C.
//!
//! Resuming: after each batch that ingest accepted (202, i.e. confirmed by the broker), the
//! number of events acknowledged so far and the line of the last one are written to a small
//! state file (`<input>.scimrelayctl-state` unless `--state`), atomically (write + rename).
//! Running the same command again skips what was acknowledged. A batch cut short by Ctrl-C is
//! resent in full next time; that is harmless because events are versioned desired state.
//! The state file is removed when the whole file was sent.
//!
//! A refused API key (401, 403 without an event to blame) stops the send with an error that
//! says so; a rate-limited batch (429) is retried after the `Retry-After` ingest sends, within
//! the same attempt budget as an unavailable ingest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::input::Record;

/// Attempts per batch when ingest is unavailable (503, connection refused) before giving up.
const ATTEMPTS: u32 = 5;
/// Largest batch: ingest's default limit.
pub const MAX_BATCH: usize = 1000;
/// Timeout of one request to ingest.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `send` stands in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The input file.
    pub file: String,
    /// Events acknowledged by ingest, from the start of the file.
    pub acked: usize,
    /// Line of the last acknowledged event.
    pub last_line: usize,
}

/// The default state file of an input.
pub fn state_path(input: &Path) -> PathBuf {
    let mut s = input.as_os_str().to_owned();
    s.push(".scimrelayctl-state");
    PathBuf::from(s)
}

fn load_state(path: &Path, input: &Path) -> anyhow::Result<Option<State>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("{}: cannot read the state file: {e}", path.display()),
    };
    let state: State = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a scimrelayctl state file ({e}); delete it or pass --restart",
            path.display()
        )
    })?;
    anyhow::ensure!(
        state.file == input.display().to_string(),
        "{}: state of another input ({}); pass --state or --restart",
        path.display(),
        state.file
    );
    Ok(Some(state))
}

fn save_state(path: &Path, state: &State) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(state)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

/// What a send did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Events accepted in this run.
    pub sent: usize,
    /// Events skipped because an earlier run sent them.
    pub skipped: usize,
    /// Accepted event ids, in order.
    pub ids: Vec<String>,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// Where events go: ingest's base URL and the HTTP client (API key, TLS) to reach it.
pub struct Ingest {
    /// The client, with the API key as a default header.
    pub http: reqwest::Client,
    /// The base URL (`--ingest`).
    pub url: String,
}

/// Posts one batch; retries while ingest is unavailable or rate-limits the key. An invalid
/// event is an error naming its line; a refused key is an error saying so.
pub async fn post_batch(to: &Ingest, file: &str, batch: &[Record]) -> anyhow::Result<Vec<String>> {
    let (http, ingest) = (&to.http, to.url.as_str());
    let body = json!({"events": batch.iter().map(|r| r.event.clone()).collect::<Vec<_>>()});
    let url = format!("{}/v1/events", ingest.trim_end_matches('/'));
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        let resp = http.post(&url).json(&body).send().await;
        let mut pause = wait;
        let retry_reason = match resp {
            Ok(r) if r.status().as_u16() == 202 => {
                let v: Value = r
                    .json()
                    .await
                    .map_err(|e| anyhow::anyhow!("ingest at {ingest}: unreadable answer: {e}"))?;
                let ids = v["accepted"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x["id"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                return Ok(ids);
            }
            Ok(r) if r.status().as_u16() == 429 => {
                // The server's wait, bounded so that a bad header cannot park the run for hours.
                if let Some(asked) = retry_after(r.headers()) {
                    pause = asked.min(crate::access::MAX_RETRY_AFTER);
                }
                let refused = Refusal::read(r).await;
                format!(
                    "ingest at {ingest}: the API key is over its request rate (HTTP 429): {}",
                    refused.message
                )
            }
            Ok(r) if r.status().is_client_error() => {
                return Err(Refusal::read(r).await.into_error(file, batch));
            }
            Ok(r) => format!("ingest answered {}", r.status()),
            Err(e) => format!(
                "cannot reach ingest at {ingest}: {}",
                crate::access::chain(&e.without_url())
            ),
        };
        if attempt == ATTEMPTS {
            anyhow::bail!(
                "{retry_reason} (after {ATTEMPTS} attempts); rerun the same command to resume"
            );
        }
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    unreachable!("the last attempt returns")
}

/// Posts one event asking to wait up to `secs` for its outcomes (`Prefer: wait`); returns
/// ingest's answer (200: every outcome came; 202: the wait ran out first). Sent once: a person
/// waiting is better served by an error now than by retries.
pub async fn post_waiting(
    to: &Ingest,
    file: &str,
    record: &Record,
    secs: u32,
) -> anyhow::Result<Value> {
    let ingest = to.url.as_str();
    let url = format!("{}/v1/events", ingest.trim_end_matches('/'));
    let r = to
        .http
        .post(&url)
        .header("Prefer", format!("wait={secs}"))
        .timeout(Duration::from_secs(u64::from(secs)) + REQUEST_TIMEOUT)
        .json(&record.event)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach ingest at {ingest}: {}",
                crate::access::chain(&e.without_url())
            )
        })?;
    match r.status().as_u16() {
        200 | 202 => r
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("ingest at {ingest}: unreadable answer: {e}")),
        s if (400..500).contains(&s) => Err(Refusal::read(r)
            .await
            .into_error(file, std::slice::from_ref(record))),
        s => anyhow::bail!(
            "ingest at {ingest} answered {s}; the event may not be accepted: send it again"
        ),
    }
}

/// `Retry-After` in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A 4xx answer of ingest: `{"error": {"field": …, "message": …}}`.
struct Refusal {
    status: u16,
    field: String,
    message: String,
}

impl Refusal {
    async fn read(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        Refusal {
            status,
            field: v["error"]["field"].as_str().unwrap_or_default().to_owned(),
            message: v["error"]["message"]
                .as_str()
                .unwrap_or("rejected")
                .to_owned(),
        }
    }

    /// The error for the user: a refused key in words, or the line and field of the event at
    /// fault.
    fn into_error(self, file: &str, batch: &[Record]) -> anyhow::Error {
        let Refusal {
            status,
            field,
            message,
        } = self;
        // `events[i].user.userName` → the line of event i and the field inside it (a batch of
        // one may come back without the `events[0]` prefix).
        let located = match field
            .strip_prefix("events[")
            .and_then(|rest| rest.split_once(']'))
        {
            Some((i, inner)) => i
                .parse::<usize>()
                .ok()
                .and_then(|i| batch.get(i))
                .map(|r| (r, inner.trim_start_matches('.'))),
            None if batch.len() == 1 && !field.is_empty() && !matches!(status, 401 | 403) => {
                batch.first().map(|r| (r, field.as_str()))
            }
            None => None,
        };
        if let Some((r, inner)) = located {
            let msg = message
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(&message);
            return anyhow::anyhow!("{file}:{}: {inner}: {msg}", r.line);
        }
        let hint = "pass a key with the `send` scope for these tenants with --api-key, \
                    --api-key-file or SCIMRELAY_API_KEY";
        match status {
            401 => anyhow::anyhow!("ingest refused the API key (HTTP 401): {message}; {hint}"),
            403 => anyhow::anyhow!(
                "the API key is not allowed to send this (HTTP 403): {message}; {hint}"
            ),
            _ => anyhow::anyhow!("{file}: ingest refused the batch (HTTP {status}): {message}"),
        }
    }
}

/// Sends `records` of `input` in batches of `batch_size`, resuming from `state_file`.
pub async fn send(
    to: &Ingest,
    input: &Path,
    records: &[Record],
    batch_size: usize,
    state_file: &Path,
    restart: bool,
    progress: bool,
) -> anyhow::Result<Sent> {
    let file = input.display().to_string();
    let start = Instant::now();
    let state = if restart {
        None
    } else {
        load_state(state_file, input)?
    };
    let skip = state
        .as_ref()
        .map(|s| s.acked)
        .unwrap_or(0)
        .min(records.len());
    let bar = if progress {
        indicatif::ProgressBar::new(records.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}  {msg}",
        )
        .map_err(|e| anyhow::anyhow!("progress template: {e}"))?,
    );
    bar.set_position(skip as u64);
    if skip > 0 {
        bar.println(format!(
            "resuming {file} after line {} ({skip} events already sent)",
            state.as_ref().map(|s| s.last_line).unwrap_or(0)
        ));
    }
    bar.reset_eta();
    let mut out = Sent {
        skipped: skip,
        ..Default::default()
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut acked = skip;
    for batch in records[skip..].chunks(batch_size.clamp(1, MAX_BATCH)) {
        let ids = tokio::select! {
            _ = &mut ctrl_c => {
                out.interrupted = true;
                break;
            }
            r = post_batch(to, &file, batch) => r?,
        };
        acked += batch.len();
        let last_line = batch.last().map(|r| r.line).unwrap_or(0);
        save_state(
            state_file,
            &State {
                file: file.clone(),
                acked,
                last_line,
            },
        )?;
        out.sent += batch.len();
        out.ids.extend(ids);
        bar.set_position(acked as u64);
    }
    bar.finish_and_clear();
    if !out.interrupted && acked >= records.len() {
        let _ = std::fs::remove_file(state_file);
    }
    out.elapsed = start.elapsed();
    Ok(out)
}
