"""The KubeRay manifests in deploy/: the object-storage variant (rayjob-s3.yaml) must stay free of shared
volumes, give every Ray container the S3 credentials from a Secret and a node cache on an emptyDir, and
both manifests' entrypoints must be specs our parser accepts (the files are never run by the suite). Both run
the
image of deploy/image/Dockerfile at this version's tag, on the Ray and Python the lock was made for."""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from thoraxmae.study.spec.load import load_spec

REPO = Path(__file__).resolve().parents[2]
S3_JOB = REPO / "deploy" / "rayjob-s3.yaml"
PVC_JOB = REPO / "deploy" / "rayjob.yaml"
IMAGE_CONFIGS = "/opt/thoraxmae/configs/"  # where the image holds the repository's configs/
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _pod_specs(job: dict) -> list[tuple[str, dict]]:
    cluster = job["spec"]["rayClusterSpec"]
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in cluster.get("workerGroupSpecs", [])]
    return pods


def _keys(node) -> set[str]:
    """Every mapping key anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        return set(node) | set().union(*(_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node)) if node else set()
    return set()


def _bytes(quantity: str) -> int:
    """A Kubernetes quantity such as 120Gi, in bytes."""
    match = re.fullmatch(r"(\d+)([kMGT]i?)?", str(quantity))
    assert match, f"unexpected quantity {quantity!r}"
    return int(match[1]) * _UNITS[match[2] or ""]


def _entrypoint(job: dict) -> tuple[Path, list[str]]:
    """The repository's copy of the spec the entrypoint runs, and its --set overrides."""
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["thoraxmae", "study", "run"], words
    assert words[3].startswith(IMAGE_CONFIGS), f"the spec {words[3]} is not one of the image's configs/"
    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert len(overrides) == words.count("--set") and all("=" in o for o in overrides)
    return REPO / "configs" / words[3][len(IMAGE_CONFIGS):], overrides


def _set(overrides: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)


def test_the_object_storage_job_mounts_no_shared_volume():
    keys = _keys(_load(S3_JOB))
    assert "persistentVolumeClaim" not in keys and "claimName" not in keys, \
        f"{S3_JOB.name} is the variant without a shared volume: keep PVCs in rayjob.yaml"
    for group, pod in _pod_specs(_load(S3_JOB)):
        for volume in pod.get("volumes", []):
            assert set(volume) <= {"name", "emptyDir"}, f"{group}: volume {volume['name']} is not an emptyDir"


def test_every_container_gets_the_credentials_from_one_secret():
    secrets = set()
    for group, pod in _pod_specs(_load(S3_JOB)):
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            aws = [name for name in env if name.startswith("AWS_")]
            assert set(CREDENTIALS) <= set(aws), (f"{group}/{container['name']}: missing "
                                                  f"{set(CREDENTIALS) - set(aws)}")
            for name in aws:
                assert "value" not in env[name], (f"{group}/{container['name']}: {name} written in the "
                                                  "manifest")
                ref = env[name]["valueFrom"]["secretKeyRef"]
                assert ref["key"] == name
                secrets.add(ref["name"])
            endpoint = env.get("AWS_ENDPOINT_URL_S3")
            assert endpoint is None or endpoint["valueFrom"]["secretKeyRef"].get("optional") is True
    assert len(secrets) == 1, f"containers read different secrets: {secrets}"


def test_the_node_cache_is_an_emptydir_volume_larger_than_its_limit():
    for group, pod in _pod_specs(_load(S3_JOB)):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            where = f"{group}/{container['name']}"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            cache = env.get("THORAXMAE_CACHE_DIR")
            assert cache, f"{where}: no THORAXMAE_CACHE_DIR"
            # strictly below the mount (a folder of the volume, as the header says)
            mounts = [m for m in container.get("volumeMounts", [])
                      if cache.startswith(m["mountPath"].rstrip("/") + "/")]
            assert len(mounts) == 1, f"{where}: THORAXMAE_CACHE_DIR={cache} is not inside one mounted volume"
            empty_dir = volumes[mounts[0]["name"]].get("emptyDir")
            assert empty_dir is not None and empty_dir.get("medium") != "Memory", (f"{where}: not a disk "
                                                                                   "emptyDir")
            limit = _bytes(empty_dir["sizeLimit"])
            assert float(env["THORAXMAE_CACHE_GB"]) * 1e9 < 0.95 * limit, (
                f"{where}: THORAXMAE_CACHE_GB leaves no room for checkpoints in the {empty_dir['sizeLimit']} "
                "volume")


def test_the_object_storage_job_keeps_the_dashboard_private():
    cluster = _load(S3_JOB)["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_the_object_storage_job_names_uris_for_storage_store_and_init():
    _, overrides = _entrypoint(_load(S3_JOB))
    values = _set(overrides)
    for key in ("storage_path", "data.store", "finetune.init"):
        assert values[key].startswith("s3://"), f"--set {key}={values[key]}: expected an s3:// URI"
    assert values["tracking.uri"].startswith("http"), "a tracking server (SQLite is single-writer)"
    _, pvc_overrides = _entrypoint(_load(PVC_JOB))
    assert set(_set(pvc_overrides)) <= set(values), "the variants set the same keys"


@pytest.mark.parametrize("manifest", [S3_JOB, PVC_JOB], ids=lambda p: p.name)
def test_the_entrypoint_is_a_spec_we_accept(manifest):
    spec_file, overrides = _entrypoint(_load(manifest))
    spec = load_spec(spec_file, overrides, check_files=False)  # the files live on the cluster
    values = _set(overrides)
    assert str(spec.storage_path) == values["storage_path"]  # an s3:// URI stays a URI (no s3:/ folding)
    assert str(spec.data.store) == values["data.store"]
    assert str(spec.finetune.init) == values["finetune.init"]
    assert spec.tracking.uri == values["tracking.uri"]


# The image (deploy/image/Dockerfile): what the manifests run must be what the lock and pyproject say.
DOCKERFILE = REPO / "deploy" / "image" / "Dockerfile"
LOCK = REPO / "requirements.lock"


def _version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _locked(name: str) -> str:
    return re.search(rf"^{name}(?:\[[^\]]*\])?==(\S+)", LOCK.read_text(), re.MULTILINE)[1]


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)", DOCKERFILE.read_text(), re.MULTILINE))


def _lock_python() -> str:
    """The Python the locks are resolved for (`make lock`'s --python-version)."""
    return re.search(r"--python-version (\d+\.\d+)", (REPO / "Makefile").read_text())[1]


@pytest.mark.parametrize("manifest", [S3_JOB, PVC_JOB], ids=lambda p: p.name)
def test_the_manifests_run_the_image_of_this_version_and_the_locked_ray(manifest):
    job = _load(manifest)
    images = {c["image"] for _, pod in _pod_specs(job) for c in pod["containers"]}
    assert images == {f"ghcr.io/your-org/thoraxmae:{_version()}"}, "the tag `make image` gives this version"
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == _locked("ray")


def test_the_image_is_the_official_ray_image_of_the_lock_gpu_by_default():
    args = _args()
    assert args["RAY_VERSION"] == _locked("ray")
    assert args["PYTHON_TAG"] == "py" + _lock_python().replace(".", "")
    assert args["VARIANT"] == "gpu"
    assert args["BASE_IMAGE"] == "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}"
    assert SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]) \
        .contains(_lock_python())


def test_the_image_installs_the_lock_with_hashes_then_the_wheel_alone_and_runs_as_ray():
    text = DOCKERFILE.read_text()
    runs = [" ".join(r.split()) for r in re.findall(r"^RUN ((?:.*\\\n)*.*)", text, re.MULTILINE)]
    assert any("pip install" in r and "--require-hashes" in r and "-r /tmp/thoraxmae/requirements.lock" in r
               for r in runs), "the lock is installed with its hashes"
    assert any("pip install" in r and "--no-deps" in r and "thoraxmae-*.whl" in r and "pip check" in r
               for r in runs), "the wheel is installed on top of the lock, nothing else, and checked"
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users[-1] == "ray", "the image runs as the Ray image's non-root user"
    assert re.search(r"RAY_USAGE_STATS_ENABLED=0", text) and re.search(r"MLFLOW_DISABLE_TELEMETRY=true", text)
    assert re.search(r"/opt/thoraxmae/configs", text), "the configs the manifests name"


def test_the_image_builds_the_wheel_from_every_folder_pyproject_packages():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {folder.split("/")[0] for folder in setuptools["package-dir"].values()}
    copied = set(re.findall(r"^COPY (\w+) /tmp/thoraxmae/src/\1$", DOCKERFILE.read_text(), re.MULTILINE))
    assert copied == folders
    kept = {line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert folders | {"pyproject.toml", "README.md", "requirements.lock"} <= kept
