//! The goals on the echo table: which row is compared with which, by what, and the least ratio that meets the
//! goal; which rows a `--goal` filter runs; the ratios measured.

use super::echo::{
    RowResult, KERNEL, KERNEL_FOUR, KERNEL_THREADS_FOUR, KERNEL_THREADS_ONE, SCENARIOS,
    TAP_1500_ONE, TUN6_1500_FOUR, TUN6_1500_ONE, TUN_1500_FOUR, TUN_1500_ONE, TUN_65000_FOUR,
    TUN_65000_ONE,
};

/// What a goal compares of two rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Measure {
    /// Echo Gbit/s each way.
    Echo,
    /// The server's CPU time per Gbit/s echoed.
    CpuPerGbit,
    /// An IPv6 row's echo over its IPv4 runs' (taken in turns on the same server; `against` is the row itself).
    Ipv6OverIpv4,
}

/// A goal on the echo table: `measure` of row `row` over that of row `against` is at least `target`.
pub(super) struct EchoGoal {
    pub(super) name: &'static str,
    pub(super) row: usize,
    pub(super) against: usize,
    pub(super) measure: Measure,
    pub(super) target: f64,
}

const fn goal(
    name: &'static str,
    row: usize,
    against: usize,
    measure: Measure,
    target: f64,
) -> EchoGoal {
    EchoGoal {
        name,
        row,
        against,
        measure,
        target,
    }
}

/// The goals on the echo table.
pub(super) const GOALS: &[EchoGoal] = &[
    goal(
        "kernel stack, 1 connection: event loops ≥ 0.95× the thread-per-client design (as fast, within the \
         noise between runs)",
        KERNEL,
        KERNEL_THREADS_ONE,
        Measure::Echo,
        0.95,
    ),
    goal(
        "kernel stack, 4 connections: event loops ≥ 0.95× the thread-per-client design",
        KERNEL_FOUR,
        KERNEL_THREADS_FOUR,
        Measure::Echo,
        0.95,
    ),
    goal(
        "kernel stack, 1 connection: server CPU per Gbit/s, thread-per-client ≥ 1.0× the event loops'",
        KERNEL_THREADS_ONE,
        KERNEL,
        Measure::CpuPerGbit,
        1.0,
    ),
    goal(
        "kernel stack, 4 connections: server CPU per Gbit/s, thread-per-client ≥ 1.0× the event loops'",
        KERNEL_THREADS_FOUR,
        KERNEL_FOUR,
        Measure::CpuPerGbit,
        1.0,
    ),
    goal(
        "kernel stack: 4 connections ≥ 1.0× one connection",
        KERNEL_FOUR,
        KERNEL,
        Measure::Echo,
        1.0,
    ),
    goal(
        "TUN, MTU 1500, default options: echo ≥ 0.8× the kernel's echo over loopback",
        TUN_1500_ONE,
        KERNEL,
        Measure::Echo,
        0.8,
    ),
    goal(
        "TAP, MTU 1500, default options: echo ≥ 0.7× the kernel's",
        TAP_1500_ONE,
        KERNEL,
        Measure::Echo,
        0.7,
    ),
    goal(
        "TUN, MTU 65000, default options: echo ≥ 0.9× the kernel's",
        TUN_65000_ONE,
        KERNEL,
        Measure::Echo,
        0.9,
    ),
    goal(
        "TUN, MTU 1500: 4 connections ≥ 1.0× one connection",
        TUN_1500_FOUR,
        TUN_1500_ONE,
        Measure::Echo,
        1.0,
    ),
    goal(
        "TUN, MTU 65000: 4 connections ≥ 1.0× one connection",
        TUN_65000_FOUR,
        TUN_65000_ONE,
        Measure::Echo,
        1.0,
    ),
    goal(
        "TUN, MTU 1500, 1 connection: echo over IPv6 ≥ 0.9× over IPv4, same server, runs in turns (the \
         IPv6 issue)",
        TUN6_1500_ONE,
        TUN6_1500_ONE,
        Measure::Ipv6OverIpv4,
        0.9,
    ),
    goal(
        "TUN, MTU 1500, 4 connections: echo over IPv6 ≥ 0.9× over IPv4, same server, runs in turns",
        TUN6_1500_FOUR,
        TUN6_1500_FOUR,
        Measure::Ipv6OverIpv4,
        0.9,
    ),
];

/// The rows to run: every one, or (with `goal_filter`) only those the goals whose name contains it (ignoring
/// case) compare.
pub(super) fn selected_rows(goal_filter: Option<&str>) -> Vec<bool> {
    let Some(filter) = goal_filter else {
        return vec![true; SCENARIOS.len()];
    };
    let filter = filter.to_lowercase();
    let mut selected = vec![false; SCENARIOS.len()];
    for g in GOALS
        .iter()
        .filter(|g| g.name.to_lowercase().contains(&filter))
    {
        for row in [g.row, g.against] {
            if let Some(s) = selected.get_mut(row) {
                *s = true;
            }
        }
    }
    selected
}

/// The goals whose rows were both measured, as (name, measured ratio, target).
pub(super) fn goal_results(results: &[RowResult]) -> Vec<(String, f64, f64)> {
    let of = |row: usize| results.get(row).and_then(RowResult::measured);
    GOALS
        .iter()
        .filter_map(|g| {
            let (row, against) = (of(g.row)?, of(g.against)?);
            let ratio = match g.measure {
                Measure::Echo => row.echo / against.echo,
                Measure::CpuPerGbit => row.cpu_per_gbit() / against.cpu_per_gbit(),
                Measure::Ipv6OverIpv4 => row.ipv4_alongside?.ratio,
            };
            Some((g.name.to_string(), ratio, g.target))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::echo::{Alongside, Measured};
    use super::*;

    #[test]
    fn a_goal_filter_runs_only_the_rows_its_goals_compare() {
        let all = selected_rows(None);
        assert!(all.iter().all(|&s| s));
        let ipv6: Vec<usize> = (0..SCENARIOS.len())
            .filter(|&i| selected_rows(Some("ipv6"))[i])
            .collect();
        // The IPv6 rows carry their IPv4 runs.
        assert_eq!(ipv6, vec![TUN6_1500_ONE, TUN6_1500_FOUR]);
        assert!(!selected_rows(Some("no such goal")).contains(&true));
        let one: Vec<usize> = (0..SCENARIOS.len())
            .filter(|&i| selected_rows(Some("TUN, MTU 1500: 4 connections"))[i])
            .collect();
        assert_eq!(one, vec![TUN_1500_ONE, TUN_1500_FOUR]);
        // Only goals whose rows were measured are reported.
        let mut results = vec![RowResult::NotRun; SCENARIOS.len()];
        let measured = |echo, ipv4_alongside| {
            RowResult::Measured(Measured {
                echo,
                device: 0.0,
                server_cpu: 0.5,
                ipv4_alongside,
            })
        };
        results[TUN_1500_ONE] = measured(10.0, None);
        results[TUN_1500_FOUR] = measured(12.0, None);
        let alongside = Alongside {
            echo: 10.0,
            cpu_per_gbit: 0.05,
            ratio: 0.95,
        };
        results[TUN6_1500_ONE] = measured(9.5, Some(alongside));
        let goals = goal_results(&results);
        assert_eq!(goals.len(), 2);
        assert!(goals[0].0.contains("4 connections ≥ 1.0× one"));
        assert!((goals[0].1 - 1.2).abs() < 1e-9);
        assert!(goals[1].0.contains("IPv6"));
        assert!((goals[1].1 - 0.95).abs() < 1e-9);
        assert_eq!(goals[1].2, 0.9);
    }
}
