//! The statistics of `compare` and the nightly trend, on one value per run (or per night).
//!
//! * **compare** tests and estimates one thing: the shift between the two sides. The test is
//!   Wilcoxon–Mann–Whitney's rank sum (a permutation test of the mid-ranks: exact when the
//!   arrangements are few, sampled otherwise); the estimate is the Hodges–Lehmann shift (the
//!   median of every candidate − baseline difference) and its interval is the test inverted
//!   (order statistics of those differences, from the exact null distribution of U). So the
//!   interval excludes 0 exactly when the test rejects (without ties), and the call's
//!   direction is the tested one.
//! * **trend**: E-divisive (Matteson & James 2014, "A nonparametric approach for multiple
//!   change point analysis of multivariate data", JASA 109(505)), with the U-statistic
//!   within-segment terms and the permutation test of the whole split; across a night's
//!   series, Benjamini–Hochberg on each series' first split.
//!
//! Every random choice comes from a seed, so a comparison is reproducible.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Above this many arrangements the permutation test samples instead of enumerating.
const EXACT_LIMIT: f64 = 200_000.0;
/// Random arrangements when sampling.
const SAMPLED: usize = 20_000;
/// Values closer than this share of the largest magnitude are ties: the same figure read twice
/// through float arithmetic, not a difference.
const TIE: f64 = 1e-9;

pub fn median(x: &[f64]) -> f64 {
    quantile(x, 0.5)
}

/// The `q` quantile, interpolated between order statistics; NaN for no values.
pub fn quantile(x: &[f64], q: f64) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// C(n, k) as a float (the counts here overflow integers quickly).
pub fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k.min(n));
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The smallest two-sided p-value a rank test of `n` against `m` runs can give: both groups
/// completely separated.
pub fn min_p(n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    (2.0 / binomial(n + m, n)).min(1.0)
}

/// The fewest runs per side (equal sides) with which a p-value below `alpha` is possible.
pub fn runs_needed(alpha: f64) -> usize {
    (2..64).find(|&k| min_p(k, k) < alpha).unwrap_or(64)
}

/// Mid-ranks (1-based) of `x`: tied values (within [`TIE`] of the largest magnitude) share the
/// mean of their ranks.
pub fn midranks(x: &[f64]) -> Vec<f64> {
    let scale = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let tol = TIE * scale;
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] - x[order[i]] <= tol {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Two-sided rank-sum test of `a` against `b`: the share of the arrangements of the pooled
/// mid-ranks whose first-group rank sum is at least as far from its expectation as the
/// observed one. Exact up to [`EXACT_LIMIT`] arrangements, else sampled (the observed
/// arrangement counted, so p > 0).
pub fn rank_sum_p(a: &[f64], b: &[f64], seed: u64) -> f64 {
    rank_sum_p_limit(a, b, seed, EXACT_LIMIT)
}

fn rank_sum_p_limit(a: &[f64], b: &[f64], seed: u64, exact_limit: f64) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 1.0;
    }
    let pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    let ranks = midranks(&pooled);
    let expect = n as f64 * (n + m + 1) as f64 / 2.0;
    let dist = |sum_a: f64| (sum_a - expect).abs();
    let observed = dist(ranks[..n].iter().sum());
    // Rank sums are multiples of ½: a fixed tolerance is exact.
    let at_least = |s: f64| dist(s) >= observed - 1e-6;
    if binomial(n + m, n) <= exact_limit {
        let (mut hits, mut count) = (0u64, 0u64);
        let mut idx: Vec<usize> = (0..n).collect();
        loop {
            count += 1;
            if at_least(idx.iter().map(|&i| ranks[i]).sum()) {
                hits += 1;
            }
            // The next combination in lexicographic order.
            let mut i = n;
            loop {
                if i == 0 {
                    return hits as f64 / count as f64;
                }
                i -= 1;
                if idx[i] < i + m {
                    break;
                }
            }
            idx[i] += 1;
            for j in i + 1..n {
                idx[j] = idx[j - 1] + 1;
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = ranks;
    let mut hits = 1u64;
    for _ in 0..SAMPLED {
        v.shuffle(&mut rng);
        if at_least(v[..n].iter().sum()) {
            hits += 1;
        }
    }
    hits as f64 / (SAMPLED + 1) as f64
}

/// How many of the C(n+m, n) arrangements give each value of Mann–Whitney's U (0..=n·m), no
/// ties: the coefficients of the Gaussian binomial [n+m choose n]_q.
fn u_counts(n: usize, m: usize) -> Vec<f64> {
    let top = n * m;
    let mut c = vec![0.0; top + 1];
    c[0] = 1.0;
    // ∏_{i=1..n} (1 − q^{m+i}) / (1 − q^i), each factor applied to the truncated series.
    for i in 1..=n {
        let k = m + i;
        for u in (k..=top).rev() {
            c[u] -= c[u - k];
        }
        for u in i..=top {
            c[u] += c[u - i];
        }
    }
    c
}

/// The Hodges–Lehmann shift of `b` against `a` and its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    /// The median of every `b[j] − a[i]`.
    pub estimate: f64,
    /// The interval at the level asked; infinite when the runs are too few to give one.
    pub lo: f64,
    pub hi: f64,
}

/// The Hodges–Lehmann shift and its distribution-free interval at `level` (e.g. 0.99): the
/// k-th smallest and largest pairwise difference, k from the exact null distribution of U.
pub fn hodges_lehmann(a: &[f64], b: &[f64], level: f64) -> Shift {
    if a.is_empty() || b.is_empty() {
        return Shift { estimate: f64::NAN, lo: f64::NAN, hi: f64::NAN };
    }
    let mut d: Vec<f64> = b.iter().flat_map(|y| a.iter().map(move |x| y - x)).collect();
    d.sort_by(f64::total_cmp);
    let estimate = median(&d);
    let counts = u_counts(a.len(), b.len());
    let total: f64 = counts.iter().sum();
    let tail = (1.0 - level) / 2.0;
    // k: the most order statistics that can be cut from each end with P(U < k) ≤ tail.
    let mut cum = 0.0;
    let mut k = 0;
    for c in &counts {
        if (cum + c) / total > tail + 1e-12 {
            break;
        }
        cum += c;
        k += 1;
    }
    if k == 0 {
        return Shift { estimate, lo: f64::NEG_INFINITY, hi: f64::INFINITY };
    }
    Shift { estimate, lo: d[k - 1], hi: d[d.len() - k] }
}

/// A straight line fitted by least squares, with a confidence interval for its slope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub intercept: f64,
    pub slope: f64,
    /// The slope's interval at the level asked for (Student's t, n − 2 degrees of freedom).
    pub slope_lo: f64,
    pub slope_hi: f64,
    pub n: usize,
}

/// Fits `y = intercept + slope · x`; None with fewer than three points or a single x.
pub fn linear_fit(points: &[(f64, f64)], level: f64) -> Option<Fit> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = points.iter().map(|p| (p.1 - intercept - slope * p.0).powi(2)).sum();
    let df = (n - 2) as f64;
    let se = (sse / df / sxx).sqrt();
    let half = t_quantile(0.5 + level / 2.0, df) * se;
    Some(Fit { intercept, slope, slope_lo: slope - half, slope_hi: slope + half, n })
}

/// Student's t quantile (Cornish–Fisher expansion around the normal one: within 1 % of the
/// table from 3 degrees of freedom, a little wide below).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let z = normal_quantile(p);
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * df)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * df * df)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * df.powi(3))
}

/// The standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A robust spread of both sides together: 1.4826 × the median absolute deviation of each value
/// from its own side's median (a standard deviation for normal data, outliers ignored).
pub fn pooled_spread(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (median(a), median(b));
    let dev: Vec<f64> = a.iter().map(|v| (v - ma).abs()).chain(b.iter().map(|v| (v - mb).abs())).collect();
    1.4826 * median(&dev)
}

/// The power the detectable change is quoted at.
pub const POWER: f64 = 0.8;

/// The smallest shift that `n` against `m` runs at spread `sigma` detect with [`POWER`] at
/// level `alpha` (the rank test's normal approximation, its efficiency √(π/3) against a t-test
/// included, and a small-sample factor (N+1)/(N−3) for the estimated spread); infinite when
/// no p below `alpha` is possible at all.
pub fn detectable_shift(n: usize, m: usize, sigma: f64, alpha: f64) -> f64 {
    if min_p(n, m) >= alpha || n + m < 4 {
        return f64::INFINITY;
    }
    let z = normal_quantile(1.0 - alpha / 2.0) + normal_quantile(POWER);
    let total = (n + m) as f64;
    z * sigma * (1.0 / n as f64 + 1.0 / m as f64).sqrt() * (std::f64::consts::PI / 3.0).sqrt() * (total + 1.0)
        / (total - 3.0)
}

/// Runs per side (equal sides) that detect a shift of `band` at spread `sigma` and level
/// `alpha`; `None` beyond 1000.
pub fn runs_for(band: f64, sigma: f64, alpha: f64) -> Option<usize> {
    (2..=1000).find(|&k| detectable_shift(k, k, sigma, alpha) <= band)
}

/// Two-sided Fisher's exact test of a 2×2 table: `x` of `n` against `y` of `m` (e.g. failed
/// runs of each side). The p-value sums every table with the same margins no more likely
/// than the observed one.
pub fn fisher_p(x: usize, n: usize, y: usize, m: usize) -> f64 {
    let k = x + y;
    let ln_fact = |v: usize| (1..=v).map(|i| (i as f64).ln()).sum::<f64>();
    let ln_choose = |a: usize, b: usize| ln_fact(a) - ln_fact(b) - ln_fact(a - b);
    let denom = ln_choose(n + m, k);
    let prob = |i: usize| (ln_choose(n, i) + ln_choose(m, k - i) - denom).exp();
    let observed = prob(x);
    let lo = k.saturating_sub(m);
    let hi = k.min(n);
    let p: f64 = (lo..=hi).map(prob).filter(|&q| q <= observed * (1.0 + 1e-7)).sum();
    p.min(1.0)
}

/// Benjamini–Hochberg: which of `p` are discoveries at false-discovery rate `q`.
pub fn benjamini_hochberg(p: &[f64], q: f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let n = p.len() as f64;
    let last = order
        .iter()
        .enumerate()
        .filter(|(r, &i)| p[i] <= q * (*r + 1) as f64 / n)
        .map(|(r, _)| r)
        .next_back();
    let mut out = vec![false; p.len()];
    if let Some(last) = last {
        for &i in &order[..=last] {
            out[i] = true;
        }
    }
    out
}

/// The best split of `v` (at least `min_size` ≥ 2 values on each side) by Matteson & James'
/// Q̂ (α = 1): `n·m/(n+m) · (2/(n·m) Σ|l−r| − Σ_{i<j}|l_i−l_j| / C(n,2) − Σ_{i<j}|r_i−r_j| / C(m,2))`,
/// every split in O(k²) from running sums.
fn best_split(v: &[f64], min_size: usize) -> Option<(usize, f64)> {
    let k = v.len();
    let min_size = min_size.max(2);
    if k < 2 * min_size {
        return None;
    }
    // col[t] = Σ_{i<t} |v_i − v_t|; row[t] = Σ_{j>t} |v_t − v_j|.
    let mut col = vec![0.0; k];
    let mut row = vec![0.0; k];
    for i in 0..k {
        for j in i + 1..k {
            let d = (v[i] - v[j]).abs();
            col[j] += d;
            row[i] += d;
        }
    }
    let all: f64 = row.iter().sum();
    // left[t]: within v[..t]; right[t]: within v[t..].
    let mut left = vec![0.0; k + 1];
    for t in 0..k {
        left[t + 1] = left[t] + col[t];
    }
    let mut right = vec![0.0; k + 1];
    for t in (0..k).rev() {
        right[t] = right[t + 1] + row[t];
    }
    (min_size..=k - min_size)
        .map(|t| {
            let (n, m) = (t as f64, (k - t) as f64);
            let between = all - left[t] - right[t];
            let q = n * m / (n + m)
                * (2.0 * between / (n * m) - left[t] / binomial(t, 2) - right[t] / binomial(k - t, 2));
            (t, q)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Change points of one series, and the p-value of its first (strongest) split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangePoints {
    /// Indices where a new regime starts, in order.
    pub points: Vec<usize>,
    /// The permutation p of the first split tested (1 when the series is too short to split).
    pub first_p: f64,
}

/// E-divisive (Matteson & James): among the current segments, the split with the largest Q̂;
/// its significance by a permutation test of the whole procedure (the values shuffled within
/// each segment, the largest Q̂ over all segments recomputed, `permutations` times); kept when
/// p ≤ `alpha`, and then the next. Segments hold at least `min_size` values (≥ 2).
pub fn change_points(x: &[f64], min_size: usize, alpha: f64, permutations: usize, seed: u64) -> ChangePoints {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bounds = vec![0usize, x.len()];
    let mut out = ChangePoints { points: Vec::new(), first_p: 1.0 };
    let mut first = true;
    loop {
        let best = bounds
            .windows(2)
            .filter_map(|w| best_split(&x[w[0]..w[1]], min_size).map(|(t, q)| (w[0] + t, q)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((at, q)) = best else { break };
        let mut v = x.to_vec();
        let mut as_large = 0usize;
        for _ in 0..permutations {
            let mut top = f64::NEG_INFINITY;
            for w in bounds.windows(2) {
                let seg = &mut v[w[0]..w[1]];
                seg.shuffle(&mut rng);
                if let Some((_, s)) = best_split(seg, min_size) {
                    top = top.max(s);
                }
            }
            if top >= q - 1e-12 * q.abs() {
                as_large += 1;
            }
        }
        let p = (as_large + 1) as f64 / (permutations + 1) as f64;
        if first {
            out.first_p = p;
            first = false;
        }
        if p > alpha {
            break;
        }
        out.points.push(at);
        bounds.push(at);
        bounds.sort_unstable();
    }
    out.points.sort_unstable();
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_line_is_fitted_with_its_slopes_interval() {
        let exact: Vec<(f64, f64)> = [100.0, 1000.0, 10000.0].iter().map(|x| (*x, 5.0 + 2.0 * x)).collect();
        let f = linear_fit(&exact, 0.95).expect("fit");
        assert!((f.slope - 2.0).abs() < 1e-9 && (f.intercept - 5.0).abs() < 1e-6, "{f:?}");
        assert!((f.slope_hi - f.slope_lo).abs() < 1e-9, "no scatter, no width: {f:?}");
        let noisy = [(1.0, 1.0), (1.0, 3.0), (2.0, 4.0), (2.0, 6.0), (3.0, 7.0), (3.0, 9.0)];
        let f = linear_fit(&noisy, 0.95).expect("fit");
        assert!(f.slope_lo < 3.0 && 3.0 < f.slope_hi && f.slope_lo > 0.0, "{f:?}");
        assert!(linear_fit(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)], 0.95).is_none(), "one x: no line");
        // t(0.975) for 4 and 10 degrees of freedom: 2.776, 2.228.
        assert!((t_quantile(0.975, 4.0) - 2.776).abs() < 0.03);
        assert!((t_quantile(0.975, 10.0) - 2.228).abs() < 0.01);
    }

    use super::*;
    use rand::Rng;

    fn normal(rng: &mut StdRng) -> f64 {
        let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn medians_and_quantiles_interpolate() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[0.0, 10.0], 0.9), 9.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn the_smallest_p_is_two_over_the_arrangements_and_five_against_five_just_reaches_one_percent() {
        assert_eq!(binomial(10, 5), 252.0);
        assert!((min_p(5, 5) - 2.0 / 252.0).abs() < 1e-12);
        assert!(min_p(4, 4) > 0.01 && min_p(5, 5) < 0.01);
        assert_eq!(runs_needed(0.01), 5);
        assert_eq!(runs_needed(0.05), 4);
        // Complete separation reaches it exactly, in either direction and with unequal sides.
        let p = rank_sum_p(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0], 1);
        assert!((p - min_p(5, 5)).abs() < 1e-12, "{p}");
        let p = rank_sum_p(&[9.0, 8.0, 7.0], &[1.0, 2.0, 3.0, 4.0, 5.0], 1);
        assert!((p - min_p(3, 5)).abs() < 1e-12, "{p}");
        // The same values on both sides: every arrangement is as extreme.
        assert_eq!(rank_sum_p(&[1.0; 5], &[1.0; 5], 1), 1.0);
    }

    /// Ties are judged against the values' magnitude: 1e6 and 1e6 + 1e-4 are a real (if tiny)
    /// difference, two readings of 0.1 + 0.2 are one value.
    #[test]
    fn ties_scale_with_the_values_not_with_the_difference() {
        assert_eq!(midranks(&[0.1 + 0.2, 0.3, 5.0]), vec![1.5, 1.5, 3.0]);
        assert_eq!(midranks(&[1e6, 1e6 + 0.5, 1e6 + 1.0]), vec![1.0, 2.0, 3.0]);
        assert_eq!(midranks(&[2.0, 1.0, 2.0, 3.0]), vec![2.5, 1.0, 2.5, 4.0]);
    }

    /// The same data through enumeration and through sampling: within sampling error.
    #[test]
    fn sampled_and_exact_agree_on_the_same_data() {
        let mut rng = StdRng::seed_from_u64(5);
        for shift in [0.0, 0.5, 1.0] {
            let a: Vec<f64> = (0..8).map(|_| 10.0 + normal(&mut rng)).collect();
            let b: Vec<f64> = (0..8).map(|_| 10.0 + shift + normal(&mut rng)).collect();
            let exact = rank_sum_p_limit(&a, &b, 3, f64::INFINITY);
            let sampled = rank_sum_p_limit(&a, &b, 3, 0.0);
            let se = (exact * (1.0 - exact) / SAMPLED as f64).sqrt();
            assert!((exact - sampled).abs() <= 4.0 * se + 2.0 / SAMPLED as f64, "{exact} vs {sampled}");
            assert_eq!(rank_sum_p_limit(&a, &b, 3, 0.0), sampled, "seeded: the same answer twice");
        }
    }

    #[test]
    fn u_counts_are_the_arrangements() {
        let c = u_counts(5, 5);
        assert_eq!(c.iter().sum::<f64>(), 252.0);
        assert_eq!(&c[..5], &[1.0, 1.0, 2.0, 3.0, 5.0]);
        assert_eq!(c[25], 1.0);
        assert_eq!(u_counts(3, 7).iter().sum::<f64>(), binomial(10, 3));
    }

    #[test]
    fn the_hodges_lehmann_interval_covers_the_true_shift_at_its_level() {
        let mut covered = 0;
        for s in 0..1000 {
            let mut rng = StdRng::seed_from_u64(s);
            let a: Vec<f64> = (0..5).map(|_| 100.0 + 7.0 * normal(&mut rng)).collect();
            let b: Vec<f64> = (0..15).map(|_| 110.0 + 7.0 * normal(&mut rng)).collect();
            let h = hodges_lehmann(&a, &b, 0.95);
            assert!(h.lo <= h.estimate && h.estimate <= h.hi);
            covered += usize::from(h.lo <= 10.0 && 10.0 <= h.hi);
        }
        assert!(covered >= 940, "95 % interval covered the shift in {covered} of 1000");
        // Too few runs for the level: no interval.
        let h = hodges_lehmann(&[1.0, 2.0], &[3.0, 4.0], 0.99);
        assert!(h.lo.is_infinite() && h.hi.is_infinite() && h.estimate == 2.0);
    }

    #[test]
    fn fisher_normal_quantile_and_benjamini_hochberg_match_known_values() {
        assert!((fisher_p(3, 5, 0, 5) - 1.0 / 6.0).abs() < 1e-9);
        assert!((fisher_p(0, 5, 0, 5) - 1.0).abs() < 1e-9);
        // 0 of 20 against 8 of 20: p = 0.003276 (the hypergeometric tables summed by hand).
        assert!((fisher_p(0, 20, 8, 20) - 0.0032760).abs() < 1e-6, "{}", fisher_p(0, 20, 8, 20));
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-6);
        assert!((normal_quantile(0.005) + 2.575829).abs() < 1e-6);
        assert_eq!(
            benjamini_hochberg(&[0.01, 0.035, 0.03, 0.5], 0.05),
            vec![true, true, true, false],
            "step-up: 0.035 ≤ 0.05·3/4 lets 0.03 through although 0.03 > 0.05·2/4"
        );
        assert_eq!(benjamini_hochberg(&[0.02, 0.5], 0.05), vec![true, false]);
        assert_eq!(benjamini_hochberg(&[0.03, 0.5], 0.05), vec![false, false]);
    }

    #[test]
    fn the_energy_statistic_is_matteson_and_james_u_statistic() {
        // Two values on each side: within terms are one pair each (C(2,2) = 1, not 2² = 4).
        let (t, q) = best_split(&[0.0, 2.0, 10.0, 14.0], 2).expect("a split");
        assert_eq!(t, 2);
        // between: |0−10|+|0−14|+|2−10|+|2−14| = 44 → 2·44/4 = 22; within 2 and 4; ×(2·2/4).
        assert!((q - (22.0 - 2.0 - 4.0)).abs() < 1e-12, "{q}");
    }

    #[test]
    fn e_divisive_finds_a_step_and_its_false_alarms_on_sixty_null_nights_are_bounded() {
        let mut rng = StdRng::seed_from_u64(11);
        let noise: Vec<f64> = (0..60).map(|_| 100.0 + 3.0 * normal(&mut rng)).collect();
        let step: Vec<f64> =
            noise.iter().enumerate().map(|(i, v)| if i >= 40 { v + 10.0 } else { *v }).collect();
        assert_eq!(change_points(&step, 3, 0.01, 199, 1).points, vec![40]);
        // 200 null series of 60 nights at α = 0.05: a spurious change point in about 5 %.
        let spurious = (0..200u64)
            .filter(|&s| {
                let mut rng = StdRng::seed_from_u64(1000 + s);
                let x: Vec<f64> = (0..60).map(|_| 100.0 + 3.0 * normal(&mut rng)).collect();
                !change_points(&x, 3, 0.05, 99, s).points.is_empty()
            })
            .count();
        eprintln!("E-divisive, 200 null series of 60 nights, α = 0.05: {spurious} with a change point");
        assert!(spurious <= 20, "{spurious} of 200 null series had a change point");
    }
}
