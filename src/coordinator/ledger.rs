//! The coordinator's bookkeeping, free of I/O: versions and their units
//! (see [`super::units`]), workers, attempts and leases, splits, and the
//! figures added up from finished units.
//!
//! Exactness lives here. A unit's figures at a version count once, when the
//! attempt currently holding it reports completion; so do the units it was
//! split into, in the same step. Reports from any other attempt (lost,
//! expired, handed back) are refused, so nothing is counted twice or lost: a
//! lost attempt is redone whole. A unit is searched at version `v + 1` only
//! once its search at `v` is final, since a split at `v` changes what it
//! covers.
//!
//! Each unit keeps its own tally per version (attempts started and discarded,
//! times counted, what it contributed) so that status can show it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::units::{Unit, UnitDef, deal_roots};
use crate::ids::{AttemptId, UnitId};
use crate::interner::Version;
use crate::ortho::Ortho;
use crate::search::{Dedup, Figures};

/// Units a worker may hold at once: one searched, one waiting, so a worker
/// never idles for a round trip between units.
pub const UNITS_PER_WORKER: usize = 2;

/// Units a version's new first words are dealt into.
pub const FIRST_UNITS: usize = 16;

/// Default for [`Ledger::set_split_from`]: the fewest orthos found but not
/// yet expanded that make a running unit worth splitting for an idle worker.
pub const DEFAULT_SPLIT_FROM: u64 = 256;

/// Default for [`Ledger::set_unit_orthos`]: the orthos an attempt may
/// expand before it hands the rest of its unit off.
pub const DEFAULT_UNIT_ORTHOS: u64 = 1 << 18;

/// Most ready units a worker passes over because another worker keeps them
/// (and would bring them up to date for less), before it takes one anyway.
const MOST_PASSED_OVER: usize = 64;

/// At most this many new units come out of one split.
const MOST_PARTS: u32 = 8;

/// Identifies a worker session (a new one each time a worker connects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A unit handed to a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The worker it goes to.
    pub worker: WorkerId,
    /// The attempt's id.
    pub attempt: AttemptId,
    /// The version to search.
    pub version: Version,
    /// The unit.
    pub unit: UnitId,
    /// Its roots and exclusions, as ortho lists.
    pub roots: Arc<Vec<u8>>,
    /// See [`Assignment::roots`].
    pub excluded: Arc<Vec<u8>>,
    /// The version whose searched orthos the worker kept from the counted
    /// attempt and may bring up to date (0: from scratch).
    pub base_version: Version,
    /// How the search avoids duplicates.
    pub dedup: Dedup,
    /// Orthos the attempt may expand before it hands the rest off (0: no limit).
    pub most_orthos: u64,
}

impl Assignment {
    /// The assignment as the worker receives it.
    pub fn to_wire(&self) -> crate::proto::v1::Assign {
        crate::proto::v1::Assign {
            attempt: self.attempt.0,
            version: self.version.get(),
            unit: self.unit.0,
            roots: self.roots.as_ref().clone(),
            excluded: self.excluded.as_ref().clone(),
            base_version: self.base_version.get(),
            dedup: crate::proto::dedup_of(self.dedup) as i32,
            most_orthos: self.most_orthos,
        }
    }
}

/// A request that a running unit be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitRequest {
    /// The worker holding it.
    pub worker: WorkerId,
    /// The attempt.
    pub attempt: AttemptId,
    /// Into how many new units, at most.
    pub parts: u32,
}

/// Why a worker's report was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The attempt is not (or no longer) held by this worker.
    #[error("attempt {0} is not held by this worker (lost, expired or already finished)")]
    StaleAttempt(AttemptId),
    /// The report cannot be right (a split nobody asked for, a handed-off
    /// ortho outside the vocabulary).
    #[error("attempt {0} sent a malformed result: {1}")]
    Malformed(AttemptId, String),
}

/// What an attempt reports when it finishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitResult {
    /// The unit's figures at the version (without what it handed off).
    pub figures: Figures,
    /// The version its search was brought up from (0: from scratch).
    pub base_version: Version,
    /// Orthos the attempt expanded (its work).
    pub expanded: u64,
    /// Whether the worker kept the searched orthos.
    pub kept: bool,
}

/// A unit's result as stored, with the attempt that was counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountedResult {
    /// The result.
    pub result: UnitResult,
    /// The attempt it came from.
    pub attempt: AttemptId,
}

/// A unit that just finished at a version.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The version.
    pub version: Version,
    /// The unit.
    pub unit: UnitId,
    /// What was counted.
    pub counted: CountedResult,
    /// Whether this was the version's last unit.
    pub version_done: bool,
}

/// A running unit that just handed part of its work off.
#[derive(Clone, Debug)]
pub struct Split {
    /// The unit, as it is now (with the new exclusions).
    pub unit: UnitDef,
    /// The new units, one per part handed off.
    pub new_units: Vec<UnitDef>,
}

/// What a worker reports on a running attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The unit's orthos so far.
    pub orthos: u64,
    /// Leaves found since the last report.
    pub frontier_added: u64,
    /// Former leaves that gained children since the last report.
    pub frontier_removed: u64,
    /// The unit's best ortho so far, when it improved.
    pub optimal: Option<Ortho>,
    /// Orthos found and not expanded yet.
    pub queued: u64,
    /// Orthos the attempt expanded so far.
    pub expanded: u64,
    /// CPU time of the worker's process, in milliseconds.
    pub cpu_ms: u64,
}

/// A running attempt's figures so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// The unit's orthos so far.
    pub orthos: u64,
    /// Its leaves so far.
    pub frontier: u64,
    /// Its best ortho so far.
    pub optimal: Option<Ortho>,
    /// Orthos found and not expanded yet.
    pub queued: u64,
    /// Orthos the attempt expanded so far.
    pub expanded: u64,
}

/// Where a unit stands at one version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskState {
    /// Waiting for its search at the previous version to become final.
    Waiting,
    /// Ready for a worker.
    Ready,
    /// Held by this attempt.
    Running(AttemptId),
    /// Counted.
    Done,
}

/// One unit at one version.
#[derive(Clone, Debug)]
struct Task {
    state: TaskState,
    attempts_started: u32,
    attempts_discarded: u32,
    /// Results added to the version's figures: 0, then 1 when done.
    counted: u8,
    /// What the counted result added (zero until done).
    orthos: u64,
    frontier: u64,
    base_version: Version,
    split_into: u32,
    /// The counted attempt.
    attempt: AttemptId,
    /// How long the counted attempt ran.
    elapsed_ms: u64,
}

impl Task {
    fn new(state: TaskState) -> Self {
        Self {
            state,
            attempts_started: 0,
            attempts_discarded: 0,
            counted: 0,
            orthos: 0,
            frontier: 0,
            base_version: Version::ZERO,
            split_into: 0,
            attempt: AttemptId(0),
            elapsed_ms: 0,
        }
    }

    /// Marks the task done and records that `counted` was added to the
    /// version's figures. The only place a unit's result is counted.
    fn count(&mut self, counted: &CountedResult, figures: &mut Figures) {
        self.state = TaskState::Done;
        self.counted += 1;
        self.orthos = counted.result.figures.orthos;
        self.frontier = counted.result.figures.frontier;
        self.base_version = counted.result.base_version;
        self.attempt = counted.attempt;
        figures.add(&counted.result.figures);
    }
}

/// One version's units and the figures of those finished.
pub struct VersionLedger {
    /// The version number.
    pub version: Version,
    /// The name the text was submitted with.
    pub source: String,
    /// Number of token ids in this version.
    pub vocabulary: usize,
    tasks: HashMap<UnitId, Task>,
    /// Units in the order they joined the version.
    order: Vec<UnitId>,
    /// Units ready for a worker, retried ones first; entries no longer
    /// ready are skipped when met.
    ready: VecDeque<UnitId>,
    done: u32,
    running: u32,
    split: u32,
    figures: Figures,
}

impl VersionLedger {
    /// Whether every unit has finished.
    pub fn is_done(&self) -> bool {
        self.done as usize == self.tasks.len()
    }

    /// Figures of the finished units (final when [`VersionLedger::is_done`]).
    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// Units finished.
    pub fn units_done(&self) -> u32 {
        self.done
    }

    /// Units in all.
    pub fn units_total(&self) -> u32 {
        self.tasks.len() as u32
    }

    /// Units held by workers now.
    pub fn units_running(&self) -> u32 {
        self.running
    }

    /// Units waiting (for a worker, or for their previous version).
    pub fn units_pending(&self) -> u32 {
        self.units_total() - self.done - self.running
    }

    /// Units split while they ran.
    pub fn units_split(&self) -> u32 {
        self.split
    }

    /// Attempts whose results were thrown away.
    pub fn attempts_discarded(&self) -> u64 {
        self.tasks
            .values()
            .map(|task| u64::from(task.attempts_discarded))
            .sum()
    }

    fn add_task(&mut self, unit: UnitId, state: TaskState) {
        if self.tasks.insert(unit, Task::new(state)).is_none() {
            self.order.push(unit);
        }
        if state == TaskState::Ready {
            self.ready.push_back(unit);
        }
    }

    fn make_ready(&mut self, unit: UnitId, first: bool) {
        if let Some(task) = self.tasks.get_mut(&unit)
            && task.state == TaskState::Waiting
        {
            task.state = TaskState::Ready;
            if first {
                self.ready.push_front(unit);
            } else {
                self.ready.push_back(unit);
            }
        }
    }

    /// The next ready unit, if any, passing over up to [`MOST_PASSED_OVER`]
    /// units that `avoid` names (they stay first in line) unless only those
    /// are left.
    fn next_ready(&mut self, avoid: impl Fn(UnitId) -> bool) -> Option<UnitId> {
        let mut passed_over = Vec::new();
        let mut found = None;
        while let Some(unit) = self.ready.pop_front() {
            if self.tasks.get(&unit).map(|task| task.state) != Some(TaskState::Ready) {
                continue;
            }
            if passed_over.len() < MOST_PASSED_OVER && avoid(unit) {
                passed_over.push(unit);
                continue;
            }
            found = Some(unit);
            break;
        }
        if found.is_none() && !passed_over.is_empty() {
            found = Some(passed_over.remove(0));
        }
        for unit in passed_over.into_iter().rev() {
            self.ready.push_front(unit);
        }
        found
    }

    fn has_ready(&self) -> bool {
        self.ready
            .iter()
            .any(|unit| self.tasks.get(unit).map(|task| task.state) == Some(TaskState::Ready))
    }
}

struct WorkerEntry {
    name: String,
    threads: u32,
    attempts: Vec<AttemptId>,
    /// A lease of this worker ran out and it has not been heard from since:
    /// it gets no new units (it could be frozen rather than gone).
    stalled: bool,
    units_done: u64,
    connected: Instant,
    /// Units whose searched orthos the worker keeps: version and attempt.
    kept: HashMap<UnitId, (Version, AttemptId)>,
    /// Orthos expanded by its finished attempts.
    expanded: u64,
    /// CPU time of its process, as it last reported.
    cpu_ms: u64,
    /// Its recent expansions, for its rate.
    rate: Rate,
}

struct AttemptEntry {
    worker: WorkerId,
    version: Version,
    unit: UnitId,
    lease_until: Instant,
    started: Instant,
    live: Live,
    /// A split was asked for and not answered yet.
    split_asked: bool,
}

/// A connected worker as status reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSummary {
    /// Session id.
    pub id: WorkerId,
    /// Display name.
    pub name: String,
    /// Search threads.
    pub threads: u32,
    /// Units held now, as (version, unit).
    pub units: Vec<(Version, UnitId)>,
    /// Units finished in this session.
    pub units_done: u64,
    /// Time since it connected.
    pub connected_ms: u64,
    /// Orthos expanded in this session (running attempts so far included).
    pub orthos: u64,
    /// Orthos expanded per second recently.
    pub orthos_per_second: f64,
    /// CPU seconds of its process.
    pub cpu_seconds: f64,
}

/// Where a unit stands, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitPhase {
    /// Waiting for a worker, or for its previous version.
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

/// One unit at one version, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitSummary {
    /// The unit.
    pub unit: UnitId,
    /// The version it was created in.
    pub created: Version,
    /// The unit it was split from (0: none).
    pub parent: UnitId,
    /// Numbers of roots and exclusions.
    pub roots: u32,
    /// See [`UnitSummary::roots`].
    pub excluded: u32,
    /// Where it stands.
    pub phase: UnitPhase,
    /// Attempts handed to workers since the coordinator started.
    pub attempts_started: u64,
    /// Attempts whose results were thrown away.
    pub attempts_discarded: u64,
    /// Results added to the version's figures (at most 1).
    pub times_counted: u32,
    /// Orthos and frontier it added (done) or has so far (running).
    pub orthos: u64,
    /// See [`UnitSummary::orthos`].
    pub frontier: u64,
    /// The version its result was searched up from (0: from scratch).
    pub base_version: Version,
    /// New units it was split into at this version.
    pub split_into: u32,
    /// How long it has run (running) or its counted attempt ran (done).
    pub elapsed_ms: u64,
}

/// Orthos per second over a window of recent reports.
#[derive(Default)]
struct Rate {
    recent: VecDeque<(Instant, u64)>,
}

/// How far back a rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Rate {
    fn record(&mut self, now: Instant, orthos: u64) {
        if orthos > 0 {
            self.recent.push_back((now, orthos));
        }
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|&(at, _)| now.duration_since(at) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
    }

    /// What the reports of the window add up to, over the time they span
    /// (at least a second), so the rate is not diluted while a search starts.
    fn per_second(&mut self, now: Instant) -> f64 {
        self.trim(now);
        let Some(&(oldest, _)) = self.recent.front() else {
            return 0.0;
        };
        let total: u64 = self.recent.iter().map(|&(_, orthos)| orthos).sum();
        let span = now
            .duration_since(oldest)
            .clamp(Duration::from_secs(1), RATE_WINDOW);
        total as f64 / span.as_secs_f64()
    }
}

/// One version as stored, for [`Ledger::restore`].
pub struct RestoredVersion {
    /// The name it was submitted with.
    pub source: String,
    /// The words it added, in token-id order.
    pub new_words: Vec<String>,
}

/// All of the coordinator's bookkeeping.
pub struct Ledger {
    /// Every word, in token-id order; version `v` has the first
    /// `vocabulary` of them. Words are only ever appended.
    words: Vec<String>,
    units: HashMap<UnitId, Unit>,
    next_unit: UnitId,
    versions: Vec<VersionLedger>,
    workers: HashMap<WorkerId, WorkerEntry>,
    attempts: HashMap<AttemptId, AttemptEntry>,
    next_worker: WorkerId,
    next_attempt: AttemptId,
    lease: Duration,
    dedup: Dedup,
    split_from: u64,
    unit_orthos: u64,
    rate: Rate,
}

impl Ledger {
    /// An empty ledger whose leases last `lease` past each report, searching
    /// in `dedup` mode (units are split only in tree mode).
    pub fn new(lease: Duration, dedup: Dedup) -> Self {
        Self {
            words: Vec::new(),
            units: HashMap::new(),
            next_unit: UnitId(1),
            versions: Vec::new(),
            workers: HashMap::new(),
            attempts: HashMap::new(),
            next_worker: WorkerId(1),
            // Attempt ids start from the clock, so ids from before a restart
            // are never mistaken for new ones.
            next_attempt: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(AttemptId(1), |d| AttemptId(d.as_micros() as u64)),
            lease,
            dedup,
            split_from: DEFAULT_SPLIT_FROM,
            unit_orthos: DEFAULT_UNIT_ORTHOS,
            rate: Rate::default(),
        }
    }

    /// Splits running units only when they hold at least `orthos` found but
    /// not expanded (`u64::MAX`: never).
    pub fn set_split_from(&mut self, orthos: u64) {
        self.split_from = orthos;
    }

    /// Lets an attempt expand at most `orthos` orthos before it hands the
    /// rest of its unit off as new units (0: no limit).
    pub fn set_unit_orthos(&mut self, orthos: u64) {
        self.unit_orthos = orthos;
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How searches avoid duplicates.
    pub fn dedup(&self) -> Dedup {
        self.dedup
    }

    /// The units the next version's new first words are dealt into:
    /// `weights[token]` estimates how large a subtree each word roots, and
    /// the words from `known` on are new. They are stored with the text
    /// before the version is added ([`Ledger::add_version`]).
    pub fn first_units(&self, known: usize, weights: &[u32]) -> Vec<UnitDef> {
        let version = self.next_version();
        let tokens: Vec<(u32, u32)> = (known..weights.len())
            .map(|token| (token as u32, weights[token]))
            .collect();
        // In seen-set mode a unit must be whole first words, each alone.
        let groups = match self.dedup {
            Dedup::Tree => FIRST_UNITS,
            Dedup::SeenSet => tokens.len(),
        };
        (self.next_unit.0..)
            .map(UnitId)
            .zip(deal_roots(&tokens, groups))
            .map(|(id, roots)| UnitDef {
                id,
                created: version,
                parent: UnitId(0),
                roots,
                excluded: Vec::new(),
            })
            .collect()
    }

    /// Adds the next version: `new_words` are the words its text added (in
    /// token-id order) and `units` those of [`Ledger::first_units`]. Every
    /// existing unit is searched again in it, once its previous version is
    /// final.
    pub fn add_version(
        &mut self,
        source: String,
        new_words: impl IntoIterator<Item = String>,
        units: Vec<UnitDef>,
    ) -> Version {
        let version = self.push_version(source, new_words);
        for def in units {
            self.next_unit = self.next_unit.max(def.id.after(1));
            self.add_unit(def);
        }
        version
    }

    /// Rebuilds a ledger from what a coordinator stored: its versions, its
    /// units (as they are now) and the results counted so far.
    pub fn restore(
        &mut self,
        versions: Vec<RestoredVersion>,
        units: Vec<UnitDef>,
        results: Vec<(Version, UnitId, CountedResult)>,
    ) {
        for version in versions {
            self.push_version(version.source, version.new_words);
        }
        let mut units = units;
        units.sort_by_key(|def| def.id);
        for def in units {
            self.next_unit = self.next_unit.max(def.id.after(1));
            let (parent, created) = (def.parent, def.created);
            self.add_unit(def);
            // A unit split off another counts as that unit's split in the
            // version it was made in, whether or not its parent finished.
            if let Some(ledger) = self.versions.get_mut(created.get() as usize - 1)
                && let Some(task) = ledger.tasks.get_mut(&parent)
            {
                if task.split_into == 0 {
                    ledger.split += 1;
                }
                task.split_into += 1;
            }
        }
        let mut results = results;
        results.sort_by_key(|&(version, unit, _)| (version, unit));
        for (version, unit, counted) in results {
            let Some(ledger) = self
                .versions
                .get_mut((version.get() as usize).wrapping_sub(1))
            else {
                continue;
            };
            let Some(task) = ledger.tasks.get_mut(&unit) else {
                continue;
            };
            if task.state == TaskState::Done {
                continue;
            }
            task.count(&counted, &mut ledger.figures);
            ledger.done += 1;
            if let Some(next) = self.versions.get_mut(version.get() as usize) {
                next.make_ready(unit, false);
            }
        }
    }

    /// The version the next text becomes.
    fn next_version(&self) -> Version {
        Version::new(self.versions.len() as u32).next()
    }

    fn push_version(
        &mut self,
        source: String,
        new_words: impl IntoIterator<Item = String>,
    ) -> Version {
        let version = self.next_version();
        self.words.extend(new_words);
        let mut ledger = VersionLedger {
            version,
            source,
            vocabulary: self.words.len(),
            tasks: HashMap::new(),
            order: Vec::new(),
            ready: VecDeque::new(),
            done: 0,
            running: 0,
            split: 0,
            figures: Figures::default(),
        };
        // Every unit is searched again; it may start once its search at the
        // previous version is final.
        if let Some(previous) = self.versions.last() {
            for &unit in &previous.order {
                let state = match previous.tasks[&unit].state {
                    TaskState::Done => TaskState::Ready,
                    _ => TaskState::Waiting,
                };
                ledger.add_task(unit, state);
            }
        }
        self.versions.push(ledger);
        version
    }

    /// Adds a unit to the version it was created in (ready) and every later
    /// one (waiting for the version before).
    fn add_unit(&mut self, def: UnitDef) {
        let (id, created) = (def.id, def.created);
        self.units.insert(id, Unit::new(def));
        for ledger in self.versions.iter_mut().skip(created.get() as usize - 1) {
            let state = if ledger.version == created {
                TaskState::Ready
            } else {
                TaskState::Waiting
            };
            ledger.add_task(id, state);
        }
    }

    /// The words of `version`, in token-id order (empty for an unknown version).
    pub fn words(&self, version: Version) -> &[String] {
        self.version(version)
            .map_or(&[], |v| &self.words[..v.vocabulary])
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[VersionLedger] {
        &self.versions
    }

    /// One version.
    pub fn version(&self, version: Version) -> Option<&VersionLedger> {
        self.versions.get((version.get() as usize).checked_sub(1)?)
    }

    /// A version's running totals: its finished units' figures plus what
    /// its running attempts reported so far (its figures, once it is done).
    pub fn live_figures(&self, version: Version) -> Option<Figures> {
        let ledger = self.version(version)?;
        let mut figures = ledger.figures.clone();
        for attempt in self.attempts.values().filter(|a| a.version == version) {
            figures.add(&Figures {
                orthos: attempt.live.orthos,
                frontier: attempt.live.frontier,
                optimal: attempt.live.optimal.clone(),
            });
        }
        Some(figures)
    }

    /// Registers a worker session; `kept` lists the units (unit, version,
    /// attempt) whose searched orthos it keeps from earlier sessions.
    pub fn add_worker(
        &mut self,
        name: String,
        threads: u32,
        kept: impl IntoIterator<Item = (UnitId, Version, AttemptId)>,
    ) -> WorkerId {
        let id = self.next_worker;
        self.next_worker = WorkerId(id.0 + 1);
        self.workers.insert(
            id,
            WorkerEntry {
                name,
                threads,
                attempts: Vec::new(),
                stalled: false,
                units_done: 0,
                connected: Instant::now(),
                kept: kept
                    .into_iter()
                    .map(|(unit, version, attempt)| (unit, (version, attempt)))
                    .collect(),
                expanded: 0,
                cpu_ms: 0,
                rate: Rate::default(),
            },
        );
        id
    }

    /// Ends a worker session; the units it held go back to pending.
    pub fn remove_worker(&mut self, worker: WorkerId) {
        if let Some(entry) = self.workers.remove(&worker) {
            for attempt in entry.attempts {
                self.release(attempt);
            }
        }
    }

    /// Whether the counted attempt of `unit` at `version` is `attempt`.
    fn counted_attempt(&self, version: Version, unit: UnitId, attempt: AttemptId) -> bool {
        self.version(version)
            .and_then(|ledger| ledger.tasks.get(&unit))
            .is_some_and(|task| task.state == TaskState::Done && task.attempt == attempt)
    }

    /// Hands out ready units to every worker with room, oldest version
    /// first, one per worker per pass. A worker gets first the units whose
    /// orthos it keeps from their previous version.
    pub fn assign(&mut self, now: Instant) -> Vec<Assignment> {
        let mut assignments = Vec::new();
        let mut workers: Vec<WorkerId> = self.workers.keys().copied().collect();
        workers.sort_unstable();
        loop {
            let mut assigned_any = false;
            for &worker in &workers {
                let entry = &self.workers[&worker];
                if entry.stalled || entry.attempts.len() >= UNITS_PER_WORKER {
                    continue;
                }
                let Some(index) = self.versions.iter().position(VersionLedger::has_ready) else {
                    return assignments;
                };
                let Some((unit, base_version)) = self.unit_for(worker, index) else {
                    continue;
                };
                assignments.push(self.start_attempt(worker, index, unit, base_version, now));
                assigned_any = true;
            }
            if !assigned_any {
                return assignments;
            }
        }
    }

    /// The ready unit of version `self.versions[index]` that `worker`
    /// should search, and the version it brings it up from (0: afresh): a
    /// unit it keeps at the previous version (from the counted attempt),
    /// or else one no other live worker keeps, if there is one.
    fn unit_for(&mut self, worker: WorkerId, index: usize) -> Option<(UnitId, Version)> {
        let previous = self.versions[index].version.previous();
        let kept = self.workers[&worker]
            .kept
            .iter()
            .filter(|&(&unit, &(at, attempt))| {
                Some(at) == previous
                    && self.versions[index].tasks.get(&unit).map(|t| t.state)
                        == Some(TaskState::Ready)
                    && self.counted_attempt(at, unit, attempt)
            })
            .map(|(&unit, &(at, _))| (unit, at))
            .min();
        if let Some(kept) = kept {
            return Some(kept);
        }
        let workers = &self.workers;
        let kept_elsewhere = |unit| {
            workers.iter().any(|(&other, entry)| {
                other != worker
                    && !entry.stalled
                    && entry
                        .kept
                        .get(&unit)
                        .is_some_and(|&(at, _)| Some(at) == previous)
            })
        };
        let unit = self.versions[index].next_ready(kept_elsewhere)?;
        Some((unit, Version::ZERO))
    }

    /// Starts a new attempt of `worker` on `unit` of version
    /// `self.versions[index]`, leased from `now`.
    fn start_attempt(
        &mut self,
        worker: WorkerId,
        index: usize,
        unit: UnitId,
        base_version: Version,
        now: Instant,
    ) -> Assignment {
        let attempt = self.next_attempt;
        self.next_attempt = AttemptId(attempt.0 + 1);
        let ledger = &mut self.versions[index];
        let version = ledger.version;
        let task = ledger
            .tasks
            .get_mut(&unit)
            .expect("a ready unit has a task");
        task.state = TaskState::Running(attempt);
        task.attempts_started += 1;
        ledger.running += 1;
        self.attempts.insert(
            attempt,
            AttemptEntry {
                worker,
                version,
                unit,
                lease_until: now + self.lease,
                started: now,
                live: Live::default(),
                split_asked: false,
            },
        );
        self.workers
            .get_mut(&worker)
            .expect("worker listed")
            .attempts
            .push(attempt);
        let def = &self.units[&unit];
        Assignment {
            worker,
            attempt,
            version,
            unit,
            roots: def.roots_wire.clone(),
            excluded: def.excluded_wire.clone(),
            base_version,
            dedup: self.dedup,
            most_orthos: match self.dedup {
                Dedup::Tree => self.unit_orthos,
                Dedup::SeenSet => 0,
            },
        }
    }

    /// Running units to split so that idle workers find work: when workers
    /// have room and no unit is ready, the running units with the most
    /// orthos waiting to be expanded (at least the split threshold), one per
    /// free place. Each is asked once.
    pub fn splits(&mut self) -> Vec<SplitRequest> {
        if self.dedup != Dedup::Tree || self.versions.iter().any(VersionLedger::has_ready) {
            return Vec::new();
        }
        let free: usize = self
            .workers
            .values()
            .filter(|entry| !entry.stalled)
            .map(|entry| UNITS_PER_WORKER.saturating_sub(entry.attempts.len()))
            .sum();
        if free == 0 {
            return Vec::new();
        }
        let mut candidates: Vec<(u64, AttemptId)> = self
            .attempts
            .iter()
            .filter(|(_, entry)| !entry.split_asked && entry.live.queued >= self.split_from.max(2))
            .map(|(&attempt, entry)| (entry.live.queued, attempt))
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        candidates.truncate(free);
        let parts = (free as u32 + 1).clamp(2, MOST_PARTS);
        candidates
            .into_iter()
            .map(|(_, attempt)| {
                let entry = self.attempts.get_mut(&attempt).expect("listed");
                entry.split_asked = true;
                SplitRequest {
                    worker: entry.worker,
                    attempt,
                    parts,
                }
            })
            .collect()
    }

    /// The vocabulary size of the version an attempt searches, if the attempt is live.
    pub fn attempt_vocabulary(&self, attempt: AttemptId) -> Option<usize> {
        let entry = self.attempts.get(&attempt)?;
        Some(self.version(entry.version)?.vocabulary)
    }

    /// Any message from a worker shows it is alive: it may take units
    /// again. Returns whether it was stalled, in which case the caller must
    /// offer it work ([`Ledger::assign`]): nothing else may happen that would.
    pub fn heard_from(&mut self, worker: WorkerId) -> bool {
        self.workers
            .get_mut(&worker)
            .is_some_and(|entry| std::mem::replace(&mut entry.stalled, false))
    }

    /// A progress report: renews the attempt's lease and updates its live
    /// figures, the rates and the worker's CPU time.
    pub fn progress(
        &mut self,
        worker: WorkerId,
        attempt: AttemptId,
        report: Report,
        now: Instant,
    ) -> Result<(), Refusal> {
        let lease = self.lease;
        let entry = self.held(worker, attempt)?;
        entry.lease_until = now + lease;
        let delta = report.expanded.saturating_sub(entry.live.expanded);
        let live = &mut entry.live;
        live.orthos = report.orthos;
        live.frontier =
            (live.frontier + report.frontier_added).saturating_sub(report.frontier_removed);
        if report.optimal.is_some() {
            live.optimal = report.optimal;
        }
        live.queued = report.queued;
        live.expanded = live.expanded.max(report.expanded);
        self.rate.record(now, delta);
        if let Some(worker) = self.workers.get_mut(&worker) {
            worker.rate.record(now, delta);
            worker.cpu_ms = worker.cpu_ms.max(report.cpu_ms);
        }
        Ok(())
    }

    /// Part of a running attempt's unit handed off (as asked, or at its
    /// size limit): `parts`, one list of orthos per new unit, become new
    /// units at once, ready at the attempt's version and waiting at later
    /// ones, and the unit excludes them from then on. The attempt goes on
    /// with the rest; if it is lost later, the unit is searched again
    /// without what it handed off.
    pub fn split(
        &mut self,
        worker: WorkerId,
        attempt: AttemptId,
        parts: Vec<Vec<Ortho>>,
    ) -> Result<Split, Refusal> {
        let seen_set = self.dedup == Dedup::SeenSet;
        let entry = self.held(worker, attempt)?;
        if seen_set {
            return Err(Refusal::Malformed(
                attempt,
                "a split in seen-set mode".into(),
            ));
        }
        // It may be asked again once this split is in.
        entry.split_asked = false;
        let (version, unit) = (entry.version, entry.unit);
        let parts: Vec<Vec<Ortho>> = parts.into_iter().filter(|part| !part.is_empty()).collect();
        let first_id = self.next_unit;
        let new_units = self.units[&unit].def.split(parts, version, first_id);
        self.next_unit = self.next_unit.after(new_units.len() as u64);
        let owner = self.units.get_mut(&unit).expect("a task's unit exists");
        owner.exclude(new_units.iter().flat_map(|def| def.roots.iter().cloned()));
        let unit_def = owner.def.clone();
        for def in &new_units {
            self.add_unit(def.clone());
        }
        let ledger = &mut self.versions[version.get() as usize - 1];
        let task = ledger.tasks.get_mut(&unit).expect("a held unit has a task");
        if task.split_into == 0 && !new_units.is_empty() {
            ledger.split += 1;
        }
        task.split_into += new_units.len() as u32;
        Ok(Split {
            unit: unit_def,
            new_units,
        })
    }

    /// A finished attempt: its unit's figures at its version become final.
    pub fn complete(
        &mut self,
        worker: WorkerId,
        attempt: AttemptId,
        result: UnitResult,
        now: Instant,
    ) -> Result<Finished, Refusal> {
        let entry = self.held(worker, attempt)?;
        let (version, unit) = (entry.version, entry.unit);
        let elapsed_ms = now.duration_since(entry.started).as_millis() as u64;
        let live_expanded = entry.live.expanded;
        let index = version.get() as usize - 1;
        // A live attempt always holds its unit; checked anyway, because
        // counting a unit twice is the one mistake the ledger must not make.
        if self.versions[index].tasks.get(&unit).map(|t| t.state)
            != Some(TaskState::Running(attempt))
        {
            return Err(Refusal::StaleAttempt(attempt));
        }
        self.attempts.remove(&attempt);
        self.rate
            .record(now, result.expanded.saturating_sub(live_expanded));
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.attempts.retain(|&held| held != attempt);
            entry.units_done += 1;
            entry.expanded += result.expanded;
            entry
                .rate
                .record(now, result.expanded.saturating_sub(live_expanded));
            if result.kept {
                entry.kept.insert(unit, (version, attempt));
            } else {
                entry.kept.remove(&unit);
            }
        }
        let ledger = &mut self.versions[index];
        let task = ledger.tasks.get_mut(&unit).expect("checked above");
        let counted = CountedResult { result, attempt };
        task.count(&counted, &mut ledger.figures);
        task.elapsed_ms = elapsed_ms;
        ledger.running -= 1;
        ledger.done += 1;
        let version_done = ledger.is_done();
        if let Some(next) = self.versions.get_mut(index + 1) {
            next.make_ready(unit, false);
        }
        Ok(Finished {
            version,
            unit,
            counted,
            version_done,
        })
    }

    /// A worker hands an attempt back; the unit becomes pending again.
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
    pub fn workers(&mut self, now: Instant) -> Vec<WorkerSummary> {
        let live: HashMap<WorkerId, u64> =
            self.attempts
                .values()
                .fold(HashMap::new(), |mut live, attempt| {
                    *live.entry(attempt.worker).or_default() += attempt.live.expanded;
                    live
                });
        let mut workers: Vec<WorkerSummary> = self
            .workers
            .iter_mut()
            .map(|(&id, entry)| WorkerSummary {
                id,
                name: entry.name.clone(),
                threads: entry.threads,
                units: entry
                    .attempts
                    .iter()
                    .filter_map(|attempt| self.attempts.get(attempt))
                    .map(|a| (a.version, a.unit))
                    .collect(),
                units_done: entry.units_done,
                connected_ms: now.duration_since(entry.connected).as_millis() as u64,
                orthos: entry.expanded + live.get(&id).copied().unwrap_or(0),
                orthos_per_second: entry.rate.per_second(now),
                cpu_seconds: entry.cpu_ms as f64 / 1000.0,
            })
            .collect();
        workers.sort_by_key(|worker| worker.id);
        workers
    }

    /// Up to `limit` units of `version`: those running longest first, then
    /// the largest finished ones, then pending ones; `None` for an unknown
    /// version.
    pub fn units(&self, version: Version, limit: usize, now: Instant) -> Option<Vec<UnitSummary>> {
        let ledger = self.version(version)?;
        // Rank every unit by a cheap key, keep the first `limit`, and only
        // then build their summaries: status stays fast with 100,000 units.
        let mut ranked: Vec<((u8, u64), UnitId)> = ledger
            .order
            .iter()
            .map(|&unit| (self.rank(ledger, unit, now), unit))
            .collect();
        if limit < ranked.len() {
            ranked.select_nth_unstable(limit);
            ranked.truncate(limit);
        }
        ranked.sort_unstable();
        Some(
            ranked
                .into_iter()
                .map(|(_, unit)| self.unit_summary(ledger, unit, now))
                .collect(),
        )
    }

    /// Sort key of [`Ledger::units`]: running units, longest running first;
    /// then finished ones, largest first; then pending ones by id.
    fn rank(&self, ledger: &VersionLedger, unit: UnitId, now: Instant) -> (u8, u64) {
        let task = &ledger.tasks[&unit];
        match task.state {
            TaskState::Running(attempt) => {
                let elapsed = self.attempts.get(&attempt).map_or(0, |entry| {
                    now.duration_since(entry.started).as_millis() as u64
                });
                (0, u64::MAX - elapsed)
            }
            TaskState::Done => (1, u64::MAX - task.orthos),
            TaskState::Waiting | TaskState::Ready => (2, unit.0),
        }
    }

    fn unit_summary(&self, ledger: &VersionLedger, unit: UnitId, now: Instant) -> UnitSummary {
        let task = &ledger.tasks[&unit];
        let def = &self.units[&unit].def;
        let mut summary = UnitSummary {
            unit,
            created: def.created,
            parent: def.parent,
            roots: def.roots.len() as u32,
            excluded: def.excluded.len() as u32,
            phase: UnitPhase::Pending,
            attempts_started: task.attempts_started.into(),
            attempts_discarded: task.attempts_discarded.into(),
            times_counted: task.counted.into(),
            orthos: task.orthos,
            frontier: task.frontier,
            base_version: task.base_version,
            split_into: task.split_into,
            elapsed_ms: task.elapsed_ms,
        };
        match task.state {
            TaskState::Waiting | TaskState::Ready => {}
            TaskState::Done => summary.phase = UnitPhase::Done,
            TaskState::Running(attempt) => {
                let entry = self.attempts.get(&attempt);
                let worker = entry.map_or(WorkerId(0), |entry| entry.worker);
                let name = self
                    .workers
                    .get(&worker)
                    .map(|entry| entry.name.clone())
                    .unwrap_or_default();
                if let Some(entry) = entry {
                    summary.orthos = entry.live.orthos;
                    summary.frontier = entry.live.frontier;
                    summary.elapsed_ms = now.duration_since(entry.started).as_millis() as u64;
                }
                summary.phase = UnitPhase::Running { worker, name };
            }
        }
        summary
    }

    /// Orthos expanded per second over the last few seconds.
    pub fn orthos_per_second(&mut self, now: Instant) -> f64 {
        self.rate.per_second(now)
    }

    fn held(&mut self, worker: WorkerId, attempt: AttemptId) -> Result<&mut AttemptEntry, Refusal> {
        match self.attempts.get_mut(&attempt) {
            Some(entry) if entry.worker == worker => Ok(entry),
            _ => Err(Refusal::StaleAttempt(attempt)),
        }
    }

    /// Puts an attempt's unit back into pending and forgets the attempt.
    fn release(&mut self, attempt: AttemptId) {
        let Some(entry) = self.attempts.remove(&attempt) else {
            return;
        };
        if let Some(worker) = self.workers.get_mut(&entry.worker) {
            worker.attempts.retain(|&held| held != attempt);
        }
        let ledger = &mut self.versions[entry.version.get() as usize - 1];
        if let Some(task) = ledger.tasks.get_mut(&entry.unit)
            && task.state == TaskState::Running(attempt)
        {
            task.state = TaskState::Waiting;
            task.attempts_discarded += 1;
            ledger.running -= 1;
            // Retried units go first: they are what the version waits on.
            ledger.make_ready(entry.unit, true);
        }
    }
}

#[cfg(test)]
mod tests;
