#!/usr/bin/env bash
# Install the Debian packages that the real-SLURM tests (tests/slurm) need:
# slurmctld, slurmd, the slurm clients, munge, slurmdbd and MariaDB.
# Does nothing when every needed binary is already installed.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
needed=(slurmctld slurmd slurmdbd sbatch srun squeue sinfo scontrol scancel sacct
        munge munged mariadb-install-db mariadb)

missing=()
for bin in "${needed[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
command -v mariadbd >/dev/null 2>&1 || command -v mysqld >/dev/null 2>&1 || missing+=(mariadbd)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm-packages: all binaries present, nothing to install"
    exit 0
fi
echo "slurm-packages: missing ${missing[*]}; installing"

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-packages: must run as root to install packages" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    slurmctld slurmd slurm-client munge slurmdbd mariadb-server
