//! `orca log read|export|import` and `orca replay`: the event log over the bus, moved between
//! machines, and replayed into views.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use orca::client::OrcaClient;
use orca_log::{Append, Log, NewEvent};
use orca_proto::{Message, v1};

use crate::Global;

/// The first bytes of a file `orca log export` writes.
const MAGIC: &[u8; 8] = b"ORCALOG1";

/// The event log: read it over NATS, or move it to another data directory.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the log's events from a position, in log order, through `orca.query.log.read` of a
    /// running service: one line each (`--json`: each event as proto3 JSON).
    Read {
        /// First position to read.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only this stream's events, e.g. `process-<id>` or `subscription-<id>`.
        #[arg(long)]
        stream: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Keep reading as the log grows (Ctrl-C to stop).
        #[arg(long)]
        follow: bool,
    },
    /// Write a stopped service's log to a file: every event as stored, with the replies of the
    /// commands applied (so that a command sent again after an import still gets its reply).
    Export {
        /// The service's data directory.
        #[arg(long, env = "ORCA_DATA_DIR", default_value = "./orca-data")]
        data_dir: PathBuf,
        /// The file to write.
        #[arg(long)]
        to: PathBuf,
    },
    /// Read a file `orca log export` wrote into a new data directory, then replay it into that
    /// directory's views: `orca serve --data-dir` then serves what the exported one did.
    Import {
        /// The file to read.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Rebuild a stopped service's views from its whole log, showing progress and events/s.
#[derive(clap::Args)]
pub struct Replay {
    /// The service's data directory; its views are rebuilt from position 1.
    #[arg(long, env = "ORCA_DATA_DIR", default_value = "./orca-data")]
    pub data_dir: PathBuf,
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Read {
            from,
            stream,
            count,
            follow,
        } => read(g, from, stream.unwrap_or_default(), count, follow).await,
        Command::Export { data_dir, to } => {
            let json = g.json;
            tokio::task::spawn_blocking(move || export(&data_dir, &to, json)).await?
        }
        Command::Import { from, data_dir } => {
            let json = g.json;
            tokio::task::spawn_blocking(move || import(&from, &data_dir, json)).await?
        }
    }
}

async fn read(
    g: &Global,
    from: u64,
    stream: String,
    count: Option<u64>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let client = OrcaClient::connect_to(&g.nats()?, &g.prefix).await?;
    let mut next = from.max(1);
    let mut printed = 0u64;
    loop {
        let page = client
            .read_log(&v1::ReadLog {
                from: next,
                stream: stream.clone(),
                limit: 0,
            })
            .await?;
        if let Some(e) = page.error {
            return Ok(super::rejected(&e));
        }
        for e in &page.events {
            if count.is_some_and(|c| printed >= c) {
                return Ok(ExitCode::SUCCESS);
            }
            if g.json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!("{}", line(e));
            }
            printed += 1;
        }
        next = page.next;
        if count.is_some_and(|c| printed >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        if page.events.is_empty() {
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One line for an event of the log.
fn line(e: &v1::Event) -> String {
    let at = e
        .occurred_at
        .as_ref()
        .map(orca::render::clock)
        .unwrap_or_default();
    let name = e.body.as_ref().map_or("unknown", orca_domain::event_name);
    format!(
        "{:>8}  {at}  {} v{}  {name}  by {}",
        e.position, e.stream, e.version, e.actor
    )
}

fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} events, {{per_sec}}, {{eta}} left"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn export(data_dir: &Path, to: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let log = orca::service::open_log(data_dir, 64 * 1024 * 1024)?;
    let head = log.head();
    // Commands by the position of their last event (the head then, for one that recorded none).
    let mut commands: BTreeMap<u64, Vec<v1::CommandRecord>> = BTreeMap::new();
    for (command_id, position, reply) in log.commands()? {
        commands
            .entry(position)
            .or_default()
            .push(v1::CommandRecord { command_id, reply });
    }
    let file = std::fs::File::create_new(to)
        .with_context(|| format!("creating {} (it must not exist)", to.display()))?;
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC)?;
    let started = Instant::now();
    let bar = bar(head, "exporting", json);
    let mut write = |entry: v1::LogEntry| -> anyhow::Result<()> {
        out.write_all(&entry.encode_length_delimited_to_vec())?;
        Ok(())
    };
    if let Some(before) = commands.remove(&0) {
        write(v1::LogEntry {
            commands: before,
            ..Default::default()
        })?;
    }
    let mut next = 1;
    while next <= head {
        let chunk = log.read_from(next, 1024)?;
        let Some(last) = chunk.last() else {
            bail!("the log ends at {} before its head {head}", next - 1);
        };
        next = last.position + 1;
        for r in chunk {
            write(v1::LogEntry {
                commands: commands.remove(&r.position).unwrap_or_default(),
                position: r.position,
                stream: r.stream,
                version: r.version,
                payload: r.payload,
            })?;
        }
        bar.set_position(next - 1);
    }
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    report(json, "exported", head, started, &to.display().to_string());
    Ok(ExitCode::SUCCESS)
}

fn report(json: bool, what: &str, events: u64, started: Instant, place: &str) {
    let secs = started.elapsed().as_secs_f64();
    let rate = events as f64 / secs.max(1e-9);
    if json {
        println!(
            "{}",
            serde_json::json!({"events": events, "seconds": secs, "events_per_sec": rate})
        );
    } else {
        println!("{what} {events} events ({place}) in {secs:.2} s, {rate:.0} events/s");
    }
}

/// Reads the next entry of an export, or `None` at its end.
fn next_entry(input: &mut impl Read) -> anyhow::Result<Option<v1::LogEntry>> {
    let mut len = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            if shift == 0 {
                return Ok(None);
            }
            bail!("the file ends inside an entry's length");
        }
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    if len > 64 * 1024 * 1024 {
        bail!("an entry of {len} bytes: not a file `orca log export` wrote");
    }
    let mut buf = vec![0u8; usize::try_from(len)?];
    input
        .read_exact(&mut buf)
        .context("the file ends inside an entry")?;
    Ok(Some(v1::LogEntry::decode(buf.as_slice())?))
}

fn import(from: &Path, data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    if data_dir.exists()
        && data_dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} is not empty: import into a new data directory",
            data_dir.display()
        );
    }
    let mut input = BufReader::new(
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?,
    );
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .ok()
        .filter(|()| &magic == MAGIC)
        .with_context(|| format!("{} is not a file `orca log export` wrote", from.display()))?;
    std::fs::create_dir_all(data_dir)?;
    let log = orca::service::open_log(data_dir, 64 * 1024 * 1024)?;
    let started = Instant::now();
    // The file says nothing of how many events it holds: progress goes by its bytes.
    let size = std::fs::metadata(from).map_or(0, |m| m.len());
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(size).with_style(
            ProgressStyle::with_template(
                "importing {bar:40} {bytes}/{total_bytes}, {bytes_per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let mut appends: Vec<Append> = Vec::new();
    let mut pending: Vec<NewEvent> = Vec::new();
    let mut expected_position = 1u64;
    let mut imported = 0u64;
    while let Some(entry) = next_entry(&mut input)? {
        if entry.position != 0 {
            if entry.position != expected_position {
                bail!(
                    "entry {} comes where {expected_position} was due: the file is not a whole log",
                    entry.position
                );
            }
            expected_position += 1;
            pending.push(NewEvent {
                stream: entry.stream,
                payload: entry.payload,
            });
        }
        // A command closes the append its last event belongs to; others that recorded no event
        // follow as appends of their own.
        for (i, c) in entry.commands.into_iter().enumerate() {
            appends.push(Append {
                expected: Vec::new(),
                events: if i == 0 {
                    std::mem::take(&mut pending)
                } else {
                    Vec::new()
                },
                command_id: Some(c.command_id),
                reply: c.reply,
            });
        }
        if appends.len() >= 512 || pending.len() >= 4096 {
            imported += write(&log, &mut appends, &mut pending)?;
            bar.set_position(input.stream_position().unwrap_or_default());
        }
    }
    imported += write(&log, &mut appends, &mut pending)?;
    bar.finish_and_clear();
    if imported != log.head() {
        bail!(
            "imported {imported} events but the log's head is {}",
            log.head()
        );
    }
    report(
        json,
        "imported",
        imported,
        started,
        &data_dir.display().to_string(),
    );
    let views = orca_views::Views::open(&data_dir.join("views"), 64 * 1024 * 1024)?;
    replay_into(&log, &views, json)?;
    Ok(ExitCode::SUCCESS)
}

/// Appends what is gathered (events not yet closed by a command go last, on their own).
fn write(log: &Log, appends: &mut Vec<Append>, pending: &mut Vec<NewEvent>) -> anyhow::Result<u64> {
    if !pending.is_empty() {
        appends.push(Append {
            events: std::mem::take(pending),
            ..Append::default()
        });
    }
    let events = appends.iter().map(|a| a.events.len() as u64).sum();
    for result in log.append_batch(appends)? {
        result.map_err(|e| anyhow::anyhow!("appending: {e}"))?;
    }
    appends.clear();
    Ok(events)
}

/// Replays `log` into `views` from where they stand, with a progress bar and events/s.
fn replay_into(log: &Log, views: &orca_views::Views, json: bool) -> anyhow::Result<()> {
    let head = log.head();
    let from = views.checkpoint();
    let started = Instant::now();
    let bar = bar(head, "replaying", json);
    bar.set_position(from);
    let at = orca_views::rebuild_with(log, views, &mut |p| bar.set_position(p))?;
    views.flush()?;
    bar.finish_and_clear();
    report(
        json,
        "replayed",
        at - from,
        started,
        &format!("views up to position {at}"),
    );
    Ok(())
}

/// `orca replay`: the views rebuilt from the whole log, in place.
pub async fn replay(g: &Global, a: Replay) -> anyhow::Result<ExitCode> {
    let json = g.json;
    tokio::task::spawn_blocking(move || -> anyhow::Result<ExitCode> {
        let log = orca::service::open_log(&a.data_dir, 64 * 1024 * 1024)?;
        let dir = a.data_dir.join("views");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the old views in {}", dir.display()))?;
        }
        let views = orca_views::Views::open(&dir, 64 * 1024 * 1024)?;
        replay_into(&log, &views, json)?;
        Ok(ExitCode::SUCCESS)
    })
    .await?
}
