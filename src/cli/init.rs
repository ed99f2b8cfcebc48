//! `mlimg init`: write a starting mlimg.toml for a project folder or from its Dockerfile.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

/// Write a starting mlimg.toml for this project.
///
/// Without --from-dockerfile, looks at the folder: requirements*.txt / pylock.toml become
/// [[deps]] sets, folders of weight-like files (*.safetensors, *.bin, *.onnx, *.gguf, …)
/// [[weights]], the entry point (main.py / app.py with a FastAPI or Flask app) the
/// [config] entrypoint and port, the folder itself the [app] (honouring .dockerignore).
///
/// With --from-dockerfile, translates a Dockerfile whose build context is the folder: FROM
/// (multi-stage: the final stage and the stages it builds on), WORKDIR, COPY + RUN pip
/// install -r (also in a builder stage the final stage copies from), COPY of model folders and
/// code, ENV, EXPOSE, USER, HEALTHCHECK, LABEL, ENTRYPOINT/CMD, ARG defaults. Every
/// instruction it cannot translate (other RUN steps, ADD of URLs, …) is listed, with what to
/// do instead, on stderr and at the end of the file.
///
/// Each value is explained in a comment. An existing file is never replaced.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg init                                  # in the project folder: writes ./mlimg.toml
  mlimg init --from-dockerfile Dockerfile     # in the build context
  mlimg init services/api --output services/api/mlimg.dev.toml
  mlimg init --stdout | less")]
pub struct InitArgs {
    /// The project folder (the Dockerfile's build context).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Translate this Dockerfile (relative paths: from the current folder).
    #[arg(long, value_name = "DOCKERFILE")]
    pub from_dockerfile: Option<PathBuf>,
    /// Where to write the spec [default: DIR/mlimg.toml]. Never replaced if it exists.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the spec instead of writing it.
    #[arg(long, conflicts_with = "output")]
    pub stdout: bool,
}

pub fn run(args: InitArgs) -> Result<()> {
    let draft = match &args.from_dockerfile {
        Some(df) => {
            let text = std::fs::read_to_string(df)
                .with_context(|| format!("cannot read {}", df.display()))?;
            let label = df
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_else(|| "Dockerfile".into());
            mlimg::init::dockerfile::translate(&text, &label, &args.dir)?
        }
        None => mlimg::init::scan::scan(&args.dir)?,
    };
    let text = draft.render();
    if args.stdout {
        print!("{text}");
    } else {
        let out = args
            .output
            .clone()
            .unwrap_or_else(|| args.dir.join("mlimg.toml"));
        mlimg::init::write_new(&out, &text)?;
        eprintln!(
            "wrote {}: {} deps set(s), {} weights entr{}, {}",
            out.display(),
            draft.deps.len(),
            draft.weights.len(),
            if draft.weights.len() == 1 { "y" } else { "ies" },
            if draft.app.is_some() {
                "an app layer"
            } else {
                "no app layer"
            }
        );
    }
    if !draft.untranslated.is_empty() {
        eprintln!("not translated ({}):", draft.untranslated.len());
        for u in &draft.untranslated {
            eprintln!("  {}: {}\n    → {}", u.at, u.instruction, u.advice);
        }
    }
    if !args.stdout {
        eprintln!("next: review it, then `mlimg build --dry-run`");
    }
    Ok(())
}
