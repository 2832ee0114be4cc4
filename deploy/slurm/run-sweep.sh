#!/usr/bin/env bash
# Worked example: a diffsweep sweep on a SLURM cluster through dask-jobqueue.
#
# Run it on a login node (not inside an allocation): the dask scheduler lives in the
# `diffsweep run` process here, and worker jobs are submitted with sbatch.
#
#   bash deploy/slurm/run-sweep.sh sweeps/ftcs-1d-stability.yaml /scratch/$USER/ftcs-1d.zarr 8
#
# Requirements: diffsweep installed with `pip install 'diffsweep[cluster]'` in an
# environment that the compute nodes see at the same path (set job-script-prologue in
# jobqueue.yaml to activate it), and a store path on a shared filesystem (or an
# object-store URL such as s3://bucket/x.zarr with --storage-option).
set -euo pipefail

sweep=${1:?usage: run-sweep.sh SWEEP STORE [JOBS]}
store=${2:?usage: run-sweep.sh SWEEP STORE [JOBS]}
jobs=${3:-4}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Use this directory's jobqueue.yaml unless the user already has a dask config.
export DASK_CONFIG=${DASK_CONFIG:-$here}

# 1. What will run, what it costs, and the batch script each job will be.
diffsweep plan "$sweep" --cluster slurm

# 2. Run: start the scheduler here (TLS, dashboard on 127.0.0.1:8787), submit $jobs
#    jobs, and scale back to zero when the sweep is done.  If the run is interrupted
#    (walltime, preemption, Ctrl-C), the same command with --resume computes only the
#    blocks that are missing.
if [ -e "$store" ]; then
    resume=--resume
else
    resume=
fi
diffsweep run "$sweep" -o "$store" --cluster slurm --jobs "$jobs" $resume --no-progress

# 3. Look at the result.
diffsweep status "$store"
