//! The simulator's own cost, without tensors: event-queue throughput (events pushed and
//! popped per second, with the queue holding K = 100 jobs as in the reference) and planning
//! throughput (client jobs per second on the reference's default world, K = 100, B = 1).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fedsim::sched::{summarize, PlanConfig, Policy};
use fedsim::sim::delay::DelayModel;
use fedsim::sim::queue::EventQueue;
use fedsim::sim::time::SimTime;

fn event_queue(c: &mut Criterion) {
    const EVENTS: u64 = 1_000_000;
    let mut group = c.benchmark_group("event_queue");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("push_pop_1M_with_100_pending", |b| {
        b.iter(|| {
            let mut queue = EventQueue::new();
            let mut time = 0u64;
            for i in 0..100u64 {
                queue.push(SimTime(i * 7_919 % 1_000), i);
            }
            for i in 0..EVENTS {
                let (t, _) = queue.pop().expect("never empty");
                time = t.0;
                // A new event some pseudo-random ticks later, like a client job.
                queue.push(SimTime(time + (i.wrapping_mul(2_654_435_761) % 10_000)), i);
            }
            time
        })
    });
    group.finish();
}

fn planning(c: &mut Criterion) {
    let mut group = c.benchmark_group("planning");
    group.sample_size(10);
    for buffer_size in [1usize, 2] {
        let config = PlanConfig {
            policy: Policy::buffered(buffer_size),
            active_jobs: 100,
            num_clients: 1000,
            delays: DelayModel::reference_default(),
            setup_seed: 10,
            run_seed: 10,
            eval_interval: 10,
            max_versions: None,
            max_virtual_time: Some(SimTime::from_units(200.0)),
            client_reuse: true,
            max_model_history: None,
            update_timeout: None,
            availability: Default::default(),
            topology: None,
        };
        let jobs = summarize(config.clone()).0.dispatched_jobs;
        group.throughput(Throughput::Elements(jobs));
        group.bench_with_input(
            BenchmarkId::new("reference_world_200_units_B", buffer_size),
            &config,
            |b, config| b.iter(|| summarize(config.clone())),
        );
    }
    group.finish();
}

criterion_group!(benches, event_queue, planning);
criterion_main!(benches);
