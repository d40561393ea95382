//! Choosing the accelerator. `/dev/kvm` alone does not mean KVM can run a stock guest: on a
//! PVM host (KVM without vmx/svm in the CPU flags) a normal kernel dies in the instruction
//! emulator. Only hardware virtualization counts; everything else runs under TCG.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The choice and why it was made, for doctor and for results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// Decides from the CPU flags in `/proc/cpuinfo` and whether `/dev/kvm` can be opened.
pub fn choose(cpuinfo: &str, kvm_openable: bool) -> AccelChoice {
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    let hw = flags.iter().find(|f| **f == "vmx" || **f == "svm");
    match (kvm_openable, hw) {
        (true, Some(flag)) => {
            AccelChoice { accel: Accel::Kvm, reason: format!("/dev/kvm usable and the CPU has {flag}") }
        }
        (true, None) => AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm exists but the CPU has neither vmx nor svm (a PVM host): a stock guest \
                     kernel cannot run under it"
                .into(),
        },
        (false, _) => AccelChoice { accel: Accel::Tcg, reason: "/dev/kvm cannot be opened".into() },
    }
}

/// The choice for this machine.
pub fn detect() -> AccelChoice {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    choose(&cpuinfo, kvm)
}

/// The accelerator to use: chosen from the machine, or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccelWish {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl AccelWish {
    pub fn resolve(self) -> Accel {
        match self {
            AccelWish::Auto => detect().accel,
            AccelWish::Kvm => Accel::Kvm,
            AccelWish::Tcg => Accel::Tcg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae vmx ept sse2\n";
    const AMD: &str = "processor\t: 0\nflags\t\t: fpu svm npt sse2\n";
    // Captured on a development machine: KVM-PVM, no hardware virtualization flag.
    const PVM: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr pae \
                       mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall \
                       nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq \
                       pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c \
                       rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms invpcid \
                       avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt\n";

    #[test]
    fn hardware_virtualization_with_kvm_chooses_kvm() {
        assert_eq!(choose(INTEL, true).accel, Accel::Kvm);
        assert_eq!(choose(AMD, true).accel, Accel::Kvm);
    }

    #[test]
    fn a_pvm_host_chooses_tcg_and_says_why() {
        let c = choose(PVM, true);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("PVM"));
    }

    #[test]
    fn no_kvm_device_chooses_tcg() {
        assert_eq!(choose(INTEL, false).accel, Accel::Tcg);
    }
}
