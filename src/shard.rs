//! Items of one command spread over many processes, as cluster schedulers start them: Slurm
//! job arrays and Kubernetes Indexed Jobs. Item k of M belongs to shard k mod N; everything
//! about an item (its seed, its output's name) depends on k alone, so any N makes the same
//! items. A process learns its shard from `--shard I/N`, else from the scheduler's environment.

use crate::error::{Error, Result};
use std::fmt;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Where a process's shard came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSource {
    /// `--shard I/N`.
    Flag,
    /// `SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT` (with `SLURM_ARRAY_TASK_MIN` and
    /// `SLURM_ARRAY_TASK_STEP`).
    Slurm,
    /// `JOB_COMPLETION_INDEX` with `--shards N`.
    Kubernetes,
    /// None given: one process makes everything.
    Whole,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The whole job in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::Input(format!(
                "shard {index}/{count}: the index must be below the shard count (I/N with 0 ≤ I < N)"
            )));
        }
        Ok(Self { index, count })
    }

    /// `I/N`, as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Input(format!(
                "--shard {text}: write I/N, this process's index I (from 0) and the number of shards N, e.g. --shard 0/4"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (i, n) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        Self::new(i, n)
    }

    /// This shard's items among `total`, in order.
    pub fn items(&self, total: usize) -> Vec<usize> {
        (self.index as usize..total)
            .step_by(self.count as usize)
            .collect()
    }

    /// Whether this is the whole job.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// This shard's own version of the job's file `name`: `name` itself for the whole job,
    /// else with `shard-I-of-N` before its extension (`plan.toml` → `plan.shard-2-of-8.toml`).
    pub fn file_name(&self, name: &str) -> String {
        if self.is_whole() {
            return name.into();
        }
        let tag = format!("shard-{}-of-{}", self.index, self.count);
        match name.rsplit_once('.') {
            Some((stem, extension)) => format!("{stem}.{tag}.{extension}"),
            None => format!("{name}.{tag}"),
        }
    }

    /// The shard from `--shard` (`flag`), else from the scheduler's variables read through
    /// `env`: Slurm's array task (its index counted from `SLURM_ARRAY_TASK_MIN` in steps of
    /// `SLURM_ARRAY_TASK_STEP`), or Kubernetes' completion index with `shards` (`--shards N`).
    pub fn detect(
        flag: Option<&str>,
        shards: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, ShardSource)> {
        if let Some(flag) = flag {
            return Ok((Self::parse(flag)?, ShardSource::Flag));
        }
        let number = |name: &str| -> Result<Option<u64>> {
            env(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| Error::Input(format!("{name}={v}: not a whole number")))
                })
                .transpose()
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::Input(
                    "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --shard I/N".into(),
                )
            })?;
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            if id < min || (id - min) % step != 0 {
                return Err(Error::Input(format!(
                    "SLURM_ARRAY_TASK_ID={id} is not in the array {min}, {}, …: pass --shard I/N",
                    min + step
                )));
            }
            let index = (id - min) / step;
            let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            let shard = Self::new(narrow(index), narrow(count)).map_err(|_| {
                Error::Input(format!(
                    "SLURM_ARRAY_TASK_ID={id} is task {index} of an array of SLURM_ARRAY_TASK_COUNT={count}: pass --shard I/N"
                ))
            })?;
            return Ok((shard, ShardSource::Slurm));
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = shards.ok_or_else(|| {
                Error::Input(format!(
                    "JOB_COMPLETION_INDEX={index} (a Kubernetes Indexed Job) needs --shards N, the Job's completions"
                ))
            })?;
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            return Ok((Self::new(index, count)?, ShardSource::Kubernetes));
        }
        if let Some(n) = shards.filter(|&n| n != 1) {
            return Err(Error::Input(format!(
                "--shards {n} without JOB_COMPLETION_INDEX: give this process's index with --shard I/{n}"
            )));
        }
        Ok((Self::WHOLE, ShardSource::Whole))
    }
}

impl ShardSource {
    /// How the command says where its shard came from.
    pub fn describe(&self, shard: Shard) -> String {
        match self {
            Self::Flag => format!("shard {shard} (--shard)"),
            Self::Slurm => format!("shard {shard} (Slurm array task)"),
            Self::Kubernetes => format!("shard {shard} (Kubernetes completion index)"),
            Self::Whole => "all items in this process".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn every_item_belongs_to_exactly_one_shard_whatever_the_count() {
        for count in 1..7u32 {
            let mut seen = vec![0; 20];
            for index in 0..count {
                let shard = Shard::new(index, count).unwrap();
                for k in shard.items(20) {
                    assert_eq!(k % count as usize, index as usize);
                    seen[k] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{count} shards: {seen:?}");
        }
        assert_eq!(Shard::new(1, 3).unwrap().items(7), vec![1, 4]);
    }

    #[test]
    fn shards_name_their_own_files() {
        assert_eq!(Shard::WHOLE.file_name("plan.toml"), "plan.toml");
        let shard = Shard::new(2, 8).unwrap();
        assert_eq!(shard.file_name("plan.toml"), "plan.shard-2-of-8.toml");
        assert_eq!(
            shard.file_name("manifest.jsonl"),
            "manifest.shard-2-of-8.jsonl"
        );
    }

    #[test]
    fn the_flag_parses_and_bad_ones_say_how() {
        assert_eq!(Shard::parse("2/8").unwrap(), Shard { index: 2, count: 8 });
        for bad in ["8/8", "1", "a/2", "0/0", "-1/2"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("I/N") || e.contains("below"), "{bad}: {e}");
        }
    }

    #[test]
    fn schedulers_are_read_from_their_variables() {
        let (shard, source) = Shard::detect(
            None,
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (shard, source),
            (Shard { index: 2, count: 3 }, ShardSource::Slurm)
        );
        // --array=1-3 and --array=10-20:5.
        let (shard, _) = Shard::detect(
            None,
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(shard, Shard { index: 2, count: 3 });
        let (shard, _) = Shard::detect(
            None,
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "15"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
                ("SLURM_ARRAY_TASK_MIN", "10"),
                ("SLURM_ARRAY_TASK_STEP", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(shard, Shard { index: 1, count: 3 });
        let (shard, source) =
            Shard::detect(None, Some(4), env(&[("JOB_COMPLETION_INDEX", "3")])).unwrap();
        assert_eq!(
            (shard, source),
            (Shard { index: 3, count: 4 }, ShardSource::Kubernetes)
        );
        // The flag wins over the environment.
        let (shard, source) = Shard::detect(
            Some("0/2"),
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (shard, source),
            (Shard { index: 0, count: 2 }, ShardSource::Flag)
        );
        assert_eq!(
            Shard::detect(None, None, env(&[])).unwrap(),
            (Shard::WHOLE, ShardSource::Whole)
        );
    }

    #[test]
    fn incomplete_environments_are_errors_that_name_the_fix() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<u32>, &'a str);
        let cases: [Case; 4] = [
            (
                &[("SLURM_ARRAY_TASK_ID", "2")],
                None,
                "SLURM_ARRAY_TASK_COUNT",
            ),
            (&[("JOB_COMPLETION_INDEX", "1")], None, "--shards N"),
            (&[], Some(3), "--shard I/3"),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "x"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                ],
                None,
                "not a whole number",
            ),
        ];
        for (vars, shards, expected) in cases {
            let e = Shard::detect(None, shards, env(vars))
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{vars:?}: {e}");
        }
    }
}
