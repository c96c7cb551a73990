//! Offline data sets: what the pipeline would have stored for one
//! experiment, written straight to Parquet with the pipeline's own writer,
//! for benchmarks and tests of the analysis at a size no HTTP load could
//! reach in minutes.
//!
//! The users are a [`Population`] (with its segment attributes, and
//! heavy-tailed [`Activity`] by default); each is assigned by the real
//! assignment hash (`strata_core::hash::bucket` of the unit id and the
//! experiment's salt) and exposed once, at a uniform time in the first half
//! of the experiment; its visits are spread uniformly between its exposure
//! and the end, with a share of them in the week before the start (so that
//! CUPED has a covariate), and each visit is a [`session`] of the behaviour
//! model under its variant's [`Effect`] (novelty included). A small share of
//! events is sent twice with the same `event_id`, as retrying clients do.
//!
//! Other experiments may run on the same units ([`Overlapping`]): each
//! takes its share of the units by the hash of a traffic salt, assigns
//! them by the hash of its own salt, and exposes each once at a uniform
//! time in the first half of the period. They change no behaviour (A/A),
//! and they draw from generators of their own, so a data set's
//! experiment and events are the same with or without them. This is how
//! the shared analysis of many experiments is measured.
//!
//! Everything is a function of the seed: the same configuration writes the
//! same rows. The records are `strata_pipeline::Record`s and the files are
//! written by `strata_pipeline::parquet::FileWriter`, so the schema and the
//! writer settings are exactly the pipeline's; a unit's exposure and events
//! go to the file of its user partition (`strata_pipeline::user_partition`),
//! as compaction would put them; with [`Layout::by_date`] also in the
//! directory of their UTC day, exactly as compaction lays them out
//! (`kind=events/date=YYYY-MM-DD/part=NN`).

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
use strata_pipeline::parquet::{partition_dir, FileWriter, DEFAULT_ROW_GROUP_ROWS};
use strata_pipeline::record::{utc_day, Event, Exposure, Kind, Record};
use strata_pipeline::user_partition;

use crate::behaviour::{session, Baseline, Effect, Interactions};
use crate::population::{Activity, Population, User};
use crate::SimError;

const DAY_US: i64 = 86_400_000_000;
/// Seconds between a visit's events.
const EVENT_GAP_US: i64 = 5_000_000;
/// `received_at − ts` of every record: a fixed delivery delay.
const RECEIVED_AFTER_US: i64 = 250_000;

/// One variant of the data set's experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Variant key.
    pub key: String,
    /// Traffic weight (relative).
    pub weight: f64,
    /// What the variant does to behaviour ([`Effect::NONE`] for the control).
    pub effect: Effect,
}

impl Variant {
    /// A control and a treatment of equal weights, the treatment's purchase
    /// rate `1 + lift` times the control's.
    pub fn control_and_treatment(lift: f64) -> Vec<Variant> {
        vec![
            Variant {
                key: "control".into(),
                weight: 1.0,
                effect: Effect::NONE,
            },
            Variant {
                key: "treatment".into(),
                weight: 1.0,
                effect: Effect {
                    purchase: 1.0 + lift,
                    ..Effect::NONE
                },
            },
        ]
    }
}

/// Another experiment running on the data set's units, with no effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlapping {
    /// Experiment key, also its assignment salt.
    pub experiment: String,
    /// Share of all units it exposes (0–1), chosen by the hash of the
    /// unit id and `"<experiment>:traffic"`.
    pub share: f64,
    /// Variant keys, of equal weights.
    pub variants: Vec<String>,
}

impl Overlapping {
    /// `count` experiments `<prefix>01`, `<prefix>02`, … each exposing
    /// `share` of the units, with the given variants.
    pub fn many(prefix: &str, count: usize, share: f64, variants: &[&str]) -> Vec<Overlapping> {
        (1..=count)
            .map(|i| Overlapping {
                experiment: format!("{prefix}{i:02}"),
                share,
                variants: variants.iter().map(|&v| v.to_owned()).collect(),
            })
            .collect()
    }

    /// The variant index of `unit`, or `None` when it is not in the
    /// experiment's traffic.
    pub fn variant_of(&self, unit: &str) -> Option<usize> {
        let buckets = f64::from(strata_core::hash::BUCKETS);
        let traffic = f64::from(strata_core::hash::bucket(
            unit,
            &format!("{}:traffic", self.experiment),
        ));
        if self.variants.is_empty() || traffic >= self.share * buckets {
            return None;
        }
        let point = f64::from(strata_core::hash::bucket(unit, &self.experiment)) / buckets;
        Some(((point * self.variants.len() as f64) as usize).min(self.variants.len() - 1))
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConfig {
    /// Experiment key, written in every exposure.
    pub experiment: String,
    /// Assignment salt (the experiment's).
    pub salt: String,
    /// Variants; the first is the control.
    pub variants: Vec<Variant>,
    /// Exposed units.
    pub units: u32,
    /// Mean visits per unit of activity 1, over the experiment and the
    /// pre-period together.
    pub visits_per_unit: f64,
    /// Share of visits in the week before the start.
    pub pre_period_share: f64,
    /// Share of events sent twice (same `event_id`).
    pub duplicate_rate: f64,
    /// Experiment start, µs since the epoch.
    pub start_us: i64,
    /// Experiment length in days.
    pub days: i64,
    /// How users' activity is spread.
    pub activity: Activity,
    /// Behaviour without any effect.
    pub baseline: Baseline,
    /// Interactions around each visit.
    pub interactions: Interactions,
    /// Random seed (of the population and of the behaviour).
    pub seed: u64,
    /// Other experiments exposing some of the same units.
    pub overlapping: Vec<Overlapping>,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            experiment: "exp_bench".into(),
            salt: "exp_bench".into(),
            variants: Variant::control_and_treatment(0.0),
            units: 1_000,
            visits_per_unit: 2.0,
            pre_period_share: 0.2,
            duplicate_rate: 0.0,
            start_us: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            days: 14,
            activity: Activity::Pareto {
                alpha: 1.2,
                cap: 200.0,
            },
            baseline: Baseline::default(),
            interactions: Interactions::default(),
            seed: 1,
            overlapping: Vec::new(),
        }
    }
}

impl DatasetConfig {
    /// The population the units are drawn from.
    pub fn population(&self) -> Population {
        Population::new(self.units, self.seed).with_activity(self.activity)
    }

    /// The variant of `user` by the assignment hash and the weights.
    pub fn variant_of(&self, user: &User) -> usize {
        let total: f64 = self.variants.iter().map(|v| v.weight).sum();
        let point = f64::from(strata_core::hash::bucket(&user.id, &self.salt))
            / f64::from(strata_core::hash::BUCKETS)
            * total;
        let mut upto = 0.0;
        for (i, v) in self.variants.iter().enumerate() {
            upto += v.weight;
            if point < upto {
                return i;
            }
        }
        self.variants.len().saturating_sub(1)
    }
}

/// One unit's records: its exposure, its exposures to the overlapping
/// experiments that take it (in their order), then its events in time
/// order (a duplicated event twice in a row).
pub fn unit_records(cfg: &DatasetConfig, index: u32) -> Vec<Record> {
    let user = cfg.population().user(index);
    let vi = cfg.variant_of(&user);
    let mut rng = StdRng::seed_from_u64(
        cfg.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(u64::from(index))
            ^ 0xD1B5_4A32_D192_ED03,
    );
    let start = cfg.start_us;
    let end = start + cfg.days * DAY_US;
    let exposed = start + (rng.random::<f64>() * (cfg.days * DAY_US / 2) as f64) as i64;
    let mut out = vec![Record::Exposure(Exposure {
        unit_id: user.id.clone(),
        experiment: cfg.experiment.clone(),
        variant: cfg.variants[vi].key.clone(),
        assigned_variant: cfg.variants[vi].key.clone(),
        opted_out: false,
        ts: exposed,
        received_at: exposed + RECEIVED_AFTER_US,
        attributes: BTreeMap::from([
            ("country".to_owned(), user.country.to_owned()),
            ("plan".to_owned(), user.plan.as_str().to_owned()),
            ("platform".to_owned(), user.platform.as_str().to_owned()),
        ]),
        is_bot: false,
    })];
    for (k, o) in cfg.overlapping.iter().enumerate() {
        let Some(v) = o.variant_of(&user.id) else {
            continue;
        };
        // A generator of its own: the main stream stays as it is.
        let mut own = StdRng::seed_from_u64(
            cfg.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from(index))
                .wrapping_mul(0xA24B_AED4_963E_E407)
                .wrapping_add(k as u64 + 1),
        );
        let at = start + (own.random::<f64>() * (cfg.days * DAY_US / 2) as f64) as i64;
        out.push(Record::Exposure(Exposure {
            unit_id: user.id.clone(),
            experiment: o.experiment.clone(),
            variant: o.variants[v].clone(),
            assigned_variant: o.variants[v].clone(),
            opted_out: false,
            ts: at,
            received_at: at + RECEIVED_AFTER_US,
            attributes: BTreeMap::new(),
            is_bot: false,
        }));
    }
    let mean = cfg.visits_per_unit * user.activity;
    let visits = Poisson::new(mean.max(1e-9)).map_or(0, |d| d.sample(&mut rng) as u64);
    let mut times: Vec<(i64, bool)> = (0..visits)
        .map(|_| {
            if rng.random::<f64>() < cfg.pre_period_share {
                let t = start - 7 * DAY_US + (rng.random::<f64>() * (7 * DAY_US) as f64) as i64;
                (t, true)
            } else {
                let t = exposed + (rng.random::<f64>() * (end - exposed) as f64) as i64;
                (t, false)
            }
        })
        .collect();
    times.sort_unstable();
    let mut n = 0u64;
    for (t, pre) in times {
        let effect = if pre {
            Effect::NONE
        } else {
            cfg.variants[vi]
                .effect
                .at((t - exposed) as f64 / DAY_US as f64)
        };
        let events = session(&cfg.baseline, &cfg.interactions, &user, &effect, &mut rng);
        for (k, (kind, value)) in events.into_iter().enumerate() {
            let ts = (t + k as i64 * EVENT_GAP_US).min(end - 1);
            let event = Event {
                event_id: format!("{}-{n}", user.id),
                unit_id: user.id.clone(),
                event_type: kind.to_owned(),
                ts,
                received_at: ts + RECEIVED_AFTER_US,
                value,
                properties: BTreeMap::new(),
                is_bot: false,
                opted_out: false,
            };
            n += 1;
            if cfg.duplicate_rate > 0.0 && rng.random::<f64>() < cfg.duplicate_rate {
                out.push(Record::Event(event.clone()));
            }
            out.push(Record::Event(event));
        }
    }
    out
}

/// What [`write_parquet`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Exposure rows.
    pub exposures: u64,
    /// Event rows (duplicates included).
    pub events: u64,
}

/// How [`write_layout`] lays the files out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// User partitions (at least 1).
    pub partitions: u32,
    /// Files under `kind=<kind>/date=YYYY-MM-DD/part=NN/` by the record's
    /// UTC day, as compaction writes them, instead of
    /// `<kind>/part=NN/`.
    pub by_date: bool,
    /// Events at or after this time (µs) are written under `held-back/`
    /// (same relative paths, file `hour.parquet`) instead: data that
    /// arrives later, which a benchmark moves into the tree.
    pub hold_back_from_us: Option<i64>,
}

impl Layout {
    /// The flat layout of [`write_parquet`].
    pub fn flat(partitions: u32) -> Self {
        Self {
            partitions,
            by_date: false,
            hold_back_from_us: None,
        }
    }
}

/// Rows buffered per file before they are handed to its writer; fewer
/// with one file per day, where many files are open at once.
const FLUSH_ROWS: usize = 1 << 16;
const FLUSH_ROWS_BY_DATE: usize = 1 << 13;

/// Writes the data set under `dir` as `exposures/part=NN/data.parquet` and
/// `events/part=NN/data.parquet`, one file per user partition of
/// `partitions`, streaming: memory is bounded by a buffer per file, not by
/// the data set. Existing files are replaced.
pub fn write_parquet(
    cfg: &DatasetConfig,
    dir: &Path,
    partitions: u32,
) -> Result<Written, SimError> {
    write_layout(cfg, dir, &Layout::flat(partitions))
}

/// Writes the data set under `dir` laid out as `layout` says, streaming
/// (a buffer per open file). Existing files are replaced. The counts
/// include held-back events.
pub fn write_layout(cfg: &DatasetConfig, dir: &Path, layout: &Layout) -> Result<Written, SimError> {
    let partitions = layout.partitions.max(1);
    let width = partitions.saturating_sub(1).to_string().len().max(2);
    let flush_rows = if layout.by_date {
        FLUSH_ROWS_BY_DATE
    } else {
        FLUSH_ROWS
    };
    // (held back, kind, day, partition) → its writer and buffered rows.
    type Slot = (bool, Kind, i64, u32);
    let mut files: BTreeMap<Slot, (FileWriter, Vec<Record>)> = BTreeMap::new();
    let open = |(held, kind, day, part): Slot| -> Result<FileWriter, SimError> {
        let root = if held {
            dir.join("held-back")
        } else {
            dir.to_path_buf()
        };
        let d = if layout.by_date {
            partition_dir(&root, kind, day, part, partitions)
        } else {
            root.join(kind.dir_name())
                .join(format!("part={part:0width$}"))
        };
        std::fs::create_dir_all(&d).map_err(|source| SimError::Io {
            path: d.clone(),
            source,
        })?;
        let name = if held { "hour.parquet" } else { "data.parquet" };
        Ok(FileWriter::create(
            &d.join(name),
            kind,
            DEFAULT_ROW_GROUP_ROWS,
        )?)
    };
    let flush = |writer: &mut FileWriter, rows: &mut Vec<Record>| -> Result<(), SimError> {
        let views: Vec<_> = rows.iter().map(Record::view).collect();
        let refs: Vec<_> = views.iter().collect();
        writer.write_records(&refs)?;
        rows.clear();
        Ok(())
    };
    if !layout.by_date {
        // Every partition's two files exist, empty or not.
        for part in 0..partitions {
            for kind in [Kind::Exposure, Kind::Event] {
                let slot = (false, kind, 0, part);
                files.insert(slot, (open(slot)?, Vec::new()));
            }
        }
    }
    let mut written = Written::default();
    for index in 0..cfg.units {
        let records = unit_records(cfg, index);
        let part = user_partition(records[0].unit_id(), partitions);
        for r in records {
            let kind = r.kind();
            match kind {
                Kind::Exposure => written.exposures += 1,
                Kind::Event => written.events += 1,
                // Simulated units never sign in: `unit_records` makes none.
                Kind::Alias => continue,
            }
            let held = kind == Kind::Event && layout.hold_back_from_us.is_some_and(|t| r.ts() >= t);
            let day = if layout.by_date { utc_day(r.ts()) } else { 0 };
            let slot = (held, kind, day, part);
            let (writer, rows) = match files.entry(slot) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert((open(slot)?, Vec::new()))
                }
            };
            rows.push(r);
            if rows.len() >= flush_rows {
                flush(writer, rows)?;
            }
        }
    }
    for (_, (mut writer, mut rows)) in files {
        if !rows.is_empty() {
            flush(&mut writer, &mut rows)?;
        }
        writer.finish()?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DatasetConfig {
        DatasetConfig {
            units: 400,
            visits_per_unit: 3.0,
            duplicate_rate: 0.01,
            // Weights 1:3.
            variants: {
                let mut v = Variant::control_and_treatment(0.5);
                v[1].weight = 3.0;
                v
            },
            ..DatasetConfig::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_rows() {
        let c = cfg();
        assert_eq!(unit_records(&c, 7), unit_records(&c, 7));
        let other = DatasetConfig { seed: 2, ..cfg() };
        assert_ne!(unit_records(&c, 7), unit_records(&other, 7));
    }

    #[test]
    fn units_are_assigned_by_the_hash_and_the_weights() {
        let c = cfg();
        let pop = c.population();
        let treated = (0..c.units)
            .filter(|&i| c.variant_of(&pop.user(i)) == 1)
            .count();
        // Weights 1:3.
        let share = treated as f64 / f64::from(c.units);
        assert!((share - 0.75).abs() < 0.07, "{share}");
        // The bucket decides, not the generator's randomness.
        let user = pop.user(11);
        let bucket = strata_core::hash::bucket(&user.id, &c.salt);
        assert_eq!(c.variant_of(&user), usize::from(bucket >= 250));
    }

    #[test]
    fn events_lie_in_the_pre_period_or_after_the_exposure() {
        let c = cfg();
        let end = c.start_us + c.days * DAY_US;
        let (mut pre, mut post) = (0, 0);
        for i in 0..c.units {
            let rows = unit_records(&c, i);
            let Record::Exposure(x) = &rows[0] else {
                panic!("the exposure comes first")
            };
            assert!(x.ts >= c.start_us && x.ts < c.start_us + c.days * DAY_US / 2);
            for r in &rows[1..] {
                let Record::Event(e) = r else {
                    panic!("one exposure per unit")
                };
                assert_eq!(e.unit_id, x.unit_id);
                assert!(e.ts < end);
                if e.ts < c.start_us {
                    assert!(e.ts >= c.start_us - 7 * DAY_US);
                    pre += 1;
                } else {
                    assert!(e.ts >= x.ts);
                    post += 1;
                }
            }
        }
        let share = f64::from(pre) / f64::from(pre + post);
        assert!((share - 0.2).abs() < 0.08, "{share}");
    }

    #[test]
    fn writes_the_pipelines_files_by_user_partition() {
        let dir = std::env::temp_dir().join(format!("strata-sim-dataset-{}", std::process::id()));
        let c = cfg();
        let w = write_parquet(&c, &dir, 4).unwrap();
        assert_eq!(w.exposures, u64::from(c.units));
        let expected: u64 = (0..c.units)
            .map(|i| unit_records(&c, i).len() as u64 - 1)
            .sum();
        assert_eq!(w.events, expected);
        let mut rows = 0;
        for p in 0..4 {
            let path = dir.join(format!("events/part=0{p}/data.parquet"));
            let (schema, batches) = strata_pipeline::parquet::read_file(&path).unwrap();
            assert_eq!(
                schema.fields(),
                strata_pipeline::parquet::event_schema().fields()
            );
            let units = strata_pipeline::parquet::string_column(&batches[0], "unit_id", &path)
                .unwrap()
                .value(0)
                .to_owned();
            assert_eq!(user_partition(&units, 4), p);
            rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        }
        assert_eq!(rows, w.events);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlapping_experiments_take_their_share_and_change_nothing_else() {
        let alone = cfg();
        let with = DatasetConfig {
            overlapping: Overlapping::many("exp_o", 5, 0.4, &["a", "b"]),
            ..cfg()
        };
        let (mut exposures, mut in_b) = (0usize, 0usize);
        for i in 0..with.units {
            let rows = unit_records(&with, i);
            let own = unit_records(&alone, i);
            // The experiment's exposure and every event are as without them.
            let others: Vec<_> = rows
                .iter()
                .filter(|r| matches!(r, Record::Exposure(x) if x.experiment.starts_with("exp_o")))
                .collect();
            let rest: Vec<_> = rows
                .iter()
                .filter(|r| !matches!(r, Record::Exposure(x) if x.experiment.starts_with("exp_o")))
                .cloned()
                .collect();
            assert_eq!(rest, own);
            for r in others {
                let Record::Exposure(x) = r else {
                    unreachable!()
                };
                let o = with
                    .overlapping
                    .iter()
                    .find(|o| o.experiment == x.experiment)
                    .unwrap();
                // Assigned by the hash, exposed in the first half.
                assert_eq!(o.variants[o.variant_of(&x.unit_id).unwrap()], x.variant);
                assert!(x.ts >= with.start_us && x.ts < with.start_us + with.days * DAY_US / 2);
                exposures += 1;
                in_b += usize::from(x.variant == "b");
            }
        }
        // 400 units × 5 experiments × 0.4 = 800 expected.
        assert!((700..900).contains(&exposures), "{exposures}");
        let share_b = in_b as f64 / exposures as f64;
        assert!((share_b - 0.5).abs() < 0.06, "{share_b}");
        // Each experiment's own traffic: units differ between experiments.
        let pop = with.population();
        let taken = |k: usize| {
            (0..with.units)
                .filter(|&i| with.overlapping[k].variant_of(&pop.user(i).id).is_some())
                .collect::<Vec<_>>()
        };
        assert_ne!(taken(0), taken(1));
    }

    #[test]
    fn writes_days_like_compaction_and_holds_back_the_last_hour() {
        let dir = std::env::temp_dir().join(format!("strata-sim-layout-{}", std::process::id()));
        let c = DatasetConfig {
            overlapping: Overlapping::many("exp_o", 2, 0.5, &["a", "b"]),
            ..cfg()
        };
        let end = c.start_us + c.days * DAY_US;
        let cut = end - DAY_US / 24;
        let layout = Layout {
            partitions: 4,
            by_date: true,
            hold_back_from_us: Some(cut),
        };
        let w = write_layout(&c, &dir, &layout).unwrap();
        let (mut exposures, mut events, mut held) = (0u64, 0u64, 0u64);
        for path in strata_pipeline::parquet::list_parquet_files(&dir).unwrap() {
            let rel = path
                .strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let (_, batches) = strata_pipeline::parquet::read_file(&path).unwrap();
            let is_held = rel.starts_with("held-back/");
            let rel = rel.trim_start_matches("held-back/");
            let day: i64 = strata_pipeline::parquet::parse_date(
                rel.split('/')
                    .nth(1)
                    .unwrap()
                    .strip_prefix("date=")
                    .unwrap(),
            )
            .unwrap();
            let part: u32 = rel.split('/').nth(2).unwrap()[5..].parse().unwrap();
            for b in &batches {
                let ts = strata_pipeline::parquet::ts_column(b, "ts", &path).unwrap();
                let units = strata_pipeline::parquet::string_column(b, "unit_id", &path).unwrap();
                for r in 0..b.num_rows() {
                    assert_eq!(utc_day(ts.value(r)), day, "{rel}");
                    assert_eq!(user_partition(units.value(r), 4), part, "{rel}");
                    assert_eq!(ts.value(r) >= cut, is_held, "{rel}");
                }
            }
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            if rel.starts_with("kind=exposures/") {
                exposures += rows;
            } else {
                assert!(rel.starts_with("kind=events/"), "{rel}");
                events += rows;
                if is_held {
                    assert!(rel.ends_with("/hour.parquet"), "{rel}");
                    held += rows;
                }
            }
        }
        assert_eq!((exposures, events), (w.exposures, w.events));
        assert!(w.exposures > u64::from(c.units));
        assert!(held > 0 && held < events / 50, "{held} of {events}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
