//! Incremental versions and checkpoints (ORTHO.md §6, incremental ingestion):
//!
//! * `incremental/*` — after ts_0_20k, one sentence of words it already
//!   knows: the next version through the stored exploration, against a fresh
//!   search of the same version (the target is at most 10% of it), and the
//!   cost of reopening the stored exploration in a new process.
//! * `checkpoint/*` — one durable checkpoint taken after 1,000,000 orthos
//!   of ts_0_20k were processed: the time from deciding to checkpoint until
//!   the history is on disk and the pending orthos are encoded. Its size is
//!   printed once.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fold::search::{Checkpoint, Checkpoints, Exploration, Progress, Scope, Searcher, Unobserved};
use fold::{Interner, SearchConfig, search};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Every word of it occurs in ts_0_20k; the sentence itself does not.
const SENTENCE: &str = "the citizens are hungry and the senators are proud";

fn text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden/texts")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn config() -> SearchConfig {
    SearchConfig {
        threads: 2,
        ..SearchConfig::default()
    }
}

fn incremental(c: &mut Criterion) {
    let base = Interner::from_texts([text("ts_0_20k.txt").as_str()]);
    let mut next = base.clone();
    let vocabulary = next.vocabulary();
    next.ingest(SENTENCE);
    assert_eq!(
        next.vocabulary(),
        vocabulary,
        "the sentence brings no new word"
    );

    let searcher = Searcher::new(config()).expect("threads start");
    let dir = tempfile::tempdir().expect("temporary dir");
    let mut exploration = Exploration::create(dir.path(), Scope::All).expect("log dir");
    searcher
        .advance(&mut exploration, &base, &mut Unobserved)
        .expect("version 1");
    let manifest = exploration.manifest().clone();
    drop(exploration);

    let mut group = c.benchmark_group("incremental");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("ts_0_20k+sentence/fresh", |b| {
        b.iter(|| search(&next, &config(), &mut Unobserved).expect("search succeeds"))
    });
    group.bench_function("ts_0_20k+sentence/next_version", |b| {
        b.iter_batched(
            || {
                let exploration = Exploration::open(dir.path(), Scope::All, manifest.clone())
                    .expect("stored exploration reopens");
                (exploration, base.clone())
            },
            |(mut exploration, mut interner)| {
                interner.ingest(SENTENCE);
                searcher
                    .advance(&mut exploration, &interner, &mut Unobserved)
                    .expect("version 2")
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("ts_0_20k/reopen", |b| {
        b.iter(|| Exploration::open(dir.path(), Scope::All, manifest.clone()).expect("reopens"))
    });
    group.finish();
}

/// Checkpoints once, after `at` orthos were processed, and times it.
struct OneCheckpoint {
    at: u64,
    started: Option<Instant>,
    took: Option<Duration>,
    bytes: u64,
    record: usize,
}

impl Checkpoints for OneCheckpoint {
    fn due(&mut self, progress: &Progress) -> bool {
        let due = self.started.is_none() && progress.processed >= self.at;
        if due {
            self.started = Some(Instant::now());
        }
        due
    }

    fn save(&mut self, checkpoint: &Checkpoint) -> fold::Result<()> {
        let record = serde_json::to_vec(checkpoint).expect("checkpoints serialize");
        self.took = self.started.map(|started| started.elapsed());
        let segment = &checkpoint.segment;
        self.bytes = segment.history_bytes + segment.overrides_bytes;
        self.record = record.len() + checkpoint.pending.len();
        Ok(())
    }
}

fn checkpoint(c: &mut Criterion) {
    let interner = Interner::from_texts([text("ts_0_20k.txt").as_str()]);
    let searcher = Searcher::new(config()).expect("threads start");
    let run = || {
        let dir = tempfile::tempdir().expect("temporary dir");
        let mut exploration = Exploration::create(dir.path(), Scope::All).expect("log dir");
        let mut once = OneCheckpoint {
            at: 1_000_000,
            started: None,
            took: None,
            bytes: 0,
            record: 0,
        };
        searcher
            .advance_durably(
                &mut exploration,
                &interner,
                None,
                &mut Unobserved,
                &mut once,
            )
            .expect("search succeeds");
        once
    };
    let sample = run();
    println!(
        "checkpoint at 1,000,000 processed: history {} bytes on disk, checkpoint record with pending orthos {} bytes",
        sample.bytes, sample.record
    );
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("ts_0_20k/at_1M_processed", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| run().took.expect("a checkpoint was taken"))
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, incremental, checkpoint);
criterion_main!(benches);
