//! Every configuration key as a flag of `mydata serve` and `mydata config check`: `--key VALUE`
//! means what `key = VALUE` means in the file and `MYDATA_KEY=VALUE` in the environment
//! (`mydata_server::config_layers`). `--data-dir` and `--config` are the global flags of
//! [`crate::server_cmds::Where`].

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use mydata_server::config::Config;
use mydata_server::config_layers::{KEYS, env_name};
use serde_json::Value;

/// The settings given as flags: pairs of a key and its text, in the order of `KEYS`.
#[derive(Debug, Clone, Default)]
pub struct Settings(pub Vec<(String, String)>);

/// Keys that are flags elsewhere (`--data-dir` is global).
const NOT_HERE: &[&str] = &["data_dir"];

fn kind(key: &str) -> Value {
    serde_json::to_value(Config::default())
        .ok()
        .and_then(|v| v.get(key).cloned())
        .unwrap_or(Value::Null)
}

impl FromArgMatches for Settings {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut out = Vec::new();
        for key in KEYS.iter().filter(|k| !NOT_HERE.contains(k)) {
            let Ok(Some(values)) = m.try_get_many::<String>(key) else {
                continue;
            };
            let values: Vec<&String> = values.collect();
            let text = if matches!(kind(key), Value::Array(_)) {
                values
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(":")
            } else {
                values.last().map(|s| s.to_string()).unwrap_or_default()
            };
            out.push((key.to_string(), text));
        }
        Ok(Settings(out))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Settings {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd.next_help_heading("Settings (also `KEY = …` in --config, MYDATA_KEY)");
        for key in KEYS.iter().filter(|k| !NOT_HERE.contains(k)) {
            // Flag names live as long as the command (built once per process).
            let long: &'static str = Box::leak(key.replace('_', "-").into_boxed_str());
            let help = format!("Setting `{key}` ({})", env_name(key));
            let arg = Arg::new(*key).long(long).help(help);
            let arg = match kind(key) {
                Value::Bool(_) => arg
                    .value_name("BOOL")
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .action(ArgAction::Set),
                Value::Array(_) => arg.value_name("PATHS").action(ArgAction::Append),
                Value::Number(_) => arg.value_name("N").action(ArgAction::Set),
                _ => arg.value_name("VALUE").action(ArgAction::Set),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}
