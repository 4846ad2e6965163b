//! Our nftables table as a guard: installed when made, removed when dropped — so a start that
//! fails half-way, a drain, or a panic never leaves the table behind. Also puts the table back
//! when something outside removed it.

use crate::log;
use crate::nat::{self, NatPlan};

pub struct InstalledNat {
    plan: NatPlan,
}

impl InstalledNat {
    pub fn install(plan: NatPlan) -> Result<InstalledNat, super::StartError> {
        nat::install(&plan).map_err(|source| super::StartError::InstallNat { source })?;
        log!(
            "nat: table inet {} installed (egress {}, masquerade {}, {} allow rules)",
            nat::TABLE,
            plan.egress,
            if plan.masquerade { "on" } else { "off" },
            plan.allow.len()
        );
        Ok(InstalledNat { plan })
    }

    /// What is wrong with our table in the kernel now (read back over netlink), if anything.
    pub fn problem(&self) -> Option<String> {
        match nat::table_present() {
            Ok(true) => None,
            Ok(false) => Some(format!("table inet {} was removed from outside", nat::TABLE)),
            Err(e) => Some(format!("cannot read table inet {}: {e}", nat::TABLE)),
        }
    }

    /// Puts the table back (one atomic batch, as at start) and logs what happened.
    pub fn reinstall(&self) {
        match nat::install(&self.plan) {
            Ok(()) => log!("nat: table inet {} reinstalled", nat::TABLE),
            Err(e) => log!("nat: cannot reinstall table inet {}: {e}", nat::TABLE),
        }
    }
}

impl Drop for InstalledNat {
    fn drop(&mut self) {
        match nat::remove() {
            Ok(()) => log!("nat: table inet {} removed", nat::TABLE),
            Err(e) => log!("nat: cannot remove table inet {}: {e}", nat::TABLE),
        }
    }
}
