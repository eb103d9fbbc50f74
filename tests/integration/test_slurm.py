"""deploy/slurm/thoraxmae.sbatch run for real on this machine: `scontrol` and `srun` are PATH shims
(two fake node names; srun drops its options and runs the command here, giving each fake node its
own Ray temp dir), so the script starts a real Ray head and a real second raylet with token
authentication, waits for both, and runs a tiny fine-tuning study whose trials need both nodes."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.study_helpers import free_ports, subprocess_env, tiny_spec, trial_runs, write_spec

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "thoraxmae.sbatch"

SCONTROL = """#!/bin/bash
[[ "$1 $2" == "show hostnames" ]] || { echo "scontrol shim: unexpected $*" >&2; exit 1; }
echo fake-node-1
echo fake-node-2
"""
# srun: drop the options, note the node (-w) and run the command here; `--temp-dir=X` becomes X-<node>
# so each fake node's raylet has its own session folder, as on separate machines.
SRUN = """#!/bin/bash
node=""
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in
        -w) node=$2; shift 2 ;;
        *) shift ;;
    esac
done
args=()
for a in "$@"; do
    [[ $a == --temp-dir=* ]] && a="$a-$node"
    args+=("$a")
done
mode=$(stat -c %a "${RAY_AUTH_TOKEN_PATH:-/nonexistent}" 2>/dev/null)
echo "$node token=$mode $*" >> "$SRUN_LOG"
exec "${args[@]}"
"""


def _shims(folder: Path) -> Path:
    folder.mkdir()
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_sbatch_starts_two_nodes_and_runs_the_study(phantom_store, tmp_path):
    spec = tiny_spec(phantom_store, tmp_path, "slurm", num_samples=2)
    spec["resources"]["workers_per_trial"] = 2  # one CPU per fake node: each trial needs both nodes
    spec["search"]["scheduler"] = {"type": "none"}  # both trials run to the end
    spec_file = write_spec(spec, tmp_path / "spec.yaml")
    gcs, dash, client, head_agent, head_metrics, agent, metrics = free_ports(7)
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths must fit
    env = subprocess_env(
        PATH=f"{_shims(tmp_path / 'shims')}{os.pathsep}{subprocess_env()['PATH']}",
        SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="fake-node-[1-2]", SLURM_CPUS_PER_TASK="1",
        SRUN_LOG=str(tmp_path / "srun.log"), THORAXMAE_TOKEN_DIR=str(tmp_path / "tokens"),
        THORAXMAE_RAY_PORT=str(gcs), THORAXMAE_RAY_TMP=f"{ray_tmp}/r", THORAXMAE_RAY_WAIT_S="120",
        THORAXMAE_RAY_HEAD_ARGS=(f"--dashboard-host=127.0.0.1 --dashboard-port={dash} "
                                 f"--ray-client-server-port={client} "
                                 f"--dashboard-agent-listen-port={head_agent} "
                                 f"--metrics-export-port={head_metrics}"),
        THORAXMAE_RAY_WORKER_ARGS=f"--dashboard-agent-listen-port={agent} --metrics-export-port={metrics}")
    env.pop("RAY_AUTH_TOKEN", None)
    log = tmp_path / "slurm-4242.out"  # the job's output file, as Slurm writes it
    with log.open("w") as out_file:
        proc = subprocess.Popen(["bash", str(SCRIPT), str(spec_file)], env=env, stdout=out_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job did not end in 300 s:\n{log.read_text()[-4000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    assert "thoraxmae.sbatch: ray status: 2 of 2 node(s) alive" in out, out[-4000:]
    assert "thoraxmae.sbatch: study exited with code 0; stopping Ray" in out
    runs = trial_runs(spec["tracking"]["uri"], "slurm")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    srun = (tmp_path / "srun.log").read_text().splitlines()
    starts = [line for line in srun if " start " in line]
    assert [line.split()[0] for line in starts] == ["fake-node-1", "fake-node-2"]
    assert all(" token=600 " in line for line in starts), srun
    assert ("--head" in starts[0]
            and f"--address={starts[0].split('--node-ip-address=')[1].split()[0]}:{gcs}" in starts[1])
    assert list((tmp_path / "tokens").iterdir()) == []  # the job's token file is removed at the end
    assert sorted(p.name for p in Path(ray_tmp).iterdir()) == ["r-fake-node-1", "r-fake-node-2"]
