//! Importing the reference simulator's JSON configs (FEDREVIVE.md section 9): each key becomes
//! the fedsim key that means the same, so `fedsim run fedrevive.json` runs the equivalent
//! experiment. Keys that only steer the reference's logging, plots, devices or model saving
//! are accepted and listed in one note; keys fedsim cannot honour (another dataset, other KD
//! variants, MAML, resuming the reference's own state) are refused by name, never ignored.
//! Keys whose value is the one every reference file has (a variant fedsim implements) are
//! accepted.

use serde_json::Value as Json;
use toml::{Table, Value};

use super::algorithms::{Algorithm, AlgorithmKind, Arrival, ALGORITHMS};

/// What an import made: the config in fedsim's layout, and the keys it accepted without
/// effect on results.
pub struct Imported {
    pub config: Table,
    pub ignored: Vec<String>,
    /// `continue_exp_from` as written, when it names a folder: the reference continues the
    /// experiment saved there, or ignores the key when the folder holds none. The import does
    /// no I/O; [`super::Config::load`] looks.
    pub continue_from: Option<String>,
}

/// Why a reference config cannot be run.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ImportError {
    pub key: String,
    pub problem: String,
}

fn refuse(key: &str, problem: impl Into<String>) -> ImportError {
    ImportError { key: key.to_owned(), problem: problem.into() }
}

/// Keys that only steer where the reference logs, plots, saves models or which device it
/// uses: results do not depend on them.
const NO_EFFECT: [&str; 13] = [
    "log_dir",
    "out_dir",
    "save_plot",
    "vis_freq",
    "train_device",
    "model_device",
    "data_device",
    "gpu_id",
    "save_model_interval",
    "save_exp_state_interval",
    "eval_batch_size",
    "test_split",
    "wandb_flag",
];

/// Converts the text of a reference JSON config.
pub fn reference_config(text: &str) -> Result<Imported, ImportError> {
    let json: Json =
        serde_json::from_str(text).map_err(|e| refuse("(file)", format!("is not JSON ({e})")))?;
    let Json::Object(keys) = json else {
        return Err(refuse("(file)", "is not a JSON object of config keys"));
    };
    let mut out = Importer { config: Table::new(), ignored: Vec::new(), continue_from: None };
    // Which KD the config uses decides which settings block matters.
    let kd = match keys.get("kd_augmentation") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if s == "dfkd" || s == "simple_kd" => Some(s.as_str()),
        Some(other) => {
            return Err(refuse(
                "kd_augmentation",
                format!("{other} is not one of null, \"dfkd\", \"simple_kd\""),
            ))
        }
    };
    let written = keys.get("algorithm").and_then(Json::as_str);
    let reference_names = reference_algorithms(|_| true);
    let Some(written) = written.filter(|w| reference_names.contains(w)) else {
        let quoted: Vec<String> = reference_names.iter().map(|n| format!("\"{n}\"")).collect();
        return Err(refuse(
            "algorithm",
            format!(
                "{} is not {}",
                written.map_or("missing".into(), |s| format!("\"{s}\"")),
                quoted.join(" or ")
            ),
        ));
    };
    let downweighting = keys.get("async_downweighting").and_then(Json::as_bool) == Some(true);
    let Some(algorithm) = AlgorithmKind::by_reference(written, kd, downweighting) else {
        let distilling = reference_algorithms(|a| a.reference.kd_augmentation.is_some());
        return Err(refuse(
            "kd_augmentation",
            format!("the reference distils only in {}; {written} has no KD", distilling.join(" and ")),
        ));
    };
    out.set("algorithm.kind", Value::String(algorithm.name().into()));
    // The reference trains ResNet-18 on CIFAR-10; --set model.kind=convnet for a CPU.
    out.set("model.kind", Value::String("resnet18".into()));
    for (key, value) in &keys {
        out.key(key, value, algorithm, kd)?;
    }
    Ok(Imported { config: out.config, ignored: out.ignored, continue_from: out.continue_from })
}

/// The reference's `algorithm` values of the table's rows that `keep`, each once, in order.
fn reference_algorithms(keep: impl Fn(&Algorithm) -> bool) -> Vec<&'static str> {
    let mut names = Vec::new();
    for row in ALGORITHMS.iter().filter(|a| keep(a)) {
        if !names.contains(&row.reference.algorithm) {
            names.push(row.reference.algorithm);
        }
    }
    names
}

struct Importer {
    config: Table,
    ignored: Vec<String>,
    continue_from: Option<String>,
}

impl Importer {
    /// Sets a dotted fedsim key.
    fn set(&mut self, dotted: &str, value: Value) {
        let mut table = &mut self.config;
        let mut parts = dotted.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                table.insert(part.to_owned(), value);
                return;
            }
            table = table
                .entry(part.to_owned())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .expect("fedsim keys nest tables only");
        }
    }

    fn key(
        &mut self,
        key: &str,
        value: &Json,
        algorithm: AlgorithmKind,
        kd: Option<&str>,
    ) -> Result<(), ImportError> {
        let to_toml =
            |path: &str| json_to_toml(value).ok_or_else(|| refuse(path, format!("{value} has no TOML form")));
        let target = match key {
            "setup_random_seed" => Some("setup_seed"),
            "run_random_seed" => {
                // The run seed names the run too.
                self.set("seed", to_toml(key)?);
                Some("run_seed")
            }
            "num_clients" => Some("data.num_clients"),
            "client_data_size" => Some("data.client_data_size"),
            "val_split" => Some("data.val_split"),
            "kd_split" => Some("data.kd_split"),
            "dirichlet_alpha" => Some("data.alpha"),
            "data_distribution" => match value.as_str() {
                Some("non_iid_dirichlet") => Some("data.partition"),
                Some("iid") => Some("data.partition"),
                _ => return Err(refuse(key, format!("{value} is not \"non_iid_dirichlet\" or \"iid\""))),
            },
            "dataset" => match value.as_str() {
                Some("cifar10") => Some("data.dataset"),
                _ => {
                    return Err(refuse(
                        key,
                        format!("{value}: fedsim runs the reference's CIFAR-10 configs only (cifar10)"),
                    ))
                }
            },
            "local_batch_size" => Some("train.batch_size"),
            "local_iters" => Some("train.local_iters"),
            "local_optimizer" => Some("train.optimizer"),
            "local_learning_rate" => Some("train.lr"),
            "local_momentum" => Some("train.momentum"),
            "server_lr" => Some("algorithm.server_lr"),
            "eval_interval" => Some("eval.interval"),
            "target_accuracy" => Some("stop.target_accuracy"),
            "max_wait_time" => Some("stop.max_virtual_time"),
            "max_rounds" => Some("stop.max_versions"),
            "algorithm" | "kd_augmentation" | "async_downweighting" => None,
            "early_stop" => {
                let rules = value
                    .as_array()
                    .and_then(|rules| {
                        rules
                            .iter()
                            .map(|rule| {
                                let round = rule.get("round").and_then(Json::as_u64)?;
                                let acc = rule.get("acc").and_then(Json::as_f64)?;
                                Some(Value::Array(vec![Value::Integer(round as i64), Value::Float(acc)]))
                            })
                            .collect::<Option<Vec<Value>>>()
                    })
                    .ok_or_else(|| {
                        refuse(key, format!("{value} is not a list of {{\"round\": .., \"acc\": ..}}"))
                    })?;
                self.set("stop.early_stop", Value::Array(rules));
                None
            }
            "async_fl_settings" | "sync_fl_settings" => {
                // The reference's settings block is named after its algorithm key.
                let wanted = format!("{}_settings", algorithm.row().reference.algorithm);
                if key != wanted {
                    self.ignored.push(format!("{key} (the other algorithm's settings)"));
                    return Ok(());
                }
                for (inner, v) in object(key, value)? {
                    let path = format!("{key}.{inner}");
                    match inner.as_str() {
                        "nb_of_active_jobs" => self.set(
                            "algorithm.active_jobs",
                            json_to_toml(v).ok_or_else(|| refuse(&path, "not a number"))?,
                        ),
                        "buffer_size" if algorithm.row().arrival == Arrival::Buffered => self.set(
                            "algorithm.buffer_size",
                            json_to_toml(v).ok_or_else(|| refuse(&path, "not a number"))?,
                        ),
                        _ => {
                            return Err(refuse(
                                &path,
                                "is not a key of the reference's settings fedsim knows",
                            ))
                        }
                    }
                }
                None
            }
            "localtrain_delay" | "download_delay" | "upload_delay" => {
                let kind = &key[..key.len() - "_delay".len()];
                let kind = if kind == "localtrain" { "train" } else { kind };
                let mut delay = Table::new();
                for (inner, v) in object(key, value)? {
                    let path = format!("{key}.{inner}");
                    let field = match inner.as_str() {
                        "type" => "distribution",
                        "mean_distribution" => "mixture",
                        "std" => "std",
                        _ => return Err(refuse(&path, "is not one of type, mean_distribution, std")),
                    };
                    if v.is_null() {
                        continue;
                    }
                    delay.insert(
                        field.to_owned(),
                        json_to_toml(v).ok_or_else(|| refuse(&path, "has no TOML form"))?,
                    );
                }
                self.set(&format!("delays.{kind}"), Value::Table(delay));
                None
            }
            "dfkd_settings" if kd == Some("dfkd") => {
                self.kd_settings(key, value, dfkd_field)?;
                None
            }
            "simple_kd_settings" if kd == Some("simple_kd") => {
                self.kd_settings(key, value, simple_kd_field)?;
                None
            }
            "dfkd_settings" | "simple_kd_settings" => {
                self.ignored.push(format!("{key} (a KD this config does not use)"));
                None
            }
            "external_kd_dataset" | "continue_exp_from" if value.is_null() => None,
            "external_kd_dataset" => {
                return Err(refuse(
                    key,
                    format!("{value}: fedsim distils on the CIFAR-10 KD split only; use null"),
                ))
            }
            "continue_exp_from" => match value.as_str() {
                Some(folder) => {
                    self.continue_from = Some(folder.to_owned());
                    None
                }
                None => return Err(refuse(key, format!("{value} is not a folder's path or null"))),
            },
            _ if NO_EFFECT.contains(&key) || key.starts_with("wandb_") => {
                self.ignored.push(key.to_owned());
                None
            }
            _ => {
                return Err(refuse(
                    key,
                    "is not a key of the reference's config files (FEDREVIVE.md section 9)",
                ))
            }
        };
        if let Some(fedsim) = target {
            let value = match (key, value.as_str()) {
                ("data_distribution", Some("non_iid_dirichlet")) => Value::String("dirichlet".into()),
                _ => to_toml(key)?,
            };
            self.set(fedsim, value);
        }
        Ok(())
    }

    /// A KD settings block: its beta, then every other key by `field`'s verdict.
    fn kd_settings(
        &mut self,
        block: &str,
        value: &Json,
        field: fn(&str, &Json) -> Option<Field>,
    ) -> Result<(), ImportError> {
        let fields = object(block, value)?;
        self.beta(block, fields)?;
        for (inner, v) in fields {
            let path = format!("{block}.{inner}");
            match field(inner, v) {
                None => return Err(refuse(&path, format!("is not a {block} key fedsim knows"))),
                Some(Field::Read) => {}
                Some(Field::NoEffect) => self.ignored.push(path),
                Some(Field::Must(true, _)) => {}
                Some(Field::Must(false, allowed)) => {
                    return Err(refuse(
                        &path,
                        format!("{v} would change results; fedsim accepts only {allowed}"),
                    ))
                }
                Some(Field::To(target)) => {
                    self.set(target, json_to_toml(v).ok_or_else(|| refuse(&path, "has no TOML form"))?)
                }
                Some(Field::ToBoth(first, second)) => {
                    let value = json_to_toml(v).ok_or_else(|| refuse(&path, "has no TOML form"))?;
                    self.set(first, value.clone());
                    self.set(second, value)
                }
            }
        }
        Ok(())
    }

    /// `beta` (a number or a schedule's name) with `adaptive_beta_factor` becomes algorithm.beta.
    fn beta(&mut self, block: &str, fields: &serde_json::Map<String, Json>) -> Result<(), ImportError> {
        let Some(beta) = fields.get("beta") else { return Ok(()) };
        let path = format!("{block}.beta");
        let factor = fields.get("adaptive_beta_factor").and_then(Json::as_f64);
        let mut schedule = Table::new();
        match (beta, beta.as_str()) {
            (Json::Number(n), _) => {
                schedule.insert("kind".into(), Value::String("constant".into()));
                schedule.insert("beta".into(), Value::Float(n.as_f64().unwrap_or(f64::NAN)));
            }
            (_, Some(kind @ ("cosine" | "exponential" | "linear" | "stepwise"))) => {
                let factor = factor
                    .ok_or_else(|| refuse(&format!("{block}.adaptive_beta_factor"), format!("is needed by beta \"{kind}\"")))?;
                schedule.insert("kind".into(), Value::String(kind.into()));
                schedule.insert("factor".into(), Value::Float(factor));
            }
            _ => {
                return Err(refuse(
                    &path,
                    format!("{beta}: fedsim knows a number or \"cosine\", \"exponential\", \"linear\", \"stepwise\" (FEDREVIVE.md section 8)"),
                ))
            }
        }
        self.set("algorithm.beta", Value::Table(schedule));
        Ok(())
    }
}

fn object<'a>(key: &str, value: &'a Json) -> Result<&'a serde_json::Map<String, Json>, ImportError> {
    value.as_object().ok_or_else(|| refuse(key, format!("{value} is not an object")))
}

/// What a KD settings key becomes.
enum Field {
    /// This fedsim key.
    To(&'static str),
    /// Both fedsim keys: the reference reads one value in two places.
    ToBoth(&'static str, &'static str),
    /// Read elsewhere (beta and its factor).
    Read,
    /// Accepted without effect on results, and noted.
    NoEffect,
    /// A variant fedsim implements only at one value: whether the value is it, and which.
    Must(bool, &'static str),
}

/// dfkd_settings, key by key (None: not a key fedsim knows).
fn dfkd_field(key: &str, value: &Json) -> Option<Field> {
    Some(match key {
        "beta" | "adaptive_beta_factor" => Field::Read,
        "max_images" => Field::To("dfkd.pool_size"),
        "synth_batch_size" => Field::To("dfkd.synthetic_batch"),
        "kd_batch_size" => Field::To("kd.batch_per_teacher"),
        "lr" => Field::To("kd.lr"),
        "T" => Field::To("kd.temperature"),
        "kd_buffer_size" => Field::To("kd.buffer_size"),
        "lr_g" => Field::To("dfkd.lr_g"),
        "lr_z" => Field::To("dfkd.lr_z"),
        "g_steps" => Field::To("dfkd.g_steps"),
        // The reference gates L_adv by the same warmup_rounds (counted in synthesis calls).
        "warmup_rounds" => Field::ToBoth("kd.warmup_rounds", "dfkd.adv_after"),
        "freeze_rounds" => Field::To("kd.freeze_rounds"),
        "adv" => Field::To("dfkd.adv_weight"),
        "bn" => Field::To("dfkd.bn_weight"),
        "oh" => Field::To("dfkd.oh_weight"),
        "class_embedding_weight" => Field::To("dfkd.embedding_scale"),
        "nz" => Field::To("dfkd.nz"),
        "ngf" => Field::To("dfkd.ngf"),
        "kd_nb_of_iters" => Field::To("kd.iters"),
        "vis_freq" => Field::NoEffect,
        // Variants every reference file leaves at these values, which fedsim implements.
        "kl_uniform" | "diversity_loss_weight" | "bn_mmt" => {
            Field::Must(value.as_f64() == Some(0.0), "0 (the only variant fedsim implements)")
        }
        "is_maml" | "reset_l0" => {
            Field::Must(value.as_bool() == Some(false), "false (fedsim implements the variant without it)")
        }
        _ => return None,
    })
}

/// simple_kd_settings, key by key (None: not a key fedsim knows).
fn simple_kd_field(key: &str, value: &Json) -> Option<Field> {
    Some(match key {
        "beta" | "adaptive_beta_factor" => Field::Read,
        "learning_rate" => Field::To("simple_kd.lr"),
        "nb_of_iters" => Field::To("simple_kd.iters"),
        "batch_size" => Field::To("simple_kd.batch_per_teacher"),
        "temperature" => Field::To("simple_kd.temperature"),
        "kd_buffer_size" => Field::To("simple_kd.buffer_size"),
        "kd_version" => Field::Must(
            value.as_str() == Some("distribution_match_batch"),
            "\"distribution_match_batch\" (fedsim does not implement avg_logits or avg_loss)",
        ),
        "weighted_avg" | "weighted_class_loss" => {
            Field::Must(value.as_bool() == Some(false), "false (the only variant fedsim implements)")
        }
        _ => return None,
    })
}

/// JSON numbers, strings, booleans and lists as TOML; null has no TOML form.
fn json_to_toml(value: &Json) -> Option<Value> {
    Some(match value {
        Json::Null => return None,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64()?),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_toml).collect::<Option<_>>()?),
        Json::Object(fields) => Value::Table(
            fields.iter().map(|(k, v)| Some((k.clone(), json_to_toml(v)?))).collect::<Option<_>>()?,
        ),
    })
}
