//! How a fio-style job chooses what to do next: block sizes (`bs`, `bsrange`, `bssplit`, a
//! separate value for writes), where a random op lands (`random_distribution`: uniform with or
//! without fio's random map, zipf, pareto, normal, zoned), and how ops are paced (`rate` with
//! `rate_process`). Pure and seedable, so each choice is unit-tested against fio's definition.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A byte count written the fio way: `4096`, `4k`, `1M`, `2g` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a size: write bytes or a number with k, m, g or t (powers of 1024), e.g. 4k")]
pub struct BadSize(pub String);

impl FromStr for Size {
    type Err = BadSize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_suffix("ib").or_else(|| t.strip_suffix('b')).unwrap_or(&t);
        let (num, mult) = match t.chars().last() {
            Some('k') => (&t[..t.len() - 1], 1u64 << 10),
            Some('m') => (&t[..t.len() - 1], 1 << 20),
            Some('g') => (&t[..t.len() - 1], 1 << 30),
            Some('t') => (&t[..t.len() - 1], 1 << 40),
            _ => (t, 1),
        };
        let n: u64 = num.trim().parse().map_err(|_| BadSize(s.into()))?;
        n.checked_mul(mult).map(Size).ok_or_else(|| BadSize(s.into()))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, shift) in [("g", 30), ("m", 20), ("k", 10)] {
            if n >= 1 << shift && n % (1 << shift) == 0 {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Block sizes of one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockSizes {
    /// Every op this size (`bs=4k`).
    Fixed(Size),
    /// A size between `min` and `max` in multiples of `min`, uniformly (`bsrange=4k-16k`; fio
    /// issues multiples of the minimum unless `bs_unaligned`).
    Range { min: Size, max: Size },
    /// Sizes with weights in percent (`bssplit=4k/10:64k/50:32k/40`); weights left blank share
    /// what the others leave, as in fio.
    Split(Vec<(Size, u32)>),
}

impl BlockSizes {
    /// Every size an op can have.
    pub fn sizes(&self) -> Vec<u64> {
        match self {
            BlockSizes::Fixed(s) => vec![s.0],
            BlockSizes::Range { min, max } => {
                let m = min.0.max(1);
                (1..=max.0 / m).map(|k| k * m).filter(|s| *s >= min.0).collect()
            }
            BlockSizes::Split(v) => v.iter().map(|(s, _)| s.0).collect(),
        }
    }

    pub fn min(&self) -> u64 {
        self.sizes().into_iter().min().unwrap_or(0)
    }

    pub fn max(&self) -> u64 {
        self.sizes().into_iter().max().unwrap_or(0)
    }

    /// One size, drawn with `r` (a uniform 64-bit random number).
    pub fn pick(&self, r: u64) -> u64 {
        match self {
            BlockSizes::Fixed(s) => s.0,
            // One of min, 2·min, ... up to max, without building the list on every op.
            BlockSizes::Range { min, max } => {
                let m = min.0.max(1);
                (r % (max.0 / m).max(1) + 1) * m
            }
            BlockSizes::Split(v) => {
                let total: u64 = v.iter().map(|(_, w)| u64::from(*w)).sum::<u64>().max(1);
                let mut x = r % total;
                for (s, w) in v {
                    if x < u64::from(*w) {
                        return s.0;
                    }
                    x -= u64::from(*w);
                }
                v.last().map(|(s, _)| s.0).unwrap_or(0)
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            BlockSizes::Fixed(s) => s.to_string(),
            BlockSizes::Range { min, max } => format!("{min}-{max}"),
            BlockSizes::Split(v) => v.iter().map(|(s, w)| format!("{s}/{w}")).collect::<Vec<_>>().join(":"),
        }
    }
}

/// Greatest common divisor.
pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// fio's `random_distribution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Uniform (fio's default); with the random map every block once per pass.
    #[default]
    Random,
    /// zipf with exponent θ.
    Zipf(f64),
    /// pareto with power h.
    Pareto(f64),
    /// normal (fio's `normal` or `gauss`) with σ in percent of the range.
    Normal(f64),
    /// `zoned`: (percent of accesses, percent of the range), in order.
    Zoned(Vec<(u32, u32)>),
}

impl Distribution {
    /// Whether every block is visited once per pass (fio's random map applies to uniform only).
    pub fn uniform(&self) -> bool {
        matches!(self, Distribution::Random)
    }

    pub fn describe(&self) -> String {
        match self {
            Distribution::Random => "uniform".into(),
            Distribution::Zipf(t) => format!("zipf:{t}"),
            Distribution::Pareto(h) => format!("pareto:{h}"),
            Distribution::Normal(s) => format!("normal:{s}"),
            Distribution::Zoned(z) => {
                format!("zoned:{}", z.iter().map(|(a, r)| format!("{a}/{r}")).collect::<Vec<_>>().join(":"))
            }
        }
    }

    /// Checks what fio checks: θ in (0, 1) ∪ (1, ∞), h in (0, 1), σ ≥ 0, zones summing to 100.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Distribution::Random => Ok(()),
            Distribution::Zipf(t) if t.is_finite() && *t > 0.0 && *t != 1.0 => Ok(()),
            Distribution::Zipf(t) => Err(format!("zipf theta {t}: must be more than 0 and not 1")),
            Distribution::Pareto(h) if *h > 0.0 && *h < 1.0 => Ok(()),
            Distribution::Pareto(h) => Err(format!("pareto h {h}: must lie between 0 and 1")),
            Distribution::Normal(s) if s.is_finite() && *s >= 0.0 => Ok(()),
            Distribution::Normal(s) => Err(format!("normal deviation {s}: must be 0 or more")),
            Distribution::Zoned(z) => {
                let (a, r) = z.iter().fold((0, 0), |(a, r), (x, y)| (a + x, r + y));
                if a == 100 && r == 100 {
                    Ok(())
                } else {
                    Err(format!("zoned: accesses add up to {a}% and ranges to {r}%; both must be 100"))
                }
            }
        }
    }
}

/// fio's multiplicative hash (`__hash_u64`): scatters a rank over the range so that the hot
/// blocks are not all at the start of the file.
fn hash_u64(v: u64) -> u64 {
    v.wrapping_mul(0x61C8_8646_80B5_83EB)
}

/// Draws block numbers in `0..n` from a distribution, as fio's `zipf_next`, `pareto_next` and
/// `gauss_next` do (zipf's zeta sum capped at 10 M terms, as fio caps it).
#[derive(Debug, Clone)]
pub struct Sampler {
    dist: Distribution,
    n: u64,
    zetan: f64,
    zeta2: f64,
    /// fio's random offset: where rank 0 lands.
    off: u64,
}

impl Sampler {
    pub fn new(dist: &Distribution, n: u64, off: u64) -> Self {
        let n = n.max(1);
        let (mut zetan, mut zeta2) = (0.0, 0.0);
        if let Distribution::Zipf(t) = dist {
            zeta2 = 1.0 + 0.5f64.powf(*t);
            zetan = (0..n.min(10_000_000)).map(|i| (1.0 / (i + 1) as f64).powf(*t)).sum();
        }
        Self { dist: dist.clone(), n, zetan, zeta2, off }
    }

    /// The next block number, from `u` uniform in [0, 1) (and more uniform draws for normal).
    pub fn next(&self, rng: &mut impl FnMut() -> u64) -> u64 {
        let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        let n = self.n;
        let v = match &self.dist {
            Distribution::Random => return rng() % n,
            Distribution::Zipf(t) => {
                let alpha = 1.0 / (1.0 - t);
                let eta = (1.0 - (2.0 / n as f64).powf(1.0 - t)) / (1.0 - self.zeta2 / self.zetan);
                let u = unit(rng());
                let z = u * self.zetan;
                let val = if z < 1.0 {
                    1
                } else if z < 1.0 + 0.5f64.powf(*t) {
                    2
                } else {
                    1 + (n as f64 * (eta * u - eta + 1.0).powf(alpha)) as u64
                };
                hash_u64(val - 1)
            }
            Distribution::Pareto(h) => {
                let pow = h.ln() / (1.0 - h).ln();
                hash_u64(((n - 1) as f64 * unit(rng()).powf(pow)) as u64)
            }
            Distribution::Normal(dev) => {
                // The mean of 12 uniform draws, spread by σ, as fio's gauss_next.
                let sum: u64 = (0..12).map(|_| rng() % (n + 1)).sum::<u64>().div_ceil(12);
                let sd = ((n as f64 * dev / 100.0).ceil() as u64).min(n / 2);
                let mut d = if sd > 0 { (sd as f64 * unit(rng())) as i64 - (sd / 2) as i64 } else { 0 };
                while sum as i64 + d >= n as i64 {
                    d /= 2;
                }
                hash_u64((sum as i64 + d).max(0) as u64)
            }
            Distribution::Zoned(zones) => {
                // A zone by its share of accesses, then a uniform block inside its range.
                let mut x = rng() % 100;
                let mut start = 0u64;
                for (access, range) in zones {
                    let len = (n * u64::from(*range) / 100).max(1);
                    if x < u64::from(*access) {
                        return (start + rng() % len).min(n - 1);
                    }
                    x -= u64::from(*access);
                    start += len;
                }
                return rng() % n;
            }
        };
        v.wrapping_add(self.off) % n
    }
}

/// fio's `rate_process`: how paced ops are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateProcess {
    /// Evenly.
    #[default]
    Linear,
    /// Exponentially distributed gaps with the same mean (a Poisson process).
    Poisson,
}

impl RateProcess {
    /// The gap before the next op, given the mean gap and `u` uniform in (0, 1].
    pub fn gap(self, mean_s: f64, u: f64) -> f64 {
        match self {
            RateProcess::Linear => mean_s,
            RateProcess::Poisson => -mean_s * u.max(f64::MIN_POSITIVE).ln(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn histogram(d: &Distribution, n: u64, draws: usize) -> Vec<u64> {
        let s = Sampler::new(d, n, 0);
        let mut r = rng(3);
        let mut h = vec![0u64; n as usize];
        for _ in 0..draws {
            h[s.next(&mut r) as usize] += 1;
        }
        h
    }

    /// Share of all draws that the hottest `k` blocks got.
    fn top_share(mut h: Vec<u64>, k: usize) -> f64 {
        let total: u64 = h.iter().sum();
        h.sort_unstable_by(|a, b| b.cmp(a));
        h[..k].iter().sum::<u64>() as f64 / total as f64
    }

    /// zipf:θ puts weight 1/rank^θ on each rank: with θ = 1.2 over 1000 blocks the hottest
    /// block gets 1/ζ(1000) ≈ 22 % of the draws; uniform gives each 0.1 %.
    #[test]
    fn zipf_concentrates_as_its_theta_says() {
        let h = histogram(&Distribution::Zipf(1.2), 1000, 200_000);
        let zeta: f64 = (1..=1000).map(|i| 1.0 / (i as f64).powf(1.2)).sum();
        let hot = top_share(h.clone(), 1);
        assert!((hot - 1.0 / zeta).abs() < 0.02, "hottest {hot}, expected {}", 1.0 / zeta);
        assert!(top_share(h, 10) > 0.4);
        let u = histogram(&Distribution::Random, 1000, 200_000);
        assert!(top_share(u, 10) < 0.02);
        // fio scatters ranks with a hash: the ten hottest blocks are not the first ten.
        let h = histogram(&Distribution::Zipf(1.2), 1000, 10_000);
        let mut by_heat: Vec<usize> = (0..1000).collect();
        by_heat.sort_by_key(|i| std::cmp::Reverse(h[*i]));
        assert!(by_heat[..10].iter().any(|i| *i >= 10), "{:?}", &by_heat[..10]);
    }

    /// pareto:h — the "80/20 rule" at h = 0.2 as fio's HOWTO says (a fifth of the blocks get
    /// most of the accesses).
    #[test]
    fn pareto_and_normal_and_zoned_shape_the_accesses() {
        let h = histogram(&Distribution::Pareto(0.2), 1000, 100_000);
        assert!(top_share(h, 200) > 0.75);
        let h = histogram(&Distribution::Normal(5.0), 1000, 100_000);
        // σ = 5 % of 1000 blocks: most draws within ±2σ of the mean, so ~200 blocks get ~95 %.
        assert!(top_share(h, 200) > 0.9, "normal");
        // 50 % of accesses to the first 5 % of the range, 30 % to the next 15 %, 20 % to the rest.
        let z = Distribution::Zoned(vec![(50, 5), (30, 15), (20, 80)]);
        assert!(z.validate().is_ok());
        let h = histogram(&z, 1000, 100_000);
        let first: u64 = h[..50].iter().sum();
        assert!((first as f64 / 100_000.0 - 0.5).abs() < 0.02, "{first}");
        assert!(Distribution::Zoned(vec![(50, 5)]).validate().is_err());
        assert!(Distribution::Zipf(1.0).validate().is_err());
        assert!(Distribution::Pareto(1.5).validate().is_err());
    }

    #[test]
    fn block_sizes_follow_their_weights() {
        let s = BlockSizes::Split(vec![(Size(4096), 10), (Size(65536), 50), (Size(32768), 40)]);
        let mut r = rng(5);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..100_000 {
            *counts.entry(s.pick(r())).or_insert(0u64) += 1;
        }
        let share = |k: u64| counts[&k] as f64 / 100_000.0;
        assert!((share(4096) - 0.1).abs() < 0.01 && (share(65536) - 0.5).abs() < 0.01);
        assert_eq!((s.min(), s.max()), (4096, 65536));
        let r2 = BlockSizes::Range { min: Size(4096), max: Size(16384) };
        assert_eq!(r2.sizes(), vec![4096, 8192, 12288, 16384], "multiples of the minimum");
        assert_eq!(gcd(4096, 65536), 4096);
        assert_eq!(gcd(512, 1536), 512);
    }

    #[test]
    fn poisson_gaps_keep_the_mean() {
        let mut r = rng(9);
        let n = 100_000;
        let sum: f64 = (0..n)
            .map(|_| RateProcess::Poisson.gap(0.01, ((r() >> 11) as f64 + 1.0) / (1u64 << 53) as f64))
            .sum();
        assert!((sum / n as f64 - 0.01).abs() < 0.0005, "{}", sum / n as f64);
        assert_eq!(RateProcess::Linear.gap(0.01, 0.5), 0.01);
    }
}
