//! The property suite every server rule runs through: the aggregation (client weights,
//! staleness weights, down-weighting) followed by each server optimizer. A new optimizer adds
//! one line to [`rules`].
//!
//! Properties: no update (or all-zero updates) leaves a fresh rule's model unchanged, and once
//! a stateful rule has moved, zero updates move it only by coasting on its momentum (in the
//! direction of its last step, by less); K equal updates act as one; finite in, finite out;
//! state saved and restored mid-run continues bit for bit; permuting a round's updates changes
//! the result only within float rounding of the sum.

use proptest::prelude::*;

use super::*;
use crate::fl::aggregate::{ServerRule, Update};
use crate::fl::weights::{BetaSchedule, ClientWeighting, StalenessWeight};

type Make = fn() -> Box<dyn ServerOptimizer<Vec<f32>>>;

/// A rule under test.
#[derive(Clone, Copy)]
struct Rule {
    name: &'static str,
    /// A fresh one, with the paper's default parameters.
    make: Make,
    stateful: bool,
    lr: f32,
    /// How much one step's change in theta can move per unit change in the mean delta: 1 for
    /// sgd and momentum; (1 - beta1) / tau for the adaptive ones (their denominator is at least
    /// about tau while v is small).
    sensitivity: f32,
}

/// Every rule under test, one line each.
fn rules() -> Vec<Rule> {
    fn make(kind: ServerOptimizerKind) -> Box<dyn ServerOptimizer<Vec<f32>>> {
        ServerOptimizerSettings { kind, ..ServerOptimizerSettings::sgd() }.build()
    }
    let adaptive = 0.1 / 1e-3;
    let rule = |name, make, stateful, lr, sensitivity| Rule { name, make, stateful, lr, sensitivity };
    vec![
        rule("sgd", || make(ServerOptimizerKind::Sgd), false, 1.0, 1.0),
        rule("momentum", || make(ServerOptimizerKind::Momentum), true, 1.0, 1.0),
        rule("adam", || make(ServerOptimizerKind::Adam), true, 0.01, adaptive),
        rule("yogi", || make(ServerOptimizerKind::Yogi), true, 0.01, adaptive),
        rule("adagrad", || make(ServerOptimizerKind::Adagrad), true, 0.1, adaptive),
    ]
}

/// The aggregations the optimizers run behind: FedAvg's and FedBuff's plain rule, weighting by
/// samples, and AFL-DW's down-weighting with a staleness weight.
fn aggregations(lr: f32) -> Vec<ServerRule> {
    let plain = ServerRule::plain(lr as f64);
    vec![
        plain,
        ServerRule { weighting: ClientWeighting::Samples, ..plain },
        ServerRule {
            staleness: StalenessWeight::Polynomial { a: 0.5 },
            down_weight: Some(BetaSchedule::Constant { beta: 0.3 }),
            ..plain
        },
    ]
}

fn updates<'a>(deltas: &'a [Vec<f32>], samples: &[usize]) -> Vec<Update<'a>> {
    deltas
        .iter()
        .zip(samples.iter().cycle())
        .enumerate()
        .map(|(i, (delta, &samples))| Update { delta, model: None, staleness: i as u64 % 4, samples })
        .collect()
}

fn vectors(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-3.0f32..3.0, n)
}

fn rounds(n: usize) -> impl Strategy<Value = Vec<Vec<Vec<f32>>>> {
    prop::collection::vec(prop::collection::vec(vectors(n), 1..5), 1..4)
}

/// Runs `rounds` through a fresh rule, returning theta after each round.
fn run(make: Make, rule: &ServerRule, theta: &[f32], rounds: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    let mut optimizer = make();
    let mut theta = theta.to_vec();
    rounds
        .iter()
        .map(|round| {
            rule.apply_with(&mut theta, &updates(round, &[350, 120, 40]), &mut *optimizer);
            theta.clone()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_update_or_zero_updates_leave_a_fresh_rule_where_it_is(theta in vectors(8), k in 1usize..4) {
        let zeros = vec![vec![0.0f32; 8]; k];
        for Rule { name, make, lr, .. } in rules() {
            for rule in aggregations(lr) {
                for round in [&zeros[..0], &zeros[..]] {
                    let mut moved = theta.clone();
                    rule.apply_with(&mut moved, &updates(round, &[10]), &mut *make());
                    prop_assert_eq!(&moved, &theta, "{}", name);
                }
            }
        }
    }

    #[test]
    fn after_a_step_zero_updates_move_only_stateful_rules_and_only_by_coasting(theta in vectors(8), delta in vectors(8)) {
        let zero = vec![0.0f32; 8];
        for Rule { name, make, stateful, lr, .. } in rules() {
            let rule = ServerRule::plain(lr as f64);
            let mut optimizer = make();
            let mut after = theta.clone();
            rule.apply_with(&mut after, &updates(std::slice::from_ref(&delta), &[1]), &mut *optimizer);
            let mut coasted = after.clone();
            rule.apply_with(&mut coasted, &updates(std::slice::from_ref(&zero), &[1]), &mut *optimizer);
            for i in 0..8 {
                let (step, coast) = (after[i] - theta[i], coasted[i] - after[i]);
                if !stateful {
                    prop_assert_eq!(coast, 0.0, "{}", name);
                } else {
                    // The same direction as the last step, and no further (float slack).
                    prop_assert!(coast * step >= 0.0, "{}: step {} then coast {}", name, step, coast);
                    prop_assert!(coast.abs() <= step.abs() * 1.0001 + 1e-6, "{}: step {} then coast {}", name, step, coast);
                }
            }
        }
    }

    #[test]
    fn k_equal_updates_act_as_one(theta in vectors(8), round in vectors(8), k in 2usize..6) {
        for Rule { name, make, lr, .. } in rules() {
            for rule in aggregations(lr) {
                let same = vec![round.clone(); k];
                // Equal staleness too, so that every update has the same weight.
                let as_many: Vec<Update> = same.iter().map(|delta| Update { delta, model: None, staleness: 2, samples: 50 }).collect();
                let mut many = theta.clone();
                rule.apply_with(&mut many, &as_many, &mut *make());
                let mut one = theta.clone();
                rule.apply_with(&mut one, &as_many[..1], &mut *make());
                for (a, b) in many.iter().zip(&one) {
                    prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{}: {} vs {}", name, a, b);
                }
            }
        }
    }

    #[test]
    fn finite_in_finite_out(theta in vectors(8), rounds in rounds(8)) {
        for Rule { name, make, lr, .. } in rules() {
            for rule in aggregations(lr) {
                for after in run(make, &rule, &theta, &rounds) {
                    prop_assert!(after.iter().all(|v| v.is_finite()), "{}: {:?}", name, after);
                }
            }
        }
    }

    #[test]
    fn state_saved_and_restored_mid_run_continues_bit_for_bit(theta in vectors(8), rounds in rounds(8), cut in 0usize..4) {
        for Rule { name, make, lr, .. } in rules() {
            let rule = aggregations(lr)[2];
            let whole = run(make, &rule, &theta, &rounds);
            let cut = cut.min(rounds.len());
            // Run to the cut, save, restore into a fresh rule, run the rest.
            let mut first = make();
            let mut resumed = theta.clone();
            for round in &rounds[..cut] {
                rule.apply_with(&mut resumed, &updates(round, &[350, 120, 40]), &mut *first);
            }
            let mut second = make();
            second.restore(first.save(), &resumed).unwrap();
            for round in &rounds[cut..] {
                rule.apply_with(&mut resumed, &updates(round, &[350, 120, 40]), &mut *second);
            }
            prop_assert_eq!(&resumed, whole.last().unwrap(), "{}", name);
        }
    }

    #[test]
    fn permuting_a_round_changes_the_result_only_within_rounding(theta in vectors(8), round in prop::collection::vec(vectors(8), 2..6), rotate in 1usize..5) {
        for Rule { name, make, lr, sensitivity, .. } in rules() {
            let rule = ServerRule::plain(lr as f64);
            let mut permuted = round.clone();
            let r = rotate % permuted.len();
            permuted.rotate_left(r);
            let a = run(make, &rule, &theta, std::slice::from_ref(&round));
            let b = run(make, &rule, &theta, std::slice::from_ref(&permuted));
            // The mean delta's sum of K terms of size <= 3 differs by at most about K * 3 * eps
            // between orders; the step passes that on times lr and the rule's sensitivity.
            let rounding = round.len() as f32 * 3.0 * f32::EPSILON;
            for (x, y) in a[0].iter().zip(&b[0]) {
                let bound = lr * sensitivity * rounding + 2.0 * f32::EPSILON * (1.0 + x.abs());
                prop_assert!((x - y).abs() <= bound, "{}: {} vs {} (bound {})", name, x, y, bound);
            }
        }
    }
}
