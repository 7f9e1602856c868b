//! `feedgraph backup` and `feedgraph restore`: a full backup of some orgs to a file, and
//! its restore into the store the configuration names (sled or PostgreSQL), with progress
//! bars on stderr.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::CliError;
use crate::config::Config;
use crate::service::{Service, ServiceError};

fn bar(template: &str, len: u64) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    indicatif::ProgressBar::new(len).with_style(style)
}

/// Writes a full backup of `orgs` (every org when empty) to `out`, or to stdout.
pub fn backup(config: &Config, orgs: &[String], out: Option<&Path>) -> Result<(), CliError> {
    let service = Service::open(config)?;
    let started = std::time::Instant::now();
    let spinner = bar("{spinner} backing up: {pos} entities ({per_sec})", 0);
    let mut tick = |n: u64| spinner.set_position(n);
    let counts = match out {
        Some(path) => {
            // Write beside the target and rename when complete and synced: a backup
            // that stopped half-way never looks like a finished one.
            let partial = path.with_extension("partial");
            let io = |context: String| {
                move |source| CliError::Io {
                    context: context.clone(),
                    source,
                }
            };
            let file = std::fs::File::create(&partial)
                .map_err(io(format!("creating {}", partial.display())))?;
            let mut w = BufWriter::new(file);
            let counts = service.backup(orgs, &mut w, &mut tick)?;
            let file = w.into_inner().map_err(|e| CliError::Io {
                context: format!("writing {}", partial.display()),
                source: e.into_error(),
            })?;
            file.sync_all()
                .map_err(io(format!("syncing {}", partial.display())))?;
            std::fs::rename(&partial, path).map_err(io(format!(
                "renaming {} to {}",
                partial.display(),
                path.display()
            )))?;
            counts
        }
        None => {
            let mut w = BufWriter::new(std::io::stdout().lock());
            let counts = service.backup(orgs, &mut w, &mut tick)?;
            w.flush().map_err(|source| CliError::Io {
                context: "writing stdout".into(),
                source,
            })?;
            counts
        }
    };
    spinner.finish_and_clear();
    eprintln!(
        "backed up {} adapters, {} feedback, {} batches, {} history versions, {} idempotency keys, {} score configs, {} erasure receipts, {} webhooks in {:.1} s",
        counts.adapters,
        counts.feedback,
        counts.batches,
        counts.history,
        counts.idempotency,
        counts.score_configs,
        counts.erasures,
        counts.webhooks,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Checks a backup file, then restores it into the configured store.
pub fn restore(config: &Config, file: &PathBuf, overwrite: bool) -> Result<(), CliError> {
    let service = Service::open(config)?;
    let started = std::time::Instant::now();
    let open = || {
        std::fs::File::open(file)
            .map(BufReader::new)
            .map_err(|e| ServiceError::BadRequest(format!("opening {}: {e}", file.display())))
    };
    let progress = bar(
        "{spinner} restoring [{bar:40}] {pos}/{len} entities (eta {eta})",
        0,
    );
    let summary = service.restore_backup(open, overwrite, &mut |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    })?;
    progress.finish_and_clear();
    for (org, c) in &summary.orgs {
        eprintln!(
            "restored org '{org}': {} adapters, {} feedback, {} batches, {} history versions, {} idempotency keys, {} score configs, {} erasure receipts, {} webhooks",
            c.adapters,
            c.feedback,
            c.batches,
            c.history,
            c.idempotency,
            c.score_configs,
            c.erasures,
            c.webhooks
        );
    }
    eprintln!(
        "restore finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
