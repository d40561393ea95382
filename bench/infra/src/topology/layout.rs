//! Names, addresses and ports of one lab, all derived from the lab's name so that two labs on
//! one machine never collide.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("lab name '{0}' is not valid: use 1 to 16 characters from a-z, 0-9 and '-'")]
    BadName(String),
    #[error(
        "subnet '{0}' is not valid: give an IPv4 network with a prefix of /16 to /28, e.g. 10.77.3.0/24"
    )]
    BadSubnet(String),
    #[error("lab needs {0} client hosts, but only 1 to 8 are supported")]
    BadClientCount(usize),
}

/// One client host of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientLayout {
    /// `c1`, `c2`, ...
    pub name: String,
    /// The network namespace, under /run/netns.
    pub netns: String,
    /// The root-namespace end of the host's veth (the other end is `eth0` inside).
    pub veth: String,
    pub addr: Ipv4Addr,
    /// Where CephFS is mounted for this host.
    pub mount: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabLayout {
    pub name: String,
    pub dir: PathBuf,
    pub slot: u16,
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub bridge: String,
    /// The bridge's address: every Ceph daemon listens here.
    pub gateway: Ipv4Addr,
    /// msgr2 port of the monitor; msgr1 is the next one.
    pub mon_port: u16,
    /// Ports the other daemons may bind (`ms_bind_port_min..=max`).
    pub port_min: u16,
    pub port_max: u16,
    pub clients: Vec<ClientLayout>,
    /// Table for partitions (bridge family).
    pub nft_table: String,
}

/// Slots 0 (`default`) to 250.
const SLOTS: u16 = 251;
/// The last slot a named lab may take.
pub const LAST_SLOT: u16 = SLOTS - 1;
/// Lab ports sit below Linux's default ephemeral range (32768–60999): there an outgoing
/// connection of any process could hold a daemon's port when the lab starts.
pub const PORT_BASE: u16 = 20000;
pub const PORTS_PER_LAB: u16 = 50;
/// The last port any lab may use (32549).
pub const PORT_LAST: u16 = PORT_BASE + SLOTS * PORTS_PER_LAB - 1;
const _: () = assert!(PORT_LAST < 32768);

/// Slots map a lab name to a subnet, a bridge and a port range. `default` is slot 0, the
/// others hash into 1..=250: the slot a lab prefers; `lab up` takes the next free one when
/// another lab holds it (`topology::slots`), and the lab's recorded layout keeps it.
pub fn slot(name: &str) -> u16 {
    if name == "default" {
        return 0;
    }
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    1 + (h % (SLOTS as u64 - 1)) as u16
}

pub fn validate_name(name: &str) -> Result<(), LayoutError> {
    let ok = (1..=16).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(LayoutError::BadName(name.to_string()))
    }
}

pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), LayoutError> {
    let bad = || LayoutError::BadSubnet(s.to_string());
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(16..=28).contains(&prefix) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - prefix);
    Ok((Ipv4Addr::from(u32::from(addr) & mask), prefix))
}

impl LabLayout {
    /// The layout of lab `name` under `root`, on `subnet` if given (else 10.77.<slot>.0/24).
    pub fn new(name: &str, root: &Path, subnet: Option<&str>, clients: usize) -> Result<Self, LayoutError> {
        Self::on_slot(name, root, subnet, clients, slot(name))
    }

    /// The same layout on slot `slot` (one `lab up` claimed because the preferred was held).
    pub fn on_slot(
        name: &str,
        root: &Path,
        subnet: Option<&str>,
        clients: usize,
        slot: u16,
    ) -> Result<Self, LayoutError> {
        validate_name(name)?;
        if !(1..=8).contains(&clients) {
            return Err(LayoutError::BadClientCount(clients));
        }
        let (network, prefix) = match subnet {
            Some(s) => parse_subnet(s)?,
            None => (Ipv4Addr::new(10, 77, slot as u8, 0), 24),
        };
        let net = u32::from(network);
        let dir = root.join(name);
        let mon_port = PORT_BASE + slot * PORTS_PER_LAB;
        let clients = (1..=clients)
            .map(|i| ClientLayout {
                name: format!("c{i}"),
                netns: format!("miglab-{name}-c{i}"),
                veth: format!("ml{slot}c{i}"),
                addr: Ipv4Addr::from(net + 10 + i as u32),
                mount: dir.join("mnt").join(format!("c{i}")),
            })
            .collect();
        Ok(Self {
            name: name.to_string(),
            slot,
            network,
            prefix,
            bridge: format!("mlbr{slot}"),
            gateway: Ipv4Addr::from(net + 1),
            mon_port,
            port_min: mon_port + 2,
            port_max: mon_port + PORTS_PER_LAB - 1,
            clients,
            nft_table: format!("miglab_{}", name.replace('-', "_")),
            dir,
        })
    }

    pub fn client(&self, name: &str) -> Option<&ClientLayout> {
        self.clients.iter().find(|c| c.name == name)
    }

    /// `mon_host` as Ceph wants it: msgr2 and msgr1 addresses of the one monitor.
    pub fn mon_host(&self) -> String {
        format!("[v2:{g}:{p2},v1:{g}:{p1}]", g = self.gateway, p2 = self.mon_port, p1 = self.mon_port + 1)
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn ceph_dir(&self) -> PathBuf {
        self.dir.join("ceph")
    }
    pub fn conf(&self) -> PathBuf {
        self.dir.join("ceph/ceph.conf")
    }
    pub fn keyring(&self) -> PathBuf {
        self.dir.join("ceph/keyring")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("ceph/run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lab_matches_the_design() {
        let l = LabLayout::new("default", Path::new("/var/lib/miglab"), None, 2).expect("layout");
        assert_eq!(l.bridge, "mlbr0");
        assert_eq!(l.gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(l.clients[0].addr, Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(l.clients[1].addr, Ipv4Addr::new(10, 77, 0, 12));
        assert_eq!(l.clients[1].netns, "miglab-default-c2");
        assert_eq!(l.mon_host(), "[v2:10.77.0.1:20000,v1:10.77.0.1:20001]");
        assert_eq!(l.clients[0].mount, Path::new("/var/lib/miglab/default/mnt/c1"));
    }

    #[test]
    fn two_labs_get_different_names_subnets_and_ports() {
        let a = LabLayout::new("alpha", Path::new("/x"), None, 2).expect("a");
        let b = LabLayout::new("beta", Path::new("/x"), None, 2).expect("b");
        assert_ne!(a.slot, b.slot);
        assert_ne!(a.bridge, b.bridge);
        assert_ne!(a.network, b.network);
        assert!(a.port_max < b.mon_port || b.port_max < a.mon_port);
        assert_ne!(a.clients[0].veth, b.clients[0].veth);
        // Interface names must fit IFNAMSIZ.
        for l in [&a, &b] {
            assert!(l.bridge.len() <= 15 && l.clients.iter().all(|c| c.veth.len() <= 15));
        }
    }

    #[test]
    fn a_configured_subnet_is_used_and_normalized() {
        let l = LabLayout::new("x", Path::new("/x"), Some("192.168.50.77/24"), 3).expect("layout");
        assert_eq!(l.network, Ipv4Addr::new(192, 168, 50, 0));
        assert_eq!(l.gateway, Ipv4Addr::new(192, 168, 50, 1));
        assert_eq!(l.clients[2].addr, Ipv4Addr::new(192, 168, 50, 13));
    }

    #[test]
    fn bad_names_and_subnets_are_refused_with_the_fix() {
        for bad in ["", "Default", "a b", "-x", "waytoolongforanetnsname"] {
            let e = LabLayout::new(bad, Path::new("/x"), None, 2).expect_err(bad);
            assert!(e.to_string().contains("a-z"), "{e}");
        }
        for bad in ["10.0.0.0", "10.0.0.0/8", "10.0.0.0/30", "x/24"] {
            assert!(LabLayout::new("x", Path::new("/x"), Some(bad), 2).is_err(), "{bad}");
        }
        assert!(LabLayout::new("x", Path::new("/x"), None, 0).is_err());
    }
}
