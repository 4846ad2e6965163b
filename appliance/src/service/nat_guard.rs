//! Our nftables table as a guard: installed when made, removed when dropped — so a start that
//! fails half-way, a drain, or a panic never leaves the table behind. Also puts the table back
//! when something outside removed it.

use crate::log;
use crate::nat::{self, NatPlan};
use std::sync::Mutex;

pub struct InstalledNat {
    /// What is installed now (a reload replaces it).
    plan: Mutex<NatPlan>,
}

impl InstalledNat {
    pub fn install(plan: NatPlan) -> Result<InstalledNat, super::StartError> {
        nat::install(&plan)
            .map_err(|source| super::StartError::InstallNat { table: nat::table_name(&plan.tunnel), source })?;
        log!(
            "nat: table inet {} installed (egress {}, masquerade {}, {} allow rules)",
            nat::table_name(&plan.tunnel),
            plan.egress,
            if plan.masquerade { "on" } else { "off" },
            plan.allow.len()
        );
        Ok(InstalledNat { plan: Mutex::new(plan) })
    }

    /// Installs `plan` in place of the current one when it differs (one atomic batch: no moment
    /// without a table). Ok(false) when it is the same plan. On failure the old table stays.
    pub fn replace(&self, plan: NatPlan) -> Result<bool, nat::NatError> {
        let mut current = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if *current == plan {
            return Ok(false);
        }
        nat::install(&plan)?;
        *current = plan;
        Ok(true)
    }

    /// What is wrong with our table in the kernel now (read back over netlink), if anything.
    pub fn problem(&self) -> Option<String> {
        let tunnel = self.tunnel();
        match nat::table_present(&tunnel) {
            Ok(true) => None,
            Ok(false) => Some(format!("table inet {} was removed from outside", nat::table_name(&tunnel))),
            Err(e) => Some(format!("cannot read table inet {}: {e}", nat::table_name(&tunnel))),
        }
    }

    /// The tunnel whose table this is (a reload never changes it: a restart-only field).
    pub fn tunnel(&self) -> String {
        self.plan.lock().unwrap_or_else(|e| e.into_inner()).tunnel.clone()
    }

    /// Puts the table back (one atomic batch, as at start) and logs what happened.
    pub fn reinstall(&self) {
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        match nat::install(&plan) {
            Ok(()) => log!("nat: table inet {} reinstalled", nat::table_name(&plan.tunnel)),
            Err(e) => log!("nat: cannot reinstall table inet {}: {e}", nat::table_name(&plan.tunnel)),
        }
    }
}

impl Drop for InstalledNat {
    fn drop(&mut self) {
        let tunnel = self.tunnel();
        match nat::remove(&tunnel) {
            Ok(()) => log!("nat: table inet {} removed", nat::table_name(&tunnel)),
            Err(e) => log!("nat: cannot remove table inet {}: {e}", nat::table_name(&tunnel)),
        }
    }
}
