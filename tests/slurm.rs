//! Sharding on a real Slurm, not a mock: a single-node cluster (`scripts/slurm-node`: Debian's
//! slurm-wlm and munge, started as daemons by this test and stopped by their PIDs) runs a job
//! array of 3 `sample` tasks over 6 images of the tiny Stable Diffusion; one task is cancelled
//! while it runs and requeued, and `collect` then finds 6 of 6 images, byte-identical to one
//! process's. Then the shipped `examples/slurm/generate.sbatch` as an array of 2 `generate` tasks
//! over 3 assets of the tiny MVDream, one task warned of its time limit mid-asset so that it
//! checkpoints and requeues itself, and starts again after Slurm's requeue delay (≥ 121 s); the
//! outputs must be valid glTF (GPU atomics make their bytes differ). Needs root or passwordless
//! sudo, as slurmd does.

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

    /// Submits `script` as an array job `array` in `dir`, with further sbatch `options` and
    /// `env` for the script; returns the array's job id.
    fn submit_array(
        &self,
        dir: &Path,
        array: &str,
        script: &Path,
        options: &[&str],
        env: &[(&str, String)],
    ) -> String {
        let out = self
            .command("sbatch")
            .args(["--parsable", "--requeue", "--array", array])
            .args(options)
            .arg("--chdir")
            .arg(dir)
            .arg("--output")
            .arg(dir.join("slurm-%A_%a.out"))
            .arg(script)
            .envs(env.iter().map(|(k, v)| (k, v)))
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

/// Starts pending task `task` now instead of after Slurm's requeue delay: the release is
/// repeated while it stays pending (one issued just after the requeue can be overwritten).
fn release(node: &Node, task: &str) {
    wait_until(
        "the requeued task to start",
        Duration::from_secs(120),
        || match node.state(task).as_deref() {
            Some("PENDING") => {
                // It may start between the look and the update ("no longer pending"): fine.
                let _ = node
                    .command("scontrol")
                    .args(["update", &format!("JobId={task}"), "StartTime=now"])
                    .output();
                false
            }
            _ => true,
        },
    );
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
    let job = node.submit_array(work, "0-2", &script, &[], &[]);
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
    // Requeued; Slurm holds a requeued job back ≥ 121 s, so it is released by hand.
    node.run("scontrol", &["requeue", &task]);
    release(&node, &task);
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

    // generate: the shipped array script (examples/slurm/generate.sbatch), 3 assets over 2
    // tasks. Task 0 is warned of its time limit while it distils its first asset (SIGUSR1 to
    // the batch shell, what --signal=B:USR1@300 sends): the script stops dream3d, which
    // checkpoints, and requeues the task, whose rerun continues the shard's plan.
    write_consistent_tiny(work, "tiny-4view.safetensors");
    std::fs::write(work.join("small.toml"), GENERATE_TOML).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/slurm/generate.sbatch");
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_dream3d")).parent().unwrap();
    let path = format!(
        "{}:{}",
        binary_dir.display(),
        std::env::var("PATH").unwrap()
    );
    // The script asks for a GPU, 8 CPUs and 64 GB: this node has none of that.
    let job = node.submit_array(
        work,
        "0-1",
        &shipped,
        &["--cpus-per-task", "1", "--mem", "2G", "--gres", "none"],
        &[
            ("PATH", path),
            ("DIST", String::new()),
            ("ASSETS", "3".into()),
            ("SEED", "4".into()),
            ("OUT", work.join("gen").display().to_string()),
            (
                "EXTRA",
                "--mvdream tiny-4view.safetensors --prompt chair --config small.toml --steps 30 --resolution 48 --threshold 5 --frames 0".into(),
            ),
        ],
    );
    let task = format!("{job}_0");
    let metrics = work.join("gen/runs/asset-0000/metrics.jsonl");
    let logged = || std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count());
    wait_until("task 0's first steps", Duration::from_secs(300), || {
        logged() >= 3
    });
    node.run("scancel", &["--batch", "--signal", "USR1", &task]);
    wait_until(
        "the warned task to requeue itself",
        Duration::from_secs(120),
        || node.state(&task).as_deref() == Some("PENDING"),
    );
    // Left to start after Slurm's own requeue delay (≥ 121 s): released at once, slurmd
    // refused the launch of a job it had just killed ("already killed, do not launch") 1 run in
    // 3, and the task failed.
    let stopped_at = logged();
    assert!(
        stopped_at < 30,
        "task 0 finished its asset before the warning"
    );
    node.wait_for(&job, work, Duration::from_secs(600));
    let log = std::fs::read_to_string(work.join(format!("slurm-{job}_0.out"))).unwrap();
    if !log.contains("continuing the plan of shard 0/2") {
        let read =
            |name: &str| std::fs::read_to_string(node.dir.path().join(name)).unwrap_or_default();
        panic!(
            "no rerun:\n{log}\n--- slurmctld.log\n{}\n--- slurmd.log\n{}",
            read("slurmctld.log"),
            read("slurmd.log")
        );
    }
    let steps: Vec<u64> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        (0..30).collect::<Vec<_>>(),
        "each step of the interrupted asset logged once"
    );
    let out = collect(&work.join("gen/runs"));
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 of 3 items"));
    for i in 0..3 {
        let issues = common::validate_gltf(&work.join(format!("gen/asset-{i:04}.glb")));
        assert_eq!(issues["numErrors"], 0, "asset {i}: {issues}");
    }
}
