//! The GPU memory guard: how many clients to stack in a cohort and how many cohorts to run at
//! once, from the device's free memory, what the executor keeps resident there (model versions,
//! trained updates waiting for their aggregation) and a measured per-client footprint. The
//! chosen numbers change the floats (cohort size is part of the experiment), so a run records
//! them.

use serde::Serialize;

/// Share of the free memory that the run may take: the rest is headroom for the allocator's
/// fragmentation, the server step and evaluation.
pub const USABLE_SHARE: f64 = 0.8;
/// Stacking more clients than this gains nothing measurable (the GPU is full well before).
pub const MAX_COHORT: usize = 128;

/// What a run uses: clients per cohort and cohorts in flight at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CohortPlan {
    pub cohort_size: usize,
    pub concurrent_cohorts: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "one client of this model needs about {per_client_gib:.2} GiB of device memory while training, \
     but only {free_gib:.2} GiB are free ({usable_gib:.2} GiB usable, {resident_gib:.2} GiB of it \
     for model versions and updates waiting for aggregation); lower algorithm.active_jobs or \
     run.lookahead, free memory on the GPU, or set run.device = \"cpu\""
)]
pub struct DoesNotFit {
    pub per_client_gib: f64,
    pub free_gib: f64,
    pub usable_gib: f64,
    pub resident_gib: f64,
}

/// Bytes the executor may keep on the device besides cohorts: every planned-but-unapplied task
/// (at most `tasks_held`) can hold its trained update (`outputs` weight vectors: the delta, and
/// the model where the server needs it) and, at worst, a base version of its own.
pub fn resident_bytes(weight_bytes: u64, tasks_held: usize, outputs: u64) -> u64 {
    weight_bytes * tasks_held as u64 * (outputs + 1)
}

/// Sizes cohorts for `free` bytes of device memory, `resident` bytes the executor keeps there
/// ([`resident_bytes`]) and `per_client` bytes per stacked client: as large a cohort as fits
/// (at most the jobs in flight, which bound any cohort, and [`MAX_COHORT`]), then as many
/// concurrent cohorts of that size as fit, up to `workers`.
pub fn size_cohorts(
    free: u64,
    resident: u64,
    per_client: u64,
    workers: usize,
    active_jobs: usize,
) -> Result<CohortPlan, DoesNotFit> {
    let usable = (free as f64 * USABLE_SHARE) as u64;
    let fit = (usable.saturating_sub(resident) / per_client.max(1)) as usize;
    if fit == 0 {
        let gib = crate::runtime::gib;
        return Err(DoesNotFit {
            per_client_gib: gib(per_client),
            free_gib: gib(free),
            usable_gib: gib(usable),
            resident_gib: gib(resident),
        });
    }
    let cohort_size = fit.min(active_jobs.max(1)).min(MAX_COHORT);
    let concurrent_cohorts = (fit / cohort_size).clamp(1, workers.max(1));
    Ok(CohortPlan { cohort_size, concurrent_cohorts })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_large_gpu_stacks_all_jobs_in_flight_and_runs_cohorts_side_by_side() {
        // 130 GiB free, 0.5 GiB per ResNet-18 client: 208 fit; FedAvg's 100 jobs in one cohort,
        // two such cohorts at once although four workers were asked for.
        let plan = size_cohorts(130 * GIB, 0, GIB / 2, 4, 100).unwrap();
        assert_eq!(plan, CohortPlan { cohort_size: 100, concurrent_cohorts: 2 });
        // FedBuff's 10 jobs in flight bound the cohort; workers bound the concurrency.
        assert_eq!(
            size_cohorts(130 * GIB, 0, GIB / 2, 4, 10).unwrap(),
            CohortPlan { cohort_size: 10, concurrent_cohorts: 4 }
        );
        assert_eq!(size_cohorts(1000 * GIB, 0, GIB / 2, 1, 1000).unwrap().cohort_size, MAX_COHORT);
    }

    #[test]
    fn a_small_gpu_gets_smaller_cohorts_and_one_at_a_time() {
        // 8 GiB free, 80% usable: 12 clients of 0.5 GiB.
        assert_eq!(
            size_cohorts(8 * GIB, 0, GIB / 2, 4, 100).unwrap(),
            CohortPlan { cohort_size: 12, concurrent_cohorts: 1 }
        );
        assert_eq!(
            size_cohorts(GIB, 0, GIB / 2, 4, 100).unwrap(),
            CohortPlan { cohort_size: 1, concurrent_cohorts: 1 }
        );
    }

    #[test]
    fn a_model_that_does_not_fit_names_the_figures_and_the_way_out() {
        let err = size_cohorts(GIB / 2, 0, GIB, 2, 10).unwrap_err();
        assert_eq!((err.per_client_gib, err.free_gib), (1.0, 0.5));
        let message = err.to_string();
        assert!(message.contains("1.00 GiB") && message.contains("0.50 GiB are free"), "{message}");
        assert!(message.contains("run.device = \"cpu\""), "{message}");
        // Zero bytes per client (a failed measurement) never divides by zero.
        assert!(size_cohorts(GIB, 0, 0, 2, 10).is_ok());
    }

    #[test]
    fn resident_versions_and_waiting_updates_come_first() {
        // FedAvg on ResNet-18 (about 44.7 MB of weights): 200 tasks held, each with its delta and
        // at worst its own version: 16.7 GiB stay resident; 130 GiB free leave room for 100 at once.
        let weights = 11_173_962 * 4;
        let resident = resident_bytes(weights, 200, 1);
        assert_eq!(resident, weights * 400);
        let plan = size_cohorts(130 * GIB, resident, GIB / 2, 4, 100).unwrap();
        assert_eq!(plan.cohort_size, 100);
        // Of 24 GiB (19.2 usable) the resident 16.7 GiB leave 2.5: 5 clients per cohort.
        assert_eq!(size_cohorts(24 * GIB, resident, GIB / 2, 4, 100).unwrap().cohort_size, 5);
        let err = size_cohorts(20 * GIB, resident, GIB / 2, 4, 100).unwrap_err();
        assert!(err.to_string().contains("algorithm.active_jobs or run.lookahead"), "{err}");
    }
}
