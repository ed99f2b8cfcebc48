//! The command line: clap definitions only; each subcommand converts its flags into the
//! library's options and prints the report.

pub mod build;
pub mod lock;
pub mod pull_model;
pub mod sbom;
pub mod verify;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use mlimg::transport::{RetryObserver, TransportOptions};

/// Build reproducible OCI images for ML services — no daemon, no Dockerfile, no root.
///
/// mlimg reads a declarative spec (mlimg.toml) naming a base image, dependency sets, model
/// weights, app code and runtime config, and writes one content-addressed layer per part:
/// changing the weights rebuilds only the weights layer, changing code only the app layer.
/// Same inputs give byte-identical digests on any machine.
#[derive(Debug, Parser)]
#[command(
    name = "mlimg",
    version,
    max_term_width = 100,
    after_help = "Exit status: 0 on success, 1 when a build, source, registry or output fails, \
                  2 for a usage or spec error (fix the command line or mlimg.toml)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Build(build::BuildArgs),
    Lock(lock::LockArgs),
    PullModel(pull_model::PullModelArgs),
    /// Print the SPDX SBOM attached to a pushed image.
    Sbom(sbom::DocArgs),
    /// Print the in-toto / SLSA provenance statement attached to a pushed image.
    Provenance(sbom::DocArgs),
    /// Verify a pushed image's cosign-format signatures with a public key.
    Verify(verify::VerifyArgs),
}

/// An error and its causes on one line, each cause once (a message that already quotes its
/// cause does not get it appended again, a context repeated right after itself shows once),
/// then a hint where the error alone does not say what to do, with control characters from
/// servers or files escaped so they cannot drive the terminal.
pub fn render(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    let mut out = collapse_repeats(&out);
    if let Some(h) = hint(e) {
        out.push_str("\n  hint: ");
        out.push_str(&h);
    }
    escape(&out)
}

/// `push to r: push to r: HEAD …` → `push to r: HEAD …`: a wrapper naming what its cause
/// already names at its start. Only a `: `-separated part equal to the one before it goes.
fn collapse_repeats(s: &str) -> String {
    s.split('\n')
        .map(|line| {
            let mut kept: Vec<&str> = Vec::new();
            for part in line.split(": ") {
                if kept.last() != Some(&part) {
                    kept.push(part);
                }
            }
            kept.join(": ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to do about an error whose message (made elsewhere) does not say it.
fn hint(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use mlimg::pipeline::BuildError;
    use mlimg::registry::RegistryError;
    use mlimg::sink::SinkError;
    let mut cur = Some(e);
    while let Some(c) = cur {
        let found = match c.downcast_ref::<BuildError>() {
            Some(BuildError::Registry(r)) => registry_hint(r),
            Some(BuildError::Output(o)) => sink_hint(o),
            _ => c
                .downcast_ref::<SinkError>()
                .or_else(|| c.downcast_ref::<Box<SinkError>>().map(|b| &**b))
                .and_then(sink_hint)
                .or_else(|| {
                    c.downcast_ref::<RegistryError>()
                        .or_else(|| c.downcast_ref::<Box<RegistryError>>().map(|b| &**b))
                        .and_then(registry_hint)
                }),
        };
        if found.is_some() {
            return found;
        }
        cur = c.source();
    }
    None
}

fn sink_hint(e: &mlimg::sink::SinkError) -> Option<String> {
    use mlimg::sink::SinkError;
    match e {
        SinkError::Io { path, source } => output_hint(path, source),
        SinkError::Target { source, .. } => sink_hint(source),
        SinkError::Push { source, .. } => registry_hint(source),
        _ => None,
    }
}

/// Auth failures: the registry's status alone does not say where the credentials come from.
fn registry_hint(e: &mlimg::registry::RegistryError) -> Option<String> {
    let mlimg::registry::RegistryError::Http(h) = e else {
        return None;
    };
    match h.status_code {
        401 => Some(format!(
            "{host} did not accept the credentials mlimg sent (or wants some): log in with \
             `docker login {host}`; mlimg reads $DOCKER_CONFIG/config.json, by default \
             ~/.docker/config.json",
            host = h.host
        )),
        403 => Some(format!(
            "the credentials for {} are not allowed to {} {}",
            h.host,
            match h.direction {
                mlimg::registry::Direction::Push => "push to",
                mlimg::registry::Direction::Pull => "pull from",
            },
            h.repository
        )),
        _ => None,
    }
}

/// An output path that cannot be written: which folder on the way is the problem.
fn output_hint(path: &std::path::Path, e: &std::io::Error) -> Option<String> {
    use std::io::ErrorKind;
    // the deepest part of the path that exists
    let existing = path.ancestors().find(|p| p.symlink_metadata().is_ok())?;
    if !existing.is_dir() {
        return Some(format!(
            "{} is a file, not a folder: choose another --output path",
            existing.display()
        ));
    }
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => Some(format!(
            "{} cannot be written to: choose another --output path",
            existing.display()
        )),
        _ => None,
    }
}

/// Control characters (terminal escape sequences among them) as `\u{..}`; newlines and tabs
/// stay.
pub fn escape(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The exit code for an error: 2 for usage and spec errors, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(b) = e.downcast_ref::<mlimg::pipeline::BuildError>() {
        return b.exit_code();
    }
    if e.downcast_ref::<mlimg::spec::SpecError>().is_some() {
        return 2;
    }
    1
}

/// Network flags shared by `build` and `lock`: they apply to every request (registry, Hugging
/// Face Hub, Python indexes).
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Retries per request (and per blob upload or file download without progress) on 5xx,
    /// 429 (honouring Retry-After), timeouts and broken connections, with exponential backoff
    /// from 0.5 s up to 30 s. Each retry prints one line with its cause and wait. 0: fail at
    /// the first error.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub retries: u32,
    /// Network timeout in seconds: for connecting, for a server that sends nothing for this
    /// long, and for each small request (manifests, tokens, listings) as a whole. Large
    /// downloads and uploads may take longer as long as data keeps moving. [default: connect
    /// 30, idle 60, small requests 60]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

impl NetworkArgs {
    /// The options for every client; also made the process default (for the Python index
    /// client, which is not handed options).
    pub fn transport_options(&self, on_retry: Option<RetryObserver>) -> TransportOptions {
        let mut t = TransportOptions {
            retries: self.retries,
            on_retry,
            ..TransportOptions::default()
        };
        if let Some(s) = self.timeout {
            t = t.with_timeout(Duration::from_secs(s));
        }
        mlimg::transport::set_default_options(t.clone());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_repeated_right_after_itself_shows_once() {
        assert_eq!(
            collapse_repeats("push to r:1/a: push to r:1/a: HEAD blob: 401\n  hint: x: x"),
            "push to r:1/a: HEAD blob: 401\n  hint: x"
        );
        assert_eq!(collapse_repeats("a: b: a: b"), "a: b: a: b");
    }

    #[test]
    fn an_output_under_a_file_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "").unwrap();
        let e = std::io::Error::from(std::io::ErrorKind::NotADirectory);
        let h = output_hint(&f.join(".x.mlimg-0-dir/blobs"), &e).unwrap();
        assert!(h.starts_with(&format!("{} is a file", f.display())), "{h}");
        assert_eq!(output_hint(&d.path().join("new"), &e), None);
    }
}
