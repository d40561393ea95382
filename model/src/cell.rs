//! A sweep cell, typed end to end: each swept parameter with the value it takes, from the
//! scenario's sweep to the plan, `result.json`, the sweep's page and `compare`. Its name
//! (`downtime_limit_ms=20,workload=read-loop`) names its directory and is shown; nothing reads
//! a cell's values back out of its name.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "CellOnDisk")]
pub struct SweepCell {
    /// In the sweep's order.
    pub values: Vec<CellValue>,
}

/// A cell as plans and results hold it: typed, or (written before it was) its name alone —
/// then the labels are kept and the numbers read from them.
#[derive(Deserialize)]
#[serde(untagged)]
enum CellOnDisk {
    Typed { values: Vec<CellValue> },
    Named(String),
}

impl From<CellOnDisk> for SweepCell {
    fn from(c: CellOnDisk) -> Self {
        match c {
            CellOnDisk::Typed { values } => SweepCell { values },
            CellOnDisk::Named(name) => SweepCell::from_name(&name),
        }
    }
}

/// One swept parameter's value in a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellValue {
    /// Its dotted path in the scenario (`migration.downtime_limit_ms`).
    pub path: String,
    /// The value as the cell's name shows it: safe in a file name (`20`, `read-loop`,
    /// `--migration-mode-file-handles`).
    pub label: String,
    /// The value itself where it is a number: what a scale axis is drawn on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<f64>,
}

impl CellValue {
    /// The parameter's short name: its path's last part (`downtime_limit_ms`).
    pub fn key(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
}

impl SweepCell {
    /// `downtime_limit_ms=20,workload=read-loop`.
    pub fn name(&self) -> String {
        self.values.iter().map(|v| format!("{}={}", v.key(), v.label)).collect::<Vec<_>>().join(",")
    }

    /// The value of the parameter `key` (its short name or its path).
    pub fn value(&self, key: &str) -> Option<&CellValue> {
        self.values.iter().find(|v| v.key() == key || v.path == key)
    }

    /// Its values only, for an axis label: `20 · read-loop`.
    pub fn short(&self) -> String {
        self.values.iter().map(|v| v.label.as_str()).collect::<Vec<_>>().join(" · ")
    }

    /// What those values are: `downtime_limit_ms · workload`.
    pub fn axes(&self) -> String {
        self.values.iter().map(CellValue::key).collect::<Vec<_>>().join(" · ")
    }

    /// The cell without parameter `key`: the line its repetitions belong to when `key` is the
    /// scale (no values when it is the only one).
    pub fn without(&self, key: &str) -> SweepCell {
        SweepCell { values: self.values.iter().filter(|v| v.key() != key).cloned().collect() }
    }

    /// A cell known by its name alone (a result written before cells were typed, a directory):
    /// its labels kept, its numbers read from them.
    pub fn from_name(name: &str) -> SweepCell {
        let values = name
            .split(',')
            .map(|kv| {
                let (key, label) = kv.split_once('=').unwrap_or(("cell", kv));
                CellValue { path: key.into(), label: label.into(), number: label.parse().ok() }
            })
            .collect();
        SweepCell { values }
    }

    /// The cell a result's plan ran, if it ran one.
    pub fn of_plan(plan: &serde_json::Value) -> Option<SweepCell> {
        plan.get("cell").and_then(|c| serde_json::from_value(c.clone()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell() -> SweepCell {
        SweepCell {
            values: vec![
                CellValue {
                    path: "migration.downtime_limit_ms".into(),
                    label: "20".into(),
                    number: Some(20.0),
                },
                CellValue { path: "workload".into(), label: "read-loop".into(), number: None },
            ],
        }
    }

    #[test]
    fn a_cell_names_itself_and_keeps_its_values_typed() {
        let c = cell();
        assert_eq!(c.name(), "downtime_limit_ms=20,workload=read-loop");
        assert_eq!(c.short(), "20 · read-loop");
        assert_eq!(c.axes(), "downtime_limit_ms · workload");
        assert_eq!(c.without("downtime_limit_ms").name(), "workload=read-loop");
        assert_eq!(c.value("migration.downtime_limit_ms").and_then(|v| v.number), Some(20.0));
        let one = SweepCell { values: vec![c.values[0].clone()] };
        assert!(one.without("downtime_limit_ms").values.is_empty());
    }

    #[test]
    fn a_plan_gives_its_cell_typed_or_as_older_results_named_it() {
        let c = cell();
        let plan = serde_json::json!({ "cell": serde_json::to_value(&c).expect("json") });
        assert_eq!(SweepCell::of_plan(&plan), Some(c));
        let old = SweepCell::of_plan(&serde_json::json!({ "cell": "files=1000,virtiofsd_args=none" }))
            .expect("old");
        assert_eq!(old.name(), "files=1000,virtiofsd_args=none");
        assert_eq!(old.value("files").and_then(|v| v.number), Some(1000.0));
        assert_eq!(SweepCell::of_plan(&serde_json::json!({ "cell": null })), None);
    }
}
