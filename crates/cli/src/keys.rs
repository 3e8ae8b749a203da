//! `keys new`: makes a random API key and prints it once, with its entry for the keys file
//! (`SCIMRELAY_API_KEYS_FILE`). The keys file keeps only the key's SHA-256, so the key printed
//! here cannot be recovered later: the operator hands it to the client now. The entry is
//! checked with the same parser the services use before anything is printed.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::json;

use scimrelay_core::auth::{KeySet, hash_key, new_key};

/// A scope, as `--scope` takes it.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyScope {
    /// Post events to ingest.
    Send,
    /// Read the status API.
    Read,
    /// Operator actions of the status API (dlq replay, held release/drop); implies read.
    Admin,
    /// What connectors need at the status API (the state of record, the guard); implies read.
    Connector,
}

impl KeyScope {
    fn as_str(self) -> &'static str {
        match self {
            KeyScope::Send => "send",
            KeyScope::Read => "read",
            KeyScope::Admin => "admin",
            KeyScope::Connector => "connector",
        }
    }
}

/// `scimrelayctl keys new`.
#[derive(Args)]
pub struct NewArgs {
    /// The key's name in the keys file, logs, metrics and errors (not secret; 1–64 characters).
    #[arg(long)]
    id: String,
    /// A tenant the key may act for (repeatable), or '*' for every tenant.
    #[arg(long = "tenant", required = true, value_name = "TENANT")]
    tenants: Vec<String>,
    /// What the key may do (repeatable).
    #[arg(long = "scope", required = true, value_enum, value_name = "SCOPE")]
    scopes: Vec<KeyScope>,
    /// Requests per second allowed for the key (at least 1; default: the services' 100).
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
}

/// A YAML scalar for any string: JSON's double-quoted form is valid YAML.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The entry of the keys file for a key with `sha256`, indented to sit under `keys:`.
fn entry(args: &NewArgs, sha256: &str) -> String {
    let tenants: Vec<String> = if args.tenants.iter().any(|t| t == "*") {
        vec![quoted("*")]
    } else {
        args.tenants.iter().map(|t| quoted(t)).collect()
    };
    let mut scopes: Vec<&str> = Vec::new();
    for s in &args.scopes {
        if !scopes.contains(&s.as_str()) {
            scopes.push(s.as_str());
        }
    }
    let mut out = format!(
        "  - id: {}\n    sha256: {sha256}\n    tenants: [{}]\n    scopes: [{}]\n",
        quoted(&args.id),
        tenants.join(", "),
        scopes.join(", ")
    );
    if let Some(rate) = args.rate {
        out.push_str(&format!("    rate_per_sec: {rate}\n"));
    }
    out
}

/// Makes the key and prints it with its entry (or one JSON document with `--json`).
pub fn new(args: &NewArgs, json: bool) -> anyhow::Result<ExitCode> {
    let id = args.id.trim();
    anyhow::ensure!(
        !id.is_empty() && id.chars().count() <= 64 && id == args.id,
        "--id {:?}: 1–64 characters, without surrounding spaces",
        args.id
    );
    anyhow::ensure!(
        args.tenants.iter().all(|t| !t.trim().is_empty()),
        "--tenant: must not be empty (use '*' for every tenant)"
    );
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate >= 1.0,
            "--rate {rate}: must be a number of requests per second, at least 1"
        );
    }
    let key = new_key();
    let sha256 = hash_key(&key);
    let entry = entry(args, &sha256);
    // The services' own parser: what is printed is what they will accept.
    KeySet::parse(&format!("keys:\n{entry}"), Path::new("<new entry>"))
        .map_err(|e| anyhow::anyhow!("the new entry does not parse: {e}"))?;
    eprintln!("store it now; only its hash is kept");
    if json {
        println!(
            "{}",
            json!({"id": args.id, "key": key, "sha256": sha256, "entry": entry})
        );
    } else {
        println!("{key}");
        println!();
        println!("# Add under `keys:` in the keys file (SCIMRELAY_API_KEYS_FILE):");
        print!("{entry}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_are_quoted_into_valid_yaml() {
        let args = NewArgs {
            id: "feed: \"hr\" #1".into(),
            tenants: vec!["acme".into(), "yes".into(), "123".into()],
            scopes: vec![KeyScope::Admin, KeyScope::Send, KeyScope::Admin],
            rate: Some(2.5),
        };
        let e = entry(&args, &hash_key("k"));
        let set = KeySet::parse(&format!("keys:\n{e}"), Path::new("t")).expect("valid");
        let k = &set.keys[0];
        assert_eq!(k.id, "feed: \"hr\" #1");
        assert_eq!(
            k.tenants.as_deref(),
            Some(&["acme".to_owned(), "yes".to_owned(), "123".to_owned()][..])
        );
        assert_eq!(k.scopes.len(), 2);
        assert_eq!(k.rate_per_sec, 2.5);
    }
}
