//! The commands the scheduler reads from `BULKHEAD_CMD`, and what becomes of each.

use bulkhead_schemas::subjects;

use crate::aside::Aside;

use super::SchedulerCore;
use super::admission::InPlan;
use super::cluster::Overlay;
use super::plan::Plan;

/// A command read from `BULKHEAD_CMD`.
#[derive(Clone, Debug)]
pub struct Command {
    pub cmd_seq: u64,
    /// Stream timestamp of the command, Unix milliseconds.
    pub stored_ms: u64,
    pub kind: CommandKind,
    /// The tenant whose subject carried it (`bulkhead.cmd.<tenant>.…`); empty for the
    /// operators' commands (`bulkhead.ctl.…`).
    pub tenant: String,
    pub payload: Vec<u8>,
    /// W3C trace context of the span handling this command.
    pub traceparent: Option<String>,
    /// The submitter's signature, when it signed (`Bulkhead-Key`, `Bulkhead-Sig`).
    pub signature: Option<CommandSig>,
}

/// A command's signature as its headers carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSig {
    /// The signer's public nkey.
    pub key: String,
    /// Hex ed25519 signature (see `crate::signing::sign_command`).
    pub sig: String,
}

impl Command {
    /// The command stored on `subject` at `cmd_seq`. A subject that carries no command is
    /// set aside: it is never taken for a submission.
    pub fn read(
        subject: &str,
        cmd_seq: u64,
        stored_ms: u64,
        payload: Vec<u8>,
        traceparent: Option<String>,
        signature: Option<CommandSig>,
    ) -> Result<Command, Aside> {
        let (kind, tenant) = CommandKind::of_subject(subject).ok_or_else(|| {
            let why = format!("no command is published on {subject}");
            Aside::new(cmd_seq, subject, "unknown_command", why)
        })?;
        Ok(Command {
            cmd_seq,
            stored_ms,
            kind,
            tenant: tenant.to_owned(),
            payload,
            traceparent,
            signature,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Submit,
    Stop,
    Scale,
    Drain,
    Undrain,
}

impl CommandKind {
    /// The kind of a command by its subject, and the tenant it names (none for an
    /// operator's command).
    pub fn of_subject(subject: &str) -> Option<(CommandKind, &str)> {
        match subject {
            subjects::CTL_DRAIN => return Some((CommandKind::Drain, "")),
            subjects::CTL_UNDRAIN => return Some((CommandKind::Undrain, "")),
            _ => {}
        }
        let (tenant, kind) = subjects::parse_cmd(subject)?;
        let kind = match kind {
            "submit" => CommandKind::Submit,
            "stop" => CommandKind::Stop,
            "scale" => CommandKind::Scale,
            _ => return None,
        };
        Some((kind, tenant))
    }

    /// The subject a command of this kind by `tenant` is published on.
    pub fn subject(self, tenant: &str) -> String {
        match self {
            CommandKind::Drain => subjects::CTL_DRAIN.to_owned(),
            CommandKind::Undrain => subjects::CTL_UNDRAIN.to_owned(),
            _ => subjects::cmd(tenant, self.as_str()),
        }
    }

    /// The last token of a tenant command's subject.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Submit => "submit",
            CommandKind::Stop => "stop",
            CommandKind::Scale => "scale",
            CommandKind::Drain => "drain",
            CommandKind::Undrain => "undrain",
        }
    }
}

/// What to do with a command message once its plan is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Redeliver later, for this reason (the log moved under us, the append failed, it
    /// waits for what this round writes): what is recorded if its last delivery fails too.
    Retry(String),
}

impl SchedulerCore {
    /// Decides what a batch of commands does (each command in its own file: admission,
    /// stop, scale, drain).
    pub fn decide(&mut self, commands: &[Command]) -> Plan {
        let mut plan = Plan::default();
        let mut overlay = Overlay::new();
        let mut in_plan = InPlan::new();
        for cmd in commands {
            match cmd.kind {
                CommandKind::Submit => {
                    self.decide_submit(cmd, &mut plan, &mut overlay, &mut in_plan)
                }
                CommandKind::Stop => self.decide_stop(cmd, &mut plan, &in_plan),
                CommandKind::Scale => self.decide_scale(cmd, &mut plan, &mut overlay),
                CommandKind::Drain => self.decide_drain(cmd, &mut plan),
                CommandKind::Undrain => self.decide_undrain(cmd, &mut plan),
            }
        }
        plan
    }
}
