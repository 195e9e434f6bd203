//! Reading a configuration: TOML with unknown keys refused, `--set key=value` overrides checked against the
//! same types, and every error naming the key and where its value came from (the file or the `--set`).

use std::path::Path;

use super::Config;
use crate::error::{Result, TrainError};

/// Parses a `--set key=value` value: a TOML value (`0.1`, `true`, `"x"`, `[1, 2]`) or, when it does not
/// parse as one, a bare string (`--set data.dataset=cub`).
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

/// Sets `path` (dotted) in `table` to `value`, creating tables on the way.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value, origin: &str) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(TrainError::Config {
            origin: origin.into(),
            key: path.into(),
            message: "empty key in the path".into(),
        });
    }
    let mut t = table;
    for (i, k) in keys[..keys.len() - 1].iter().enumerate() {
        let entry = t
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| TrainError::Config {
            origin: origin.into(),
            key: keys[..=i].join("."),
            message: "is a value, not a table".into(),
        })?;
    }
    t.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

impl Config {
    /// Parses `text` (from `origin`, a file name used in errors), applies `overrides` (`key=value`), checks
    /// every key and type, then the whole configuration ([`Config::validate`]: ranges, image sizes, the
    /// method's options and geometry). An unknown, mistyped or invalid key is an error naming its dotted
    /// path and where its value came from: the `--set KEY=VALUE` that gave it, else `origin`.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Config> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| TrainError::Config {
            origin: origin.into(),
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut set_keys: Vec<(String, String)> = Vec::new();
        for o in overrides {
            let (key, value) = o.split_once('=').ok_or_else(|| TrainError::Config {
                origin: format!("--set {o}"),
                key: o.clone(),
                message: "expected key=value".into(),
            })?;
            let key = key.trim();
            set_path(
                &mut table,
                key,
                parse_value(value.trim()),
                &format!("--set {o}"),
            )?;
            set_keys.push((key.to_string(), o.clone()));
        }
        let attributed = |key: &str, message: String| attribute(key, message, &set_keys, origin);
        let de = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            // serde_path_to_error stops at the table for an unknown field; name the field itself.
            let key = match unknown_field(&message) {
                Some(field) if path == "." || path.is_empty() => field,
                Some(field) if !path.ends_with(&field) => format!("{path}.{field}"),
                _ => path,
            };
            attributed(&key, message)
        })?;
        config.validate(origin).map_err(|e| match e {
            TrainError::Config { key, message, .. } => attributed(&key, message),
            other => other,
        })?;
        Ok(config)
    }

    /// Reads and parses the file at `path` with `overrides`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }
}

/// The error on `key` with `message`, from the `--set` of `set_keys` (`(key, "key=value")`) that set `key`,
/// a table above it or a key below it (the last such one wins, as it does when applied), else from `origin`
/// (the file). A `--set` key the message names besides (`data.crop` in a grid error) is pointed out too.
fn attribute(
    key: &str,
    message: String,
    set_keys: &[(String, String)],
    origin: &str,
) -> TrainError {
    let covers = |k: &str| {
        key == k || key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}."))
    };
    let from_set = set_keys.iter().rev().find(|(k, _)| covers(k));
    let mut message = message;
    let mut named: Vec<&str> = Vec::new();
    for (k, o) in set_keys.iter().rev() {
        if !covers(k) && !named.contains(&k.as_str()) && message.contains(k.as_str()) {
            named.push(k);
            message.push_str(&format!(" ({k} from --set {o})"));
        }
    }
    TrainError::Config {
        origin: from_set.map_or_else(|| origin.to_string(), |(_, o)| format!("--set {o}")),
        key: key.to_string(),
        message,
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_default() {
        let c = Config::parse("", "x.toml", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.optim.lr, 0.01);
        assert_eq!(c.data.dataset, "synthetic");
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = Config::parse(
            "[optim]\nkind = \"adamw\"\n[[optim.groups]]\nname = \"heads\"\nparams = [\"heads\"]\nlr = 0.1\n",
            "x.toml",
            &["schedule.kind=cosine".into(), "model.base_width=8".into()],
        )
        .unwrap();
        let again = Config::parse(&c.to_toml(), "config.toml", &[]).unwrap();
        assert_eq!(c, again);
    }
}
