//! Our nftables table as a guard: installed when made, removed when dropped — so a start that
//! fails half-way, a drain, or a panic never leaves the table behind. Also puts the table back
//! when something outside removed it.

use crate::log;
use crate::nat::{self, NatPlan};

pub struct InstalledNat {
    plan: NatPlan,
}

impl InstalledNat {
    pub fn install(plan: NatPlan) -> Result<InstalledNat, String> {
        nat::install(&plan).map_err(|e| format!("install nftables table inet {}: {e}", nat::TABLE))?;
        log!(
            "nat: table inet {} installed (egress {}, masquerade {}, {} allow rules)",
            nat::TABLE,
            plan.egress,
            if plan.masquerade { "on" } else { "off" },
            plan.allow.len()
        );
        Ok(InstalledNat { plan })
    }

    /// Checks that the table is in the kernel; reinstalls it when it is not. Returns what was
    /// wrong (for the self-test line), or None when the table was there.
    pub fn repair(&self) -> Option<String> {
        match nat::table_present() {
            Ok(true) => None,
            Ok(false) => {
                let problem = format!("table inet {} was removed from outside", nat::TABLE);
                match nat::install(&self.plan) {
                    Ok(()) => log!("nat: table inet {} was removed from outside; reinstalled it", nat::TABLE),
                    Err(e) => log!("nat: table inet {} was removed from outside; cannot reinstall it: {e}", nat::TABLE),
                }
                Some(problem)
            }
            Err(e) => Some(format!("cannot read table inet {}: {e}", nat::TABLE)),
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
