#!/usr/bin/env python3
"""docs/scale-out.md against what runs: its Slurm script and Kubernetes manifest are the files
docs/slurm-job.sh (which tests/scale-out/slurm.sh submits to a real Slurm) and docs/k8s-job.yaml,
word for word; the manifest parses as a batch/v1 Indexed Job whose fields agree with each other
and with shmpipe (completions = --shards, /dev/shm a memory emptyDir within the memory limit, the
per-index retry's preconditions); and its container arguments, run by the real binary once per
JOB_COMPLETION_INDEX on a generated folder, write every output once and every manifest.

No Kubernetes runs here: no API server validates the manifest and no pod starts.

SHMPIPE_BIN picks the binary (default: target/debug/shmpipe, which `cargo test` builds).
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get(
    "SHMPIPE_BIN",
    str(pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "shmpipe"),
)


def fail(message):
    print(f"docs.py: FAIL: {message}")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def quantity(text):
    """Bytes in a Kubernetes memory quantity such as 20Gi or 512Mi."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


def doc_holds(doc, fence, path):
    text = (REPO / path).read_text()
    check(
        f"```{fence}\n{text}```\n" in doc,
        f"docs/scale-out.md does not hold {path} word for word in a ```{fence} block",
    )
    return text


def manifest_fields(text):
    job = yaml.safe_load(text)
    check(job.get("apiVersion") == "batch/v1" and job.get("kind") == "Job", "not a batch/v1 Job")
    spec = job["spec"]
    check(spec.get("completionMode") == "Indexed", "completionMode is not Indexed")
    completions = spec["completions"]
    check(isinstance(completions, int) and completions >= 1, "completions is not a count")
    check(1 <= spec.get("parallelism", 1) <= completions, "parallelism is outside 1..completions")
    pod = spec["template"]["spec"]
    # backoffLimitPerIndex is accepted only with Indexed completion and restartPolicy Never.
    if "backoffLimitPerIndex" in spec:
        check(pod.get("restartPolicy") == "Never", "backoffLimitPerIndex needs restartPolicy Never")
    check(pod.get("restartPolicy") in ("Never", "OnFailure"), "a Job's restartPolicy is Never or OnFailure")
    (container,) = pod["containers"]
    check(container.get("name") and container.get("image"), "the container has no name or image")
    args = container["args"]
    check(args[0] == "run", "the container does not run `shmpipe run`")
    check("--shard" not in args, "--shard K/N in the manifest: every index would do the same shard")
    check(
        int(args[args.index("--shards") + 1]) == completions,
        f"--shards is not the Job's completions ({completions})",
    )
    check("--skip-existing" in args, "a retried index would redo its whole shard (no --skip-existing)")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    check("/dev/shm" in mounts, "nothing is mounted on /dev/shm (64 MiB by default)")
    shm = volumes[mounts["/dev/shm"]].get("emptyDir", {})
    check(shm.get("medium") == "Memory", "/dev/shm is not an emptyDir of medium Memory")
    limit = quantity(container["resources"]["limits"]["memory"])
    check(quantity(shm["sizeLimit"]) < limit, "/dev/shm's sizeLimit leaves nothing of the memory limit to the workers")
    check(
        int(args[args.index("-j") + 1]) <= int(container["resources"]["requests"]["cpu"]),
        "more workers (-j) than CPUs requested",
    )
    return completions, args


def run_indices(completions, args):
    """The container's arguments, once per index, with /data/... in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="shmpipe-k8s.") as tmp:
        data = pathlib.Path(tmp)
        subprocess.run(
            [BIN, "gen", str(data / "photos"), "--count", "40", "--size", "48x32"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        local = [a.replace("/data/", f"{data}/") for a in args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        done = 0
        for index in range(completions):
            env["JOB_COMPLETION_INDEX"] = str(index)
            out = subprocess.run([BIN, *local, "--json"], env=env, capture_output=True, text=True)
            check(out.returncode == 0, f"index {index}: exit {out.returncode}: {out.stderr}")
            summary = json.loads(out.stdout)
            check(summary["shard"] == {"index": index, "count": completions, "source": "kubernetes"},
                  f"index {index} ran shard {summary['shard']}")
            done += summary["images_ok"]
        out_dir = data / "out"
        manifests = sorted(out_dir.glob(f".shmpipe-shard-*-of-{completions}.json"))
        outputs = [p for p in out_dir.rglob("*") if p.is_file() and p not in manifests]
        check(len(manifests) == completions, f"{len(manifests)} manifests, expected {completions}")
        check(done == len(outputs) == 40, f"{done} images done and {len(outputs)} outputs, expected 40")


def main():
    doc = (REPO / "docs/scale-out.md").read_text()
    doc_holds(doc, "bash", "docs/slurm-job.sh")
    completions, args = manifest_fields(doc_holds(doc, "yaml", "docs/k8s-job.yaml"))
    run_indices(completions, args)
    print(f"docs.py: ok: the doc's Slurm script and Job manifest are the tested files; "
          f"{completions} indices of the manifest's arguments did 40 images once")


if __name__ == "__main__":
    main()
