//! Whole searches of three workloads (ORTHO.md §6), with one and two threads,
//! in both modes: `tree` accepts each ortho from its canonical parent only,
//! `seen-set` keeps every ortho's id to drop second arrivals (the reference).
//! small = ts_0_2k (1,041 orthos), medium = ts_0_10k (41,863),
//! large = ts_0_20k (1,280,079).

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fold::search::{Dedup, Unobserved};
use fold::{Interner, SearchConfig, search};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn interner(name: &str) -> Interner {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden/texts")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Interner::from_texts([text.as_str()])
}

fn bench_workload(c: &mut Criterion, label: &str, text: &str, samples: usize) {
    let interner = interner(text);
    let mut group = c.benchmark_group(label);
    group.sample_size(samples);
    group.measurement_time(Duration::from_secs(if samples <= 10 { 20 } else { 5 }));
    for dedup in [Dedup::Tree, Dedup::SeenSet] {
        for threads in [1, 2] {
            let config = SearchConfig {
                threads,
                dedup,
                ..SearchConfig::default()
            };
            group.bench_function(format!("{text}/{}/threads_{threads}", dedup.name()), |b| {
                b.iter(|| search(&interner, &config, &mut Unobserved).expect("search succeeds"))
            });
        }
    }
    group.finish();
}

fn small(c: &mut Criterion) {
    bench_workload(c, "small", "ts_0_2k.txt", 50);
}

fn medium(c: &mut Criterion) {
    bench_workload(c, "medium", "ts_0_10k.txt", 20);
}

fn large(c: &mut Criterion) {
    bench_workload(c, "large", "ts_0_20k.txt", 10);
}

criterion_group!(benches, small, medium, large);
criterion_main!(benches);
