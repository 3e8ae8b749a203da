//! Reads event files for `send` and `plan`: JSON (an array, `{"events": [...]}` or one event),
//! NDJSON (one event per line) or CSV (one user or group per row, columns below), into the
//! ingest API's JSON events, each with the line it came from so errors can name it.
//!
//! CSV columns (header row required, any order, unknown columns are an error):
//! `kind` (default `user.upserted`), `id` (event id), `tenant`, `version` (required),
//! `targets` (`;`-separated), `subject_id` (the user or group id, required), `userName`,
//! `displayName`, `givenName`, `familyName`, `email`, `active` (true/false), `title`,
//! `department`, `employeeNumber`, `members` (group member ids, `;`-separated).

use std::path::Path;

use serde_json::{Map, Value, json};

/// An input that cannot be turned into events: where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}{}: {message}", column.map(|c| format!(":{c}")).unwrap_or_default())]
pub struct InputError {
    /// The file as given on the command line.
    pub file: String,
    /// 1-based line (for JSON arrays: the line where the event starts).
    pub line: usize,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// The file formats `send` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A JSON array of events, `{"events": [...]}`, or one event.
    Json,
    /// One JSON event per line.
    Ndjson,
    /// One user or group per row (see `scimrelayctl send --help`).
    Csv,
}

impl Format {
    /// The format a file name implies.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// One event of the input and the line it starts on.
#[derive(Debug, Clone)]
pub struct Record {
    /// 1-based line.
    pub line: usize,
    /// The event in the ingest API's JSON.
    pub event: Value,
}

/// Options applied to every event read.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Tenant for events that name none.
    pub tenant: Option<String>,
    /// Targets for events that name none.
    pub targets: Vec<String>,
    /// Priority (`interactive` or `bulk`) for events that name none.
    pub priority: Option<&'static str>,
}

/// Reads a file in `format` into events.
pub fn read(path: &Path, format: Format, defaults: &Defaults) -> Result<Vec<Record>, InputError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| InputError {
        file: name.clone(),
        line: 0,
        column: None,
        message: format!("cannot read: {e}"),
    })?;
    let mut records = match format {
        Format::Json => json_records(&name, &text)?,
        Format::Ndjson => ndjson_records(&name, &text)?,
        Format::Csv => csv_records(&name, &text)?,
    };
    for r in &mut records {
        let Some(obj) = r.event.as_object_mut() else {
            return Err(InputError {
                file: name,
                line: r.line,
                column: None,
                message: "an event must be a JSON object".into(),
            });
        };
        if let Some(t) = &defaults.tenant {
            obj.entry("tenant")
                .or_insert_with(|| Value::String(t.clone()));
        }
        if !defaults.targets.is_empty() {
            obj.entry("targets")
                .or_insert_with(|| json!(defaults.targets));
        }
        if let Some(p) = defaults.priority {
            obj.entry("priority")
                .or_insert_with(|| Value::String(p.to_owned()));
        }
    }
    Ok(records)
}

fn json_records(name: &str, text: &str) -> Result<Vec<Record>, InputError> {
    let value: Value = serde_json::from_str(text).map_err(|e| InputError {
        file: name.to_owned(),
        line: e.line(),
        column: Some(e.column()),
        message: format!("invalid JSON: {}", json_message(&e)),
    })?;
    let items = match value {
        Value::Array(a) => a,
        Value::Object(mut m) if m.contains_key("events") => match m.remove("events") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(InputError {
                    file: name.into(),
                    line: 1,
                    column: None,
                    message: "events: must be an array".into(),
                });
            }
        },
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(InputError {
                file: name.into(),
                line: 1,
                column: None,
                message: "expected an array of events, {\"events\": [...]} or one event object"
                    .into(),
            });
        }
    };
    // serde_json does not keep positions; find where each top-level event starts instead.
    let starts = element_lines(text);
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, event)| Record {
            line: starts.get(i).copied().unwrap_or(1),
            event,
        })
        .collect())
}

/// The line where each element of the outermost array (or of `"events"`) begins.
fn element_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth, mut in_str, mut escaped) = (1usize, 0i32, false, false);
    // Depth of the array whose elements are events: 1 for a top-level array, 2 inside {"events": [...]}.
    let target = if text.trim_start().starts_with('[') {
        1
    } else {
        2
    };
    let mut expecting = false;
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if expecting && !c.is_whitespace() && c != ']' {
            lines.push(line);
            expecting = false;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => {
                depth += 1;
                if c == '[' && depth == target {
                    expecting = true;
                }
            }
            ']' | '}' => depth -= 1,
            ',' if depth == target => expecting = true,
            _ => {}
        }
    }
    lines
}

/// serde_json's message without its " at line L column C" (the error names the place already).
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    s.rsplit_once(" at line ")
        .map(|(m, _)| m.to_owned())
        .unwrap_or(s)
}

fn ndjson_records(name: &str, text: &str) -> Result<Vec<Record>, InputError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(raw).map_err(|e| InputError {
            file: name.to_owned(),
            line: i + 1,
            column: Some(e.column()),
            message: format!("invalid JSON: {}", json_message(&e)),
        })?;
        out.push(Record { line: i + 1, event });
    }
    Ok(out)
}

const CSV_COLUMNS: &[&str] = &[
    "kind",
    "id",
    "tenant",
    "version",
    "targets",
    "subject_id",
    "userName",
    "displayName",
    "givenName",
    "familyName",
    "email",
    "active",
    "title",
    "department",
    "employeeNumber",
    "members",
];

fn csv_records(name: &str, text: &str) -> Result<Vec<Record>, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = csv_headers(name, &mut reader)?;
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| InputError {
            file: name.to_owned(),
            line: e.position().map(|p| p.line() as usize).unwrap_or(0),
            column: None,
            message: format!("invalid CSV: {e}"),
        })?;
        let line = row.position().map(|p| p.line() as usize).unwrap_or(0);
        let row = CsvRow {
            headers: &headers,
            row: &row,
            file: name,
            line,
        };
        out.push(Record {
            line,
            event: csv_event(&row)?,
        });
    }
    Ok(out)
}

/// The header row, checked: every column known, the required ones present.
fn csv_headers(
    name: &str,
    reader: &mut csv::Reader<&[u8]>,
) -> Result<csv::StringRecord, InputError> {
    let err = |column: Option<usize>, message: String| InputError {
        file: name.to_owned(),
        line: 1,
        column,
        message,
    };
    let headers = reader
        .headers()
        .map_err(|e| err(None, format!("invalid CSV header: {e}")))?
        .clone();
    for (i, h) in headers.iter().enumerate() {
        if !CSV_COLUMNS.contains(&h) {
            return Err(err(
                Some(i + 1),
                format!(
                    "unknown column {h:?}; expected some of: {}",
                    CSV_COLUMNS.join(", ")
                ),
            ));
        }
    }
    for required in ["version", "subject_id"] {
        if !headers.iter().any(|h| h == required) {
            return Err(err(None, format!("column {required:?} is required")));
        }
    }
    Ok(headers)
}

/// One CSV data row, read by column name.
struct CsvRow<'a> {
    /// The checked header row.
    headers: &'a csv::StringRecord,
    /// The row's cells.
    row: &'a csv::StringRecord,
    /// The file as given on the command line, for errors.
    file: &'a str,
    /// The row's 1-based line, for errors.
    line: usize,
}

impl CsvRow<'_> {
    /// The cell of column `col` and its 1-based column number ("" and 0 without that column).
    fn cell(&self, col: &str) -> (&str, usize) {
        self.headers
            .iter()
            .position(|h| h == col)
            .map(|i| (self.row.get(i).unwrap_or(""), i + 1))
            .unwrap_or(("", 0))
    }

    /// An error in this row at `column`.
    fn error(&self, column: usize, message: String) -> InputError {
        InputError {
            file: self.file.to_owned(),
            line: self.line,
            column: Some(column),
            message,
        }
    }
}

/// A `;`-separated list cell (`targets`, `members`), blanks dropped.
fn split_list(v: &str) -> Vec<String> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The ingest event of one row: kind, version, id, tenant, targets and the user or group.
fn csv_event(row: &CsvRow<'_>) -> Result<Value, InputError> {
    let (kind, _) = row.cell("kind");
    let kind = if kind.is_empty() {
        "user.upserted"
    } else {
        kind
    };
    let (version, vcol) = row.cell("version");
    let version: u64 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
        row.error(
            vcol,
            format!("column version: {version:?} is not a positive integer"),
        )
    })?;
    let (subject, scol) = row.cell("subject_id");
    if subject.is_empty() {
        return Err(row.error(scol, "column subject_id: required".into()));
    }
    let mut event = Map::new();
    event.insert("kind".into(), json!(kind));
    event.insert("version".into(), json!(version));
    for (col, key) in [("id", "id"), ("tenant", "tenant")] {
        let (v, _) = row.cell(col);
        if !v.is_empty() {
            event.insert(key.into(), json!(v));
        }
    }
    let (targets, _) = row.cell("targets");
    if !targets.is_empty() {
        event.insert("targets".into(), json!(split_list(targets)));
    }
    if kind.starts_with("group.") {
        event.insert("group".into(), csv_group(row, subject));
    } else {
        event.insert("user".into(), csv_user(row, subject)?);
    }
    Ok(Value::Object(event))
}

/// The `group` of a group row: id, displayName, members.
fn csv_group(row: &CsvRow<'_>, subject: &str) -> Value {
    let mut g = Map::new();
    g.insert("id".into(), json!(subject));
    let (display, _) = row.cell("displayName");
    if !display.is_empty() {
        g.insert("displayName".into(), json!(display));
    }
    let (members, _) = row.cell("members");
    g.insert("members".into(), json!(split_list(members)));
    Value::Object(g)
}

/// The `user` of a user row: the cells given, `name`, one work email and `active`.
fn csv_user(row: &CsvRow<'_>, subject: &str) -> Result<Value, InputError> {
    let mut u = Map::new();
    u.insert("id".into(), json!(subject));
    for col in [
        "userName",
        "displayName",
        "title",
        "department",
        "employeeNumber",
    ] {
        let (v, _) = row.cell(col);
        if !v.is_empty() {
            u.insert(col.into(), json!(v));
        }
    }
    let (given, _) = row.cell("givenName");
    let (family, _) = row.cell("familyName");
    if !given.is_empty() || !family.is_empty() {
        u.insert(
            "name".into(),
            json!({"givenName": given, "familyName": family}),
        );
    }
    let (email, _) = row.cell("email");
    if !email.is_empty() {
        u.insert(
            "emails".into(),
            json!([{"value": email, "type": "work", "primary": true}]),
        );
    }
    let (active, acol) = row.cell("active");
    match active.to_ascii_lowercase().as_str() {
        "" => {}
        "true" | "yes" | "1" => {
            u.insert("active".into(), json!(true));
        }
        "false" | "no" | "0" => {
            u.insert("active".into(), json!(false));
        }
        other => {
            return Err(row.error(
                acol,
                format!("column active: {other:?} is not true or false"),
            ));
        }
    }
    Ok(Value::Object(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        (dir, p)
    }

    #[test]
    fn json_elements_carry_their_lines() {
        let (_d, p) = write(
            "e.json",
            "[\n  {\"kind\": \"user.upserted\", \"x\": \"a,]\"},\n\n  {\"kind\": \"user.deleted\"}\n]\n",
        );
        let r = read(&p, Format::Json, &Defaults::default()).expect("read");
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 4]);
        let (_d, p) = write("e.json", "{\"events\": [\n{\"kind\": 1},\n{\"kind\": 2}]}");
        let r = read(&p, Format::Json, &Defaults::default()).expect("read");
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn csv_rows_become_events_and_errors_name_line_and_column() {
        let (_d, p) = write(
            "u.csv",
            "subject_id,userName,version,email,active\nu1,alice,3,a@example.com,false\n",
        );
        let r = read(
            &p,
            Format::Csv,
            &Defaults {
                tenant: Some("acme".into()),
                targets: vec![],
                priority: Some("bulk"),
            },
        )
        .expect("read");
        assert_eq!(r[0].event["priority"], "bulk");
        assert_eq!(r[0].line, 2);
        assert_eq!(r[0].event["user"]["userName"], "alice");
        assert_eq!(r[0].event["user"]["active"], false);
        assert_eq!(r[0].event["tenant"], "acme");
        assert_eq!(r[0].event["version"], 3);
        let (_d, p) = write("u.csv", "subject_id,version\nu1,3\nu2,zero\n");
        let e = read(&p, Format::Csv, &Defaults::default())
            .expect_err("bad version")
            .to_string();
        assert!(
            e.ends_with("u.csv:3:2: column version: \"zero\" is not a positive integer"),
            "{e}"
        );
        let (_d, p) = write("u.csv", "subject_id,version,colour\n");
        let e = read(&p, Format::Csv, &Defaults::default())
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("u.csv:1:3: unknown column \"colour\""), "{e}");
    }

    #[test]
    fn ndjson_errors_name_line_and_column() {
        let (_d, p) = write(
            "e.ndjson",
            "{\"kind\": \"user.upserted\"}\n\n{\"kind\": }\n",
        );
        let e = read(&p, Format::Ndjson, &Defaults::default())
            .expect_err("bad")
            .to_string();
        assert!(e.contains("e.ndjson:3:10: invalid JSON"), "{e}");
    }
}
