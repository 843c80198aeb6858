//! Shards: a stable split of an input folder across hosts, one coordinator per host, run by a
//! scheduler people already have (Slurm job arrays, Kubernetes Indexed Jobs). No cluster layer.
//!
//! A file belongs to shard `fnv1a64(relative path) % N`: adding or removing files never moves
//! the others to another shard, and every host computes the same split without talking.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use serde::Serialize;

/// Which part of the folder this run does, and who said so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// 0-based.
    pub index: u32,
    pub count: u32,
    /// `flag`, `slurm` or `kubernetes`.
    pub source: &'static str,
}

impl Shard {
    /// Whether the file at `relative` (raw path bytes) is this shard's.
    pub fn contains(&self, relative: &[u8]) -> bool {
        fnv1a64(relative) % self.count as u64 == self.index as u64
    }
}

/// FNV-1a, 64-bit: small, stable across versions and platforms.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn number(what: &str, value: &str) -> anyhow::Result<u32> {
    value
        .trim()
        .parse::<u32>()
        .map_err(|_| anyhow!("{what} is {value:?}, not a whole number"))
}

fn checked(index: u32, count: u32, source: &'static str) -> anyhow::Result<Shard> {
    if count == 0 {
        bail!("invalid shard: the shard count must be at least 1 (from {source})");
    }
    if index >= count {
        bail!(
            "invalid shard {index}/{count} (from {source}): shards are numbered 0 to {}",
            count - 1
        );
    }
    Ok(Shard {
        index,
        count,
        source,
    })
}

/// The shard to run: `--shard K/N` if given, else a Slurm job array's task ID or a Kubernetes
/// Indexed Job's completion index as K, with the count from `--shards N`, else none.
pub fn resolve(
    flag: Option<&str>,
    shards: Option<u32>,
    env: &HashMap<String, String>,
) -> anyhow::Result<Option<Shard>> {
    if let Some(spec) = flag {
        let (k, n) = spec
            .split_once('/')
            .ok_or_else(|| anyhow!("invalid --shard {spec:?}: expected K/N, for example 0/4"))?;
        return checked(number("--shard K", k)?, number("--shard N", n)?, "flag").map(Some);
    }
    // The count comes from --shards, never from the array: a resubmitted part of the array
    // (`sbatch --array=3,7`) has its own SLURM_ARRAY_TASK_COUNT and MIN, and would split the
    // folder differently from the first submission.
    if let Some(id) = env.get("SLURM_ARRAY_TASK_ID") {
        let id = number("SLURM_ARRAY_TASK_ID", id)?;
        let count = shards.ok_or_else(|| {
            anyhow!("SLURM_ARRAY_TASK_ID is set: give --shards N, the number of shards (the array is 0 to N-1), to split the folder; the same N on every submission")
        })?;
        return checked(id, count, "slurm").map(Some);
    }
    if let Some(index) = env.get("JOB_COMPLETION_INDEX") {
        let index = number("JOB_COMPLETION_INDEX", index)?;
        let count = shards.ok_or_else(|| {
            anyhow!("JOB_COMPLETION_INDEX is set: give --shards N, the Job's completions, to split the folder")
        })?;
        return checked(index, count, "kubernetes").map(Some);
    }
    if let Some(n) = shards {
        bail!("--shards {n} needs a shard index: --shard K/{n}, or run in a Slurm array or a Kubernetes Indexed Job");
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fnv_matches_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn flag_then_slurm_then_kubernetes() {
        let none = env(&[]);
        assert_eq!(
            resolve(Some("2/5"), None, &none).unwrap(),
            Some(Shard {
                index: 2,
                count: 5,
                source: "flag"
            })
        );
        // What Slurm 22.05 sets in task 7 of `sbatch --array=3,7`, a resubmission of two tasks
        // of a 16-task array: the task ID is the shard, the array's own count and minimum are not.
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ]);
        assert_eq!(
            resolve(None, Some(16), &slurm).unwrap(),
            Some(Shard {
                index: 7,
                count: 16,
                source: "slurm"
            })
        );
        assert!(
            resolve(None, None, &slurm).is_err(),
            "Slurm needs --shards: the array's count changes with a resubmission"
        );
        assert_eq!(
            resolve(Some("0/2"), None, &slurm).unwrap().unwrap().source,
            "flag"
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert_eq!(
            resolve(None, Some(8), &k8s).unwrap(),
            Some(Shard {
                index: 3,
                count: 8,
                source: "kubernetes"
            })
        );
        assert!(
            resolve(None, None, &k8s).is_err(),
            "Kubernetes needs --shards"
        );
        assert_eq!(resolve(None, None, &none).unwrap(), None);
    }

    #[test]
    fn invalid_shards_are_errors() {
        let none = env(&[]);
        for bad in ["4/4", "0/0", "x/3", "1", "-1/3", "1/2/3", ""] {
            assert!(resolve(Some(bad), None, &none).is_err(), "{bad:?}");
        }
        assert!(resolve(
            None,
            Some(4),
            &env(&[
                ("SLURM_ARRAY_TASK_ID", "9"),
                ("SLURM_ARRAY_TASK_COUNT", "4")
            ])
        )
        .is_err());
        assert!(resolve(
            None,
            Some(4),
            &env(&[
                ("SLURM_ARRAY_TASK_ID", "abc"),
                ("SLURM_ARRAY_TASK_COUNT", "4")
            ])
        )
        .is_err());
        assert!(resolve(None, Some(3), &none).is_err(), "--shards alone");
    }

    #[test]
    fn shards_partition_the_folder_roughly_evenly() {
        let names: Vec<String> = (0..500)
            .map(|i| format!("dir{}/img{i}.jpg", i % 7))
            .collect();
        let shards: Vec<Shard> = (0..4)
            .map(|index| Shard {
                index,
                count: 4,
                source: "flag",
            })
            .collect();
        for name in &names {
            assert_eq!(
                shards
                    .iter()
                    .filter(|s| s.contains(name.as_bytes()))
                    .count(),
                1,
                "{name} in exactly one shard"
            );
        }
        let sizes: Vec<usize> = shards
            .iter()
            .map(|s| names.iter().filter(|n| s.contains(n.as_bytes())).count())
            .collect();
        assert!(sizes.iter().all(|&n| n > 80), "roughly even: {sizes:?}");
    }
}
