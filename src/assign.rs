//! The assignment step: which member of a team's roster gets a ticket when the rules ask for a
//! strategy. Pure functions over the roster and the state the store reads (the round-robin
//! cursor, open assignments per agent), and [`assign`], which runs a strategy against that state
//! inside the transaction that logs the decision; the store owns the state.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::rules::Assignee;

/// Rosters and how long an assignment stays open without being closed.
#[derive(Debug, Clone, Default)]
pub struct AssignmentPolicy {
    /// Team name -> agents, in the order round-robin visits them.
    pub rosters: BTreeMap<String, Vec<String>>,
    /// Assignments older than this close by themselves (`None`: only through the API).
    pub close_after: Option<Duration>,
}

impl AssignmentPolicy {
    /// The team's roster (empty when the team has none).
    pub fn roster(&self, team: &str) -> &[String] {
        self.rosters.get(team).map_or(&[], Vec::as_slice)
    }
}

fn no_roster(team: &str) -> String {
    format!("team \"{team}\" has no roster")
}

/// The agent at the round-robin cursor `next` (the caller advances it).
pub fn round_robin(team: &str, roster: &[String], next: usize) -> Result<String, String> {
    if roster.is_empty() {
        return Err(no_roster(team));
    }
    Ok(roster[next % roster.len()].clone())
}

/// The roster member with the fewest open assignments (`loads`: agent -> open count; agents
/// not listed have none); ties go to the earlier member of the roster.
pub fn least_loaded(
    team: &str,
    roster: &[String],
    loads: &[(String, i64)],
) -> Result<String, String> {
    roster
        .iter()
        .min_by_key(|agent| {
            loads
                .iter()
                .find(|(a, _)| a == *agent)
                .map_or(0, |(_, n)| *n)
        })
        .cloned()
        .ok_or_else(|| no_roster(team))
}

/// The assignment state a strategy reads and advances, inside the transaction that logs the
/// decision (so two decisions never read the same cursor).
pub trait AssignmentState {
    /// The store's error.
    type Error;
    /// The team's round-robin cursor (0 before the first pick), moved on by one in the same
    /// step (so two decisions never take the same turn).
    fn take_round_robin(
        &mut self,
        team: &str,
    ) -> impl Future<Output = Result<usize, Self::Error>> + Send;
    /// Open assignments per agent of the team.
    fn open_loads(
        &mut self,
        team: &str,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, Self::Error>> + Send;
    /// Records that `agent` of `team` has the decision's ticket.
    fn open_assignment(
        &mut self,
        decision_id: &str,
        team: &str,
        agent: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What the assignment step did for one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// This agent has the ticket.
    Agent(String),
    /// The strategy could not pick anyone; why.
    Unassigned(String),
}

/// Runs the rules' assignee strategy for a decision of `team` and records the assignment;
/// `None` when the rules asked for nobody.
pub async fn assign<S: AssignmentState + Send>(
    state: &mut S,
    policy: &AssignmentPolicy,
    decision_id: &str,
    team: &str,
    strategy: &Assignee,
) -> Result<Option<Pick>, S::Error> {
    let roster = policy.roster(team);
    let pick = match strategy {
        Assignee::Nobody => return Ok(None),
        Assignee::Agent(a) => Ok(a.clone()),
        Assignee::RoundRobin if roster.is_empty() => Err(no_roster(team)),
        Assignee::RoundRobin => {
            let turn = state.take_round_robin(team).await?;
            round_robin(team, roster, turn)
        }
        Assignee::LeastLoaded => {
            let loads = state.open_loads(team).await?;
            least_loaded(team, roster, &loads)
        }
    };
    Ok(Some(match pick {
        Ok(agent) => {
            state.open_assignment(decision_id, team, &agent).await?;
            Pick::Agent(agent)
        }
        Err(why) => Pick::Unassigned(why),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster() -> Vec<String> {
        vec!["ann".into(), "bob".into(), "cid".into()]
    }

    #[test]
    fn round_robin_cycles_through_the_roster() {
        let picks: Vec<String> = (0..4)
            .map(|i| round_robin("t", &roster(), i).unwrap())
            .collect();
        assert_eq!(picks, vec!["ann", "bob", "cid", "ann"]);
        assert_eq!(
            round_robin("t", &[], 0).unwrap_err(),
            "team \"t\" has no roster"
        );
    }

    #[test]
    fn least_loaded_picks_the_fewest_open_and_breaks_ties_by_roster_order() {
        let loads = vec![("ann".to_string(), 2), ("cid".to_string(), 1)];
        assert_eq!(least_loaded("t", &roster(), &loads).unwrap(), "bob");
        let loads = vec![
            ("ann".to_string(), 1),
            ("bob".to_string(), 1),
            ("cid".to_string(), 1),
            ("zed".to_string(), 0),
        ];
        assert_eq!(
            least_loaded("t", &roster(), &loads).unwrap(),
            "ann",
            "agents off the roster never get tickets"
        );
    }
}
