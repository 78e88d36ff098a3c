//! The coordinator's bookkeeping, free of I/O: versions and their shards,
//! workers, attempts and leases, and the figures added up from finished shards.
//!
//! Exactness lives here. A shard counts once, when the attempt currently
//! holding it reports completion; reports from any other attempt (lost,
//! expired, handed back) are refused, so nothing is counted twice or lost.
//! Each shard keeps its own tally (attempts started and discarded, times
//! counted, what it contributed) so that status can show this, shard by shard.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::search::Figures;

/// Shards a worker may hold at once: one searched, one waiting, so a worker
/// never idles for a round trip between shards.
pub const SHARDS_PER_WORKER: usize = 2;

/// Identifies a worker session.
pub type WorkerId = u64;

/// Identifies one attempt at one shard.
pub type AttemptId = u64;

/// The final figures of one shard: the figures of its part of the search.
pub type ShardResult = Figures;

/// A shard handed to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The worker it goes to.
    pub worker: WorkerId,
    /// The attempt's id.
    pub attempt: AttemptId,
    /// The version to search.
    pub version: u32,
    /// The origin token of the shard.
    pub origin: u32,
}

/// Why a worker's report was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The attempt is not (or no longer) held by this worker.
    #[error("attempt {0} is not held by this worker (lost, expired or already finished)")]
    StaleAttempt(AttemptId),
}

/// A shard that just finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Its version.
    pub version: u32,
    /// Its origin.
    pub origin: u32,
    /// Whether this was the version's last shard.
    pub version_done: bool,
}

/// Where a shard stands; the attempt holding a running shard is in
/// [`VersionLedger::holders`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardState {
    Pending,
    Running,
    Done,
}

/// One shard's state and tally: 32 bytes, kept for every shard of every
/// version, so it stays small.
#[derive(Clone, Copy, Debug)]
struct Shard {
    /// What the counted result added (zero until done).
    orthos: u64,
    frontier: u64,
    attempts_started: u32,
    attempts_discarded: u32,
    /// The version the counted result was searched up from (0: from scratch).
    base_version: u32,
    /// Results added to the version's figures: 0, then 1 when done.
    counted: u8,
    state: ShardState,
}

impl Shard {
    const PENDING: Shard = Shard {
        orthos: 0,
        frontier: 0,
        attempts_started: 0,
        attempts_discarded: 0,
        base_version: 0,
        counted: 0,
        state: ShardState::Pending,
    };

    /// Marks the shard done and records that `result` was added to the
    /// version's figures. The only place a shard's result is counted.
    fn count(&mut self, result: &ShardResult, figures: &mut Figures) {
        self.state = ShardState::Done;
        self.counted += 1;
        self.orthos = result.orthos;
        self.frontier = result.frontier;
        figures.add(result);
    }
}

/// Where a shard stands, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardPhase {
    /// Waiting for a worker.
    Pending,
    /// Held by a worker.
    Running {
        /// The worker's session id.
        worker: WorkerId,
        /// The worker's display name.
        name: String,
    },
    /// Finished and counted.
    Done,
}

/// One shard as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSummary {
    /// The origin token id.
    pub origin: u32,
    /// Where it stands.
    pub phase: ShardPhase,
    /// Attempts handed to workers since the coordinator started.
    pub attempts_started: u64,
    /// Attempts whose results were thrown away.
    pub attempts_discarded: u64,
    /// Results added to the version's figures (at most 1).
    pub times_counted: u32,
    /// Orthos and frontier it added to the version's figures, once done.
    pub contributed: Option<(u64, u64)>,
    /// The version its result was searched up from (0: from scratch).
    pub base_version: u32,
}

/// One version's shards and the figures of those finished. Its words are
/// the first [`VersionLedger::vocabulary`] words of the ledger's one word
/// list (see [`Ledger::words`]): versions of an append-only vocabulary share it.
pub struct VersionLedger {
    /// The version number.
    pub version: u32,
    /// The name the text was submitted with.
    pub source: String,
    /// Number of token ids in this version.
    pub vocabulary: usize,
    /// Indexed by origin token id.
    shards: Vec<Shard>,
    /// The attempt holding each running shard, by origin.
    holders: HashMap<u32, AttemptId>,
    /// Origins not yet handed out, the likely largest shard last (popped first).
    pending: Vec<u32>,
    done: u32,
    running: u32,
    figures: Figures,
}

impl VersionLedger {
    /// Whether every shard has finished.
    pub fn is_done(&self) -> bool {
        self.done as usize == self.shards.len()
    }

    /// Figures of the finished shards (final when [`VersionLedger::is_done`]).
    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// Shards finished.
    pub fn shards_done(&self) -> u32 {
        self.done
    }

    /// Shards in all.
    pub fn shards_total(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Shards held by workers now.
    pub fn shards_running(&self) -> u32 {
        self.running
    }

    /// Attempts whose results were thrown away.
    pub fn attempts_discarded(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| u64::from(shard.attempts_discarded))
            .sum()
    }

    /// Whether `attempt` is the one holding the shard of `origin`.
    fn held_by(&self, origin: u32, attempt: AttemptId) -> bool {
        self.holders.get(&origin) == Some(&attempt)
            && self.shards[origin as usize].state == ShardState::Running
    }
}

struct WorkerEntry {
    name: String,
    threads: u32,
    attempts: Vec<AttemptId>,
    /// A lease of this worker ran out and it has not been heard from since:
    /// it gets no new shards (it could be frozen rather than gone).
    stalled: bool,
    shards_done: u64,
    connected: Instant,
    /// Origins whose orthos the worker keeps, and the version they are at.
    stored: HashMap<u32, u32>,
}

struct AttemptEntry {
    worker: WorkerId,
    version: u32,
    origin: u32,
    lease_until: Instant,
    /// Orthos the attempt reported so far, for the rate.
    orthos: u64,
}

/// A connected worker as status reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// Session id.
    pub id: WorkerId,
    /// Display name.
    pub name: String,
    /// Search threads.
    pub threads: u32,
    /// Shards held now, as (version, origin).
    pub shards: Vec<(u32, u32)>,
    /// Shards finished in this session.
    pub shards_done: u64,
    /// Time since it connected.
    pub connected_ms: u64,
}

/// All of the coordinator's bookkeeping.
pub struct Ledger {
    /// Every word, in token-id order; version `v` has the first
    /// `vocabulary` of them. Words are only ever appended.
    words: Vec<String>,
    versions: Vec<VersionLedger>,
    workers: HashMap<WorkerId, WorkerEntry>,
    attempts: HashMap<AttemptId, AttemptEntry>,
    next_worker: WorkerId,
    next_attempt: AttemptId,
    lease: Duration,
    /// (when, by whom, orthos) reported recently, for orthos per second.
    recent: VecDeque<(Instant, WorkerId, u64)>,
}

/// How far back the orthos-per-second rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Ledger {
    /// An empty ledger whose leases last `lease` past each report.
    pub fn new(lease: Duration) -> Self {
        Self {
            words: Vec::new(),
            versions: Vec::new(),
            workers: HashMap::new(),
            attempts: HashMap::new(),
            next_worker: 1,
            // Attempt ids start from the clock, so ids from before a restart
            // are never mistaken for new ones.
            next_attempt: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_micros() as u64),
            lease,
            recent: VecDeque::new(),
        }
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Adds the next version: `new_words` are the words its text added to
    /// the vocabulary (in token-id order), `weights[origin]` estimates the
    /// size of each shard (words with more completions tend to root bigger
    /// shards), and `known` holds the results already known for some shards
    /// (after a restart); the other shards become pending.
    pub fn add_version(
        &mut self,
        source: String,
        new_words: impl IntoIterator<Item = String>,
        weights: &[u32],
        known: impl IntoIterator<Item = (u32, ShardResult)>,
    ) -> u32 {
        let version = self.versions.len() as u32 + 1;
        self.words.extend(new_words);
        let vocabulary = self.words.len();
        let mut ledger = VersionLedger {
            version,
            source,
            vocabulary,
            shards: vec![Shard::PENDING; vocabulary],
            holders: HashMap::new(),
            pending: Vec::new(),
            done: 0,
            running: 0,
            figures: Figures::default(),
        };
        for (origin, result) in known {
            if let Some(shard) = ledger.shards.get_mut(origin as usize)
                && shard.state == ShardState::Pending
            {
                shard.count(&result, &mut ledger.figures);
                ledger.done += 1;
            }
        }
        // Hand the likely largest shards out first, so a big shard does not
        // start last.
        let mut pending: Vec<u32> = (0..vocabulary as u32)
            .filter(|&origin| ledger.shards[origin as usize].state == ShardState::Pending)
            .collect();
        pending.sort_by_key(|&origin| {
            (
                weights.get(origin as usize).copied().unwrap_or(0),
                std::cmp::Reverse(origin),
            )
        });
        ledger.pending = pending;
        self.versions.push(ledger);
        version
    }

    /// The words of `version`, in token-id order (empty for an unknown version).
    pub fn words(&self, version: u32) -> &[String] {
        self.version(version)
            .map_or(&[], |v| &self.words[..v.vocabulary])
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[VersionLedger] {
        &self.versions
    }

    /// One version.
    pub fn version(&self, version: u32) -> Option<&VersionLedger> {
        self.versions.get((version as usize).checked_sub(1)?)
    }

    /// Registers a worker session; `stored` lists the shards (origin,
    /// version) whose orthos it keeps from earlier sessions.
    pub fn add_worker(
        &mut self,
        name: String,
        threads: u32,
        stored: impl IntoIterator<Item = (u32, u32)>,
    ) -> WorkerId {
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(
            id,
            WorkerEntry {
                name,
                threads,
                attempts: Vec::new(),
                stalled: false,
                shards_done: 0,
                connected: Instant::now(),
                stored: stored.into_iter().collect(),
            },
        );
        id
    }

    /// Records how a finished shard was searched: from the orthos of
    /// `base_version` (0: from scratch), and whether `worker` kept them.
    pub fn record_search(
        &mut self,
        worker: WorkerId,
        finished: &Finished,
        base_version: u32,
        stored: bool,
    ) {
        if let Some(shard) = self
            .versions
            .get_mut(finished.version as usize - 1)
            .and_then(|version| version.shards.get_mut(finished.origin as usize))
        {
            shard.base_version = base_version;
        }
        if let Some(entry) = self.workers.get_mut(&worker) {
            if stored {
                entry.stored.insert(finished.origin, finished.version);
            } else {
                entry.stored.remove(&finished.origin);
            }
        }
    }

    /// Ends a worker session; the shards it held go back to pending.
    pub fn remove_worker(&mut self, worker: WorkerId) {
        if let Some(entry) = self.workers.remove(&worker) {
            for attempt in entry.attempts {
                self.release(attempt);
            }
        }
    }

    /// Hands out shards to every worker with room, oldest version first. A
    /// worker is offered first the shards whose orthos it keeps from an
    /// earlier version, which it can bring up to date incrementally.
    pub fn assign(&mut self, now: Instant) -> Vec<Assignment> {
        let mut assignments = Vec::new();
        let mut workers: Vec<WorkerId> = self.workers.keys().copied().collect();
        workers.sort_unstable();
        // Round-robin, one shard per worker per pass, so work spreads evenly.
        loop {
            let mut assigned_any = false;
            for &worker in &workers {
                let entry = &self.workers[&worker];
                if entry.stalled || entry.attempts.len() >= SHARDS_PER_WORKER {
                    continue;
                }
                let Some(version) = self.versions.iter_mut().find(|v| !v.pending.is_empty()) else {
                    return assignments;
                };
                let stored = &entry.stored;
                let kept = version
                    .pending
                    .iter()
                    .rposition(|origin| stored.get(origin).is_some_and(|&at| at < version.version));
                let origin = match kept {
                    Some(index) => version.pending.remove(index),
                    None => version.pending.pop().expect("version has pending shards"),
                };
                let attempt = self.next_attempt;
                self.next_attempt += 1;
                let shard = &mut version.shards[origin as usize];
                shard.state = ShardState::Running;
                shard.attempts_started += 1;
                version.holders.insert(origin, attempt);
                version.running += 1;
                let entry = AttemptEntry {
                    worker,
                    version: version.version,
                    origin,
                    lease_until: now + self.lease,
                    orthos: 0,
                };
                let version = version.version;
                self.attempts.insert(attempt, entry);
                self.workers
                    .get_mut(&worker)
                    .expect("worker listed")
                    .attempts
                    .push(attempt);
                assignments.push(Assignment {
                    worker,
                    attempt,
                    version,
                    origin,
                });
                assigned_any = true;
            }
            if !assigned_any {
                return assignments;
            }
        }
    }

    /// The vocabulary size of the version an attempt searches, if the attempt is live.
    pub fn attempt_vocabulary(&self, attempt: AttemptId) -> Option<usize> {
        let entry = self.attempts.get(&attempt)?;
        Some(self.version(entry.version)?.vocabulary)
    }

    /// Any message from a worker shows it is alive: it may take shards
    /// again. Returns whether it was stalled, in which case the caller must
    /// offer it work ([`Ledger::assign`]): nothing else may happen that would.
    pub fn heard_from(&mut self, worker: WorkerId) -> bool {
        self.workers
            .get_mut(&worker)
            .is_some_and(|entry| std::mem::replace(&mut entry.stalled, false))
    }

    /// A progress report: renews the attempt's lease and feeds the rate.
    pub fn progress(
        &mut self,
        worker: WorkerId,
        attempt: AttemptId,
        orthos: u64,
        now: Instant,
    ) -> Result<(), Refusal> {
        let lease = self.lease;
        let entry = self.held(worker, attempt)?;
        entry.lease_until = now + lease;
        let delta = orthos.saturating_sub(entry.orthos);
        entry.orthos = entry.orthos.max(orthos);
        self.record_rate(now, worker, delta);
        Ok(())
    }

    /// A finished attempt: its shard's figures become final.
    pub fn complete(
        &mut self,
        worker: WorkerId,
        attempt: AttemptId,
        result: &ShardResult,
    ) -> Result<Finished, Refusal> {
        let entry = self.held(worker, attempt)?;
        let (version, origin) = (entry.version as usize - 1, entry.origin);
        // A live attempt always holds its shard; checked anyway, because
        // counting a shard twice is the one mistake the ledger must not make.
        if !self.versions[version].held_by(origin, attempt) {
            return Err(Refusal::StaleAttempt(attempt));
        }
        let entry = self
            .attempts
            .remove(&attempt)
            .expect("attempt was just found");
        // The rate counts what the attempt's progress reports said it found
        // (the last one comes just before completion): the shard's total
        // would count again the orthos a kept shard had stored.
        if let Some(worker) = self.workers.get_mut(&worker) {
            worker.attempts.retain(|&held| held != attempt);
            worker.shards_done += 1;
        }
        let version = &mut self.versions[version];
        version.holders.remove(&origin);
        version.shards[origin as usize].count(result, &mut version.figures);
        version.running -= 1;
        version.done += 1;
        Ok(Finished {
            version: entry.version,
            origin: entry.origin,
            version_done: version.is_done(),
        })
    }

    /// A worker hands an attempt back; the shard becomes pending again.
    pub fn hand_back(&mut self, worker: WorkerId, attempt: AttemptId) -> Result<(), Refusal> {
        self.held(worker, attempt)?;
        self.release(attempt);
        Ok(())
    }

    /// Releases every attempt whose lease ran out; returns them with the
    /// worker that held each, which is stalled until heard from again.
    pub fn expire_leases(&mut self, now: Instant) -> Vec<(WorkerId, AttemptId)> {
        let expired: Vec<(WorkerId, AttemptId)> = self
            .attempts
            .iter()
            .filter(|(_, entry)| entry.lease_until <= now)
            .map(|(&attempt, entry)| (entry.worker, attempt))
            .collect();
        for &(worker, attempt) in &expired {
            if let Some(worker) = self.workers.get_mut(&worker) {
                worker.stalled = true;
            }
            self.release(attempt);
        }
        expired
    }

    /// The connected workers.
    pub fn workers(&self, now: Instant) -> Vec<WorkerSummary> {
        let mut workers: Vec<WorkerSummary> = self
            .workers
            .iter()
            .map(|(&id, entry)| WorkerSummary {
                id,
                name: entry.name.clone(),
                threads: entry.threads,
                shards: entry
                    .attempts
                    .iter()
                    .filter_map(|attempt| self.attempts.get(attempt))
                    .map(|a| (a.version, a.origin))
                    .collect(),
                shards_done: entry.shards_done,
                connected_ms: now.duration_since(entry.connected).as_millis() as u64,
            })
            .collect();
        workers.sort_by_key(|worker| worker.id);
        workers
    }

    /// Every shard of `version`, by origin, or `None` for an unknown version.
    pub fn shards(&self, version: u32) -> Option<Vec<ShardSummary>> {
        let version = self.version(version)?;
        let phase = |origin: u32, state: ShardState| match state {
            ShardState::Pending => ShardPhase::Pending,
            ShardState::Done => ShardPhase::Done,
            ShardState::Running => {
                let worker = version
                    .holders
                    .get(&origin)
                    .and_then(|attempt| self.attempts.get(attempt))
                    .map_or(0, |entry| entry.worker);
                let name = self
                    .workers
                    .get(&worker)
                    .map(|entry| entry.name.clone())
                    .unwrap_or_default();
                ShardPhase::Running { worker, name }
            }
        };
        Some(
            (0u32..)
                .zip(&version.shards)
                .map(|(origin, shard)| ShardSummary {
                    origin,
                    phase: phase(origin, shard.state),
                    attempts_started: shard.attempts_started.into(),
                    attempts_discarded: shard.attempts_discarded.into(),
                    times_counted: shard.counted.into(),
                    contributed: (shard.state == ShardState::Done)
                        .then_some((shard.orthos, shard.frontier)),
                    base_version: shard.base_version,
                })
                .collect(),
        )
    }

    /// New orthos found per second over the last few seconds: what the
    /// reports of that time add up to, over the time they span (at least a
    /// second), so the rate is not diluted while a search starts.
    pub fn orthos_per_second(&mut self, now: Instant) -> f64 {
        self.trim_rate(now);
        let Some(&(oldest, _, _)) = self.recent.front() else {
            return 0.0;
        };
        let total: u64 = self.recent.iter().map(|&(_, _, orthos)| orthos).sum();
        total as f64 / Self::rate_span(now, oldest).as_secs_f64()
    }

    /// Each worker's share of [`Ledger::orthos_per_second`] (workers that
    /// reported nothing new lately are absent).
    pub fn orthos_per_second_by_worker(&mut self, now: Instant) -> HashMap<WorkerId, f64> {
        self.trim_rate(now);
        let Some(&(oldest, _, _)) = self.recent.front() else {
            return HashMap::new();
        };
        let span = Self::rate_span(now, oldest).as_secs_f64();
        let mut rates = HashMap::new();
        for &(_, worker, orthos) in &self.recent {
            *rates.entry(worker).or_insert(0.0) += orthos as f64 / span;
        }
        rates
    }

    /// The time the rate's reports span: at least a second, so the rate is
    /// not inflated while a search starts.
    fn rate_span(now: Instant, oldest: Instant) -> Duration {
        now.duration_since(oldest)
            .clamp(Duration::from_secs(1), RATE_WINDOW)
    }

    fn held(&mut self, worker: WorkerId, attempt: AttemptId) -> Result<&mut AttemptEntry, Refusal> {
        match self.attempts.get_mut(&attempt) {
            Some(entry) if entry.worker == worker => Ok(entry),
            _ => Err(Refusal::StaleAttempt(attempt)),
        }
    }

    /// Puts an attempt's shard back into pending and forgets the attempt.
    fn release(&mut self, attempt: AttemptId) {
        let Some(entry) = self.attempts.remove(&attempt) else {
            return;
        };
        if let Some(worker) = self.workers.get_mut(&entry.worker) {
            worker.attempts.retain(|&held| held != attempt);
        }
        let version = &mut self.versions[entry.version as usize - 1];
        if version.held_by(entry.origin, attempt) {
            version.holders.remove(&entry.origin);
            let shard = &mut version.shards[entry.origin as usize];
            shard.state = ShardState::Pending;
            shard.attempts_discarded += 1;
            version.running -= 1;
            // Retried shards go first: they are what the version waits on.
            version.pending.push(entry.origin);
        }
    }

    fn record_rate(&mut self, now: Instant, worker: WorkerId, orthos: u64) {
        if orthos > 0 {
            self.recent.push_back((now, worker, orthos));
        }
        self.trim_rate(now);
    }

    fn trim_rate(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|&(at, _, _)| now.duration_since(at) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::{Interner, Token};
    use crate::ortho::Ortho;

    /// The words of a text, in token-id order.
    fn words(text: &str) -> Vec<String> {
        Interner::from_texts([text]).words().to_vec()
    }

    fn ledger_with(text: &str) -> Ledger {
        let mut ledger = Ledger::new(Duration::from_secs(5));
        ledger.add_version("t".into(), words(text), &[], []);
        ledger
    }

    fn result(orthos: u64, token: u32) -> ShardResult {
        ShardResult {
            orthos,
            frontier: 1,
            optimal: Some(Ortho::new(&[2, 2], &[Some(Token(token)), None, None, None]).unwrap()),
        }
    }

    #[test]
    fn versions_share_one_word_list_and_a_shard_stays_small() {
        let mut ledger = ledger_with("a b c");
        ledger.add_version("empty".into(), Vec::new(), &[], []);
        ledger.add_version("more".into(), vec!["d".into()], &[], []);
        assert_eq!(ledger.words(1), ledger.words(2));
        assert_eq!(ledger.words(3).len(), 4);
        assert_eq!(ledger.words(3)[..3], *ledger.words(1));
        assert!(ledger.words(4).is_empty());
        // Every version keeps one per word; 100 versions of a 1,000-word
        // text cost a few MB.
        assert!(std::mem::size_of::<Shard>() <= 32);
    }

    #[test]
    fn the_heaviest_shards_are_handed_out_first() {
        let mut ledger = Ledger::new(Duration::from_secs(5));
        ledger.add_version("t".into(), words("a b c d"), &[1, 5, 0, 3], []);
        ledger.add_worker("w".into(), 1, []);
        let first: Vec<u32> = ledger
            .assign(Instant::now())
            .iter()
            .map(|a| a.origin)
            .collect();
        assert_eq!(first.len(), SHARDS_PER_WORKER);
        assert!(first.contains(&1) && first.contains(&3), "{first:?}");
    }

    #[test]
    fn every_shard_is_assigned_once_and_counted_once() {
        let mut ledger = ledger_with("a b c");
        let now = Instant::now();
        let worker = ledger.add_worker("w".into(), 1, []);
        let mut origins = Vec::new();
        loop {
            let assignments = ledger.assign(now);
            if assignments.is_empty() {
                break;
            }
            for a in assignments {
                origins.push(a.origin);
                let finished = ledger
                    .complete(worker, a.attempt, &result(2, a.origin))
                    .unwrap();
                assert_eq!(finished.version_done, origins.len() == 3);
                // A second report of the same attempt is refused.
                assert!(
                    ledger
                        .complete(worker, a.attempt, &result(2, a.origin))
                        .is_err()
                );
            }
        }
        origins.sort_unstable();
        assert_eq!(origins, vec![0, 1, 2]);
        let version = ledger.version(1).unwrap();
        assert!(version.is_done());
        assert_eq!(version.figures().orthos, 6);
        assert_eq!(version.figures().frontier, 3);
    }

    #[test]
    fn a_lost_worker_frees_its_shards_and_its_late_reports_are_refused() {
        let mut ledger = ledger_with("a b c");
        let now = Instant::now();
        let lost = ledger.add_worker("lost".into(), 1, []);
        let held = ledger.assign(now);
        assert_eq!(held.len(), SHARDS_PER_WORKER);
        ledger.remove_worker(lost);
        assert!(
            ledger
                .complete(lost, held[0].attempt, &result(5, 0))
                .is_err()
        );
        let other = ledger.add_worker("other".into(), 1, []);
        let again = ledger.assign(now);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|a| a.worker == other));
        assert_eq!(ledger.version(1).unwrap().attempts_discarded(), 2);
        assert_eq!(ledger.version(1).unwrap().figures().orthos, 0);
    }

    #[test]
    fn expired_leases_return_shards_unless_renewed() {
        let mut ledger = ledger_with("a b");
        let start = Instant::now();
        let worker = ledger.add_worker("w".into(), 1, []);
        let held = ledger.assign(start);
        let later = start + Duration::from_secs(4);
        ledger.progress(worker, held[0].attempt, 10, later).unwrap();
        assert_eq!(
            ledger.expire_leases(start + Duration::from_secs(6)),
            vec![(worker, held[1].attempt)]
        );
        assert!(
            ledger
                .complete(worker, held[1].attempt, &result(1, 1))
                .is_err()
        );
        assert!(
            ledger
                .complete(worker, held[0].attempt, &result(1, 0))
                .is_ok()
        );
    }

    #[test]
    fn a_worker_whose_lease_ran_out_gets_no_shards_until_heard_from() {
        let mut ledger = ledger_with("a b c d e");
        let start = Instant::now();
        let frozen = ledger.add_worker("frozen".into(), 1, []);
        let held = ledger.assign(start);
        assert!(held.iter().all(|a| a.worker == frozen));
        let later = start + Duration::from_secs(6);
        assert_eq!(ledger.expire_leases(later).len(), held.len());
        let alive = ledger.add_worker("alive".into(), 1, []);
        let next = ledger.assign(later);
        assert!(!next.is_empty());
        assert!(
            next.iter().all(|a| a.worker == alive),
            "the frozen worker got {next:?}"
        );
        assert!(ledger.heard_from(frozen), "it was stalled");
        assert!(!ledger.heard_from(frozen), "it is stalled no more");
        assert!(ledger.assign(later).iter().any(|a| a.worker == frozen));
    }

    #[test]
    fn known_results_after_a_restart_are_not_searched_again() {
        let mut ledger = Ledger::new(Duration::from_secs(5));
        ledger.add_version("t".into(), words("a b c"), &[], [(1, result(7, 1))]);
        let worker = ledger.add_worker("w".into(), 1, []);
        let mut origins: Vec<u32> = Vec::new();
        for _ in 0..3 {
            for a in ledger.assign(Instant::now()) {
                origins.push(a.origin);
                ledger
                    .complete(worker, a.attempt, &result(1, a.origin))
                    .unwrap();
            }
        }
        origins.sort_unstable();
        assert_eq!(origins, vec![0, 2]);
        assert_eq!(ledger.version(1).unwrap().figures().orthos, 9);
    }

    #[test]
    fn the_version_optimum_is_the_best_shard_optimum() {
        let mut ledger = ledger_with("a b");
        let worker = ledger.add_worker("w".into(), 1, []);
        for a in ledger.assign(Instant::now()) {
            ledger
                .complete(worker, a.attempt, &result(1, a.origin))
                .unwrap();
        }
        let best = ledger
            .version(1)
            .unwrap()
            .figures()
            .optimal
            .clone()
            .unwrap();
        // Equal (volume, fullness): the smaller payload wins.
        assert_eq!(best.raw_slots()[0], 0);
    }

    fn shard(ledger: &Ledger, origin: u32) -> ShardSummary {
        ledger.shards(1).unwrap()[origin as usize].clone()
    }

    #[test]
    fn a_finished_shard_is_counted_once_and_a_repeated_report_changes_nothing() {
        let mut ledger = ledger_with("a b");
        let now = Instant::now();
        let worker = ledger.add_worker("w".into(), 1, []);
        let held = ledger.assign(now);
        let first = held[0];
        assert_eq!(shard(&ledger, first.origin).times_counted, 0);
        ledger
            .complete(worker, first.attempt, &result(4, first.origin))
            .unwrap();
        let counted = shard(&ledger, first.origin);
        assert_eq!(counted.phase, ShardPhase::Done);
        assert_eq!(counted.times_counted, 1);
        assert_eq!(counted.attempts_started, 1);
        assert_eq!(counted.contributed, Some((4, 1)));

        // The same attempt reporting again is refused and counts nothing.
        assert!(
            ledger
                .complete(worker, first.attempt, &result(4, first.origin))
                .is_err()
        );
        assert_eq!(shard(&ledger, first.origin), counted);
        assert_eq!(ledger.version(1).unwrap().figures().orthos, 4);
    }

    #[test]
    fn a_lost_attempt_is_discarded_and_its_late_result_is_not_counted() {
        let mut ledger = ledger_with("a");
        let start = Instant::now();
        let frozen = ledger.add_worker("frozen".into(), 1, []);
        let lost = ledger.assign(start)[0];
        assert_eq!(
            shard(&ledger, 0).phase,
            ShardPhase::Running {
                worker: frozen,
                name: "frozen".into()
            }
        );
        assert_eq!(
            ledger.expire_leases(start + Duration::from_secs(6)).len(),
            1
        );
        let expired = shard(&ledger, 0);
        assert_eq!(expired.phase, ShardPhase::Pending);
        assert_eq!(
            (expired.attempts_started, expired.attempts_discarded),
            (1, 1)
        );
        assert_eq!(ledger.version(1).unwrap().attempts_discarded(), 1);

        let alive = ledger.add_worker("alive".into(), 1, []);
        let retry = ledger.assign(start)[0];
        assert_eq!((retry.worker, retry.origin), (alive, 0));
        ledger
            .complete(alive, retry.attempt, &result(3, 0))
            .unwrap();
        // The frozen worker wakes up and reports its lost attempt.
        assert!(
            ledger
                .complete(frozen, lost.attempt, &result(3, 0))
                .is_err()
        );
        let done = shard(&ledger, 0);
        assert_eq!(done.phase, ShardPhase::Done);
        assert_eq!(done.times_counted, 1);
        assert_eq!((done.attempts_started, done.attempts_discarded), (2, 1));
        assert_eq!(ledger.version(1).unwrap().figures().orthos, 3);
    }

    #[test]
    fn every_way_of_losing_an_attempt_is_counted_as_discarded() {
        let mut ledger = ledger_with("a b c");
        let now = Instant::now();
        let first = ledger.add_worker("first".into(), 1, []);
        let held = ledger.assign(now);
        ledger.hand_back(first, held[0].attempt).unwrap();
        ledger.remove_worker(first);
        let version = ledger.version(1).unwrap();
        assert_eq!(version.attempts_discarded(), 2);
        assert_eq!(version.shards_running(), 0);
        let shards = ledger.shards(1).unwrap();
        for a in &held {
            let lost = &shards[a.origin as usize];
            assert_eq!(lost.phase, ShardPhase::Pending);
            assert_eq!((lost.attempts_started, lost.attempts_discarded), (1, 1));
            assert_eq!(lost.times_counted, 0);
            assert_eq!(lost.contributed, None);
        }
        // Refusing a stale hand-back discards nothing more.
        assert!(ledger.hand_back(first, held[1].attempt).is_err());
        assert_eq!(ledger.version(1).unwrap().attempts_discarded(), 2);
    }

    #[test]
    fn shards_restored_after_a_restart_are_counted_once_with_no_attempts() {
        let mut ledger = Ledger::new(Duration::from_secs(5));
        // A duplicate record, or one outside the vocabulary, counts nothing.
        ledger.add_version(
            "t".into(),
            words("a b"),
            &[],
            [(1, result(7, 1)), (1, result(7, 1)), (9, result(5, 0))],
        );
        let restored = shard(&ledger, 1);
        assert_eq!(restored.phase, ShardPhase::Done);
        assert_eq!(restored.times_counted, 1);
        assert_eq!(restored.attempts_started, 0);
        assert_eq!(restored.contributed, Some((7, 1)));
        assert_eq!(shard(&ledger, 0).phase, ShardPhase::Pending);
        assert_eq!(ledger.version(1).unwrap().figures().orthos, 7);
        assert!(ledger.shards(2).is_none());
    }

    #[test]
    fn a_worker_is_offered_the_shards_it_keeps_first() {
        let mut ledger = ledger_with("a b c d e f");
        let keeper = ledger.add_worker("keeper".into(), 1, []);
        let now = Instant::now();
        // Version 1 goes to the one worker; it keeps shards 1 and 4.
        loop {
            let assigned = ledger.assign(now);
            if assigned.is_empty() {
                break;
            }
            for a in assigned {
                let finished = ledger
                    .complete(keeper, a.attempt, &result(1, a.origin))
                    .unwrap();
                ledger.record_search(keeper, &finished, 0, [1, 4].contains(&a.origin));
            }
        }
        assert!(ledger.version(1).unwrap().is_done());
        // The second text adds no word.
        ledger.add_version("u".into(), Vec::new(), &[], []);
        let other = ledger.add_worker("other".into(), 1, [(2, 1)]);
        let offered: Vec<(WorkerId, u32)> = ledger
            .assign(now)
            .iter()
            .map(|a| (a.worker, a.origin))
            .collect();
        // Each worker first gets a shard it keeps, whatever the size order.
        assert!(offered.contains(&(other, 2)), "{offered:?}");
        let kept: Vec<u32> = offered
            .iter()
            .filter(|(worker, _)| *worker == keeper)
            .map(|&(_, origin)| origin)
            .collect();
        assert_eq!(kept.len(), SHARDS_PER_WORKER);
        assert!(
            kept.iter().all(|origin| [1, 4].contains(origin)),
            "{kept:?}"
        );
    }
}
