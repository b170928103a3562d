//! The `hookd` command: parses the CLI, sets up logging, calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use hookd::client::{query, Client};
use hookd::config::{load_pipelines, DaemonConfig};

#[derive(Parser)]
#[command(
    name = "hookd",
    version,
    about = "GitOps / infrastructure-automation trigger daemon"
)]
struct Cli {
    /// Daemon config file (default ./hookd.yaml, else built-in defaults).
    #[arg(long, short = 'c', global = true, env = "HOOKD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct Remote {
    /// Base URL of the daemon (default: from the config's `listen`).
    #[arg(long)]
    url: Option<String>,
    /// File holding the admin token (default: the config's `admin_token_file`).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve,
    /// Check the config and every pipeline; print all errors.
    Validate,
    /// List runs of a running daemon, newest first.
    Runs {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this status (queued, running, succeeded, failed, timed_out, ...).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a run's log; with -f, follow it live until the run ends
    /// (exit code 0 if the run succeeded, else 1).
    Logs {
        /// Run id.
        run: i64,
        /// Follow: print lines as they come and exit when the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the pipelines a running daemon serves, with their last run.
    Pipelines {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a pipeline that has a `manual` trigger.
    Trigger {
        /// Pipeline name.
        pipeline: String,
        /// Ref to check out (default: the pipeline's repo.ref, else the remote's HEAD).
        #[arg(long = "ref", conflicts_with = "commit")]
        git_ref: Option<String>,
        /// Exact commit to check out.
        #[arg(long)]
        commit: Option<String>,
        /// Wait for the run to end; exit 0 if it succeeded, 1 otherwise.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Match a stored delivery again against today's pipelines and run what matches.
    Replay {
        /// Delivery id.
        delivery: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a queued or running run.
    Cancel {
        /// Run id.
        run: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Offline: which pipelines the payload in FILE would start, and why not the others.
    ///
    /// Authentication is checked only when headers are given (exit 1 if a
    /// given credential fails); without an event-type header the event type
    /// is inferred from the payload's shape.
    Explain {
        /// Source name from the config.
        #[arg(long)]
        source: String,
        /// A request header, 'Name: value' (repeatable), as the sender would send it.
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The payload file: the exact request body (- reads stdin).
        file: PathBuf,
    },
    /// Print the headers a sender would attach to FILE (for testing with curl -H @file).
    Sign {
        /// Source name from the config.
        #[arg(long)]
        source: String,
        /// Event type to announce.
        #[arg(long, default_value = "push")]
        event: String,
        /// Delivery id (default: a new random one).
        #[arg(long)]
        delivery: Option<String>,
        /// The payload file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<DaemonConfig> {
    DaemonConfig::load(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Serve => {
            let config = load_config(config_path)?;
            let pipelines =
                load_pipelines(&config).map_err(|e| anyhow::anyhow!("invalid pipelines:\n{e}"))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("hookd")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(hookd::daemon::serve(config, pipelines))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate => validate(config_path),
        Command::Runs {
            pipeline,
            status,
            limit,
            json,
            remote,
        } => {
            let config = load_config(config_path)?;
            let client = Client::new(&config, remote.url.as_deref(), remote.token_file.as_deref())?;
            let limit = limit.to_string();
            let path = format!(
                "/api/v1/runs{}",
                query(&[
                    ("pipeline", pipeline.as_deref()),
                    ("status", status.as_deref()),
                    ("limit", Some(&limit)),
                ])
            );
            let answer = client.get_json(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_runs(&answer);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            run,
            follow: true,
            remote,
        } => {
            let config = load_config(config_path)?;
            let client = Client::new(&config, remote.url.as_deref(), remote.token_file.as_deref())?;
            let end = client.follow_log(run, |line| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                // A closed stdout (`| head`) is not an error worth a message.
                let _ = writeln!(out, "{line}").and_then(|()| out.flush());
            })?;
            match &end.reason {
                Some(r) => eprintln!("hookd: run {run} {}: {r}", end.status),
                None => eprintln!("hookd: run {run} {}", end.status),
            }
            Ok(if end.status == "succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Pipelines { json, remote } => {
            let config = load_config(config_path)?;
            let client = Client::new(&config, remote.url.as_deref(), remote.token_file.as_deref())?;
            let answer = client.get_json("/api/v1/pipelines")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_pipelines(&answer);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            run,
            follow: false,
            remote,
        } => {
            let config = load_config(config_path)?;
            let client = Client::new(&config, remote.url.as_deref(), remote.token_file.as_deref())?;
            let body = client.get(&format!("/api/v1/runs/{run}/log"))?;
            use std::io::Write;
            std::io::stdout()
                .write_all(&body)
                .context("cannot write to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Trigger {
            pipeline,
            git_ref,
            commit,
            wait,
            remote,
        } => {
            let config = load_config(config_path)?;
            let client = Client::new(&config, remote.url.as_deref(), remote.token_file.as_deref())?;
            let mut body = serde_json::Map::new();
            if let Some(r) = git_ref {
                body.insert("ref".into(), r.into());
            }
            if let Some(c) = commit {
                body.insert("commit".into(), c.into());
            }
            let path = format!("/api/v1/pipelines/{}/trigger", encode_segment(&pipeline));
            let answer = client.post_json(&path, &serde_json::Value::Object(body))?;
            let run = answer["runs"][0]["id"]
                .as_i64()
                .with_context(|| format!("unexpected answer: {answer}"))?;
            println!("run {run} queued");
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            let status = wait_for_run(&client, run)?;
            println!("run {run} {status}");
            Ok(if status == "succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Replay { delivery, remote } => {
            let config = load_config(config_path)?;
            let client = Client::new(&config, remote.url.as_deref(), remote.token_file.as_deref())?;
            let answer = client.post_json(
                &format!("/api/v1/deliveries/{delivery}/replay"),
                &serde_json::Value::Null,
            )?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { run, remote } => {
            let config = load_config(config_path)?;
            let client = Client::new(&config, remote.url.as_deref(), remote.token_file.as_deref())?;
            let answer = client.post_json(
                &format!("/api/v1/runs/{run}/cancel"),
                &serde_json::Value::Null,
            )?;
            println!(
                "run {run}: {}",
                answer["status"].as_str().unwrap_or("cancel requested")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            source,
            headers,
            json,
            file,
        } => explain(config_path, &source, &headers, json, &file),
        Command::Sign {
            source,
            event,
            delivery,
            file,
        } => {
            let config = load_config(config_path)?;
            let source_config = config.sources.get(&source).with_context(|| {
                let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
                format!(
                    "unknown source {source:?} (configured: {})",
                    known.join(", ")
                )
            })?;
            if source_config.credentials.is_empty() {
                eprintln!("hookd: note: source {source:?} has no credentials; nothing to sign (it accepts loopback senders only)");
            }
            let body = std::fs::read(&file)
                .with_context(|| format!("cannot read payload {}", file.display()))?;
            let delivery = delivery.unwrap_or_else(random_id);
            for (k, v) in hookd::source::build(source_config).sign(&body, &event, &delivery) {
                println!("{k}: {v}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = match DaemonConfig::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{} error(s)", e.0.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    match load_pipelines(&config) {
        Ok(pipelines) => {
            let source = config
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into());
            println!(
                "ok: config {source}, {} source(s), {} pipeline(s) in {}",
                config.sources.len(),
                pipelines.len(),
                config.pipelines_dir.display()
            );
            for p in &pipelines {
                println!(
                    "  {} ({} step(s)) from {}",
                    p.name,
                    p.steps.len(),
                    p.file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{} error(s)", e.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn explain(
    config_path: Option<&Path>,
    source: &str,
    headers: &[String],
    json: bool,
    file: &Path,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    hookd::explain::source_config(&config, source)?;
    let headers = headers
        .iter()
        .map(|h| hookd::explain::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let body = if file == Path::new("-") {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
            .context("cannot read the payload from stdin")?;
        body
    } else {
        std::fs::read(file).with_context(|| format!("cannot read payload {}", file.display()))?
    };
    let pipelines =
        load_pipelines(&config).map_err(|e| anyhow::anyhow!("invalid pipelines:\n{e}"))?;
    let report = hookd::explain::explain(&config, &pipelines, source, &headers, &body)?;
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        hookd::explain::render_text(&report)
    };
    use std::io::Write;
    match std::io::stdout().write_all(text.as_bytes()) {
        // `hookd explain … | head` is fine.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("cannot write to stdout")
        }
        _ => {}
    }
    Ok(if report.authentication.is_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Polls a run until it is terminal; returns its status.
fn wait_for_run(client: &Client, run: i64) -> anyhow::Result<String> {
    loop {
        let answer = client.get_json(&format!("/api/v1/runs/{run}"))?;
        let status = answer["status"].as_str().unwrap_or("").to_string();
        if !matches!(status.as_str(), "queued" | "running" | "") {
            return Ok(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Percent-encodes one URL path segment.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_runs(answer: &serde_json::Value) {
    let runs = answer
        .get("runs")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    println!(
        "{:>6}  {:<20} {:<12} {:<8} {:<24} {:<12} CREATED",
        "ID", "PIPELINE", "STATUS", "TRIGGER", "REF", "COMMIT"
    );
    for r in runs {
        let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
        let commit: String = s("commit").chars().take(12).collect();
        println!(
            "{:>6}  {:<20} {:<12} {:<8} {:<24} {:<12} {}",
            r.get("id").and_then(|v| v.as_i64()).unwrap_or(0),
            s("pipeline"),
            s("status"),
            s("trigger"),
            s("ref"),
            commit,
            s("created_at")
        );
    }
}

fn print_pipelines(answer: &serde_json::Value) {
    let pipelines = answer
        .get("pipelines")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<24} {:<36} {:<22} {:<24} TRIGGERS",
        "NAME", "LAST RUN", "LAST RUN AT", "LAST CHANGE"
    );
    for p in pipelines {
        let s = |v: &serde_json::Value, k: &str| {
            v.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string()
        };
        let last = p.get("last_run").filter(|v| !v.is_null());
        let (last_run, last_at) = match last {
            Some(l) => (
                format!(
                    "#{} {}",
                    l.get("id").and_then(|v| v.as_i64()).unwrap_or(0),
                    s(l, "status")
                ),
                s(l, "at"),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        let triggers: Vec<&str> = p
            .get("triggers")
            .and_then(|t| t.as_array())
            .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:<24} {:<36} {:<22} {:<24} {}",
            s(&p, "name"),
            last_run,
            last_at,
            s(&p, "last_change"),
            triggers.join("; ")
        );
    }
}

fn random_id() -> String {
    // A v4-shaped id from the OS's randomness, as GitHub's delivery GUIDs look.
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
