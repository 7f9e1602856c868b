//! The commands that bring data in: `load` (a graph dump, bulk, with its checkpoint),
//! `import` (JSON lines through the service's checks) and `torture` (concurrent writers
//! for the crash tests).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use super::*;

/// `feedgraph load`: a graph dump into one org, in bulk, then the graph checkpoint.
pub(super) fn load(config: &Config, file: &PathBuf, org: &str) -> Result<(), CliError> {
    let path = file.display().to_string();
    let started = std::time::Instant::now();
    let input = std::fs::File::open(file).map_err(|source| CliError::Io {
        context: format!("opening {path}"),
        source,
    })?;
    let size = input.metadata().map_or(0, |m| m.len());
    let service = Service::open(config)?;
    let bar_style = |template: &str| {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ")
    };
    let check_bar = indicatif::ProgressBar::new(size).with_style(bar_style(
        "{spinner} checking [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ));
    let write_bar = indicatif::ProgressBar::hidden();
    let mut writing = false;
    // A reader thread parses lines in batches while this thread checks them and writes
    // history entries: parsing and writing overlap.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Option<DumpBatch>>(16);
    let result = std::thread::scope(|scope| {
        let reader_bar = check_bar.clone();
        let reader = scope.spawn(move || read_dump(input, file, &tx, &reader_bar));
        // The reader ends with `None`; a channel that closes without it means the reader
        // died, which must fail the load rather than look like the end of the file.
        let mut batch = Vec::new().into_iter();
        let mut ended = false;
        let records = std::iter::from_fn(move || {
            loop {
                if let Some(item) = batch.next() {
                    return Some(item);
                }
                if ended {
                    return None;
                }
                match rx.recv() {
                    Ok(Some(next)) => batch = next.into_iter(),
                    Ok(None) => ended = true,
                    Err(_) => {
                        ended = true;
                        return Some(Err(LoadError::new(
                            0,
                            "the dump reader stopped before the end of the file",
                        )));
                    }
                }
            }
        });
        let loaded = service.load_dump(org, records, |written, total| {
            if !writing {
                writing = true;
                check_bar.finish_and_clear();
                tracing::info!(secs = started.elapsed().as_secs_f64(), "dump checked");
                write_bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                write_bar.set_style(bar_style(
                    "{spinner} writing [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
                ));
                write_bar.set_length(total);
            }
            write_bar.set_position(written);
        });
        // Joined here, not by the scope (which would re-raise a panic of the reader): a
        // reader that died is an error of this load. The loader has dropped the channel's
        // receiver by now, so a reader still sending stops.
        match (reader.join(), loaded) {
            (Err(panic), Err(e)) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "it panicked".to_owned());
                // The records ended without the reader's end mark, so the load failed and
                // took back what it wrote; say why the reader stopped.
                Err(LoadError {
                    message: format!("{}: {why}", e.message),
                    ..e
                })
            }
            // A reader that died after its end mark has read the whole file.
            (_, loaded) => loaded,
        }
    });
    check_bar.finish_and_clear();
    write_bar.finish_and_clear();
    let summary = result.map_err(|e| {
        CliError::Usage(if e.partial {
            format!(
                "{path}: {e}; the load may be partly on disk: run `feedgraph check` on this data directory"
            )
        } else {
            format!("{path}: {e}; nothing was loaded")
        })
    })?;
    // The load is durable: save the graph so the next start need not scan.
    service.checkpoint_graph();
    eprintln!(
        "loaded {} adapters, {} DERIVED_FROM, {} feedback, {} FEEDBACK_FOR into '{org}' in {:.1} s",
        summary.adapters,
        summary.derived_from,
        summary.feedback,
        summary.feedback_for,
        started.elapsed().as_secs_f64()
    );
    print_json(&summary)
}

/// Lines per batch handed from the dump reader to the loader.
const LOAD_BATCH: usize = 1024;

/// Parsed lines of a dump, in file order; a bad line ends its batch.
type DumpBatch = Vec<Result<(usize, DumpRecord), LoadError>>;

/// Reads and parses a dump file line by line, sending batches of records to the loader;
/// a bad line or a read error is sent as the last item. Stops early when the loader has
/// stopped listening.
#[cfg_attr(not(feature = "testing"), allow(unused_variables))]
fn read_dump(
    input: std::fs::File,
    path: &std::path::Path,
    tx: &std::sync::mpsc::SyncSender<Option<DumpBatch>>,
    bar: &indicatif::ProgressBar,
) {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
    let mut line = String::new();
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    let mut line_no = 0usize;
    loop {
        line.clear();
        line_no += 1;
        let read = match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::InvalidData {
                    "not UTF-8 text".to_owned()
                } else {
                    format!("reading the file: {e}")
                };
                batch.push(Err(LoadError::new(line_no, why)));
                break;
            }
        };
        bar.inc(read as u64);
        #[cfg(feature = "testing")]
        crate::store::testing::dump_reader_line(path, line_no);
        if line.trim().is_empty() {
            continue;
        }
        let parsed = crate::service::dump::parse_line(line_no, line.trim_end());
        let failed = parsed.is_err();
        batch.push(parsed);
        if failed {
            break;
        }
        if batch.len() == LOAD_BATCH
            && tx
                .send(Some(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(LOAD_BATCH),
                )))
                .is_err()
        {
            return;
        }
    }
    // The loader may have stopped already; then nobody needs the rest.
    if tx.send(Some(batch)).is_ok() {
        let _ = tx.send(None);
    }
}

/// `feedgraph import`: JSON lines checked and written through the service.
pub(super) fn import(
    config: &Config,
    file: &PathBuf,
    default_org: Option<&str>,
    actor: &str,
) -> Result<(), CliError> {
    let path = file.display().to_string();
    let reader = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .map_err(|source| CliError::Io {
            context: format!("opening {path}"),
            source,
        })?;
    // Parse everything first: a file with a bad line writes nothing.
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| CliError::Io {
            context: format!("reading {path} line {}", i + 1),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match ImportRecord::parse(&line) {
            Ok(r) => records.push((i + 1, r)),
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        let count = bad.len();
        bad.truncate(20);
        return Err(CliError::BadImport {
            path,
            count,
            details: bad.join("\n"),
        });
    }
    let service = Service::open(config)?;
    let problems = service.check_import(default_org, &records);
    if !problems.is_empty() {
        let count = problems.len();
        let details: Vec<String> = problems
            .into_iter()
            .take(20)
            .map(|(line, e)| format!("line {line}: {e}"))
            .collect();
        return Err(CliError::BadImport {
            path,
            count,
            details: details.join("\n"),
        });
    }
    let bar = indicatif::ProgressBar::new(records.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let result = service.import(default_org, actor, records, 1000, |n| bar.set_position(n));
    bar.finish_and_clear();
    match result {
        Ok(summary) => {
            eprintln!(
                "imported {} feedback item(s), {} adapter(s) and {} link(s) from {path}; \
                 skipped {} existing item(s)",
                summary.feedback, summary.adapters, summary.links, summary.skipped
            );
            print_json(&summary)
        }
        Err((line, source)) => Err(CliError::ImportFailed { path, line, source }),
    }
}

/// `feedgraph torture`: writer threads submitting in a loop (`count` each, or until killed),
/// each id printed once durable (the crash tests read them).
pub(super) fn torture(
    config: &Config,
    org: &str,
    threads: usize,
    count: u64,
) -> Result<(), CliError> {
    let service = Service::open(config)?;
    let actor = Actor::new(org, "torture");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|t| {
                let service = &service;
                let actor = &actor;
                s.spawn(move || -> Result<(), CliError> {
                    let mut n = 0u64;
                    while count == 0 || n < count {
                        n += 1;
                        let item = NewFeedback {
                            feedback_type: Some(
                                if n.is_multiple_of(3) {
                                    "negative"
                                } else {
                                    "positive"
                                }
                                .into(),
                            ),
                            question: Some(format!("Question {n} from writer {t}?")),
                            answer: Some(format!("Answer number {n}, written by thread {t}.")),
                            comment: n
                                .is_multiple_of(3)
                                .then(|| "The answer missed a step.".into()),
                            adapter_id: Some(format!("adapter_{}", n % 5)),
                            session_id: Some(format!("session-{t}-{}", n / 10)),
                            ..Default::default()
                        };
                        let fb = service.submit(actor, item)?;
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{}", fb.id)
                            .and_then(|_| out.flush())
                            .map_err(|source| CliError::Io {
                                context: "writing id".into(),
                                source,
                            })?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(_) => {
                    return Err(CliError::Inconsistent("a writer thread panicked".into()));
                }
            }
        }
        Ok(())
    })
}
