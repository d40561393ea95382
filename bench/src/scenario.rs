//! The scenario schema: what one `miglab run` does. TOML; a malformed file is an error with
//! the file, line and column, and what to write instead.

use crate::topology::ceph::ObjectStore;
use crate::vm::{AccelWish, FsCache};
use miglab_reports::MigrationParams;
use miglab_workloads::job::Workload;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("could not read the scenario {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn one() -> u32 {
    1
}

/// Where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    /// An existing lab of this name is used as it is; otherwise one is brought up (and down).
    #[serde(default = "LabSpec::default_name")]
    pub name: String,
    #[serde(default)]
    pub objectstore: ObjectStore,
}

impl LabSpec {
    fn default_name() -> String {
        "default".into()
    }
}

impl Default for LabSpec {
    fn default() -> Self {
        Self { name: Self::default_name(), objectstore: ObjectStore::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    #[serde(default = "one")]
    pub vcpus: u32,
    #[serde(default = "GuestSpec::default_memory")]
    pub memory_mib: u64,
    #[serde(default)]
    pub accel: AccelWish,
    #[serde(default)]
    pub fs_cache: FsCache,
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub virtiofsd_args: Vec<String>,
}

impl GuestSpec {
    fn default_memory() -> u64 {
        512
    }
}

impl Default for GuestSpec {
    fn default() -> Self {
        Self {
            vcpus: 1,
            memory_mib: 512,
            accel: AccelWish::Auto,
            fs_cache: FsCache::Never,
            cmdline: None,
            virtiofsd_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationPlan {
    /// Number of migrations.
    #[serde(default = "one")]
    pub count: u32,
    /// Seconds of workload before the first migration.
    #[serde(default = "MigrationPlan::default_warmup")]
    pub warmup_s: f64,
    /// Seconds after each migration before the next (and before its window closes).
    #[serde(default = "MigrationPlan::default_settle")]
    pub settle_s: f64,
    #[serde(default)]
    pub downtime_limit_ms: Option<u64>,
    #[serde(default)]
    pub max_bandwidth: Option<u64>,
    #[serde(default)]
    pub multifd_channels: Option<u8>,
    #[serde(default = "MigrationPlan::default_timeout")]
    pub timeout_s: f64,
}

impl MigrationPlan {
    fn default_warmup() -> f64 {
        2.0
    }
    fn default_settle() -> f64 {
        1.0
    }
    fn default_timeout() -> f64 {
        120.0
    }
    pub fn params(&self) -> MigrationParams {
        MigrationParams {
            downtime_limit_ms: self.downtime_limit_ms,
            max_bandwidth: self.max_bandwidth,
            multifd_channels: self.multifd_channels,
        }
    }
}

impl Default for MigrationPlan {
    fn default() -> Self {
        Self {
            count: 1,
            warmup_s: Self::default_warmup(),
            settle_s: Self::default_settle(),
            downtime_limit_ms: None,
            max_bandwidth: None,
            multifd_channels: None,
            timeout_s: Self::default_timeout(),
        }
    }
}

/// What runs after the migrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Seconds of workload after the last migration.
    #[serde(default = "RunSpec::default_cooldown")]
    pub cooldown_s: f64,
    /// Read back everything the workload wrote at the end.
    #[serde(default = "RunSpec::default_verify")]
    pub verify: bool,
    /// Deadline for laying out the workload's files.
    #[serde(default = "RunSpec::default_layout_timeout")]
    pub layout_timeout_s: f64,
}

impl RunSpec {
    fn default_cooldown() -> f64 {
        1.0
    }
    fn default_verify() -> bool {
        true
    }
    fn default_layout_timeout() -> f64 {
        300.0
    }
}

impl Default for RunSpec {
    fn default() -> Self {
        Self { cooldown_s: 1.0, verify: true, layout_timeout_s: 300.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "one")]
    pub repetitions: u32,
    #[serde(default)]
    pub lab: LabSpec,
    #[serde(default)]
    pub guest: GuestSpec,
    /// The workload, inline ...
    #[serde(default)]
    pub workload: Option<Workload>,
    /// ... or the first job of a fio job file, relative to the scenario's directory.
    #[serde(default)]
    pub fio_file: Option<PathBuf>,
    #[serde(default)]
    pub migration: MigrationPlan,
    #[serde(default)]
    pub run: RunSpec,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Scenario {
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |r| line_col(text, r.start));
            ScenarioError::Parse { path: path.into(), line, column, message: e.message().to_string() }
        })?;
        let invalid = |message: String| ScenarioError::Invalid { path: path.into(), message };
        if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
            return Err(invalid(format!(
                "name '{}' must be letters, digits, '-' or '_' (it names the result directory)",
                s.name
            )));
        }
        if s.repetitions == 0 {
            return Err(invalid("repetitions must be at least 1".into()));
        }
        match (&s.workload, &s.fio_file) {
            (Some(w), None) => w.validate().map_err(|e| invalid(format!("workload: {e}")))?,
            (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    "give either a [workload] table or fio_file = \"job.fio\", not both or neither".into(),
                ))
            }
        }
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<(Self, String), ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.into(), source })?;
        Ok((Self::parse(&text, path)?, text))
    }

    /// The workload, with a fio job file imported.
    pub fn workload(&self, scenario_path: &Path) -> Result<Workload, ScenarioError> {
        if let Some(w) = &self.workload {
            return Ok(w.clone());
        }
        let file = self.fio_file.clone().unwrap_or_default();
        let p = scenario_path.parent().unwrap_or(Path::new(".")).join(file);
        let text =
            std::fs::read_to_string(&p).map_err(|source| ScenarioError::Read { path: p.clone(), source })?;
        let jobs = miglab_workloads::fio::parse(&text)
            .map_err(|e| ScenarioError::Invalid { path: p.clone(), message: e.to_string() })?;
        jobs.into_iter()
            .next()
            .map(Workload::Fio)
            .ok_or_else(|| ScenarioError::Invalid { path: p, message: "no jobs".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_workloads::job::Rw;

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("scenarios/") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                let (s, _) = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
                s.workload(&p).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    p.file_stem().and_then(|f| f.to_str()),
                    Some(s.name.as_str()),
                    "file named after its scenario"
                );
                n += 1;
            }
        }
        assert!(n >= 6, "{n} scenarios");
    }

    #[test]
    fn defaults_fill_in_and_fio_fields_come_through() {
        let s = Scenario::parse(
            "name = \"x\"\n[workload]\nkind = \"fio\"\nrw = \"randwrite\"\nbs = \"8k\"\n",
            Path::new("x.toml"),
        )
        .expect("parses");
        assert_eq!(s.migration.count, 1);
        assert_eq!(s.guest.memory_mib, 512);
        let Some(Workload::Fio(j)) = &s.workload else { panic!("fio") };
        assert_eq!((j.rw, j.bs.0), (Rw::Randwrite, 8192));
    }

    #[test]
    fn malformed_files_name_the_line_and_column() {
        let e =
            Scenario::parse("name = \"x\"\n[workload]\nkind = \"fio\"\nrw = randread\n", Path::new("s.toml"))
                .expect_err("bare word");
        assert!(e.to_string().starts_with("s.toml:4:6:"), "{e}");
        let e =
            Scenario::parse("name = \"x\"\nsed = 3\n[workload]\nkind = \"read-loop\"\n", Path::new("s.toml"))
                .expect_err("typo");
        assert!(e.to_string().starts_with("s.toml:2:1:") && e.to_string().contains("sed"), "{e}");
        let e = Scenario::parse("name = \"a b\"\n[workload]\nkind = \"read-loop\"\n", Path::new("s.toml"))
            .expect_err("name");
        assert!(e.to_string().contains("letters"), "{e}");
    }
}
