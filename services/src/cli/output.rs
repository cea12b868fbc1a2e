//! How the client commands print what they ask: a table for people (the default), a wider
//! one, or the API's answer as JSON or YAML for scripts (`-o`, `--json`).

use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people.
    #[default]
    Table,
    /// More columns (labels, classes, trust, reasons).
    Wide,
    /// The API's answer as JSON.
    Json,
    /// The API's answer as YAML.
    Yaml,
}

/// `-o table|wide|json|yaml`, and `--json` for `-o json`.
#[derive(Args, Clone, Debug)]
pub struct Format {
    /// How to print: table, wide, json or yaml.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The same as -o json.
    #[arg(long)]
    json: bool,
}

impl Format {
    pub fn output(&self) -> Output {
        if self.json { Output::Json } else { self.output }
    }
}

/// Prints `v` when `o` is JSON or YAML and says so; false for a table (the caller draws it).
pub fn structured<T: Serialize>(o: Output, v: &T) -> anyhow::Result<bool> {
    use std::io::Write;
    let text = match o {
        Output::Json => serde_json::to_string_pretty(v)? + "\n",
        Output::Yaml => serde_yaml::to_string(v)?,
        Output::Table | Output::Wide => return Ok(false),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(true)
}
