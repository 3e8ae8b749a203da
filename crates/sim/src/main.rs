//! The `scimrelay-sim` binary: parses flags, loads tenants, binds, prints `listening on
//! http://ADDR` (tests read it to learn an ephemeral port) and serves until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use scimrelay_sim::{SimConfig, TenantConfig};

/// Simulated SCIM 2.0 service providers for scimrelay's demo, tests and benchmarks.
///
/// Tenant URLs by mode:
///   scim        http://ADDR/{tenant}/scim/v2/                (plain RFC 7643/7644)
///   github      http://ADDR/scim/v2/enterprises/{tenant}/    (GitHub EMU; needs User-Agent)
///   aws         http://ADDR/{tenant}/scim/v2/                (AWS IAM Identity Center)
///   salesforce  http://ADDR/{tenant}/services/scim/v2/       (OAuth: .../services/oauth2/token)
/// The admin API at http://ADDR/_admin/tenants/{tenant}/{users,groups,stats,reset,faults,
/// deleted,accounts} needs no credentials.
///
/// --tenant shorthand: ID:MODE[:KEY=VALUE]...[:AUTH]
///   AUTH     none | bearer=TOKEN | basic=USER:PASS (scim only); takes the rest of the string
///   scim     patch=false  put=false  filter=false  etag=false  discovery=false  max_results=N
///            (what the server supports; all true and 1000 by default. Off: PATCH is 501, PUT 405,
///            a filter is 400 invalidFilter, no ETag/meta.version and If-Match ignored,
///            ServiceProviderConfig/Schemas/ResourceTypes are 404)
///   github   shortcode=S  throttle=403|429  creates_per_hour=N  requests_per_hour=N
///   aws      short_pages=RATE (0..1)
///   salesforce  client=ID  secret=S  ttl=SECS  limit=N  groups=A,B
/// Examples:
///   --tenant acme:scim:bearer=s3cret
///   --tenant legacy:scim:patch=false:etag=false:basic=u:p
///   --tenant acme:github:shortcode=acme:throttle=403:bearer=ghp_x
///   --tenant d-123:aws:bearer=tok
///   --tenant org1:salesforce:client=cid:secret=cs:groups=Sales,Support
/// Everything else (JWT public key, profiles, limits, TTLs, faults) goes in --config; see the
/// crate README for the file format.
#[derive(Debug, Parser)]
#[command(name = "scimrelay-sim", version, verbatim_doc_comment)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9090", env = "SCIMRELAY_SIM_LISTEN")]
    listen: SocketAddr,

    /// YAML or JSON file with `tenants: [{id, mode, auth, faults, scim|github|aws|salesforce}]`.
    #[arg(long, env = "SCIMRELAY_SIM_CONFIG")]
    config: Option<PathBuf>,

    /// A tenant as ID:MODE[:KEY=VALUE]...[:AUTH], e.g. acme:github:bearer=s3cret.
    /// Repeatable; added to the tenants of --config.
    #[arg(long = "tenant", value_name = "ID:MODE[:OPTS][:AUTH]", value_parser = parse_tenant)]
    tenants: Vec<TenantConfig>,
}

fn parse_tenant(s: &str) -> Result<TenantConfig, String> {
    TenantConfig::parse_shorthand(s).map_err(|e| e.to_string())
}

fn load(args: &Args) -> Result<SimConfig, String> {
    let mut config = match &args.config {
        Some(path) => SimConfig::from_path(path).map_err(|e| e.to_string())?,
        None => SimConfig::default(),
    };
    config.tenants.extend(args.tenants.iter().cloned());
    if config.tenants.is_empty() {
        return Err(
            "no tenants: pass --tenant ID:MODE (scim, github, aws, salesforce) or --config FILE"
                .into(),
        );
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Completes on SIGINT (Ctrl-C in a terminal) or SIGTERM (what process managers and tests send).
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
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scimrelay-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("scimrelay-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    }
    match scimrelay_sim::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scimrelay-sim: {e:#}");
            ExitCode::from(1)
        }
    }
}
