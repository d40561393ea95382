//! `miglab bench ...`: figures measured on the real lab, printed, never asserted. The rooms:
//! [`fio`] (the engine against fio, same jobs), [`boot`] (QEMU start → agent hello), [`lab`]
//! (`lab up` and `lab down`), [`collector`] (the collector's memory over a long run), [`report`]
//! (a long run's report: render time and size). The criterion benches live in `benches/`.

pub mod boot;
pub mod collector;
pub mod fio;
pub mod lab;
pub mod report;

/// The median of `v` (the upper one for an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    let mut x = v.to_vec();
    x.sort_by(f64::total_cmp);
    x.get(x.len() / 2).copied().unwrap_or(0.0)
}
