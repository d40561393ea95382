//! VM instances in a site's ledger. The site stores them opaquely (it knows nothing of VMs);
//! these functions give them their type back.

use super::spec::{InstanceId, VmRecord};
use super::VmError;
use crate::topology::Site;

/// Records `r` (replacing an earlier record of the same instance).
pub fn record(site: &dyn Site, r: &VmRecord) -> Result<(), VmError> {
    let value = serde_json::to_value(r).map_err(|e| VmError::Io {
        what: format!("encode the record of {}", r.id),
        source: std::io::Error::other(e),
    })?;
    Ok(site.record_instance(&r.id.to_string(), value)?)
}

/// Every VM instance the site runs (records that do not parse are not VMs of this miglab).
pub fn all(site: &dyn Site) -> Vec<VmRecord> {
    site.instances().into_iter().filter_map(|i| serde_json::from_value(i.record).ok()).collect()
}

/// The instances of VM `vm`.
pub fn of_vm(site: &dyn Site, vm: &str) -> Vec<VmRecord> {
    all(site).into_iter().filter(|r| r.spec.name == vm).collect()
}

/// The instance that runs VM `vm`'s guest now: the newest that is not waiting for a migration.
pub fn current(site: &dyn Site, vm: &str) -> Option<VmRecord> {
    of_vm(site, vm).into_iter().filter(|r| !r.incoming).max_by_key(|r| r.id.generation)
}

/// The generation the next instance of `vm` gets: past every instance recorded and every
/// instance directory left (a failed migration's destination is forgotten, but its logs stay
/// and must not be overwritten by the next try).
pub fn next_generation(site: &dyn Site, vm: &str) -> u32 {
    let recorded = of_vm(site, vm).iter().map(|r| r.id.generation + 1).max().unwrap_or(0);
    let on_disk = std::fs::read_dir(site.instances_dir().join(vm))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| InstanceId::generation_of_dir(&e.path()))
        .map(|g| g + 1)
        .max()
        .unwrap_or(0);
    recorded.max(on_disk)
}

/// Forgets an instance whose processes are gone.
pub fn forget(site: &dyn Site, id: &InstanceId) -> Result<(), VmError> {
    Ok(site.forget_instance(&id.to_string())?)
}
