"""The console of a study (and of `thoraxmae demo`) carries no Ray warning its user cannot act on: the
raylet's
"N PYTHON worker processes have been started" (every trial's driver, Train controller and workers are actors,
by design) and the local Ray's hint to turn token authentication off. A real local Ray started as a study
starts it (study.run.ray_local.init_ray), made to emit both: its own log proves the warning was raised."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.integration.study_helpers import subprocess_env

SCRIPT = textwrap.dedent("""
    import pathlib, time
    import ray
    from thoraxmae.study.run.ray_local import init_ray

    init_ray(num_cpus=1, object_store_memory=100 * 1024**2)

    @ray.remote(num_cpus=0)
    class Actor:
        def ping(self):
            return 1

    actors = [Actor.remote() for _ in range(12)]  # 12 worker processes: 12x the startup concurrency of 1 CPU
    assert sum(ray.get([a.ping.remote() for a in actors])) == 12
    logs = pathlib.Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "raylet.out"
    deadline = time.monotonic() + 60
    while "worker processes have been started" not in logs.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the raylet never warned"
        time.sleep(0.5)
    time.sleep(3)  # the warning's way to this driver's console
    print("RAYLET WARNED", flush=True)
    ray.shutdown()
""")


def test_ray_warnings_a_user_cannot_act_on_stay_off_the_console(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path,
                          env=subprocess_env(), check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "RAYLET WARNED" in out, out[-3000:]
    assert "worker processes have been started" not in out, out[-3000:]
    assert "Token authentication is enabled" not in out, out[-3000:]
    assert "Started a local Ray instance" in out  # Ray's other lines still show
