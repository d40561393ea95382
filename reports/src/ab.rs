//! A/B until it is known: pairs of runs (baseline, candidate) come in one at a time, and after
//! each pair a confidence sequence for the median pair ratio (candidate / baseline) says
//! whether the candidate is worse beyond the band, better beyond it, unchanged (the whole
//! interval inside the band), or not yet known. The sequence is valid however often it is
//! looked at (Ville's inequality): a call on a candidate that changed nothing is made with
//! probability at most α over the whole run, not per look.
//!
//! The test is a sign test turned into a betting martingale: if the median log ratio were m,
//! each pair lands above or below m with probability ½, so betting a fixed fraction λ on the
//! side is a fair game, and `(1 + λ)^{above} (1 − λ)^{below}` a nonnegative martingale. A mix
//! over λ ∈ [`LAMBDAS`] and both sides is one too; every m at which it reached 1/α is out of the
//! interval for good. Distribution-free and robust to the outliers migrations have (one 2 s
//! downtime among 20 ms ones moves one sign, not the mean).

use serde::Serialize;

/// The betting fractions mixed: small ones win slowly on weak evidence, large ones fast on
/// strong; the mix pays about as well as the best of them.
pub const LAMBDAS: [f64; 3] = [0.3, 0.6, 0.9];

/// What the pairs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The candidate is worse: the interval excludes no change, and the pairs' median shift
    /// reaches the band.
    Regression,
    Improvement,
    /// The whole interval inside the band: any change is smaller than it.
    Unchanged,
    /// Not known yet (or at the budget: inconclusive).
    #[serde(rename = "inconclusive")]
    Undecided,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::Unchanged => "unchanged",
            Verdict::Undecided => "inconclusive",
        }
    }
}

/// The sequential test of one figure.
#[derive(Debug, Clone)]
pub struct Sequential {
    /// The band, as a log ratio: ±10 % is ln 1.1 up, ln (1 / 1.1) down.
    band: f64,
    alpha: f64,
    higher_is_better: bool,
    /// Each pair's log ratio, in arrival order.
    ratios: Vec<f64>,
    /// The running intersection of the intervals so far (log ratios).
    lo: f64,
    hi: f64,
}

impl Sequential {
    /// A test at level `alpha` with a band of `band` (a fraction: 0.10).
    pub fn new(band: f64, alpha: f64, higher_is_better: bool) -> Self {
        Self {
            band: (1.0 + band).ln(),
            alpha,
            higher_is_better,
            ratios: Vec::new(),
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
        }
    }

    pub fn pairs(&self) -> usize {
        self.ratios.len()
    }

    /// One more pair. A pair whose figures are not both positive and finite is skipped (and
    /// said so: false).
    pub fn push(&mut self, baseline: f64, candidate: f64) -> bool {
        if !(baseline > 0.0 && candidate > 0.0 && baseline.is_finite() && candidate.is_finite()) {
            return false;
        }
        self.ratios.push((candidate / baseline).ln());
        let (lo, hi) = interval(&self.ratios, self.alpha);
        self.lo = self.lo.max(lo);
        self.hi = self.hi.min(hi);
        true
    }

    /// The interval for the median ratio, as relative shifts (candidate / baseline − 1).
    pub fn interval(&self) -> (f64, f64) {
        (self.lo.exp() - 1.0, self.hi.exp() - 1.0)
    }

    /// The pairs' median shift (relative): the estimate the call's size is read from.
    pub fn estimate(&self) -> Option<f64> {
        (!self.ratios.is_empty()).then(|| crate::stats::median(&self.ratios).exp() - 1.0)
    }

    /// What the pairs so far say.
    pub fn verdict(&self) -> Verdict {
        if self.lo > self.hi {
            // Every median was ruled out: the pairs are not from one distribution (a drift
            // within the run). Nothing can be called.
            return Verdict::Undecided;
        }
        if self.lo > -self.band && self.hi < self.band {
            return Verdict::Unchanged;
        }
        let est = if self.ratios.is_empty() { 0.0 } else { crate::stats::median(&self.ratios) };
        let up = self.lo > 0.0 && est >= self.band;
        let down = self.hi < 0.0 && est <= -self.band;
        match (up, down, self.higher_is_better) {
            (true, _, false) | (_, true, true) => Verdict::Regression,
            (true, _, true) | (_, true, false) => Verdict::Improvement,
            _ => Verdict::Undecided,
        }
    }

    /// A shift these pairs would have called: the interval's width, as a relative shift (the
    /// calibration checks that a true shift of this size is called with 80 % power or more;
    /// half of it is called about half of the time).
    pub fn detectable(&self) -> f64 {
        let w = self.hi - self.lo;
        if w.is_finite() {
            w.exp() - 1.0
        } else {
            f64::INFINITY
        }
    }
}

/// The mixture martingale's value with `above` pairs above a candidate median and `below`
/// pairs under it.
fn wealth(above: usize, below: usize) -> f64 {
    let (a, b) = (above as i32, below as i32);
    LAMBDAS
        .iter()
        .map(|l| 0.5 * ((1.0 + l).powi(a) * (1.0 - l).powi(b) + (1.0 - l).powi(a) * (1.0 + l).powi(b)))
        .sum::<f64>()
        / LAMBDAS.len() as f64
}

/// The medians not ruled out by `ratios` at level `alpha`, as [lowest, highest] log ratio. The
/// martingale only changes at the pairs' own values, so the candidates are each value and each
/// gap between two (where a value counts on neither side, a gap's median on both).
fn interval(ratios: &[f64], alpha: f64) -> (f64, f64) {
    let mut s = ratios.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    // Candidates in increasing order — the gap below s[0], s[0], the gap above it, ... — each
    // with its counts (above, below) and the infimum and supremum of the medians it stands for.
    let at = |j: usize| (s.iter().filter(|&&v| v > s[j]).count(), s.iter().filter(|&&v| v < s[j]).count());
    let candidates = (0..=2 * n).map(|k| {
        let j = k / 2;
        if k % 2 == 0 {
            let inf = if j == 0 { f64::NEG_INFINITY } else { s[j - 1] };
            let sup = if j == n { f64::INFINITY } else { s[j] };
            ((n - j, j), inf, sup)
        } else {
            (at(j), s[j], s[j])
        }
    });
    let kept: Vec<(f64, f64)> = candidates
        .filter(|((above, below), _, _)| wealth(*above, *below) < 1.0 / alpha)
        .map(|(_, inf, sup)| (inf, sup))
        .collect();
    let lo = kept.first().map_or(f64::INFINITY, |k| k.0);
    let hi = kept.last().map_or(f64::NEG_INFINITY, |k| k.1);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A run's figure around `mean` with a relative spread `cv` (log-normal) and, one time in
    /// `outlier_in`, ten times as long (a migration's rare multi-second stall).
    fn figure(rng: &mut StdRng, mean: f64, cv: f64, outlier_in: u32) -> f64 {
        let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
        let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        let x = mean * (cv * z).exp();
        if outlier_in > 0 && rng.gen_range(0..outlier_in) == 0 {
            x * 10.0
        } else {
            x
        }
    }

    /// Runs `seeds` A/B tests of `shift` at spread `cv`, looking after every pair up to
    /// `budget` pairs; the verdicts and the pairs each used.
    fn trials(shift: f64, cv: f64, outlier_in: u32, budget: usize, seeds: u64) -> Vec<(Verdict, usize)> {
        (0..seeds)
            .map(|s| {
                let mut rng = StdRng::seed_from_u64(s);
                let mut t = Sequential::new(0.10, 0.05, false);
                for _ in 0..budget {
                    let a = figure(&mut rng, 1000.0, cv, outlier_in);
                    let b = figure(&mut rng, 1000.0 * (1.0 + shift), cv, outlier_in);
                    t.push(a, b);
                    let v = t.verdict();
                    if v != Verdict::Undecided {
                        return (v, t.pairs());
                    }
                }
                (Verdict::Undecided, budget)
            })
            .collect()
    }

    fn count(t: &[(Verdict, usize)], v: Verdict) -> usize {
        t.iter().filter(|x| x.0 == v).count()
    }

    /// The most false calls 1000 seeds may show at α = 0.05: α·1000 + 3 σ.
    const MOST_FALSE: usize = 50 + 21;

    /// No change, looked at after every pair for 60 pairs: a change is called in at most α of
    /// the seeds, with a spread of total migration time (6 %), of downtime (40 %) and with
    /// outliers.
    #[test]
    fn calibration_no_change_is_called_a_change_at_most_alpha_of_the_time() {
        for (cv, outliers) in [(0.06, 0), (0.40, 0), (0.40, 10)] {
            let t = trials(0.0, cv, outliers, 60, 1000);
            let wrong = count(&t, Verdict::Regression) + count(&t, Verdict::Improvement);
            eprintln!("no change, cv {cv}, outliers 1 in {outliers}: {wrong} of 1000 false calls");
            assert!(wrong <= MOST_FALSE, "cv {cv}, outliers 1 in {outliers}: {wrong} of 1000 false calls");
        }
    }

    /// A cap that doubles the total time is called a regression, every time, within 10 pairs.
    #[test]
    fn calibration_a_large_regression_is_called_within_ten_pairs() {
        let t = trials(1.0, 0.06, 0, 30, 1000);
        assert_eq!(count(&t, Verdict::Regression), 1000);
        let most = t.iter().map(|x| x.1).max().expect("trials");
        eprintln!("doubled: called in up to {most} pairs");
        assert!(most <= 10, "up to {most} pairs");
        let better = trials(-0.5, 0.06, 0, 30, 1000);
        assert_eq!(count(&better, Verdict::Improvement), 1000, "halved: an improvement");
    }

    /// Same against same at the total time's spread: unchanged in nearly every seed within
    /// 40 pairs, never a change beyond α.
    #[test]
    fn calibration_same_against_same_ends_unchanged() {
        let t = trials(0.0, 0.06, 0, 40, 1000);
        assert!(count(&t, Verdict::Unchanged) >= 950, "{} unchanged", count(&t, Verdict::Unchanged));
        let median_pairs = crate::stats::median(&t.iter().map(|x| x.1 as f64).collect::<Vec<_>>());
        eprintln!(
            "same v same: {} of 1000 unchanged, median {median_pairs} pairs",
            count(&t, Verdict::Unchanged)
        );
        assert!(median_pairs <= 20.0, "median {median_pairs} pairs");
    }

    /// A shift inside the band is never a regression; it ends unchanged or undecided.
    #[test]
    fn calibration_a_shift_inside_the_band_is_not_a_regression() {
        let t = trials(0.04, 0.06, 0, 60, 1000);
        assert!(count(&t, Verdict::Regression) <= MOST_FALSE, "{}", count(&t, Verdict::Regression));
        assert_eq!(count(&t, Verdict::Improvement), 0);
    }

    /// The detectable shift an inconclusive end quotes (the interval's width after the budget,
    /// under no change) is called a change in 80 % of seeds or more with the same budget.
    #[test]
    fn calibration_the_quoted_detectable_shift_is_detected() {
        let (cv, budget) = (0.40, 20);
        let quotes: Vec<f64> = (0..200)
            .map(|s| {
                let mut rng = StdRng::seed_from_u64(10_000 + s);
                let mut t = Sequential::new(0.10, 0.05, false);
                for _ in 0..budget {
                    t.push(figure(&mut rng, 1000.0, cv, 0), figure(&mut rng, 1000.0, cv, 0));
                }
                t.detectable()
            })
            .collect();
        let quoted = crate::stats::median(&quotes);
        assert!(quoted.is_finite() && quoted > 0.1, "{quoted}");
        let t = trials(quoted, cv, 0, budget, 1000);
        eprintln!(
            "quoted {quoted:.2} after {budget} pairs: called in {} of 1000",
            count(&t, Verdict::Regression)
        );
        assert!(
            count(&t, Verdict::Regression) >= 800,
            "{} of 1000 at {quoted:.2}",
            count(&t, Verdict::Regression)
        );
    }

    #[test]
    fn the_interval_shrinks_around_the_median_and_bad_figures_are_skipped() {
        let mut t = Sequential::new(0.10, 0.05, false);
        assert!(!t.push(0.0, 5.0) && !t.push(f64::NAN, 1.0));
        assert_eq!((t.pairs(), t.verdict()), (0, Verdict::Undecided));
        assert_eq!(t.interval(), (-1.0, f64::INFINITY));
        for i in 0..30 {
            t.push(100.0, 200.0 + f64::from(i));
        }
        let (lo, hi) = t.interval();
        assert!(lo > 0.9 && hi < 1.4, "[{lo}, {hi}]");
        assert_eq!(t.verdict(), Verdict::Regression);
        assert!(t.estimate().is_some_and(|e| (e - 1.15).abs() < 0.01));
    }
}
