mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let result = match args.command {
        cli::Command::Build(a) => cli::build::run(a),
        cli::Command::Lock(a) => cli::lock::run(a),
        cli::Command::PullModel(a) => cli::pull_model::run(a),
        cli::Command::Sbom(a) => cli::sbom::run(a, mlimg::provenance::SPDX_ARTIFACT_TYPE),
        cli::Command::Provenance(a) => cli::sbom::run(a, mlimg::provenance::INTOTO_ARTIFACT_TYPE),
        cli::Command::Verify(a) => cli::verify::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::render(e.as_ref()));
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
