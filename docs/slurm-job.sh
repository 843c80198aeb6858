#!/bin/bash
#SBATCH --job-name=shmpipe
#SBATCH --array=0-15            # one task per shard: SHARDS below must be 16
#SBATCH --cpus-per-task=8
#SBATCH --mem=24G               # the shard's block + ~15 MiB per worker
#SBATCH --time=01:00:00
#SBATCH --requeue
set -euo pipefail
# Shared by every node; override at submission: sbatch --export=ALL,PHOTOS=...,OUT=... job.sh
PHOTOS=${PHOTOS:-/shared/photos}
OUT=${OUT:-/shared/out}
LOGS=${LOGS:-/shared/logs}
SHARDS=${SHARDS:-16}            # the array's full size, the same on every resubmission
# One coordinator per task: shard SLURM_ARRAY_TASK_ID of SHARDS. Exit 1 means some images
# failed (listed in the log and in OUT/.shmpipe-shard-K-of-N.json); a retry will not fix those.
srun shmpipe run "$PHOTOS" -o "$OUT" \
    --ops grayscale,blur:2 -j "$SLURM_CPUS_PER_TASK" --shards "$SHARDS" \
    --skip-existing --quiet --json > "$LOGS/shard-$SLURM_ARRAY_TASK_ID.json"
