//! The noise budget of a set of repetitions: per figure its median, a robust spread, the
//! smallest shift `compare` could call at 5, 10 and 20 runs per side, and which recorded
//! covariate carries its variance — so that noise is reduced where it lives, and a result says
//! what it could have seen.

use crate::compare::{headline, kind, metric};
use crate::stats;
use miglab_model::downtime::VHOST_USER_FS;
use miglab_model::{MigrationRecord, RunResult, RunStatus};
use serde::Serialize;
use std::collections::BTreeMap;

/// Runs per side the budget quotes the detectable shift at.
pub const SIDES: [usize; 3] = [5, 10, 20];

/// The shift a noise budget is asked to resolve: ±10 % of the median.
pub const BAND: f64 = 0.10;

/// What a set of repetitions can tell apart.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// The runs it was made of (completed ones; the others are counted apart).
    pub runs: usize,
    pub not_completed: usize,
    /// The level the shifts are quoted at (compare's).
    pub alpha: f64,
    pub figures: Vec<FigureNoise>,
}

/// One figure's noise.
#[derive(Debug, Clone, Serialize)]
pub struct FigureNoise {
    pub metric: String,
    pub unit: &'static str,
    pub n: usize,
    pub median: f64,
    /// 1.4826 × the median absolute deviation (a standard deviation for normal data, outliers
    /// ignored).
    pub spread: f64,
    pub min: f64,
    pub max: f64,
    /// The smallest shift callable with [`stats::POWER`] at `alpha`, for [`SIDES`] runs per
    /// side: absolute, in the figure's unit.
    pub detectable: Vec<(usize, f64)>,
    /// Runs per side for ±[`BAND`] of the median; None beyond 1000.
    pub runs_for_band: Option<usize>,
    /// What carries the variance, strongest first.
    pub covariates: Vec<Covariate>,
}

impl FigureNoise {
    /// `detectable` at `k` runs per side, as a fraction of the median.
    pub fn detectable_rel(&self, k: usize) -> Option<f64> {
        let d = self.detectable.iter().find(|(s, _)| *s == k)?.1;
        (self.median != 0.0 && d.is_finite()).then(|| d / self.median.abs())
    }
}

/// How much of a figure's variance one covariate explains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Covariate {
    pub name: String,
    /// In [0, 1] for a rank correlation's square; an additive share may be negative (a part
    /// that moves against the total) or above 1 (one that others offset).
    pub explains: f64,
    /// The rank correlation's sign (+1 or −1); 0 for an additive share.
    pub sign: i8,
    /// A rank correlation unlikely by chance: two-sided p < 0.05 (Student's t with n − 2
    /// degrees of freedom; with ten runs a ρ² of 0.3 is chance as often as not). Always true
    /// for an additive share.
    pub significant: bool,
    pub how: How,
}

impl Covariate {
    /// Worth naming: an additive share of 10 % or more, or a rank correlation with p < 0.05.
    pub fn carries(&self) -> bool {
        match self.how {
            How::AdditiveShare => self.explains.abs() >= 0.1,
            How::RankCorrelation => self.significant,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// A part of QEMU's downtime against the downtime: Cov(part, total) / Var(total); the
    /// parts' shares add up to the whole variance.
    AdditiveShare,
    /// Spearman's rank correlation, squared.
    RankCorrelation,
}

/// How many covariates a figure lists.
const SHOWN: usize = 4;

/// The budget of `runs` (any mix of repetitions of one scenario) at level `alpha`.
pub fn budget(runs: &[RunResult], alpha: f64) -> Budget {
    let done: Vec<&RunResult> = runs.iter().filter(|r| r.status == RunStatus::Completed).collect();
    let heads: Vec<BTreeMap<String, f64>> = done.iter().map(|r| headline(r)).collect();
    let mut keys: Vec<String> = heads.iter().flat_map(|h| h.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    let mut figures: Vec<FigureNoise> = keys
        .into_iter()
        .filter_map(|key| {
            let pairs: Vec<(usize, f64)> =
                heads.iter().enumerate().filter_map(|(i, h)| h.get(&key).map(|v| (i, *v))).collect();
            if pairs.len() < 3 {
                return None;
            }
            let x: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            let med = stats::median(&x);
            let spread = 1.4826 * stats::median(&x.iter().map(|v| (v - med).abs()).collect::<Vec<_>>());
            let covs: Vec<BTreeMap<String, f64>> =
                pairs.iter().map(|(i, _)| covariates_of(done[*i], &key)).collect();
            Some(FigureNoise {
                unit: metric(&key).unit,
                n: x.len(),
                median: med,
                spread,
                min: x.iter().copied().fold(f64::INFINITY, f64::min),
                max: x.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                detectable: SIDES
                    .iter()
                    .map(|&k| (k, stats::detectable_shift(k, k, spread, alpha)))
                    .collect(),
                runs_for_band: stats::runs_for(BAND * med.abs(), spread, alpha),
                covariates: explain(&key, &x, &covs),
                metric: key,
            })
        })
        .collect();
    figures.sort_by_key(|f| order(&f.metric));
    Budget { runs: done.len(), not_completed: runs.len() - done.len(), alpha, figures }
}

/// The headline figures first, QEMU's downtime parts next, then the rest by name.
fn order(key: &str) -> (usize, usize, String) {
    const FIRST: [&str; 5] = ["total_ms", "qemu_downtime_ms", "heartbeat_gap_ms", "io_stall_ms", "ops_per_s"];
    let k = kind(key);
    let rank = FIRST.iter().position(|f| *f == k).unwrap_or(if k.starts_with("downtime.") { 5 } else { 6 });
    let hop = key.contains(".hop") as usize + key.contains(".g") as usize;
    (hop, rank, key.to_string())
}

/// The covariates recorded for the hop a figure belongs to (`.hopN`, `.gN`; unsuffixed: guest
/// 1's first hop), and the run's own.
pub fn covariates_of(r: &RunResult, key: &str) -> BTreeMap<String, f64> {
    let mut c = BTreeMap::new();
    c.insert("repetition".to_string(), f64::from(r.repetition));
    if let Some(m) = hop_of(r, key) {
        c.extend(hop_covariates(m));
    }
    c
}

fn hop_covariates(m: &MigrationRecord) -> BTreeMap<String, f64> {
    let mut c = BTreeMap::new();
    let mut put = |k: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            c.insert(k.to_string(), v);
        }
    };
    if let Some(p) = &m.downtime_parts {
        for part in &p.parts {
            put(&part.part.figure(), Some(part.ms));
        }
        put("downtime.vhost_user_fs_ms", p.vhost_user_fs_ms);
        put("downtime.destination_behind_ms", p.destination_behind_ms);
        put("downtime.vhost_user_fs_save_ms", p.device_ms(VHOST_USER_FS, false));
    }
    put("mb_after_stop", m.bytes_after_stop.map(|b| b as f64 / 1e6));
    put("dirty_rate_mib_s", m.convergence.dirty_rate_mib_s);
    put("precopy_passes", m.dirty_sync_count.map(|d| d as f64));
    put("virtiofsd_fds", m.virtiofsd.as_ref().and_then(|v| v.source).map(|o| o.total as f64));
    put("qemu_unanswered_ms", m.longest_qmp_wait_ms);
    put("host_busy_pct", m.host_cpu.map(|h| h.busy_pct));
    put("host_steal_pct", m.host_cpu.map(|h| h.steal_pct));
    put("ceph_cpu_ms", m.host_cpu.and_then(|h| h.ceph_cpu_ms));
    c
}

/// The migration record a headline key belongs to.
fn hop_of<'a>(r: &'a RunResult, key: &str) -> Option<&'a MigrationRecord> {
    let (_, hop, guest) = crate::compare::split_key(key);
    let migrations = match r.guests.iter().find(|g| g.guest == guest) {
        Some(g) => &g.migrations,
        None if guest == 1 => &r.migrations,
        None => return None,
    };
    migrations.iter().filter(|m| !m.follow_up).nth((hop as usize).checked_sub(1)?)
}

/// Which covariates carry `x`'s variance: QEMU's downtime by its additive parts, anything
/// else by rank correlation. A covariate that is the figure itself is left out.
fn explain(key: &str, x: &[f64], covs: &[BTreeMap<String, f64>]) -> Vec<Covariate> {
    let mut names: Vec<&String> = covs.iter().flat_map(|c| c.keys()).collect();
    names.sort();
    names.dedup();
    let own = kind(key);
    let additive = own == "qemu_downtime_ms";
    let mut out: Vec<Covariate> = names
        .into_iter()
        .filter(|n| n.as_str() != own)
        .filter_map(|name| {
            let (a, b): (Vec<f64>, Vec<f64>) =
                x.iter().zip(covs).filter_map(|(v, c)| c.get(name).map(|w| (*v, *w))).unzip();
            if a.len() < 3 {
                return None;
            }
            let part = additive && miglab_model::PartName::ALL.iter().any(|p| *name == p.figure());
            if part {
                let v = variance(&a);
                (v > 0.0).then(|| Covariate {
                    name: name.clone(),
                    explains: covariance(&b, &a) / v,
                    sign: 0,
                    significant: true,
                    how: How::AdditiveShare,
                })
            } else {
                let rho = spearman(&a, &b)?;
                Some(Covariate {
                    name: name.clone(),
                    explains: rho * rho,
                    sign: if rho < 0.0 { -1 } else { 1 },
                    significant: beyond_chance(rho, a.len()),
                    how: How::RankCorrelation,
                })
            }
        })
        .collect();
    out.sort_by(|a, b| b.explains.abs().total_cmp(&a.explains.abs()));
    out.truncate(SHOWN);
    out
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn covariance(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / (a.len() as f64 - 1.0)
}

fn variance(a: &[f64]) -> f64 {
    covariance(a, a)
}

/// Whether a correlation `r` of `n` pairs has a two-sided p below 0.05:
/// t = r √((n − 2) / (1 − r²)) beyond Student's 97.5 % quantile.
fn beyond_chance(r: f64, n: usize) -> bool {
    let df = n as f64 - 2.0;
    if df < 1.0 {
        return false;
    }
    if r.abs() >= 1.0 {
        return true;
    }
    r.abs() * (df / (1.0 - r * r)).sqrt() > stats::t_quantile(0.975, df)
}

/// Spearman's ρ (Pearson's on mid-ranks); None when either side does not vary.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ra, rb) = (stats::midranks(a), stats::midranks(b));
    let (va, vb) = (variance(&ra), variance(&rb));
    (va > 0.0 && vb > 0.0).then(|| covariance(&ra, &rb) / (va * vb).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::downtime::{Clocks, DowntimePart, PartClock};
    use miglab_model::{DowntimeParts, Outcome, PartName};

    /// A smoke-like run: QEMU's downtime is 10 ms of fixed parts plus a transfer-and-load
    /// part that varies, and a host-busy figure that follows it.
    fn run(rep: u32, load_ms: f64, total_ms: u64) -> RunResult {
        let part = |part: PartName, ms: f64| DowntimePart {
            part,
            ms,
            from: "a".into(),
            to: "b".into(),
            clock: PartClock::Source,
        };
        let mut m = MigrationRecord::sample(Outcome::Completed, 1000.0);
        m.downtime_ms = Some((10.0 + load_ms).round() as u64);
        m.total_time_ms = Some(total_ms);
        m.downtime_parts = Some(DowntimeParts {
            parts: vec![
                part(PartName::Stop, 4.0),
                part(PartName::DeviceSave, 6.0),
                part(PartName::TransferAndLoad, load_ms),
            ],
            traced_ms: 10.0 + load_ms,
            saves: vec![],
            loads: vec![],
            destination_behind_ms: None,
            vhost_user_fs_ms: None,
            clocks: Clocks::OneHost,
        });
        m.host_cpu = Some(miglab_model::HostCpu {
            busy_pct: 50.0 + load_ms,
            steal_pct: (rep % 3) as f64,
            ceph_cpu_ms: None,
        });
        let mut r = RunResult::new("smoke", rep, 1);
        r.status = RunStatus::Completed;
        r.migrations = vec![m];
        r
    }

    #[test]
    fn the_downtimes_variance_is_found_in_the_part_that_carries_it() {
        let runs: Vec<RunResult> = (1..=12)
            .map(|i| run(i, [3.0, 9.0, 30.0, 5.0, 12.0, 4.0][i as usize % 6], 1000 + 10 * u64::from(i)))
            .collect();
        let b = budget(&runs, 0.01);
        assert_eq!((b.runs, b.not_completed), (12, 0));
        let d = b.figures.iter().find(|f| f.metric == "qemu_downtime_ms").expect("downtime");
        let top = &d.covariates[0];
        assert_eq!((top.name.as_str(), top.how), ("downtime.transfer_and_load_ms", How::AdditiveShare));
        assert!((top.explains - 1.0).abs() < 0.05, "the one varying part carries it all: {top:?}");
        assert!(d.covariates.iter().all(|c| c.name != "downtime.stop_ms" || c.explains.abs() < 1e-9));
        // The machine's load follows the part: a rank correlation of 1.
        let busy = d.covariates.iter().find(|c| c.name == "host_busy_pct").expect("busy listed");
        assert!((busy.explains - 1.0).abs() < 1e-9 && busy.sign == 1 && busy.carries(), "{busy:?}");
        // The total time grows with the repetition: a drift, found by its rank.
        let t = b.figures.iter().find(|f| f.metric == "total_ms").expect("total");
        assert_eq!(t.covariates[0].name, "repetition");
        assert_eq!(b.figures[0].metric, "total_ms", "headline figures first");
    }

    /// The detectable shift shrinks as 1/√k with the runs per side, and is the one compare quotes.
    #[test]
    fn detectable_shifts_are_compares_at_5_10_and_20_runs() {
        let runs: Vec<RunResult> =
            (1..=10).map(|i| run(i, f64::from(i % 4), 1000 + 37 * u64::from(i % 5))).collect();
        let b = budget(&runs, 0.01);
        let t = b.figures.iter().find(|f| f.metric == "total_ms").expect("total");
        let at = |k: usize| t.detectable.iter().find(|(s, _)| *s == k).expect("quoted").1;
        assert_eq!(at(10), stats::detectable_shift(10, 10, t.spread, 0.01));
        assert!(at(5) > at(10) && at(10) > at(20));
        assert_eq!(at(5).is_finite(), stats::min_p(5, 5) < 0.01);
        let rel = t.detectable_rel(20).expect("relative");
        assert!((rel - at(20) / t.median).abs() < 1e-12);
    }

    #[test]
    fn a_runs_hop_is_found_by_its_suffixes_and_failed_runs_are_counted_apart() {
        let mut r = run(1, 3.0, 1000);
        let mut second = r.migrations[0].clone();
        second.hop = 2;
        second.bytes_after_stop = Some(2_000_000);
        r.migrations.push(second);
        assert_eq!(covariates_of(&r, "qemu_downtime_ms.hop2").get("mb_after_stop"), Some(&2.0));
        assert_eq!(covariates_of(&r, "qemu_downtime_ms").get("mb_after_stop"), None);
        assert_eq!(covariates_of(&r, "qemu_downtime_ms.g2").get("host_busy_pct"), None, "no guest 2");
        let mut failed = run(2, 3.0, 1000);
        failed.status = RunStatus::Failed;
        let b = budget(&[r, failed], 0.01);
        assert_eq!((b.runs, b.not_completed), (1, 1));
        assert!(b.figures.is_empty(), "one run has no spread");
    }

    /// ρ = 0.5 of 10 pairs is chance (p ≈ 0.14), of 40 it is not (p ≈ 0.001); at 10 pairs
    /// the line lies at ρ ≈ 0.63.
    #[test]
    fn a_correlation_beyond_chance_follows_students_t() {
        assert!(!beyond_chance(0.5, 10) && beyond_chance(0.5, 40));
        assert!(!beyond_chance(0.62, 10) && beyond_chance(0.65, 10));
        assert!(beyond_chance(-1.0, 5) && !beyond_chance(0.99, 2));
    }

    #[test]
    fn spearman_is_one_for_any_increasing_relation_and_none_for_a_constant() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]), None);
    }
}
