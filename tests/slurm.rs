//! Sharding on a real Slurm, not a mock: a single-node cluster (`scripts/slurm-node`: Debian's
//! slurm-wlm and munge, started as daemons by this test and stopped by their PIDs) runs a job
//! array of 3 `sample` tasks over 6 images of the tiny Stable Diffusion; one task is cancelled
//! while it runs and requeued, and `collect` then finds 6 of 6 images, byte-identical to one
//! process's. Then an array of 2 `generate` tasks over 3 assets of the tiny MVDream, whose
//! outputs must be valid glTF (GPU atomics make their bytes differ). Needs root, as slurmd does.

mod common;

use common::mvdream::{write_consistent_tiny, GENERATE_TOML};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The running node; stopped when dropped, whatever the test's outcome.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting Slurm failed (scripts/test installs slurm-wlm and munge): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    /// A Slurm client command talking to this node.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", self.dir.path().join("slurm.conf"));
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Submits `script` as an array job `array` in `dir`; returns the array's job id.
    fn submit_array(&self, dir: &Path, array: &str, script: &Path) -> String {
        let out = self
            .command("sbatch")
            .args(["--parsable", "--requeue", "--array", array])
            .arg("--chdir")
            .arg(dir)
            .arg("--output")
            .arg(dir.join("slurm-%A_%a.out"))
            .arg(script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sbatch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The state of job `id` (`RUNNING`, `PENDING`…), or None once it has left the queue.
    fn state(&self, id: &str) -> Option<String> {
        let state = self.run("squeue", &["-h", "-j", id, "-o", "%T"]);
        (!state.is_empty()).then_some(state)
    }

    /// Waits until no task of array `job` is queued or running, then shows their logs.
    fn wait_for(&self, job: &str, dir: &Path, limit: Duration) {
        wait_until(&format!("array {job} to finish"), limit, || {
            self.state(job).is_none()
        });
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("slurm-") {
                eprintln!(
                    "--- {name}\n{}",
                    std::fs::read_to_string(entry.path()).unwrap()
                );
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-node")
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A batch script that runs dream3d with `args` (each task finds its shard in Slurm's
/// variables).
fn batch_script(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec '{}' {}\n",
            env!("CARGO_BIN_EXE_dream3d"),
            quoted.join(" ")
        ),
    )
    .unwrap();
    path
}

fn collect(dir: &Path) -> Output {
    common::dream3d(dir)
        .args(["collect", "."])
        .output()
        .unwrap()
}

/// Seconds of DDIM per image of the tiny model that keep a task busy long enough to be
/// cancelled between its two images.
const STEPS: &str = "40";

#[test]
fn job_arrays_survive_a_cancelled_task_and_collect_everything() {
    let node = Node::start();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let tiny = common::sd_tiny_dir();
    let sample_args = |out: &str| -> Vec<String> {
        [
            "sample",
            "--prompt",
            "a red ball",
            "--steps",
            STEPS,
            "-n",
            "6",
            "--seed",
            "5",
            "--model",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            tiny.display().to_string(),
            "-o".into(),
            work.join(out).display().to_string(),
        ])
        .collect()
    };
    let whole = common::dream3d(work)
        .args(sample_args("whole"))
        .output()
        .unwrap();
    common::assert_success(&whole);

    let args = sample_args("sharded");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let script = batch_script(work, "sample.sh", &args);
    let job = node.submit_array(work, "0-2", &script);
    let task = format!("{job}_1");
    let sharded = work.join("sharded");
    // Task 1 (shard 1/3: images 1 and 4) cancelled once its first image is written.
    wait_until("task 1's first image", Duration::from_secs(300), || {
        sharded.join("0001.png").is_file()
    });
    node.run("scancel", &[&task]);
    wait_until(
        "the cancelled task to leave the queue",
        Duration::from_secs(60),
        || node.state(&task).is_none(),
    );
    assert!(
        !sharded.join("0004.png").exists(),
        "task 1 finished before it could be cancelled: raise STEPS"
    );
    // Requeued; Slurm holds a requeued job back ≥ 121 s, so it is released by hand once pending.
    node.run("scontrol", &["requeue", &task]);
    wait_until(
        "the requeued task to start",
        Duration::from_secs(120),
        || match node.state(&task).as_deref() {
            Some("PENDING") => {
                node.run(
                    "scontrol",
                    &["update", &format!("JobId={task}"), "StartTime=now"],
                );
                false
            }
            _ => true,
        },
    );
    node.wait_for(&job, work, Duration::from_secs(600));

    let manifest = std::fs::read_to_string(sharded.join("manifest.shard-1-of-3.jsonl")).unwrap();
    let statuses: Vec<(u64, String)> = manifest
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["item"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [(1, "done"), (1, "skipped"), (4, "done")].map(|(i, s)| (i, s.to_string())),
        "the requeued task redid or lost an image"
    );
    let out = collect(&sharded);
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 of 6 items"));
    for i in 0..6 {
        let name = format!("{i:04}.png");
        assert_eq!(
            std::fs::read(work.join("whole").join(&name)).unwrap(),
            std::fs::read(sharded.join(&name)).unwrap(),
            "{name} differs from one process's"
        );
    }

    // generate: 3 assets over an array of 2 tasks.
    write_consistent_tiny(work, "tiny-4view.safetensors");
    std::fs::write(work.join("small.toml"), GENERATE_TOML).unwrap();
    let script = batch_script(
        work,
        "generate.sh",
        &[
            "generate",
            "--mvdream",
            "tiny-4view.safetensors",
            "--prompt",
            "a chair",
            "--config",
            "small.toml",
            "--steps",
            "3",
            "--assets",
            "3",
            "--seed",
            "4",
            "--run-dir",
            "runs",
            "-o",
            "out.glb",
            "--resolution",
            "48",
            "--threshold",
            "5",
            "--frames",
            "0",
        ],
    );
    let job = node.submit_array(work, "0-1", &script);
    node.wait_for(&job, work, Duration::from_secs(600));
    let out = collect(&work.join("runs"));
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 of 3 items"));
    for i in 0..3 {
        let issues = common::validate_gltf(&work.join(format!("out-{i:04}.glb")));
        assert_eq!(issues["numErrors"], 0, "asset {i}: {issues}");
    }
}
