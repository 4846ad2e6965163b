//! `[nat]` from the hooks of a wg-quick file: what the usual NAT setup in its `PostUp` becomes,
//! and a note for every hook command that is not carried. No I/O.

use super::hooks::{recognise, Rule};
use super::note::Note;
use super::wg_file::WgFile;
use ip_network::IpNetwork;

/// What the hooks amount to in our `[nat]` section.
pub(super) struct NatPlan {
    pub(super) masquerade: bool,
    pub(super) egress: Option<String>,
    pub(super) reach: Vec<IpNetwork>,
}

pub(super) fn nat_from_hooks(file: &WgFile, name: &str, notes: &mut Vec<Note>) -> NatPlan {
    let mut plan = NatPlan { masquerade: false, egress: None, reach: Vec::new() };
    let mut note = |line: usize, message: String| notes.push(Note { line: Some(line), message });
    for hook in &file.hooks {
        let shown = format!("`{}`", crate::keys::redact_key_like(&hook.command));
        let said = format!("{} {shown}", hook.kind);
        let undo = matches!(hook.kind, "PreDown" | "PostDown");
        match recognise(&hook.command, name) {
            Some(Rule::Forward { add: true, v6, destination }) if !undo => {
                let net = destination.unwrap_or_else(|| {
                    let any: IpNetwork = if v6 { "::/0" } else { "0.0.0.0/0" }.parse().expect("literal network");
                    any
                });
                if !plan.reach.contains(&net) {
                    plan.reach.push(net);
                }
                let scope = if destination.is_some() {
                    format!("lets peers reach {net}")
                } else {
                    format!("lets peers reach every IPv{} destination", if v6 { 6 } else { 4 })
                };
                note(
                    hook.line,
                    format!(
                        "{said} {scope}: replaced by [nat] reach = \"{net}\" (the bastion's own forward chain){}",
                        if destination.is_none() { "; narrow it to your private subnets" } else { "" }
                    ),
                );
            }
            Some(Rule::ForwardReplies { add: true }) if !undo => note(
                hook.line,
                format!("{said} lets traffic back to the peers: replaced by the bastion's forward chain, which admits replies"),
            ),
            Some(Rule::Masquerade { add: true, egress }) if !undo => {
                if plan.masquerade && plan.egress != egress {
                    note(
                        hook.line,
                        format!("{said} masquerades on another interface too: not carried, [nat] has one egress"),
                    );
                    continue;
                }
                plan.masquerade = true;
                plan.egress = egress.clone();
                let egress = match &egress {
                    Some(e) => format!("egress = \"{e}\" (from -o; \"auto\" follows the default route)"),
                    None => "egress = \"auto\"".to_string(),
                };
                note(hook.line, format!("{said}: replaced by [nat] masquerade = true, {egress}"));
            }
            Some(Rule::Forwarding) => note(hook.line, format!("{said}: not needed, the bastion turns forwarding on itself")),
            Some(Rule::KeyFile(path)) => note(
                hook.line,
                format!("{said}: carried as private_key_file = \"{path}\""),
            ),
            Some(rule) if undo && !rule.adds() => note(
                hook.line,
                format!("{said}: not needed, the bastion removes its own rules when it stops"),
            ),
            _ => note(hook.line, format!("{said} not carried: not a rule the bastion knows how to replace")),
        }
    }
    if !plan.masquerade {
        notes.push(Note {
            line: None,
            message: "no MASQUERADE rule in PostUp: [nat] masquerade = false, so tunnel addresses leave \
                      unchanged and the VPC needs routes back to them"
                .into(),
        });
    }
    if plan.reach.is_empty() {
        notes.push(Note {
            line: None,
            message: "no FORWARD rule from the tunnel in PostUp: [nat] reach is empty, so peers reach \
                      nothing until you list their destinations there"
                .into(),
        });
    }
    plan
}
