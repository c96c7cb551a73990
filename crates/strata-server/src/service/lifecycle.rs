//! The experiment lifecycle: its actions and the one transition table.
//!
//! Which action leads from which status to which, under which precondition,
//! is written down once, in [`TRANSITIONS`]; the legality of an action and
//! the `allowed` next states of a refusal are both read from it, so the two
//! cannot disagree.

use crate::auth::Perm;
use crate::model::Status;

/// A lifecycle action on an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Draft → submitted.
    Submit,
    /// Submitted → approved, when approval is required; never by the author.
    Approve,
    /// Approved (or submitted, when no approval is required) → running.
    Start,
    /// Raise the ramp of a running experiment.
    Ramp,
    /// Running → paused.
    Pause,
    /// Paused → running.
    Resume,
    /// Running or paused → killed.
    Kill,
    /// Running, paused or killed → concluded.
    Conclude,
    /// Draft, submitted, approved, killed or concluded → archived.
    Archive,
}

impl Action {
    /// Every action, in the order the API documents them.
    pub const ALL: [Action; 9] = [
        Action::Submit,
        Action::Approve,
        Action::Start,
        Action::Ramp,
        Action::Pause,
        Action::Resume,
        Action::Kill,
        Action::Conclude,
        Action::Archive,
    ];

    /// The action's name, as in `POST /api/v1/experiments/{key}/{action}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Submit => "submit",
            Action::Approve => "approve",
            Action::Start => "start",
            Action::Ramp => "ramp",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Kill => "kill",
            Action::Conclude => "conclude",
            Action::Archive => "archive",
        }
    }

    /// Parses an action name.
    pub fn parse(s: &str) -> Option<Self> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The permission the action needs.
    pub fn permission(self) -> Perm {
        match self {
            Action::Approve => Perm::ExperimentsApprove,
            Action::Kill => Perm::ExperimentsKill,
            _ => Perm::ExperimentsWrite,
        }
    }
}

/// A precondition of a transition on the experiment itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// None.
    Always,
    /// The experiment requires approval.
    ApprovalRequired,
    /// The experiment does not require approval.
    NoApprovalRequired,
}

impl Guard {
    fn holds(self, requires_approval: bool) -> bool {
        match self {
            Guard::Always => true,
            Guard::ApprovalRequired => requires_approval,
            Guard::NoApprovalRequired => !requires_approval,
        }
    }
}

/// One legal transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status it starts from.
    pub from: Status,
    /// The action.
    pub action: Action,
    /// The status it leads to.
    pub to: Status,
    /// Its precondition.
    pub guard: Guard,
}

const fn t(from: Status, action: Action, to: Status, guard: Guard) -> Transition {
    Transition {
        from,
        action,
        to,
        guard,
    }
}

/// Every legal transition. Per status, the order of the rows is the order of
/// the `allowed` next states of a refused action.
pub const TRANSITIONS: &[Transition] = {
    use Action as A;
    use Guard::{Always, ApprovalRequired, NoApprovalRequired};
    use Status as S;
    &[
        t(S::Draft, A::Submit, S::Submitted, Always),
        t(S::Draft, A::Archive, S::Archived, Always),
        t(S::Submitted, A::Approve, S::Approved, ApprovalRequired),
        t(S::Submitted, A::Start, S::Running, NoApprovalRequired),
        t(S::Submitted, A::Archive, S::Archived, Always),
        t(S::Approved, A::Start, S::Running, Always),
        t(S::Approved, A::Archive, S::Archived, Always),
        t(S::Running, A::Ramp, S::Running, Always),
        t(S::Running, A::Pause, S::Paused, Always),
        t(S::Running, A::Kill, S::Killed, Always),
        t(S::Running, A::Conclude, S::Concluded, Always),
        t(S::Paused, A::Resume, S::Running, Always),
        t(S::Paused, A::Kill, S::Killed, Always),
        t(S::Paused, A::Conclude, S::Concluded, Always),
        t(S::Killed, A::Conclude, S::Concluded, Always),
        t(S::Killed, A::Archive, S::Archived, Always),
        t(S::Concluded, A::Archive, S::Archived, Always),
    ]
};

/// The status `action` leads to from `from`, if legal.
pub fn next(from: Status, requires_approval: bool, action: Action) -> Option<Status> {
    TRANSITIONS
        .iter()
        .find(|t| t.from == from && t.action == action && t.guard.holds(requires_approval))
        .map(|t| t.to)
}

/// The next states reachable from `from`, in table order, without repeats.
pub fn allowed_next(from: Status, requires_approval: bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for t in TRANSITIONS
        .iter()
        .filter(|t| t.from == from && t.guard.holds(requires_approval))
    {
        if !out.contains(&t.to.as_str()) {
            out.push(t.to.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUSES: [Status; 8] = Status::ALL;

    /// Every status × approval × action, against the lifecycle as documented.
    #[test]
    fn every_status_and_action() {
        use Action as A;
        use Status as S;
        for from in STATUSES {
            for approval in [false, true] {
                for action in Action::ALL {
                    let expect = match (from, action) {
                        (S::Draft, A::Submit) => Some(S::Submitted),
                        (S::Submitted, A::Approve) if approval => Some(S::Approved),
                        (S::Submitted, A::Start) if !approval => Some(S::Running),
                        (S::Approved, A::Start) => Some(S::Running),
                        (S::Running, A::Ramp) => Some(S::Running),
                        (S::Running, A::Pause) => Some(S::Paused),
                        (S::Paused, A::Resume) => Some(S::Running),
                        (S::Running | S::Paused, A::Kill) => Some(S::Killed),
                        (S::Running | S::Paused | S::Killed, A::Conclude) => Some(S::Concluded),
                        (
                            S::Draft | S::Submitted | S::Approved | S::Killed | S::Concluded,
                            A::Archive,
                        ) => Some(S::Archived),
                        _ => None,
                    };
                    assert_eq!(
                        next(from, approval, action),
                        expect,
                        "{} {} (approval {approval})",
                        action.as_str(),
                        from.as_str()
                    );
                }
            }
        }
    }

    /// The allowed lists the API has always answered with, in its order.
    #[test]
    fn allowed_lists() {
        let cases: [(Status, bool, &[&str]); 9] = [
            (Status::Draft, false, &["submitted", "archived"]),
            (Status::Submitted, true, &["approved", "archived"]),
            (Status::Submitted, false, &["running", "archived"]),
            (Status::Approved, false, &["running", "archived"]),
            (
                Status::Running,
                false,
                &["running", "paused", "killed", "concluded"],
            ),
            (Status::Paused, false, &["running", "killed", "concluded"]),
            (Status::Killed, false, &["concluded", "archived"]),
            (Status::Concluded, false, &["archived"]),
            (Status::Archived, false, &[]),
        ];
        for (status, approval, allowed) in cases {
            assert_eq!(
                allowed_next(status, approval),
                allowed,
                "{}",
                status.as_str()
            );
        }
    }

    /// The allowed states are exactly where the legal actions lead.
    #[test]
    fn allowed_lists_agree_with_the_transitions() {
        for from in STATUSES {
            for approval in [false, true] {
                let mut reached: Vec<&str> = Action::ALL
                    .iter()
                    .filter_map(|a| next(from, approval, *a))
                    .map(Status::as_str)
                    .collect();
                reached.sort_unstable();
                reached.dedup();
                let mut allowed = allowed_next(from, approval);
                allowed.sort_unstable();
                assert_eq!(allowed, reached);
            }
        }
    }

    #[test]
    fn actions_parse_and_name_their_permission() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("explode"), None);
        assert_eq!(Action::Kill.permission(), Perm::ExperimentsKill);
        assert_eq!(Action::Approve.permission(), Perm::ExperimentsApprove);
        assert_eq!(Action::Ramp.permission(), Perm::ExperimentsWrite);
    }
}
