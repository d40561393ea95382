//! The statistics of `compare` and the nightly trend, on one value per run: medians, a
//! two-sided permutation test, a bootstrap interval of the relative change, and E-divisive
//! change points. Every random choice comes from a seed, so a comparison is reproducible.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Above this many arrangements the permutation test samples instead of enumerating.
const EXACT_LIMIT: f64 = 200_000.0;
/// Random arrangements when sampling.
const SAMPLED: usize = 20_000;

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

/// The smallest two-sided p-value a permutation test of `n` against `m` runs can give: both
/// groups completely separated.
pub fn min_p(n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let tails = if n == m { 2.0 } else { 1.0 };
    (tails / binomial(n + m, n)).min(1.0)
}

/// The fewest runs per side (equal sides) with which a p-value below `alpha` is possible.
pub fn runs_needed(alpha: f64) -> usize {
    (2..64).find(|&k| min_p(k, k) < alpha).unwrap_or(64)
}

/// Two-sided permutation test of the difference of means: the share of the arrangements of
/// the pooled values whose difference is at least as large as the observed one. Exact when
/// there are few arrangements, else sampled (with the observed one counted, so p > 0).
pub fn permutation_p(a: &[f64], b: &[f64], seed: u64) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 1.0;
    }
    let pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    let total: f64 = pooled.iter().sum();
    let diff = |sum_a: f64| (sum_a / n as f64 - (total - sum_a) / m as f64).abs();
    let observed = diff(a.iter().sum());
    // A tolerance so that arrangements equal to the observed one count despite rounding.
    let tol = 1e-9 * (1.0 + observed.abs());
    if binomial(n + m, n) <= EXACT_LIMIT {
        let (mut hits, mut count) = (0u64, 0u64);
        let mut idx: Vec<usize> = (0..n).collect();
        loop {
            let s: f64 = idx.iter().map(|&i| pooled[i]).sum();
            count += 1;
            if diff(s) >= observed - tol {
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
    let mut v = pooled.clone();
    let mut hits = 1u64;
    for _ in 0..SAMPLED {
        v.shuffle(&mut rng);
        if diff(v[..n].iter().sum()) >= observed - tol {
            hits += 1;
        }
    }
    hits as f64 / (SAMPLED + 1) as f64
}

/// A percentile bootstrap interval (`level`, e.g. 0.95) of the relative change of the medians,
/// `median(b) / median(a) - 1`.
pub fn bootstrap_change(a: &[f64], b: &[f64], level: f64, seed: u64) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let draw = |x: &[f64], rng: &mut StdRng| -> f64 {
        let s: Vec<f64> = (0..x.len()).map(|_| x[rng.gen_range(0..x.len())]).collect();
        median(&s)
    };
    let changes: Vec<f64> = (0..2000)
        .filter_map(|_| {
            let (ma, mb) = (draw(a, &mut rng), draw(b, &mut rng));
            (ma != 0.0).then(|| mb / ma - 1.0)
        })
        .collect();
    let tail = (1.0 - level) / 2.0;
    (quantile(&changes, tail), quantile(&changes, 1.0 - tail))
}

/// The energy statistic of splitting `x` at `tau` (Matteson & James' E-divisive, α = 1).
fn energy(x: &[f64], tau: usize) -> f64 {
    let (l, r) = x.split_at(tau);
    let (n, m) = (l.len() as f64, r.len() as f64);
    let between = l.iter().map(|a| r.iter().map(|b| (a - b).abs()).sum::<f64>()).sum::<f64>() / (n * m);
    let within = |s: &[f64]| {
        let k = s.len() as f64;
        s.iter().map(|a| s.iter().map(|b| (a - b).abs()).sum::<f64>()).sum::<f64>() / (k * k)
    };
    n * m / (n + m) * (2.0 * between - within(l) - within(r))
}

/// The best split of `x` (at least `min_size` values on each side) and its statistic.
fn best_split(x: &[f64], min_size: usize) -> Option<(usize, f64)> {
    (min_size..=x.len().saturating_sub(min_size))
        .map(|t| (t, energy(x, t)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Change points of a series (per-night values) by E-divisive: split where the energy
/// statistic is largest, keep the split if fewer than `alpha` of `permutations` shuffles of
/// the segment split as well, and recurse into both halves. Returns the indices where a new
/// regime starts, in order.
pub fn change_points(x: &[f64], min_size: usize, alpha: f64, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut found = Vec::new();
    let mut segments = vec![(0usize, x.len())];
    while let Some((start, end)) = segments.pop() {
        let seg = &x[start..end];
        if seg.len() < 2 * min_size.max(1) {
            continue;
        }
        let Some((tau, stat)) = best_split(seg, min_size.max(1)) else { continue };
        let permutations = 199;
        let mut v = seg.to_vec();
        let mut as_large = 0;
        for _ in 0..permutations {
            v.shuffle(&mut rng);
            if best_split(&v, min_size.max(1)).is_some_and(|(_, s)| s >= stat) {
                as_large += 1;
            }
        }
        if (as_large + 1) as f64 / (permutations + 1) as f64 <= alpha {
            found.push(start + tau);
            segments.push((start, start + tau));
            segments.push((start + tau, end));
        }
    }
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Complete separation reaches it exactly.
        let p = permutation_p(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0], 1);
        assert!((p - min_p(5, 5)).abs() < 1e-12, "{p}");
        // The same values on both sides: every arrangement is as extreme.
        assert_eq!(permutation_p(&[1.0; 5], &[1.0; 5], 1), 1.0);
    }

    #[test]
    fn sampled_and_exact_agree() {
        let a: Vec<f64> = (0..12).map(|i| 10.0 + (i % 5) as f64).collect();
        let b: Vec<f64> = (0..12).map(|i| 11.0 + (i % 4) as f64).collect();
        // 24 choose 12 is 2.7 million: sampled.
        let sampled = permutation_p(&a, &b, 7);
        let exact = permutation_p(&a[..6], &b[..6], 7);
        assert!(sampled > 0.0 && sampled < 1.0 && exact > 0.0 && exact <= 1.0);
        assert!(permutation_p(&a, &b, 7) == sampled, "seeded: the same answer twice");
    }

    #[test]
    fn the_bootstrap_interval_holds_the_true_change() {
        let a: Vec<f64> = (0..15).map(|i| 100.0 + i as f64).collect();
        let b: Vec<f64> = a.iter().map(|v| v * 1.2).collect();
        let (lo, hi) = bootstrap_change(&a, &b, 0.95, 3);
        assert!(lo <= 0.2 && 0.2 <= hi, "{lo} {hi}");
        assert!(lo > 0.0, "a 20 % shift of tight values is clearly positive: {lo}");
    }

    #[test]
    fn e_divisive_finds_a_step_and_nothing_in_noise() {
        let mut rng = StdRng::seed_from_u64(11);
        let noise: Vec<f64> = (0..30).map(|_| 100.0 + rng.gen_range(-3.0..3.0)).collect();
        assert!(change_points(&noise, 3, 0.05, 1).is_empty(), "{:?}", change_points(&noise, 3, 0.05, 1));
        let step: Vec<f64> =
            noise.iter().enumerate().map(|(i, v)| if i >= 18 { v + 20.0 } else { *v }).collect();
        assert_eq!(change_points(&step, 3, 0.05, 1), vec![18]);
    }
}
