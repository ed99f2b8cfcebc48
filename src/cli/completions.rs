//! `mlimg completions SHELL` and `mlimg man [COMMAND]`: generated from the clap definitions,
//! so they never drift from the commands (docs/man/ is checked against `mlimg man` by a test).

use std::io::Write as _;

use anyhow::{Result, bail};
use clap::{Args, CommandFactory};

/// Print a shell completion script.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg completions bash > ~/.local/share/bash-completion/completions/mlimg
  mlimg completions zsh > \"${fpath[1]}/_mlimg\"
  mlimg completions fish > ~/.config/fish/completions/mlimg.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the man page (roff) of mlimg or of one of its commands.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg man | man -l -
  mlimg man build > mlimg-build.1")]
pub struct ManArgs {
    /// The command whose page to print (default: mlimg itself).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "mlimg", &mut std::io::stdout().lock());
    Ok(())
}

/// The roff page of `command` (`None`: mlimg).
pub fn man_page(command: Option<&str>) -> Result<Vec<u8>> {
    let mut cmd = super::Cli::command();
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(c) => c.clone(),
            None => bail!(
                "no command {name:?}; commands: {}",
                cmd.get_subcommands()
                    .map(|c| c.get_name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    Ok(out)
}

pub fn man(args: ManArgs) -> Result<()> {
    let page = man_page(args.command.as_deref())?;
    std::io::stdout().lock().write_all(&page)?;
    Ok(())
}
