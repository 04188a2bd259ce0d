//! `--set key=value` overrides, applied to the file's TOML before it is read.

use super::*;

/// `a.b.c=value`: the value is TOML (numbers, booleans, arrays, inline tables), else a string.
pub(super) fn apply_override(root: &mut toml::Value, item: &str) -> Result<(), ConfigError> {
    let (key, raw_value) = item.split_once('=').ok_or_else(|| ConfigError::BadOverride(item.to_owned()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::BadOverride(item.to_owned()));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw_value.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw_value.trim().to_owned()));
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node.as_table_mut().ok_or_else(|| ConfigError::Override {
            key: key.to_owned(),
            message: format!("'{}' is not a table", parts[..i].join(".")),
        })?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Ok(())
}
