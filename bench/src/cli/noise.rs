//! `miglab noise`.

use super::{CliError, NoiseArgs};
use crate::exit::Finished;
use crate::session::{self, RunOptions, Source};
use miglab_infra::paths;
use miglab_reports::noise::{budget, Budget, How, SIDES};
use std::path::{Path, PathBuf};

pub(super) fn noise_cmd(a: NoiseArgs) -> Result<Finished, CliError> {
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        return Err(CliError::Args(format!("--alpha {}: give a level between 0 and 1, e.g. 0.01", a.alpha)));
    }
    let dir = if a.target.is_dir() {
        a.target.clone()
    } else {
        if a.repetitions < 3 {
            return Err(CliError::Args(format!("--repetitions {}: a spread needs 3 or more", a.repetitions)));
        }
        let dirs = session::run(&RunOptions {
            source: Source::Scenario(a.target.clone()),
            out: a.out.clone(),
            lab_root: a.root.clone().unwrap_or_else(paths::lab_root),
            repetitions: Some(a.repetitions),
            lab_name: a.lab.clone(),
            host_mode: None,
            binaries: Default::default(),
            topology: None,
        })?;
        scenario_dir(&dirs).ok_or_else(|| CliError::Args("the scenario ran no repetition".into()))?
    };
    let side = miglab_reports::compare::load(&dir).map_err(|source| CliError::Unreadable {
        path: dir.clone(),
        source,
        hint: " (give a scenario TOML or a directory of results)",
    })?;
    for (f, why) in &side.skipped {
        eprintln!("miglab: left out {}: {why}", f.display());
    }
    let b = budget(&side.runs, a.alpha);
    if b.figures.is_empty() {
        return Err(CliError::Args(format!(
            "{}: {} completed runs ({} not completed) give no figure 3 times: run more repetitions",
            dir.display(),
            b.runs,
            b.not_completed
        )));
    }
    print!("{}", text(&b, &dir));
    let out = dir.join("noise.json");
    let json = serde_json::to_vec_pretty(&b).map_err(|e| CliError::Args(e.to_string()))?;
    std::fs::write(&out, json).map_err(|source| CliError::Unwritable { path: out.clone(), source })?;
    println!("→ {}", out.display());
    Ok(Finished::Clean)
}

/// The scenario's directory above its repetitions' (`results/smoke/1` → `results/smoke`).
fn scenario_dir(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.first()?.parent().map(Path::to_path_buf)
}

/// The budget as a table: a line per figure, the covariates that carry it below.
pub fn text(b: &Budget, dir: &Path) -> String {
    let mut s = format!(
        "noise budget of {} ({} completed runs, {} not; shifts callable with 80 % power at α = {}):\n",
        dir.display(),
        b.runs,
        b.not_completed,
        b.alpha
    );
    let cols: Vec<String> = SIDES.iter().map(|k| format!("{k}/side")).collect();
    s.push_str(&format!(
        "  {:<34} {:>4} {:>10} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9}\n",
        "figure", "n", "median", "spread", "unit", cols[0], cols[1], cols[2], "±10 % at"
    ));
    for f in &b.figures {
        let rel = |k: usize| match f.detectable_rel(k) {
            Some(r) => format!("{:.0} %", r * 100.0),
            None => "—".into(),
        };
        s.push_str(&format!(
            "  {:<34} {:>4} {:>10.2} {:>9.2} {:>7} {:>8} {:>8} {:>8} {:>9}\n",
            f.metric,
            f.n,
            f.median,
            f.spread,
            f.unit,
            rel(5),
            rel(10),
            rel(20),
            f.runs_for_band.map(|n| format!("{n}/side")).unwrap_or_else(|| "> 1000".into())
        ));
        let carried: Vec<String> = f
            .covariates
            .iter()
            .filter(|c| c.carries())
            .map(|c| match c.how {
                How::AdditiveShare => format!("{} {:.0} % of the variance", c.name, c.explains * 100.0),
                How::RankCorrelation => format!(
                    "{} ρ² {:.2} ({})",
                    c.name,
                    c.explains,
                    if c.sign < 0 { "falls as it rises" } else { "rises with it" }
                ),
            })
            .collect();
        if !carried.is_empty() {
            s.push_str(&format!("      carried by (beyond chance): {}\n", carried.join("; ")));
        }
    }
    s
}
